//! A node's ruleset from the wire: every match value is parsed here, so the
//! rest of the collector works on addresses, prefixes and port ranges.

use super::{ProtocolError, err, text};
use crate::model::firewall::{
    Chain, Field, Firewall, FirewallPatch, Match, Rule, Set, Table, TableKey, TablePatch, Value,
    Verdict, VerdictKind,
};
use reachmap_proto::v1 as pb;
use std::net::IpAddr;

pub const MAX_RULES: usize = 200_000;
pub const MAX_SET_ELEMENTS: usize = 1_000_000;
const MAX_NAME: usize = 256;
use reachmap_proto::MAX_RULE_TEXT;

fn field(f: &str, raw: i32) -> Result<Field, ProtocolError> {
    use pb::MatchField as M;
    Ok(match M::try_from(raw) {
        Ok(M::SourceAddress) => Field::SourceAddress,
        Ok(M::DestinationAddress) => Field::DestinationAddress,
        Ok(M::Protocol) => Field::Protocol,
        Ok(M::SourcePort) => Field::SourcePort,
        Ok(M::DestinationPort) => Field::DestinationPort,
        Ok(M::InInterface) => Field::InInterface,
        Ok(M::OutInterface) => Field::OutInterface,
        Ok(M::CtState) => Field::CtState,
        Ok(M::AddressFamily) => Field::AddressFamily,
        Ok(M::IcmpType) => Field::IcmpType,
        Ok(M::DestinationAddressType) => Field::DestinationAddressType,
        Ok(M::Other) => Field::Other,
        _ => return Err(err(f, format!("unknown match field {raw}"))),
    })
}

fn verdict_kind(f: &str, raw: i32) -> Result<VerdictKind, ProtocolError> {
    use pb::VerdictKind as V;
    Ok(match V::try_from(raw) {
        Ok(V::Continue) => VerdictKind::Continue,
        Ok(V::Accept) => VerdictKind::Accept,
        Ok(V::Drop) => VerdictKind::Drop,
        Ok(V::Reject) => VerdictKind::Reject,
        Ok(V::Jump) => VerdictKind::Jump,
        Ok(V::Goto) => VerdictKind::Goto,
        Ok(V::Return) => VerdictKind::Return,
        Ok(V::Dnat) => VerdictKind::Dnat,
        Ok(V::Snat) => VerdictKind::Snat,
        Ok(V::Masquerade) => VerdictKind::Masquerade,
        Ok(V::Redirect) => VerdictKind::Redirect,
        Ok(V::Queue) => VerdictKind::Queue,
        Ok(V::Other) => VerdictKind::Other,
        _ => return Err(err(f, format!("unknown verdict {raw}"))),
    })
}

fn address(f: &str, s: &str) -> Result<IpAddr, ProtocolError> {
    s.parse()
        .map_err(|_| err(f, format!("{s:?} is not an address, prefix, range or @set")))
}

/// An address value: `a`, `a/n`, `a-b` or `@set`.
pub fn address_value(f: &str, s: &str) -> Result<Value, ProtocolError> {
    if let Some(name) = s.strip_prefix('@') {
        return Ok(Value::SetRef(text(f, name, MAX_NAME)?));
    }
    if let Some((ip, len)) = s.split_once('/') {
        let ip = address(f, ip)?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| err(f, format!("{s:?} has a bad prefix length")))?;
        return Ok(Value::Prefix { ip, len });
    }
    if let Some((a, b)) = s.split_once('-') {
        let (first, last) = (address(f, a)?, address(f, b)?);
        if first.is_ipv4() != last.is_ipv4() || first > last {
            return Err(err(f, format!("{s:?} is not an address range")));
        }
        return Ok(Value::AddressRange { first, last });
    }
    let ip = address(f, s)?;
    Ok(Value::Prefix {
        ip,
        len: if ip.is_ipv4() { 32 } else { 128 },
    })
}

/// A port value: `p`, `a-b` or `@set`.
pub fn port_value(f: &str, s: &str) -> Result<Value, ProtocolError> {
    if let Some(name) = s.strip_prefix('@') {
        return Ok(Value::SetRef(text(f, name, MAX_NAME)?));
    }
    let bad = || err(f, format!("{s:?} is not a port, port range or @set"));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    Ok(Value::Ports { first, last })
}

fn value(f: &str, field: Field, s: &str) -> Result<Value, ProtocolError> {
    if field.is_address() {
        address_value(f, s)
    } else if field.is_port() {
        port_value(f, s)
    } else if let Some(name) = s.strip_prefix('@') {
        Ok(Value::SetRef(text(f, name, MAX_NAME)?))
    } else {
        Ok(Value::Text(text(f, s, MAX_RULE_TEXT)?))
    }
}

/// A set element: an address form when it parses as one, a port form when
/// it parses as one, text otherwise (sets of interfaces, marks, ...).
fn element(f: &str, s: &str) -> Result<Value, ProtocolError> {
    if let Ok(v) = address_value(f, s) {
        return Ok(v);
    }
    if let Ok(v) = port_value(f, s) {
        return Ok(v);
    }
    Ok(Value::Text(text(f, s, MAX_NAME)?))
}

fn optional(f: &str, s: &str, max: usize) -> Result<Option<String>, ProtocolError> {
    let t = text(f, s, max)?;
    Ok(if t.is_empty() { None } else { Some(t) })
}

fn rule(f: &str, r: &pb::FirewallRule) -> Result<Rule, ProtocolError> {
    let mut matches = Vec::with_capacity(r.matches.len());
    for (n, m) in r.matches.iter().enumerate() {
        let mf = format!("{f}.matches[{n}]");
        let fld = field(&format!("{mf}.field"), m.field)?;
        let values = m
            .values
            .iter()
            .enumerate()
            .map(|(k, v)| value(&format!("{mf}.values[{k}]"), fld, v))
            .collect::<Result<Vec<_>, _>>()?;
        matches.push(Match {
            field: fld,
            negated: m.negated,
            values,
        });
    }
    let v = r.verdict.clone().unwrap_or_default();
    let kind = if v.kind == 0 {
        VerdictKind::Continue
    } else {
        verdict_kind(&format!("{f}.verdict.kind"), v.kind)?
    };
    let target = optional(&format!("{f}.verdict.target"), &v.target, MAX_NAME)?;
    if matches!(kind, VerdictKind::Jump | VerdictKind::Goto) && target.is_none() {
        return Err(err(format!("{f}.verdict.target"), "jump without a chain"));
    }
    let port = match v.port {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| err(format!("{f}.verdict.port"), format!("{p} is over 65535")))?,
        ),
    };
    Ok(Rule {
        handle: (r.handle != 0).then_some(r.handle),
        position: r.position,
        matches,
        verdict: Verdict { kind, target, port },
        packets: r.packets,
        bytes: r.bytes,
        comment: optional(&format!("{f}.comment"), &r.comment, MAX_RULE_TEXT)?,
        text: text(&format!("{f}.text"), &r.text, MAX_RULE_TEXT)?,
        unsupported: r.unsupported,
    })
}

/// Counts rules and set elements across a message against the limits.
#[derive(Default)]
struct Budget {
    rules: usize,
    elements: usize,
}

fn chain(cf: &str, chain: &pb::FirewallChain, budget: &mut Budget) -> Result<Chain, ProtocolError> {
    budget.rules += chain.rules.len();
    if budget.rules > MAX_RULES {
        return Err(err(
            format!("{cf}.rules"),
            format!("more than {MAX_RULES} rules"),
        ));
    }
    let rules = chain
        .rules
        .iter()
        .enumerate()
        .map(|(n, r)| rule(&format!("{cf}.rules[{n}]"), r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Chain {
        name: text(&format!("{cf}.name"), &chain.name, MAX_NAME)?,
        hook: optional(&format!("{cf}.hook"), &chain.hook, 32)?,
        chain_type: optional(&format!("{cf}.type"), &chain.r#type, 32)?,
        priority: chain.priority,
        policy: optional(&format!("{cf}.policy"), &chain.policy, 32)?,
        rules,
    })
}

fn set(sf: &str, set: &pb::FirewallSet, budget: &mut Budget) -> Result<Set, ProtocolError> {
    budget.elements += set.elements.len();
    if budget.elements > MAX_SET_ELEMENTS {
        return Err(err(
            format!("{sf}.elements"),
            format!("more than {MAX_SET_ELEMENTS} set elements"),
        ));
    }
    Ok(Set {
        name: text(&format!("{sf}.name"), &set.name, MAX_NAME)?,
        set_type: text(&format!("{sf}.type"), &set.r#type, MAX_NAME)?,
        elements: set
            .elements
            .iter()
            .enumerate()
            .map(|(n, e)| element(&format!("{sf}.elements[{n}]"), e))
            .collect::<Result<Vec<_>, _>>()?,
    })
}

fn chains(
    f: &str,
    list: &[pb::FirewallChain],
    budget: &mut Budget,
) -> Result<Vec<Chain>, ProtocolError> {
    list.iter()
        .enumerate()
        .map(|(c, ch)| chain(&format!("{f}[{c}]"), ch, budget))
        .collect()
}

fn sets(f: &str, list: &[pb::FirewallSet], budget: &mut Budget) -> Result<Vec<Set>, ProtocolError> {
    list.iter()
        .enumerate()
        .map(|(s, st)| set(&format!("{f}[{s}]"), st, budget))
        .collect()
}

pub fn firewall(f: &str, fw: &pb::Firewall) -> Result<Firewall, ProtocolError> {
    let mut budget = Budget::default();
    let mut tables = Vec::with_capacity(fw.tables.len());
    for (t, table) in fw.tables.iter().enumerate() {
        let tf = format!("{f}.tables[{t}]");
        tables.push(Table {
            family: text(&format!("{tf}.family"), &table.family, 16)?,
            name: text(&format!("{tf}.name"), &table.name, MAX_NAME)?,
            backend: text(&format!("{tf}.backend"), &table.backend, 32)?,
            chains: chains(&format!("{tf}.chains"), &table.chains, &mut budget)?,
            sets: sets(&format!("{tf}.sets"), &table.sets, &mut budget)?,
        });
    }
    Ok(Firewall {
        backend: text(&format!("{f}.backend"), &fw.backend, 32)?,
        generation: fw.generation,
        hash: fw.hash,
        tables,
        error: optional(&format!("{f}.error"), &fw.error, MAX_RULE_TEXT)?,
    })
}

/// A chain-level change. Whether it applies to the collector's copy is
/// for `Firewall::check_patch` to say: that needs the copy.
pub fn patch(f: &str, p: &pb::FirewallPatch) -> Result<FirewallPatch, ProtocolError> {
    let mut budget = Budget::default();
    let key = |kf: &str, family: &str, name: &str| -> Result<TableKey, ProtocolError> {
        Ok(TableKey {
            family: text(&format!("{kf}.family"), family, 16)?,
            name: text(&format!("{kf}.name"), name, MAX_NAME)?,
        })
    };
    let tables = p
        .tables
        .iter()
        .enumerate()
        .map(|(n, t)| key(&format!("{f}.tables[{n}]"), &t.family, &t.name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut patches = Vec::with_capacity(p.patches.len());
    for (n, t) in p.patches.iter().enumerate() {
        let tf = format!("{f}.patches[{n}]");
        let table = key(&tf, &t.family, &t.name)?;
        if !tables.contains(&table) {
            return Err(err(
                tf,
                format!(
                    "patches table {} {}, which the ruleset does not list",
                    table.family, table.name
                ),
            ));
        }
        patches.push(TablePatch {
            table,
            backend: text(&format!("{tf}.backend"), &t.backend, 32)?,
            chains: chains(&format!("{tf}.chains"), &t.chains, &mut budget)?,
            chain_order: t
                .reordered
                .then(|| {
                    t.chain_order
                        .iter()
                        .enumerate()
                        .map(|(c, name)| text(&format!("{tf}.chain_order[{c}]"), name, MAX_NAME))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?,
            sets: t
                .sets_replaced
                .then(|| sets(&format!("{tf}.sets"), &t.sets, &mut budget))
                .transpose()?,
        });
    }
    Ok(FirewallPatch {
        base_hash: p.base_hash,
        backend: text(&format!("{f}.backend"), &p.backend, 32)?,
        generation: p.generation,
        hash: p.hash,
        tables,
        patches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_by_field() {
        assert_eq!(
            address_value("f", "198.18.0.0/24").expect("prefix"),
            Value::Prefix {
                ip: "198.18.0.0".parse().expect("ip"),
                len: 24
            }
        );
        assert!(matches!(
            address_value("f", "198.18.0.1-198.18.0.9"),
            Ok(Value::AddressRange { .. })
        ));
        assert_eq!(
            port_value("f", "80-90").expect("range"),
            Value::Ports {
                first: 80,
                last: 90
            }
        );
        assert_eq!(
            port_value("f", "@web").expect("set"),
            Value::SetRef("web".into())
        );
        assert!(address_value("f", "198.18.0.0/33").is_err());
        assert!(address_value("f", "198.18.0.9-198.18.0.1").is_err());
        assert!(port_value("f", "70000").is_err());
        assert!(port_value("f", "90-80").is_err());
        assert_eq!(
            port_value("rule.matches[0].values[1]", "x")
                .expect_err("bad")
                .field,
            "rule.matches[0].values[1]"
        );
    }

    #[test]
    fn a_rule_round_trips_its_text_and_verdict() {
        let fw = pb::Firewall {
            backend: "nftables".into(),
            tables: vec![pb::FirewallTable {
                family: "inet".into(),
                name: "filter".into(),
                chains: vec![pb::FirewallChain {
                    name: "input".into(),
                    hook: "input".into(),
                    r#type: "filter".into(),
                    priority: Some(0),
                    policy: "drop".into(),
                    rules: vec![pb::FirewallRule {
                        handle: 4,
                        position: 1,
                        matches: vec![pb::RuleMatch {
                            field: pb::MatchField::DestinationPort as i32,
                            negated: false,
                            values: vec!["22".into(), "80-90".into()],
                        }],
                        verdict: Some(pb::RuleVerdict {
                            kind: pb::VerdictKind::Accept as i32,
                            ..Default::default()
                        }),
                        text: "tcp dport { 22, 80-90 } accept".into(),
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let parsed = firewall("snapshot.firewall", &fw).expect("valid");
        assert_eq!(parsed.rule_count(), 1);
        let rule = &parsed.tables[0].chains[0].rules[0];
        assert_eq!(rule.verdict.kind, VerdictKind::Accept);
        assert_eq!(rule.matches[0].values.len(), 2);

        let mut bad = fw.clone();
        bad.tables[0].chains[0].rules[0].verdict = Some(pb::RuleVerdict {
            kind: pb::VerdictKind::Jump as i32,
            ..Default::default()
        });
        assert_eq!(
            firewall("snapshot.firewall", &bad)
                .expect_err("jump without chain")
                .field,
            "snapshot.firewall.tables[0].chains[0].rules[0].verdict.target"
        );
    }
}
