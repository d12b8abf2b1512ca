//! Queries of the store: events in a range, a cell's changes, the matrix and
//! a node's facts as they were at a moment. Each takes a connection (the
//! store hands out read-only ones) and answers with the collector's types.

use super::facts;
use crate::probe::{CellChange, CellState, Outcome, ProbeKind, ResolvedName};
use prost::Message;
use reachmap_proto::v1 as pb;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

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
pub fn events(
    conn: &Connection,
    q: &EventsQuery,
) -> rusqlite::Result<(Vec<(String, pb::Event)>, bool)> {
    let limit = match q.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let mut sql = String::from("SELECT node, body FROM events WHERE time >= ?1 AND time <= ?2");
    let mut args: Vec<Value> = vec![
        Value::Integer(q.since),
        Value::Integer(if q.until == 0 { i64::MAX } else { q.until }),
    ];
    if let Some(node) = &q.node {
        args.push(Value::Text(node.clone()));
        sql.push_str(&format!(" AND node = ?{}", args.len()));
    }
    if !q.types.is_empty() {
        let mut marks = Vec::new();
        for t in &q.types {
            args.push(Value::Text(t.clone()));
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    sql.push_str(&format!(
        " ORDER BY time DESC, rowid DESC LIMIT {}",
        limit + 1
    ));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (node, body) = row?;
        match pb::Event::decode(body.as_slice()) {
            Ok(e) => out.push((node, e)),
            Err(e) => {
                tracing::warn!(%node, error = %e, "skipping a stored event that does not decode")
            }
        }
    }
    let truncated = out.len() > limit;
    out.truncate(limit);
    out.reverse();
    Ok((out, truncated))
}

fn cell_row(r: &rusqlite::Row) -> rusqlite::Result<CellChange> {
    let text = |i: usize| r.get::<_, String>(i);
    let bad = |i: usize, what: &str, v: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("{what} {v:?}").into(),
        )
    };
    let kind = text(4)?;
    let old = text(6)?;
    let new = text(7)?;
    let failure: Option<String> = r.get(8)?;
    let address = text(12)?;
    Ok(CellChange {
        time: r.get(0)?,
        src: text(1)?,
        dst: text(2)?,
        port: r.get(3)?,
        kind: ProbeKind::parse(&kind).ok_or_else(|| bad(4, "probe kind", &kind))?,
        service: r.get(5)?,
        old: CellState::parse(&old).ok_or_else(|| bad(6, "state", &old))?,
        new: CellState::parse(&new).ok_or_else(|| bad(7, "state", &new))?,
        failure: failure.as_deref().and_then(Outcome::parse),
        sent: r.get(9)?,
        ok: r.get(10)?,
        rtt_ms: r.get(11)?,
        address: address.parse().map_err(|_| bad(12, "address", &address))?,
        last_failure_at: r.get(13)?,
    })
}

const CELL_COLUMNS: &str = "time, src, dst, port, kind, service, old, new, failure, sent, ok, rtt_ms, address, last_failure";

/// The changes of one cell in [since, until], oldest first, led by the last
/// change before `since` (the state the range starts in), when there is one.
pub fn cell_history(
    conn: &Connection,
    src: &str,
    dst: &str,
    port: u16,
    kind: ProbeKind,
    since: i64,
    until: i64,
) -> rusqlite::Result<Vec<CellChange>> {
    let before = conn
        .query_row(
            &format!(
                "SELECT {CELL_COLUMNS} FROM cell_changes WHERE src = ?1 AND dst = ?2 AND port = ?3
                 AND kind = ?4 AND time < ?5 ORDER BY time DESC LIMIT 1"
            ),
            params![src, dst, port, kind.as_str(), since],
            cell_row,
        )
        .optional()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CELL_COLUMNS} FROM cell_changes WHERE src = ?1 AND dst = ?2 AND port = ?3
         AND kind = ?4 AND time >= ?5 AND time <= ?6 ORDER BY time, rowid"
    ))?;
    let rows = stmt.query_map(
        params![src, dst, port, kind.as_str(), since, until],
        cell_row,
    )?;
    let mut out: Vec<CellChange> = before.into_iter().collect();
    for r in rows {
        out.push(r?);
    }
    Ok(out)
}

/// Every cell's last change at or before `at`: the matrix then. With
/// `about`, only cells into or out of that node.
pub fn cells_at(
    conn: &Connection,
    at: i64,
    about: Option<&str>,
) -> rusqlite::Result<Vec<CellChange>> {
    // SQLite takes the other columns from the row holding max(time).
    let filter = if about.is_some() {
        "AND (src = ?2 OR dst = ?2)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {CELL_COLUMNS}, max(time) FROM cell_changes WHERE time <= ?1 {filter}
         GROUP BY src, dst, port, kind"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut out = Vec::new();
    let mut push = |rows: rusqlite::MappedRows<'_, _>| -> rusqlite::Result<()> {
        for r in rows {
            out.push(r?);
        }
        Ok(())
    };
    match about {
        Some(node) => push(stmt.query_map(params![at, node], cell_row)?)?,
        None => push(stmt.query_map(params![at], cell_row)?)?,
    }
    Ok(out)
}

/// `node`'s facts as they were at `at`, when any were stored by then.
pub fn facts_at(conn: &Connection, node: &str, at: i64) -> Result<Option<pb::Snapshot>, String> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT b.data FROM facts f JOIN blobs b ON b.hash = f.hash
             WHERE f.node = ?1 AND f.part = ?2 AND f.time <= ?3 ORDER BY f.time DESC LIMIT 1",
        )
        .map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    for part in facts::ALL {
        let data: Option<Vec<u8>> = stmt
            .query_row(params![node, part, at], |r| r.get(0))
            .optional()
            .map_err(|e| e.to_string())?;
        if let Some(d) = data {
            parts.push((part.to_string(), d));
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    facts::merge(&parts).map(Some)
}

/// What the fleet's names resolved to on `node` at `at`.
pub fn names_at(conn: &Connection, node: &str, at: i64) -> Result<Vec<ResolvedName>, String> {
    let data: Option<Vec<u8>> = conn
        .query_row(
            "SELECT b.data FROM facts f JOIN blobs b ON b.hash = f.hash
             WHERE f.node = ?1 AND f.part = ?2 AND f.time <= ?3 ORDER BY f.time DESC LIMIT 1",
            params![node, facts::NAMES, at],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    data.map_or(Ok(Vec::new()), |d| facts::decode_names(&d))
}

/// When the store's history of `node`'s firewall shows the ruleset
/// changing after `at`: the first such time.
pub fn firewall_changed_after(
    conn: &Connection,
    node: &str,
    at: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT min(time) FROM facts WHERE node = ?1 AND part = ?2 AND time > ?3",
        params![node, facts::FIREWALL, at],
        |r| r.get(0),
    )
}
