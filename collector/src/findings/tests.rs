//! Findings on hand-made fleets: each appears from the cells and facts that
//! make it, once, covering exactly its cells.

use super::*;
use crate::probe::{FailureCounts, Outcome, PlannedTarget, ProbeKind, TargetState, WindowInput};
use crate::state::unix_nanos;
use crate::why::tests::facts;
use reachmap_proto::v1 as pb;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

const PORT: u16 = 7442;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// iptables-save text through the agent's parser, its wire conversion and
/// the collector's validation, as a ruleset travels for real.
pub(crate) fn iptables(text: &str) -> crate::model::firewall::Firewall {
    use reachmap_agent::facts::firewall::{Backend, Family, Ruleset};
    let tables = reachmap_agent::inspect::firewall::parse_iptables_save(
        text,
        Family::Ip,
        Backend::IptablesNft,
    )
    .expect("iptables-save parses");
    let mut rs = Ruleset {
        tables,
        ..Ruleset::default()
    };
    rs.finish();
    crate::validate::firewall::firewall("fw", &reachmap_agent::wire::firewall::firewall(&rs))
        .expect("validates")
}

/// Nodes `names`, node i at 198.18.0.(10+i), zone from the name's first
/// letter, and every cell between them planned and reported by `state`.
pub(crate) struct World {
    pub nodes: BTreeMap<String, Node>,
    pub matrix: Matrix,
    names: Vec<String>,
}

impl World {
    pub(crate) fn new(names: &[&str]) -> World {
        let mut nodes = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let mut node = Node::for_test(n, true, Some(facts(&format!("198.18.0.{}", 10 + i))));
            node.labels
                .insert("zone".into(), format!("zone-{}", &n[..1]));
            nodes.insert(n.to_string(), node);
        }
        World {
            nodes,
            matrix: Matrix::new(Duration::from_secs(10)),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub(crate) fn addr(&self, n: &str) -> IpAddr {
        let i = self.names.iter().position(|x| x == n).expect("known node");
        ip(&format!("198.18.0.{}", 10 + i))
    }

    /// Plans every pair on `ports` and reports each cell's state.
    pub(crate) fn report(&mut self, ports: &[u16], state: impl Fn(&str, &str, u16) -> TargetState) {
        let now = unix_nanos(SystemTime::now());
        for s in &self.names {
            let targets: Vec<PlannedTarget> = self
                .names
                .iter()
                .filter(|d| *d != s)
                .flat_map(|d| {
                    ports
                        .iter()
                        .map(|p| PlannedTarget::new(d, self.addr(d), *p, ProbeKind::Tcp))
                })
                .collect();
            self.matrix.set_plan(s, &targets);
            let windows = targets
                .into_iter()
                .map(|t| {
                    let st = state(s, &t.node, t.port);
                    let failed = if st == TargetState::Ok { 0 } else { 10 };
                    WindowInput {
                        sent: 10,
                        ok: 10 - failed,
                        failures: FailureCounts {
                            timeout: failed,
                            ..FailureCounts::default()
                        },
                        rtt_p50_ms: Some(0.3),
                        rtt_p99_ms: Some(0.9),
                        last_outcome: Some(if failed > 0 {
                            Outcome::Timeout
                        } else {
                            Outcome::Open
                        }),
                        last_failure: (failed > 0).then_some((Outcome::Timeout, now)),
                        state: st,
                        last_http_status: None,
                        last_tls_error: None,
                        target: t.into(),
                    }
                })
                .collect();
            self.matrix.apply(s, windows, now);
        }
    }

    pub(crate) fn node(&mut self, n: &str) -> &mut Node {
        self.nodes.get_mut(n).expect("node")
    }

    fn findings(&self) -> Report {
        detect(&self.matrix, &self.nodes, &[], SystemTime::now())
    }
}

fn kinds(r: &Report) -> Vec<Kind> {
    r.findings.iter().map(|f| f.kind).collect()
}

fn ok_unless(cut: impl Fn(&str, &str) -> bool) -> impl Fn(&str, &str, u16) -> TargetState {
    move |s, d, _| {
        if cut(s, d) {
            TargetState::Failing
        } else {
            TargetState::Ok
        }
    }
}

#[test]
fn two_zones_cut_from_each_other_are_one_partition() {
    let mut w = World::new(&["a1", "a2", "a3", "b1", "b2"]);
    w.report(&[PORT], ok_unless(|s, d| s[..1] != d[..1]));
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::Partition], "{r:#?}");
    let f = &r.findings[0];
    let groups: Vec<(&str, usize)> = f
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.nodes.len()))
        .collect();
    assert_eq!(groups, vec![("zone-a", 3), ("zone-b", 2)]);
    assert_eq!(f.cell_count, 12, "3 x 2 cells each way");
    assert!(f.cells.iter().all(|k| k.src[..1] != k.dst[..1]));
    assert!(
        f.title.contains("zone-a (3 nodes) and zone-b (2 nodes)"),
        "{}",
        f.title
    );
    assert_eq!((r.bad_cells, r.uncovered_cells), (12, 0));
}

#[test]
fn a_node_cut_both_ways_is_isolated_and_one_way_is_said_so() {
    let mut w = World::new(&["a1", "a2", "a3", "a4"]);
    w.report(&[PORT], ok_unless(|s, d| s == "a4" || d == "a4"));
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::Isolated], "{r:#?}");
    assert_eq!(r.findings[0].node, "a4");
    assert_eq!(r.findings[0].cell_count, 6);

    let mut w = World::new(&["a1", "a2", "a3", "a4"]);
    w.report(&[PORT], ok_unless(|_, d| d == "a4"));
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::IsolatedInbound], "{r:#?}");
    assert_eq!(r.findings[0].cell_count, 3);
    assert!(r.findings[0].title.contains("no peer reaches a4"));

    let mut w = World::new(&["a1", "a2", "a3", "a4"]);
    w.report(&[PORT], ok_unless(|s, _| s == "a4"));
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::IsolatedOutbound], "{r:#?}");
}

#[test]
fn one_rule_behind_five_cells_is_one_finding() {
    let names = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];
    let mut w = World::new(&names);
    // n0 drops the probe port from n1..n5; n6 and n7 still get in.
    let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
    for n in &names[1..6] {
        rules.push_str(&format!(
            "-A INPUT -s {}/32 -p tcp -m tcp --dport {PORT} -j DROP\n",
            w.addr(n)
        ));
    }
    rules.push_str("COMMIT\n");
    w.node("n0").facts_mut().firewall = Some(iptables(&rules));
    let cut: Vec<&str> = names[1..6].to_vec();
    w.report(
        &[PORT],
        ok_unless(move |s, d| d == "n0" && cut.contains(&s)),
    );
    let r = w.findings();
    // Each source is dropped by a rule of its own: five rules, five causes.
    assert!(
        r.findings.iter().all(|f| f.cell_count == 1),
        "five different rules are not one cause: {r:#?}"
    );

    // One rule for all five (a set of sources): one finding, five cells.
    let mut w = World::new(&names);
    let rules = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 198.18.0.8/29 -p tcp -m tcp --dport {PORT} -j DROP\nCOMMIT\n"
    );
    w.node("n0").facts_mut().firewall = Some(iptables(&rules));
    let cut: Vec<&str> = names[1..6].to_vec();
    w.report(
        &[PORT],
        ok_unless(move |s, d| d == "n0" && cut.contains(&s)),
    );
    let r = w.findings();
    // n0 reaches the five and they do not reach it: one-way pairs, all
    // explained by the one rule.
    assert_eq!(r.findings.len(), 1, "{r:#?}");
    let f = &r.findings[0];
    assert_eq!(f.kind, Kind::Asymmetric);
    assert_eq!(
        (f.code.as_str(), f.node.as_str()),
        ("FIREWALL_INBOUND", "n0")
    );
    assert_eq!(f.cell_count, 5);
    assert!(f.fix.contains("iptables -t filter -D INPUT 1"), "{}", f.fix);
    assert_eq!(r.uncovered_cells, 0);

    // The same rule on a service port while the probe port passes: the
    // pairs reach each other, the five cells share one cause.
    let mut w = World::new(&names);
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 198.18.0.8/29 -p tcp -m tcp --dport 8080 -j DROP\nCOMMIT\n";
    w.node("n0").facts_mut().firewall = Some(iptables(rules));
    let cut: Vec<&str> = names[1..6].to_vec();
    w.report(&[PORT, 8080], move |s, d, p| {
        if p == 8080 && d == "n0" && cut.contains(&s) {
            TargetState::Failing
        } else {
            TargetState::Ok
        }
    });
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::SharedCause], "{r:#?}");
    assert_eq!(r.findings[0].cell_count, 5);
    assert!(
        r.findings[0]
            .cells
            .iter()
            .all(|k| k.port == 8080 && k.dst == "n0")
    );
    assert!(
        r.findings[0]
            .title
            .starts_with("one cause, 5 cells: FIREWALL_INBOUND on n0")
    );
}

#[test]
fn a_one_way_pair_names_the_side_whose_facts_explain_it() {
    let mut w = World::new(&["a", "b", "c"]);
    let rules = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 198.18.0.10/32 -p tcp -m tcp --dport {PORT} -j DROP\nCOMMIT\n"
    );
    w.node("b").facts_mut().firewall = Some(iptables(&rules));
    w.report(&[PORT], ok_unless(|s, d| s == "a" && d == "b"));
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::Asymmetric], "{r:#?}");
    let f = &r.findings[0];
    assert_eq!(
        (f.code.as_str(), f.node.as_str()),
        ("FIREWALL_INBOUND", "b")
    );
    assert_eq!(
        f.cells,
        vec![Key {
            src: "a".into(),
            dst: "b".into(),
            port: PORT
        }]
    );
}

#[test]
fn an_old_address_still_in_an_allow_list_is_found_without_a_failing_cell() {
    let mut w = World::new(&["a", "b", "c"]);
    // b moved from .11 to .21; c still lets .11 in on 5432, nobody probes it.
    w.node("b")
        .facts_mut()
        .interfaces
        .get_mut(&2)
        .expect("eth0")
        .addresses[0]
        .ip = ip("198.18.0.21");
    w.node("b").push_for_test(
        SystemTime::now() - Duration::from_secs(60),
        pb::event::Kind::AddressChanged(pb::AddressChanged {
            interface: "eth0".into(),
            removed: Some(pb::Address {
                ip: "198.18.0.11".into(),
                prefix_len: 16,
                scope: 0,
            }),
            added: None,
        }),
    );
    w.node("c").facts_mut().firewall = Some(iptables(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 198.18.0.11/32 -p tcp -m tcp --dport 5432 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 7442 -j ACCEPT\nCOMMIT\n",
    ));
    w.report(&[PORT], |_, _, _| TargetState::Ok);
    let r = w.findings();
    assert_eq!(kinds(&r), vec![Kind::StaleAddress], "{r:#?}");
    let f = &r.findings[0];
    assert_eq!(f.node, "b");
    assert!(
        f.title.contains("b's old address 198.18.0.11"),
        "{}",
        f.title
    );
    assert!(f.evidence[0].contains("c's rule"), "{:?}", f.evidence);
    assert!(
        f.fix.contains("replace 198.18.0.11 with 198.18.0.21"),
        "{}",
        f.fix
    );
}

#[test]
fn a_healthy_fleet_has_no_findings_and_the_wire_keeps_them() {
    let mut w = World::new(&["a1", "a2", "b1", "b2"]);
    w.report(&[PORT], |_, _, _| TargetState::Ok);
    let r = w.findings();
    assert!(r.findings.is_empty(), "{r:#?}");
    assert_eq!(r.cells, 12);

    w.report(&[PORT], ok_unless(|s, d| s[..1] != d[..1]));
    let r = w.findings();
    assert_eq!(wire::from_pb(&wire::report(&r)), r);
}
