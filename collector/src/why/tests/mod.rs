//! The cause checks on hand-made facts: each cause appears when its facts
//! are there, and never without them. (The end-to-end tests make the causes
//! a namespace can make for real; load, steal and memory pressure are facts
//! no namespace can fake, so they are tested here.)

mod addresses;
mod blind;
mod firewall;
mod kernel;
mod listening;
mod path;
mod service;

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

/// A host with one address on eth0 in 198.18.0.0/24 and its route.
pub(crate) fn facts(addr: &str) -> NodeFacts {
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
    owners: Vec<crate::why::Declared>,
}

impl World {
    fn new(a: NodeFacts, b: NodeFacts) -> World {
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), Node::for_test("a", true, Some(a)));
        nodes.insert("b".to_string(), Node::for_test("b", true, Some(b)));
        World {
            nodes,
            matrix: Matrix::new(Duration::from_secs(10)),
            owners: Vec::new(),
        }
    }

    /// a's probes of b:port end with `state`, `loss` and `failure`.
    fn probe(&mut self, port: u16, state: TargetState, loss: f64, failure: Option<Outcome>) {
        self.probe_at("198.18.0.12", port, state, loss, failure);
    }

    /// `probe`, to one of b's addresses.
    fn probe_at(
        &mut self,
        address: &str,
        port: u16,
        state: TargetState,
        loss: f64,
        failure: Option<Outcome>,
    ) {
        let t = PlannedTarget::new("b", ip(address), port, ProbeKind::Tcp);
        self.matrix.set_plan("a", std::slice::from_ref(&t));
        let failed = (loss * 10.0).round() as u32;
        self.matrix.apply(
            "a",
            vec![WindowInput {
                target: t.into(),
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
                last_http_status: None,
                last_tls_error: None,
            }],
            unix_nanos(SystemTime::now()),
        );
    }

    /// Every fixture test asks through here, so each also checks that
    /// every evidence line carries its time.
    fn why(&self, port: u16) -> Explanation {
        let e = explain(
            &self.matrix,
            &self.nodes,
            &self.owners,
            "a",
            "b",
            port,
            SystemTime::now(),
        )
        .expect("explained");
        assert_every_evidence_has_its_time(&e);
        e
    }

    fn b(&mut self) -> &mut Node {
        self.nodes.get_mut("b").expect("b")
    }
}

/// Every evidence line says when its fact was read, its event happened or
/// its probe reported.
fn assert_every_evidence_has_its_time(e: &Explanation) {
    for c in &e.causes {
        for v in &c.evidence {
            assert!(v.time > 0, "{} evidence without a time: {v:?}", c.code);
        }
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
    let f = w.b().facts_mut();
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
