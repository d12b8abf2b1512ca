//! The node certificates the CA issued and the deny-list: `DATA_DIR/tls/
//! certs.json`. `node revoke NAME` puts every certificate issued to NAME on
//! the deny-list; the TLS handshake and every live stream check it. A node
//! enrolled again afterwards (with a new token) gets a new serial and is let
//! in. Entries are dropped once their certificate has expired.

use super::ca::{TrustError, read_versioned, write_versioned};
use crate::store::documents::Documents;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// The document in the store, and the file an older collector kept it in.
const DOC: &str = "certificates";
const FILE: &str = "certs.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    pub serial: String,
    pub node: String,
    pub issued_unix: i64,
    pub not_after_unix: i64,
    pub revoked_unix: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    certs: Vec<CertRecord>,
}

pub struct CertBook {
    docs: Arc<Documents>,
    certs: BTreeMap<String, CertRecord>,
    denied: BTreeSet<String>,
}

impl CertBook {
    pub fn open(docs: Arc<Documents>, tls_dir: &Path) -> Result<CertBook, TrustError> {
        let path = tls_dir.join(FILE);
        let certs: BTreeMap<String, CertRecord> =
            read_versioned::<File>(&docs, DOC, &path, FORMAT)?
                .map(|f| f.certs.into_iter().map(|c| (c.serial.clone(), c)).collect())
                .unwrap_or_default();
        let denied = certs
            .values()
            .filter(|c| c.revoked_unix.is_some())
            .map(|c| c.serial.clone())
            .collect();
        Ok(CertBook {
            docs,
            certs,
            denied,
        })
    }

    fn save(&self) -> Result<(), TrustError> {
        write_versioned(
            &self.docs,
            DOC,
            &File {
                format: FORMAT,
                certs: self.certs.values().cloned().collect(),
            },
        )
    }

    /// Records a certificate issued to `node`, dropping expired entries.
    pub fn issued(
        &mut self,
        serial: &str,
        node: &str,
        not_after_unix: i64,
        now_unix: i64,
    ) -> Result<(), TrustError> {
        self.certs.retain(|_, c| c.not_after_unix > now_unix);
        self.denied.retain(|s| self.certs.contains_key(s));
        self.certs.insert(
            serial.to_string(),
            CertRecord {
                serial: serial.to_string(),
                node: node.to_string(),
                issued_unix: now_unix,
                not_after_unix,
                revoked_unix: None,
            },
        );
        self.save()
    }

    /// Denies every certificate of `node`; returns how many were put on
    /// the list.
    pub fn revoke_node(&mut self, node: &str, now_unix: i64) -> Result<u32, TrustError> {
        let mut n = 0;
        for c in self.certs.values_mut().filter(|c| c.node == node) {
            if c.revoked_unix.is_none() {
                c.revoked_unix = Some(now_unix);
                self.denied.insert(c.serial.clone());
                n += 1;
            }
        }
        self.save()?;
        Ok(n)
    }

    pub fn is_denied(&self, serial: &str) -> bool {
        self.denied.contains(serial)
    }

    /// Whether `node` has any certificate on the deny-list.
    pub fn node_revoked(&self, node: &str) -> bool {
        self.certs
            .values()
            .any(|c| c.node == node && c.revoked_unix.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(dir: &Path) -> Arc<Documents> {
        Arc::new(Documents::open(dir).expect("store"))
    }

    #[test]
    fn revoking_a_node_denies_its_certificates_and_survives_a_restart() {
        let d = tempfile::tempdir().expect("dir");
        let mut b = CertBook::open(docs(d.path()), d.path()).expect("open");
        b.issued("a1", "n1", 100, 0).expect("issued");
        b.issued("a2", "n1", 100, 0).expect("issued");
        b.issued("b1", "n2", 100, 0).expect("issued");
        assert_eq!(b.revoke_node("n1", 5).expect("revoke"), 2);
        let mut b = CertBook::open(docs(d.path()), d.path()).expect("reopen");
        assert!(b.is_denied("a1") && b.is_denied("a2") && !b.is_denied("b1"));
        // Enrolled again later: the new certificate is let in.
        b.issued("a3", "n1", 200, 10).expect("issued");
        assert!(!b.is_denied("a3"));
        // Expired entries go.
        b.issued("c1", "n3", 300, 150).expect("issued");
        assert!(!b.is_denied("a1"));
    }
}
