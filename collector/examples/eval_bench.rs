//! Benchmark of the firewall evaluator: a 5,000-rule ruleset (prefixes,
//! port ranges, named sets, jumps into user chains, a NAT table), compiled
//! once, then packets evaluated against it. Run in release:
//!
//!     cargo run --release -p reachmap-collector --example eval_bench
//!
//! Prints the compile time and the time per evaluated packet for packets
//! decided near the end of the ruleset, by the policy after every rule,
//! and early. The goal is under 1 ms per packet.

use reachmap_collector::model::firewall::{
    Chain, Field, Firewall, Match, Rule, Set, Table, Value, Verdict, VerdictKind,
};
use reachmap_collector::packet::firewall::{Compiled, Final, Packet, PathKind};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const USER_CHAINS: usize = 48;
const RULES_PER_USER_CHAIN: usize = 100;
const NAT_RULES: usize = 151;

/// A small deterministic generator, so every run builds the same ruleset.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn m(field: Field, negated: bool, values: Vec<Value>) -> Match {
    Match {
        field,
        negated,
        values,
    }
}

fn rule(position: usize, matches: Vec<Match>, kind: VerdictKind, target: Option<String>) -> Rule {
    let text = format!(
        "{} {kind:?}",
        matches
            .iter()
            .map(|m| format!(
                "{:?} {}",
                m.field,
                m.values
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Rule {
        handle: Some(position as u64 + 10),
        position: position as u32,
        matches,
        verdict: Verdict {
            kind,
            target,
            port: None,
        },
        packets: Some(0),
        bytes: Some(0),
        comment: None,
        text,
        unsupported: false,
    }
}

/// A random rule of a user chain: a source prefix inside 10.0.0.0/8 (the
/// probes come from 198.18.0.0/15, so it never matches them), ports, a
/// protocol, sometimes an interface or a set.
fn filler(g: &mut Lcg, position: usize) -> Rule {
    let mut ms = Vec::new();
    let len = [16u8, 20, 24, 28, 32][g.below(5) as usize];
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    ms.push(m(
        Field::SourceAddress,
        false,
        vec![Value::Prefix {
            ip: v4((0x0a00_0000 | g.below(1 << 24)) & mask),
            len,
        }],
    ));
    ms.push(m(Field::Protocol, false, vec![Value::Text("tcp".into())]));
    let port = match g.below(3) {
        0 => Value::Ports {
            first: g.below(65535) as u16,
            last: 0,
        },
        1 => {
            let a = g.below(60000) as u16;
            Value::Ports {
                first: a,
                last: a + g.below(5000) as u16,
            }
        }
        _ => Value::SetRef("web".into()),
    };
    let port = match port {
        Value::Ports { first, last: 0 } => Value::Ports { first, last: first },
        p => p,
    };
    ms.push(m(Field::DestinationPort, false, vec![port]));
    if g.below(4) == 0 {
        ms.push(m(
            Field::InInterface,
            false,
            vec![Value::Text("eth+".into())],
        ));
    }
    let kind = [VerdictKind::Accept, VerdictKind::Drop, VerdictKind::Reject][g.below(3) as usize];
    rule(position, ms, kind, None)
}

/// `every_chain`: the jumps match every packet, so a packet that no rule
/// decides visits all 5,000 rules (the worst case).
fn ruleset(every_chain: bool) -> Firewall {
    let mut g = Lcg(0x5eed);
    let mut chains = Vec::new();
    // The base chain: established first, then one jump per user chain,
    // each keyed on a source prefix; the probe's /24 is the last one.
    let mut input = vec![rule(
        1,
        vec![m(
            Field::CtState,
            false,
            vec![
                Value::Text("established".into()),
                Value::Text("related".into()),
            ],
        )],
        VerdictKind::Accept,
        None,
    )];
    for c in 0..USER_CHAINS {
        let prefix = if c == USER_CHAINS - 1 {
            v4(0xc612_0000) // 198.18.0.0/16: the probes
        } else {
            v4(0x0a00_0000 | ((c as u32) << 16))
        };
        let key = m(
            Field::SourceAddress,
            false,
            vec![Value::Prefix {
                ip: prefix,
                len: 16,
            }],
        );
        input.push(rule(
            input.len() + 1,
            if every_chain { vec![] } else { vec![key] },
            VerdictKind::Jump,
            Some(format!("zone{c}")),
        ));
        let mut rules: Vec<Rule> = (0..RULES_PER_USER_CHAIN - 2)
            .map(|i| filler(&mut g, i + 1))
            .collect();
        // Near the end of each user chain: ssh from the allowed set.
        rules.push(rule(
            rules.len() + 1,
            vec![
                m(
                    Field::SourceAddress,
                    false,
                    vec![Value::SetRef("allowed".into())],
                ),
                m(
                    Field::DestinationPort,
                    false,
                    vec![Value::Ports {
                        first: 22,
                        last: 22,
                    }],
                ),
            ],
            VerdictKind::Accept,
            None,
        ));
        rules.push(rule(rules.len() + 1, vec![], VerdictKind::Return, None));
        chains.push(Chain {
            name: format!("zone{c}"),
            hook: None,
            chain_type: None,
            priority: None,
            policy: None,
            rules,
        });
    }
    chains.insert(
        0,
        Chain {
            name: "input".into(),
            hook: Some("input".into()),
            chain_type: Some("filter".into()),
            priority: Some(0),
            policy: Some("drop".into()),
            rules: input,
        },
    );
    let allowed: Vec<Value> = (0..1000)
        .map(|i| Value::Prefix {
            ip: v4(0xc612_0000 | (i << 8)),
            len: 24,
        })
        .collect();
    let web: Vec<Value> = [80u16, 443, 8080, 8443]
        .iter()
        .map(|p| Value::Ports {
            first: *p,
            last: *p,
        })
        .collect();
    let filter = Table {
        family: "inet".into(),
        name: "filter".into(),
        backend: "nftables".into(),
        chains,
        sets: vec![
            Set {
                name: "allowed".into(),
                set_type: "ipv4_addr".into(),
                elements: allowed,
            },
            Set {
                name: "web".into(),
                set_type: "inet_service".into(),
                elements: web,
            },
        ],
    };
    let nat_rules = (0..NAT_RULES)
        .map(|i| {
            let mut r = rule(
                i + 1,
                vec![
                    m(Field::Protocol, false, vec![Value::Text("tcp".into())]),
                    m(
                        Field::DestinationPort,
                        false,
                        vec![Value::Ports {
                            first: 30000 + i as u16,
                            last: 30000 + i as u16,
                        }],
                    ),
                ],
                VerdictKind::Dnat,
                Some(format!("10.1.{}.{}", i / 200, i % 200 + 1)),
            );
            r.verdict.port = Some(80);
            r
        })
        .collect();
    let nat = Table {
        family: "ip".into(),
        name: "nat".into(),
        backend: "nftables".into(),
        chains: vec![Chain {
            name: "prerouting".into(),
            hook: Some("prerouting".into()),
            chain_type: Some("nat".into()),
            priority: Some(-100),
            policy: Some("accept".into()),
            rules: nat_rules,
        }],
        sets: vec![],
    };
    Firewall {
        backend: "nftables".into(),
        tables: vec![nat, filter],
        ..Firewall::default()
    }
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    // Warm up, then take the best of five rounds.
    for _ in 0..iterations / 10 + 1 {
        f();
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iterations {
                f();
            }
            t.elapsed() / iterations
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let fw = ruleset(false);
    let rules = fw.rule_count();
    let compile = per_call(20, || {
        black_box(Compiled::new(black_box(&fw)));
    });
    let compiled = Compiled::new(&fw);
    println!(
        "ruleset: {rules} rules, {USER_CHAINS} user chains, sets of 1000 prefixes and 4 ports"
    );
    println!("compile: {:.3} ms", compile.as_secs_f64() * 1e3);

    let me: IpAddr = "198.18.255.2".parse().unwrap_or(v4(0));
    let probe = |src: &str, port: u16| Packet {
        iif: Some("eth0".into()),
        dst_is_local: true,
        ..Packet::tcp(src.parse().unwrap_or(v4(0)), me, port)
    };
    let cases = [
        (
            "accepted near the end (last user chain, rule 99 of 100)",
            probe("198.18.3.7", 22),
            Final::Accept,
        ),
        (
            "dropped by the policy after the last user chain",
            probe("198.18.3.7", 23),
            Final::Drop,
        ),
        (
            "no user chain entered, policy",
            probe("203.0.113.9", 22),
            Final::Drop,
        ),
    ];
    let every = Compiled::new(&ruleset(true));
    let cases = cases.iter().map(|(n, p, f)| (*n, p, f, &compiled)).chain([(
        "every rule visited (all jumps taken), then the policy",
        &cases[1].1,
        &Final::Drop,
        &every,
    )]);
    let mut worst = Duration::ZERO;
    for (name, packet, expected, compiled) in cases {
        let d = compiled.evaluate(packet, PathKind::Receive);
        assert_eq!(&d.verdict, expected, "{name}: {d:?}");
        assert!(d.is_certain(), "{name}: {d:?}");
        let t = per_call(2000, || {
            black_box(compiled.evaluate(black_box(packet), PathKind::Receive));
        });
        worst = worst.max(t);
        println!("evaluate, {name}: {:.1} µs", t.as_secs_f64() * 1e6);
    }
    println!(
        "worst per packet: {:.1} µs (goal: under 1000 µs) — {}",
        worst.as_secs_f64() * 1e6,
        if worst < Duration::from_millis(1) {
            "ok"
        } else {
            "TOO SLOW"
        }
    );
    if worst >= Duration::from_millis(1) {
        std::process::exit(1);
    }
}
