//! The collector's own certificate authority, made on first start under the
//! data directory, and the collector's server certificate it issues.
//!
//! - `tls/ca.key` and `tls/ca.crt`: an ECDSA P-256 CA, ten years.
//! - `tls/server.key` and `tls/server.crt`: the collector's certificate,
//!   one year, `serverAuth` only, its SANs the configured server names and
//!   the host name, plus the URI `reachmap:collector` — the role an agent
//!   checks, so a node's certificate from the same CA cannot pose as the
//!   collector. It is issued again when it nears its end, when the names
//!   change, or when it is not the CA's.
//!
//! Key files are written 0600, every file through a temp file and a rename.
//! The pin an agent is given (`sha256:` and the hex SHA-256 of the CA's
//! SubjectPublicKeyInfo, as kubeadm prints it) names the CA's key, so it
//! survives the CA certificate being re-issued with the same key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use reachmap_tls::COLLECTOR_ROLE_URI;
const CA_LIFETIME_DAYS: i64 = 3650;
const SERVER_LIFETIME_DAYS: i64 = 365;
/// A server certificate this close to its end is issued again at start.
const SERVER_RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("{0:?} is not a DNS name or an IP address")]
    BadName(String),
    #[error("a lifetime of {0:?} is too long")]
    Lifetime(std::time::Duration),
}

/// The CA and the server certificate, in PEM.
pub struct Authority {
    dir: PathBuf,
    pub ca_cert_pem: String,
    /// The CA certificate, DER (what enrolled nodes are given).
    pub ca_der: Vec<u8>,
    ca_key: KeyPair,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// `sha256:<hex>` of the CA's public key.
    pub pin: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// What `load_or_create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    pub ca: bool,
    pub server: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |error| TrustError::Io {
        path: path.to_owned(),
        error,
    }
}

pub(crate) fn bad(path: &Path, what: impl Into<String>) -> TrustError {
    TrustError::Bad {
        path: path.to_owned(),
        what: what.into(),
    }
}

impl Authority {
    /// The directory the files live in: `DATA_DIR/tls`.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("tls")
    }

    /// Loads the CA under `data_dir/tls`, making it on first start, and the
    /// server certificate for `names` (plus `host_name`), issuing it again
    /// when needed.
    pub fn load_or_create(
        data_dir: &Path,
        names: &[String],
        host_name: Option<&str>,
    ) -> Result<(Authority, Made), TrustError> {
        Self::load_with(data_dir, names, host_name, None)
    }

    /// `load_or_create`, with the operator's own CA (`--ca-cert`, `--ca-key`)
    /// when `own_ca` names its files: it is used as it is and never written.
    pub fn load_with(
        data_dir: &Path,
        names: &[String],
        host_name: Option<&str>,
        own_ca: Option<(&Path, &Path)>,
    ) -> Result<(Authority, Made), TrustError> {
        Self::open(data_dir, Some((names, host_name)), own_ca)
    }

    /// The existing CA alone, for issuing client certificates beside a
    /// running collector: nothing is made or written, and the server
    /// certificate fields are empty.
    pub fn existing_ca(
        data_dir: &Path,
        own_ca: Option<(&Path, &Path)>,
    ) -> Result<Authority, TrustError> {
        let key = match own_ca {
            Some((_, k)) => k.to_owned(),
            None => Self::dir(data_dir).join("ca.key"),
        };
        if read_optional(&key)?.is_none() {
            return Err(bad(
                &key,
                "no CA yet: it is made when the collector first starts",
            ));
        }
        Ok(Self::open(data_dir, None, own_ca)?.0)
    }

    fn open(
        data_dir: &Path,
        server: Option<(&[String], Option<&str>)>,
        own_ca: Option<(&Path, &Path)>,
    ) -> Result<(Authority, Made), TrustError> {
        let dir = Self::dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let (cert_path, key_path) = match own_ca {
            Some((c, k)) => (c.to_owned(), k.to_owned()),
            None => (dir.join("ca.crt"), dir.join("ca.key")),
        };
        let own_key = match own_ca {
            Some(_) => {
                Some(read_optional(&key_path)?.ok_or_else(|| bad(&key_path, "no such file"))?)
            }
            None => read_optional(&key_path)?,
        };
        let (ca_key, ca_cert_pem, made_ca) = match own_key {
            Some(key_pem) => {
                let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(&key_path, e.to_string()))?;
                let cert = read_optional(&cert_path)?
                    .ok_or_else(|| bad(&cert_path, "missing while its key exists"))?;
                (key, cert, false)
            }
            None => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let cert = ca_params()?.self_signed(&key)?.pem();
                write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
                write_file(&dir.join("ca.crt"), cert.as_bytes(), 0o644)?;
                (key, cert, true)
            }
        };
        let ca_path = cert_path;
        let ca_der = pem_der(&ca_path, &ca_cert_pem)?;
        let ca_info = reachmap_tls::cert_info(&ca_der).map_err(|e| bad(&ca_path, e))?;
        if !ca_info.is_ca {
            return Err(bad(
                &ca_path,
                "is not a CA certificate (no CA basic constraint)",
            ));
        }
        let spki = ca_info.spki;
        let pin = reachmap_tls::pin_of_spki(&spki);
        if spki != ca_key.subject_public_key_info() {
            return Err(bad(
                &ca_path,
                format!("is not the certificate of {}", key_path.display()),
            ));
        }

        let Some((names, host_name)) = server else {
            return Ok((
                Authority {
                    dir,
                    ca_cert_pem,
                    ca_der,
                    ca_key,
                    server_cert_pem: String::new(),
                    server_key_pem: String::new(),
                    pin,
                },
                Made {
                    ca: made_ca,
                    server: false,
                },
            ));
        };
        let wanted = server_names(names, host_name)?;
        let server_path = dir.join("server.crt");
        let current = match (
            read_optional(&server_path)?,
            read_optional(&dir.join("server.key"))?,
        ) {
            (Some(cert), Some(key)) if server_is_current(&cert, &spki, &wanted) => {
                Some((cert, key))
            }
            _ => None,
        };
        let (server_cert_pem, server_key_pem, made_server) = match current {
            Some((cert, key)) => (cert, key, false),
            None => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)?;
                let cert = server_params(&wanted)?.signed_by(&key, &issuer)?.pem();
                let key_pem = key.serialize_pem();
                write_file(&dir.join("server.key"), key_pem.as_bytes(), 0o600)?;
                write_file(&server_path, cert.as_bytes(), 0o644)?;
                (cert, key_pem, true)
            }
        };
        Ok((
            Authority {
                dir,
                ca_cert_pem,
                ca_der,
                ca_key,
                server_cert_pem,
                server_key_pem,
                pin,
            },
            Made {
                ca: made_ca,
                server: made_server,
            },
        ))
    }

    /// The CA's key, for issuing node and client certificates.
    pub fn ca_key(&self) -> &KeyPair {
        &self.ca_key
    }

    /// A node's certificate for the key of a checked CSR: the URI SAN
    /// `reachmap:node:NAME`, clientAuth only, `lifetime` long.
    pub fn issue_node(
        &self,
        csr: &super::csr::CheckedCsr,
        lifetime: std::time::Duration,
    ) -> Result<Issued, TrustError> {
        let mut p = leaf_params(lifetime)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, csr.node.as_str());
        p.distinguished_name = dn;
        p.subject_alt_names
            .push(uri_san(&reachmap_tls::node_uri(&csr.node))?);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let mut request = csr.request.clone();
        request.params = p;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let der = request.signed_by(&issuer)?.der().to_vec();
        Issued::of(der)
    }

    /// A query client's certificate and its key (PEM), for `role`.
    pub fn issue_client(
        &self,
        name: &str,
        role: reachmap_tls::Role,
        lifetime: std::time::Duration,
    ) -> Result<(Issued, String), TrustError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = leaf_params(lifetime)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.subject_alt_names
            .push(uri_san(&reachmap_tls::client_uri(name))?);
        p.subject_alt_names
            .push(uri_san(&reachmap_tls::role_uri(role))?);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let der = p.signed_by(&key, &issuer)?.der().to_vec();
        Ok((Issued::of(der)?, key.serialize_pem()))
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: Vec<u8>,
    pub serial: String,
    pub not_after_unix: i64,
}

impl Issued {
    fn of(der: Vec<u8>) -> Result<Issued, TrustError> {
        let info = reachmap_tls::cert_info(&der).map_err(|e| bad(Path::new("issued"), e))?;
        Ok(Issued {
            der,
            serial: info.serial,
            not_after_unix: info.not_after_unix,
        })
    }
}

fn uri_san(uri: &str) -> Result<SanType, TrustError> {
    Ok(SanType::URI(
        uri.to_string()
            .try_into()
            .map_err(|_| TrustError::BadName(uri.to_string()))?,
    ))
}

/// A leaf certificate's common parameters: a random serial, digital
/// signature only, valid from five minutes ago (clock skew) for `lifetime`.
fn leaf_params(lifetime: std::time::Duration) -> Result<CertificateParams, TrustError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::try_from(lifetime).map_err(|_| TrustError::Lifetime(lifetime))?;
    Ok(p)
}

/// The pin of the CA kept under `data_dir`, without making one.
pub fn read_pin(data_dir: &Path) -> Result<String, TrustError> {
    let path = Authority::dir(data_dir).join("ca.crt");
    let pem = read_optional(&path)?.ok_or_else(|| {
        bad(
            &path,
            "no CA yet: it is made when the collector first starts",
        )
    })?;
    let der = pem_der(&path, &pem)?;
    reachmap_tls::pin_of_cert(&der).map_err(|e| bad(&path, e))
}

fn ca_params() -> Result<CertificateParams, TrustError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "reachmap collector CA");
    dn.push(DnType::OrganizationName, "reachmap");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(CA_LIFETIME_DAYS);
    Ok(p)
}

/// The SANs a server certificate must carry, sorted: the configured names
/// and the host name, and the collector role.
fn server_names(names: &[String], host_name: Option<&str>) -> Result<BTreeSet<String>, TrustError> {
    let mut out = BTreeSet::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !is_server_name(n) {
            return Err(TrustError::BadName(n.to_string()));
        }
        out.insert(n.to_ascii_lowercase());
    }
    if let Some(h) = host_name.filter(|h| valid_dns_name(h)) {
        out.insert(h.to_ascii_lowercase());
    }
    Ok(out)
}

/// A name a server certificate may carry: an IP address or a DNS name.
pub fn is_server_name(n: &str) -> bool {
    n.parse::<IpAddr>().is_ok() || valid_dns_name(n)
}

fn valid_dns_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn server_params(names: &BTreeSet<String>) -> Result<CertificateParams, TrustError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "reachmap collector");
    p.distinguished_name = dn;
    for n in names {
        p.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|_| TrustError::BadName(n.clone()))?,
            ),
        });
    }
    p.subject_alt_names.push(SanType::URI(
        COLLECTOR_ROLE_URI
            .to_string()
            .try_into()
            .map_err(|_| TrustError::BadName(COLLECTOR_ROLE_URI.into()))?,
    ));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(SERVER_LIFETIME_DAYS);
    Ok(p)
}

/// Whether `cert_pem` is a server certificate of the CA whose public key
/// is `ca_spki`, for exactly `wanted`, and not near its end.
fn server_is_current(cert_pem: &str, ca_spki: &[u8], wanted: &BTreeSet<String>) -> bool {
    let Ok(der) = pem_der(Path::new(""), cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let Ok((_, ca_key)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(ca_spki) else {
        return false;
    };
    if cert.verify_signature(Some(&ca_key)).is_err() {
        return false;
    }
    let f = match reachmap_tls::cert_info(&der) {
        Ok(f) => f,
        Err(_) => return false,
    };
    let renew_at = OffsetDateTime::now_utc() + Duration::days(SERVER_RENEW_BEFORE_DAYS);
    f.names == *wanted
        && f.uris.contains(COLLECTOR_ROLE_URI)
        && f.server_auth
        && f.not_after_unix > renew_at.unix_timestamp()
}

fn pem_der(path: &Path, pem: &str) -> Result<Vec<u8>, TrustError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| bad(path, format!("not a PEM certificate: {e}")))?;
    Ok(p.contents)
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, TrustError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes through a temp file and a rename, with `mode` from the start.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TrustError> {
    reachmap_tls::file::write_atomic(path, bytes, mode).map_err(io(path))
}

/// A JSON file of ours with a `format` field: `None` when there is none
/// yet, an error naming the file when it is unreadable or of another format.
/// The store's document `name` (taking in the older file `legacy`), a JSON
/// value with a `format` field that must be `format`.
pub(crate) fn read_versioned<T: serde::de::DeserializeOwned>(
    docs: &crate::store::documents::Documents,
    name: &str,
    legacy: &Path,
    format: u32,
) -> Result<Option<T>, TrustError> {
    let at = || docs.path().join(name);
    let Some(text) = docs
        .get_or_import(name, legacy)
        .map_err(|e| bad(&at(), e))?
    else {
        return Ok(None);
    };
    parse_versioned(&text, format)
        .map(Some)
        .map_err(|e| bad(&at(), e))
}

/// A stored document's text, checked to be of `format`.
pub(crate) fn parse_versioned<T: serde::de::DeserializeOwned>(
    text: &str,
    format: u32,
) -> Result<T, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        format: u32,
    }
    let head: Head = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if head.format != format {
        return Err(format!("format {} is not {format}", head.format));
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    fn der(pem: &str) -> Vec<u8> {
        pem_der(Path::new("test"), pem).expect("pem")
    }

    #[test]
    fn first_start_makes_a_ca_and_a_server_certificate() {
        let data = tempfile::tempdir().expect("tempdir");
        let names = vec![
            "collector.example.internal".to_string(),
            "198.18.0.1".to_string(),
        ];
        let (a, made) =
            Authority::load_or_create(data.path(), &names, Some("hub-1")).expect("made");
        assert_eq!(
            made,
            Made {
                ca: true,
                server: true
            }
        );
        let dir = Authority::dir(data.path());
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("server.key")), 0o600);
        assert!(
            a.pin.starts_with("sha256:") && a.pin.len() == 71,
            "{}",
            a.pin
        );

        let ca = reachmap_tls::cert_info(&der(&a.ca_cert_pem)).expect("ca");
        assert!(ca.is_ca);
        let s = reachmap_tls::cert_info(&der(&a.server_cert_pem)).expect("server");
        assert_eq!(
            s.names,
            BTreeSet::from([
                "198.18.0.1".to_string(),
                "collector.example.internal".to_string(),
                "hub-1".to_string()
            ])
        );
        assert!(s.uris.contains(COLLECTOR_ROLE_URI));
        assert!(s.server_auth && !s.client_auth && !s.is_ca);
        assert!(s.issuer.contains("reachmap collector CA"), "{}", s.issuer);
        // Signed by the CA, for real.
        assert!(server_is_current(
            &a.server_cert_pem,
            &reachmap_tls::cert_info(&der(&a.ca_cert_pem))
                .expect("ca")
                .spki,
            &server_names(&names, Some("hub-1")).expect("names")
        ));
        assert_eq!(read_pin(data.path()).expect("pin"), a.pin);
    }

    #[test]
    fn a_restart_keeps_both_and_new_names_reissue_only_the_server_certificate() {
        let data = tempfile::tempdir().expect("tempdir");
        let names = vec!["c1".to_string()];
        let (a, _) = Authority::load_or_create(data.path(), &names, None).expect("first");
        let (b, made) = Authority::load_or_create(data.path(), &names, None).expect("again");
        assert_eq!(
            made,
            Made {
                ca: false,
                server: false
            }
        );
        assert_eq!(
            (b.pin.as_str(), b.server_cert_pem.as_str()),
            (a.pin.as_str(), a.server_cert_pem.as_str())
        );
        let more = vec!["c1".to_string(), "c2".to_string()];
        let (c, made) = Authority::load_or_create(data.path(), &more, None).expect("renamed");
        assert_eq!(
            made,
            Made {
                ca: false,
                server: true
            }
        );
        assert_eq!(c.pin, a.pin);
        assert!(
            reachmap_tls::cert_info(&der(&c.server_cert_pem))
                .expect("facts")
                .names
                .contains("c2")
        );
    }

    #[test]
    fn a_server_certificate_of_another_ca_is_replaced() {
        let data = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let (a, _) = Authority::load_or_create(data.path(), &[], None).expect("a");
        let (x, _) = Authority::load_or_create(other.path(), &[], None).expect("x");
        assert_ne!(a.pin, x.pin);
        let dir = Authority::dir(data.path());
        std::fs::write(dir.join("server.crt"), &x.server_cert_pem).expect("write");
        std::fs::write(dir.join("server.key"), &x.server_key_pem).expect("write");
        let (_, made) = Authority::load_or_create(data.path(), &[], None).expect("again");
        assert!(
            made.server,
            "a certificate the CA did not sign is issued again"
        );
    }

    #[test]
    fn bad_files_and_names_are_one_line_errors() {
        let data = tempfile::tempdir().expect("tempdir");
        let e = Authority::load_or_create(data.path(), &["not a name!".to_string()], None)
            .expect_err("bad name");
        assert_eq!(
            e.to_string(),
            "\"not a name!\" is not a DNS name or an IP address"
        );
        let dir = Authority::dir(data.path());
        std::fs::write(dir.join("ca.key"), "garbage").expect("write");
        let e = Authority::load_or_create(data.path(), &[], None).expect_err("bad key");
        assert!(e.to_string().contains("ca.key"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let e = read_pin(tempfile::tempdir().expect("tempdir").path()).expect_err("no CA");
        assert!(e.to_string().contains("no CA yet"), "{e}");
    }

    #[test]
    fn an_operators_own_ca_is_used_as_it_is_and_never_written() {
        let theirs = tempfile::tempdir().expect("tempdir");
        let (own, _) = Authority::load_or_create(theirs.path(), &[], None).expect("their CA");
        let dir = Authority::dir(theirs.path());
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let data = tempfile::tempdir().expect("tempdir");
        let (a, made) =
            Authority::load_with(data.path(), &["c1".to_string()], None, Some((&cert, &key)))
                .expect("with their CA");
        assert!(!made.ca && made.server);
        assert_eq!(a.pin, own.pin);
        assert!(!Authority::dir(data.path()).join("ca.key").exists());
        // A leaf is not a CA.
        let leaf = Authority::dir(data.path()).join("server.crt");
        let e = Authority::load_with(data.path(), &[], None, Some((&leaf, &key)))
            .expect_err("not a CA");
        assert!(e.to_string().contains("is not a CA certificate"), "{e}");
    }
}
