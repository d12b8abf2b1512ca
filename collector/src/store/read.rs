//! Queries of the store: events in a range, a cell's changes, the matrix and
//! a node's facts as they were at a moment. Each takes a connection (the
//! store hands out read-only ones) and answers with the collector's types.

use super::facts;
use super::sql::{Db, Engine, Result, Value, args};
use crate::probe::{CellChange, Matrix, ProbeKind, ResolvedName};
use prost::Message;
use reachmap_proto::v1 as pb;

/// Events answered by default, and at most.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 100_000;

#[derive(Clone, Debug, Default)]
pub struct EventsQuery {
    pub node: Option<String>,
    pub since: i64,
    /// 0: no bound.
    pub until: i64,
    /// Kinds by their JSON name; empty for all.
    pub types: Vec<String>,
    pub limit: usize,
}

/// Matching events, oldest first, the newest `limit` of them; and whether
/// more matched.
pub fn events(db: &Db, q: &EventsQuery) -> Result<(Vec<(String, pb::Event)>, bool)> {
    let limit = match q.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let mut sql = String::from("SELECT node, body FROM events WHERE time >= ?1 AND time <= ?2");
    let mut args: Vec<Value> = vec![
        Value::Int(q.since),
        Value::Int(if q.until == 0 { i64::MAX } else { q.until }),
    ];
    if let Some(node) = &q.node {
        args.push(Value::Text(node));
        sql.push_str(&format!(" AND node = ?{}", args.len()));
    }
    if !q.types.is_empty() {
        let mut marks = Vec::new();
        for t in &q.types {
            args.push(Value::Text(t));
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    sql.push_str(&format!(
        " ORDER BY time DESC, rowid DESC LIMIT {}",
        limit + 1
    ));
    let mut out = Vec::new();
    db.each(&sql, &args, |r| {
        let (node, body) = (r.text(0)?, r.blob(1)?);
        match pb::Event::decode(body.as_slice()) {
            Ok(e) => out.push((node, e)),
            Err(e) => {
                tracing::warn!(%node, error = %e, "skipping a stored event that does not decode")
            }
        }
        Ok(())
    })?;
    let truncated = out.len() > limit;
    out.truncate(limit);
    out.reverse();
    Ok((out, truncated))
}

use super::cells::{self, COLUMNS as CELL_COLUMNS, Names};

/// The changes of one cell in [since, until], oldest first, led by the last
/// change before `since` (the state the range starts in), when there is one.
pub fn cell_history(
    db: &Db,
    src: &str,
    dst: &str,
    port: u16,
    kind: ProbeKind,
    since: i64,
    until: i64,
) -> Result<Vec<CellChange>> {
    let names = Names::load(db)?;
    let (Some(s), Some(d)) = (names.id(src), names.id(dst)) else {
        return Ok(Vec::new());
    };
    let k = cells::kind_code(kind);
    let before = db.first(
        &format!(
            "SELECT {CELL_COLUMNS} FROM cell_changes WHERE src = ?1 AND dst = ?2 AND port = ?3
             AND kind = ?4 AND time < ?5 ORDER BY time DESC LIMIT 1"
        ),
        args![s, d, port, k, since],
        |r| cells::row(r, &names),
    )?;
    let mut out: Vec<CellChange> = before.into_iter().collect();
    db.each(
        &format!(
            "SELECT {CELL_COLUMNS} FROM cell_changes WHERE src = ?1 AND dst = ?2 AND port = ?3
             AND kind = ?4 AND time >= ?5 AND time <= ?6 ORDER BY time"
        ),
        args![s, d, port, k, since, until],
        |r| {
            out.push(cells::row(r, &names)?);
            Ok(())
        },
    )?;
    Ok(out)
}

/// The cells into or out of `node` as the last stored change before `at`
/// left each (each direction read along its own index).
pub fn cells_at(db: &Db, at: i64, node: &str) -> Result<Vec<CellChange>> {
    let names = Names::load(db)?;
    let Some(id) = names.id(node) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (column, others) in [("src", "dst"), ("dst", "src")] {
        let sql = match db.engine() {
            // SQLite takes the other columns from the row holding max(time).
            Engine::Sqlite => format!(
                "SELECT {CELL_COLUMNS}, max(time) FROM cell_changes
                 WHERE {column} = ?2 AND time <= ?1 AND {others} != ?2
                 GROUP BY {others}, port, kind"
            ),
            Engine::Postgres => format!(
                "SELECT DISTINCT ON ({others}, port, kind) {CELL_COLUMNS} FROM cell_changes
                 WHERE {column} = ?2 AND time <= ?1 AND {others} != ?2
                 ORDER BY {others}, port, kind, time DESC"
            ),
        };
        db.each(&sql, args![at, id], |r| {
            out.push(cells::row(r, &names)?);
            Ok(())
        })?;
    }
    // A cell gone by then was not there.
    out.retain(|c| !c.gone);
    Ok(out)
}

/// The pair's own cells at `at`: SRC -> DST and DST -> SRC on `port` (TCP
/// and HTTP) and ICMP both ways, each one seek along the primary key.
pub fn pair_at(db: &Db, at: i64, src: &str, dst: &str, port: u16) -> Result<Vec<CellChange>> {
    let names = Names::load(db)?;
    let (Some(s), Some(d)) = (names.id(src), names.id(dst)) else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT {CELL_COLUMNS} FROM cell_changes WHERE src = ?1 AND dst = ?2 AND port = ?3
         AND kind = ?4 AND time <= ?5 ORDER BY time DESC LIMIT 1"
    );
    let mut out = Vec::new();
    for (a, b) in [(s, d), (d, s)] {
        for (p, k) in [
            (port, ProbeKind::Tcp),
            (port, ProbeKind::Http),
            (port, ProbeKind::Https),
            (0, ProbeKind::Icmp),
        ] {
            if let Some(c) = db.first(&sql, args![a, b, p, cells::kind_code(k), at], |r| {
                cells::row(r, &names)
            })? {
                out.push(c);
            }
        }
    }
    // A cell gone by then was not there.
    out.retain(|c| !c.gone);
    Ok(out)
}

/// `node`'s facts as they were at `at`, when any were stored by then.
/// Read in one transaction: a firewall manifest and its chain blobs come
/// from the same state of the store, whatever the writer prunes meanwhile.
pub fn facts_at(db: &Db, node: &str, at: i64) -> std::result::Result<Option<pb::Snapshot>, String> {
    let tx = db.snapshot().map_err(|e| e.to_string())?;
    let out = parts_at(&tx, node, at);
    tx.commit().map_err(|e| e.to_string())?;
    out
}

const PART_AT: &str = "SELECT b.data FROM facts f JOIN blobs b ON b.hash = f.hash
     WHERE f.node = ?1 AND f.part = ?2 AND f.time <= ?3 ORDER BY f.time DESC LIMIT 1";

fn parts_at(db: &Db, node: &str, at: i64) -> std::result::Result<Option<pb::Snapshot>, String> {
    let mut parts = Vec::new();
    for part in facts::ALL {
        let data = db
            .first(PART_AT, args![node, part, at], |r| r.blob(0))
            .map_err(|e| e.to_string())?;
        if let Some(d) = data {
            parts.push((part.to_string(), d));
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    facts::merge(&parts, &mut super::firewall::chains(db)).map(Some)
}

/// What the fleet's names resolved to on `node` at `at`.
pub fn names_at(db: &Db, node: &str, at: i64) -> std::result::Result<Vec<ResolvedName>, String> {
    let data = db
        .first(PART_AT, args![node, facts::NAMES, at], |r| r.blob(0))
        .map_err(|e| e.to_string())?;
    data.map_or(Ok(Vec::new()), |d| facts::decode_names(&d))
}

/// When the store's history of `node`'s firewall shows the ruleset
/// changing after `at`: the first such time.
pub fn firewall_changed_after(db: &Db, node: &str, at: i64) -> Result<Option<i64>> {
    Ok(db
        .first(
            "SELECT min(time) FROM facts WHERE node = ?1 AND part = ?2 AND time > ?3",
            args![node, facts::FIREWALL, at],
            |r| r.opt_int(0),
        )?
        .flatten())
}

/// One cell of the matrix of a moment, by name ids.
pub struct PastCell {
    pub src: i64,
    pub dst: i64,
    pub service: Option<i64>,
    pub cell: crate::probe::RestoredCell,
}

/// The cells of sources with ids in `[lo, hi)` at `at`, for `matrix --at`:
/// one pass over the table in its own order — by cell, then time — keeping
/// the last row of each cell at or before `at`. Source ranges are read side
/// by side on connections of their own.
pub fn cells_of_sources(db: &Db, at: i64, lo: i64, hi: i64) -> Result<Vec<PastCell>> {
    let mut out = Vec::new();
    let mut current: Option<((i64, i64, i64, i64), PastCell)> = None;
    db.each(
        "SELECT src, dst, port, kind, time, service, new, failure, sent, ok, rtt_ms, address,
         last_failure FROM cell_changes WHERE src >= ?2 AND src < ?3 AND time <= ?1
         ORDER BY src, dst, port, kind, time",
        args![at, lo, hi],
        |r| {
            let key = (r.int(0)?, r.int(1)?, r.int(2)?, r.int(3)?);
            if r.int(6)? == cells::GONE {
                // The cell left the matrix: none at `at` unless a later
                // row brings it back.
                if let Some((k, prev)) = current.take()
                    && k != key
                {
                    out.push(prev);
                }
                return Ok(());
            }
            let (Some(kind), Some(state), Some(address), Ok(port)) = (
                cells::kind_of(key.3),
                cells::state_of(r.int(6)?),
                cells::address_of(&r.blob(11)?),
                u16::try_from(key.2),
            ) else {
                return Ok(());
            };
            let c = PastCell {
                src: key.0,
                dst: key.1,
                service: r.opt_int(5)?,
                cell: crate::probe::RestoredCell {
                    port,
                    kind,
                    state,
                    failure: cells::outcome_of(r.opt_int(7)?),
                    address,
                    sent: r.int_as(8)?,
                    ok: r.int_as(9)?,
                    rtt_ms: r.opt_real(10)?,
                    updated: r.int(4)?,
                    last_failure_at: r.int(12)?,
                },
            };
            if let Some((k, prev)) = current.take()
                && k != key
            {
                out.push(prev);
            }
            current = Some((key, c));
            Ok(())
        },
    )?;
    out.extend(current.map(|(_, c)| c));
    Ok(out)
}

/// The largest name id (sources are split by id range).
pub fn max_name_id(db: &Db) -> Result<i64> {
    Ok(db
        .first("SELECT coalesce(max(id), 0) FROM names", args![], |r| {
            r.int(0)
        })?
        .unwrap_or(0))
}

/// The matrix of `parts` (from `cells_of_sources`).
pub fn matrix_of(db: &Db, parts: Vec<Vec<PastCell>>) -> Result<Matrix> {
    let names = Names::load(db)?;
    let mut m = Matrix::new(std::time::Duration::from_secs(10));
    restore_into(&names, &mut m, parts);
    Ok(m)
}

/// `m` with the rows of `sources` as the store has them at `at`, in place
/// of its own: a collector's live matrix with the rows of the agents that
/// stream to other collectors (each cell as of its last change).
pub fn rows_into(db: &Db, m: &mut Matrix, at: i64, sources: &[String]) -> Result<()> {
    let names = Names::load(db)?;
    let ids: std::collections::HashSet<i64> = sources.iter().filter_map(|s| names.id(s)).collect();
    m.clear_rows(sources);
    let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(());
    };
    // One read over the sources' id range, not a round trip per source.
    let mut cells = cells_of_sources(db, at, *lo, hi + 1)?;
    cells.retain(|c| ids.contains(&c.src));
    restore_into(&names, m, vec![cells]);
    Ok(())
}

fn restore_into(names: &Names, m: &mut Matrix, parts: Vec<Vec<PastCell>>) {
    let mut ids: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
    let mut services: std::collections::HashMap<i64, u16> = std::collections::HashMap::new();
    let mut restore = m.restorer();
    for c in parts.into_iter().flatten() {
        let mut node = |id: i64, restore: &mut crate::probe::Restorer| -> Option<u32> {
            if let Some(n) = ids.get(&id) {
                return Some(*n);
            }
            let n = restore.node(names.name(id)?);
            ids.insert(id, n);
            Some(n)
        };
        let (Some(src), Some(dst)) = (node(c.src, &mut restore), node(c.dst, &mut restore)) else {
            continue;
        };
        let service = match c.service {
            None => 0,
            Some(id) => *services
                .entry(id)
                .or_insert_with(|| names.name(id).map_or(0, |n| restore.service(n))),
        };
        restore.cell(src, dst, service, c.cell);
    }
    drop(restore);
}

/// The whole matrix at `at` on one connection.
pub fn matrix_at(db: &Db, at: i64) -> Result<Matrix> {
    let all = cells_of_sources(db, at, i64::MIN, i64::MAX)?;
    matrix_of(db, vec![all])
}
