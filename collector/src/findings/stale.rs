//! References to one node's address anywhere in the fleet: firewall rules
//! naming it (an allow-list, directly or through a named set) and the
//! fleet's names resolving to it. After the address changed they are
//! stale; before (`what-if --address`) they are what would go stale.

use crate::model::firewall::{Match, Rule, Table, Value};
use crate::packet::firewall::RuleRef;
use crate::state::Node;
use crate::why::causes::firewall::rule_place;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One place that names the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// "allow_list" (a firewall rule) or "name" (a name resolving to it).
    pub kind: &'static str,
    /// The node it is on.
    pub node: String,
    pub detail: String,
    pub fix: String,
}

fn is_exactly(v: &Value, addr: IpAddr) -> bool {
    match v {
        Value::Prefix { ip, len } => *ip == addr && u32::from(*len) == full_len(addr),
        Value::AddressRange { first, last } => *first == addr && *last == addr,
        _ => false,
    }
}

fn full_len(a: IpAddr) -> u32 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// Whether `m` names `addr` itself (not a wider prefix): directly, or
/// through a set of `table` holding it.
fn names_address(m: &Match, table: &Table, addr: IpAddr) -> Option<String> {
    if !m.field.is_address() || m.negated {
        return None;
    }
    for v in &m.values {
        if is_exactly(v, addr) {
            return Some(String::new());
        }
        if let Value::SetRef(name) = v
            && table
                .sets
                .iter()
                .any(|s| &s.name == name && s.elements.iter().any(|e| is_exactly(e, addr)))
        {
            return Some(format!(" (through set @{name})"));
        }
    }
    None
}

fn rule_ref(t: &Table, chain: &str, r: &Rule) -> RuleRef {
    RuleRef {
        family: t.family.clone(),
        table: t.name.clone(),
        backend: t.backend.clone(),
        chain: chain.to_string(),
        handle: r.handle,
        position: r.position,
        text: r.text.clone(),
        comment: r.comment.clone(),
    }
}

/// Every rule and name in the fleet that names `owner`'s address `old`.
/// `new`, when known, goes into the fixes.
pub fn references(
    nodes: &BTreeMap<String, Node>,
    owner: &str,
    old: IpAddr,
    new: Option<IpAddr>,
) -> Vec<Reference> {
    let with = new.map_or_else(|| format!("{owner}'s current address"), |n| n.to_string());
    let mut out = Vec::new();
    for (name, n) in nodes {
        if let Some(fw) = n.facts.as_ref().and_then(|f| f.firewall.as_ref()) {
            for t in &fw.tables {
                for c in &t.chains {
                    for r in &c.rules {
                        let Some(via) = r.matches.iter().find_map(|m| names_address(m, t, old))
                        else {
                            continue;
                        };
                        let place = rule_place(&rule_ref(t, &c.name, r));
                        out.push(Reference {
                            kind: "allow_list",
                            node: name.clone(),
                            detail: format!(
                                "{name}'s rule `{}` ({place}) names {owner}'s address {old}{via}",
                                r.text
                            ),
                            fix: format!(
                                "replace {old} with {with} in that rule{via} on {name}, or name {owner} by something that follows it"
                            ),
                        });
                    }
                }
            }
        }
        for r in n.names.iter().filter(|r| r.node == owner) {
            if r.addresses.contains(&old) {
                out.push(Reference {
                    kind: "name",
                    node: name.clone(),
                    detail: format!("{} resolves to {old} on {name}", r.name),
                    fix: format!(
                        "point {} at {with} in DNS (or /etc/hosts on {name})",
                        r.name
                    ),
                });
            }
        }
    }
    out
}

/// Addresses `n` had and no longer has, newest first, from its address
/// events; an address another node now holds is not "former".
pub fn former_addresses(n: &Node, current: &[IpAddr], held: &[IpAddr]) -> Vec<(IpAddr, i64)> {
    use reachmap_proto::v1::event::Kind;
    let mut out: Vec<(IpAddr, i64)> = Vec::new();
    for e in n.events.iter().rev() {
        let Some(Kind::AddressChanged(a)) = &e.event.kind else {
            continue;
        };
        let Some(ip) = a.removed.as_ref().and_then(|r| r.ip.parse::<IpAddr>().ok()) else {
            continue;
        };
        if current.contains(&ip) || held.contains(&ip) || out.iter().any(|(x, _)| *x == ip) {
            continue;
        }
        if ip.is_loopback() || ip.is_unspecified() {
            continue;
        }
        out.push((ip, e.event.time_unix_nanos));
    }
    out
}
