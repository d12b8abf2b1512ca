//! Probes and the path between the nodes: the evidence that comes from the
//! other direction, other sources and ICMP.

use super::*;

/// `src`'s windows for `targets`, all reported now (one plan, so one call
/// per source).
fn report(w: &mut World, src: &str, targets: &[(PlannedTarget, TargetState, f64)]) {
    let plan: Vec<PlannedTarget> = targets.iter().map(|(t, _, _)| t.clone()).collect();
    w.matrix.set_plan(src, &plan);
    let now = unix_nanos(SystemTime::now());
    let windows = targets
        .iter()
        .map(|(t, state, loss)| {
            let failed = (loss * 10.0).round() as u32;
            WindowInput {
                target: t.clone().into(),
                sent: 10,
                ok: 10 - failed,
                failures: FailureCounts {
                    timeout: failed,
                    ..FailureCounts::default()
                },
                rtt_p50_ms: Some(0.3),
                rtt_p99_ms: Some(0.9),
                last_outcome: Some(if failed == 10 {
                    Outcome::Timeout
                } else {
                    Outcome::Open
                }),
                last_failure: (failed > 0).then_some((Outcome::Timeout, now)),
                state: *state,
                last_http_status: None,
                last_tls_error: None,
            }
        })
        .collect();
    w.matrix.apply(src, windows, now);
}

#[test]
fn every_evidence_line_has_its_time() {
    use crate::model::firewall::{Chain, Firewall, Table};
    let mut w = world();
    w.nodes.insert(
        "c".to_string(),
        Node::for_test("c", true, Some(facts("198.18.0.13"))),
    );
    let tcp = |dst: &str, addr: &str| PlannedTarget::new(dst, ip(addr), 7442, ProbeKind::Tcp);
    let icmp = |dst: &str, addr: &str| PlannedTarget::new(dst, ip(addr), 0, ProbeKind::Icmp);
    // a -> b times out; the other way and c -> b work: the network path.
    report(
        &mut w,
        "a",
        &[
            (tcp("b", "198.18.0.12"), TargetState::Failing, 1.0),
            (icmp("b", "198.18.0.12"), TargetState::Ok, 0.0),
        ],
    );
    report(
        &mut w,
        "b",
        &[(tcp("a", "198.18.0.11"), TargetState::Ok, 0.0)],
    );
    report(
        &mut w,
        "c",
        &[(tcp("b", "198.18.0.12"), TargetState::Ok, 0.0)],
    );
    let e = w.why(7442);
    let c = codes(&e);
    assert_eq!(c, vec![("NETWORK_PATH", "b")], "{c:?}");
    let texts: Vec<&str> = e.causes[0]
        .evidence
        .iter()
        .map(|v| v.text.as_str())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("the other way"))
            && texts.iter().any(|t| t.contains("other nodes reach b")),
        "{texts:?}"
    );

    // b's firewall drops it by policy while the other way works.
    w.b().facts_mut().firewall = Some(Firewall {
        backend: "nftables".into(),
        generation: Some(1),
        hash: 1,
        error: None,
        tables: vec![Table {
            family: "inet".into(),
            name: "filter".into(),
            backend: "nftables".into(),
            sets: vec![],
            chains: vec![Chain {
                name: "input".into(),
                hook: Some("input".into()),
                chain_type: Some("filter".into()),
                priority: Some(0),
                policy: Some("drop".into()),
                rules: vec![],
            }],
        }],
    });
    let e = w.why(7442);
    let fw = e
        .causes
        .iter()
        .find(|c| c.code == "FIREWALL_INBOUND")
        .expect("FIREWALL_INBOUND");
    assert!(
        fw.evidence
            .iter()
            .any(|v| v.text.starts_with("the other way works")),
        "{:?}",
        fw.evidence
    );

    // Degraded TCP while ICMP fails: loss, and ICMP blocked alone.
    w.b().facts_mut().firewall = None;
    report(
        &mut w,
        "a",
        &[
            (tcp("b", "198.18.0.12"), TargetState::Degraded, 0.3),
            (icmp("b", "198.18.0.12"), TargetState::Failing, 1.0),
        ],
    );
    let e = w.why(7442);
    let c = codes(&e);
    assert!(
        c.contains(&("INTERMITTENT_LOSS", "b")) && c.contains(&("ICMP_ONLY_BLOCKED", "b")),
        "{c:?}"
    );

    // b's agent is gone.
    w.nodes.insert(
        "b".to_string(),
        Node::for_test("b", false, Some(facts("198.18.0.12"))),
    );
    let e = w.why(7442);
    assert!(codes(&e).contains(&("AGENT_DOWN", "b")), "{:?}", codes(&e));
}

/// a's probes of b:port changed to `state` `ago` before now.
fn state_change(
    w: &mut World,
    port: u16,
    ago: u64,
    state: pb::TargetState,
    outcome: pb::ProbeOutcome,
) {
    let a = w.nodes.get_mut("a").expect("a");
    a.push_for_test(
        SystemTime::now() - Duration::from_secs(ago),
        pb::event::Kind::ProbeStateChanged(pb::ProbeStateChanged {
            target: Some(pb::ProbeTarget {
                node: "b".into(),
                address: "198.18.0.12".into(),
                port: u32::from(port),
                kind: pb::ProbeKind::Tcp as i32,
                ..Default::default()
            }),
            old_state: 0,
            new_state: state as i32,
            outcome: outcome as i32,
        }),
    );
}

#[test]
fn three_outages_in_the_hour_are_flapping_even_while_it_works() {
    let mut w = world();
    w.probe(7442, TargetState::Ok, 0.0, None);
    for (down, up) in [(1800, 1790), (1200, 1130), (600, 240)] {
        state_change(
            &mut w,
            7442,
            down,
            pb::TargetState::Failing,
            pb::ProbeOutcome::Timeout,
        );
        state_change(
            &mut w,
            7442,
            up,
            pb::TargetState::Ok,
            pb::ProbeOutcome::Open,
        );
    }
    let e = w.why(7442);
    assert_eq!(e.verdict, Verdict::Reachable);
    let c = e
        .causes
        .iter()
        .find(|c| c.code == "FLAPPING")
        .expect("FLAPPING");
    assert!(
        c.detail
            .starts_with("3 outages in the last hour, longest 6m"),
        "{}",
        c.detail
    );
    assert!(c.detail.contains("last ended 4m"), "{}", c.detail);
    assert_eq!(c.evidence.len(), 3);
    assert!(
        c.evidence[0].text.contains("lasted 10s, timeout"),
        "{:?}",
        c.evidence
    );
}

#[test]
fn one_outage_or_an_old_one_is_not_flapping() {
    let mut w = world();
    w.probe(7442, TargetState::Ok, 0.0, None);
    // Two hours ago: outside the window.
    state_change(
        &mut w,
        7442,
        7300,
        pb::TargetState::Failing,
        pb::ProbeOutcome::Timeout,
    );
    state_change(
        &mut w,
        7442,
        7200,
        pb::TargetState::Ok,
        pb::ProbeOutcome::Open,
    );
    state_change(
        &mut w,
        7442,
        300,
        pb::TargetState::Failing,
        pb::ProbeOutcome::Refused,
    );
    state_change(
        &mut w,
        7442,
        200,
        pb::TargetState::Ok,
        pb::ProbeOutcome::Open,
    );
    let e = w.why(7442);
    assert!(
        e.causes.iter().all(|c| c.code != "FLAPPING"),
        "{:?}",
        codes(&e)
    );
    assert!(
        e.checked.iter().any(|c| c.contains("in the last hour: 1")),
        "{:?}",
        e.checked
    );
}
