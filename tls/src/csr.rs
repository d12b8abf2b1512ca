//! The key a node makes for itself — it never leaves the host — and the CSR
//! that asks the collector to certify it under the node's name.

use crate::identity::node_uri;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

/// A fresh ECDSA P-256 key (PEM) and a CSR (DER) for node `name`, with the
/// URI SAN `reachmap:node:NAME`.
pub fn node_key_and_csr(name: &str) -> Result<(String, Vec<u8>), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.subject_alt_names.push(SanType::URI(
        node_uri(name)
            .try_into()
            .map_err(|_| format!("{name:?} cannot be put in a certificate"))?,
    ));
    let csr = p
        .serialize_request(&key)
        .map_err(|e| format!("cannot make a CSR: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}
