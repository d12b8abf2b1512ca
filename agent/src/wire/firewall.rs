//! The normalised ruleset as protocol messages.

use crate::facts::firewall::{
    AddrItem, AddrSet, Backend, Chain, ChainType, CtState, Family, Hook, Match, Policy, PortRange,
    PortSet, Rule, RuleVerdict, Ruleset, Set, SetElement, Table,
};
use reachmap_proto::v1 as pb;
use reachmap_proto::{MAX_RULE_TEXT, clip};
use std::collections::HashMap;
use std::sync::Arc;

pub fn backend(b: Backend) -> &'static str {
    match b {
        Backend::Nftables => "nftables",
        Backend::IptablesLegacy => "iptables-legacy",
        Backend::IptablesNft => "iptables-nft",
    }
}

pub fn backends(r: &Ruleset) -> String {
    if r.backends.is_empty() {
        return "none".into();
    }
    r.backends
        .iter()
        .map(|b| backend(*b))
        .collect::<Vec<_>>()
        .join("+")
}

fn family(f: Family) -> &'static str {
    f.nft_name()
}

fn hook(h: Hook) -> &'static str {
    match h {
        Hook::Ingress => "ingress",
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
        Hook::Egress => "egress",
    }
}

fn chain_type(t: ChainType) -> &'static str {
    match t {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
        ChainType::Route => "route",
    }
}

fn ct_state(s: CtState) -> &'static str {
    match s {
        CtState::New => "new",
        CtState::Established => "established",
        CtState::Related => "related",
        CtState::Invalid => "invalid",
        CtState::Untracked => "untracked",
        CtState::Snat => "snat",
        CtState::Dnat => "dnat",
    }
}

fn addr_item(a: &AddrItem) -> String {
    match a {
        AddrItem::Prefix { addr, len } => format!("{addr}/{len}"),
        AddrItem::Range { from, to } => format!("{from}-{to}"),
    }
}

fn port_range(p: &PortRange) -> String {
    if p.from == p.to {
        p.from.to_string()
    } else {
        format!("{}-{}", p.from, p.to)
    }
}

fn addr_set(s: &AddrSet) -> Vec<String> {
    match s {
        AddrSet::Literal(items) => items.iter().map(addr_item).collect(),
        AddrSet::Named(n) => vec![format!("@{n}")],
    }
}

fn port_set(s: &PortSet) -> Vec<String> {
    match s {
        PortSet::Literal(items) => items.iter().map(port_range).collect(),
        PortSet::Named(n) => vec![format!("@{n}")],
    }
}

fn rule_match(m: &Match) -> pb::RuleMatch {
    use pb::MatchField as F;
    let (field, negated, values) = match m {
        Match::SourceAddr { negated, set } => (F::SourceAddress, *negated, addr_set(set)),
        Match::DestAddr { negated, set } => (F::DestinationAddress, *negated, addr_set(set)),
        Match::Protocol { negated, protos } => (F::Protocol, *negated, protos.clone()),
        Match::SourcePort { negated, ports } => (F::SourcePort, *negated, port_set(ports)),
        Match::DestPort { negated, ports } => (F::DestinationPort, *negated, port_set(ports)),
        Match::InInterface { negated, names } => (F::InInterface, *negated, names.clone()),
        Match::OutInterface { negated, names } => (F::OutInterface, *negated, names.clone()),
        Match::CtState { negated, states } => (
            F::CtState,
            *negated,
            states.iter().map(|s| ct_state(*s).to_string()).collect(),
        ),
        Match::AddrType {
            destination: true,
            negated,
            types,
        } => (F::DestinationAddressType, *negated, types.clone()),
        Match::AddrType {
            destination: false,
            negated,
            types,
        } => (
            F::Other,
            false,
            vec![format!(
                "{}src-type {}",
                if *negated { "! " } else { "" },
                types.join(",")
            )],
        ),
        Match::Other(text) => (F::Other, false, vec![text.clone()]),
    };
    pb::RuleMatch {
        field: field as i32,
        negated,
        values,
    }
}

fn nat_target(addr: &Option<std::net::IpAddr>, port: &Option<PortRange>) -> (String, u32) {
    (
        addr.map(|a| a.to_string()).unwrap_or_default(),
        port.map(|p| u32::from(p.from)).unwrap_or(0),
    )
}

fn verdict(v: &Option<RuleVerdict>) -> pb::RuleVerdict {
    use pb::VerdictKind as K;
    let simple = |kind: K| (kind, String::new(), 0u32);
    let (kind, target, port) = match v {
        None => simple(K::Continue),
        Some(RuleVerdict::Accept) => simple(K::Accept),
        Some(RuleVerdict::Drop) => simple(K::Drop),
        Some(RuleVerdict::Reject { with }) => (K::Reject, with.clone().unwrap_or_default(), 0),
        Some(RuleVerdict::Return) => simple(K::Return),
        Some(RuleVerdict::Continue) | Some(RuleVerdict::Log { .. }) => simple(K::Continue),
        Some(RuleVerdict::Jump { chain }) => (K::Jump, chain.clone(), 0),
        Some(RuleVerdict::Goto { chain }) => (K::Goto, chain.clone(), 0),
        Some(RuleVerdict::Dnat { addr, port }) => {
            let (t, p) = nat_target(addr, port);
            (K::Dnat, t, p)
        }
        Some(RuleVerdict::Snat { addr, port }) => {
            let (t, p) = nat_target(addr, port);
            (K::Snat, t, p)
        }
        Some(RuleVerdict::Masquerade) => simple(K::Masquerade),
        Some(RuleVerdict::Redirect { port }) => (
            K::Redirect,
            String::new(),
            port.map(|p| u32::from(p.from)).unwrap_or(0),
        ),
        Some(RuleVerdict::Queue) => simple(K::Queue),
        Some(RuleVerdict::Other(text)) => (K::Other, text.clone(), 0),
    };
    pb::RuleVerdict {
        kind: kind as i32,
        target,
        port,
    }
}

fn rule(r: &Rule) -> pb::FirewallRule {
    pb::FirewallRule {
        handle: r.handle.unwrap_or(0),
        position: r.position,
        matches: r.matches.iter().map(rule_match).collect(),
        verdict: Some(verdict(&r.verdict)),
        packets: r.counter.map(|c| c.packets),
        bytes: r.counter.map(|c| c.bytes),
        comment: r
            .comment
            .as_deref()
            .map(|c| clip(c, MAX_RULE_TEXT).into_owned())
            .unwrap_or_default(),
        text: clip(&r.text, MAX_RULE_TEXT).into_owned(),
        unsupported: r.unsupported,
    }
}

fn element(e: &SetElement) -> String {
    match e {
        SetElement::Addr(a) => addr_item(a),
        SetElement::Ports(p) => port_range(p),
        SetElement::Other(t) => t.clone(),
    }
}

pub fn rule_count(r: &Ruleset) -> u32 {
    let n: usize = r
        .tables
        .iter()
        .flat_map(|t| &t.chains)
        .map(|c| c.rules.len())
        .sum();
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn firewall(r: &Ruleset) -> pb::Firewall {
    pb::Firewall {
        tables: r
            .tables
            .iter()
            .map(|t| pb::FirewallTable {
                chains: t.chains.iter().map(|c| chain(c)).collect(),
                ..table_head(t)
            })
            .collect(),
        ..firewall_head(r)
    }
}

/// The ruleset's own fields, without its tables.
pub fn firewall_head(r: &Ruleset) -> pb::Firewall {
    pb::Firewall {
        backend: backends(r),
        generation: r.generation,
        hash: r.hash,
        error: String::new(),
        tables: Vec::new(),
    }
}

/// A table's own fields and its sets, without its chains.
pub fn table_head(t: &Table) -> pb::FirewallTable {
    pb::FirewallTable {
        family: family(t.family).into(),
        name: t.name.clone(),
        backend: backend(t.backend).into(),
        chains: Vec::new(),
        sets: t.sets.iter().map(set).collect(),
    }
}

pub fn chain(c: &Chain) -> pb::FirewallChain {
    pb::FirewallChain {
        name: c.name.clone(),
        hook: c.hook.map(hook).unwrap_or_default().into(),
        r#type: c.chain_type.map(chain_type).unwrap_or_default().into(),
        priority: c.priority,
        policy: match c.policy {
            Some(Policy::Accept) => "accept",
            Some(Policy::Drop) => "drop",
            None => "",
        }
        .into(),
        rules: c.rules.iter().map(rule).collect(),
    }
}

fn set(s: &Set) -> pb::FirewallSet {
    pb::FirewallSet {
        name: s.name.clone(),
        r#type: s.key_type.join(" . "),
        elements: s.elements.iter().map(element).collect(),
    }
}

/// The change from `old` to `new` as the chains it touched: what a Delta
/// carries instead of the whole of `new`. Chains are compared by their
/// content hash, so a chain read again unchanged is not sent.
pub fn patch(old: &Ruleset, new: &Ruleset) -> pb::FirewallPatch {
    let mut patches = Vec::new();
    for t in &new.tables {
        let before = old
            .tables
            .iter()
            .find(|o| o.family == t.family && o.name == t.name);
        if let Some(p) = table_patch(before, t) {
            patches.push(p);
        }
    }
    pb::FirewallPatch {
        base_hash: old.hash,
        backend: backends(new),
        generation: new.generation,
        hash: new.hash,
        tables: new
            .tables
            .iter()
            .map(|t| pb::FirewallTableKey {
                family: family(t.family).into(),
                name: t.name.clone(),
            })
            .collect(),
        patches,
    }
}

/// `None` when `new` is `old` unchanged.
fn table_patch(old: Option<&Table>, new: &Table) -> Option<pb::FirewallTablePatch> {
    let mut p = pb::FirewallTablePatch {
        family: family(new.family).into(),
        name: new.name.clone(),
        backend: backend(new.backend).into(),
        ..Default::default()
    };
    let Some(old) = old else {
        p.chains = new.chains.iter().map(|c| chain(c)).collect();
        p.sets_replaced = true;
        p.sets = new.sets.iter().map(set).collect();
        return Some(p);
    };
    let same =
        |a: &Arc<Chain>, b: &Arc<Chain>| Arc::ptr_eq(a, b) || a.content_hash() == b.content_hash();
    let in_place = old.chains.len() == new.chains.len()
        && old
            .chains
            .iter()
            .zip(&new.chains)
            .all(|(a, b)| a.name == b.name);
    if in_place {
        p.chains = old
            .chains
            .iter()
            .zip(&new.chains)
            .filter(|(a, b)| !same(a, b))
            .map(|(_, b)| chain(b))
            .collect();
    } else {
        let by_name: HashMap<&str, &Arc<Chain>> =
            old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
        p.chains = new
            .chains
            .iter()
            .filter(|c| by_name.get(c.name.as_str()).is_none_or(|o| !same(o, c)))
            .map(|c| chain(c))
            .collect();
        p.reordered = true;
        p.chain_order = new.chains.iter().map(|c| c.name.clone()).collect();
    }
    if old.sets != new.sets {
        p.sets_replaced = true;
        p.sets = new.sets.iter().map(set).collect();
    }
    let unchanged =
        p.chains.is_empty() && !p.reordered && !p.sets_replaced && old.backend == new.backend;
    (!unchanged).then_some(p)
}

/// A ruleset that could not be read: the error travels instead of tables.
pub fn unreadable(error: &str) -> pb::Firewall {
    pb::Firewall {
        backend: "none".into(),
        error: error.chars().take(1024).collect(),
        ..Default::default()
    }
}
