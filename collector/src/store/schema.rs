//! The store's schema and its migrations, for both engines. A store file
//! carries the application id `RMAP` and its schema version
//! (`user_version`); a PostgreSQL store keeps its version in the table
//! `reachmap_schema`. Opening either applies the migrations it lacks, one
//! transaction each, and refuses a database that is not a reachmap store or
//! comes from a newer version. The two lists hold the same tables, columns
//! and indexes, step for step; PostgreSQL spells the types its own way
//! (BIGINT, BYTEA) and names an identity column `rowid` where SQLite's
//! implicit one is used.

use super::sql::{Db, args};
use rusqlite::{Connection, TransactionBehavior};

/// `RMAP`, in SQLite's application_id header field.
pub const APPLICATION_ID: i32 = 0x524D_4150;

/// Each entry takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events, cell state changes, fact changes by content, the registry.
    "
    CREATE TABLE events (
        node TEXT NOT NULL,
        -- the agent instance that made it (0: made by the collector)
        instance INTEGER NOT NULL,
        -- the agent's id, NULL for the collector's own events
        id INTEGER,
        time INTEGER NOT NULL,
        received INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX events_key ON events(node, instance, id);
    CREATE INDEX events_node_time ON events(node, time);
    CREATE INDEX events_time ON events(time);

    -- node and service names, interned: cell changes name them by id
    CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    -- enums as small codes (store/cells.rs), the address as 4 or 16 bytes
    CREATE TABLE cell_changes (
        time INTEGER NOT NULL,
        src INTEGER NOT NULL,
        dst INTEGER NOT NULL,
        port INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        service INTEGER,
        old INTEGER NOT NULL,
        new INTEGER NOT NULL,
        failure INTEGER,
        sent INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        rtt_ms REAL,
        address BLOB NOT NULL,
        last_failure INTEGER NOT NULL,
        -- clustered by cell, then time: a cell's history is one range, and
        -- the matrix of a moment one pass in this order
        PRIMARY KEY (src, dst, port, kind, time)
    ) WITHOUT ROWID;
    -- the cells into a node (why --at reads a destination's column)
    CREATE INDEX cell_into ON cell_changes(dst, src, port, kind, time);
    CREATE INDEX cell_time ON cell_changes(time);

    CREATE TABLE facts (
        node TEXT NOT NULL,
        part TEXT NOT NULL,
        time INTEGER NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE INDEX facts_at ON facts(node, part, time);
    CREATE INDEX facts_hash ON facts(hash);
    CREATE INDEX facts_time ON facts(time);
    CREATE TABLE blobs (hash BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;

    CREATE TABLE nodes (name TEXT PRIMARY KEY, record TEXT NOT NULL);
    -- pruned_before: nothing older than this is held any more
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    -- whole documents: the trust module's tokens and issued certificates
    CREATE TABLE documents (name TEXT PRIMARY KEY, body TEXT NOT NULL);
    ",
    // 2: firewall parts as a manifest and chain blobs (store/firewall.rs);
    // the runs of each node's manifests holding a chain blob, so pruning
    // knows which chain blobs a kept manifest still names.
    "
    CREATE TABLE chain_spans (
        node TEXT NOT NULL,
        hash BLOB NOT NULL,
        -- NULL while the node's newest manifest holds the chain; else the
        -- newest time of the node's firewall rows when it was let go
        last INTEGER
    );
    CREATE UNIQUE INDEX chain_spans_open ON chain_spans(node, hash) WHERE last IS NULL;
    CREATE INDEX chain_spans_closed ON chain_spans(last) WHERE last IS NOT NULL;
    CREATE INDEX chain_spans_hash ON chain_spans(hash);
    ",
    // 3: the collectors sharing the store, one heartbeat row each
    // (members.rs).
    "
    CREATE TABLE collectors (name TEXT PRIMARY KEY, record TEXT NOT NULL, seen INTEGER NOT NULL);
    ",
    // 4: the leader's plans for agents streaming to other collectors
    // (plans.rs).
    "
    CREATE TABLE plans (source TEXT PRIMARY KEY, collector TEXT NOT NULL,
        digest INTEGER NOT NULL, written INTEGER NOT NULL, plan BLOB NOT NULL);
    CREATE INDEX plans_written ON plans(collector, written);
    ",
];

/// `MIGRATIONS`, step for step, for PostgreSQL.
pub(super) const PG_MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE events (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        node TEXT NOT NULL,
        instance BIGINT NOT NULL,
        id BIGINT,
        time BIGINT NOT NULL,
        received BIGINT NOT NULL,
        kind TEXT NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE UNIQUE INDEX events_key ON events(node, instance, id);
    CREATE INDEX events_node_time ON events(node, time);
    CREATE INDEX events_time ON events(time);

    CREATE TABLE names (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE cell_changes (
        time BIGINT NOT NULL,
        src BIGINT NOT NULL,
        dst BIGINT NOT NULL,
        port BIGINT NOT NULL,
        kind BIGINT NOT NULL,
        service BIGINT,
        old BIGINT NOT NULL,
        new BIGINT NOT NULL,
        failure BIGINT,
        sent BIGINT NOT NULL,
        ok BIGINT NOT NULL,
        rtt_ms DOUBLE PRECISION,
        address BYTEA NOT NULL,
        last_failure BIGINT NOT NULL,
        PRIMARY KEY (src, dst, port, kind, time)
    );
    CREATE INDEX cell_into ON cell_changes(dst, src, port, kind, time);
    CREATE INDEX cell_time ON cell_changes(time);

    CREATE TABLE facts (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        node TEXT NOT NULL,
        part TEXT NOT NULL,
        time BIGINT NOT NULL,
        hash BYTEA NOT NULL
    );
    CREATE INDEX facts_at ON facts(node, part, time);
    CREATE INDEX facts_hash ON facts(hash);
    CREATE INDEX facts_time ON facts(time);
    CREATE TABLE blobs (hash BYTEA PRIMARY KEY, data BYTEA NOT NULL);

    CREATE TABLE nodes (name TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE documents (name TEXT PRIMARY KEY, body TEXT NOT NULL);
    ",
    "
    CREATE TABLE chain_spans (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        node TEXT NOT NULL,
        hash BYTEA NOT NULL,
        last BIGINT
    );
    CREATE UNIQUE INDEX chain_spans_open ON chain_spans(node, hash) WHERE last IS NULL;
    CREATE INDEX chain_spans_closed ON chain_spans(last) WHERE last IS NOT NULL;
    CREATE INDEX chain_spans_hash ON chain_spans(hash);
    ",
    "
    CREATE TABLE collectors (name TEXT PRIMARY KEY, record TEXT NOT NULL, seen BIGINT NOT NULL);
    ",
    "
    CREATE TABLE plans (source TEXT PRIMARY KEY, collector TEXT NOT NULL,
        digest BIGINT NOT NULL, written BIGINT NOT NULL, plan BYTEA NOT NULL);
    CREATE INDEX plans_written ON plans(collector, written);
    ",
];

pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock collectors take to migrate a shared store one at a time.
const MIGRATION_LOCK: i64 = 0x524D_4150_0001;

/// Brings a PostgreSQL store's schema to `VERSION`; collectors starting at
/// once take turns on an advisory lock.
pub fn migrate_pg(db: &Db) -> Result<(), SchemaError> {
    const _: () = assert!(PG_MIGRATIONS.len() == MIGRATIONS.len());
    loop {
        let tx = db.write()?;
        tx.lock(MIGRATION_LOCK)?;
        let ours = tx.first(
            "SELECT count(*) FROM pg_catalog.pg_tables
             WHERE schemaname = current_schema() AND tablename = 'reachmap_schema'",
            args![],
            |r| r.int(0),
        )?;
        if ours == Some(0) {
            tx.batch("CREATE TABLE reachmap_schema (version BIGINT NOT NULL)")?;
        }
        let found = tx.first("SELECT max(version) FROM reachmap_schema", args![], |r| {
            r.opt_int(0)
        })?;
        let version = match found.flatten() {
            Some(v) => i32::try_from(v).unwrap_or(i32::MAX),
            None => {
                let tables = tx
                    .first(
                        "SELECT count(*) FROM pg_catalog.pg_tables
                         WHERE schemaname = current_schema() AND tablename <> 'reachmap_schema'",
                        args![],
                        |r| r.int(0),
                    )?
                    .unwrap_or(0);
                if tables > 0 {
                    return Err(SchemaError::ForeignDatabase);
                }
                0
            }
        };
        if version > VERSION {
            return Err(SchemaError::Newer { found: version });
        }
        if version == VERSION {
            tx.commit()?;
            return Ok(());
        }
        tx.batch(PG_MIGRATIONS[version as usize])?;
        tx.execute("DELETE FROM reachmap_schema", args![])?;
        tx.execute(
            "INSERT INTO reachmap_schema (version) VALUES (?1)",
            args![version + 1],
        )?;
        tx.commit()?;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("is not a reachmap store (application id {0:#x})")]
    Foreign(i32),
    #[error(
        "was written by a newer reachmap (schema {found}; this collector knows up to {VERSION})"
    )]
    Newer { found: i32 },
    #[error("holds tables that are not a reachmap store's")]
    ForeignDatabase,
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Db(#[from] super::sql::Error),
}

/// Brings `conn`'s schema to `VERSION`. Each step is taken under the write
/// lock, the file looked at again there: another connection (an offline
/// command's, or a second open of the same file) may be migrating it too.
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    loop {
        // One snapshot of the file; the write lock only when a step is due.
        let snapshot = conn.transaction()?;
        if check(&snapshot)? == VERSION {
            return Ok(());
        }
        drop(snapshot);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = check(&tx)?;
        if version < VERSION {
            tx.execute_batch(MIGRATIONS[version as usize])?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", version + 1)?;
        }
        tx.commit()?;
    }
}

/// The file's schema version, when it is a reachmap store (or a new file)
/// this collector knows.
fn check(conn: &Connection) -> Result<i32, SchemaError> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if app == 0 && version == 0 {
        // A new file, or a database that is not ours and has no tables yet.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(SchemaError::Foreign(app));
        }
    } else if app != APPLICATION_ID {
        return Err(SchemaError::Foreign(app));
    }
    if version > VERSION {
        return Err(SchemaError::Newer { found: version });
    }
    Ok(version)
}

/// A migrated store in memory, for the tests of the modules that read and
/// write its tables.
#[cfg(test)]
pub(super) fn in_memory() -> super::sql::Db {
    let mut c = Connection::open_in_memory().expect("open");
    migrate(&mut c).expect("migrate");
    super::sql::Db::from(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_every_migration_and_a_second_open_none() {
        let mut c = Connection::open_in_memory().expect("open");
        migrate(&mut c).expect("migrate");
        let v: i32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, VERSION);
        migrate(&mut c).expect("again");
    }

    #[test]
    fn connections_migrating_one_new_file_at_once_all_succeed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("store.db");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut c = Connection::open(&path).expect("open");
                    c.busy_timeout(std::time::Duration::from_secs(10))
                        .expect("timeout");
                    migrate(&mut c).map_err(|e| e.to_string())
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("thread"), Ok(()));
        }
        let c = Connection::open(&path).expect("open");
        let v: i32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, VERSION);
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let mut c = Connection::open_in_memory().expect("open");
        c.execute_batch("CREATE TABLE t (x)").expect("table");
        let e = migrate(&mut c).expect_err("foreign");
        assert!(e.to_string().contains("not a reachmap store"), "{e}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut c = Connection::open_in_memory().expect("open");
        migrate(&mut c).expect("migrate");
        c.pragma_update(None, "user_version", VERSION + 1)
            .expect("bump");
        let e = migrate(&mut c).expect_err("newer");
        assert!(e.to_string().contains("newer reachmap"), "{e}");
    }
}
