//! Cell state changes as the store keeps them: compact rows of integers
//! (names interned in the `names` table, enums as small codes, the address
//! as 4 or 16 bytes), because `matrix --at` reads a million of them and
//! every column decoded costs.

use super::sql::{Db, Error, Result, Row, Value, args};
use crate::probe::{CellChange, CellState, Outcome, ProbeKind};
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

/// The `new` code of a row saying the cell left the matrix
/// (`CellChange::gone`); one past the states'.
pub const GONE: i64 = CellState::ALL.len() as i64;

/// A change's `new` as stored.
pub fn new_code(c: &CellChange) -> i64 {
    if c.gone { GONE } else { state_code(c.new) }
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
    pub fn id(&mut self, db: &Db, name: &str) -> Result<i64> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        db.execute(
            "INSERT INTO names (name) VALUES (?1) ON CONFLICT DO NOTHING",
            args![name],
        )?;
        let id = db
            .first("SELECT id FROM names WHERE name = ?1", args![name], |r| {
                r.int(0)
            })?
            .ok_or_else(|| Error::Bad(format!("name {name:?} vanished from the name table")))?;
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
    pub fn load(db: &Db) -> Result<Names> {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        db.each("SELECT id, name FROM names", args![], |r| {
            let (id, name) = (r.int(0)?, r.text(1)?);
            by_name.insert(name.clone(), id);
            by_id.insert(id, name);
            Ok(())
        })?;
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

fn bad(what: &str) -> Error {
    Error::Bad(format!("cell change: bad {what}"))
}

/// One stored row (`COLUMNS`) back into a change.
pub fn row(r: &Row<'_>, names: &Names) -> Result<CellChange> {
    let name = |i: usize| -> Result<String> {
        names
            .name(r.int(i)?)
            .map(str::to_string)
            .ok_or_else(|| bad("name id"))
    };
    let service = r.opt_int(5)?;
    let address = r.blob(12)?;
    let new = r.int(7)?;
    let gone = new == GONE;
    Ok(CellChange {
        time: r.int(0)?,
        src: name(1)?,
        dst: name(2)?,
        port: r.int_as(3)?,
        kind: kind_of(r.int(4)?).ok_or_else(|| bad("probe kind"))?,
        service: service.and_then(|s| names.name(s)).map(str::to_string),
        old: state_of(r.int(6)?).ok_or_else(|| bad("state"))?,
        new: if gone {
            CellState::Unknown
        } else {
            state_of(new).ok_or_else(|| bad("state"))?
        },
        failure: outcome_of(r.opt_int(8)?),
        sent: r.int_as(9)?,
        ok: r.int_as(10)?,
        rtt_ms: r.opt_real(11)?,
        address: address_of(&address).ok_or_else(|| bad("address"))?,
        last_failure_at: r.int(13)?,
        gone,
    })
}

const INSERT: &str = "INSERT INTO cell_changes (time, src, dst, port, kind, service, old, new,
     failure, sent, ok, rtt_ms, address, last_failure)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
     ON CONFLICT (src, dst, port, kind, time) DO UPDATE SET service = excluded.service,
     old = excluded.old, new = excluded.new, failure = excluded.failure,
     sent = excluded.sent, ok = excluded.ok, rtt_ms = excluded.rtt_ms,
     address = excluded.address, last_failure = excluded.last_failure";

/// Writes changes, in order.
pub fn insert(db: &Db, names: &mut Interner, changes: &[&CellChange]) -> Result<()> {
    // Names first (each once, then cached): the rows name them by id.
    let mut ids = Vec::with_capacity(changes.len());
    for c in changes {
        let service = match &c.service {
            Some(s) => Some(names.id(db, s)?),
            None => None,
        };
        ids.push((
            names.id(db, &c.src)?,
            names.id(db, &c.dst)?,
            service,
            address_bytes(c.address),
        ));
    }
    let rows: Vec<Vec<Value<'_>>> = changes
        .iter()
        .zip(&ids)
        .map(|(c, (src, dst, service, address))| {
            args![
                c.time,
                *src,
                *dst,
                c.port,
                kind_code(c.kind),
                *service,
                state_code(c.old),
                new_code(c),
                outcome_code(c.failure),
                c.sent,
                c.ok,
                c.rtt_ms,
                address,
                c.last_failure_at
            ]
            .to_vec()
        })
        .collect();
    db.execute_many(INSERT, &rows)?;
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
