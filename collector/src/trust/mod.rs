//! Trust: the collector's certificate authority (`ca`), the node CSRs it
//! signs (`csr`), bootstrap and API tokens (`tokens`), the deny-list
//! (`revoked`), TLS on the collector's ports (`server`), and `Trust`, which
//! holds them at run time and answers "who is this, and may they do that?".

pub mod ca;
pub mod csr;
pub mod revoked;
pub mod server;
pub mod tokens;

pub use ca::{Authority, COLLECTOR_ROLE_URI, Issued, Made, TrustError, is_server_name, read_pin};
pub use server::Peer;
pub use tokens::{Refusal, TokenKind, TokenRecord};

use reachmap_tls::{Identity, Role};
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Default lifetime of a node certificate.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default lifetime of an enrolment token.
pub const ENROLL_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Default lifetime of an API token.
pub const API_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node's certificate: the agent stream only.
    Node { name: String, serial: String },
    /// A client certificate ("client NAME") or an API token ("token ID"),
    /// with its role.
    Client { name: String, role: Role },
    /// `--insecure`: nobody is checked.
    Lab,
}

/// Why a request was refused; becomes `Unauthenticated` / `PermissionDenied`
/// on gRPC and 401 / 403 on HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated(String),
    Forbidden(String),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Unauthenticated(m) | Denied::Forbidden(m) => f.write_str(m),
        }
    }
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> tonic::Status {
        match d {
            Denied::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Denied::Forbidden(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// The trust state of a running collector.
pub struct Trust {
    pub authority: Authority,
    tokens: Mutex<tokens::Tokens>,
    book: RwLock<revoked::CertBook>,
    /// Bumped on every revocation; live streams re-check their certificate.
    revocations: watch::Sender<u64>,
    pub node_lifetime: Duration,
    /// `--insecure`: plaintext, nobody checked.
    pub insecure: bool,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("authority", &self.authority)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// The store's documents (tokens, issued certificates), where the store is.
fn documents(
    store: &crate::store::Location,
) -> Result<std::sync::Arc<crate::store::documents::Documents>, TrustError> {
    crate::store::documents::Documents::open_at(store)
        .map(std::sync::Arc::new)
        .map_err(|what| TrustError::Bad {
            path: store.file(),
            what,
        })
}

impl Trust {
    pub fn open(
        data_dir: &Path,
        store: &crate::store::Location,
        authority: Authority,
        node_lifetime: Duration,
        insecure: bool,
    ) -> Result<Trust, TrustError> {
        let dir = Authority::dir(data_dir);
        let docs = documents(store)?;
        Ok(Trust {
            authority,
            tokens: Mutex::new(tokens::Tokens::open(docs.clone(), &dir)?),
            book: RwLock::new(revoked::CertBook::open(docs, &dir)?),
            revocations: watch::channel(0).0,
            node_lifetime,
            insecure,
        })
    }

    pub fn is_denied(&self, serial: &str) -> bool {
        self.book
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_denied(serial)
    }

    /// Changes whenever a certificate is revoked.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Who is calling, from the connection's certificate or an API token
    /// (`Authorization: Bearer`, or the web page's cookie).
    pub fn caller(&self, peer: Option<&Peer>, token: Option<&str>) -> Result<Caller, Denied> {
        if self.insecure {
            return Ok(Caller::Lab);
        }
        if let Some(info) = peer.and_then(|p| p.cert.as_ref()) {
            if self.is_denied(&info.serial) {
                tracing::warn!(serial = %info.serial, identity = ?info.identity(), "refused a revoked certificate");
                return Err(Denied::Unauthenticated(
                    "this certificate is revoked".into(),
                ));
            }
            return match info.identity() {
                Some(Identity::Node(name)) => Ok(Caller::Node {
                    name,
                    serial: info.serial.clone(),
                }),
                Some(Identity::Client { name, role }) => Ok(Caller::Client {
                    name: format!("client {name}"),
                    role,
                }),
                _ => Err(Denied::Unauthenticated(
                    "the client certificate names no reachmap identity".into(),
                )),
            };
        }
        match token {
            Some(t) => {
                let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
                match tokens.api_role(t, now_unix()) {
                    Ok((id, role)) => Ok(Caller::Client {
                        name: format!("token {id}"),
                        role,
                    }),
                    Err(r) => Err(Denied::Unauthenticated(r.to_string())),
                }
            }
            None => Err(Denied::Unauthenticated(
                "no credentials: use a client certificate (reachmap --credentials FILE) or an API token (Authorization: Bearer)".into(),
            )),
        }
    }

    /// Checks that `caller` may run a query needing `need`.
    pub fn allow(&self, caller: &Caller, need: Role, what: &str) -> Result<(), Denied> {
        match caller {
            Caller::Lab => Ok(()),
            Caller::Node { name, .. } => Err(Denied::Forbidden(format!(
                "node {name}'s certificate can only speak the agent stream, not {what}"
            ))),
            Caller::Client { role, .. } if *role >= need => Ok(()),
            Caller::Client { name, role } => Err(Denied::Forbidden(format!(
                "{name} is a {role}; {what} needs the {need} role"
            ))),
        }
    }

    /// Enrols a node: takes one use of `token` for `node`, checks the CSR
    /// and signs it. One-line reasons on refusal.
    pub fn enrol(&self, token: &str, node: &str, csr_der: &[u8]) -> Result<Issued, String> {
        reachmap_proto::check_node_name(node)?;
        // The CSR first: a bad one must not use the token up.
        let checked = csr::check_csr(csr_der, node)?;
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .enrol(token, node, now_unix())
            .map_err(|r| r.to_string())?;
        self.issue(&checked)
    }

    /// Renews the certificate of a connected node.
    pub fn renew(&self, node: &str, csr_der: &[u8]) -> Result<Issued, String> {
        let checked = csr::check_csr(csr_der, node)?;
        self.issue(&checked)
    }

    fn issue(&self, checked: &csr::CheckedCsr) -> Result<Issued, String> {
        let issued = self
            .authority
            .issue_node(checked, self.node_lifetime)
            .map_err(|e| e.to_string())?;
        self.book
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .issued(
                &issued.serial,
                &checked.node,
                issued.not_after_unix,
                now_unix(),
            )
            .map_err(|e| format!("cannot record the certificate: {e}"))?;
        Ok(issued)
    }

    /// Denies every certificate of `node` and tells live streams.
    pub fn revoke_node(&self, node: &str) -> Result<u32, String> {
        let n = self
            .book
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .revoke_node(node, now_unix())
            .map_err(|e| e.to_string())?;
        self.revocations.send_modify(|v| *v += 1);
        Ok(n)
    }

    /// Denies every certificate of query client `name` (`issue-client
    /// NAME`): every request it makes from then on is refused. `None` when
    /// no certificate was issued to that name.
    pub fn revoke_client(&self, name: &str) -> Result<Option<u32>, String> {
        let n = self
            .book
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .revoke_client(name, now_unix())
            .map_err(|e| e.to_string())?;
        self.revocations.send_modify(|v| *v += 1);
        Ok(n)
    }

    /// The query clients' certificates, with those issued offline since
    /// the collector started.
    pub fn clients(&self) -> Result<Vec<revoked::CertRecord>, String> {
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        book.refresh(now_unix()).map_err(|e| e.to_string())?;
        Ok(book.clients())
    }

    /// Records a query client's certificate issued on the collector's host
    /// (`reachmap-collector issue-client`), so `client revoke` can deny it.
    pub fn record_client_offline(
        data_dir: &Path,
        store: &crate::store::Location,
        name: &str,
        role: Role,
        issued: &Issued,
    ) -> Result<(), String> {
        let dir = Authority::dir(data_dir);
        let docs = documents(store).map_err(|e| e.to_string())?;
        let mut book = revoked::CertBook::open(docs, &dir).map_err(|e| e.to_string())?;
        book.issued_client(
            &issued.serial,
            name,
            role,
            issued.not_after_unix,
            now_unix(),
        )
        .map_err(|e| e.to_string())
    }

    /// Makes a token without a running collector (`reachmap-collector token
    /// create` on the collector's host): written to the file the collector
    /// also reads.
    pub fn create_token_offline(
        data_dir: &Path,
        store: &crate::store::Location,
        kind: TokenKind,
        ttl: Option<Duration>,
        uses: u32,
        node: Option<String>,
        description: String,
    ) -> Result<(String, TokenRecord), String> {
        let dir = Authority::dir(data_dir);
        let docs = documents(store).map_err(|e| e.to_string())?;
        let mut tokens = tokens::Tokens::open(docs, &dir).map_err(|e| e.to_string())?;
        Self::create_in(&mut tokens, kind, ttl, uses, node, description)
    }

    fn create_in(
        tokens: &mut tokens::Tokens,
        kind: TokenKind,
        ttl: Option<Duration>,
        uses: u32,
        node: Option<String>,
        description: String,
    ) -> Result<(String, TokenRecord), String> {
        if let Some(n) = &node {
            reachmap_proto::check_node_name(n)?;
            if kind != TokenKind::Enroll {
                return Err("only enrolment tokens are bound to a node".into());
            }
        }
        let ttl = ttl.unwrap_or(match kind {
            TokenKind::Enroll => ENROLL_TOKEN_TTL,
            _ => API_TOKEN_TTL,
        });
        tokens
            .create(
                kind,
                ttl.as_secs().max(1),
                uses,
                node,
                description,
                now_unix(),
            )
            .map_err(|r| r.to_string())
    }

    pub fn create_token(
        &self,
        kind: TokenKind,
        ttl: Option<Duration>,
        uses: u32,
        node: Option<String>,
        description: String,
    ) -> Result<(String, TokenRecord), String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        Self::create_in(&mut tokens, kind, ttl, uses, node, description)
    }

    pub fn list_tokens(&self) -> Vec<TokenRecord> {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .list()
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), String> {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .revoke(id)
            .map_err(|r| r.to_string())
    }

    /// When an API token ends, if it is a valid one.
    pub fn api_token_expires(&self, token: &str) -> Option<i64> {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .api_expiry(token, now_unix())
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}
