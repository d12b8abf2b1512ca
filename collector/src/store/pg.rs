//! The PostgreSQL side of `sql::Db`: a `tokio-postgres` client whose
//! connection runs on a small runtime of its own, so the store's
//! synchronous code (the writer's thread, readers on blocking threads) can
//! wait on it from anywhere. TLS is rustls, verifying the server against
//! `--store-ca` (or the system's roots); the URL's `sslmode` says whether
//! it is required. A dead connection is made again on the next call; a
//! silent one (a partition) fails within `TCP_USER_TIMEOUT`, not the
//! kernel's many minutes.

use super::sql::{Error, Result, Value, numbered};
use bytes::BytesMut;
use futures::StreamExt;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged data fails the connection after this long.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(8);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);

/// Where the shared store is and how to trust it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub url: String,
    /// PEM bundle of the database server's CA; the system roots without it.
    pub ca: Option<PathBuf>,
}

impl Target {
    /// The URL without its password, for logs and errors.
    pub fn shown(&self) -> String {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(cfg) => {
                let ports = cfg.get_ports();
                let hosts: Vec<String> = cfg
                    .get_hosts()
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                        match h {
                            tokio_postgres::config::Host::Tcp(h) if h.contains(':') => {
                                format!("[{h}]:{port}")
                            }
                            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                        }
                    })
                    .collect();
                format!(
                    "postgres://{}/{}",
                    hosts.join(","),
                    cfg.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "postgres://…".to_string(),
        }
    }
}

/// Checks a `--store postgres://…` URL and its CA file without connecting.
pub fn check(target: &Target) -> std::result::Result<(), String> {
    let cfg: tokio_postgres::Config = target
        .url
        .parse()
        .map_err(|e| format!("{} is not a PostgreSQL URL ({e})", target.shown()))?;
    if cfg.get_hosts().is_empty() {
        return Err(format!("{} names no host", target.shown()));
    }
    tls(target.ca.as_deref()).map(|_| ())
}

fn runtime() -> std::result::Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL client's runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn tls(ca: Option<&Path>) -> std::result::Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut found = 0;
            for cert in rustls_pemfile_certs(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                found += 1;
            }
            if found == 0 {
                return Err(format!("{}: no PEM certificate in it", path.display()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> impl Iterator<Item = std::result::Result<rustls::pki_types::CertificateDer<'static>, String>> + '_
{
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.map_err(|e| e.to_string()))
}

/// Waits for `f` on the client's runtime (callable from any thread).
fn wait<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

pub struct Pg {
    target: Target,
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, Statement>>,
    pub(super) in_tx: Cell<bool>,
}

impl Pg {
    pub fn connect(target: &Target) -> Result<Pg> {
        let pg = Pg {
            target: target.clone(),
            client: RefCell::new(None),
            statements: RefCell::default(),
            in_tx: Cell::new(false),
        };
        pg.client()?;
        Ok(pg)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn open(&self) -> Result<Client> {
        let mut cfg: tokio_postgres::Config = self
            .target
            .url
            .parse()
            .map_err(|e| Error::Postgres(format!("{}: {e}", self.target.shown())))?;
        cfg.connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .application_name("reachmap-collector");
        let tls = tls(self.target.ca.as_deref()).map_err(Error::Postgres)?;
        let shown = self.target.shown();
        let rt = runtime().map_err(Error::Postgres)?;
        let job = rt.spawn(async move {
            let (client, conn) = cfg.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(store = %shown, error = %e, "connection to the store ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        match wait(job) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(Error::Postgres(format!(
                "{}: {}",
                self.target.shown(),
                Error::from(e)
            ))),
            Err(e) => Err(Error::Postgres(format!("{}: {e}", self.target.shown()))),
        }
    }

    /// The client, made again when the last one died (outside a transaction:
    /// a transaction's connection cannot be swapped under it).
    fn client(&self) -> Result<std::cell::Ref<'_, Client>> {
        let dead = self.client.borrow().as_ref().is_none_or(Client::is_closed);
        if dead {
            if self.in_tx.get() {
                return Err(Error::Postgres(format!(
                    "{}: connection lost in a transaction",
                    self.target.shown()
                )));
            }
            self.statements.borrow_mut().clear();
            let fresh = self.open()?;
            *self.client.borrow_mut() = Some(fresh);
        }
        let r = self.client.borrow();
        std::cell::Ref::filter_map(r, Option::as_ref)
            .map_err(|_| Error::Postgres("no connection".to_string()))
    }

    fn statement(&self, client: &Client, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = wait(client.prepare(&numbered(sql)))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<u64> {
        let client = self.client()?;
        let stmt = self.statement(&client, sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as _).collect();
        Ok(wait(client.execute(&stmt, &params))?)
    }

    /// Every run's request is sent before the first answer is awaited: one
    /// round trip for the lot (in chunks, so memory stays bounded).
    pub fn execute_many(&self, sql: &str, rows: &[Vec<Value<'_>>]) -> Result<Vec<u64>> {
        const CHUNK: usize = 1024;
        let client = self.client()?;
        let stmt = self.statement(&client, sql)?;
        let (client, stmt) = (&*client, &stmt);
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(CHUNK) {
            let runs = chunk.iter().map(|r| async move {
                let params: Vec<&(dyn ToSql + Sync)> = r.iter().map(|v| v as _).collect();
                client.execute(stmt, &params).await
            });
            for n in wait(futures::future::join_all(runs)) {
                out.push(n?);
            }
        }
        Ok(out)
    }

    pub fn each(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&tokio_postgres::Row) -> Result<()>,
    ) -> Result<()> {
        let client = self.client()?;
        let stmt = self.statement(&client, sql)?;
        let rows = wait(client.query_raw(&stmt, args.iter()))?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = wait(rows.next()) {
            each(&row?)?;
        }
        Ok(())
    }

    pub fn batch(&self, sql: &str) -> Result<()> {
        let client = self.client()?;
        Ok(wait(client.batch_execute(sql))?)
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Int(v) => match *ty {
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
            Value::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// An integer of any width PostgreSQL answers with (`count(*)` is BIGINT,
/// `length()` INTEGER).
pub struct Int(pub i64);

impl<'a> FromSql<'a> for Int {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Int(match *ty {
            Type::INT2 => i64::from(i16::from_sql(ty, raw)?),
            Type::INT4 => i64::from(i32::from_sql(ty, raw)?),
            _ => i64::from_sql(ty, raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
    }
}
