//! The collector's memory: by default one SQLite file (`DATA_DIR/store.db`,
//! WAL mode, bundled SQLite, nothing to install); with `--store
//! postgres://…` a PostgreSQL database that several collectors share. The
//! same schema and queries on both (`sql.rs`, `schema.rs`), holding every
//! event of every node,
//! every cell state change, the fact changes `why --at` needs (each part of a
//! node's facts stored once per content hash, the firewall as a manifest
//! and a blob per chain: `firewall.rs`), and the node registry.
//!
//! One owner writes: `writer.rs` runs on a thread of its own and commits
//! whatever is queued in one transaction (group commit: a batch closes after
//! 10 ms or 4,096 writes), so the state task never waits on the disk. An
//! event's writer learns when its commit is durable — the ingest session
//! acks the agent only then. Reads open read-only connections of their own
//! (WAL lets them run beside the writer). Retention by age and size prunes
//! in small chunks between batches.

pub mod cells;
pub mod documents;
pub mod facts;
pub mod firewall;
pub mod pg;
pub mod plans;
pub mod read;
pub mod registry;
mod schema;
pub mod sql;
mod writer;

pub use registry::NodeRecord;
pub use schema::{VERSION as SCHEMA_VERSION, migrate_pg};

use crate::probe::CellChange;
use reachmap_proto::v1 as pb;
use rusqlite::{Connection, OpenFlags};
use sql::Db;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub const FILE: &str = "store.db";
/// Writes queued toward the writer; sessions wait when it is full, the state
/// task's writes (facts) are dropped and counted.
const QUEUE: usize = 65_536;
/// Cell changes queued toward the writer at most. Past it the state task
/// keeps the changes in the matrix as owed cells (`Matrix::owe`) and writes
/// each as one change once there is room: memory stays bounded and no
/// cell's latest state is lost, though its steps in between are.
pub const CELL_ROWS: usize = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path}: {message}; move it aside, or start with --store-recover to do so and begin a new store"
    )]
    Unusable { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A shared database that cannot be reached or used.
    #[error("store {shown}: {message}")]
    Database { shown: String, message: String },
}

/// Where the store is.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// `store.db` in this data directory.
    Dir(PathBuf),
    /// A PostgreSQL database, shared by the collectors that name it.
    Postgres(pg::Target),
}

impl Location {
    /// The store file, or the database without its password.
    pub fn shown(&self) -> String {
        match self {
            Location::Dir(d) => d.join(FILE).display().to_string(),
            Location::Postgres(t) => t.shown(),
        }
    }

    /// The SQLite file (for a data directory); the database without its
    /// password as a path, for messages.
    pub fn file(&self) -> PathBuf {
        match self {
            Location::Dir(d) => d.join(FILE),
            Location::Postgres(t) => PathBuf::from(t.shown()),
        }
    }

    fn reader(&self) -> Result<Db, String> {
        match self {
            Location::Dir(d) => {
                let path = d.join(FILE);
                let conn = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                let _ = conn.busy_timeout(Duration::from_secs(5));
                // Reads of history walk many pages: map the file instead of
                // a read(2) per page.
                let _ = conn.pragma_update(None, "mmap_size", 1i64 << 30);
                conn.set_prepared_statement_cache_capacity(64);
                Ok(Db::from(conn))
            }
            Location::Postgres(t) => pg::Pg::connect(t)
                .map(Db::Postgres)
                .map_err(|e| e.to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Rows older than this are pruned.
    pub retention: Duration,
    /// The store file (with its WAL) is kept under this many bytes.
    pub max_bytes: u64,
    /// Move an unusable store aside and start a new one.
    pub recover: bool,
    /// Cell changes queued toward the writer at most (`CELL_ROWS`).
    pub cell_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(14 * 86_400),
            max_bytes: 2 << 30,
            recover: false,
            cell_rows: CELL_ROWS,
        }
    }
}

/// What the writer reports after every batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub writable: bool,
    /// This collector does the fleet-wide work on the store (members.rs).
    pub leader: bool,
    pub error: String,
    pub failing_since: i64,
    pub bytes: u64,
    /// The oldest moment still held (0: nothing pruned yet, all is held).
    pub oldest: i64,
    pub events: u64,
    pub cell_changes: u64,
    pub fact_changes: u64,
    pub commits_total: u64,
    pub commit_failures_total: u64,
    pub dropped_writes_total: u64,
    pub prunes_total: u64,
    pub pruned_rows_total: u64,
    pub last_prune_seconds: f64,
}

/// An event's fate: `Ok(true)` stored, `Ok(false)` a duplicate of one stored
/// before, `Err` not stored (the agent keeps it and sends it again).
pub type Committed = Result<bool, String>;

pub struct EventWrite {
    pub node: String,
    /// The agent instance that made it; 0 for the collector's own events.
    pub instance: u64,
    pub event: pb::Event,
    pub done: Option<oneshot::Sender<Committed>>,
}

pub struct FactWrite {
    pub node: String,
    pub part: &'static str,
    pub time: i64,
    /// The key of `data`'s blob, or of `firewall`'s manifest. A firewall
    /// part given as `data` (a bundle, `facts::encode`) is split by the
    /// writer into blobs keyed by their own hashes.
    pub hash: [u8; 32],
    /// Empty when `firewall` holds the part.
    pub data: Vec<u8>,
    /// The firewall part already split (`facts::encode_part`).
    pub firewall: Option<firewall::Split>,
}

pub enum Write {
    Event(EventWrite),
    /// Cell changes, as one applied batch of results made them; queue them
    /// through `Store::queue_cells`, which keeps to `CELL_ROWS`.
    Cells(Vec<CellChange>),
    Fact(FactWrite),
    Nodes(Vec<NodeRecord>),
    /// A collector's heartbeat row (`members.rs`).
    Member(crate::members::Record),
    /// The leader's plans for other collectors' agents (`plans.rs`).
    Plans(Vec<plans::PlanRow>),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The cell changes on their way to the writer, shared by the store's
/// handles and the writer.
#[derive(Default)]
pub struct Backlog {
    /// Cell changes queued (toward `CELL_ROWS`), and the writes carrying them.
    rows: std::sync::atomic::AtomicUsize,
    writes: std::sync::atomic::AtomicUsize,
    /// Cells the state task's matrix owes the store (`Matrix::owe`).
    owed: std::sync::atomic::AtomicUsize,
}

impl Backlog {
    /// `w` is being queued.
    fn add(&self, w: &Write) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = w.cell_rows();
        if n > 0 {
            self.rows.fetch_add(n, Relaxed);
            self.writes.fetch_add(1, Relaxed);
        }
    }

    /// `w` left the queue (the writer took it, or it was never sent).
    pub fn taken(&self, w: &Write) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = w.cell_rows();
        if n > 0 {
            self.rows.fetch_sub(n, Relaxed);
            self.writes.fetch_sub(1, Relaxed);
        }
    }
}

impl Write {
    /// The cell changes it carries, which count toward `CELL_ROWS`.
    pub fn cell_rows(&self) -> usize {
        match self {
            Write::Cells(c) => c.len(),
            _ => 0,
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Write>,
    location: Location,
    status: watch::Receiver<Status>,
    readers: Arc<Mutex<Vec<Db>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Cell changes queued and not yet taken by the writer, and owed.
    backlog: Arc<Backlog>,
    /// `Options::cell_rows`.
    cell_rows: usize,
    /// This collector does the fleet-wide work on the store (pruning):
    /// always on the embedded store, the fleet lock's holder on a shared one.
    leader: Arc<std::sync::atomic::AtomicBool>,
    /// This collector's name, written into the registry records it makes.
    member: Arc<std::sync::OnceLock<String>>,
}

impl Store {
    /// Opens (or makes) `dir/store.db`, migrates it and starts the writer.
    /// Also returns the node registry as stored.
    pub fn open(dir: &Path, opts: Options) -> Result<(Store, Vec<NodeRecord>), StoreError> {
        Store::open_at(&Location::Dir(dir.to_owned()), opts)
    }

    /// Opens the store at `at` (migrating it) and starts the writer; also
    /// returns the node registry as stored.
    pub fn open_at(at: &Location, opts: Options) -> Result<(Store, Vec<NodeRecord>), StoreError> {
        let db = match at {
            Location::Dir(dir) => open_file(dir, &opts)?,
            Location::Postgres(target) => {
                writer::open_pg(target).map_err(|message| StoreError::Database {
                    shown: target.shown(),
                    message,
                })?
            }
        };
        let nodes = registry::load(&db).map_err(|e| StoreError::Unusable {
            path: at.file(),
            message: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (status_tx, status) = watch::channel(writer::initial_status(&db));
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let backlog = Arc::new(Backlog::default());
        let leader = Arc::new(std::sync::atomic::AtomicBool::new(matches!(
            at,
            Location::Dir(_)
        )));
        let shared = writer::Shared {
            dropped: dropped.clone(),
            backlog: backlog.clone(),
            leader: leader.clone(),
        };
        let cell_rows = opts.cell_rows;
        writer::spawn(db, at.clone(), rx, status_tx, opts, shared).map_err(|e| StoreError::Io {
            path: at.file(),
            message: e.to_string(),
        })?;
        Ok((
            Store {
                tx,
                location: at.clone(),
                status,
                readers: Arc::default(),
                dropped,
                backlog,
                cell_rows,
                leader,
                member: Arc::default(),
            },
            nodes,
        ))
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The SQLite file, or the database (without its password) as a path.
    pub fn path(&self) -> PathBuf {
        self.location.file()
    }

    /// Queues `event` and returns when its commit is known.
    pub async fn event(
        &self,
        node: &str,
        instance: u64,
        event: pb::Event,
    ) -> oneshot::Receiver<Committed> {
        let (done, rx) = oneshot::channel();
        let w = Write::Event(EventWrite {
            node: node.to_string(),
            instance,
            event,
            done: Some(done),
        });
        // On failure the receiver reports the writer gone.
        let _ = self.tx.send(w).await;
        rx
    }

    /// Queues a write without waiting (the state task's): when the queue is
    /// full it is dropped and counted.
    pub fn queue(&self, w: Write) {
        self.backlog.add(&w);
        if let Err(e) = self.tx.try_send(w) {
            let w = e.into_inner();
            self.backlog.taken(&w);
            self.dropped.fetch_add(
                w.cell_rows().max(1) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// How many more cell changes the queue takes now (`Options::cell_rows`).
    pub fn cell_room(&self) -> usize {
        self.cell_rows
            .saturating_sub(self.backlog.rows.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Queues cell changes without waiting. `Err` gives them back when they
    /// do not fit (`cell_room`) or the queue is full: the caller keeps them.
    pub fn queue_cells(&self, changes: Vec<CellChange>) -> Result<(), Vec<CellChange>> {
        let n = changes.len();
        if n == 0 {
            return Ok(());
        }
        if n > self.cell_room() {
            return Err(changes);
        }
        let w = Write::Cells(changes);
        self.backlog.add(&w);
        match self.tx.try_send(w) {
            Ok(()) => Ok(()),
            Err(e) => {
                let w = e.into_inner();
                self.backlog.taken(&w);
                match w {
                    Write::Cells(changes) => Err(changes),
                    _ => Err(Vec::new()),
                }
            }
        }
    }

    /// Queues a write, waiting while the queue is full (bulk loads).
    pub async fn queue_waiting(&self, w: Write) {
        self.backlog.add(&w);
        if let Err(e) = self.tx.send(w).await {
            self.backlog.taken(&e.0);
        }
    }

    /// How many cells the state task's matrix owes the store now.
    pub fn set_owed(&self, cells: usize) {
        self.backlog
            .owed
            .store(cells, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until everything queued so far is committed (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Write::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether this collector prunes the store (see `members.rs`).
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader
            .store(leader, std::sync::atomic::Ordering::Relaxed);
    }

    /// Names this collector in the records it writes (once; later calls
    /// keep the first name).
    pub fn set_member_name(&self, name: &str) {
        let _ = self.member.set(name.to_string());
    }

    pub fn member_name(&self) -> &str {
        self.member.get().map_or("", String::as_str)
    }

    /// Rows waiting for the writer now: writes queued, each cell change
    /// counted, and the cells owed past the queue (`Matrix::owe`).
    pub fn queued(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let writes = QUEUE - self.tx.capacity();
        let b = &self.backlog;
        (writes.saturating_sub(b.writes.load(Relaxed))
            + b.rows.load(Relaxed)
            + b.owed.load(Relaxed)) as u64
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn status_watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Runs `f` on a read-only connection off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let readers = self.readers.clone();
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.lock().ok().and_then(|mut v| v.pop()) {
                Some(c) => c,
                None => location.reader()?,
            };
            let out = f(&conn);
            if let Ok(mut v) = readers.lock()
                && v.len() < 4
            {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|e| format!("store reader failed: {e}"))?
    }
}

/// Opens (or makes) `dir/store.db` and migrates it, moving an unusable one
/// aside when `opts.recover` says so; takes in an older collector's
/// `nodes.json`.
fn open_file(dir: &Path, opts: &Options) -> Result<Db, StoreError> {
    let io = |message: String| StoreError::Io {
        path: dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(e.to_string()))?;
    let path = dir.join(FILE);
    let conn = match writer::open(&path) {
        Ok(c) => c,
        Err(message) if opts.recover && path.exists() => {
            let aside = move_aside(&path).map_err(io)?;
            tracing::warn!(store = %path.display(), moved_to = %aside.display(), reason = %message, "moved an unusable store aside; starting a new one");
            let conn = writer::open(&path).map_err(|message| StoreError::Unusable {
                path: path.clone(),
                message,
            })?;
            salvage(&aside, &conn);
            conn
        }
        Err(message) => return Err(StoreError::Unusable { path, message }),
    };
    let db = Db::from(conn);
    match registry::import_legacy(&db, dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(nodes = n, "took in the node registry of nodes.json"),
        Err(e) => tracing::warn!(error = %e, "could not take in the old node registry"),
    }
    Ok(db)
}

/// Copies what can still be read of a store moved aside — the trust
/// documents (tokens, the deny-list) and the node registry — into the new
/// one; says what could not be, since a lost deny-list lets revoked nodes
/// back in.
fn salvage(aside: &Path, conn: &Connection) {
    let copy = || -> rusqlite::Result<(usize, usize)> {
        let old = Connection::open_with_flags(aside, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut docs = 0;
        let mut stmt = old.prepare("SELECT name, body FROM documents")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (name, body) = row?;
            conn.execute(
                "INSERT OR REPLACE INTO documents (name, body) VALUES (?1, ?2)",
                rusqlite::params![name, body],
            )?;
            docs += 1;
        }
        let mut nodes = 0;
        let mut stmt = old.prepare("SELECT name, record FROM nodes")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (name, record) = row?;
            conn.execute(
                "INSERT OR REPLACE INTO nodes (name, record) VALUES (?1, ?2)",
                rusqlite::params![name, record],
            )?;
            nodes += 1;
        }
        Ok((docs, nodes))
    };
    match copy() {
        Ok((docs, nodes)) => tracing::info!(
            documents = docs,
            nodes,
            "salvaged the trust documents and the node registry of the old store"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "nothing could be salvaged from the old store: the bootstrap and API tokens and the deny-list of revoked nodes are gone — make new tokens (reachmap-collector token create) and revoke again what was revoked")
        }
    }
}

/// Renames a store (and its WAL and shared-memory files) out of the way.
fn move_aside(path: &Path) -> Result<PathBuf, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = path.with_extension(format!("db.broken-{stamp}"));
    std::fs::rename(path, &aside).map_err(|e| format!("{}: {e}", path.display()))?;
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", path.display()));
        if side.exists() {
            let _ = std::fs::rename(&side, PathBuf::from(format!("{}{ext}", aside.display())));
        }
    }
    Ok(aside)
}

/// The SHA-256 of `data`, the key of a stored blob.
pub fn hash(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests;
