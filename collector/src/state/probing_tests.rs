use super::*;
use crate::config::ProbeSettings;
use tokio::sync::mpsc::Receiver;

type Rx = Receiver<Result<pb::CollectorMessage, tonic::Status>>;

const SEC: i64 = 1_000_000_000;

fn own(names: &[(&str, &str)]) -> (BTreeMap<String, Node>, BTreeMap<String, Rx>) {
    let mut nodes = BTreeMap::new();
    let mut rxs = BTreeMap::new();
    for (name, address) in names {
        let (n, rx) = Node::streaming_for_test(name, address);
        nodes.insert(name.to_string(), n);
        rxs.insert(name.to_string(), rx);
    }
    (nodes, rxs)
}

fn remote(name: &str, address: &str) -> NodeInput {
    NodeInput {
        name: name.into(),
        zone: None,
        connected: true,
        addresses: vec![address.parse().expect("ip")],
        listeners: Vec::new(),
    }
}

/// The last plan `rx` holds, as target node names.
fn last_plan(rx: &mut Rx) -> Option<Vec<String>> {
    let mut last = None;
    while let Ok(Ok(msg)) = rx.try_recv() {
        if let Some(pb::collector_message::Body::Plan(p)) = msg.body {
            let mut nodes: Vec<String> = p.targets.into_iter().map(|t| t.node).collect();
            nodes.dedup();
            last = Some(nodes);
        }
    }
    last
}

#[test]
fn the_leader_plans_other_collectors_agents_and_the_others_follow_it() {
    let settings = ProbeSettings::default();
    // Collector a leads with n1 and n2; b has r1 and r2.
    let (a_nodes, mut a_rx) = own(&[("n1", "198.18.0.11"), ("n2", "198.18.0.12")]);
    let (b_nodes, mut b_rx) = own(&[("r1", "198.18.0.21"), ("r2", "198.18.0.22")]);
    let mut a = Probing::new(&settings, 1);
    a.set_remote(vec![
        remote("r1", "198.18.0.21"),
        remote("r2", "198.18.0.22"),
    ]);
    let rows = a.tick(&a_nodes, 10 * SEC, 10 * SEC, Some("a"));
    let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, ["r1", "r2"], "plans for b's agents only");
    assert!(
        rows.iter()
            .all(|r| r.collector == "a" && r.written_unix_nanos == 10 * SEC)
    );
    // One mesh: a's agents probe b's.
    assert_eq!(
        last_plan(a_rx.get_mut("n1").expect("n1")),
        Some(vec!["n2".into(), "r1".into(), "r2".into()])
    );
    // Nothing changed: nothing is written again.
    a.mark_dirty();
    assert!(a.tick(&a_nodes, 20 * SEC, 20 * SEC, Some("a")).is_empty());

    // b does not lead: it sends the leader's plans, even where its own
    // would differ (here the leader's r1 plan is cut to one target).
    let mut b = Probing::new(&settings, 1);
    b.set_remote(vec![
        remote("n1", "198.18.0.11"),
        remote("n2", "198.18.0.12"),
    ]);
    let mut leader: Vec<(String, NodePlan)> = rows
        .iter()
        .map(|r| {
            let p = crate::probe::wire::decode(&r.plan, r.digest).expect("decodes");
            (r.source.clone(), p)
        })
        .collect();
    leader[0].1.targets.retain(|t| t.node == "n1");
    leader[0].1.digest ^= 1;
    b.leader_plans("a".into(), true, leader);
    assert!(
        b.tick(&b_nodes, 30 * SEC, 30 * SEC, None).is_empty(),
        "only the leader writes plans"
    );
    assert_eq!(
        last_plan(b_rx.get_mut("r1").expect("r1")),
        Some(vec!["n1".into()])
    );
    assert_eq!(
        last_plan(b_rx.get_mut("r2").expect("r2")),
        Some(vec!["n1".into(), "n2".into(), "r1".into()])
    );
    // The leader is gone: b plans its agents itself, over the whole fleet.
    b.leader_plans(String::new(), true, Vec::new());
    b.tick(&b_nodes, 40 * SEC, 40 * SEC, None);
    assert_eq!(
        last_plan(b_rx.get_mut("r1").expect("r1")),
        Some(vec!["n1".into(), "n2".into(), "r2".into()])
    );
    assert_eq!(
        last_plan(b_rx.get_mut("r2").expect("r2")),
        None,
        "unchanged"
    );
    // And when it leads, it writes every plan of the other collector's.
    let rows = b.tick(&b_nodes, 50 * SEC, 50 * SEC, Some("b"));
    let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, ["n1", "n2"]);
}

#[test]
fn a_remote_node_whose_collector_is_gone_stays_a_target_but_gets_no_plan() {
    let (nodes, mut rx) = own(&[("n1", "198.18.0.11")]);
    let mut a = Probing::new(&ProbeSettings::default(), 1);
    let mut r1 = remote("r1", "198.18.0.21");
    r1.connected = false;
    a.set_remote(vec![r1]);
    assert!(a.tick(&nodes, 10, 10, Some("a")).is_empty());
    assert_eq!(
        last_plan(rx.get_mut("n1").expect("n1")),
        Some(vec!["r1".into()])
    );
}

#[test]
fn cells_expire_as_of_what_was_heard_not_as_of_now() {
    use crate::probe::{CellState, PlannedTarget, ProbeKind};
    const PORT: u16 = reachmap_proto::DEFAULT_PROBE_PORT;
    let settings = ProbeSettings::default();
    let (nodes, _rx) = own(&[("n1", "198.18.0.11"), ("n2", "198.18.0.12")]);
    let mut p = Probing::new(&settings, 1);
    p.tick(&nodes, SEC, SEC, None);
    let window = super::super::test_support::ok_window(
        PlannedTarget::new(
            "n2",
            "198.18.0.12".parse().expect("ip"),
            PORT,
            ProbeKind::Tcp,
        )
        .into(),
    );
    p.results("n1", vec![window], 2 * SEC);
    let state = |p: &Probing| {
        p.matrix
            .cell("n1", "n2", PORT, ProbeKind::Tcp)
            .map(|c| c.cell.state())
    };
    assert_eq!(state(&p), Some(CellState::Ok));
    let stale = p.matrix.stale_after();
    // Long past the staleness limit by the clock, but the batches applied
    // so far were received only a second after this one.
    let now = 2 * SEC + stale + 10 * SEC;
    p.tick(&nodes, now, 3 * SEC, None);
    assert_eq!(state(&p), Some(CellState::Ok), "still current as of 3 s");
    p.tick(&nodes, now, now, None);
    assert_eq!(state(&p), Some(CellState::Unknown), "no report in time");
}

#[test]
fn while_the_fleet_churns_agents_with_a_plan_get_the_changed_one_once_it_settles() {
    let settings = ProbeSettings::default();
    let (mut nodes, mut rx) = own(&[("n1", "198.18.0.11"), ("n2", "198.18.0.12")]);
    let mut p = Probing::new(&settings, 1);
    p.tick(&nodes, 100 * SEC, 100 * SEC, None);
    assert_eq!(
        last_plan(rx.get_mut("n1").expect("n1")),
        Some(vec!["n2".into()])
    );
    // n3 joins: its own plan goes at once, n1's changed one waits.
    let (n3, rx3) = Node::streaming_for_test("n3", "198.18.0.13");
    nodes.insert("n3".into(), n3);
    rx.insert("n3".into(), rx3);
    p.mark_dirty();
    p.tick(&nodes, 101 * SEC, 101 * SEC, None);
    assert_eq!(
        last_plan(rx.get_mut("n3").expect("n3")),
        Some(vec!["n1".into(), "n2".into()])
    );
    assert_eq!(last_plan(rx.get_mut("n1").expect("n1")), None, "held");
    // Still within two seconds of the last change: still held.
    p.tick(&nodes, 102 * SEC, 102 * SEC, None);
    assert_eq!(last_plan(rx.get_mut("n1").expect("n1")), None, "held");
    // Settled: the plan as it is now goes.
    p.tick(&nodes, 104 * SEC, 104 * SEC, None);
    assert_eq!(
        last_plan(rx.get_mut("n1").expect("n1")),
        Some(vec!["n2".into(), "n3".into()])
    );
}

#[test]
fn a_fleet_that_never_settles_still_gets_its_plans_within_two_intervals() {
    let churn = Some((0, 10 * SEC));
    let interval = std::time::Duration::from_secs(10);
    assert!(
        settling(churn, 11 * SEC, interval),
        "a second after a change"
    );
    assert!(!settling(churn, 12 * SEC, interval), "two seconds after");
    let endless = Some((0, 25 * SEC));
    assert!(!settling(endless, 25 * SEC, interval), "past two intervals");
    assert!(!settling(None, 25 * SEC, interval));
}
