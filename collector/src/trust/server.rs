//! The server side of TLS: the rustls configuration (the server certificate
//! and the CA, client certificates optional but checked against the CA and
//! the deny-list during the handshake), and the listener that runs
//! handshakes off the accept loop and hands out connections with who is
//! on the other end (`Peer`), for tonic and for axum alike.

use super::Trust;
use reachmap_tls::CertInfo;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed over but not yet taken by the server.
const QUEUE: usize = 1024;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate, when one was presented (verified by then).
    pub cert: Option<Arc<CertInfo>>,
}

/// Client certificates: signed by the CA (webpki) and not on the
/// deny-list.
#[derive(Debug)]
struct Verifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust: Arc<Trust>,
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = reachmap_tls::cert_info(end_entity).map_err(rustls::Error::General)?;
        if self.trust.is_denied(&info.serial) {
            // A query client (a person at a terminal) is let through the
            // handshake and refused on its first request, so it is told
            // why; a TLS alert reaches a client that wrote first as a
            // broken pipe. A node is refused here.
            if matches!(info.identity(), Some(reachmap_tls::Identity::Client { .. })) {
                return Ok(ClientCertVerified::assertion());
            }
            tracing::warn!(serial = %info.serial, identity = ?info.identity(), "refused a revoked certificate");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The collector's rustls configuration for `alpn`.
pub fn server_config(trust: &Arc<Trust>, alpn: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let a = &trust.authority;
    let ca = reachmap_tls::pem::certs(&a.ca_cert_pem).map_err(anyhow::Error::msg)?;
    let mut chain = reachmap_tls::pem::certs(&a.server_cert_pem).map_err(anyhow::Error::msg)?;
    chain.extend(ca.iter().cloned());
    let key = reachmap_tls::pem::key(&a.server_key_pem).map_err(anyhow::Error::msg)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c)?;
    }
    let provider = reachmap_tls::provider();
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Verifier {
        inner,
        trust: trust.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    // No resumption: every connection shows its certificate again, so the
    // deny-list is checked at every handshake.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A connection whose handshake is done.
pub struct TlsConn {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    pub peer: Peer,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// Accepts on `listener` and runs each handshake in a task of its own, so
/// a slow or silent client holds up nobody; finished connections come out
/// of the returned queue. A failed handshake (a plaintext client, another
/// CA's certificate, a revoked one) is logged with its reason and dropped.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
    shutdown: CancellationToken,
) -> mpsc::Receiver<TlsConn> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "{what}: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Err(_) => tracing::info!(%addr, "{what}: TLS handshake timed out"),
                    Ok(Err(e)) => {
                        tracing::info!(%addr, error = %handshake_error(&e), "{what}: TLS handshake failed")
                    }
                    Ok(Ok(io)) => {
                        let cert = io
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| reachmap_tls::cert_info(c).ok())
                            .map(Arc::new);
                        let _ = tx
                            .send(TlsConn {
                                io,
                                peer: Peer { addr, cert },
                            })
                            .await;
                    }
                }
            });
        }
    });
    rx
}

fn handshake_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if reachmap_tls::client::is_not_tls(&text) {
        format!("not TLS (a plaintext client? it must use https:// and the CA): {text}")
    } else {
        text
    }
}

/// The queue of finished handshakes as an axum listener.
pub struct HttpsListener {
    pub rx: mpsc::Receiver<TlsConn>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsConn;
    type Addr = Peer;

    async fn accept(&mut self) -> (TlsConn, Peer) {
        match self.rx.recv().await {
            Some(c) => {
                let peer = c.peer.clone();
                (c, peer)
            }
            // The accept loop has stopped (shutdown): wait for the server
            // to stop too.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            cert: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}
