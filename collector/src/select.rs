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

    /// `name` in `zone`, unless its zone is known already.
    pub fn add(&mut self, name: &str, zone: Option<&str>) {
        self.0
            .entry(name.to_string())
            .or_insert_with(|| zone.unwrap_or_default().to_string());
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

/// Cells the zone view lists at most: failing first, then degraded, then
/// unknown. A fleet of 10,000 nodes can have half a million cells that are
/// not ok (a zone whose agents are down); the grid counts them all.
pub const ZONE_VIEW_CELLS: usize = 1_000;

/// The zone grid of the selected cells, sorted by (source zone,
/// destination zone); the selected cells that are not ok, worst first and
/// at most `ZONE_VIEW_CELLS` of them; and how many more were not listed.
///
/// One pass over the matrix by node id: each node's zone is looked up once,
/// not once per cell, and only the listed cells get their names resolved
/// (2,140,000 cells are counted in milliseconds).
pub fn by_zone<'m>(
    m: &'m Matrix,
    sel: &Selection,
    zones: &Zones,
) -> (Vec<ZoneCell>, Vec<CellRef<'m>>, usize) {
    let names = m.names_by_id();
    // Zone index by node id, and the zones' names.
    let mut zone_names: Vec<&str> = Vec::new();
    let mut zone_ids: HashMap<&str, usize> = HashMap::new();
    let zone_of: Vec<usize> = names
        .iter()
        .map(|n| {
            let z = zones.zone(n);
            *zone_ids.entry(z).or_insert_with(|| {
                zone_names.push(z);
                zone_names.len() - 1
            })
        })
        .collect();
    let wanted = |z: &Option<String>| -> Option<Option<usize>> {
        z.as_deref().map(|z| zone_ids.get(z).copied())
    };
    let (only, only_src, only_dst) = (
        wanted(&sel.zone),
        wanted(&sel.src_zone),
        wanted(&sel.dst_zone),
    );
    let id_of = |n: &Option<String>| -> Option<Option<u32>> {
        n.as_deref().map(|n| {
            names
                .iter()
                .position(|x| x == n)
                .and_then(|i| u32::try_from(i).ok())
        })
    };
    let (src_id, dst_id) = (id_of(&sel.src), id_of(&sel.dst));
    let nz = zone_names.len();
    let mut counts: Vec<[u32; 4]> = vec![[0; 4]; nz * nz];
    let mut bad: Vec<(u8, u32, &crate::probe::Cell)> = Vec::new();
    let rank = |s: CellState| match s {
        CellState::Failing => 0,
        CellState::Degraded => 1,
        _ => 2,
    };
    for (s, cells) in m.rows() {
        if cells.is_empty() || src_id.is_some_and(|id| id != Some(s)) {
            continue;
        }
        let sz = zone_of[s as usize];
        if only_src.is_some_and(|z| z != Some(sz)) {
            continue;
        }
        for c in cells {
            let dz = zone_of[c.dst_id() as usize];
            if sel.port.is_some_and(|p| c.port() != p)
                || sel.state.is_some_and(|st| c.state() != st)
                || dst_id.is_some_and(|id| id != Some(c.dst_id()))
                || only_dst.is_some_and(|z| z != Some(dz))
                || only.is_some_and(|z| z != Some(sz) && z != Some(dz))
            {
                continue;
            }
            counts[sz * nz + dz][c.state().index()] += 1;
            if c.state() != CellState::Ok {
                bad.push((rank(c.state()), s, c));
            }
        }
    }
    let mut grid: Vec<ZoneCell> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.iter().any(|n| *n > 0))
        .map(|(i, c)| ZoneCell {
            src_zone: zone_names[i / nz].to_string(),
            dst_zone: zone_names[i % nz].to_string(),
            counts: *c,
        })
        .collect();
    grid.sort_by(|a, b| (&a.src_zone, &a.dst_zone).cmp(&(&b.src_zone, &b.dst_zone)));
    let total = bad.len();
    let key = |&(r, s, c): &(u8, u32, &crate::probe::Cell)| {
        (
            r,
            names[s as usize].as_str(),
            names[c.dst_id() as usize].as_str(),
            c.port(),
            c.kind(),
        )
    };
    if bad.len() > ZONE_VIEW_CELLS {
        bad.select_nth_unstable_by(ZONE_VIEW_CELLS, |a, b| key(a).cmp(&key(b)));
        bad.truncate(ZONE_VIEW_CELLS);
    }
    bad.sort_by(|a, b| key(a).cmp(&key(b)));
    // Listed in (src, dst, port, kind) order, as every other view.
    let mut listed: Vec<CellRef<'m>> = bad.into_iter().map(|(_, s, c)| m.cell_ref(s, c)).collect();
    listed.sort_by(|a, b| {
        (a.src, a.dst, a.cell.port(), a.cell.kind()).cmp(&(
            b.src,
            b.dst,
            b.cell.port(),
            b.cell.kind(),
        ))
    });
    let left_out = total - listed.len();
    (grid, listed, left_out)
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
            )
            .into(),
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
        let (grid, bad, left_out) = by_zone(&m, &Selection::default(), &zones);
        assert_eq!(left_out, 0);
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

    #[test]
    fn the_zone_view_lists_the_worst_cells_first_and_counts_the_rest() {
        // 40 sources in zone a, each failing or unknown towards 40 in b:
        // 1,600 cells not ok, of which the 1,000 listed are failing first.
        let mut m = Matrix::new(std::time::Duration::from_secs(10));
        let mut pairs = Vec::new();
        for i in 0..40 {
            pairs.push((format!("a-{i:02}"), "a".to_string()));
            pairs.push((format!("b-{i:02}"), "b".to_string()));
        }
        let zones = Zones::from_pairs(pairs.iter().map(|(n, z)| (n.as_str(), z.as_str())));
        for i in 0..40 {
            let batch: Vec<WindowInput> = (0..40)
                .map(|j| {
                    let state = if (i + j) % 3 == 0 {
                        TargetState::Failing
                    } else {
                        TargetState::Degraded
                    };
                    window(&format!("b-{j:02}"), j as u8, state)
                })
                .collect();
            for j in 0..40 {
                m.add_node(&format!("b-{j:02}"));
            }
            m.apply(&format!("a-{i:02}"), batch, 1);
        }
        let (grid, listed, left_out) = by_zone(&m, &Selection::default(), &zones);
        assert_eq!(grid.len(), 1);
        assert_eq!(grid[0].total(), 1600);
        assert_eq!(listed.len(), ZONE_VIEW_CELLS);
        assert_eq!(left_out, 600);
        let failing = grid[0].counts[CellState::Failing.index()] as usize;
        let listed_failing = listed
            .iter()
            .filter(|c| c.cell.state() == CellState::Failing)
            .count();
        assert_eq!(listed_failing, failing, "every failing cell is listed");
        // Listed in (src, dst) order.
        let keys: Vec<(&str, &str)> = listed.iter().map(|c| (c.src, c.dst)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // The same counts as the general filter path.
        let by_filter = Selection::default().cells(&m, &zones).len();
        assert_eq!(by_filter, 1600);
    }
}
