//! Who a certificate names, by the URI SANs the collector's CA puts in it:
//!
//! - `reachmap:collector` — the collector's server certificate; agents and
//!   the CLI refuse a server without it, so a node's certificate from the
//!   same CA cannot pose as the collector;
//! - `reachmap:node:NAME` — a node (clientAuth only): it may speak the agent
//!   stream as NAME and nothing else;
//! - `reachmap:client:NAME` plus `reachmap:role:viewer|operator` — a query
//!   client (the CLI, scripts).

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const COLLECTOR_ROLE_URI: &str = "reachmap:collector";
const NODE_PREFIX: &str = "reachmap:node:";
const CLIENT_PREFIX: &str = "reachmap:client:";
const ROLE_PREFIX: &str = "reachmap:role:";

/// What a query client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: nodes, node, matrix, why, metrics, the web page.
    Viewer,
    /// Also commands: test-port, revoking nodes, tokens.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Collector,
    Node(String),
    Client { name: String, role: Role },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Collector => f.write_str("the collector"),
            Identity::Node(n) => write!(f, "node {n}"),
            Identity::Client { name, role } => write!(f, "client {name} ({role})"),
        }
    }
}

pub fn node_uri(node: &str) -> String {
    format!("{NODE_PREFIX}{node}")
}

pub fn client_uri(name: &str) -> String {
    format!("{CLIENT_PREFIX}{name}")
}

pub fn role_uri(role: Role) -> String {
    format!("{ROLE_PREFIX}{role}")
}

/// What a certificate says, as far as reachmap cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, lowercase hex without leading zeros.
    pub serial: String,
    pub uris: BTreeSet<String>,
    /// DNS names and IP addresses, as text.
    pub names: BTreeSet<String>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub is_ca: bool,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// The issuer's distinguished name, as text.
    pub issuer: String,
    /// The subject's SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

impl CertInfo {
    /// The identity the URIs name; `None` when they name none, or more
    /// than one.
    pub fn identity(&self) -> Option<Identity> {
        let mut found = Vec::new();
        if self.uris.contains(COLLECTOR_ROLE_URI) {
            found.push(Identity::Collector);
        }
        let roles: Vec<Role> = self
            .uris
            .iter()
            .filter_map(|u| u.strip_prefix(ROLE_PREFIX).and_then(Role::parse))
            .collect();
        for u in &self.uris {
            if let Some(n) = u.strip_prefix(NODE_PREFIX) {
                found.push(Identity::Node(n.to_string()));
            } else if let Some(n) = u.strip_prefix(CLIENT_PREFIX) {
                // A client certificate names exactly one role.
                if let [role] = roles.as_slice() {
                    found.push(Identity::Client {
                        name: n.to_string(),
                        role: *role,
                    });
                } else {
                    return None;
                }
            }
        }
        match found.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

/// Reads a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the certificate", rest.len()));
    }
    Ok(info_of(&cert))
}

fn info_of(cert: &X509Certificate<'_>) -> CertInfo {
    let mut names = BTreeSet::new();
    let mut uris = BTreeSet::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(d) => {
                    names.insert(d.to_ascii_lowercase());
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.insert(ip.to_string());
                    }
                }
                GeneralName::URI(u) => {
                    uris.insert((*u).to_string());
                }
                _ => {}
            }
        }
    }
    let eku = cert.extended_key_usage().ok().flatten();
    CertInfo {
        serial: cert.tbs_certificate.serial.to_str_radix(16),
        uris,
        names,
        server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
        client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
        is_ca: cert.is_ca(),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        issuer: cert.issuer().to_string(),
        spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
    }
}

/// `sha256:<hex>` of a SubjectPublicKeyInfo (DER), as kubeadm prints a CA pin.
pub fn pin_of_spki(spki: &[u8]) -> String {
    let digest = Sha256::digest(spki);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The pin of a DER certificate's public key.
pub fn pin_of_cert(der: &[u8]) -> Result<String, String> {
    Ok(pin_of_spki(&cert_info(der)?.spki))
}

/// Checks the form of a pin given by an operator: `sha256:` and 64 hex digits.
pub fn check_pin(pin: &str) -> Result<String, String> {
    let hex = pin
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("{pin:?} is not a CA pin (expected sha256:<64 hex digits>)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{pin:?} is not a CA pin (expected sha256:<64 hex digits>)"
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(uris: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for u in uris {
            p.subject_alt_names.push(rcgen::SanType::URI(
                (*u).to_string().try_into().expect("uri"),
            ));
        }
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn identities_come_from_the_uris() {
        let info = |u: &[&str]| cert_info(&cert_with(u)).expect("info").identity();
        assert_eq!(info(&["reachmap:collector"]), Some(Identity::Collector));
        assert_eq!(
            info(&["reachmap:node:db-1"]),
            Some(Identity::Node("db-1".into()))
        );
        assert_eq!(
            info(&["reachmap:client:ann", "reachmap:role:operator"]),
            Some(Identity::Client {
                name: "ann".into(),
                role: Role::Operator
            })
        );
        // A client with no role, or two, is nobody; so is a certificate
        // naming two identities.
        assert_eq!(info(&["reachmap:client:ann"]), None);
        assert_eq!(
            info(&[
                "reachmap:client:ann",
                "reachmap:role:operator",
                "reachmap:role:viewer"
            ]),
            None
        );
        assert_eq!(info(&["reachmap:node:a", "reachmap:collector"]), None);
        assert_eq!(info(&["https://example.com/"]), None);
    }

    #[test]
    fn pins_are_checked_and_normalised() {
        let hex = "AB".repeat(32);
        assert_eq!(
            check_pin(&format!("sha256:{hex}")).expect("pin"),
            format!("sha256:{}", "ab".repeat(32))
        );
        assert!(check_pin("sha256:abc").is_err());
        assert!(check_pin(&"ab".repeat(32)).is_err());
        let der = cert_with(&[]);
        let pin = pin_of_cert(&der).expect("pin");
        assert!(check_pin(&pin).is_ok());
        assert!(cert_info(b"garbage").is_err());
    }
}
