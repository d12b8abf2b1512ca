//! The cause checks on hand-made facts: each cause appears when its facts
//! are there, and never without them. (The end-to-end tests make the causes
//! a namespace can make for real; load, steal and memory pressure are facts
//! no namespace can fake, so they are tested here.)

use super::{Explanation, Verdict, explain};
use crate::clock::Sample;
use crate::model::{
    Addr, BindScope, Interface, Listener, MemoryTrend, NodeFacts, Process, Protocol, Resources,
    Route,
};
use crate::probe::{
    FailureCounts, Matrix, Outcome, PlannedTarget, ProbeKind, TargetState, WindowInput,
};
use crate::state::{Node, unix_nanos};
use reachmap_proto::v1 as pb;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn facts(addr: &str) -> NodeFacts {
    let mut f = NodeFacts::default();
    f.interfaces.insert(
        2,
        Interface {
            index: 2,
            name: "eth0".into(),
            mac: String::new(),
            mtu: 1500,
            admin_up: true,
            oper_state: "up".into(),
            kind: "veth".into(),
            addresses: vec![Addr {
                ip: ip(addr),
                prefix_len: 24,
                scope: "universe".into(),
            }],
        },
    );
    f.routes.push(Route {
        destination: ip("198.18.0.0"),
        prefix_len: 24,
        gateway: None,
        interface: "eth0".into(),
        preferred_source: None,
        metric: 0,
        table: 254,
    });
    f
}

fn listener(address: &str, port: u16, scope: BindScope) -> Listener {
    Listener {
        protocol: Protocol::Tcp,
        address: ip(address),
        port,
        scope,
        v6only: None,
        accept_queue: 0,
        accept_queue_limit: 128,
        established: 0,
        processes: vec![Process {
            pid: 42,
            name: "web".into(),
            unit: Some("web.service".into()),
            cgroup: None,
        }],
        interface: None,
        uid: 0,
        inode: 1,
    }
}

fn resources() -> Resources {
    Resources {
        load1: 0.5,
        cpus: 2,
        cpu_busy_pct: Some(20.0),
        cpu_steal_pct: Some(0.0),
        mem_total_bytes: 8 << 30,
        mem_available_bytes: 6 << 30,
        ..Resources::default()
    }
}

struct World {
    nodes: BTreeMap<String, Node>,
    matrix: Matrix,
}

impl World {
    fn new(a: NodeFacts, b: NodeFacts) -> World {
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), Node::for_test("a", true, Some(a)));
        nodes.insert("b".to_string(), Node::for_test("b", true, Some(b)));
        World {
            nodes,
            matrix: Matrix::new(Duration::from_secs(10)),
        }
    }

    /// a's probes of b:port end with `state`, `loss` and `failure`.
    fn probe(&mut self, port: u16, state: TargetState, loss: f64, failure: Option<Outcome>) {
        let t = PlannedTarget::new("b", ip("198.18.0.12"), port, ProbeKind::Tcp);
        self.matrix.set_plan("a", std::slice::from_ref(&t));
        let failed = (loss * 10.0).round() as u32;
        self.matrix.apply(
            "a",
            vec![WindowInput {
                target: t,
                sent: 10,
                ok: 10 - failed,
                failures: FailureCounts {
                    timeout: if failure == Some(Outcome::Timeout) {
                        failed
                    } else {
                        0
                    },
                    refused: if failure == Some(Outcome::Refused) {
                        failed
                    } else {
                        0
                    },
                    ..FailureCounts::default()
                },
                rtt_p50_ms: Some(0.3),
                rtt_p99_ms: Some(0.9),
                last_outcome: failure.or(Some(Outcome::Open)),
                last_failure: failure.map(|o| (o, unix_nanos(SystemTime::now()))),
                state,
            }],
            unix_nanos(SystemTime::now()),
        );
    }

    fn why(&self, port: u16) -> Explanation {
        explain(&self.matrix, &self.nodes, "a", "b", port, SystemTime::now()).expect("explained")
    }

    fn b(&mut self) -> &mut Node {
        self.nodes.get_mut("b").expect("b")
    }
}

fn codes(e: &Explanation) -> Vec<(&str, &str)> {
    e.causes
        .iter()
        .map(|c| (c.code.as_str(), c.node.as_str()))
        .collect()
}

/// b's address went from .12 to .22 half a minute ago.
fn b_moved_to_22(w: &mut World) {
    let f = w.b().facts.as_mut().expect("f");
    f.interfaces.get_mut(&2).expect("eth0").addresses[0].ip = ip("198.18.0.22");
    w.b().push_for_test(
        SystemTime::now() - Duration::from_secs(30),
        pb::event::Kind::AddressChanged(pb::AddressChanged {
            interface: "eth0".into(),
            removed: Some(pb::Address {
                ip: "198.18.0.12".into(),
                prefix_len: 24,
                scope: pb::AddressScope::Universe as i32,
            }),
            added: None,
        }),
    );
}

fn world() -> World {
    let mut a = facts("198.18.0.11");
    a.resources = Some(resources());
    let mut b = facts("198.18.0.12");
    b.resources = Some(resources());
    World::new(a, b)
}

#[test]
fn an_overloaded_stealing_short_of_memory_host_explains_slow_probes() {
    let mut w = world();
    let r = w
        .b()
        .facts
        .as_mut()
        .and_then(|f| f.resources.as_mut())
        .expect("resources");
    r.load1 = 9.0;
    r.cpu_steal_pct = Some(35.0);
    r.mem_available_bytes = 100 << 20;
    r.memory_trend = MemoryTrend::Growing;
    r.memory_growth_mib_per_min = 12.0;
    w.probe(7442, TargetState::Degraded, 0.3, Some(Outcome::Timeout));
    let e = w.why(7442);
    assert_eq!(e.verdict, Verdict::Degraded);
    let c = codes(&e);
    for want in ["HOST_OVERLOADED", "CPU_STEAL", "MEMORY_PRESSURE"] {
        assert!(c.contains(&(want, "b")), "{want} on b: {c:?}");
    }
    assert!(!c.iter().any(|(_, n)| *n == "a"), "a is healthy: {c:?}");
    assert!(c.contains(&("INTERMITTENT_LOSS", "b")), "{c:?}");
    let mem = e
        .causes
        .iter()
        .find(|c| c.code == "MEMORY_PRESSURE")
        .expect("memory");
    assert!(mem.detail.contains("12.0 MiB/min"), "{}", mem.detail);
    assert!(mem.evidence.iter().all(|v| !v.text.is_empty()));
}

#[test]
fn resource_causes_need_slow_or_lost_probes() {
    let mut w = world();
    w.b()
        .facts
        .as_mut()
        .and_then(|f| f.resources.as_mut())
        .expect("r")
        .load1 = 9.0;
    // Refused is an answer, not slowness: load is not the cause.
    w.probe(7442, TargetState::Failing, 1.0, Some(Outcome::Refused));
    let e = w.why(7442);
    assert!(
        !codes(&e).iter().any(|(c, _)| *c == "HOST_OVERLOADED"),
        "{:?}",
        codes(&e)
    );
}

#[test]
fn no_fact_no_cause_and_the_checks_are_listed() {
    let mut w = world();
    w.b().facts.as_mut().expect("f").listeners.insert(
        listener("0.0.0.0", 8080, BindScope::Any).key(),
        listener("0.0.0.0", 8080, BindScope::Any),
    );
    w.probe(8080, TargetState::Failing, 1.0, Some(Outcome::Refused));
    let e = w.why(8080);
    assert_eq!(e.verdict, Verdict::Unreachable);
    assert!(e.causes.is_empty(), "{:?}", codes(&e));
    assert!(e.checked.len() >= 5, "{:?}", e.checked);
    assert!(
        e.checked
            .iter()
            .any(|c| c.contains("TCP listeners on port 8080")),
        "{:?}",
        e.checked
    );
}

#[test]
fn bound_to_another_address_and_listen_queue_overflow() {
    let mut w = world();
    let mut l = listener("198.18.0.99", 8080, BindScope::Address);
    l.accept_queue = 128;
    w.b()
        .facts
        .as_mut()
        .expect("f")
        .listeners
        .insert(l.key(), l);
    w.probe(8080, TargetState::Failing, 1.0, Some(Outcome::Refused));
    let e = w.why(8080);
    let c = codes(&e);
    assert_eq!(c[0], ("BOUND_OTHER_ADDRESS", "b"), "{c:?}");
    assert!(c.contains(&("LISTEN_QUEUE_OVERFLOW", "b")), "{c:?}");
    assert!(
        e.causes[0]
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("0.0.0.0:8080"))
    );
}

#[test]
fn an_interface_down_and_a_full_conntrack_table() {
    let mut w = world();
    let f = w.b().facts.as_mut().expect("f");
    let eth0 = f.interfaces.get_mut(&2).expect("eth0");
    eth0.admin_up = false;
    eth0.oper_state = "down".into();
    let r = f.resources.as_mut().expect("r");
    r.conntrack_count = Some(65_536);
    r.conntrack_max = Some(65_536);
    w.probe(7442, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(7442);
    let c = codes(&e);
    assert_eq!(c[0], ("INTERFACE_DOWN", "b"), "{c:?}");
    assert!(c.contains(&("CONNTRACK_FULL", "b")), "{c:?}");
    assert!(
        !c.iter().any(|(code, _)| *code == "NETWORK_PATH"),
        "the facts explain it, so it is not the network path: {c:?}"
    );
}

#[test]
fn clock_skew_and_a_reboot() {
    let mut w = world();
    w.nodes.get_mut("a").expect("a").clock = Some(Sample {
        offset_nanos: 2_500_000_000,
        rtt_nanos: 1_000_000,
    });
    w.b().clock = Some(Sample {
        offset_nanos: 0,
        rtt_nanos: 1_000_000,
    });
    w.b().push_for_test(
        SystemTime::now() - Duration::from_secs(60),
        pb::event::Kind::NodeRebooted(pb::NodeRebooted {
            old_boot_id: "x".into(),
            new_boot_id: "y".into(),
        }),
    );
    w.probe(7442, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(7442);
    let c = codes(&e);
    assert!(c.contains(&("CLOCK_SKEW", "a")), "{c:?}");
    assert!(c.contains(&("NODE_REBOOTED", "b")), "{c:?}");
    assert!(
        e.changes.iter().any(|x| x.kind == "node_rebooted"),
        "{:?}",
        e.changes
    );
}

#[test]
fn the_destination_lost_the_address_it_is_probed_at() {
    let mut w = world();
    b_moved_to_22(&mut w);
    w.probe(7442, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(7442);
    assert_eq!(
        codes(&e)[0],
        ("PEER_ADDRESS_CHANGED", "b"),
        "{:?}",
        codes(&e)
    );
    assert!(
        e.causes[0]
            .evidence
            .iter()
            .any(|v| v.text.contains("198.18.0.22"))
    );
}

#[test]
fn a_port_forward_is_followed_to_the_rule_that_drops_it() {
    use crate::model::firewall::{
        Chain, Field, Firewall, Match, Rule, Table, Value, Verdict as V, VerdictKind,
    };
    let rule = |position: u32, port: u16, verdict: V, text: &str| Rule {
        handle: Some(u64::from(position) + 10),
        position,
        matches: vec![
            Match {
                field: Field::Protocol,
                negated: false,
                values: vec![Value::Text("tcp".into())],
            },
            Match {
                field: Field::DestinationPort,
                negated: false,
                values: vec![Value::Ports {
                    first: port,
                    last: port,
                }],
            },
        ],
        verdict,
        packets: None,
        bytes: None,
        comment: None,
        text: text.into(),
        unsupported: false,
    };
    let base = |name: &str, hook: &str, kind: &str, priority: i32, rules: Vec<Rule>| Chain {
        name: name.into(),
        hook: Some(hook.into()),
        chain_type: Some(kind.into()),
        priority: Some(priority),
        policy: Some("accept".into()),
        rules,
    };
    let fw = Firewall {
        backend: "nftables".into(),
        generation: Some(3),
        hash: 1,
        error: None,
        tables: vec![Table {
            family: "inet".into(),
            name: "edge".into(),
            backend: "nftables".into(),
            sets: vec![],
            chains: vec![
                base(
                    "pre",
                    "prerouting",
                    "nat",
                    -100,
                    vec![rule(
                        1,
                        7442,
                        V {
                            kind: VerdictKind::Redirect,
                            target: None,
                            port: Some(9000),
                        },
                        "tcp dport 7442 redirect to :9000",
                    )],
                ),
                base(
                    "input",
                    "input",
                    "filter",
                    0,
                    vec![rule(
                        1,
                        9000,
                        V {
                            kind: VerdictKind::Drop,
                            target: None,
                            port: None,
                        },
                        "tcp dport 9000 drop",
                    )],
                ),
            ],
        }],
    };
    let mut w = world();
    w.b().facts.as_mut().expect("f").firewall = Some(fw);
    w.probe(7442, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(7442);
    let top = &e.causes[0];
    assert_eq!(
        (top.code.as_str(), top.node.as_str()),
        ("FIREWALL_INBOUND", "b"),
        "{:?}",
        codes(&e)
    );
    assert!(top.detail.contains("tcp dport 9000 drop"), "{}", top.detail);
    assert!(
        top.evidence
            .iter()
            .any(|v| v.text.contains("redirect") && v.text.contains("9000")),
        "the port forward is in the evidence: {:?}",
        top.evidence
    );
    assert!(
        e.checked.iter().any(|c| c.contains("rewrites")),
        "{:?}",
        e.checked
    );
}

#[test]
fn a_name_still_pointing_at_the_old_address_is_stale_dns() {
    let mut w = world();
    b_moved_to_22(&mut w);
    let lookup = |name: &str, node: &str, addresses: &[&str], error: Option<&str>| {
        crate::probe::ResolvedName {
            name: name.into(),
            node: node.into(),
            addresses: addresses.iter().map(|a| ip(a)).collect(),
            error: error.map(Into::into),
            resolved_unix_nanos: unix_nanos(SystemTime::now()),
        }
    };
    // Names of other nodes, a name that resolves right and one that does
    // not resolve at all are no cause.
    w.nodes.get_mut("a").expect("a").names = vec![
        lookup("other.fleet.test", "c", &["198.18.0.99"], None),
        lookup("b-new.fleet.test", "b", &["198.18.0.22"], None),
        lookup(
            "b-gone.fleet.test",
            "b",
            &[],
            Some("Name or service not known"),
        ),
    ];
    // The path to the new address works.
    let t = PlannedTarget::new("b", ip("198.18.0.22"), 7442, ProbeKind::Tcp);
    w.matrix.set_plan("a", std::slice::from_ref(&t));
    w.matrix.apply(
        "a",
        vec![WindowInput {
            target: t,
            sent: 10,
            ok: 10,
            failures: FailureCounts::default(),
            rtt_p50_ms: Some(0.3),
            rtt_p99_ms: Some(0.9),
            last_outcome: Some(Outcome::Open),
            last_failure: None,
            state: TargetState::Ok,
        }],
        unix_nanos(SystemTime::now()),
    );
    let e = w.why(7442);
    assert_eq!(e.verdict, Verdict::Reachable);
    assert!(e.causes.is_empty(), "{:?}", codes(&e));
    assert!(
        e.checked
            .iter()
            .any(|c| c.contains("b-new.fleet.test to 198.18.0.22, b's")),
        "{:?}",
        e.checked
    );
    assert!(
        e.checked
            .iter()
            .any(|c| c.contains("cannot look up b-gone.fleet.test")),
        "{:?}",
        e.checked
    );

    // a still resolves db.fleet.test to b's old address.
    w.nodes.get_mut("a").expect("a").names.push(lookup(
        "db.fleet.test",
        "b",
        &["198.18.0.12"],
        None,
    ));
    let e = w.why(7442);
    assert_eq!(e.verdict, Verdict::Reachable, "the path itself works");
    assert_eq!(codes(&e), vec![("STALE_DNS", "a")]);
    let c = &e.causes[0];
    assert!(
        c.detail.contains("db.fleet.test") && c.detail.contains("no longer has"),
        "{}",
        c.detail
    );
    assert!(
        c.fix
            .as_deref()
            .is_some_and(|f| f.contains("db.fleet.test at 198.18.0.22")),
        "{:?}",
        c.fix
    );
    let kinds: Vec<&str> = c.evidence.iter().map(|v| v.kind.as_str()).collect();
    assert_eq!(kinds, ["fact", "event", "fact"], "{:?}", c.evidence);
}
