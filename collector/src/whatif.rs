//! `reachmap what-if`: a change not yet made, evaluated against the live
//! fleet with the same packet evaluator `why` uses.
//!
//! - A proposed ruleset for NODE: every TCP cell into NODE (its receive path)
//!   and out of it (its send path) is evaluated with today's ruleset and
//!   with the proposed one; a cell whose verdict changes is a break or a
//!   fix, naming what would decide it, and a failing cell that would still
//!   be blocked is still broken.
//! - A proposed address change OLD=NEW of NODE: peers' rulesets are
//!   evaluated for NODE's traffic from (and to) NEW instead of OLD, and every
//!   reference to OLD in the fleet — allow-list rules, names resolving to
//!   it — is listed ([`crate::findings::stale`]).
//!
//! Pure over a copy of the fleet (`state::View`), made off the state task.

use crate::findings::stale;
use crate::model::NodeFacts;
use crate::model::firewall::Firewall;
use crate::packet::firewall::{Compiled, Decision, Final, PathKind};
use crate::probe::{CellState, Matrix, ProbeKind};
use crate::state::Node;
use crate::why::causes::firewall::{
    blocked, decided_by, inbound_packet, outbound_packet, source_address,
};
use reachmap_proto::v1 as pb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One cell whose answer the change touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellImpact {
    pub src: String,
    pub dst: String,
    pub port: u16,
    /// The cell's state today.
    pub state: String,
    /// "inbound" (into the node) or "outbound".
    pub direction: &'static str,
    pub verdict_now: &'static str,
    pub verdict_then: &'static str,
    /// What would decide it with the change.
    pub decided_by: String,
    pub detail: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Impact {
    pub node: String,
    pub breaks: Vec<CellImpact>,
    pub fixes: Vec<CellImpact>,
    pub still_broken: Vec<CellImpact>,
    pub stale: Vec<stale::Reference>,
    pub cells_checked: u32,
    pub notes: Vec<String>,
}

impl Impact {
    /// Whether anything would break: the exit status scripts gate on.
    pub fn breaks_something(&self) -> bool {
        !self.breaks.is_empty() || !self.stale.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhatIfError {
    #[error("no node named {0:?}")]
    NoSuchNode(String),
    #[error("{0}")]
    Bad(String),
}

fn verdict_word(d: &Decision) -> &'static str {
    match d.verdict {
        Final::Accept => "accept",
        Final::Drop => "drop",
        Final::Reject { .. } => "reject",
        Final::Unknown { .. } => "unknown",
    }
}

/// One side of a cell as the node's firewall sees it.
struct Side<'a> {
    direction: &'static str,
    facts: &'a NodeFacts,
    path: PathKind,
}

fn sort(v: &mut [CellImpact]) {
    v.sort_by(|a, b| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)));
}

/// A proposed ruleset for `node`, against every TCP cell into and out of it.
pub fn ruleset(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    node: &str,
    proposed: &Firewall,
) -> Result<Impact, WhatIfError> {
    let n = nodes
        .get(node)
        .ok_or_else(|| WhatIfError::NoSuchNode(node.to_string()))?;
    let facts = n.facts.as_ref().ok_or_else(|| {
        WhatIfError::Bad(format!("{node} has sent no facts yet: nothing to compare"))
    })?;
    let mut out = Impact {
        node: node.to_string(),
        ..Impact::default()
    };
    let current = match &facts.firewall {
        Some(fw) => Compiled::new(fw),
        None => {
            out.notes.push(format!(
                "{node}'s firewall is not known: today's verdicts are taken as accept"
            ));
            Compiled::new(&Firewall::default())
        }
    };
    let then = Compiled::new(proposed);
    let mut icmp = 0u32;
    for c in m.iter() {
        let side = if c.dst == node {
            Side {
                direction: "inbound",
                facts,
                path: PathKind::Receive,
            }
        } else if c.src == node {
            Side {
                direction: "outbound",
                facts,
                path: PathKind::Send,
            }
        } else {
            continue;
        };
        if c.cell.kind() == ProbeKind::Icmp {
            icmp += 1;
            continue;
        }
        let (src_addr, dst_addr) = match side.direction {
            "inbound" => (nodes.get(c.src).and_then(source_address), Some(c.address)),
            _ => (source_address(n), Some(c.address)),
        };
        let (Some(src_addr), Some(dst_addr)) = (src_addr, dst_addr) else {
            out.notes.push(format!(
                "{} -> {}:{}: the source's address is not known",
                c.src,
                c.dst,
                c.cell.port()
            ));
            continue;
        };
        let packet = match side.path {
            PathKind::Receive => inbound_packet(side.facts, src_addr, dst_addr, c.cell.port()),
            _ => outbound_packet(side.facts, src_addr, dst_addr, c.cell.port()),
        };
        let now = current.evaluate(&packet, side.path);
        let later = then.evaluate(&packet, side.path);
        out.cells_checked += 1;
        let state = c.cell.state();
        let impact = CellImpact {
            src: c.src.to_string(),
            dst: c.dst.to_string(),
            port: c.cell.port(),
            state: state.as_str().to_string(),
            direction: side.direction,
            verdict_now: verdict_word(&now),
            verdict_then: verdict_word(&later),
            decided_by: decided_by(&later),
            detail: format!(
                "{src_addr} -> {dst_addr}:{} {}: today {} by {}",
                c.cell.port(),
                side.direction,
                verdict_word(&now),
                decided_by(&now)
            ),
        };
        let blocked_now = blocked(&now).is_some();
        let blocked_then = blocked(&later).is_some();
        let failing = state == CellState::Failing;
        match (blocked_now, blocked_then) {
            (false, true) if !failing => out.breaks.push(impact),
            (true, false) if failing => out.fixes.push(impact),
            (_, true) if failing => out.still_broken.push(impact),
            (false, false) if failing => out.still_broken.push(CellImpact {
                detail: format!(
                    "{}; {node}'s firewall lets it through both ways, it fails for another reason (reachmap why {} {}:{})",
                    impact.detail, impact.src, impact.dst, impact.port
                ),
                ..impact
            }),
            _ => {}
        }
    }
    if icmp > 0 {
        out.notes.push(format!(
            "{icmp} ICMP cell(s) not evaluated: the evaluator checks TCP"
        ));
    }
    sort(&mut out.breaks);
    sort(&mut out.fixes);
    sort(&mut out.still_broken);
    Ok(out)
}

/// A proposed address change `old` → `new` of `node`: peers' firewalls for
/// its traffic from and to the new address, and every reference to the old
/// one.
pub fn address(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    node: &str,
    old: IpAddr,
    new: IpAddr,
) -> Result<Impact, WhatIfError> {
    let n = nodes
        .get(node)
        .ok_or_else(|| WhatIfError::NoSuchNode(node.to_string()))?;
    if old.is_ipv4() != new.is_ipv4() {
        return Err(WhatIfError::Bad(format!(
            "{old} and {new} are not of the same family"
        )));
    }
    let own = crate::state::probe_addresses(n);
    if !own.contains(&old) {
        return Err(WhatIfError::Bad(format!(
            "{old} is not an address of {node} (it has {})",
            own.iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut out = Impact {
        node: node.to_string(),
        ..Impact::default()
    };
    let compiled: BTreeMap<&str, Compiled> = nodes
        .iter()
        .filter_map(|(name, p)| {
            let fw = p.facts.as_ref()?.firewall.as_ref()?;
            Some((name.as_str(), Compiled::new(fw)))
        })
        .collect();
    for c in m.iter() {
        if c.cell.kind() == ProbeKind::Icmp || (c.src != node && c.dst != node) {
            continue;
        }
        // Outbound from the node: the peer's receive path sees the new
        // source. Inbound to the node at `old`: the peer's send path and
        // the node's own receive path see the new destination.
        let checks: Vec<(&str, PathKind, IpAddr, IpAddr, IpAddr, IpAddr)> = if c.src == node {
            let dst = c.address;
            vec![(c.dst, PathKind::Receive, old, dst, new, dst)]
        } else if c.address == old {
            let Some(src) = nodes.get(c.src).and_then(source_address) else {
                continue;
            };
            vec![
                (c.src, PathKind::Send, src, old, src, new),
                (node, PathKind::Receive, src, old, src, new),
            ]
        } else {
            continue;
        };
        out.cells_checked += 1;
        for (on, path, s0, d0, s1, d1) in checks {
            let (Some(fw), Some(facts)) = (
                compiled.get(on),
                nodes.get(on).and_then(|p| p.facts.as_ref()),
            ) else {
                continue;
            };
            let packet = |s, d| match path {
                PathKind::Receive => inbound_packet(facts, s, d, c.cell.port()),
                _ => outbound_packet(facts, s, d, c.cell.port()),
            };
            let now = fw.evaluate(&packet(s0, d0), path);
            let mut then_packet = packet(s1, d1);
            if on == node {
                // The node holds the new address once it changes.
                then_packet.local_addrs.retain(|a| *a != old);
                then_packet.local_addrs.push(new);
            }
            let later = fw.evaluate(&then_packet, path);
            if blocked(&now).is_none() && blocked(&later).is_some() {
                out.breaks.push(CellImpact {
                    src: c.src.to_string(),
                    dst: c.dst.to_string(),
                    port: c.cell.port(),
                    state: c.cell.state().as_str().to_string(),
                    direction: if c.src == node { "outbound" } else { "inbound" },
                    verdict_now: verdict_word(&now),
                    verdict_then: verdict_word(&later),
                    decided_by: decided_by(&later),
                    detail: format!(
                        "{on}'s firewall lets {s0} -> {d0}:{} through today by {}, and would {} {s1} -> {d1}:{}",
                        c.cell.port(),
                        decided_by(&now),
                        verdict_word(&later),
                        c.cell.port()
                    ),
                });
                break;
            }
        }
    }
    out.stale = stale::references(nodes, node, old, Some(new));
    sort(&mut out.breaks);
    Ok(out)
}

/// A ruleset and address changes together: their impacts merged.
pub fn evaluate(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    node: &str,
    proposed: Option<&Firewall>,
    addresses: &[(IpAddr, IpAddr)],
) -> Result<Impact, WhatIfError> {
    let mut out = match proposed {
        Some(fw) => ruleset(m, nodes, node, fw)?,
        None => Impact {
            node: node.to_string(),
            ..Impact::default()
        },
    };
    for (old, new) in addresses {
        let a = address(m, nodes, node, *old, *new)?;
        out.breaks.extend(a.breaks);
        out.stale.extend(a.stale);
        out.cells_checked += a.cells_checked;
        out.notes.extend(a.notes);
    }
    sort(&mut out.breaks);
    Ok(out)
}

fn cell_pb(c: &CellImpact) -> pb::WhatIfCell {
    pb::WhatIfCell {
        src: c.src.clone(),
        dst: c.dst.clone(),
        port: u32::from(c.port),
        state: c.state.clone(),
        direction: c.direction.to_string(),
        verdict_now: c.verdict_now.to_string(),
        verdict_then: c.verdict_then.to_string(),
        decided_by: c.decided_by.clone(),
        detail: c.detail.clone(),
    }
}

pub fn to_pb(i: &Impact) -> pb::WhatIfResponse {
    pb::WhatIfResponse {
        node: i.node.clone(),
        breaks: i.breaks.iter().map(cell_pb).collect(),
        fixes: i.fixes.iter().map(cell_pb).collect(),
        still_broken: i.still_broken.iter().map(cell_pb).collect(),
        stale: i
            .stale
            .iter()
            .map(|r| pb::StaleReference {
                kind: r.kind.to_string(),
                node: r.node.clone(),
                detail: r.detail.clone(),
                fix: r.fix.clone(),
            })
            .collect(),
        cells_checked: i.cells_checked,
        notes: i.notes.clone(),
    }
}

#[cfg(test)]
#[path = "whatif_tests.rs"]
mod tests;
