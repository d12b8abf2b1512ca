//! The findings the matrix alone shows: partitions, isolated nodes, pairs
//! that reach one way only, and a service failing from every source.
//!
//! Node pairs are classified from their cells: a pair (A, B) reaches when
//! any cell from A to B is ok or degraded, and is cut when it has failing
//! cells and none that reach. Only nodes whose agents are connected take
//! part: a node that is down is AGENT_DOWN's business, and its cells are
//! grouped by cause with the rest.

use super::cells::{Bad, Explainer};
use super::{Finding, Group, Kind};
use crate::probe::{CellState, Matrix};
use crate::state::Node;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// Which of a node's cells an isolation finding covers: (node, src, dst).
type Keep = fn(&str, &str, &str) -> bool;

const REACHES: u8 = 1;
const FAILS: u8 = 2;

/// One-way pairs explained with `why` to group them by the side at fault.
const MAX_ASYMMETRIC_EXPLAINED: usize = 100;

/// Directed pair states between the connected nodes, dense.
struct Pairs<'a> {
    names: Vec<&'a str>,
    bits: Vec<u8>,
}

impl<'a> Pairs<'a> {
    fn new(m: &Matrix, nodes: &'a BTreeMap<String, Node>) -> Pairs<'a> {
        let names: Vec<&str> = nodes
            .values()
            .filter(|n| n.connected())
            .map(|n| n.name.as_str())
            .collect();
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let n = names.len();
        let mut bits = vec![0u8; n * n];
        for c in m.iter() {
            let (Some(&s), Some(&d)) = (index.get(c.src), index.get(c.dst)) else {
                continue;
            };
            bits[s * n + d] |= match c.cell.state() {
                CellState::Ok | CellState::Degraded => REACHES,
                CellState::Failing => FAILS,
                CellState::Unknown => 0,
            };
        }
        Pairs { names, bits }
    }

    fn get(&self, s: usize, d: usize) -> u8 {
        self.bits[s * self.names.len() + d]
    }

    fn reaches(&self, s: usize, d: usize) -> bool {
        self.get(s, d) & REACHES != 0
    }

    fn cut(&self, s: usize, d: usize) -> bool {
        self.get(s, d) == FAILS
    }
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// A group's name: its zone when every member shares one, else its nodes.
fn group_name(members: &[&str], nodes: &BTreeMap<String, Node>) -> String {
    let zone = |n: &str| nodes.get(n).and_then(|x| x.labels.get("zone")).cloned();
    if let Some(z) = zone(members[0])
        && members
            .iter()
            .all(|m| zone(m).as_deref() == Some(z.as_str()))
    {
        return z;
    }
    match members.len() {
        1..=3 => members.join(", "),
        n => format!("{}, {} and {} others", members[0], members[1], n - 2),
    }
}

pub(super) fn matrix_findings(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    bad: &mut Bad,
    why: &mut Explainer<'_>,
    now: SystemTime,
) -> Vec<Finding> {
    let p = Pairs::new(m, nodes);
    let n = p.names.len();
    let mut out = Vec::new();
    // Isolation: every peer that has a cell with the node is cut.
    let mut isolated = vec![false; n];
    let mut one_sided = vec![false; n];
    for x in 0..n {
        let (mut in_ok, mut in_cut, mut out_ok, mut out_cut) = (0, 0, 0, 0);
        for y in (0..n).filter(|y| *y != x) {
            in_ok += usize::from(p.reaches(y, x));
            in_cut += usize::from(p.cut(y, x));
            out_ok += usize::from(p.reaches(x, y));
            out_cut += usize::from(p.cut(x, y));
        }
        let name = p.names[x];
        let inbound = in_ok == 0 && in_cut >= 2;
        let outbound = out_ok == 0 && out_cut >= 2;
        let (kind, severity, title, keep): (Kind, u32, String, Keep) = match (inbound, outbound) {
            (true, true) => (
                Kind::Isolated,
                90,
                format!("{name} is isolated: no peer reaches it and it reaches no peer"),
                |me, s, d| s == me || d == me,
            ),
            (true, false) => (
                Kind::IsolatedInbound,
                88,
                format!("no peer reaches {name} ({in_cut} cannot), while it reaches {out_ok}"),
                |me, _, d| d == me,
            ),
            (false, true) => (
                Kind::IsolatedOutbound,
                88,
                format!(
                    "{name} reaches no peer (it cannot reach {out_cut}), while {in_ok} reach it"
                ),
                |me, s, _| s == me,
            ),
            (false, false) => continue,
        };
        isolated[x] = inbound && outbound;
        one_sided[x] = inbound != outbound;
        let mut f = Finding::new(kind, severity, title);
        f.node = name.to_string();
        f.detail = format!(
            "inbound: {in_ok} peer(s) reach {name}, {in_cut} cannot; outbound: it reaches {out_ok}, cannot reach {out_cut}; its agent is connected to the collector"
        );
        f.fix = format!(
            "look at {name} itself first: its interfaces, routes and firewall (`reachmap node {name}`, `reachmap why` for one of its cells)"
        );
        let cells = bad.select(|s, d| keep(name, s, d));
        explain_one(&mut f, bad, &cells, m, nodes, why, now);
        out.push(bad.assign(f, &cells, nodes));
    }
    // Partition: components of the "reaches, either way" graph of the nodes
    // not isolated; two or more of at least two nodes, cut from each other.
    let mut parent: Vec<usize> = (0..n).collect();
    for s in 0..n {
        for d in 0..n {
            if s != d && !isolated[s] && !isolated[d] && p.reaches(s, d) {
                let (a, b) = (find(&mut parent, s), find(&mut parent, d));
                parent[a] = b;
            }
        }
    }
    let mut comps: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for x in (0..n).filter(|x| !isolated[*x]) {
        let root = find(&mut parent, x);
        comps.entry(root).or_default().push(p.names[x]);
    }
    let sides: Vec<Vec<&str>> = comps.into_values().filter(|c| c.len() >= 2).collect();
    if sides.len() >= 2 {
        let side_of: HashMap<&str, usize> = sides
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.iter().map(move |n| (*n, i)))
            .collect();
        let cells = bad.select(
            |s, d| matches!((side_of.get(s), side_of.get(d)), (Some(a), Some(b)) if a != b),
        );
        if !cells.is_empty() {
            let groups: Vec<Group> = sides
                .iter()
                .map(|s| Group {
                    name: group_name(s, nodes),
                    nodes: s.iter().map(|x| x.to_string()).collect(),
                })
                .collect();
            let names: Vec<String> = groups
                .iter()
                .map(|g| format!("{} ({} nodes)", g.name, g.nodes.len()))
                .collect();
            let mut f = Finding::new(
                Kind::Partition,
                100,
                format!(
                    "the fleet is split: {} cannot reach each other",
                    names.join(" and ")
                ),
            );
            f.detail = format!(
                "{} cells between the groups fail and none reach; within each group the nodes reach each other, and every node's agent is connected to the collector",
                cells.len()
            );
            f.evidence = groups
                .iter()
                .map(|g| {
                    format!(
                        "{}: {} of {} nodes connected to the collector",
                        g.name,
                        g.nodes.len(),
                        g.nodes.len()
                    )
                })
                .collect();
            f.fix = "something between the groups drops their traffic: a router, a bridge or a cloud network rule between them (each side's own facts allow it); `reachmap why` on one cell across shows both ends' checks".into();
            f.groups = groups;
            explain_one(&mut f, bad, &cells, m, nodes, why, now);
            out.push(bad.assign(f, &cells, nodes));
        }
    }
    let left_out: Vec<bool> = isolated
        .iter()
        .zip(&one_sided)
        .map(|(a, b)| *a || *b)
        .collect();
    out.extend(asymmetric(m, nodes, &p, bad, why, &left_out, now));
    out.extend(services_down(m, nodes, bad, why, now));
    out
}

/// The top cause of the first of `cells`, as the finding's evidence: what
/// `why` says of one of them.
fn explain_one(
    f: &mut Finding,
    bad: &Bad,
    cells: &[usize],
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    why: &mut Explainer<'_>,
    now: SystemTime,
) {
    let Some(&i) = cells.first() else {
        return;
    };
    let cell = bad.cells[i];
    let Some(c) = why
        .explain(m, nodes, cell, now)
        .and_then(|e| e.causes.into_iter().next())
    else {
        return;
    };
    f.evidence.push(format!(
        "why {} {}:{}: {} on {} — {}",
        cell.0, cell.1, cell.2, c.code, c.node, c.detail
    ));
    f.code = c.code;
}

/// Pairs that reach one way only, grouped by the top cause of the failing
/// direction: the side whose facts explain it.
fn asymmetric(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    p: &Pairs,
    bad: &mut Bad,
    why: &mut Explainer<'_>,
    isolated: &[bool],
    now: SystemTime,
) -> Vec<Finding> {
    let n = p.names.len();
    let mut by_pair: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for i in bad.uncovered() {
        let (s, d, _) = bad.cells[i];
        by_pair.entry((s, d)).or_default().push(i);
    }
    let mut one_way: Vec<(usize, usize)> = Vec::new();
    for a in 0..n {
        for b in 0..n {
            if a != b && !isolated[a] && !isolated[b] && p.reaches(a, b) && p.cut(b, a) {
                one_way.push((b, a));
            }
        }
    }
    type CauseKey = (String, String, String);
    // Pairs `why` had no time for: neither explained nor "unexplained".
    let skipped: CauseKey = (String::new(), String::new(), "not asked".into());
    let mut groups: BTreeMap<CauseKey, Vec<usize>> = BTreeMap::new();
    let mut details: BTreeMap<CauseKey, (String, Option<String>)> = BTreeMap::new();
    for (i, (s, d)) in one_way.iter().enumerate() {
        let (src, dst) = (p.names[*s], p.names[*d]);
        let Some(cells) = by_pair.get(&(src, dst)) else {
            continue;
        };
        let key = if i < MAX_ASYMMETRIC_EXPLAINED {
            match why.explain(m, nodes, bad.cells[cells[0]], now) {
                Some(e) => match e.causes.into_iter().next() {
                    Some(c) => {
                        let key = super::cause_key(&c);
                        details.entry(key.clone()).or_insert((c.detail, c.fix));
                        key
                    }
                    None => CauseKey::default(),
                },
                None => skipped.clone(),
            }
        } else {
            skipped.clone()
        };
        groups.entry(key).or_default().extend(cells);
    }
    groups
        .into_iter()
        .map(|(key, mut cells)| {
            let (code, node) = (key.0.clone(), key.1.clone());
            cells.sort_unstable();
            let pairs: std::collections::BTreeSet<(&str, &str)> = cells
                .iter()
                .map(|i| (bad.cells[*i].0, bad.cells[*i].1))
                .collect();
            let title = if key == skipped {
                format!(
                    "{} pair(s) reach one way only (not explained here: `reachmap why` one of them)",
                    pairs.len()
                )
            } else if code.is_empty() {
                format!(
                    "{} pair(s) reach one way only, not explained by either end's facts",
                    pairs.len()
                )
            } else {
                format!(
                    "{} pair(s) reach one way only: {code} on {node}",
                    pairs.len()
                )
            };
            let mut f = Finding::new(Kind::Asymmetric, 50, title);
            if let Some((detail, fix)) = details.get(&key) {
                f.detail = detail.clone();
                f.fix = fix.clone().unwrap_or_default();
            }
            f.evidence = pairs
                .iter()
                .take(20)
                .map(|(s, d)| format!("{d} reaches {s}, but {s} does not reach {d}"))
                .collect();
            if !node.is_empty() {
                f.groups = vec![Group {
                    name: "explaining side".into(),
                    nodes: vec![node.clone()],
                }];
            }
            f.code = code;
            f.node = node;
            bad.assign(f, &cells, nodes)
        })
        .collect()
}

/// A declared service (cells with a service name) failing from every
/// source that probes it, on one destination.
fn services_down(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    bad: &mut Bad,
    why: &mut Explainer<'_>,
    now: SystemTime,
) -> Vec<Finding> {
    let mut by: BTreeMap<(&str, &str, u16), (usize, Vec<usize>)> = BTreeMap::new();
    for c in m.iter() {
        let Some(service) = c.service else {
            continue;
        };
        if !nodes.get(c.src).is_some_and(Node::connected) {
            continue;
        }
        let e = by.entry((service, c.dst, c.cell.port())).or_default();
        e.0 += 1;
        if c.cell.state() == CellState::Failing
            && let Some(i) = bad.find((c.src, c.dst, c.cell.port()))
            && !bad.covered[i]
        {
            e.1.push(i);
        }
    }
    by.into_iter()
        .filter(|(_, (all, failing))| *all >= 2 && failing.len() == *all)
        .map(|((service, dst, port), (all, mut cells))| {
            cells.sort_unstable();
            let mut f = Finding::new(
                Kind::ServiceDown,
                85,
                format!("service {service} on {dst}:{port} fails from every source ({all})"),
            );
            f.detail = format!(
                "every node that probes {service} on {dst}:{port} fails; the service or {dst} itself is the place to look"
            );
            f.fix = format!(
                "`reachmap why {} {dst}:{port}` names the cause on {dst}",
                bad.cells[cells[0]].0
            );
            f.node = dst.to_string();
            explain_one(&mut f, bad, &cells, m, nodes, why, now);
            bad.assign(f, &cells, nodes)
        })
        .collect()
}
