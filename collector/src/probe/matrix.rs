//! The fleet-wide reachability matrix: one cell per (source, destination,
//! port, kind), holding what the source's agent last reported for it.
//!
//! Built for millions of cells: node names, services and addresses are
//! interned as ids, each source's row is a `Vec<Cell>` in view order with a
//! sorted index of positions for lookups, a cell is 64 bytes (+4 of index),
//! and the JSON view is streamed without building a value tree.
//!
//! A cell's state is the agent's state for the target (ok, degraded,
//! failing), or `unknown`: no result yet, the source's agent is gone
//! (`source_gone`), or nothing arrived for three probe intervals (`expire`,
//! which the owner calls on its tick and before answering a query).
//!
//! Once a source has a plan (`set_plan`), its row holds exactly the plan's
//! targets: cells of targets no longer planned are removed, new ones start
//! `unknown`, and results for targets outside the plan (a batch of the
//! previous plan still in flight) are ignored, so they cannot resurrect a
//! removed cell. Results never add a node: a destination must be known
//! (`add_node` or a plan naming it), so a misbehaving agent cannot grow the
//! name table.

use super::planner::{PlannedTarget, ProbeKind};
use super::tls::TlsNote;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Services are few (declared in config); a bound keeps a misbehaving agent
/// that invents names from growing the table. Names past it are dropped.
const MAX_SERVICES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellState {
    Ok,
    Degraded,
    Failing,
    Unknown,
}

impl CellState {
    pub const ALL: [CellState; 4] = [
        CellState::Ok,
        CellState::Degraded,
        CellState::Failing,
        CellState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Ok => "ok",
            CellState::Degraded => "degraded",
            CellState::Failing => "failing",
            CellState::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<CellState> {
        CellState::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The agent's view of one target over its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    Ok,
    Degraded,
    Failing,
}

impl From<TargetState> for CellState {
    fn from(s: TargetState) -> Self {
        match s {
            TargetState::Ok => CellState::Ok,
            TargetState::Degraded => CellState::Degraded,
            TargetState::Failing => CellState::Failing,
        }
    }
}

/// How one probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Open,
    Refused,
    Timeout,
    Unreachable,
    NoRoute,
    Reset,
    DnsError,
    HttpStatus,
    TlsError,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Open,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::NoRoute,
        Outcome::Reset,
        Outcome::DnsError,
        Outcome::HttpStatus,
        Outcome::TlsError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::NoRoute => "no_route",
            Outcome::Reset => "reset",
            Outcome::DnsError => "dns_error",
            Outcome::HttpStatus => "http_status",
            Outcome::TlsError => "tls_error",
        }
    }

    pub fn is_failure(self) -> bool {
        self != Outcome::Open
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Failures in a window, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub refused: u32,
    pub timeout: u32,
    pub unreachable: u32,
    pub no_route: u32,
    pub reset: u32,
    pub dns_error: u32,
    pub http_status: u32,
    pub tls_error: u32,
}

impl FailureCounts {
    pub fn total(&self) -> u64 {
        [
            self.refused,
            self.timeout,
            self.unreachable,
            self.no_route,
            self.reset,
            self.dns_error,
            self.http_status,
            self.tls_error,
        ]
        .iter()
        .map(|c| u64::from(*c))
        .sum()
    }
}

/// What a window says it is for: the whole target, or only the id of a
/// target of the plan the collector sent (`results_by_id`), which costs the
/// agent, the wire and the collector no names or addresses at all.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowTarget {
    Named(PlannedTarget),
    Id(u64),
}

impl From<PlannedTarget> for WindowTarget {
    fn from(t: PlannedTarget) -> WindowTarget {
        WindowTarget::Named(t)
    }
}

/// One target's rolling window, as an agent reports it (the wire's
/// `TargetWindow`).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowInput {
    pub target: WindowTarget,
    pub sent: u32,
    pub ok: u32,
    pub failures: FailureCounts,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    pub last_outcome: Option<Outcome>,
    /// The most recent failure in the window and when (unix nanos).
    pub last_failure: Option<(Outcome, i64)>,
    pub state: TargetState,
    /// The last HTTP status seen (HTTP probes).
    pub last_http_status: Option<u16>,
    /// The last TLS failure in the window (HTTPS probes).
    pub last_tls_error: Option<TlsNote>,
}

/// A target whose state changed (the wire's `ProbeStateChanged`).
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    pub target: PlannedTarget,
    pub old: TargetState,
    pub new: TargetState,
    pub outcome: Option<Outcome>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub applied: usize,
    /// Results for an unknown destination or a target outside the plan.
    pub ignored: usize,
}

#[path = "matrix_cell.rs"]
mod cell;
pub use cell::Cell;
#[cfg(test)]
use cell::rtt_ms;
use cell::{Addresses, RTT_NONE, count, rtt_code};

/// A cell with its names resolved.
#[derive(Clone, Copy, Debug)]
pub struct CellRef<'a> {
    pub src: &'a str,
    pub dst: &'a str,
    pub service: Option<&'a str>,
    /// The address the source probed.
    pub address: IpAddr,
    pub cell: &'a Cell,
}

/// One source's cells. They are stored in the order the views list them —
/// (destination name, port, kind) — because the views read every cell and
/// memory order is what keeps a 1M-cell walk fast (the same walk in any
/// other order waits on memory for nearly every cell). Lookups go through
/// `index`: the cells' positions sorted by (destination id, port, kind).
///
/// Only a change of the row's cells reorders it: a new node does not change
/// the order of the names already there, and a freed id is reused only after
/// every cell naming it is gone.
#[derive(Clone, Debug, Default)]
struct Row {
    cells: Vec<Cell>,
    index: Vec<u32>,
    planned: bool,
    /// No cell that can turn unknown was updated before this (unix nanos):
    /// `expire` passes over a row whose every cell is fresh without reading
    /// it. Only ever too low, never too high; `i64::MAX` when none can.
    oldest: i64,
}

fn packed(dst: u32, port: u16, kind: ProbeKind) -> u64 {
    (u64::from(dst) << 24) | (u64::from(port) << 8) | kind as u64
}

impl Row {
    /// A row of `cells`, of which the last of a duplicated key wins.
    fn new(cells: Vec<Cell>, names: &[String], planned: bool) -> Row {
        Row::ordered(
            cells,
            |c| (names[c.dst as usize].as_str(), c.port, c.kind),
            planned,
        )
    }

    /// A row of `cells` in `key` order, of which the last of a duplicated
    /// key wins.
    fn ordered<K: Ord>(mut cells: Vec<Cell>, key: impl Fn(&Cell) -> K, planned: bool) -> Row {
        // Stable, then the last of equal keys kept.
        cells.sort_by_key(&key);
        cells.reverse();
        cells.dedup_by_key(|c| c.key());
        cells.reverse();
        let mut row = Row {
            cells,
            index: Vec::new(),
            planned,
            oldest: 0,
        };
        row.reindex();
        row
    }

    /// The oldest update of a cell that can expire, read off the cells.
    fn oldest_update(&self) -> i64 {
        self.cells
            .iter()
            .filter(|c| c.state != CellState::Unknown && c.updated != 0)
            .map(|c| c.updated)
            .min()
            .unwrap_or(i64::MAX)
    }

    fn reindex(&mut self) {
        self.oldest = self.oldest_update();
        self.index.clear();
        self.index
            .extend((0..self.cells.len()).map(|i| u32::try_from(i).unwrap_or(u32::MAX)));
        let cells = &self.cells;
        self.index
            .sort_unstable_by_key(|&i| cells[i as usize].packed());
        self.index.shrink_to_fit();
    }

    fn find(&self, dst: u32, port: u16, kind: ProbeKind) -> Option<usize> {
        let key = packed(dst, port, kind);
        let i = self
            .index
            .binary_search_by_key(&key, |&i| self.cells[i as usize].packed())
            .ok()?;
        Some(self.index[i] as usize)
    }
}

#[derive(Clone, Debug)]
pub struct Matrix {
    /// Node names by id; "" for a freed id.
    names: Vec<String>,
    ids: HashMap<String, u32>,
    free: Vec<u32>,
    /// By source id.
    rows: Vec<Row>,
    services: Vec<String>,
    service_ids: HashMap<String, u16>,
    addresses: Addresses,
    stale_after_nanos: i64,
    /// State changes not yet taken (`take_changes`); `None` when not kept.
    journal: Option<Vec<CellChange>>,
    /// Cells whose changes the store could not take yet (`owe`).
    owed: history::Owed,
}

impl Matrix {
    /// Cells with no report for three `interval`s turn unknown.
    pub fn new(interval: Duration) -> Matrix {
        let mut m = Matrix {
            names: Vec::new(),
            ids: HashMap::new(),
            free: Vec::new(),
            rows: Vec::new(),
            services: Vec::new(),
            service_ids: HashMap::new(),
            addresses: Addresses::default(),
            stale_after_nanos: 0,
            journal: None,
            owed: Default::default(),
        };
        m.set_interval(interval);
        m
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.stale_after_nanos =
            i64::try_from(interval.as_nanos().saturating_mul(3)).unwrap_or(i64::MAX);
    }

    /// How long a cell may go without a report (nanos).
    pub fn stale_after(&self) -> i64 {
        self.stale_after_nanos
    }

    /// Makes `name` a node of the matrix (an axis of the grid) even before
    /// any cell names it.
    pub fn add_node(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = name.to_string();
                id
            }
            None => {
                self.names.push(name.to_string());
                self.rows.push(Row::default());
                u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.ids.insert(name.to_string(), id);
        id
    }

    fn service_id(&mut self, service: Option<&str>) -> u16 {
        let Some(s) = service.filter(|s| !s.is_empty()) else {
            return 0;
        };
        if let Some(id) = self.service_ids.get(s) {
            return *id;
        }
        if self.services.len() >= MAX_SERVICES {
            return 0;
        }
        self.services.push(s.to_string());
        let id = u16::try_from(self.services.len()).unwrap_or(0);
        self.service_ids.insert(s.to_string(), id);
        id
    }

    /// `src`'s row becomes exactly `targets`: cells kept where planned before
    /// (address and service from the plan), new ones `unknown`, the rest
    /// removed. Targets naming `src` itself are skipped.
    pub fn set_plan(&mut self, src: &str, targets: &[PlannedTarget]) {
        let now = crate::state::unix_nanos(std::time::SystemTime::now());
        self.set_plan_at(src, targets, now);
    }

    /// `set_plan` at `now` (unix nanos): the cells the plan drops leave the
    /// matrix then (`note_dropped`).
    pub fn set_plan_at(&mut self, src: &str, targets: &[PlannedTarget], now: i64) {
        let s = self.add_node(src);
        let mut cells = Vec::with_capacity(targets.len());
        for t in targets {
            let d = self.add_node(&t.node);
            if d == s {
                continue;
            }
            let service = self.service_id(t.service.as_deref());
            let address = self.addresses.id(t.address);
            let old = &self.rows[s as usize];
            let cell = match old.find(d, t.port, t.kind) {
                Some(i) => Cell {
                    id: t.id,
                    service,
                    address,
                    ..old.cells[i].clone()
                },
                None => Cell::placeholder(d, service, address, t),
            };
            cells.push(cell);
        }
        let row = Row::new(cells, &self.names, true);
        let old = std::mem::replace(&mut self.rows[s as usize], row);
        self.note_dropped(s, old, now);
        self.rows[s as usize].cells.shrink_to_fit();
        self.compact_addresses_if_grown();
    }

    /// Lets go of the addresses no cell names once the table is far larger
    /// than the fleet (plans and results that named others are gone).
    fn compact_addresses_if_grown(&mut self) {
        if self.addresses.list.len() > 4 * self.names.len() + 1024 {
            self.compact_addresses();
        }
    }

    /// Rebuilds the address table from the addresses cells name.
    fn compact_addresses(&mut self) {
        let old = std::mem::take(&mut self.addresses);
        for row in &mut self.rows {
            for c in &mut row.cells {
                c.address = self.addresses.id(old.get(c.address));
            }
        }
    }

    /// A batch of `src`'s windows, received at `now` (collector unix nanos).
    pub fn apply(&mut self, src: &str, windows: Vec<WindowInput>, now: i64) -> ApplyStats {
        let s = self.add_node(src);
        let mut stats = ApplyStats::default();
        let mut added = Vec::new();
        // An agent sends its windows in its plan's order, which is the
        // row's: the cell after the last one found is tried first, so a
        // batch walks its row in memory order instead of searching.
        let mut next = 0usize;
        for w in &windows {
            let row = &self.rows[s as usize];
            let (d, found, named) = match &w.target {
                // By id: the expected cell first, then a search of the row
                // (a row is a plan's few hundred targets).
                WindowTarget::Id(id) => {
                    let i = match row.cells.get(next) {
                        Some(c) if c.id == *id => Some(next),
                        _ => row.cells.iter().position(|c| c.id == *id),
                    };
                    let Some(i) = i else {
                        stats.ignored += 1;
                        continue;
                    };
                    (row.cells[i].dst, Some(i), None)
                }
                // By name: the expected cell is checked by name first, so a
                // batch in plan order needs no lookup of its targets' names.
                WindowTarget::Named(t) => {
                    let expected = row.cells.get(next).filter(|c| {
                        c.port == t.port && c.kind == t.kind && self.names[c.dst as usize] == t.node
                    });
                    match expected {
                        Some(c) => (c.dst, Some(next), Some(t)),
                        None => {
                            let Some(&d) = self.ids.get(&t.node).filter(|d| **d != s) else {
                                stats.ignored += 1;
                                continue;
                            };
                            (d, row.find(d, t.port, t.kind), Some(t))
                        }
                    }
                }
            };
            let row = &mut self.rows[s as usize];
            match found {
                Some(i) => {
                    next = i + 1;
                    let mut address = row.cells[i].address;
                    if let Some(t) = named
                        && self.addresses.get(address) != t.address
                    {
                        address = self.addresses.id(t.address);
                        self.rows[s as usize].cells[i].id = t.id;
                    }
                    let row = &mut self.rows[s as usize];
                    let old = (row.cells[i].state, row.cells[i].failure);
                    row.cells[i].set_window(w, address, now);
                    if self.journal.is_some() && old != (row.cells[i].state, row.cells[i].failure) {
                        let cell = row.cells[i].clone();
                        self.note(s, old, &cell, now);
                    }
                }
                None if row.planned => {
                    stats.ignored += 1;
                    continue;
                }
                None => {
                    // Only a named window reaches here: an id is found or
                    // ignored above.
                    let Some(t) = named else {
                        stats.ignored += 1;
                        continue;
                    };
                    let service = self.service_id(t.service.as_deref());
                    let address = self.addresses.id(t.address);
                    let mut cell = Cell::placeholder(d, service, address, t);
                    cell.set_window(w, address, now);
                    self.note(s, (CellState::Unknown, None), &cell, now);
                    added.push(cell);
                }
            }
            stats.applied += 1;
        }
        let row = &mut self.rows[s as usize];
        row.oldest = row.oldest.min(now);
        if !added.is_empty() {
            // A batch naming a target twice: the later window wins.
            let mut cells = std::mem::take(&mut self.rows[s as usize].cells);
            cells.append(&mut added);
            self.rows[s as usize] = Row::new(cells, &self.names, false);
        }
        self.compact_addresses_if_grown();
        stats
    }

    /// An immediate state change: the cell's state (and its failure, when
    /// the change came from one) now, its figures at the next batch.
    pub fn apply_change(&mut self, src: &str, change: &StateChange, now: i64) -> ApplyStats {
        let Some(&s) = self.ids.get(src) else {
            return ApplyStats {
                applied: 0,
                ignored: 1,
            };
        };
        let Some(&d) = self.ids.get(&change.target.node).filter(|d| **d != s) else {
            return ApplyStats {
                applied: 0,
                ignored: 1,
            };
        };
        let row = &mut self.rows[s as usize];
        let Some(i) = row.find(d, change.target.port, change.target.kind) else {
            return ApplyStats {
                applied: 0,
                ignored: 1,
            };
        };
        let cell = &mut row.cells[i];
        let old = (cell.state, cell.failure);
        cell.state = change.new.into();
        if let Some(o) = change.outcome.filter(|o| o.is_failure()) {
            cell.failure = Some(o);
            cell.last_failure_at = now;
        }
        cell.updated = now;
        let cell = cell.clone();
        row.oldest = row.oldest.min(now);
        self.note(s, old, &cell, now);
        ApplyStats {
            applied: 1,
            ignored: 0,
        }
    }

    /// `src`'s agent is gone: its row turns unknown, keeping the last figures.
    pub fn source_gone(&mut self, src: &str, now: i64) {
        if let Some(&s) = self.ids.get(src) {
            let mut changed = Vec::new();
            for c in &mut self.rows[s as usize].cells {
                if c.state != CellState::Unknown {
                    changed.push(((c.state, c.failure), c.clone()));
                    c.state = CellState::Unknown;
                }
            }
            for (old, mut c) in changed {
                c.state = CellState::Unknown;
                self.note(s, old, &c, now);
            }
        }
    }

    /// `name` left the fleet: its row, its column and its name go.
    pub fn node_removed(&mut self, name: &str) {
        let Some(id) = self.ids.remove(name) else {
            return;
        };
        self.rows[id as usize] = Row::default();
        self.names[id as usize] = String::new();
        self.owed.forget(id);
        for row in &mut self.rows {
            let before = row.cells.len();
            row.cells.retain(|c| c.dst != id);
            if row.cells.len() != before {
                row.reindex();
            }
        }
        self.free.push(id);
    }

    /// Cells without a report for three intervals turn unknown; returns how
    /// many did.
    pub fn expire(&mut self, now: i64) -> usize {
        let mut changed = Vec::new();
        for (s, row) in self.rows.iter_mut().enumerate() {
            if now.saturating_sub(row.oldest) <= self.stale_after_nanos {
                continue;
            }
            for c in &mut row.cells {
                if c.state != CellState::Unknown
                    && c.updated != 0
                    && now.saturating_sub(c.updated) > self.stale_after_nanos
                {
                    changed.push((s, (c.state, c.failure), c.clone()));
                    c.state = CellState::Unknown;
                }
            }
            row.oldest = row.oldest_update();
        }
        let n = changed.len();
        if self.journal.is_some() {
            for (s, old, mut c) in changed {
                c.state = CellState::Unknown;
                self.note(u32::try_from(s).unwrap_or(u32::MAX), old, &c, now);
            }
        }
        n
    }

    /// Node names, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.ids.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.rows.iter().map(|r| r.cells.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cell(&self, src: &str, dst: &str, port: u16, kind: ProbeKind) -> Option<CellRef<'_>> {
        let s = *self.ids.get(src)?;
        let d = *self.ids.get(dst)?;
        let row = &self.rows[s as usize];
        let i = row.find(d, port, kind)?;
        Some(self.resolve(s, &row.cells[i]))
    }

    fn resolve<'a>(&'a self, src: u32, cell: &'a Cell) -> CellRef<'a> {
        CellRef {
            src: &self.names[src as usize],
            dst: &self.names[cell.dst as usize],
            service: (cell.service as usize)
                .checked_sub(1)
                .and_then(|i| self.services.get(i))
                .map(String::as_str),
            address: self.addresses.get(cell.address),
            cell,
        }
    }

    /// Node names by id ("" for a freed id): for walks that count by id
    /// instead of resolving every cell's names.
    pub fn names_by_id(&self) -> &[String] {
        &self.names
    }

    /// Every source's id and cells, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (u32, &[Cell])> {
        self.rows
            .iter()
            .enumerate()
            .map(|(s, row)| (u32::try_from(s).unwrap_or(u32::MAX), row.cells.as_slice()))
    }

    /// `cell` of source `src` (an id of `rows`) with its names resolved.
    pub fn cell_ref<'a>(&'a self, src: u32, cell: &'a Cell) -> CellRef<'a> {
        self.resolve(src, cell)
    }

    /// Every cell, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = CellRef<'_>> {
        self.rows.iter().enumerate().flat_map(move |(s, row)| {
            let s = u32::try_from(s).unwrap_or(u32::MAX);
            row.cells.iter().map(move |c| self.resolve(s, c))
        })
    }

    /// Cells (of `port` only, when given), sorted by (src, dst, port, kind).
    pub fn cells(&self, port: Option<u16>) -> Vec<CellRef<'_>> {
        let mut out = Vec::new();
        self.for_each_sorted(port, |s, c| out.push(self.resolve(s, c)));
        out
    }

    /// A copy with only the cells from and to `node` (none when it has no
    /// cells): what a question about one node reads, for a small part of
    /// the cost of copying every cell.
    pub fn around(&self, node: &str) -> Matrix {
        let id = self.ids.get(node).copied();
        let rows = self
            .rows
            .iter()
            .enumerate()
            .map(|(s, row)| {
                let cells: Vec<Cell> = match id {
                    Some(id) if u32::try_from(s).ok() == Some(id) => row.cells.clone(),
                    Some(id) => row.cells.iter().filter(|c| c.dst == id).cloned().collect(),
                    None => Vec::new(),
                };
                let mut r = Row {
                    cells,
                    index: Vec::new(),
                    planned: row.planned,
                    oldest: 0,
                };
                r.reindex();
                r
            })
            .collect();
        Matrix {
            names: self.names.clone(),
            ids: self.ids.clone(),
            free: self.free.clone(),
            rows,
            services: self.services.clone(),
            service_ids: self.service_ids.clone(),
            addresses: self.addresses.clone(),
            stale_after_nanos: self.stale_after_nanos,
            journal: None,
            owed: Default::default(),
        }
    }

    /// Calls `f` with every cell in (src, dst, port, kind) name order, the
    /// order of `cells`, without collecting them.
    pub fn for_each_in_order<'a>(&'a self, mut f: impl FnMut(CellRef<'a>)) {
        self.for_each_sorted(None, |s, c| f(self.resolve(s, c)));
    }

    /// Calls `f` with (source id, cell) in (src, dst, port, kind) name order.
    fn for_each_sorted<'a>(&'a self, port: Option<u16>, mut f: impl FnMut(u32, &'a Cell)) {
        let mut sources: Vec<u32> = self.ids.values().copied().collect();
        sources.sort_unstable_by(|a, b| self.names[*a as usize].cmp(&self.names[*b as usize]));
        for s in sources {
            for c in &self.rows[s as usize].cells {
                if port.is_none_or(|p| c.port == p) {
                    f(s, c);
                }
            }
        }
    }
}

#[path = "matrix_json.rs"]
mod json;
pub use json::JsonDetail;

#[path = "matrix_history.rs"]
mod history;
pub use history::{CellChange, RestoredCell, Restorer};

#[cfg(test)]
#[path = "matrix_tests.rs"]
mod tests;
