//! `reachmap findings`: what is wrong with the fleet as a whole, once, with
//! the cells each finding covers — instead of N² separate cells.
//!
//! From the matrix alone (`groups`): a partition (groups of connected nodes
//! that reach each other but not the other groups), isolated nodes (no peer
//! reaches it, it reaches no peer, or both), pairs that reach one way only,
//! and a declared service failing from every source. Then the bad cells no
//! finding covers yet are explained with `why` and grouped by their top
//! cause (one rule, one stale allow-list address, one OOM kill): a cause
//! behind two or more cells is one finding. Last, every former address of a
//! node still named anywhere in the fleet (`stale`).
//!
//! Pure over a copy of the fleet (`state::View`), made off the state task.

mod cells;
mod groups;
pub mod stale;
pub mod wire;

use crate::probe::Matrix;
use crate::state::Node;
use crate::why::code::CauseCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Cells listed with a finding; `cell_count` has them all.
pub const MAX_CELLS_LISTED: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Partition,
    Isolated,
    IsolatedInbound,
    IsolatedOutbound,
    ServiceDown,
    SharedCause,
    StaleAddress,
    Asymmetric,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Partition,
        Kind::Isolated,
        Kind::IsolatedInbound,
        Kind::IsolatedOutbound,
        Kind::ServiceDown,
        Kind::SharedCause,
        Kind::StaleAddress,
        Kind::Asymmetric,
    ];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Partition => "partition",
            Kind::Isolated => "isolated",
            Kind::IsolatedInbound => "isolated_inbound",
            Kind::IsolatedOutbound => "isolated_outbound",
            Kind::ServiceDown => "service_down",
            Kind::SharedCause => "shared_cause",
            Kind::StaleAddress => "stale_address",
            Kind::Asymmetric => "asymmetric",
        }
    }
}

/// A cell, by its names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub src: String,
    pub dst: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// Higher is worse.
    pub severity: u32,
    pub title: String,
    pub detail: String,
    pub groups: Vec<Group>,
    /// Sorted: the cells the finding covers, the first `MAX_CELLS_LISTED`.
    pub cells: Vec<Key>,
    /// How many cells it covers.
    pub cell_count: u32,
    pub evidence: Vec<String>,
    pub fix: String,
    /// Unix nanoseconds; 0 (null in JSON) when not known.
    #[serde(serialize_with = "crate::why::time_json")]
    pub since: i64,
    pub code: String,
    pub node: String,
}

impl Finding {
    fn new(kind: Kind, severity: u32, title: String) -> Finding {
        Finding {
            kind,
            severity,
            title,
            detail: String::new(),
            groups: Vec::new(),
            cells: Vec::new(),
            cell_count: 0,
            evidence: Vec::new(),
            fix: String::new(),
            since: 0,
            code: String::new(),
            node: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Most severe first.
    pub findings: Vec<Finding>,
    pub cells: u32,
    pub bad_cells: u32,
    pub uncovered_cells: u32,
    /// Unix nanoseconds: when the copy of the fleet they were made from was
    /// taken (0 when not made yet).
    #[serde(serialize_with = "crate::why::time_json")]
    pub as_of: i64,
    /// How long making them took, copying the fleet included.
    pub compute_micros: u64,
}

/// What makes two cells' top causes one: the code, the node it is on and
/// its first fact (the rule, the stale address, the kill).
fn cause_key(c: &crate::why::Cause) -> (String, String, String) {
    let about = c
        .evidence
        .iter()
        .find(|x| x.kind == "fact")
        .map(|x| x.text.clone())
        .unwrap_or_default();
    (c.code.clone(), c.node.clone(), about)
}

/// "since 10:02:07 UTC" for a finding's title, or nothing.
fn since_text(t: i64) -> String {
    if t <= 0 {
        return String::new();
    }
    chrono::DateTime::from_timestamp_nanos(t)
        .format(" since %H:%M:%S UTC")
        .to_string()
}

/// The fleet's findings now.
pub fn detect(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    owners: &[crate::why::Declared],
    now: SystemTime,
) -> Report {
    let mut bad = cells::Bad::new(m);
    let mut report = Report {
        cells: u32::try_from(m.len()).unwrap_or(u32::MAX),
        bad_cells: u32::try_from(bad.cells.len()).unwrap_or(u32::MAX),
        ..Report::default()
    };
    let mut why = cells::Explainer::new(cells::EXPLAIN_BUDGET, owners);
    let mut findings = groups::matrix_findings(m, nodes, &mut bad, &mut why, now);
    // The cells left, by destination and port — where one rule, one
    // listener or one host most often explains them all. A group whose
    // first, middle and last cells share the top cause is taken as one;
    // otherwise its cells are asked one by one. Largest groups first.
    let mut by_dst: BTreeMap<(&str, u16), Vec<usize>> = BTreeMap::new();
    for i in bad.uncovered() {
        let (_, d, p) = bad.cells[i];
        by_dst.entry((d, p)).or_default().push(i);
    }
    let mut by_dst: Vec<Vec<usize>> = by_dst.into_values().collect();
    by_dst.sort_by_key(|g| std::cmp::Reverse(g.len()));
    type Grouped = BTreeMap<(String, String, String), (crate::why::Cause, Vec<usize>)>;
    let mut by_cause: Grouped = BTreeMap::new();
    let top = |why: &mut cells::Explainer<'_>, i: usize| {
        why.explain(m, nodes, bad.cells[i], now)
            .and_then(|e| e.causes.into_iter().next())
    };
    for g in by_dst {
        let Some(first) = top(&mut why, g[0]) else {
            continue;
        };
        let key = cause_key(&first);
        let samples: Vec<usize> = [g.len() / 2, g.len() - 1]
            .into_iter()
            .filter(|j| *j > 0)
            .collect();
        let same = samples
            .iter()
            .all(|j| top(&mut why, g[*j]).is_some_and(|c| cause_key(&c) == key));
        if same {
            by_cause
                .entry(key)
                .or_insert((first, Vec::new()))
                .1
                .extend(&g);
            continue;
        }
        by_cause
            .entry(key)
            .or_insert((first, Vec::new()))
            .1
            .push(g[0]);
        for &i in &g[1..] {
            if let Some(c) = top(&mut why, i) {
                by_cause
                    .entry(cause_key(&c))
                    .or_insert((c, Vec::new()))
                    .1
                    .push(i);
            }
        }
    }
    for ((code, node, _), (cause, mut cells)) in by_cause {
        if cells.len() < 2 {
            continue;
        }
        cells.sort_unstable();
        let stale = [
            CauseCode::StaleAllowlistAddress,
            CauseCode::PeerAddressChanged,
            CauseCode::StaleDns,
        ]
        .iter()
        .any(|c| c.as_str() == code);
        let kind = if stale {
            Kind::StaleAddress
        } else {
            Kind::SharedCause
        };
        let mut f = Finding::new(
            kind,
            70 + u32::try_from(cells.len().min(20)).unwrap_or(20),
            format!(
                "one cause, {} cells: {code} on {node} — {}",
                cells.len(),
                cause.detail
            ),
        );
        f.detail = format!(
            "{} failing cells share one top cause; fixing it should clear all of them",
            cells.len()
        );
        f.evidence = cause
            .evidence
            .iter()
            .map(|e| format!("{} ({}): {}", e.node, e.kind, e.text))
            .collect();
        f.fix = cause.fix.clone().unwrap_or_default();
        f.code = code;
        f.node = node;
        findings.push(bad.assign(f, &cells, nodes));
    }
    let stale_titles: Vec<String> = findings
        .iter()
        .filter(|f| f.kind == Kind::StaleAddress)
        .map(|f| f.title.clone())
        .collect();
    findings.extend(stale_findings(nodes, &stale_titles));
    let uncovered = bad.uncovered().len();
    report.uncovered_cells = u32::try_from(uncovered).unwrap_or(u32::MAX);
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.kind.cmp(&b.kind))
            .then_with(|| a.title.cmp(&b.title))
    });
    if why.refused > 0 && uncovered > 0 {
        let mut f = Finding::new(
            Kind::SharedCause,
            1,
            format!(
                "{uncovered} bad cell(s) not grouped here: the time for explaining them ran out after {} answers",
                why.asked
            ),
        );
        f.detail = "ask `reachmap why SRC DST:PORT` for any of them".into();
        findings.push(f);
    }
    report.findings = findings;
    report
}

/// Every former address of a node still named somewhere in the fleet.
/// `already`: the titles of the stale-address findings grouped from `why`,
/// which list the cells; an address one of them names is not repeated.
fn stale_findings(nodes: &BTreeMap<String, Node>, already: &[String]) -> Vec<Finding> {
    let held: Vec<std::net::IpAddr> = nodes
        .values()
        .flat_map(crate::state::probe_addresses)
        .collect();
    let mut out = Vec::new();
    for (name, n) in nodes {
        let current = crate::state::probe_addresses(n);
        for (old, when) in stale::former_addresses(n, &current, &held) {
            let refs = stale::references(nodes, name, old, current.first().copied());
            if refs.is_empty() {
                continue;
            }
            // A shared-cause finding about the same address already lists
            // the cells; this one lists where the address is still named.
            let old_text = old.to_string();
            if already
                .iter()
                .any(|title| title.contains(&format!("address {old_text} ")))
            {
                continue;
            }
            let mut f = Finding::new(
                Kind::StaleAddress,
                75,
                format!(
                    "{name}'s old address {old} is still named in {} place(s){}",
                    refs.len(),
                    since_text(when)
                ),
            );
            f.detail = format!(
                "{name} no longer has {old}{}; these still point at it",
                current
                    .first()
                    .map(|a| format!(" (it is at {a} now)"))
                    .unwrap_or_default()
            );
            f.evidence = refs.iter().map(|r| r.detail.clone()).collect();
            f.fix = refs
                .iter()
                .map(|r| r.fix.clone())
                .collect::<Vec<_>>()
                .join("; ");
            f.since = when;
            f.node = name.clone();
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
