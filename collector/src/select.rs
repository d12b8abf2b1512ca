//! Which cells a matrix query asks for, and the zone × zone grid: at
//! thousands of nodes a node grid is unreadable and a full matrix is
//! hundreds of megabytes, so `reachmap matrix`, `/api/v1/matrix` and the web
//! page read the fleet zone by zone (each node's `zone` label) and narrow
//! down with filters — a zone, a source, a destination, a state.

use crate::probe::{CellRef, CellState, Matrix};
use crate::state::Node;
use reachmap_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};

/// A state filter from the wire; `None` for unspecified (every state).
pub fn state_of_wire(s: pb::CellState) -> Option<CellState> {
    match s {
        pb::CellState::Unspecified => None,
        pb::CellState::Ok => Some(CellState::Ok),
        pb::CellState::Degraded => Some(CellState::Degraded),
        pb::CellState::Failing => Some(CellState::Failing),
        pb::CellState::Unknown => Some(CellState::Unknown),
    }
}

/// The cells a query keeps. Empty: every cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub port: Option<u16>,
    /// Cells whose source or destination is in this zone ("" is the nodes
    /// without one).
    pub zone: Option<String>,
    pub src: Option<String>,
    pub dst: Option<String>,
    /// Cells from a node of this zone / to a node of this zone.
    pub src_zone: Option<String>,
    pub dst_zone: Option<String>,
    pub state: Option<CellState>,
}

/// Each node's zone label; a node without one is in zone "".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zones(HashMap<String, String>);

impl Zones {
    pub fn of_nodes(nodes: &BTreeMap<String, Node>) -> Zones {
        Zones(
            nodes
                .values()
                .map(|n| {
                    let zone = n.labels.get("zone").cloned().unwrap_or_default();
                    (n.name.clone(), zone)
                })
                .collect(),
        )
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Zones {
        Zones(
            pairs
                .into_iter()
                .map(|(n, z)| (n.to_string(), z.to_string()))
                .collect(),
        )
    }

    /// A node the fleet no longer knows (a past matrix) is in zone "".
    pub fn zone<'a>(&'a self, node: &str) -> &'a str {
        self.0.get(node).map_or("", String::as_str)
    }
}

impl Selection {
    /// A state by its name, for flags and query strings.
    pub fn state_named(s: &str) -> Result<CellState, String> {
        CellState::parse(s)
            .ok_or_else(|| format!("state {s:?}: expected one of ok, degraded, failing, unknown"))
    }

    /// Narrower than the port alone.
    pub fn is_narrowed(&self) -> bool {
        self.zone.is_some()
            || self.src.is_some()
            || self.dst.is_some()
            || self.src_zone.is_some()
            || self.dst_zone.is_some()
            || self.state.is_some()
    }

    pub fn keeps(&self, c: &CellRef<'_>, zones: &Zones) -> bool {
        self.port.is_none_or(|p| c.cell.port() == p)
            && self.src.as_deref().is_none_or(|s| c.src == s)
            && self.dst.as_deref().is_none_or(|d| c.dst == d)
            && self.state.is_none_or(|s| c.cell.state() == s)
            && self
                .zone
                .as_deref()
                .is_none_or(|z| zones.zone(c.src) == z || zones.zone(c.dst) == z)
            && self
                .src_zone
                .as_deref()
                .is_none_or(|z| zones.zone(c.src) == z)
            && self
                .dst_zone
                .as_deref()
                .is_none_or(|z| zones.zone(c.dst) == z)
    }

    /// The kept cells, sorted by (src, dst, port, kind).
    pub fn cells<'m>(&self, m: &'m Matrix, zones: &Zones) -> Vec<CellRef<'m>> {
        m.cells(self.port)
            .into_iter()
            .filter(|c| self.keeps(c, zones))
            .collect()
    }
}

/// The cells from one zone to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneCell {
    pub src_zone: String,
    pub dst_zone: String,
    /// By `CellState::index`: ok, degraded, failing, unknown.
    pub counts: [u32; 4],
}

impl ZoneCell {
    /// The worst state with a cell: failing, then degraded, then unknown
    /// (no results is no news), then ok.
    pub fn worst(&self) -> CellState {
        [
            CellState::Failing,
            CellState::Degraded,
            CellState::Unknown,
            CellState::Ok,
        ]
        .into_iter()
        .find(|s| self.counts[s.index()] > 0)
        .unwrap_or(CellState::Unknown)
    }

    pub fn total(&self) -> u32 {
        self.counts.iter().sum()
    }

    /// Cells that are not ok.
    pub fn bad(&self) -> u32 {
        self.total() - self.counts[CellState::Ok.index()]
    }
}

/// A zone pair as the JSON and the CLI show it.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ZoneView {
    pub src_zone: String,
    pub dst_zone: String,
    /// "ok", "degraded", "failing" or "unknown".
    pub worst: String,
    pub ok: u32,
    pub degraded: u32,
    pub failing: u32,
    pub unknown: u32,
}

impl ZoneView {
    pub fn total(&self) -> u32 {
        self.ok + self.degraded + self.failing + self.unknown
    }
}

impl From<&pb::ZoneCell> for ZoneView {
    fn from(z: &pb::ZoneCell) -> Self {
        ZoneView {
            src_zone: z.src_zone.clone(),
            dst_zone: z.dst_zone.clone(),
            worst: crate::view::cell_state_name(z.worst),
            ok: z.ok,
            degraded: z.degraded,
            failing: z.failing,
            unknown: z.unknown,
        }
    }
}

/// The zone grid of the selected cells, sorted by (source zone,
/// destination zone), and the selected cells that are not ok.
pub fn by_zone<'m>(
    m: &'m Matrix,
    sel: &Selection,
    zones: &Zones,
) -> (Vec<ZoneCell>, Vec<CellRef<'m>>) {
    let mut grid: BTreeMap<(&str, &str), [u32; 4]> = BTreeMap::new();
    let mut bad = Vec::new();
    for c in sel.cells(m, zones) {
        let key = (zones.zone(c.src), zones.zone(c.dst));
        grid.entry(key).or_default()[c.cell.state().index()] += 1;
        if c.cell.state() != CellState::Ok {
            bad.push(c);
        }
    }
    let cells = grid
        .into_iter()
        .map(|((s, d), counts)| ZoneCell {
            src_zone: s.to_string(),
            dst_zone: d.to_string(),
            counts,
        })
        .collect();
    (cells, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{
        FailureCounts, Outcome, PlannedTarget, ProbeKind, TargetState, WindowInput,
    };

    fn window(dst: &str, last: u8, state: TargetState) -> WindowInput {
        let failing = state != TargetState::Ok;
        WindowInput {
            target: PlannedTarget::new(
                dst,
                format!("198.18.0.{last}").parse().expect("ip"),
                7442,
                ProbeKind::Tcp,
            ),
            sent: 10,
            ok: if failing { 0 } else { 10 },
            failures: FailureCounts {
                timeout: if failing { 10 } else { 0 },
                ..FailureCounts::default()
            },
            rtt_p50_ms: None,
            rtt_p99_ms: None,
            last_outcome: Some(if failing {
                Outcome::Timeout
            } else {
                Outcome::Open
            }),
            last_failure: failing.then_some((Outcome::Timeout, 1)),
            state,
            last_http_status: None,
            last_tls_error: None,
        }
    }

    /// a-1, a-2 in zone a; b-1 in zone b; c-1 without a zone. Everything
    /// works except a-1 and a-2 to b-1.
    fn fleet() -> (Matrix, Zones) {
        let names = [("a-1", 11), ("a-2", 12), ("b-1", 13), ("c-1", 14)];
        let mut m = Matrix::new(std::time::Duration::from_secs(10));
        for (name, _) in names {
            m.add_node(name);
        }
        for (src, _) in names {
            let windows = names
                .iter()
                .filter(|(d, _)| *d != src)
                .map(|(d, last)| {
                    let bad = src.starts_with("a-") && *d == "b-1";
                    window(
                        d,
                        *last,
                        if bad {
                            TargetState::Failing
                        } else {
                            TargetState::Ok
                        },
                    )
                })
                .collect();
            m.apply(src, windows, 1);
        }
        let zones = Zones::from_pairs([("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("c-1", "")]);
        (m, zones)
    }

    #[test]
    fn the_grid_counts_each_zone_pair_and_lists_what_is_not_ok() {
        let (m, zones) = fleet();
        let (grid, bad) = by_zone(&m, &Selection::default(), &zones);
        let pairs: Vec<(&str, &str, CellState, u32, u32)> = grid
            .iter()
            .map(|z| {
                (
                    z.src_zone.as_str(),
                    z.dst_zone.as_str(),
                    z.worst(),
                    z.bad(),
                    z.total(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("", "a", CellState::Ok, 0, 2),
                ("", "b", CellState::Ok, 0, 1),
                ("a", "", CellState::Ok, 0, 2),
                ("a", "a", CellState::Ok, 0, 2),
                ("a", "b", CellState::Failing, 2, 2),
                ("b", "", CellState::Ok, 0, 1),
                ("b", "a", CellState::Ok, 0, 2),
            ]
        );
        let bad: Vec<(&str, &str)> = bad.iter().map(|c| (c.src, c.dst)).collect();
        assert_eq!(bad, [("a-1", "b-1"), ("a-2", "b-1")]);
    }

    #[test]
    fn filters_narrow_by_zone_node_and_state() {
        let (m, zones) = fleet();
        let pick = |sel: Selection| -> Vec<(String, String)> {
            sel.cells(&m, &zones)
                .iter()
                .map(|c| (c.src.to_string(), c.dst.to_string()))
                .collect()
        };
        let failing = pick(Selection {
            state: Some(CellState::Failing),
            ..Selection::default()
        });
        assert_eq!(failing.len(), 2);
        let zone_b = pick(Selection {
            zone: Some("b".into()),
            ..Selection::default()
        });
        assert_eq!(zone_b.len(), 6, "b-1 to the 3 others and back: {zone_b:?}");
        assert!(zone_b.iter().all(|(s, d)| s == "b-1" || d == "b-1"));
        let none = pick(Selection {
            zone: Some(String::new()),
            src: Some("c-1".into()),
            dst: Some("a-2".into()),
            ..Selection::default()
        });
        assert_eq!(none, [("c-1".to_string(), "a-2".to_string())]);
        // One zone pair, one way: from zone a to zone b only.
        let a_to_b = pick(Selection {
            src_zone: Some("a".into()),
            dst_zone: Some("b".into()),
            ..Selection::default()
        });
        assert_eq!(
            a_to_b,
            [
                ("a-1".to_string(), "b-1".to_string()),
                ("a-2".to_string(), "b-1".to_string())
            ]
        );
        let into_b = pick(Selection {
            dst_zone: Some("b".into()),
            ..Selection::default()
        });
        assert!(into_b.iter().all(|(_, d)| d == "b-1") && into_b.len() == 3);
        assert!(Selection::state_named("broken").is_err());
        assert_eq!(Selection::state_named("failing"), Ok(CellState::Failing));
        assert!(!Selection::default().is_narrowed());
    }
}
