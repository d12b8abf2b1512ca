//! TLS for HTTPS probes: the client configuration each target is checked
//! with (the host's system roots, or a CA bundle the collector's config
//! names, sent in the plan), and what a failed handshake means in words an
//! operator acts on — expired, for another name, unknown issuer.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// Why a handshake failed (`TlsErrorKind` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsErrorKind {
    Expired,
    NotYetValid,
    WrongName,
    UnknownIssuer,
    Revoked,
    BadCertificate,
    Handshake,
}

/// A failed handshake: its kind and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    pub kind: TlsErrorKind,
    pub detail: String,
}

/// Longest `detail` sent: the collector refuses longer text, and a
/// certificate may name hundreds of hosts.
pub const MAX_DETAIL: usize = 400;

impl TlsFailure {
    fn new(kind: TlsErrorKind, detail: impl Into<String>) -> TlsFailure {
        let mut detail: String = detail.into();
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL - '…'.len_utf8();
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        detail.retain(|c| !c.is_control());
        TlsFailure { kind, detail }
    }
}

/// How an HTTPS target's certificate is checked. Equal when the name and
/// the trust anchors are: the built configuration is not compared.
#[derive(Clone)]
pub struct TlsTarget {
    /// Sent as SNI and checked against the certificate; `None` means the
    /// target's address.
    pub server_name: Option<String>,
    /// The CA bundle (PEM) the certificate must chain to; `None` means the
    /// host's system roots.
    pub ca_pem: Option<Arc<str>>,
    /// `server_name`, checked once when the plan is read.
    name: Option<ServerName<'static>>,
    config: Arc<ClientConfig>,
}

impl PartialEq for TlsTarget {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name && self.ca_pem == other.ca_pem
    }
}

impl Eq for TlsTarget {}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .field("ca", &self.ca_pem.as_ref().map(|_| "bundle"))
            .finish()
    }
}

/// What certificates are checked against: the host's system roots, or a CA
/// bundle. Built once per plan and shared by its targets.
#[derive(Clone)]
pub struct Trust {
    ca_pem: Option<Arc<str>>,
    config: Arc<ClientConfig>,
}

impl Trust {
    /// The host's roots (the distribution's bundle, `SSL_CERT_FILE`), read
    /// once. A host without any makes every system-rooted target an unknown
    /// issuer, which is what it is.
    pub fn system() -> Result<Trust, String> {
        static SYSTEM: OnceLock<Result<Trust, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the system's CA certificates");
                }
                let mut roots = RootCertStore::empty();
                let (added, ignored) = roots.add_parsable_certificates(found.certs);
                tracing::debug!(added, ignored, "system CA certificates");
                Ok(Trust {
                    ca_pem: None,
                    config: client_config(roots)?,
                })
            })
            .clone()
    }

    /// A PEM bundle: one with no certificate in it is an error, not a trust
    /// that refuses everything.
    pub fn bundle(pem: &str) -> Result<Trust, String> {
        Ok(Trust {
            config: client_config(roots_from_pem(pem)?)?,
            ca_pem: Some(Arc::from(pem)),
        })
    }
}

impl TlsTarget {
    pub fn new(server_name: Option<String>, trust: &Trust) -> Result<TlsTarget, String> {
        let name = match &server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|_| format!("TLS server name {n:?} is not a host name or address"))?,
            ),
            None => None,
        };
        Ok(TlsTarget {
            server_name,
            name,
            ca_pem: trust.ca_pem.clone(),
            config: Arc::clone(&trust.config),
        })
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// The name the handshake asks for.
    pub fn name_for(&self, address: IpAddr) -> ServerName<'static> {
        self.name
            .clone()
            .unwrap_or_else(|| ServerName::from(address))
    }
}

/// Every certificate of a PEM bundle, as trust anchors.
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA bundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA bundle: a certificate cannot be a trust anchor: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA bundle holds no certificate".into());
    }
    Ok(roots)
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The failure a handshake error stands for; `None` when it is a plain
/// connection error (reset, timeout), classified as for TCP.
pub fn classify(e: &std::io::Error) -> Option<TlsFailure> {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return Some(describe(tls));
    }
    (e.kind() == std::io::ErrorKind::UnexpectedEof).then(|| {
        TlsFailure::new(
            TlsErrorKind::Handshake,
            "the server closed the connection during the handshake (does it speak TLS?)",
        )
    })
}

/// A rustls error in an operator's words.
pub fn describe(e: &rustls::Error) -> TlsFailure {
    use TlsErrorKind as K;
    match e {
        rustls::Error::InvalidCertificate(c) => certificate(c),
        rustls::Error::AlertReceived(alert) => {
            TlsFailure::new(K::Handshake, format!("the server sent the alert {alert:?}"))
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            TlsFailure::new(K::Handshake, format!("the server does not speak TLS ({e})"))
        }
        rustls::Error::NoCertificatesPresented => {
            TlsFailure::new(K::BadCertificate, "the server presented no certificate")
        }
        other => TlsFailure::new(K::Handshake, other.to_string()),
    }
}

fn certificate(c: &CertificateError) -> TlsFailure {
    use TlsErrorKind as K;
    match c {
        CertificateError::Expired => TlsFailure::new(K::Expired, "the certificate has expired"),
        CertificateError::ExpiredContext { time, not_after } => TlsFailure::new(
            K::Expired,
            format!(
                "the certificate expired {}, {} before the probe",
                stamp(*not_after),
                span(time.as_secs().saturating_sub(not_after.as_secs()))
            ),
        ),
        CertificateError::NotValidYet => {
            TlsFailure::new(K::NotYetValid, "the certificate is not valid yet")
        }
        CertificateError::NotValidYetContext { time, not_before } => TlsFailure::new(
            K::NotYetValid,
            format!(
                "the certificate is valid from {}, {} after the probe (is a clock wrong?)",
                stamp(*not_before),
                span(not_before.as_secs().saturating_sub(time.as_secs()))
            ),
        ),
        CertificateError::NotValidForName => {
            TlsFailure::new(K::WrongName, "the certificate is for another name")
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => TlsFailure::new(
            K::WrongName,
            format!(
                "the certificate is for {}, not {}",
                if presented.is_empty() {
                    "no name".to_string()
                } else {
                    presented.join(", ")
                },
                name(expected)
            ),
        ),
        CertificateError::UnknownIssuer => TlsFailure::new(
            K::UnknownIssuer,
            "the certificate is signed by a CA the probe does not trust (self-signed, or the service's CA is not the one configured)",
        ),
        CertificateError::Revoked => TlsFailure::new(K::Revoked, "the certificate is revoked"),
        other => TlsFailure::new(K::BadCertificate, format!("the certificate: {other}")),
    }
}

fn name(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn stamp(t: UnixTime) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A span in its largest whole unit: "3 days", "5 hours", "40 s".
fn span(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 2 * 60 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_names_the_date_and_how_long_ago() {
        let f = certificate(&CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_764_590_400 + 3 * 86_400)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_764_590_400)),
        });
        assert_eq!(f.kind, TlsErrorKind::Expired);
        assert_eq!(
            f.detail,
            "the certificate expired 2025-12-01T12:00:00Z, 3 days before the probe"
        );
    }

    #[test]
    fn a_wrong_name_lists_what_the_certificate_is_for() {
        let f = certificate(&CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("web-1.fleet.test")
                .expect("name")
                .to_owned(),
            presented: vec!["DnsName(\"other.test\")".into()],
        });
        assert_eq!(f.kind, TlsErrorKind::WrongName);
        assert!(f.detail.contains("other.test"), "{}", f.detail);
        assert!(f.detail.ends_with("not web-1.fleet.test"), "{}", f.detail);
        let ip = certificate(&CertificateError::NotValidForNameContext {
            expected: ServerName::from("198.18.0.12".parse::<IpAddr>().expect("ip")),
            presented: vec![],
        });
        assert_eq!(ip.detail, "the certificate is for no name, not 198.18.0.12");
    }

    #[test]
    fn other_failures_keep_their_kind() {
        assert_eq!(
            certificate(&CertificateError::UnknownIssuer).kind,
            TlsErrorKind::UnknownIssuer
        );
        assert_eq!(
            describe(&rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            ))
            .kind,
            TlsErrorKind::Handshake
        );
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(
            classify(&eof).map(|f| f.kind),
            Some(TlsErrorKind::Handshake)
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), None);
    }

    #[test]
    fn a_bundle_must_hold_a_certificate_and_names_must_be_names() {
        assert!(Trust::bundle("not a bundle").is_err());
        let system = Trust::system().expect("system roots");
        assert!(TlsTarget::new(Some("bad name!".into()), &system).is_err());
        let t = TlsTarget::new(None, &system).expect("system roots");
        let ip: IpAddr = "198.18.0.12".parse().expect("ip");
        assert_eq!(t.name_for(ip), ServerName::from(ip));
    }

    #[test]
    fn a_long_reason_is_cut_to_what_the_collector_takes() {
        let names: Vec<String> = (0..200).map(|i| format!("host-{i}.fleet.test")).collect();
        let f = certificate(&CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("web-1.fleet.test")
                .expect("name")
                .to_owned(),
            presented: names,
        });
        assert!(f.detail.len() <= MAX_DETAIL, "{}", f.detail.len());
        assert!(f.detail.ends_with('…'), "{}", f.detail);
    }

    #[test]
    fn spans_read_in_their_largest_unit() {
        assert_eq!(span(40), "40 s");
        assert_eq!(span(300), "5 minutes");
        assert_eq!(span(5 * 3_600 + 5), "5 hours");
        assert_eq!(span(3 * 86_400), "3 days");
    }
}
