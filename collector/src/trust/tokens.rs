//! Bootstrap (enrolment) and API tokens. A token is `ID.SECRET`: the ID is
//! public (`token list`, `token revoke ID`), only the SHA-256 of the secret
//! is kept, in the store (document `tokens`). Enrolment tokens expire,
//! have a use count and may be bound to one node name; API tokens carry a
//! role and expire.

use super::ca::{TrustError, parse_versioned, read_versioned};
use crate::store::documents::Documents;
use reachmap_tls::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The document in the store, and the file an older collector kept it in.
const DOC: &str = "tokens";
const FILE: &str = "tokens.json";
const FORMAT: u32 = 1;
const ID_HEX: usize = 8;
const SECRET_HEX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Enroll,
    Viewer,
    Operator,
}

impl TokenKind {
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "enroll" => Some(TokenKind::Enroll),
            "viewer" => Some(TokenKind::Viewer),
            "operator" => Some(TokenKind::Operator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Enroll => "enroll",
            TokenKind::Viewer => "viewer",
            TokenKind::Operator => "operator",
        }
    }

    fn role(self) -> Option<Role> {
        match self {
            TokenKind::Enroll => None,
            TokenKind::Viewer => Some(Role::Viewer),
            TokenKind::Operator => Some(Role::Operator),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret.
    hash: String,
    pub kind: TokenKind,
    pub created_unix: i64,
    pub expires_unix: i64,
    /// Enrolment: uses left.
    pub uses_left: u32,
    pub node: Option<String>,
    pub description: String,
    pub revoked: bool,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    tokens: Vec<TokenRecord>,
}

/// Why a token was not taken. The text is what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is malformed (expected ID.SECRET as `reachmap token create` prints it)")]
    Malformed,
    #[error("unknown token {0}")]
    Unknown(String),
    #[error("token {0} is revoked")]
    Revoked(String),
    #[error("token {id} expired {ago}s ago")]
    Expired { id: String, ago: i64 },
    #[error("token {0} is used up")]
    UsedUp(String),
    #[error("token {id} is for node {bound}, not {asked}")]
    OtherNode {
        id: String,
        bound: String,
        asked: String,
    },
    #[error("token {0} is not an enrolment token")]
    NotEnrolment(String),
    #[error("token {0} is an enrolment token, not an API token")]
    NotApi(String),
    #[error("the token store cannot be written: {0}")]
    Store(String),
}

pub struct Tokens {
    /// The file an older collector kept them in.
    path: PathBuf,
    docs: Arc<Documents>,
    records: BTreeMap<String, TokenRecord>,
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal-time comparison of two hex digests.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[usize::from(rand::random::<u8>() & 15)]))
        .collect()
}

/// Splits `ID.SECRET`.
fn split(token: &str) -> Result<(&str, &str), Refusal> {
    let (id, secret) = token.trim().split_once('.').ok_or(Refusal::Malformed)?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(id, ID_HEX) && hex(secret, SECRET_HEX) {
        Ok((id, secret))
    } else {
        Err(Refusal::Malformed)
    }
}

impl Tokens {
    /// The tokens in the store (an older collector's `tls/tokens.json` is
    /// taken in).
    pub fn open(docs: Arc<Documents>, tls_dir: &Path) -> Result<Tokens, TrustError> {
        let path = tls_dir.join(FILE);
        let records = read_versioned::<File>(&docs, DOC, &path, FORMAT)?
            .map(|f| f.tokens.into_iter().map(|t| (t.id.clone(), t)).collect())
            .unwrap_or_default();
        Ok(Tokens {
            path,
            docs,
            records,
        })
    }

    /// Takes in tokens another process (`reachmap-collector token create`
    /// on this host) added to the store since it was read.
    fn merge_from_disk(&mut self) {
        let Ok(Some(f)) = read_versioned::<File>(&self.docs, DOC, &self.path, FORMAT) else {
            return;
        };
        for t in f.tokens {
            self.records.entry(t.id.clone()).or_insert(t);
        }
    }

    /// Writes the tokens, first taking in those another process added, in
    /// one transaction: a token made offline while this collector enrols
    /// (or the other way round) is never overwritten.
    fn save(&mut self) -> Result<(), Refusal> {
        let records = &mut self.records;
        self.docs
            .update(DOC, |stored| {
                if let Some(text) = stored {
                    let f: File = parse_versioned(&text, FORMAT)?;
                    for t in f.tokens {
                        records.entry(t.id.clone()).or_insert(t);
                    }
                }
                let file = File {
                    format: FORMAT,
                    tokens: records.values().cloned().collect(),
                };
                serde_json::to_string_pretty(&file).map_err(|e| e.to_string())
            })
            .map_err(Refusal::Store)
    }

    /// Makes a token; returns its text (shown once) and its record.
    pub fn create(
        &mut self,
        kind: TokenKind,
        ttl_secs: u64,
        uses: u32,
        node: Option<String>,
        description: String,
        now_unix: i64,
    ) -> Result<(String, TokenRecord), Refusal> {
        let mut id = random_hex(ID_HEX);
        while self.records.contains_key(&id) {
            id = random_hex(ID_HEX);
        }
        let secret = random_hex(SECRET_HEX);
        let rec = TokenRecord {
            id: id.clone(),
            hash: hash(&secret),
            kind,
            created_unix: now_unix,
            expires_unix: now_unix.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
            uses_left: if kind == TokenKind::Enroll {
                uses.max(1)
            } else {
                0
            },
            node,
            description,
            revoked: false,
        };
        self.records.insert(id.clone(), rec.clone());
        if let Err(e) = self.save() {
            self.records.remove(&id);
            return Err(e);
        }
        Ok((format!("{id}.{secret}"), rec))
    }

    fn find(&mut self, token: &str, now_unix: i64) -> Result<&TokenRecord, Refusal> {
        let (id, secret) = split(token)?;
        let id = id.to_ascii_lowercase();
        if !self.records.contains_key(&id) {
            self.merge_from_disk();
        }
        let rec = self
            .records
            .get(&id)
            .filter(|r| same(&r.hash, &hash(&secret.to_ascii_lowercase())))
            .ok_or_else(|| Refusal::Unknown(id.clone()))?;
        if rec.revoked {
            return Err(Refusal::Revoked(id));
        }
        if rec.expires_unix <= now_unix {
            return Err(Refusal::Expired {
                id,
                ago: now_unix - rec.expires_unix,
            });
        }
        Ok(rec)
    }

    /// Takes one use of an enrolment token for `node`.
    pub fn enrol(&mut self, token: &str, node: &str, now_unix: i64) -> Result<String, Refusal> {
        let rec = self.find(token, now_unix)?;
        let id = rec.id.clone();
        if rec.kind != TokenKind::Enroll {
            return Err(Refusal::NotEnrolment(id));
        }
        if rec.uses_left == 0 {
            return Err(Refusal::UsedUp(id));
        }
        if let Some(bound) = rec.node.as_ref().filter(|b| *b != node) {
            return Err(Refusal::OtherNode {
                id,
                bound: bound.clone(),
                asked: node.to_string(),
            });
        }
        if let Some(r) = self.records.get_mut(&id) {
            r.uses_left -= 1;
        }
        if let Err(e) = self.save() {
            if let Some(r) = self.records.get_mut(&id) {
                r.uses_left += 1;
            }
            return Err(e);
        }
        Ok(id)
    }

    /// The role an API token gives.
    pub fn api_role(&mut self, token: &str, now_unix: i64) -> Result<(String, Role), Refusal> {
        let rec = self.find(token, now_unix)?;
        rec.kind
            .role()
            .map(|r| (rec.id.clone(), r))
            .ok_or_else(|| Refusal::NotApi(rec.id.clone()))
    }

    /// When a valid API token ends (for the web page's cookie).
    pub fn api_expiry(&mut self, token: &str, now_unix: i64) -> Option<i64> {
        self.find(token, now_unix)
            .ok()
            .filter(|r| r.kind.role().is_some())
            .map(|r| r.expires_unix)
    }

    pub fn list(&self) -> Vec<TokenRecord> {
        self.records.values().cloned().collect()
    }

    pub fn revoke(&mut self, id: &str) -> Result<(), Refusal> {
        let id = id.trim().to_ascii_lowercase();
        let rec = self
            .records
            .get_mut(&id)
            .ok_or_else(|| Refusal::Unknown(id.clone()))?;
        rec.revoked = true;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(dir: &Path) -> Arc<Documents> {
        Arc::new(Documents::open(dir).expect("store"))
    }

    #[test]
    fn tokens_made_by_two_processes_at_once_are_all_kept() {
        let d = tempfile::tempdir().expect("dir");
        let dir = d.path().to_owned();
        let makers: Vec<_> = (0..2)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    // Each its own connection, as the offline command and a
                    // running collector are.
                    let mut t = Tokens::open(docs(&dir), &dir).expect("open");
                    for _ in 0..25 {
                        t.create(TokenKind::Enroll, 60, 1, None, String::new(), 1000)
                            .expect("create");
                    }
                })
            })
            .collect();
        for m in makers {
            m.join().expect("maker");
        }
        let t = Tokens::open(docs(&dir), &dir).expect("open");
        assert_eq!(t.list().len(), 50);
    }

    #[test]
    fn enrolment_tokens_expire_run_out_and_bind_a_name() {
        let d = tempfile::tempdir().expect("dir");
        let mut t = Tokens::open(docs(d.path()), d.path()).expect("open");
        let (tok, rec) = t
            .create(TokenKind::Enroll, 60, 2, None, String::new(), 1000)
            .expect("create");
        assert!(
            !docs(d.path())
                .get(DOC)
                .expect("read")
                .expect("stored")
                .contains(tok.split_once('.').expect("dot").1),
            "only the secret's hash is kept"
        );
        assert_eq!(t.enrol(&tok, "a", 1001), Ok(rec.id.clone()));
        // Kept across a restart.
        let mut t = Tokens::open(docs(d.path()), d.path()).expect("reopen");
        assert_eq!(t.enrol(&tok, "b", 1002), Ok(rec.id.clone()));
        assert_eq!(
            t.enrol(&tok, "c", 1003),
            Err(Refusal::UsedUp(rec.id.clone()))
        );
        let (tok2, rec2) = t
            .create(
                TokenKind::Enroll,
                60,
                1,
                Some("db-1".into()),
                String::new(),
                1000,
            )
            .expect("create");
        assert_eq!(
            t.enrol(&tok2, "db-2", 1001).expect_err("bound").to_string(),
            format!("token {} is for node db-1, not db-2", rec2.id)
        );
        assert_eq!(
            t.enrol(&tok2, "db-1", 1061),
            Err(Refusal::Expired {
                id: rec2.id.clone(),
                ago: 1
            })
        );
        assert_eq!(t.enrol("nonsense", "a", 0), Err(Refusal::Malformed));
        let forged = format!("{}.{}", rec2.id, "0".repeat(32));
        assert_eq!(
            t.enrol(&forged, "db-1", 1001),
            Err(Refusal::Unknown(rec2.id.clone()))
        );
        t.revoke(&rec2.id).expect("revoke");
        assert_eq!(t.enrol(&tok2, "db-1", 1001), Err(Refusal::Revoked(rec2.id)));
    }

    #[test]
    fn api_tokens_give_their_role_and_cannot_enrol() {
        let d = tempfile::tempdir().expect("dir");
        let mut t = Tokens::open(docs(d.path()), d.path()).expect("open");
        let (tok, rec) = t
            .create(TokenKind::Viewer, 60, 0, None, "grafana".into(), 0)
            .expect("create");
        assert_eq!(t.api_role(&tok, 1), Ok((rec.id.clone(), Role::Viewer)));
        assert_eq!(t.enrol(&tok, "a", 1), Err(Refusal::NotEnrolment(rec.id)));
        let (etok, erec) = t
            .create(TokenKind::Enroll, 60, 1, None, String::new(), 0)
            .expect("create");
        assert_eq!(t.api_role(&etok, 1), Err(Refusal::NotApi(erec.id)));
    }
}
