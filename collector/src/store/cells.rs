//! Cell state changes as the store keeps them: compact rows of integers
//! (names interned in the `names` table, enums as small codes, the address
//! as 4 or 16 bytes), because `matrix --at` reads a million of them and
//! every column decoded costs.

use crate::probe::{CellChange, CellState, Outcome, ProbeKind};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::net::IpAddr;

pub fn kind_code(k: ProbeKind) -> i64 {
    match k {
        ProbeKind::Tcp => 1,
        ProbeKind::Icmp => 2,
        ProbeKind::Http => 3,
        ProbeKind::Https => 4,
        ProbeKind::Udp => 5,
    }
}

pub fn kind_of(code: i64) -> Option<ProbeKind> {
    ProbeKind::ALL.into_iter().find(|k| kind_code(*k) == code)
}

pub fn state_code(s: CellState) -> i64 {
    s.index() as i64
}

pub fn state_of(code: i64) -> Option<CellState> {
    usize::try_from(code)
        .ok()
        .and_then(|i| CellState::ALL.get(i).copied())
}

pub fn outcome_code(o: Option<Outcome>) -> Option<i64> {
    o.and_then(|o| Outcome::ALL.iter().position(|x| *x == o))
        .map(|i| i as i64 + 1)
}

pub fn outcome_of(code: Option<i64>) -> Option<Outcome> {
    code.and_then(|c| usize::try_from(c - 1).ok())
        .and_then(|i| Outcome::ALL.get(i).copied())
}

pub fn address_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub fn address_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The writer's side of the `names` table: name → id, cached.
#[derive(Default)]
pub struct Interner {
    ids: HashMap<String, i64>,
}

impl Interner {
    pub fn id(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        conn.prepare_cached("INSERT OR IGNORE INTO names (name) VALUES (?1)")?
            .execute(params![name])?;
        let id: i64 = conn
            .prepare_cached("SELECT id FROM names WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))?;
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// Forgets everything (a rolled-back transaction may have made ids).
    pub fn clear(&mut self) {
        self.ids.clear();
    }
}

/// The reader's side: every id → name, read once per query.
pub struct Names {
    by_id: HashMap<i64, String>,
    by_name: HashMap<String, i64>,
}

impl Names {
    pub fn load(conn: &Connection) -> rusqlite::Result<Names> {
        let mut stmt = conn.prepare_cached("SELECT id, name FROM names")?;
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
            let (id, name) = row?;
            by_name.insert(name.clone(), id);
            by_id.insert(id, name);
        }
        Ok(Names { by_id, by_name })
    }

    pub fn id(&self, name: &str) -> Option<i64> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: i64) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

/// The columns `row` reads, in its order.
pub const COLUMNS: &str = "time, src, dst, port, kind, service, old, new, failure, sent, ok, rtt_ms, address, last_failure";

fn bad(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Integer,
        format!("stored cell change: bad {what}").into(),
    )
}

/// One stored row (`COLUMNS`) back into a change.
pub fn row(r: &rusqlite::Row, names: &Names) -> rusqlite::Result<CellChange> {
    let name = |i: usize| -> rusqlite::Result<String> {
        let id: i64 = r.get(i)?;
        names
            .name(id)
            .map(str::to_string)
            .ok_or_else(|| bad(i, "name id"))
    };
    let service: Option<i64> = r.get(5)?;
    let address: Vec<u8> = r.get(12)?;
    Ok(CellChange {
        time: r.get(0)?,
        src: name(1)?,
        dst: name(2)?,
        port: r.get(3)?,
        kind: kind_of(r.get(4)?).ok_or_else(|| bad(4, "probe kind"))?,
        service: service.and_then(|s| names.name(s)).map(str::to_string),
        old: state_of(r.get(6)?).ok_or_else(|| bad(6, "state"))?,
        new: state_of(r.get(7)?).ok_or_else(|| bad(7, "state"))?,
        failure: outcome_of(r.get(8)?),
        sent: r.get(9)?,
        ok: r.get(10)?,
        rtt_ms: r.get(11)?,
        address: address_of(&address).ok_or_else(|| bad(12, "address"))?,
        last_failure_at: r.get(13)?,
    })
}

/// Writes one change.
pub fn insert(conn: &Connection, names: &mut Interner, c: &CellChange) -> rusqlite::Result<()> {
    let src = names.id(conn, &c.src)?;
    let dst = names.id(conn, &c.dst)?;
    let service = match &c.service {
        Some(s) => Some(names.id(conn, s)?),
        None => None,
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO cell_changes (time, src, dst, port, kind, service, old, new, failure,
         sent, ok, rtt_ms, address, last_failure)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        c.time,
        src,
        dst,
        c.port,
        kind_code(c.kind),
        service,
        state_code(c.old),
        state_code(c.new),
        outcome_code(c.failure),
        c.sent,
        c.ok,
        c.rtt_ms,
        address_bytes(c.address),
        c.last_failure_at
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for k in ProbeKind::ALL {
            assert_eq!(kind_of(kind_code(k)), Some(k));
        }
        for s in CellState::ALL {
            assert_eq!(state_of(state_code(s)), Some(s));
        }
        for o in Outcome::ALL {
            assert_eq!(outcome_of(outcome_code(Some(o))), Some(o));
        }
        assert_eq!(outcome_of(outcome_code(None)), None);
        for a in ["198.18.0.1", "2001:db8::1"] {
            let ip: IpAddr = a.parse().expect("ip");
            assert_eq!(address_of(&address_bytes(ip)), Some(ip));
        }
        assert_eq!(address_of(&[1, 2, 3]), None);
    }
}
