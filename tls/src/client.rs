//! The client side: a rustls configuration that trusts the collector — by
//! the pin of its CA's key on first contact, or by the CA certificate kept
//! since — and requires the collector role in its certificate; and tonic
//! channels that speak gRPC over it.

use crate::identity::{COLLECTOR_ROLE_URI, cert_info, pin_of_cert};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Config(String),
    #[error("{0:?} is not an https:// URL with a host")]
    BadUrl(String),
}

/// How a client knows the collector.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// `sha256:` of the CA's public key: the CA is found in the chain the
    /// server presents (first contact, before enrolment).
    Pin(String),
    /// The CA certificate(s), DER.
    Roots(Vec<CertificateDer<'static>>),
}

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

#[derive(Debug)]
struct CollectorVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Trust {
    Pin(String),
    Roots(Arc<WebPkiServerVerifier>),
}

fn refused(msg: String) -> rustls::Error {
    rustls::Error::General(msg)
}

impl ServerCertVerifier for CollectorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Roots(inner) => {
                inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )?;
            }
            Trust::Pin(pin) => {
                // The CA is the chain's certificate whose key is the pinned one.
                let mut seen = Vec::new();
                let ca = intermediates.iter().find(|c| match pin_of_cert(c) {
                    Ok(p) if p == *pin => true,
                    Ok(p) => {
                        seen.push(p);
                        false
                    }
                    Err(_) => false,
                });
                let Some(ca) = ca else {
                    return Err(refused(format!(
                        "the collector's CA does not match the pin {pin} (it presented {})",
                        if seen.is_empty() {
                            "no CA certificate".to_string()
                        } else {
                            seen.join(", ")
                        }
                    )));
                };
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone().into_owned())?;
                let inner = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| refused(format!("the pinned CA: {e}")))?;
                inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )?;
            }
        }
        let info = cert_info(end_entity).map_err(refused)?;
        if !info.uris.contains(COLLECTOR_ROLE_URI) {
            return Err(refused(format!(
                "the server's certificate is not a reachmap collector's (no {COLLECTOR_ROLE_URI} in it)"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration for the collector: gRPC's ALPN, the collector
/// trusted as `trust` says, and `identity` presented when given.
pub fn client_config(
    trust: &ServerTrust,
    identity: Option<ClientIdentity>,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = crate::provider();
    let trust = match trust {
        ServerTrust::Pin(pin) => {
            Trust::Pin(crate::identity::check_pin(pin).map_err(TlsError::Config)?)
        }
        ServerTrust::Roots(certs) => {
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))?;
            }
            Trust::Roots(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))?,
            )
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CollectorVerifier { trust, provider }));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| TlsError::Config(format!("the client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The host and port of an `https://HOST[:PORT]` URL (the port defaults to
/// `default_port`).
pub fn host_port(url: &Uri, default_port: u16) -> Result<(String, u16), TlsError> {
    if url.scheme_str() != Some("https") {
        return Err(TlsError::BadUrl(url.to_string()));
    }
    let host = url
        .host()
        .ok_or_else(|| TlsError::BadUrl(url.to_string()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, url.port_u16().unwrap_or(default_port)))
}

/// A tonic channel to `endpoint` (an `https://` URL) over TLS with `config`:
/// the collector's certificate must name the URL's host.
pub async fn connect(
    endpoint: Endpoint,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    connect_at(endpoint, config, None).await
}

/// [`connect`], with the TCP connection made to `addr` when given (one of
/// the addresses the URL's host name resolves to) rather than to whatever
/// the name resolves to first: the TLS server name is still the URL's host,
/// so the certificate must still name it.
pub async fn connect_at(
    endpoint: Endpoint,
    config: Arc<rustls::ClientConfig>,
    addr: Option<SocketAddr>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |uri: Uri| {
        let config = config.clone();
        async move {
            let (host, port) = host_port(&uri, reachmap_proto::DEFAULT_GRPC_PORT)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
            })?;
            let tcp = match addr {
                Some(a) => tokio::net::TcpStream::connect(a).await?,
                None => tokio::net::TcpStream::connect((host.as_str(), port)).await?,
            };
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(explain_handshake)?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint.connect_with_connector(connector).await
}

/// A plaintext channel (a collector started with `--insecure`) to `addr`,
/// whatever `endpoint`'s URL resolves to; the URL still names the host in
/// the requests.
pub async fn connect_plain_at(
    endpoint: Endpoint,
    addr: SocketAddr,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: Uri| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(TokioIo::new(tcp))
    });
    endpoint.connect_with_connector(connector).await
}

/// Whether a handshake failed because the other end does not speak TLS at
/// all (plaintext, or an HTTP/2 preface where a ClientHello belongs).
pub fn is_not_tls(error_text: &str) -> bool {
    error_text.contains("InvalidContentType") || error_text.contains("corrupt message")
}

/// A failed handshake, said the way an operator can act on.
fn explain_handshake(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    let hint = if is_not_tls(&text) {
        format!(
            "TLS handshake failed ({text}): the collector does not speak TLS — started with --insecure? then use http:// and --insecure"
        )
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        format!("TLS handshake failed: the collector requires a client certificate ({text})")
    } else if text.contains("AccessDenied") || text.contains("access denied") {
        format!(
            "TLS handshake refused by the collector: this certificate is revoked or not allowed ({text})"
        )
    } else {
        format!("TLS handshake failed: {text}")
    };
    std::io::Error::new(e.kind(), hint)
}
