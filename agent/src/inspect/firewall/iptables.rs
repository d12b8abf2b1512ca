//! `iptables-save` / `ip6tables-save` text (legacy or nft backend) into the
//! firewall model. Pure: text in, tables out.
//!
//! Built-in chains get the hook and the priority the kernel gives their
//! table (raw -300, mangle -150, nat -100 before routing / 100 after,
//! filter 0, security 50). Matches of modules this parser does not know are
//! kept, with their options, as one `Match::Other` each.

use super::FirewallError;
use crate::facts::firewall::{
    AddrItem, AddrSet, Backend, Chain, ChainType, Counter, CtState, Family, Hook, Match, Policy,
    PortRange, PortSet, Rule, RuleVerdict, Table,
};
use std::net::IpAddr;
use std::sync::Arc;

/// Parses the whole output of one `*tables-save` run; `family` is `Ip` for
/// iptables and `Ip6` for ip6tables. Every table must end with `COMMIT`, so
/// truncated output is an error rather than a silently shorter ruleset.
pub fn parse_iptables_save(
    text: &str,
    family: Family,
    backend: Backend,
) -> Result<Vec<Table>, FirewallError> {
    let mut tables = Vec::new();
    let mut open: Option<Table> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |reason: String| FirewallError::IptablesSave {
            line: line_no,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some(t) = &open {
                return Err(err(format!("table {} was not committed", t.name)));
            }
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err(format!("bad table name {name:?}")));
            }
            open = Some(Table {
                family,
                name: name.to_string(),
                backend,
                chains: Vec::new(),
                sets: Vec::new(),
            });
            continue;
        }
        let Some(table) = open.as_mut() else {
            return Err(err("rule or chain outside a table".into()));
        };
        if line == "COMMIT" {
            if let Some(t) = open.take() {
                tables.push(t);
            }
        } else if let Some(rest) = line.strip_prefix(':') {
            let chain = parse_chain_line(&table.name, rest).map_err(err)?;
            if table.chain(&chain.name).is_some() {
                return Err(err(format!("chain {} declared twice", chain.name)));
            }
            table.chains.push(Arc::new(chain));
        } else {
            parse_rule_line(table, line).map_err(err)?;
        }
    }
    if let Some(t) = open {
        return Err(FirewallError::IptablesSave {
            line: text.lines().count(),
            reason: format!("table {} has no COMMIT (truncated output?)", t.name),
        });
    }
    Ok(tables)
}

/// `:INPUT DROP [12:3400]` or `:DOCKER - [0:0]`.
fn parse_chain_line(table: &str, rest: &str) -> Result<Chain, String> {
    let mut parts = rest.split_whitespace();
    let name = parts.next().ok_or("chain line without a name")?;
    let policy = match parts.next() {
        Some("ACCEPT") => Some(Policy::Accept),
        Some("DROP") => Some(Policy::Drop),
        Some("-") | None => None,
        Some(p) => return Err(format!("chain {name}: unknown policy {p:?}")),
    };
    let policy_counter = match parts.next() {
        Some(c) => {
            Some(parse_bracket_counter(c).ok_or(format!("chain {name}: bad counters {c:?}"))?)
        }
        None => None,
    };
    let builtin = builtin_chain(table, name);
    Ok(Chain {
        name: name.to_string(),
        hook: builtin.map(|b| b.0),
        chain_type: builtin.map(|b| b.1),
        priority: builtin.map(|b| b.2),
        policy: if builtin.is_some() { policy } else { None },
        device: None,
        handle: None,
        policy_counter: if builtin.is_some() {
            policy_counter
        } else {
            None
        },
        rules: Vec::new(),
        hash: Default::default(),
    })
}

/// Hook, type and priority of a built-in chain (the kernel's NF_IP_PRI_*).
pub fn builtin_chain(table: &str, chain: &str) -> Option<(Hook, ChainType, i32)> {
    let hook = match chain {
        "PREROUTING" => Hook::Prerouting,
        "INPUT" => Hook::Input,
        "FORWARD" => Hook::Forward,
        "OUTPUT" => Hook::Output,
        "POSTROUTING" => Hook::Postrouting,
        _ => return None,
    };
    match (table, hook) {
        ("raw", Hook::Prerouting | Hook::Output) => Some((hook, ChainType::Filter, -300)),
        ("mangle", Hook::Output) => Some((hook, ChainType::Route, -150)),
        ("mangle", _) => Some((hook, ChainType::Filter, -150)),
        ("nat", Hook::Prerouting | Hook::Output) => Some((hook, ChainType::Nat, -100)),
        ("nat", Hook::Input | Hook::Postrouting) => Some((hook, ChainType::Nat, 100)),
        ("filter", Hook::Input | Hook::Forward | Hook::Output) => {
            Some((hook, ChainType::Filter, 0))
        }
        ("security", Hook::Input | Hook::Forward | Hook::Output) => {
            Some((hook, ChainType::Filter, 50))
        }
        _ => None,
    }
}

fn parse_bracket_counter(s: &str) -> Option<Counter> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some(Counter {
        packets: p.parse().ok()?,
        bytes: b.parse().ok()?,
    })
}

#[derive(Debug)]
struct Token {
    text: String,
    quoted: bool,
}

/// Splits like the shell does for iptables-save output: whitespace
/// separates, double quotes group, a backslash escapes the next character.
fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().ok_or("line ends in a backslash")?;
                cur.push(next);
                in_token = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
                in_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if in_token {
                    out.push(Token {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                }
                in_token = false;
                quoted = false;
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    if in_token {
        out.push(Token { text: cur, quoted });
    }
    Ok(out)
}

/// An option with its negation and values: `! --dports 80,443`.
#[derive(Debug)]
struct Clause {
    negated: bool,
    opt: String,
    values: Vec<String>,
}

impl Clause {
    fn value(&self) -> Result<&str, String> {
        self.values
            .first()
            .map(String::as_str)
            .ok_or_else(|| format!("{} needs a value", self.opt))
    }

    fn render(&self) -> String {
        let mut s = String::new();
        if self.negated {
            s.push_str("! ");
        }
        s.push_str(&self.opt);
        for v in &self.values {
            s.push(' ');
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                s.push('"');
                s.push_str(&v.replace('\\', "\\\\").replace('"', "\\\""));
                s.push('"');
            } else {
                s.push_str(v);
            }
        }
        s
    }
}

fn clauses(tokens: Vec<Token>) -> Result<Vec<Clause>, String> {
    let mut out: Vec<Clause> = Vec::new();
    let mut negate = false;
    for t in tokens {
        let is_opt = !t.quoted
            && t.text.starts_with('-')
            && t.text[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-');
        if !t.quoted && t.text == "!" {
            if negate {
                return Err("double negation".into());
            }
            negate = true;
        } else if is_opt {
            out.push(Clause {
                negated: std::mem::take(&mut negate),
                opt: t.text,
                values: Vec::new(),
            });
        } else {
            let last = out
                .last_mut()
                .ok_or_else(|| format!("value {:?} before any option", t.text))?;
            last.values.push(t.text);
        }
    }
    if negate {
        return Err("`!` at the end of the rule".into());
    }
    Ok(out)
}

fn is_top_level(opt: &str) -> bool {
    matches!(
        opt,
        "-s" | "--source"
            | "--src"
            | "-d"
            | "--destination"
            | "--dst"
            | "-p"
            | "--protocol"
            | "-i"
            | "--in-interface"
            | "-o"
            | "--out-interface"
            | "-m"
            | "--match"
            | "-j"
            | "--jump"
            | "-g"
            | "--goto"
            | "-c"
            | "--set-counters"
            | "-f"
            | "--fragment"
            | "-4"
            | "--ipv4"
            | "-6"
            | "--ipv6"
    )
}

/// `[3:252] -A INPUT -i lo -j ACCEPT`: appends one rule to its chain.
fn parse_rule_line(table: &mut Table, line: &str) -> Result<(), String> {
    let mut body = line;
    let mut counter = None;
    if line.starts_with('[') {
        let (c, rest) = line.split_once(' ').ok_or("counters without a rule")?;
        counter = Some(parse_bracket_counter(c).ok_or(format!("bad counters {c:?}"))?);
        body = rest.trim_start();
    }
    let mut cl = clauses(tokenize(body)?)?.into_iter();
    let append = cl.next().ok_or("empty rule")?;
    if append.opt != "-A" && append.opt != "--append" {
        return Err(format!("expected -A, found {}", append.opt));
    }
    let chain_name = append.value()?.to_string();
    let chain_idx = table
        .chains
        .iter()
        .position(|c| c.name == chain_name)
        .ok_or(format!("rule for undeclared chain {chain_name}"))?;
    let rest: Vec<Clause> = cl.collect();

    let mut rule = Rule {
        handle: None,
        position: 0,
        matches: Vec::new(),
        verdict: None,
        counter,
        comment: None,
        text: body.to_string(),
        unsupported: false,
    };
    let mut proto: Option<String> = None;
    let mut i = 0;
    while i < rest.len() {
        let c = &rest[i];
        i += 1;
        match c.opt.as_str() {
            "-s" | "--source" | "--src" => rule.matches.push(Match::SourceAddr {
                negated: c.negated,
                set: AddrSet::Literal(parse_addrs(c.value()?)?),
            }),
            "-d" | "--destination" | "--dst" => rule.matches.push(Match::DestAddr {
                negated: c.negated,
                set: AddrSet::Literal(parse_addrs(c.value()?)?),
            }),
            "-p" | "--protocol" => {
                let p = normalise_proto(c.value()?);
                if p != "all" {
                    proto = Some(p.clone());
                    rule.matches.push(Match::Protocol {
                        negated: c.negated,
                        protos: vec![p],
                    });
                } else if c.negated {
                    rule.matches.push(Match::Other(c.render()));
                }
            }
            "-i" | "--in-interface" => rule.matches.push(Match::InInterface {
                negated: c.negated,
                names: vec![c.value()?.to_string()],
            }),
            "-o" | "--out-interface" => rule.matches.push(Match::OutInterface {
                negated: c.negated,
                names: vec![c.value()?.to_string()],
            }),
            "-c" | "--set-counters" => {
                let p = c.values.first().and_then(|v| v.parse().ok());
                let b = c.values.get(1).and_then(|v| v.parse().ok());
                match (p, b) {
                    (Some(packets), Some(bytes)) => rule.counter = Some(Counter { packets, bytes }),
                    _ => return Err("-c needs packets and bytes".into()),
                }
            }
            "-4" | "--ipv4" | "-6" | "--ipv6" => {}
            "-m" | "--match" => {
                let name = c.value()?.to_string();
                let start = i;
                while i < rest.len() && !is_top_level(&rest[i].opt) {
                    i += 1;
                }
                module(&name, &rest[start..i], &mut rule);
            }
            "-j" | "--jump" => {
                let name = c.value()?.to_string();
                let opts = &rest[i..];
                i = rest.len();
                rule.verdict = Some(target(&name, opts, table));
            }
            "-g" | "--goto" => {
                rule.verdict = Some(RuleVerdict::Goto {
                    chain: c.value()?.to_string(),
                });
            }
            opt if !is_top_level(opt) => {
                // An option of the protocol's implicit module (`-p tcp --dport 22`).
                let start = i - 1;
                while i < rest.len() && !is_top_level(&rest[i].opt) {
                    i += 1;
                }
                let name = proto.clone().unwrap_or_default();
                module(&name, &rest[start..i], &mut rule);
            }
            _ => rule.matches.push(Match::Other(c.render())),
        }
    }
    if rule.matches.iter().any(|m| matches!(m, Match::Other(_)))
        || matches!(rule.verdict, Some(RuleVerdict::Other(_)))
    {
        rule.unsupported = true;
    }
    let chain = Arc::make_mut(&mut table.chains[chain_idx]);
    rule.position = u32::try_from(chain.rules.len() + 1).unwrap_or(u32::MAX);
    chain.rules.push(rule);
    Ok(())
}

/// One `-m NAME ...` group; anything not understood becomes one `Match::Other`.
fn module(name: &str, opts: &[Clause], rule: &mut Rule) {
    match module_matches(name, opts, rule) {
        Ok(ms) => rule.matches.extend(ms),
        Err(()) => {
            let mut s = format!("-m {name}");
            for c in opts {
                s.push(' ');
                s.push_str(&c.render());
            }
            rule.matches.push(Match::Other(s));
        }
    }
}

fn module_matches(name: &str, opts: &[Clause], rule: &mut Rule) -> Result<Vec<Match>, ()> {
    let mut out = Vec::new();
    for c in opts {
        let v = c.value().map_err(|_| ())?;
        let m = match (name, c.opt.as_str()) {
            ("tcp" | "udp" | "sctp" | "udplite", "--dport" | "--destination-port") => {
                Match::DestPort {
                    negated: c.negated,
                    ports: PortSet::Literal(vec![parse_port_range(v, ':').ok_or(())?]),
                }
            }
            ("tcp" | "udp" | "sctp" | "udplite", "--sport" | "--source-port") => {
                Match::SourcePort {
                    negated: c.negated,
                    ports: PortSet::Literal(vec![parse_port_range(v, ':').ok_or(())?]),
                }
            }
            ("multiport", "--dports" | "--destination-ports") => Match::DestPort {
                negated: c.negated,
                ports: PortSet::Literal(parse_port_list(v).ok_or(())?),
            },
            ("multiport", "--sports" | "--source-ports") => Match::SourcePort {
                negated: c.negated,
                ports: PortSet::Literal(parse_port_list(v).ok_or(())?),
            },
            ("conntrack", "--ctstate") | ("state", "--state") => Match::CtState {
                negated: c.negated,
                states: parse_ct_states(v).ok_or(())?,
            },
            ("comment", "--comment") => {
                rule.comment = Some(v.to_string());
                continue;
            }
            ("set", "--match-set") => {
                let set = AddrSet::Named(v.to_string());
                match c.values.get(1).map(String::as_str) {
                    Some("src") => Match::SourceAddr {
                        negated: c.negated,
                        set,
                    },
                    Some("dst") => Match::DestAddr {
                        negated: c.negated,
                        set,
                    },
                    _ => return Err(()),
                }
            }
            ("addrtype", "--dst-type" | "--src-type") => Match::AddrType {
                destination: c.opt == "--dst-type",
                negated: c.negated,
                types: v.split(',').map(str::to_ascii_lowercase).collect(),
            },
            ("iprange", "--src-range" | "--dst-range") => {
                let (a, b) = v.split_once('-').ok_or(())?;
                let item = AddrItem::Range {
                    from: a.parse().map_err(|_| ())?,
                    to: b.parse().map_err(|_| ())?,
                };
                let set = AddrSet::Literal(vec![item]);
                if c.opt == "--src-range" {
                    Match::SourceAddr {
                        negated: c.negated,
                        set,
                    }
                } else {
                    Match::DestAddr {
                        negated: c.negated,
                        set,
                    }
                }
            }
            _ => return Err(()),
        };
        out.push(m);
    }
    Ok(out)
}

fn target(name: &str, opts: &[Clause], table: &Table) -> RuleVerdict {
    let opt = |o: &str| {
        opts.iter()
            .find(|c| c.opt == o)
            .and_then(|c| c.values.first().cloned())
    };
    let other = || {
        let mut s = format!("-j {name}");
        for c in opts {
            s.push(' ');
            s.push_str(&c.render());
        }
        RuleVerdict::Other(s)
    };
    match name {
        "ACCEPT" => RuleVerdict::Accept,
        "DROP" => RuleVerdict::Drop,
        "RETURN" => RuleVerdict::Return,
        "REJECT" => RuleVerdict::Reject {
            with: opt("--reject-with"),
        },
        "DNAT" | "SNAT" => {
            let key = if name == "DNAT" {
                "--to-destination"
            } else {
                "--to-source"
            };
            match opt(key).map(|v| parse_nat_to(&v)) {
                Some(Some((addr, port))) if name == "DNAT" => RuleVerdict::Dnat { addr, port },
                Some(Some((addr, port))) => RuleVerdict::Snat { addr, port },
                _ => other(),
            }
        }
        "MASQUERADE" => RuleVerdict::Masquerade,
        "REDIRECT" => match opt("--to-ports") {
            None => RuleVerdict::Redirect { port: None },
            Some(p) => match parse_port_range(&p, '-') {
                Some(r) => RuleVerdict::Redirect { port: Some(r) },
                None => other(),
            },
        },
        "LOG" => RuleVerdict::Log {
            prefix: opt("--log-prefix"),
        },
        "NFQUEUE" | "QUEUE" => RuleVerdict::Queue,
        chain if table.chain(chain).is_some() => RuleVerdict::Jump {
            chain: chain.to_string(),
        },
        _ => other(),
    }
}

/// `198.18.0.10`, `198.18.0.10:80`, `198.18.0.10:80-81`, `[2001:db8::1]:80`, `:80`.
fn parse_nat_to(v: &str) -> Option<(Option<IpAddr>, Option<PortRange>)> {
    let (addr, port) = if let Some(rest) = v.strip_prefix('[') {
        let (a, p) = rest.split_once(']')?;
        (a, p.strip_prefix(':'))
    } else if v.matches(':').count() > 1 {
        (v, None)
    } else {
        match v.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        }
    };
    // A range of addresses (`a-b`) keeps only its first.
    let addr = addr.split('-').next().unwrap_or_default();
    let addr = if addr.is_empty() {
        None
    } else {
        Some(addr.parse().ok()?)
    };
    let port = match port {
        Some(p) => Some(parse_port_range(p, '-')?),
        None => None,
    };
    Some((addr, port))
}

/// `22`, `1024:65535`, `:1023`, `1024:` with `sep` between the ends.
fn parse_port_range(v: &str, sep: char) -> Option<PortRange> {
    match v.split_once(sep) {
        Some((a, b)) => {
            let from = if a.is_empty() { 0 } else { a.parse().ok()? };
            let to = if b.is_empty() { 65535 } else { b.parse().ok()? };
            (from <= to).then_some(PortRange { from, to })
        }
        None => {
            let p = v.parse().ok()?;
            Some(PortRange { from: p, to: p })
        }
    }
}

fn parse_port_list(v: &str) -> Option<Vec<PortRange>> {
    v.split(',').map(|p| parse_port_range(p, ':')).collect()
}

fn parse_ct_states(v: &str) -> Option<Vec<CtState>> {
    v.split(',')
        .map(|s| {
            Some(match s {
                "NEW" => CtState::New,
                "ESTABLISHED" => CtState::Established,
                "RELATED" => CtState::Related,
                "INVALID" => CtState::Invalid,
                "UNTRACKED" => CtState::Untracked,
                "SNAT" => CtState::Snat,
                "DNAT" => CtState::Dnat,
                _ => return None,
            })
        })
        .collect()
}

/// `198.18.0.0/24`, `2001:db8::/32`, `10.0.0.0/255.0.0.0`, `198.18.0.1`, comma lists.
fn parse_addrs(v: &str) -> Result<Vec<AddrItem>, String> {
    v.split(',')
        .map(|a| parse_prefix(a).ok_or_else(|| format!("bad address {a:?}")))
        .collect()
}

pub(super) fn parse_prefix(a: &str) -> Option<AddrItem> {
    let (addr, len) = match a.split_once('/') {
        Some((addr, mask)) => {
            let addr: IpAddr = addr.parse().ok()?;
            let len = match mask.parse::<u8>() {
                Ok(l) => l,
                Err(_) => mask_len(mask.parse().ok()?)?,
            };
            (addr, len)
        }
        None => {
            let addr: IpAddr = a.parse().ok()?;
            (addr, if addr.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(AddrItem::Prefix { addr, len })
}

/// Length of a contiguous netmask written as an address.
fn mask_len(mask: IpAddr) -> Option<u8> {
    let bits: u128 = match mask {
        IpAddr::V4(m) => u128::from(u32::from(m)) << 96,
        IpAddr::V6(m) => u128::from(m),
    };
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(u8::try_from(len).ok()?)
}

fn normalise_proto(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "1" => "icmp".into(),
        "58" | "ipv6-icmp" | "icmp6" => "icmpv6".into(),
        "132" => "sctp".into(),
        "0" => "all".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_targets() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        let p = |from, to| Some(PortRange { from, to });
        assert_eq!(parse_nat_to("198.18.0.10"), Some((ip("198.18.0.10"), None)));
        assert_eq!(
            parse_nat_to("198.18.0.10:80-81"),
            Some((ip("198.18.0.10"), p(80, 81)))
        );
        assert_eq!(
            parse_nat_to("[2001:db8::1]:443"),
            Some((ip("2001:db8::1"), p(443, 443)))
        );
        assert_eq!(parse_nat_to("2001:db8::1"), Some((ip("2001:db8::1"), None)));
        assert_eq!(parse_nat_to(":8080"), Some((None, p(8080, 8080))));
        assert_eq!(
            parse_nat_to("198.18.0.1-198.18.0.9"),
            Some((ip("198.18.0.1"), None))
        );
        assert_eq!(parse_nat_to("198.18.0.10:90-80"), None);
        assert_eq!(parse_nat_to("[2001:db8::1"), None);
    }

    #[test]
    fn masks_and_ports() {
        let m = |s: &str| mask_len(s.parse().expect("mask"));
        assert_eq!(m("255.255.255.0"), Some(24));
        assert_eq!(m("0.0.0.0"), Some(0));
        assert_eq!(m("255.255.255.255"), Some(32));
        assert_eq!(m("255.0.255.0"), None);
        assert_eq!(m("ffff:ffff::"), Some(32));
        assert_eq!(
            parse_port_range(":1023", ':'),
            Some(PortRange { from: 0, to: 1023 })
        );
        assert_eq!(
            parse_port_range("1024:", ':'),
            Some(PortRange {
                from: 1024,
                to: 65535
            })
        );
        assert_eq!(parse_port_range("70000", ':'), None);
        assert_eq!(parse_prefix("198.18.0.0/33"), None);
    }

    #[test]
    fn quoting() {
        let t = tokenize(r#"-A X -m comment --comment "a \"b\" c" -j ACCEPT"#).expect("tokens");
        let texts: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "ACCEPT"
            ]
        );
        assert!(t[5].quoted);
        assert!(tokenize("-A X \"open").is_err());
        assert!(tokenize("-A X \\").is_err());
    }
}
