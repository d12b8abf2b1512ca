//! The certificates the CA issued — to nodes, and to query clients by
//! `reachmap-collector issue-client` — and the deny-list: the store's
//! `certificates` document (`DATA_DIR/tls/certs.json` before the store).
//! `node revoke NAME` and `client revoke NAME` put every certificate issued
//! to NAME on the deny-list; the TLS handshake and every request and live
//! stream check it. A node enrolled again afterwards (with a new token), or
//! a client issued a new bundle, gets a new serial and is let in. Entries
//! are dropped once their certificate has expired.

use super::ca::{TrustError, bad, parse_versioned, read_versioned};
use crate::store::documents::Documents;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// The document in the store, and the file an older collector kept it in.
const DOC: &str = "certificates";
const FILE: &str = "certs.json";
const FORMAT: u32 = 1;

/// Whom a certificate was issued to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// A node (enrolment or renewal): the agent stream.
    #[default]
    Node,
    /// A query client (`issue-client`), with its role.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    pub serial: String,
    /// The node's or the client's name.
    pub node: String,
    pub issued_unix: i64,
    pub not_after_unix: i64,
    pub revoked_unix: Option<i64>,
    /// Older records are all nodes'.
    #[serde(default)]
    pub kind: CertKind,
    /// A client's role ("viewer", "operator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
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
        let mut book = CertBook {
            docs,
            certs,
            denied: BTreeSet::new(),
        };
        book.rebuild_denied();
        Ok(book)
    }

    fn rebuild_denied(&mut self) {
        self.denied = self
            .certs
            .values()
            .filter(|c| c.revoked_unix.is_some())
            .map(|c| c.serial.clone())
            .collect();
    }

    /// Takes in `stored` records this book does not hold (certificates
    /// another process issued: `issue-client` on the collector's host), and
    /// revocations of records it does; expired ones are left out.
    fn take_in(&mut self, stored: Vec<CertRecord>, now_unix: i64) {
        for c in stored {
            if c.not_after_unix <= now_unix {
                continue;
            }
            match self.certs.get_mut(&c.serial) {
                Some(mine) => {
                    if mine.revoked_unix.is_none() {
                        mine.revoked_unix = c.revoked_unix;
                    }
                }
                None => {
                    self.certs.insert(c.serial.clone(), c);
                }
            }
        }
        self.rebuild_denied();
    }

    /// Reads what another process added since this book was read.
    pub fn refresh(&mut self, now_unix: i64) -> Result<(), TrustError> {
        let at = || self.docs.path().join(DOC);
        let Some(text) = self.docs.get(DOC).map_err(|e| bad(&at(), e))? else {
            return Ok(());
        };
        let f: File = parse_versioned(&text, FORMAT).map_err(|e| bad(&at(), e))?;
        self.take_in(f.certs, now_unix);
        Ok(())
    }

    /// Writes the book, first taking in what another process added, in one
    /// transaction: a client certificate issued offline while this
    /// collector enrols nodes (or the other way round) is never lost.
    fn save(&mut self, now_unix: i64) -> Result<(), TrustError> {
        let docs = self.docs.clone();
        let at = docs.path().join(DOC);
        docs.update(DOC, |stored| {
            if let Some(text) = stored {
                let f: File = parse_versioned(&text, FORMAT)?;
                self.take_in(f.certs, now_unix);
            }
            let file = File {
                format: FORMAT,
                certs: self.certs.values().cloned().collect(),
            };
            serde_json::to_string_pretty(&file).map_err(|e| e.to_string())
        })
        .map_err(|e| bad(&at, e))
    }

    /// Records a certificate issued to node `node`, dropping expired
    /// entries.
    pub fn issued(
        &mut self,
        serial: &str,
        node: &str,
        not_after_unix: i64,
        now_unix: i64,
    ) -> Result<(), TrustError> {
        self.record(serial, node, None, not_after_unix, now_unix)
    }

    /// Records a query client's certificate.
    pub fn issued_client(
        &mut self,
        serial: &str,
        name: &str,
        role: reachmap_tls::Role,
        not_after_unix: i64,
        now_unix: i64,
    ) -> Result<(), TrustError> {
        self.record(serial, name, Some(role), not_after_unix, now_unix)
    }

    fn record(
        &mut self,
        serial: &str,
        name: &str,
        role: Option<reachmap_tls::Role>,
        not_after_unix: i64,
        now_unix: i64,
    ) -> Result<(), TrustError> {
        self.certs.retain(|_, c| c.not_after_unix > now_unix);
        self.denied.retain(|s| self.certs.contains_key(s));
        self.certs.insert(
            serial.to_string(),
            CertRecord {
                serial: serial.to_string(),
                node: name.to_string(),
                issued_unix: now_unix,
                not_after_unix,
                revoked_unix: None,
                kind: if role.is_some() {
                    CertKind::Client
                } else {
                    CertKind::Node
                },
                role: role.map(|r| r.as_str().to_string()),
            },
        );
        self.save(now_unix)
    }

    /// Denies every certificate of node `node`; returns how many were put
    /// on the list.
    pub fn revoke_node(&mut self, node: &str, now_unix: i64) -> Result<u32, TrustError> {
        self.revoke(CertKind::Node, node, now_unix)
    }

    /// Denies every certificate of query client `name`, including those
    /// issued offline since this book was read; `None` when no certificate
    /// was ever issued to that name.
    pub fn revoke_client(&mut self, name: &str, now_unix: i64) -> Result<Option<u32>, TrustError> {
        self.refresh(now_unix)?;
        if !self
            .certs
            .values()
            .any(|c| c.kind == CertKind::Client && c.node == name)
        {
            return Ok(None);
        }
        self.revoke(CertKind::Client, name, now_unix).map(Some)
    }

    fn revoke(&mut self, kind: CertKind, name: &str, now_unix: i64) -> Result<u32, TrustError> {
        let mut n = 0;
        for c in self
            .certs
            .values_mut()
            .filter(|c| c.kind == kind && c.node == name)
        {
            if c.revoked_unix.is_none() {
                c.revoked_unix = Some(now_unix);
                self.denied.insert(c.serial.clone());
                n += 1;
            }
        }
        self.save(now_unix)?;
        Ok(n)
    }

    pub fn is_denied(&self, serial: &str) -> bool {
        self.denied.contains(serial)
    }

    /// Whether `node` has any certificate on the deny-list.
    pub fn node_revoked(&self, node: &str) -> bool {
        self.certs
            .values()
            .any(|c| c.kind == CertKind::Node && c.node == node && c.revoked_unix.is_some())
    }

    /// The query clients' certificates not yet expired, by name.
    pub fn clients(&self) -> Vec<CertRecord> {
        let mut v: Vec<CertRecord> = self
            .certs
            .values()
            .filter(|c| c.kind == CertKind::Client)
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.node, a.issued_unix).cmp(&(&b.node, b.issued_unix)));
        v
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

    #[test]
    fn clients_issued_offline_are_kept_and_revoked_by_name_only() {
        let d = tempfile::tempdir().expect("dir");
        // The running collector's book, read before the offline issue.
        let mut running = CertBook::open(docs(d.path()), d.path()).expect("open");
        running.issued("n-1", "ann", 100, 0).expect("node issued");
        // `issue-client ann` on the collector's host, another connection.
        let mut offline = CertBook::open(docs(d.path()), d.path()).expect("open");
        offline
            .issued_client("c-1", "ann", reachmap_tls::Role::Viewer, 100, 1)
            .expect("client issued");
        // The running book's next write keeps the offline record.
        running.issued("n-2", "bob", 100, 2).expect("node issued");
        let reread = CertBook::open(docs(d.path()), d.path()).expect("reopen");
        assert_eq!(reread.clients().len(), 1, "the offline client is kept");
        // A client named like a node: revoking the client leaves the node.
        assert_eq!(running.revoke_client("ann", 3).expect("revoke"), Some(1));
        assert!(running.is_denied("c-1"));
        assert!(!running.is_denied("n-1"), "node ann is not the client ann");
        assert!(!running.node_revoked("ann"));
        let clients = running.clients();
        assert_eq!(clients[0].role.as_deref(), Some("viewer"));
        assert_eq!(clients[0].revoked_unix, Some(3));
        // Unknown client: nothing denied.
        assert_eq!(running.revoke_client("nobody", 4).expect("revoke"), None);
        let reread = CertBook::open(docs(d.path()), d.path()).expect("reopen");
        assert!(reread.is_denied("c-1") && !reread.is_denied("n-1"));
    }

    #[test]
    fn a_record_of_an_older_collector_reads_as_a_node() {
        let r: CertRecord = serde_json::from_str(
            r#"{"serial":"a","node":"n1","issued_unix":1,"not_after_unix":2,"revoked_unix":null}"#,
        )
        .expect("parse");
        assert_eq!((r.kind, r.role), (CertKind::Node, None));
    }
}
