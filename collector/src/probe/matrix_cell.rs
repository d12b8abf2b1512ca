//! One matrix cell, compact, and the table of the addresses cells name.

use super::{CellState, Outcome, WindowInput, packed};
use crate::probe::planner::{PlannedTarget, ProbeKind};
use crate::probe::tls::TlsNote;
use std::collections::HashMap;
use std::net::IpAddr;

/// One cell, compact: 64 bytes (+4 of its row's index), since a 10,000-node
/// fleet holds millions. Names, services and addresses are ids into the
/// matrix's tables, round trips are whole 100 ns (`RTT_NONE` when unknown),
/// counts saturate at 65,535 (a window is far smaller), and the rare TLS
/// failure is boxed. `CellRef` resolves the ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// The planned target's id, which a window may name it by alone.
    pub(super) id: u64,
    pub(super) dst: u32,
    /// Index into the matrix's address table.
    pub(super) address: u32,
    pub(super) updated: i64,
    /// 0 when none.
    pub(super) last_failure_at: i64,
    /// In 100 ns; `RTT_NONE` when unknown.
    pub(super) rtt: u32,
    pub(super) rtt_p99: u32,
    /// The last TLS failure (HTTPS probes): rare, so boxed.
    pub(super) tls: Option<Box<TlsNote>>,
    /// Index + 1 into the service table; 0 for none.
    pub(super) service: u16,
    pub(super) port: u16,
    pub(super) sent: u16,
    pub(super) ok: u16,
    /// The last HTTP status seen (HTTP probes); 0 when none.
    pub(super) http_status: u16,
    pub(super) kind: ProbeKind,
    pub(super) state: CellState,
    pub(super) failure: Option<Outcome>,
}

pub(super) const RTT_NONE: u32 = u32::MAX;

/// A round trip in ms as whole 100 ns (at most ~429 s, far past any timeout).
pub(super) fn rtt_code(ms: Option<f64>) -> u32 {
    match ms {
        Some(v) if v.is_finite() && v >= 0.0 => {
            (v * 10_000.0).round().min(f64::from(RTT_NONE - 1)) as u32
        }
        _ => RTT_NONE,
    }
}

pub(super) fn rtt_ms(code: u32) -> Option<f64> {
    (code != RTT_NONE).then(|| f64::from(code) / 10_000.0)
}

pub(super) fn count(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Cell {
    pub(super) fn placeholder(dst: u32, service: u16, address: u32, t: &PlannedTarget) -> Cell {
        Cell {
            id: t.id,
            dst,
            address,
            updated: 0,
            last_failure_at: 0,
            rtt: RTT_NONE,
            rtt_p99: RTT_NONE,
            tls: None,
            service,
            port: t.port,
            sent: 0,
            ok: 0,
            http_status: 0,
            kind: t.kind,
            state: CellState::Unknown,
            failure: None,
        }
    }

    pub(super) fn key(&self) -> (u32, u16, ProbeKind) {
        (self.dst, self.port, self.kind)
    }

    pub(super) fn packed(&self) -> u64 {
        packed(self.dst, self.port, self.kind)
    }

    pub(super) fn set_window(&mut self, w: &WindowInput, address: u32, now: i64) {
        self.address = address;
        self.state = w.state.into();
        self.sent = count(w.sent);
        self.ok = count(w.ok.min(w.sent));
        self.rtt = rtt_code(w.rtt_p50_ms);
        self.rtt_p99 = rtt_code(w.rtt_p99_ms);
        self.failure = w.last_failure.map(|(o, _)| o).filter(|o| o.is_failure());
        self.last_failure_at = w.last_failure.map_or(0, |(_, at)| at);
        self.http_status = w.last_http_status.unwrap_or(0);
        if self.tls.as_deref() != w.last_tls_error.as_ref() {
            self.tls = w.last_tls_error.clone().map(Box::new);
        }
        self.updated = now;
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    /// The destination's id (`Matrix::names_by_id`).
    pub fn dst_id(&self) -> u32 {
        self.dst
    }
    /// The last HTTP status seen, for HTTP probes.
    pub fn http_status(&self) -> Option<u16> {
        (self.http_status != 0).then_some(self.http_status)
    }
    /// The last TLS failure, for HTTPS probes that failed the handshake.
    pub fn tls(&self) -> Option<&TlsNote> {
        self.tls.as_deref()
    }
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }
    pub fn state(&self) -> CellState {
        self.state
    }
    /// Probes in the window.
    pub fn sent(&self) -> u32 {
        u32::from(self.sent)
    }
    /// Share of the window's probes that failed, 0..1 (0 with no probes).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            f64::from(self.sent - self.ok) / f64::from(self.sent)
        }
    }
    /// Median round trip of the successful probes.
    pub fn rtt_ms(&self) -> Option<f64> {
        rtt_ms(self.rtt)
    }
    pub fn rtt_p99_ms(&self) -> Option<f64> {
        rtt_ms(self.rtt_p99)
    }
    /// The last failure's outcome in the window.
    pub fn failure(&self) -> Option<Outcome> {
        self.failure
    }
    /// Collector time (unix nanos) of the last report; 0 before any.
    pub fn updated(&self) -> i64 {
        self.updated
    }
    pub fn last_failure_at(&self) -> Option<i64> {
        Some(self.last_failure_at).filter(|t| *t != 0)
    }
}

/// The addresses cells name, each once: a cell holds its index.
#[derive(Clone, Debug, Default)]
pub(super) struct Addresses {
    pub(super) list: Vec<IpAddr>,
    ids: HashMap<IpAddr, u32>,
}

impl Addresses {
    pub(super) fn id(&mut self, a: IpAddr) -> u32 {
        if let Some(id) = self.ids.get(&a) {
            return *id;
        }
        let id = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(a);
        self.ids.insert(a, id);
        id
    }

    pub(super) fn get(&self, id: u32) -> IpAddr {
        self.list
            .get(id as usize)
            .copied()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }
}

/// What the matrix holds on the heap, in bytes: every table at its
/// capacity (a hash table as its slots and control bytes, a TLS note as
/// its box), and the journal of changes not yet taken. Allocator overhead
/// is not counted.
impl super::Matrix {
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        fn map<K, V>(m: &HashMap<K, V>) -> usize {
            m.capacity() * (size_of::<(K, V)>() + 1)
        }
        let strings = |v: &[String]| v.iter().map(String::capacity).sum::<usize>();
        let rows: usize = self
            .rows
            .iter()
            .map(|r| r.cells.capacity() * size_of::<Cell>() + r.index.capacity() * 4)
            .sum();
        let tls: usize = self
            .rows
            .iter()
            .flat_map(|r| &r.cells)
            .filter(|c| c.tls.is_some())
            .count()
            * size_of::<TlsNote>();
        rows + tls
            + self.rows.capacity() * size_of::<super::Row>()
            + self.names.capacity() * size_of::<String>()
            + strings(&self.names)
            + map(&self.ids)
            + self.ids.keys().map(String::capacity).sum::<usize>()
            + self.free.capacity() * 4
            + self.services.capacity() * size_of::<String>()
            + strings(&self.services)
            + map(&self.service_ids)
            + self.addresses.list.capacity() * size_of::<IpAddr>()
            + map(&self.addresses.ids)
            + self.journal.as_ref().map_or(0, |j| {
                j.capacity() * size_of::<super::CellChange>()
                    + j.iter()
                        .map(|c| {
                            c.src.capacity()
                                + c.dst.capacity()
                                + c.service.as_ref().map_or(0, String::capacity)
                        })
                        .sum::<usize>()
            })
    }
}
