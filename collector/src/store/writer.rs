//! The store's one writer: a thread that owns the read-write connection,
//! commits queued writes in batches, reports its status after each, and
//! prunes by age and size between batches.
//!
//! What is durable when: a batch is one transaction committed with
//! `synchronous = FULL` in WAL mode, so once an event's `done` says `Ok`,
//! neither a kill -9 of the collector nor a power cut loses it. A batch
//! that fails (a full disk, say) is rolled back whole: its events report
//! `Err` (their agents keep them), its cell and fact changes are kept and
//! tried again with the next batch (up to `RETRY_MAX`, oldest dropped and
//! counted past it).

use super::sql::{self, Db, args};
use super::{Location, Options, Status, Write, pg, registry, schema};
use crate::state::unix_nanos;
use prost::Message;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// A batch closes after this long or `BATCH_MAX` rows.
const GROUP_WINDOW: Duration = Duration::from_millis(10);
const BATCH_MAX: usize = 8192;
/// Rows (cell changes, facts, ...) of failed batches kept for the next try.
const RETRY_MAX: usize = 100_000;
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Rows deleted per statement, so a prune never holds the writer long.
const PRUNE_CHUNK: i64 = 5_000;
/// A prune round stops after this long and goes on at the next.
const PRUNE_BUDGET: Duration = Duration::from_millis(200);
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Opens `path` read-write (making it when missing), sets WAL mode and
/// applies the migrations; a one-line reason when it cannot be used.
pub fn open(path: &Path) -> Result<Connection, String> {
    open_with(path, true)
}

/// `open` without the integrity check, which reads the whole file: for the
/// trust documents' connection, opened after (or beside) the collector's own
/// checked one. Corruption still shows as an error on access.
pub fn open_unchecked(path: &Path) -> Result<Connection, String> {
    open_with(path, false)
}

fn open_with(path: &Path, check: bool) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let explain = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            "is not a database (corrupt, or some other file)".to_string()
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => "is corrupt".to_string(),
        _ => e.to_string(),
    };
    let mut conn = Connection::open_with_flags(path, flags).map_err(explain)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(explain)?;
    // Only takes effect on a new, empty file: pages freed by pruning go
    // back to the file system.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(explain)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(explain)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("cannot use WAL mode (journal mode is {mode})"));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(explain)?;
    // The indexes of a busy store stay in memory (64 MiB of pages) rather
    // than being read back from the file on every insert.
    conn.pragma_update(None, "cache_size", -(64 << 10))
        .map_err(explain)?;
    // The WAL is cut back to this size after each checkpoint.
    conn.pragma_update(None, "journal_size_limit", 64 << 20)
        .map_err(explain)?;
    if check {
        let found: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(explain)?;
        if found != "ok" {
            return Err(format!("is corrupt ({found})"));
        }
    }
    schema::migrate(&mut conn).map_err(|e| match e {
        schema::SchemaError::Sql(e) => explain(e),
        other => other.to_string(),
    })?;
    // Every statement the store runs stays prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Connects to a PostgreSQL store and applies the migrations it lacks.
pub fn open_pg(target: &pg::Target) -> Result<Db, String> {
    let db = Db::Postgres(pg::Pg::connect(target).map_err(|e| e.to_string())?);
    schema::migrate_pg(&db).map_err(|e| e.to_string())?;
    Ok(db)
}

/// What the store holds as it opens: row counts and the oldest moment.
pub fn initial_status(db: &Db) -> Status {
    let count = |table: &str| -> u64 {
        db.first(&format!("SELECT count(*) FROM {table}"), args![], |r| {
            r.int(0)
        })
        .ok()
        .flatten()
        .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    };
    Status {
        writable: true,
        events: count("events"),
        cell_changes: count("cell_changes"),
        fact_changes: count("facts"),
        oldest: db
            .first(
                "SELECT value FROM meta WHERE key = 'pruned_before'",
                args![],
                |r| r.int(0),
            )
            .ok()
            .flatten()
            .unwrap_or(0),
        ..Status::default()
    }
}

/// What the writer shares with the store's handles.
pub struct Shared {
    /// Writes dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Cell changes queued (`Store::cell_room`): the writer takes off what
    /// it receives.
    pub backlog: Arc<super::Backlog>,
    /// Only the leader prunes a shared store.
    pub leader: Arc<AtomicBool>,
}

/// A write's weight in a batch: its rows.
fn rows(w: &Write) -> usize {
    w.cell_rows().max(1)
}

pub fn spawn(
    db: Db,
    location: Location,
    rx: mpsc::Receiver<Write>,
    status: watch::Sender<Status>,
    opts: Options,
    shared: Shared,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "store writer cannot start");
                    return;
                }
            };
            let mut w = Writer::new(db, location, status, opts, shared);
            rt.block_on(w.run(rx));
        })
        .map(|_| ())
}

struct Writer {
    db: Db,
    location: Location,
    /// The location without secrets, for logs.
    shown: String,
    /// A shared database's size, asked at most once a second.
    size: Option<(Instant, u64)>,
    status_tx: watch::Sender<Status>,
    status: Status,
    opts: Options,
    dropped: Arc<AtomicU64>,
    backlog: Arc<super::Backlog>,
    leader: Arc<AtomicBool>,
    retry: Vec<Write>,
    names: super::cells::Interner,
    last_prune: Option<Instant>,
    last_error_log: Option<Instant>,
    failures_since_log: u64,
}

impl Writer {
    fn new(
        db: Db,
        location: Location,
        status_tx: watch::Sender<Status>,
        opts: Options,
        shared: Shared,
    ) -> Writer {
        let status = status_tx.borrow().clone();
        let mut w = Writer {
            db,
            shown: location.shown(),
            location,
            size: None,
            status_tx,
            status,
            opts,
            dropped: shared.dropped,
            backlog: shared.backlog,
            leader: shared.leader,
            retry: Vec::new(),
            names: Default::default(),
            last_prune: None,
            last_error_log: None,
            failures_since_log: 0,
        };
        w.publish();
        w
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Write>) {
        let mut closed = false;
        while !closed {
            let mut batch = Vec::new();
            let mut weight = 0;
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(w)) => weight += self.take(&mut batch, w),
                Ok(None) => closed = true,
                Err(_) => {}
            }
            if !batch.is_empty() {
                let deadline = tokio::time::Instant::now() + GROUP_WINDOW;
                while weight < BATCH_MAX {
                    match rx.try_recv() {
                        Ok(w) => weight += self.take(&mut batch, w),
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(Some(w)) => weight += self.take(&mut batch, w),
                                Ok(None) => {
                                    closed = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            if !batch.is_empty() || !self.retry.is_empty() {
                self.commit(batch);
            }
            // A short retention (a test's) is pruned more often.
            let every = PRUNE_EVERY.min(self.opts.retention / 2);
            if self.status.writable
                && self.leader.load(Ordering::Relaxed)
                && self.last_prune.is_none_or(|t| t.elapsed() >= every)
            {
                self.prune();
            }
            self.publish();
        }
        self.checkpoint();
    }

    /// Adds a received write to the batch; its weight (`rows`).
    fn take(&self, batch: &mut Vec<Write>, w: Write) -> usize {
        self.backlog.taken(&w);
        let weight = rows(&w);
        batch.push(w);
        weight
    }

    /// SQLite's WAL folded back into the file (nothing to do on PostgreSQL).
    fn checkpoint(&self) {
        if let Db::Sqlite(c) = &self.db {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }

    /// The store's size: the file and its WAL, or the shared database.
    fn bytes(&mut self) -> u64 {
        match &self.location {
            Location::Dir(_) => file_bytes(&self.location.file()),
            Location::Postgres(_) => {
                if let Some((at, n)) = self.size
                    && at.elapsed() < Duration::from_secs(1)
                {
                    return n;
                }
                let n = self
                    .db
                    .first(
                        "SELECT pg_database_size(current_database())",
                        args![],
                        |r| r.int(0),
                    )
                    .ok()
                    .flatten()
                    .map_or(0, |n| u64::try_from(n).unwrap_or(0));
                self.size = Some((Instant::now(), n));
                n
            }
        }
    }

    fn publish(&mut self) {
        self.status.bytes = self.bytes();
        self.status.dropped_writes_total = self.dropped.load(Ordering::Relaxed);
        self.status.leader = self.leader.load(Ordering::Relaxed);
        let s = self.status.clone();
        self.status_tx.send_if_modified(|old| {
            if *old == s {
                false
            } else {
                *old = s;
                true
            }
        });
    }

    fn commit(&mut self, batch: Vec<Write>) {
        let mut writes = std::mem::take(&mut self.retry);
        writes.extend(batch);
        match self.apply(&writes) {
            Ok(inserted) => {
                self.status.commits_total += 1;
                if !self.status.writable {
                    tracing::info!(store = %self.shown, "the store takes writes again");
                }
                self.status.writable = true;
                self.status.error.clear();
                self.status.failing_since = 0;
                let mut inserted = inserted.into_iter();
                for w in writes {
                    match w {
                        Write::Event(e) => {
                            let new = inserted.next().unwrap_or(false);
                            if new {
                                self.status.events += 1;
                            }
                            if let Some(done) = e.done {
                                let _ = done.send(Ok(new));
                            }
                        }
                        Write::Cells(c) => self.status.cell_changes += c.len() as u64,
                        Write::Fact(_) => self.status.fact_changes += 1,
                        Write::Flush(done) => {
                            let _ = done.send(());
                        }
                        Write::Nodes(_) | Write::Member(_) | Write::Plans(_) => {}
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                self.names.clear();
                self.status.commit_failures_total += 1;
                self.failures_since_log += 1;
                if self.status.writable {
                    self.status.failing_since = unix_nanos(SystemTime::now());
                }
                self.status.writable = false;
                self.status.error = message.clone();
                if self
                    .last_error_log
                    .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY)
                {
                    tracing::error!(store = %self.shown, error = %message, failed_commits = self.failures_since_log, "the store cannot commit: events are not acked (agents keep them) until it can");
                    self.last_error_log = Some(Instant::now());
                    self.failures_since_log = 0;
                }
                for w in writes {
                    match w {
                        Write::Event(e) => {
                            if let Some(done) = e.done {
                                let _ = done.send(Err(message.clone()));
                            }
                        }
                        Write::Flush(done) => {
                            let _ = done.send(());
                        }
                        // A heartbeat is not worth keeping: the next one follows.
                        Write::Member(_) => {}
                        keep @ (Write::Cells(_)
                        | Write::Fact(_)
                        | Write::Nodes(_)
                        | Write::Plans(_)) => self.retry.push(keep),
                    }
                }
                // Past the bound the oldest writes go, counted in rows.
                let mut kept: usize = self.retry.iter().map(rows).sum();
                let mut over = 0;
                while kept > RETRY_MAX && over < self.retry.len() {
                    let n = rows(&self.retry[over]);
                    kept -= n;
                    self.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    over += 1;
                }
                self.retry.drain(..over);
            }
        }
    }

    /// One transaction; for each event, whether it was new.
    fn apply(&mut self, writes: &[Write]) -> sql::Result<Vec<bool>> {
        let tx = self.db.write()?;
        // Events and cell changes, the bulk of a batch, go as one run each
        // (pipelined on PostgreSQL); the rest one by one.
        let events: Vec<(&super::EventWrite, Vec<u8>)> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Event(e) => Some((e, e.event.encode_to_vec())),
                _ => None,
            })
            .collect();
        let rows: Vec<Vec<sql::Value<'_>>> = events
            .iter()
            .map(|(e, body)| {
                args![
                    &e.node,
                    e.instance as i64,
                    (e.instance != 0).then_some(e.event.id as i64),
                    e.event.time_unix_nanos,
                    e.event.received_unix_nanos,
                    crate::view::describe(&e.event).0,
                    body
                ]
                .to_vec()
            })
            .collect();
        let inserted: Vec<bool> = tx
            .execute_many(
                "INSERT INTO events (node, instance, id, time, received, kind, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                &rows,
            )?
            .into_iter()
            .map(|n| n == 1)
            .collect();
        let cells: Vec<&crate::probe::CellChange> = writes
            .iter()
            .flat_map(|w| match w {
                Write::Cells(c) => c.as_slice(),
                _ => &[],
            })
            .collect();
        super::cells::insert(&tx, &mut self.names, &cells)?;
        let mut nodes = None;
        for w in writes {
            match w {
                Write::Fact(f) if f.part == super::facts::FIREWALL => match &f.firewall {
                    Some(split) => {
                        super::firewall::store_split(&tx, &f.node, f.time, Some(split), &f.data)?
                    }
                    None => super::firewall::store(&tx, &f.node, f.time, &f.data)?,
                },
                Write::Fact(f) => {
                    tx.execute(
                        "INSERT INTO blobs (hash, data) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        args![&f.hash[..], &f.data],
                    )?;
                    tx.execute(
                        "INSERT INTO facts (node, part, time, hash) VALUES (?1, ?2, ?3, ?4)",
                        args![&f.node, f.part, f.time, &f.hash[..]],
                    )?;
                }
                Write::Nodes(list) => nodes = Some(list),
                Write::Plans(rows) => super::plans::save(&tx, rows)?,
                Write::Member(m) => {
                    let (name, record, seen) = crate::members::row(m);
                    tx.execute(
                        "INSERT INTO collectors (name, record, seen) VALUES (?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET record = excluded.record,
                         seen = excluded.seen",
                        args![&name, &record, seen],
                    )?;
                }
                Write::Event(_) | Write::Cells(_) | Write::Flush(_) => {}
            }
        }
        if let Some(list) = nodes {
            registry::save(&tx, list)?;
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Deletes what is past retention, then the oldest rows while the file
    /// is over its size limit, in chunks, for at most `PRUNE_BUDGET`.
    fn prune(&mut self) {
        let started = Instant::now();
        self.last_prune = Some(started);
        let now = unix_nanos(SystemTime::now());
        let retention = i64::try_from(self.opts.retention.as_nanos()).unwrap_or(i64::MAX);
        let mut cutoff = now.saturating_sub(retention);
        let mut deleted = 0u64;
        let result = (|| -> sql::Result<()> {
            loop {
                let n = self.prune_before(cutoff)?;
                deleted += n;
                if n == 0 || started.elapsed() >= PRUNE_BUDGET {
                    break;
                }
            }
            // Over the size limit: the oldest tenth of what is left goes,
            // round after round, until the file fits.
            while self.bytes() > self.opts.max_bytes && started.elapsed() < PRUNE_BUDGET {
                let oldest = self
                    .db
                    .first(
                        "SELECT min(t) FROM (SELECT min(time) AS t FROM events
                         UNION ALL SELECT min(time) FROM cell_changes) AS oldest",
                        args![],
                        |r| r.opt_int(0),
                    )?
                    .flatten();
                let Some(oldest) = oldest else { break };
                let step = (now - oldest).max(1) / 10;
                cutoff = cutoff.max(oldest + step.max(1));
                let n = self.prune_before(cutoff)?;
                deleted += n;
                self.vacuum();
                self.checkpoint();
                // A shared database's size is asked again at once.
                self.size = None;
                if n == 0 {
                    break;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(store = %self.shown, error = %e, "pruning failed; trying again later");
        }
        if deleted > 0 {
            self.vacuum();
            if cutoff > self.status.oldest {
                self.status.oldest = cutoff;
                let _ = self.db.execute(
                    "INSERT INTO meta (key, value) VALUES ('pruned_before', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    args![cutoff],
                );
            }
            tracing::debug!(rows = deleted, "pruned the store");
        }
        self.status.prunes_total += 1;
        self.status.pruned_rows_total += deleted;
        self.status.last_prune_seconds = started.elapsed().as_secs_f64();
    }

    /// One chunk of each table older than `cutoff` (see `prune_rows`);
    /// the rows it deleted.
    /// Pages freed by pruning go back to the file system (SQLite; a
    /// PostgreSQL database has its autovacuum).
    fn vacuum(&self) {
        if let Db::Sqlite(c) = &self.db {
            let _ = c.execute_batch("PRAGMA incremental_vacuum");
        }
    }

    fn prune_before(&mut self, cutoff: i64) -> sql::Result<u64> {
        let p = prune_rows(&self.db, cutoff)?;
        self.status.events = self.status.events.saturating_sub(p.events);
        self.status.cell_changes = self.status.cell_changes.saturating_sub(p.cells);
        self.status.fact_changes = self.status.fact_changes.saturating_sub(p.facts);
        Ok(p.events + p.cells + p.facts + p.spans)
    }
}

/// What one `prune_rows` deleted.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Pruned {
    pub events: u64,
    pub cells: u64,
    pub facts: u64,
    pub spans: u64,
    pub blobs: u64,
}

/// One chunk of each table older than `cutoff`, in one transaction. The
/// newest fact row of each (node, part) at or before the cutoff is kept: it
/// says what the facts were at the cutoff. Then the blobs the deleted fact
/// rows and chain runs named, unless something still names them.
pub(super) fn prune_rows(db: &Db, cutoff: i64) -> sql::Result<Pruned> {
    let tx = db.write()?;
    let events = tx.execute(
        "DELETE FROM events WHERE rowid IN
         (SELECT rowid FROM events WHERE time < ?1 ORDER BY time LIMIT ?2)",
        args![cutoff, PRUNE_CHUNK],
    )?;
    let cells = tx.execute(
        "DELETE FROM cell_changes WHERE (src, dst, port, kind, time) IN
         (SELECT src, dst, port, kind, time FROM cell_changes WHERE time < ?1
          ORDER BY time LIMIT ?2)",
        args![cutoff, PRUNE_CHUNK],
    )?;
    let mut gone = tx.query(
        "DELETE FROM facts WHERE rowid IN
         (SELECT f.rowid FROM facts f WHERE f.time < ?1 AND EXISTS
            (SELECT 1 FROM facts g WHERE g.node = f.node AND g.part = f.part
             AND g.time > f.time AND g.time <= ?1)
          LIMIT ?2)
         RETURNING hash",
        args![cutoff, PRUNE_CHUNK],
        |r| r.blob(0),
    )?;
    let facts = gone.len();
    let spans = super::firewall::prune_spans(&tx, cutoff, PRUNE_CHUNK, &mut gone)?;
    gone.sort_unstable();
    gone.dedup();
    let mut blobs = 0;
    for h in &gone {
        blobs += tx.execute(
            "DELETE FROM blobs WHERE hash = ?1
             AND NOT EXISTS (SELECT 1 FROM facts WHERE hash = ?1)
             AND NOT EXISTS (SELECT 1 FROM chain_spans WHERE hash = ?1)",
            args![h],
        )?;
    }
    tx.commit()?;
    Ok(Pruned {
        events,
        cells,
        facts: facts as u64,
        spans: spans as u64,
        blobs,
    })
}

/// The store file and its WAL, in bytes.
fn file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    len(path) + len(&PathBuf::from(format!("{}-wal", path.display())))
}
