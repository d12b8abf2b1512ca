//! The matrix's history: the state changes it keeps for the store
//! (`keep_changes`, `take_changes`), and the matrix of a past moment
//! rebuilt from stored changes (`restore`, `restorer`).

use super::{Cell, CellState, Matrix, Outcome, RTT_NONE, Row, count, rtt_code};
use crate::probe::planner::ProbeKind;
use std::collections::HashMap;
use std::net::IpAddr;

/// A cell whose state (or failure) changed, as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct CellChange {
    pub time: i64,
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub kind: ProbeKind,
    pub service: Option<String>,
    pub old: CellState,
    pub new: CellState,
    pub failure: Option<Outcome>,
    pub sent: u32,
    pub ok: u32,
    pub rtt_ms: Option<f64>,
    pub address: IpAddr,
    pub last_failure_at: i64,
    /// The cell left the matrix (its source's plan dropped it, or a node
    /// left): `new` is unknown, and a past moment's matrix past this row
    /// has no such cell.
    pub gone: bool,
}

impl CellChange {
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            f64::from(self.sent.saturating_sub(self.ok)) / f64::from(self.sent)
        }
    }
}

/// Cells whose changes the store could not take when they happened, by
/// (source id, destination id, port, kind): the state the store has
/// for each, the time of its newest change, and whether that change took it
/// out of the matrix. Each is written later as one change
/// (`Matrix::take_owed`).
type OwedKey = (u32, u32, u16, ProbeKind);

#[derive(Debug, Default)]
pub(super) struct Owed {
    cells: HashMap<OwedKey, (CellState, i64, bool)>,
    deferred_total: u64,
}

/// A copy of the matrix is for reading (the views'): it owes the store
/// nothing, and copying a backlog of owed cells would only cost.
impl Clone for Owed {
    fn clone(&self) -> Owed {
        Owed::default()
    }
}

impl Owed {
    /// Node `id` left: its owed cells, as source or destination, go.
    pub(super) fn forget(&mut self, id: u32) {
        if !self.cells.is_empty() {
            self.cells
                .retain(|(src, dst, ..), _| *src != id && *dst != id);
        }
    }
}

/// See `Matrix::restorer`.
pub struct Restorer<'a> {
    m: &'a mut Matrix,
    rows: HashMap<u32, Vec<Cell>>,
}

/// One stored cell, for `Restorer::cell`.
pub struct RestoredCell {
    pub port: u16,
    pub kind: ProbeKind,
    pub state: CellState,
    pub failure: Option<Outcome>,
    pub address: IpAddr,
    pub sent: u32,
    pub ok: u32,
    pub rtt_ms: Option<f64>,
    pub updated: i64,
    pub last_failure_at: i64,
}

impl Restorer<'_> {
    /// The matrix's id of node `name`.
    pub fn node(&mut self, name: &str) -> u32 {
        self.m.add_node(name)
    }

    pub fn service(&mut self, name: &str) -> u16 {
        self.m.service_id(Some(name))
    }

    /// A cell of `src` (ids from `node`, `service`: 0 for none).
    pub fn cell(&mut self, src: u32, dst: u32, service: u16, c: RestoredCell) {
        if src == dst {
            return;
        }
        let address = self.m.addresses.id(c.address);
        let id = crate::probe::planner::target_id(
            &self.m.names[dst as usize],
            c.address,
            c.port,
            c.kind,
        );
        self.rows.entry(src).or_default().push(Cell {
            id,
            dst,
            address,
            updated: c.updated,
            last_failure_at: c.last_failure_at,
            rtt: rtt_code(c.rtt_ms),
            rtt_p99: RTT_NONE,
            tls: None,
            service,
            port: c.port,
            sent: count(c.sent),
            ok: count(c.ok.min(c.sent)),
            http_status: 0,
            kind: c.kind,
            state: c.state,
            failure: c.failure,
        });
    }
}

impl Drop for Restorer<'_> {
    /// Each source's row is built once, at the end.
    fn drop(&mut self) {
        let names = &self.m.names;
        let mut order: Vec<u32> = (0..names.len() as u32).collect();
        order.sort_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
        let mut rank = vec![0u32; names.len()];
        for (r, id) in order.into_iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        for (s, mut cells) in std::mem::take(&mut self.rows) {
            let mut row = std::mem::take(&mut self.m.rows[s as usize].cells);
            row.append(&mut cells);
            self.m.rows[s as usize] =
                Row::ordered(row, |c| (rank[c.dst as usize], c.port, c.kind), false);
        }
    }
}

impl Matrix {
    /// From now on, every state change is kept until `take_changes`.
    pub fn keep_changes(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The state changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<CellChange> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Notes a change of `src`'s cell `c` from `old` (state, failure).
    pub(super) fn note(&mut self, src: u32, old: (CellState, Option<Outcome>), c: &Cell, now: i64) {
        if self.journal.is_none() || old == (c.state, c.failure) {
            return;
        }
        let change = self.change(src, old.0, c, now);
        if let Some(j) = &mut self.journal {
            j.push(change);
        }
    }

    /// `src`'s cell `c` as a change from `old` at `time`.
    fn change(&self, src: u32, old: CellState, c: &Cell, time: i64) -> CellChange {
        CellChange {
            time,
            src: self.names[src as usize].clone(),
            dst: self.names[c.dst as usize].clone(),
            port: c.port,
            kind: c.kind,
            service: (c.service as usize)
                .checked_sub(1)
                .and_then(|i| self.services.get(i))
                .cloned(),
            old,
            new: c.state,
            failure: c.failure,
            sent: c.sent(),
            ok: u32::from(c.ok),
            rtt_ms: c.rtt_ms(),
            address: self.addresses.get(c.address),
            last_failure_at: c.last_failure_at,
            gone: false,
        }
    }

    /// Notes the cells of `src`'s `old` row its new row lacks as gone, those
    /// the store may hold rows of (they had a report).
    pub(super) fn note_dropped(&mut self, src: u32, old: super::Row, now: i64) {
        if self.journal.is_none() {
            return;
        }
        let row = &self.rows[src as usize];
        let dropped: Vec<Cell> = old
            .cells
            .into_iter()
            .filter(|c| c.updated != 0 && row.find(c.dst, c.port, c.kind).is_none())
            .collect();
        let gone: Vec<CellChange> = dropped
            .iter()
            .map(|c| CellChange {
                new: CellState::Unknown,
                gone: true,
                ..self.change(src, c.state, c, now)
            })
            .collect();
        if let Some(j) = &mut self.journal {
            j.extend(gone);
        }
    }

    /// Cells owed to the store (`owe`).
    pub fn owed(&self) -> usize {
        self.owed.cells.len()
    }

    /// Changes folded into owed cells rather than written as they happened.
    pub fn deferred_total(&self) -> u64 {
        self.owed.deferred_total
    }

    fn owed_key(&self, c: &CellChange) -> Option<OwedKey> {
        let src = *self.ids.get(&c.src)?;
        let dst = *self.ids.get(&c.dst)?;
        Some((src, dst, c.port, c.kind))
    }

    /// Whether `c`'s cell is owed: its later changes then join it, so that
    /// the one change it is written as ends where the cell is.
    pub fn owes(&self, c: &CellChange) -> bool {
        !self.owed.cells.is_empty()
            && self
                .owed_key(c)
                .is_some_and(|k| self.owed.cells.contains_key(&k))
    }

    /// Keeps changes the store could not take as owed cells: each keeps
    /// the state the store has for it (the oldest change's `old`) and the
    /// time of its newest change.
    pub fn owe(&mut self, changes: Vec<CellChange>) {
        for c in changes {
            let Some(key) = self.owed_key(&c) else {
                continue;
            };
            self.owed.deferred_total += 1;
            self.owed
                .cells
                .entry(key)
                .and_modify(|(_, time, gone)| {
                    if c.time >= *time {
                        *time = c.time;
                        *gone = c.gone;
                    }
                })
                .or_insert((c.old, c.time, c.gone));
        }
    }

    /// Up to `max` owed cells as changes, from the state the store has to
    /// the cell's now, at the time of the cell's newest change; a cell that
    /// left the matrix since as its removal (`CellChange::gone`). A cell
    /// back in the state the store has writes nothing.
    pub fn take_owed(&mut self, max: usize) -> Vec<CellChange> {
        let keys: Vec<OwedKey> = self.owed.cells.keys().take(max).copied().collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some((old, time, gone)) = self.owed.cells.remove(&key) else {
                continue;
            };
            let (src, dst, port, kind) = key;
            let cell = self
                .rows
                .get(src as usize)
                .and_then(|row| Some(&row.cells[row.find(dst, port, kind)?]));
            match cell {
                Some(c) if !gone => {
                    if c.state != old {
                        out.push(self.change(src, old, c, time));
                    }
                }
                _ => out.extend(self.removal(key, old, time)),
            }
        }
        out
    }

    /// The change saying the cell `key` left the matrix at `time`.
    fn removal(&self, key: OwedKey, old: CellState, time: i64) -> Option<CellChange> {
        let (src, dst, port, kind) = key;
        Some(CellChange {
            time,
            src: self.names.get(src as usize)?.clone(),
            dst: self.names.get(dst as usize)?.clone(),
            port,
            kind,
            service: None,
            old,
            new: CellState::Unknown,
            failure: None,
            sent: 0,
            ok: 0,
            rtt_ms: None,
            address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            last_failure_at: 0,
            gone: true,
        })
    }

    /// The matrix of a past moment: every cell as the last stored change
    /// before it left it.
    pub fn restore(&mut self, changes: &[CellChange]) {
        let mut r = self.restorer();
        for c in changes {
            let (src, dst) = (r.node(&c.src), r.node(&c.dst));
            let service = c.service.as_deref().map_or(0, |s| r.service(s));
            r.cell(
                src,
                dst,
                service,
                RestoredCell {
                    port: c.port,
                    kind: c.kind,
                    state: c.new,
                    failure: c.failure,
                    address: c.address,
                    sent: c.sent,
                    ok: c.ok,
                    rtt_ms: c.rtt_ms,
                    updated: c.time,
                    last_failure_at: c.last_failure_at,
                },
            );
        }
    }

    /// A builder of a past moment's matrix from stored rows, without the
    /// names of each cell spelled out (`matrix --at` of a million cells).
    /// Empties the rows of `sources`: a copy whose rows of another
    /// collector's agents are then restored from the shared store.
    pub fn clear_rows(&mut self, sources: &[String]) {
        for name in sources {
            if let Some(&s) = self.ids.get(name) {
                let row = &mut self.rows[s as usize];
                row.cells.clear();
                row.reindex();
            }
        }
    }

    pub fn restorer(&mut self) -> Restorer<'_> {
        Restorer {
            m: self,
            rows: HashMap::new(),
        }
    }
}
