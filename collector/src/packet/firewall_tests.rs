//! Table-driven tests of the evaluator on rulesets built by hand, one per
//! semantic: priorities, base chains, jumps, sets, ranges, negation,
//! interfaces, ct state, drop versus reject, policies, NAT, uncertainty.
//!
//! Rules are written in a compact form: `[!]field=v1,v2 ... -> action`,
//! fields `saddr daddr proto sport dport iif oif ct atype family icmp
//! other` (`_` for a space in `other`), actions `accept drop reject[:with]
//! jump:C goto:C return continue queue dnat:ADDR[:PORT] redirect:PORT snat
//! masquerade other:TEXT`.

use super::*;
use crate::model::firewall::{Chain, Field, Match, Rule, Set, Table, Value, Verdict};
use crate::validate::firewall::{address_value, port_value};

fn value(field: Field, s: &str) -> Value {
    if field.is_address() {
        address_value("test", s).expect("address value")
    } else if field.is_port() {
        port_value("test", s).expect("port value")
    } else if let Some(n) = s.strip_prefix('@') {
        Value::SetRef(n.into())
    } else {
        Value::Text(s.replace('_', " "))
    }
}

fn rule(position: u32, spec: &str) -> Rule {
    let (conds, action) = spec.split_once("->").expect("spec has ->");
    let mut matches = Vec::new();
    for tok in conds.split_whitespace() {
        let (negated, tok) = match tok.strip_prefix('!') {
            Some(t) => (true, t),
            None => (false, tok),
        };
        let (k, v) = tok.split_once('=').expect("field=value");
        let field = match k {
            "saddr" => Field::SourceAddress,
            "daddr" => Field::DestinationAddress,
            "proto" => Field::Protocol,
            "sport" => Field::SourcePort,
            "dport" => Field::DestinationPort,
            "iif" => Field::InInterface,
            "oif" => Field::OutInterface,
            "ct" => Field::CtState,
            "atype" => Field::DestinationAddressType,
            "family" => Field::AddressFamily,
            "icmp" => Field::IcmpType,
            "other" => Field::Other,
            other => panic!("unknown field {other}"),
        };
        let values = if field == Field::Other {
            vec![value(field, v)]
        } else {
            v.split(',').map(|s| value(field, s)).collect()
        };
        matches.push(Match {
            field,
            negated,
            values,
        });
    }
    let action = action.trim();
    let (kind_text, arg) = action.split_once(':').unwrap_or((action, ""));
    let arg = (!arg.is_empty()).then(|| arg.replace('_', " "));
    let (kind, target, port) = match kind_text {
        "accept" => (VerdictKind::Accept, None, None),
        "drop" => (VerdictKind::Drop, None, None),
        "reject" => (VerdictKind::Reject, arg, None),
        "jump" => (VerdictKind::Jump, arg, None),
        "goto" => (VerdictKind::Goto, arg, None),
        "return" => (VerdictKind::Return, None, None),
        "continue" => (VerdictKind::Continue, None, None),
        "queue" => (VerdictKind::Queue, None, None),
        "snat" => (VerdictKind::Snat, Some("198.18.0.1".into()), None),
        "masquerade" => (VerdictKind::Masquerade, None, None),
        "redirect" => (
            VerdictKind::Redirect,
            None,
            arg.map(|p| p.parse().expect("port")),
        ),
        "dnat" => {
            let arg = arg.expect("dnat target");
            match arg.rsplit_once(':') {
                Some((a, p)) => (
                    VerdictKind::Dnat,
                    (!a.is_empty()).then(|| a.to_string()),
                    Some(p.parse().expect("port")),
                ),
                None => (VerdictKind::Dnat, Some(arg), None),
            }
        }
        "other" => (VerdictKind::Other, arg, None),
        other => panic!("unknown action {other}"),
    };
    let unsupported = kind == VerdictKind::Other || matches.iter().any(|m| m.field == Field::Other);
    Rule {
        handle: Some(u64::from(position) + 100),
        position,
        matches,
        verdict: Verdict { kind, target, port },
        packets: None,
        bytes: None,
        comment: None,
        text: spec.to_string(),
        unsupported,
    }
}

/// `hook` is `"input/filter/0/drop"` (hook, type, priority, policy; policy
/// may be empty) or `""` for a user chain.
fn chain(name: &str, hook: &str, rules: &[&str]) -> Chain {
    let parts: Vec<&str> = hook.split('/').collect();
    let opt = |i: usize| {
        parts
            .get(i)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
    };
    Chain {
        name: name.into(),
        hook: opt(0),
        chain_type: opt(1),
        priority: opt(2).map(|p| p.parse().expect("priority")),
        policy: opt(3),
        rules: rules
            .iter()
            .enumerate()
            .map(|(i, s)| rule(u32::try_from(i + 1).expect("position"), s))
            .collect(),
    }
}

fn table(family: &str, name: &str, chains: Vec<Chain>, sets: Vec<Set>) -> Table {
    Table {
        family: family.into(),
        name: name.into(),
        backend: "nftables".into(),
        chains,
        sets,
    }
}

fn set(name: &str, elements: &[&str]) -> Set {
    Set {
        name: name.into(),
        set_type: String::new(),
        elements: elements
            .iter()
            .map(|e| {
                address_value("t", e)
                    .or_else(|_| port_value("t", e))
                    .unwrap_or_else(|_| Value::Text((*e).into()))
            })
            .collect(),
    }
}

fn fw(tables: Vec<Table>) -> Firewall {
    Firewall {
        backend: "nftables".into(),
        tables,
        ..Firewall::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A new TCP connection from `src` to this host's `dst:port` arriving on eth0.
fn syn(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        iif: Some("eth0".into()),
        dst_is_local: true,
        ..Packet::tcp(ip(src), ip(dst), port)
    }
}

const ME: &str = "198.18.0.2";

/// What a case expects: the verdict, and the deciding rule's chain and
/// position, or `policy:<chain>`, or nothing.
struct Case {
    name: &'static str,
    fw: Firewall,
    packet: Packet,
    path: PathKind,
    verdict: Final,
    decided_by: &'static str,
    uncertain: usize,
}

fn check(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let d = evaluate(&c.fw, &c.packet, c.path);
        let by = match (&d.deciding, &d.policy) {
            (Some(r), _) => format!("{}#{}", r.chain, r.position),
            (None, Some(p)) => format!("policy:{}", p.chain),
            (None, None) => String::new(),
        };
        if d.verdict != c.verdict || by != c.decided_by || d.uncertain.len() != c.uncertain {
            failures.push(format!(
                "{}: expected {:?} by {:?} with {} uncertain, got {:?} by {by:?} with {:?}\n  trace: {:?}",
                c.name, c.verdict, c.decided_by, c.uncertain, d.verdict, d.uncertain, d.trace
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn input(policy: &str, rules: &[&str]) -> Firewall {
    fw(vec![table(
        "inet",
        "filter",
        vec![chain("input", &format!("input/filter/0/{policy}"), rules)],
        vec![],
    )])
}

fn reject(with: Option<&str>) -> Final {
    Final::Reject {
        with: with.map(str::to_string),
    }
}

#[test]
fn chains_priorities_and_policies() {
    let two_tables = fw(vec![
        table(
            "inet",
            "a",
            vec![chain(
                "in_a",
                "input/filter/0/accept",
                &["dport=22 -> accept"],
            )],
            vec![],
        ),
        table(
            "ip",
            "b",
            vec![chain(
                "in_b",
                "input/filter/-10/accept",
                &["saddr=198.18.7.0/24 -> drop"],
            )],
            vec![],
        ),
    ]);
    let accept_then_drop = fw(vec![
        table(
            "inet",
            "a",
            vec![chain(
                "in_a",
                "input/filter/0/drop",
                &["dport=22 -> accept"],
            )],
            vec![],
        ),
        table(
            "inet",
            "b",
            vec![chain(
                "in_b",
                "input/filter/10/accept",
                &["saddr=198.18.7.0/24 -> drop"],
            )],
            vec![],
        ),
    ]);
    check(vec![
        Case {
            name: "lower priority runs first and its drop ends everything",
            fw: two_tables.clone(),
            packet: syn("198.18.7.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "in_b#1",
            uncertain: 0,
        },
        Case {
            name: "both base chains accept",
            fw: two_tables.clone(),
            packet: syn("198.18.8.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "in_a#1",
            uncertain: 0,
        },
        Case {
            name: "an ip table does not see IPv6",
            fw: two_tables,
            packet: syn("2001:db8::5", "2001:db8::2", 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "in_a#1",
            uncertain: 0,
        },
        Case {
            name: "an accept ends one base chain only: the next one drops",
            fw: accept_then_drop.clone(),
            packet: syn("198.18.7.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "in_b#1",
            uncertain: 0,
        },
        Case {
            name: "policy drop of the first chain",
            fw: accept_then_drop,
            packet: syn("198.18.8.5", ME, 80),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "policy:in_a",
            uncertain: 0,
        },
        Case {
            name: "no ruleset accepts",
            fw: fw(vec![]),
            packet: syn("198.18.8.5", ME, 80),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "",
            uncertain: 0,
        },
        Case {
            name: "a chain without policy accepts",
            fw: input("", &["dport=23 -> drop"]),
            packet: syn("198.18.8.5", ME, 80),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "policy:input",
            uncertain: 0,
        },
        Case {
            name: "drop versus reject with its reply",
            fw: input(
                "accept",
                &[
                    "dport=23 -> drop",
                    "dport=24 -> reject:tcp_reset",
                    "dport=25 -> reject",
                ],
            ),
            packet: syn("198.18.8.5", ME, 24),
            path: PathKind::Receive,
            verdict: reject(Some("tcp reset")),
            decided_by: "input#2",
            uncertain: 0,
        },
        Case {
            name: "reject without a reply type",
            fw: input("accept", &["dport=23 -> drop", "dport=25 -> reject"]),
            packet: syn("198.18.8.5", ME, 25),
            path: PathKind::Receive,
            verdict: reject(None),
            decided_by: "input#2",
            uncertain: 0,
        },
        Case {
            name: "the send path walks output",
            fw: fw(vec![table(
                "inet",
                "filter",
                vec![
                    chain("input", "input/filter/0/drop", &[]),
                    chain(
                        "output",
                        "output/filter/0/accept",
                        &["daddr=198.19.0.0/16 dport=443 -> drop"],
                    ),
                ],
                vec![],
            )]),
            packet: Packet::tcp(ip(ME), ip("198.19.4.4"), 443),
            path: PathKind::Send,
            verdict: Final::Drop,
            decided_by: "output#1",
            uncertain: 0,
        },
        Case {
            name: "an unreadable ruleset is unknown",
            fw: Firewall {
                error: Some("nft: permission denied".into()),
                ..fw(vec![])
            },
            packet: syn("198.18.8.5", ME, 80),
            path: PathKind::Receive,
            verdict: Final::Unknown {
                reason: "the ruleset could not be read: nft: permission denied".into(),
            },
            decided_by: "",
            uncertain: 0,
        },
    ]);
}

#[test]
fn jumps_gotos_and_returns() {
    let jumps = fw(vec![table(
        "inet",
        "filter",
        vec![
            chain(
                "input",
                "input/filter/0/accept",
                &["dport=8000-8080 -> jump:services", "-> drop"],
            ),
            chain(
                "services",
                "",
                &[
                    "saddr=198.18.2.0/24 -> return",
                    "dport=8080 -> accept",
                    "dport=8001 -> goto:deny",
                ],
            ),
            chain("deny", "", &["-> reject:icmpx_admin-prohibited"]),
        ],
        vec![],
    )]);
    let goto_falls_to_policy = fw(vec![table(
        "inet",
        "filter",
        vec![
            chain(
                "input",
                "input/filter/0/drop",
                &["dport=22 -> goto:ssh", "-> accept"],
            ),
            chain("ssh", "", &["saddr=198.18.1.0/24 -> accept"]),
            chain("loop", "", &["-> jump:loop"]),
        ],
        vec![],
    )]);
    check(vec![
        Case {
            name: "jump, accept in the user chain",
            fw: jumps.clone(),
            packet: syn("198.18.8.5", ME, 8080),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "services#2",
            uncertain: 0,
        },
        Case {
            name: "return goes back to the rule after the jump",
            fw: jumps.clone(),
            packet: syn("198.18.2.5", ME, 8080),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "input#2",
            uncertain: 0,
        },
        Case {
            name: "the end of a user chain returns too",
            fw: jumps.clone(),
            packet: syn("198.18.8.5", ME, 8002),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "input#2",
            uncertain: 0,
        },
        Case {
            name: "goto from a user chain",
            fw: jumps,
            packet: syn("198.18.8.5", ME, 8001),
            path: PathKind::Receive,
            verdict: reject(Some("icmpx admin-prohibited")),
            decided_by: "deny#1",
            uncertain: 0,
        },
        Case {
            name: "the end of a chain reached by goto from the base chain is the policy",
            fw: goto_falls_to_policy.clone(),
            packet: syn("198.18.8.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "policy:input",
            uncertain: 0,
        },
        Case {
            name: "goto then accept",
            fw: goto_falls_to_policy.clone(),
            packet: syn("198.18.1.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "ssh#1",
            uncertain: 0,
        },
        Case {
            name: "a jump to a missing chain is unknown",
            fw: input("accept", &["-> jump:nowhere"]),
            packet: syn("198.18.1.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Unknown {
                reason: "jump to chain \"nowhere\", which the ruleset does not have".into(),
            },
            decided_by: "input#1",
            uncertain: 0,
        },
        Case {
            name: "a jump loop is unknown",
            fw: fw(vec![table(
                "inet",
                "filter",
                vec![
                    chain("input", "input/filter/0/accept", &["-> jump:loop"]),
                    chain("loop", "", &["-> jump:loop"]),
                ],
                vec![],
            )]),
            packet: syn("198.18.1.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Unknown {
                reason: "jumps nest too deep (a loop?)".into(),
            },
            decided_by: "loop#1",
            uncertain: 0,
        },
        Case {
            name: "return in a base chain is its policy",
            fw: input("drop", &["saddr=198.18.1.0/24 -> return", "-> accept"]),
            packet: syn("198.18.1.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "policy:input",
            uncertain: 0,
        },
        Case {
            name: "continue, log and counter rules go on",
            fw: input("drop", &["-> continue", "dport=22 -> accept"]),
            packet: syn("198.18.1.5", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "input#2",
            uncertain: 0,
        },
    ]);
}

#[test]
fn addresses_ports_sets_and_negation() {
    let sets = fw(vec![table(
        "inet",
        "filter",
        vec![chain(
            "input",
            "input/filter/0/drop",
            &[
                "saddr=@allowed dport=@web -> accept",
                "saddr=@blocked6 -> reject",
                "saddr=@missing -> accept",
            ],
        )],
        vec![
            set(
                "allowed",
                &["198.18.0.0/24", "198.18.5.7", "198.18.6.1-198.18.6.9"],
            ),
            set("web", &["80", "443", "8000-8080"]),
            set("blocked6", &["2001:db8::1"]),
        ],
    )]);
    let ranges = input(
        "drop",
        &[
            "saddr=198.18.0.10-198.18.0.20 dport=1024-2048 -> accept",
            "!saddr=198.18.9.0/24 proto=udp dport=53 -> accept",
            "proto=6 dport=7 -> accept",
            "proto=all dport=9 -> accept",
            "!saddr=198.18.0.0/15 -> accept",
        ],
    );
    let base = |name, packet, verdict, by| Case {
        name,
        fw: sets.clone(),
        packet,
        path: PathKind::Receive,
        verdict,
        decided_by: by,
        uncertain: 0,
    };
    let mut cases = vec![
        base(
            "named sets: prefix and port",
            syn("198.18.0.77", ME, 443),
            Final::Accept,
            "input#1",
        ),
        base(
            "named sets: single address and port range",
            syn("198.18.5.7", ME, 8042),
            Final::Accept,
            "input#1",
        ),
        base(
            "named sets: address range",
            syn("198.18.6.9", ME, 80),
            Final::Accept,
            "input#1",
        ),
        base(
            "named sets: outside the range",
            syn("198.18.6.10", ME, 80),
            Final::Drop,
            "policy:input",
        ),
        base(
            "IPv6 set",
            syn("2001:db8::1", "2001:db8::2", 80),
            reject(None),
            "input#2",
        ),
    ];
    cases[3].uncertain = 1; // @missing (an ipset) might hold the address
    let r = |name, packet, verdict, by| Case {
        name,
        fw: ranges.clone(),
        packet,
        path: PathKind::Receive,
        verdict,
        decided_by: by,
        uncertain: 0,
    };
    let mut udp = syn("198.18.8.1", ME, 53);
    udp.protocol = L4::Udp;
    let mut udp_blocked = udp.clone();
    udp_blocked.src = ip("198.18.9.1");
    cases.extend([
        r(
            "address and port ranges",
            syn("198.18.0.15", ME, 2000),
            Final::Accept,
            "input#1",
        ),
        r(
            "just outside the port range",
            syn("198.18.0.15", ME, 2049),
            Final::Drop,
            "policy:input",
        ),
        r("negated prefix", udp, Final::Accept, "input#2"),
        r(
            "negated prefix, inside",
            udp_blocked,
            Final::Drop,
            "policy:input",
        ),
        r(
            "protocol by number",
            syn("198.18.8.1", ME, 7),
            Final::Accept,
            "input#3",
        ),
        r(
            "protocol all",
            syn("198.18.8.1", ME, 9),
            Final::Accept,
            "input#4",
        ),
        r(
            "a negated IPv4 match does not match IPv6",
            syn("2001:db8::9", "2001:db8::2", 22),
            Final::Drop,
            "policy:input",
        ),
    ]);
    check(cases);
}

#[test]
fn interfaces_ct_state_and_address_types() {
    let ifaces = input(
        "drop",
        &[
            "iif=lo -> accept",
            "iif=veth+ dport=22 -> accept",
            "iif=br-* dport=80 -> accept",
            "!iif=eth0 dport=443 -> accept",
        ],
    );
    let ct = input(
        "drop",
        &[
            "ct=established,related -> accept",
            "ct=invalid -> drop",
            "dport=22 ct=new -> accept",
        ],
    );
    let on = |name, iif: Option<&str>, port, verdict, by, uncertain| Case {
        name,
        fw: ifaces.clone(),
        packet: Packet {
            iif: iif.map(str::to_string),
            ..syn("198.18.8.1", ME, port)
        },
        path: PathKind::Receive,
        verdict,
        decided_by: by,
        uncertain,
    };
    let mut cases = vec![
        on("exact name", Some("lo"), 1, Final::Accept, "input#1", 0),
        on(
            "iptables wildcard",
            Some("veth12"),
            22,
            Final::Accept,
            "input#2",
            0,
        ),
        on(
            "nft wildcard",
            Some("br-x"),
            80,
            Final::Accept,
            "input#3",
            0,
        ),
        on(
            "negated name",
            Some("eth1"),
            443,
            Final::Accept,
            "input#4",
            0,
        ),
        on(
            "negated name, same",
            Some("eth0"),
            443,
            Final::Drop,
            "policy:input",
            0,
        ),
        on(
            "unknown interface",
            None,
            22,
            Final::Drop,
            "policy:input",
            2,
        ),
    ];
    let mut established = syn("198.18.8.1", ME, 80);
    established.ct_state = CtState::Established;
    let mut invalid = syn("198.18.8.1", ME, 22);
    invalid.ct_state = CtState::Invalid;
    for (name, packet, verdict, by) in [
        ("established", established, Final::Accept, "input#1"),
        ("invalid", invalid, Final::Drop, "input#2"),
        ("new", syn("198.18.8.1", ME, 22), Final::Accept, "input#3"),
        (
            "new, other port",
            syn("198.18.8.1", ME, 23),
            Final::Drop,
            "policy:input",
        ),
    ] {
        cases.push(Case {
            name,
            fw: ct.clone(),
            packet,
            path: PathKind::Receive,
            verdict,
            decided_by: by,
            uncertain: 0,
        });
    }
    let atype = input(
        "drop",
        &["atype=local dport=22 -> accept", "family=ipv6 -> accept"],
    );
    let mut not_local = syn("198.18.8.1", "198.18.0.99", 22);
    not_local.dst_is_local = false;
    for (name, packet, verdict, by) in [
        (
            "address type local",
            syn("198.18.8.1", ME, 22),
            Final::Accept,
            "input#1",
        ),
        ("not local", not_local, Final::Drop, "policy:input"),
        (
            "address family",
            syn("2001:db8::1", "2001:db8::2", 80),
            Final::Accept,
            "input#2",
        ),
    ] {
        cases.push(Case {
            name,
            fw: atype.clone(),
            packet,
            path: PathKind::Receive,
            verdict,
            decided_by: by,
            uncertain: 0,
        });
    }
    check(cases);
}

fn docker_like() -> Firewall {
    fw(vec![
        table(
            "ip",
            "nat",
            vec![
                chain(
                    "PREROUTING",
                    "prerouting/nat/-100/accept",
                    &["atype=local -> jump:DOCKER"],
                ),
                chain(
                    "DOCKER",
                    "",
                    &[
                        "iif=docker0 -> return",
                        "!iif=docker0 proto=tcp dport=8080 -> dnat:172.17.0.2:80",
                        "proto=tcp dport=2222 -> redirect:22",
                        "proto=tcp dport=2223 -> dnat::23",
                    ],
                ),
                chain(
                    "POSTROUTING",
                    "postrouting/nat/100/accept",
                    &["saddr=172.17.0.0/16 !oif=docker0 -> masquerade"],
                ),
            ],
            vec![],
        ),
        table(
            "ip",
            "filter",
            vec![
                chain(
                    "INPUT",
                    "input/filter/0/drop",
                    &["dport=22 -> accept", "dport=2222 -> accept"],
                ),
                chain(
                    "FORWARD",
                    "forward/filter/0/drop",
                    &[
                        "-> jump:DOCKER-USER",
                        "oif=docker0 ct=related,established -> accept",
                        "oif=docker0 -> jump:DOCKER",
                    ],
                ),
                chain(
                    "DOCKER",
                    "",
                    &["daddr=172.17.0.2 !iif=docker0 oif=docker0 proto=tcp dport=80 -> accept"],
                ),
                chain(
                    "DOCKER-USER",
                    "",
                    &["saddr=198.18.7.0/24 -> drop", "-> return"],
                ),
            ],
            vec![],
        ),
    ])
}

#[test]
fn nat_is_followed() {
    let docker = docker_like();
    let to_container = |src: &str| Packet {
        oif: Some("docker0".into()),
        ..syn(src, ME, 8080)
    };
    let mut established = syn("198.18.8.1", ME, 2222);
    established.ct_state = CtState::Established;
    check(vec![
        Case {
            name: "DNAT to a container: forward accepts",
            fw: docker.clone(),
            packet: to_container("198.18.8.1"),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "DOCKER#1",
            uncertain: 0,
        },
        Case {
            name: "DNAT to a container: DOCKER-USER drops",
            fw: docker.clone(),
            packet: to_container("198.18.7.1"),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "DOCKER-USER#1",
            uncertain: 0,
        },
        Case {
            name: "DNAT to a container, the route's interface unknown",
            fw: docker.clone(),
            packet: syn("198.18.8.1", ME, 8080),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "policy:FORWARD",
            uncertain: 1,
        },
        Case {
            name: "redirect: input sees the new port",
            fw: docker.clone(),
            packet: syn("198.18.8.1", ME, 2222),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "INPUT#1",
            uncertain: 0,
        },
        Case {
            name: "port-only DNAT stays local",
            fw: docker.clone(),
            packet: syn("198.18.8.1", ME, 2223),
            path: PathKind::Receive,
            verdict: Final::Drop,
            decided_by: "policy:INPUT",
            uncertain: 0,
        },
        Case {
            name: "an established packet skips NAT",
            fw: docker,
            packet: established,
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "INPUT#2",
            uncertain: 0,
        },
    ]);
    let d = evaluate(
        &docker_like(),
        &Packet {
            oif: Some("docker0".into()),
            ..syn("198.18.8.1", ME, 8080)
        },
        PathKind::Receive,
    );
    let nat = d.nat.expect("DNAT reported");
    assert_eq!(nat.dst, Some(ip("172.17.0.2")));
    assert_eq!(nat.port, Some(80));
    assert!(nat.forwarded);
    assert_eq!(nat.original_port, Some(8080));
    assert_eq!(nat.rule.chain, "DOCKER");
    assert_eq!(nat.rule.position, 2);
    let chains: Vec<String> = d
        .trace
        .iter()
        .filter_map(|s| match s {
            Step::BaseChain { chain, .. } => Some(chain.clone()),
            Step::Entered { chain, .. } => Some(format!(">{chain}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        chains,
        [
            "PREROUTING",
            ">DOCKER",
            "FORWARD",
            ">DOCKER-USER",
            ">DOCKER",
            "POSTROUTING"
        ]
    );
}

#[test]
fn undecidable_rules_make_the_answer_uncertain() {
    let limit = input(
        "accept",
        &[
            "other=-m_limit_--limit_5/min -> drop",
            "other=meta_mark_0x1 -> accept",
            "dport=22 -> accept",
        ],
    );
    let unknown_action = input("drop", &["dport=22 -> other:-j_SOMETHING", "-> accept"]);
    let known_targets = input(
        "drop",
        &[
            "-> other:-j_MARK_--set-xmark_0x1/0xffffffff",
            "-> other:-j_CT_--notrack",
            "ct=untracked -> accept",
        ],
    );
    let icmp = input(
        "drop",
        &["proto=icmp other=-m_icmp_--icmp-type_8 -> accept"],
    );
    let mut echo = Packet {
        protocol: L4::Icmp,
        dport: None,
        icmp_type: Some(8),
        ..syn("198.18.8.1", ME, 0)
    };
    let mut cases = vec![
        Case {
            name: "a rate limit before the accept: probably accepted",
            fw: limit,
            packet: syn("198.18.8.1", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "input#3",
            // The mark accept could not change an accept.
            uncertain: 1,
        },
        Case {
            name: "an unknown action: the walk goes on",
            fw: unknown_action,
            packet: syn("198.18.8.1", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "input#2",
            uncertain: 1,
        },
        Case {
            name: "MARK goes on, CT --notrack makes the packet untracked",
            fw: known_targets,
            packet: syn("198.18.8.1", ME, 22),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "input#3",
            uncertain: 0,
        },
        Case {
            name: "icmp type understood",
            fw: icmp.clone(),
            packet: echo.clone(),
            path: PathKind::Receive,
            verdict: Final::Accept,
            decided_by: "input#1",
            uncertain: 0,
        },
    ];
    echo.icmp_type = Some(0);
    cases.push(Case {
        name: "icmp type understood, other type",
        fw: icmp.clone(),
        packet: echo.clone(),
        path: PathKind::Receive,
        verdict: Final::Drop,
        decided_by: "policy:input",
        uncertain: 0,
    });
    echo.icmp_type = None;
    cases.push(Case {
        name: "icmp type not given",
        fw: icmp,
        packet: echo,
        path: PathKind::Receive,
        verdict: Final::Drop,
        decided_by: "policy:input",
        uncertain: 1,
    });
    cases.push(Case {
        name: "queued to userspace",
        fw: input("accept", &["-> queue"]),
        packet: syn("198.18.8.1", ME, 22),
        path: PathKind::Receive,
        verdict: Final::Unknown {
            reason: "queued to a userspace program (NFQUEUE)".into(),
        },
        decided_by: "input#1",
        uncertain: 0,
    });
    check(cases);

    let d = evaluate(
        &input("accept", &["other=-m_limit_--limit_5/min -> drop"]),
        &syn("198.18.8.1", ME, 22),
        PathKind::Receive,
    );
    assert!(!d.is_certain());
    assert_eq!(d.uncertain[0].rule.position, 1);
    assert!(
        d.uncertain[0].reason.contains("-m limit --limit 5/min"),
        "{}",
        d.uncertain[0].reason
    );
}

#[test]
fn decisions_serialise_for_the_json_answer() {
    let d = evaluate(
        &input("drop", &["dport=22 -> accept"]),
        &syn("198.18.8.1", ME, 80),
        PathKind::Receive,
    );
    let json = serde_json::to_value(&d).expect("json");
    assert_eq!(json["verdict"]["verdict"], "drop");
    assert_eq!(json["policy"]["chain"], "input");
    assert_eq!(json["trace"][0]["step"], "base_chain");
}
