//! `nft -j list ruleset` into the firewall model. Pure: JSON text in, tables out.
//!
//! The document is read element by element with the nftables crate's types,
//! and each rule statement on its own, so a statement that crate (or this
//! model) does not know costs one `Match::Other` / `RuleVerdict::Other`, not
//! the whole ruleset.

use super::FirewallError;
use super::iptables::parse_prefix;
use crate::facts::firewall::{
    AddrItem, AddrSet, Backend, Chain, ChainType, Counter, CtState, Family, Hook, Match, Policy,
    PortRange, PortSet, Rule, RuleVerdict, Set, SetElement, Table,
};
use nftables::expr::{Expression, FibFlag, FibResult, MetaKey, NamedExpression, Payload};
use nftables::stmt::{Counter as NftCounter, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;

/// All tables of one `nft -j list ruleset` document, in listing order.
pub fn parse_nft_json(json: &str) -> Result<Vec<Table>, FirewallError> {
    // The document is split into its elements as raw text first and each
    // element parsed on its own: a whole ruleset as one `Value` tree costs
    // ten times its text in memory, one element at a time almost nothing.
    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        nftables: Option<Vec<&'a serde_json::value::RawValue>>,
    }
    let doc: Doc = serde_json::from_str(json).map_err(|e| FirewallError::Json(e.to_string()))?;
    let objects = doc
        .nftables
        .ok_or_else(|| doc_err("no top-level \"nftables\" array"))?;
    let mut tables: Vec<Table> = Vec::new();
    for raw in objects {
        let obj: Value =
            serde_json::from_str(raw.get()).map_err(|e| FirewallError::Json(e.to_string()))?;
        let Some((kind, body)) = obj.as_object().and_then(|o| o.iter().next()) else {
            return Err(doc_err("an element of \"nftables\" is not an object"));
        };
        match kind.as_str() {
            "table" => {
                let t = nftables::schema::Table::deserialize(body)
                    .map_err(|e| doc_err(format!("table: {e}")))?;
                tables.push(Table {
                    family: family(t.family),
                    name: t.name.into_owned(),
                    backend: Backend::Nftables,
                    chains: Vec::new(),
                    sets: Vec::new(),
                });
            }
            "chain" => {
                let c = nftables::schema::Chain::deserialize(body)
                    .map_err(|e| doc_err(format!("chain: {e}")))?;
                let table = find_table(&mut tables, family(c.family), &c.table)?;
                table.chains.push(Arc::new(Chain {
                    name: c.name.into_owned(),
                    hook: c.hook.map(hook),
                    chain_type: c._type.map(|t| match t {
                        NfChainType::Filter => ChainType::Filter,
                        NfChainType::NAT => ChainType::Nat,
                        NfChainType::Route => ChainType::Route,
                    }),
                    priority: c.prio,
                    policy: c.policy.map(|p| match p {
                        NfChainPolicy::Accept => Policy::Accept,
                        NfChainPolicy::Drop => Policy::Drop,
                    }),
                    device: c.dev.map(|d| d.into_owned()),
                    handle: c.handle.map(u64::from),
                    policy_counter: None,
                    rules: Vec::new(),
                    hash: Default::default(),
                }));
            }
            "set" => {
                let (fam, table_name, set) = parse_set(body)?;
                find_table(&mut tables, fam, &table_name)?.sets.push(set);
            }
            "rule" => {
                let fam = body
                    .get("family")
                    .and_then(|f| NfFamily::deserialize(f).ok())
                    .ok_or_else(|| doc_err("rule without a valid family"))?;
                let table_name = str_field(body, "table")?;
                let chain_name = str_field(body, "chain")?;
                let table = find_table(&mut tables, family(fam), table_name)?;
                let chain = table
                    .chains
                    .iter_mut()
                    .find(|c| c.name == chain_name)
                    .map(Arc::make_mut)
                    .ok_or_else(|| doc_err(format!("rule for unknown chain {chain_name}")))?;
                let position = u32::try_from(chain.rules.len() + 1).unwrap_or(u32::MAX);
                chain.rules.push(parse_rule(body, position)?);
            }
            // metainfo, maps, flowtables, named counters/quotas/limits, ct
            // objects: nothing the evaluator walks.
            _ => {}
        }
    }
    Ok(tables)
}

fn doc_err(s: impl Into<String>) -> FirewallError {
    FirewallError::NftDocument(s.into())
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, FirewallError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| doc_err(format!("missing string field {key:?}")))
}

fn find_table<'t>(
    tables: &'t mut [Table],
    family: Family,
    name: &str,
) -> Result<&'t mut Table, FirewallError> {
    tables
        .iter_mut()
        .find(|t| t.family == family && t.name == name)
        .ok_or_else(|| doc_err(format!("element of undeclared table {family:?} {name}")))
}

fn family(f: NfFamily) -> Family {
    match f {
        NfFamily::IP => Family::Ip,
        NfFamily::IP6 => Family::Ip6,
        NfFamily::INet => Family::Inet,
        NfFamily::ARP => Family::Arp,
        NfFamily::Bridge => Family::Bridge,
        NfFamily::NetDev => Family::Netdev,
    }
}

fn hook(h: NfHook) -> Hook {
    match h {
        NfHook::Ingress => Hook::Ingress,
        NfHook::Prerouting => Hook::Prerouting,
        NfHook::Input => Hook::Input,
        NfHook::Forward => Hook::Forward,
        NfHook::Output => Hook::Output,
        NfHook::Postrouting => Hook::Postrouting,
        NfHook::Egress => Hook::Egress,
    }
}

/// Sets are read by hand: the crate's set type enum lacks some key types
/// (`ifname`, `mark`, ...), and an unknown one must not fail the ruleset.
fn parse_set(body: &Value) -> Result<(Family, String, Set), FirewallError> {
    let fam = body
        .get("family")
        .and_then(|f| NfFamily::deserialize(f).ok())
        .ok_or_else(|| doc_err("set without a valid family"))?;
    let table = str_field(body, "table")?.to_string();
    let name = str_field(body, "name")?.to_string();
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let elements = match body.get("elem") {
        Some(Value::Array(items)) => items.iter().map(set_element).collect(),
        Some(v) => vec![set_element(v)],
        None => Vec::new(),
    };
    Ok((
        family(fam),
        table,
        Set {
            name,
            key_type: strings(body.get("type")),
            flags: strings(body.get("flags")),
            elements,
        },
    ))
}

fn set_element(v: &Value) -> SetElement {
    // `{"elem": {"val": ..., "counter": ...}}` wraps an element with extras.
    let inner = v.get("elem").and_then(|e| e.get("val")).unwrap_or(v);
    let Ok(expr) = Expression::deserialize(inner) else {
        return SetElement::Other(render_value(inner));
    };
    if let Some([item]) = addr_items(&expr).as_deref() {
        return SetElement::Addr(item.clone());
    }
    if let Some([p]) = port_ranges(&expr).as_deref() {
        return SetElement::Ports(*p);
    }
    SetElement::Other(render_value(inner))
}

fn parse_rule(body: &Value, position: u32) -> Result<Rule, FirewallError> {
    let exprs = body
        .get("expr")
        .and_then(Value::as_array)
        .ok_or_else(|| doc_err("rule without an \"expr\" array"))?;
    let mut rule = Rule {
        handle: body.get("handle").and_then(Value::as_u64),
        position,
        matches: Vec::new(),
        verdict: None,
        counter: None,
        comment: body
            .get("comment")
            .and_then(Value::as_str)
            .map(str::to_string),
        text: String::new(),
        unsupported: false,
    };
    let mut text = Vec::new();
    for raw in exprs {
        text.push(render_statement(raw));
        match Statement::deserialize(raw) {
            Ok(stmt) => statement(&stmt, raw, &mut rule),
            Err(_) => {
                rule.matches.push(Match::Other(render_statement(raw)));
                rule.unsupported = true;
            }
        }
    }
    if let Some(c) = &rule.comment {
        text.push(format!("comment {c:?}"));
    }
    rule.text = text.join(" ");
    Ok(rule)
}

fn statement(stmt: &Statement<'_>, raw: &Value, rule: &mut Rule) {
    let verdict = match stmt {
        Statement::Match(m) => {
            let negated = match m.op {
                Operator::EQ | Operator::IN => false,
                Operator::NEQ => true,
                _ => {
                    other_match(rule, raw);
                    return;
                }
            };
            match match_of(&m.left, &m.right, negated) {
                Some(ms) => rule.matches.extend(ms),
                None => other_match(rule, raw),
            }
            return;
        }
        Statement::Counter(NftCounter::Anonymous(Some(c))) => {
            rule.counter = Some(Counter {
                packets: c.packets.unwrap_or(0) as u64,
                bytes: c.bytes.unwrap_or(0) as u64,
            });
            return;
        }
        Statement::Counter(_) => return,
        Statement::Accept(_) => RuleVerdict::Accept,
        Statement::Drop(_) => RuleVerdict::Drop,
        Statement::Continue(_) => RuleVerdict::Continue,
        Statement::Return(_) => RuleVerdict::Return,
        Statement::Jump(t) => RuleVerdict::Jump {
            chain: t.target.to_string(),
        },
        Statement::Goto(t) => RuleVerdict::Goto {
            chain: t.target.to_string(),
        },
        Statement::Reject(_) => {
            let r = raw.get("reject");
            let with: Vec<String> = ["type", "expr"]
                .iter()
                .filter_map(|k| r.and_then(|r| r.get(*k)).and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            RuleVerdict::Reject {
                with: (!with.is_empty()).then(|| with.join(" ")),
            }
        }
        Statement::DNAT(nat) | Statement::SNAT(nat) => match nat_target(nat.as_ref()) {
            Some((addr, port)) if matches!(stmt, Statement::DNAT(_)) => {
                RuleVerdict::Dnat { addr, port }
            }
            Some((addr, port)) => RuleVerdict::Snat { addr, port },
            None => RuleVerdict::Other(render_statement(raw)),
        },
        Statement::Masquerade(_) => RuleVerdict::Masquerade,
        Statement::Redirect(nat) => match nat_target(nat.as_ref()) {
            Some((None, port)) => RuleVerdict::Redirect { port },
            _ => RuleVerdict::Other(render_statement(raw)),
        },
        Statement::Log(l) => RuleVerdict::Log {
            prefix: l
                .as_ref()
                .and_then(|l| l.prefix.as_ref())
                .map(|p| p.to_string()),
        },
        Statement::Queue(_) => RuleVerdict::Queue,
        // Conditions on rates, quotas and connection counts.
        Statement::Limit(_) | Statement::Quota(_) | Statement::CTCount(_) | Statement::Meter(_) => {
            other_match(rule, raw);
            return;
        }
        Statement::XT(v) => {
            let is_target = v
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                == Some("target");
            if !is_target {
                other_match(rule, raw);
                return;
            }
            RuleVerdict::Other(render_statement(raw))
        }
        // Actions that change the packet or conntrack but decide nothing here.
        Statement::Mangle(_)
        | Statement::Set(_)
        | Statement::Notrack
        | Statement::CTHelper(_)
        | Statement::CTTimeout(_)
        | Statement::CTExpectation(_)
        | Statement::Flow(_)
        | Statement::Dup(_) => return,
        _ => RuleVerdict::Other(render_statement(raw)),
    };
    if matches!(verdict, RuleVerdict::Other(_)) {
        rule.unsupported = true;
    }
    // A later terminal verdict wins over a log before it (`log drop`).
    if verdict.is_terminal() || rule.verdict.is_none() {
        rule.verdict = Some(verdict);
    }
}

fn other_match(rule: &mut Rule, raw: &Value) {
    rule.matches.push(Match::Other(render_statement(raw)));
    rule.unsupported = true;
}

fn nat_target(nat: Option<&NAT<'_>>) -> Option<(Option<IpAddr>, Option<PortRange>)> {
    let Some(nat) = nat else {
        return Some((None, None));
    };
    let addr = match &nat.addr {
        None => None,
        Some(Expression::String(s)) => Some(s.parse().ok()?),
        Some(_) => return None,
    };
    let port = match &nat.port {
        None => None,
        Some(p) => match port_ranges(p)?.as_slice() {
            [r] => Some(*r),
            _ => return None,
        },
    };
    Some((addr, port))
}

/// One `left op right` match as model matches; `None` when not expressible.
fn match_of(left: &Expression<'_>, right: &Expression<'_>, negated: bool) -> Option<Vec<Match>> {
    let Expression::Named(named) = left else {
        return None;
    };
    match named {
        NamedExpression::Payload(Payload::PayloadField(p)) => {
            match (p.protocol.as_ref(), p.field.as_ref()) {
                ("ip" | "ip6", "saddr" | "daddr") => {
                    let set = addr_set(right)?;
                    Some(vec![if p.field == "saddr" {
                        Match::SourceAddr { negated, set }
                    } else {
                        Match::DestAddr { negated, set }
                    }])
                }
                (
                    proto @ ("tcp" | "udp" | "sctp" | "udplite" | "dccp" | "th"),
                    "sport" | "dport",
                ) => {
                    let ports = port_set(right)?;
                    let port = if p.field == "sport" {
                        Match::SourcePort { negated, ports }
                    } else {
                        Match::DestPort { negated, ports }
                    };
                    // `tcp dport 22` also means "is tcp"; `th dport` does not.
                    Some(if proto == "th" {
                        vec![port]
                    } else {
                        vec![
                            Match::Protocol {
                                negated: false,
                                protos: vec![proto.to_string()],
                            },
                            port,
                        ]
                    })
                }
                ("ip", "protocol") | ("ip6", "nexthdr") => Some(vec![Match::Protocol {
                    negated,
                    protos: strings(right)?,
                }]),
                _ => None,
            }
        }
        NamedExpression::Meta(m) => match m.key {
            MetaKey::Iifname | MetaKey::Iif => Some(vec![Match::InInterface {
                negated,
                names: strings(right)?,
            }]),
            MetaKey::Oifname | MetaKey::Oif => Some(vec![Match::OutInterface {
                negated,
                names: strings(right)?,
            }]),
            MetaKey::L4proto => Some(vec![Match::Protocol {
                negated,
                protos: strings(right)?,
            }]),
            _ => None,
        },
        NamedExpression::CT(ct) if ct.key == "state" && ct.dir.is_none() => {
            let states = strings(right)?
                .iter()
                .map(|s| ct_state(s))
                .collect::<Option<Vec<_>>>()?;
            Some(vec![Match::CtState { negated, states }])
        }
        NamedExpression::Fib(fib) if fib.result == FibResult::Type && fib.flags.len() == 1 => {
            let destination = fib.flags.contains(&FibFlag::Daddr);
            if !destination && !fib.flags.contains(&FibFlag::Saddr) {
                return None;
            }
            Some(vec![Match::AddrType {
                destination,
                negated,
                types: strings(right)?,
            }])
        }
        _ => None,
    }
}

fn ct_state(s: &str) -> Option<CtState> {
    Some(match s {
        "new" => CtState::New,
        "established" => CtState::Established,
        "related" => CtState::Related,
        "invalid" => CtState::Invalid,
        "untracked" => CtState::Untracked,
        _ => return None,
    })
}

fn set_ref(e: &Expression<'_>) -> Option<String> {
    match e {
        Expression::String(s) => s.strip_prefix('@').map(str::to_string),
        _ => None,
    }
}

fn addr_set(e: &Expression<'_>) -> Option<AddrSet> {
    if let Some(name) = set_ref(e) {
        return Some(AddrSet::Named(name));
    }
    addr_items(e).map(AddrSet::Literal)
}

fn addr_items(e: &Expression<'_>) -> Option<Vec<AddrItem>> {
    match e {
        Expression::String(s) => Some(vec![parse_prefix(s)?]),
        Expression::Named(NamedExpression::Prefix(p)) => {
            let Expression::String(a) = p.addr.as_ref() else {
                return None;
            };
            let addr: IpAddr = a.parse().ok()?;
            let len = u8::try_from(p.len).ok()?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some(vec![AddrItem::Prefix { addr, len }])
        }
        Expression::Range(r) => match &r.range {
            [Expression::String(a), Expression::String(b)] => Some(vec![AddrItem::Range {
                from: a.parse().ok()?,
                to: b.parse().ok()?,
            }]),
            _ => None,
        },
        Expression::Named(NamedExpression::Set(items)) => {
            let mut out = Vec::new();
            for item in items {
                let nftables::expr::SetItem::Element(e) = item else {
                    return None;
                };
                out.extend(addr_items(e)?);
            }
            Some(out)
        }
        Expression::Named(NamedExpression::Elem(el)) => addr_items(&el.val),
        _ => None,
    }
}

fn port_set(e: &Expression<'_>) -> Option<PortSet> {
    if let Some(name) = set_ref(e) {
        return Some(PortSet::Named(name));
    }
    port_ranges(e).map(PortSet::Literal)
}

fn port_ranges(e: &Expression<'_>) -> Option<Vec<PortRange>> {
    let port = |e: &Expression<'_>| -> Option<u16> {
        match e {
            Expression::Number(n) => u16::try_from(*n).ok(),
            Expression::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    match e {
        Expression::Number(_) | Expression::String(_) => {
            let p = port(e)?;
            Some(vec![PortRange { from: p, to: p }])
        }
        Expression::Range(r) => {
            let (from, to) = (port(&r.range[0])?, port(&r.range[1])?);
            (from <= to).then_some(vec![PortRange { from, to }])
        }
        Expression::Named(NamedExpression::Set(items)) => {
            let mut out = Vec::new();
            for item in items {
                let nftables::expr::SetItem::Element(e) = item else {
                    return None;
                };
                out.extend(port_ranges(e)?);
            }
            Some(out)
        }
        Expression::Named(NamedExpression::Elem(el)) => port_ranges(&el.val),
        _ => None,
    }
}

/// Names, protocols, states: a string, a number, or a list/set of them.
fn strings(e: &Expression<'_>) -> Option<Vec<String>> {
    match e {
        Expression::String(s) if !s.starts_with('@') => Some(vec![s.to_string()]),
        Expression::Number(n) => Some(vec![n.to_string()]),
        Expression::List(items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(strings(i)?);
            }
            Some(out)
        }
        Expression::Named(NamedExpression::Set(items)) => {
            let mut out = Vec::new();
            for item in items {
                let nftables::expr::SetItem::Element(e) = item else {
                    return None;
                };
                out.extend(strings(e)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// nft-like text of one statement, counters without their values so that
/// the text (and the ruleset hash) does not change with traffic.
fn render_statement(v: &Value) -> String {
    let Some((k, body)) = v.as_object().and_then(|o| o.iter().next()) else {
        return render_value(v);
    };
    match k.as_str() {
        "match" => {
            let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
            let left = body.get("left").map(render_value).unwrap_or_default();
            let right = body.get("right").map(render_value).unwrap_or_default();
            match op {
                "==" | "in" => format!("{left} {right}"),
                op => format!("{left} {op} {right}"),
            }
        }
        "counter" => match body.as_str() {
            Some(name) => format!("counter name {name}"),
            None => "counter".into(),
        },
        "accept" | "drop" | "continue" | "return" => k.clone(),
        "jump" | "goto" => format!(
            "{k} {}",
            body.get("target").and_then(Value::as_str).unwrap_or("?")
        ),
        "reject" => {
            let mut s = String::from("reject");
            let ty = body.get("type").and_then(Value::as_str);
            let code = body.get("expr").and_then(Value::as_str);
            if ty.is_some() || code.is_some() {
                s.push_str(" with");
                for part in [ty, code].into_iter().flatten() {
                    s.push(' ');
                    s.push_str(part);
                }
            }
            s
        }
        "dnat" | "snat" | "redirect" | "masquerade" => {
            let mut s = k.clone();
            let addr = body.get("addr").map(render_value);
            let port = body.get("port").map(render_value);
            if addr.is_some() || port.is_some() {
                s.push_str(" to ");
                s.push_str(&addr.unwrap_or_default());
                if let Some(p) = port {
                    s.push(':');
                    s.push_str(&p);
                }
            }
            s
        }
        "log" => match body.get("prefix").and_then(Value::as_str) {
            Some(p) => format!("log prefix {p:?}"),
            None => "log".into(),
        },
        "xt" => format!(
            "xt {} {}",
            body.get("type").and_then(Value::as_str).unwrap_or("?"),
            body.get("name").and_then(Value::as_str).unwrap_or("?")
        ),
        _ if body.is_null() => k.clone(),
        _ => format!("{k} {}", render_value(body)),
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render_value).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Object(o) if o.len() == 1 => {
            let Some((k, b)) = o.iter().next() else {
                return v.to_string();
            };
            let field = |name: &str| b.get(name).map(render_value).unwrap_or_default();
            match k.as_str() {
                "payload" if b.get("protocol").is_some() => {
                    format!("{} {}", field("protocol"), field("field"))
                }
                "meta" => format!("meta {}", field("key")),
                "ct" => format!("ct {}", field("key")),
                "prefix" => format!("{}/{}", field("addr"), field("len")),
                "range" => match b.as_array().map(Vec::as_slice) {
                    Some([a, z]) => format!("{}-{}", render_value(a), render_value(z)),
                    _ => v.to_string(),
                },
                "set" => match b.as_array() {
                    Some(items) => {
                        let parts: Vec<String> = items
                            .iter()
                            .map(|i| match i.as_array().map(Vec::as_slice) {
                                Some([a, z]) => {
                                    format!("{} : {}", render_value(a), render_value(z))
                                }
                                _ => render_value(i),
                            })
                            .collect();
                        format!("{{ {} }}", parts.join(", "))
                    }
                    None => render_value(b),
                },
                "concat" => match b.as_array() {
                    Some(items) => items
                        .iter()
                        .map(render_value)
                        .collect::<Vec<_>>()
                        .join(" . "),
                    None => v.to_string(),
                },
                "fib" => format!("fib {} {}", render_value(&b["flags"]), field("result")),
                _ => v.to_string(),
            }
        }
        other => other.to_string(),
    }
}
