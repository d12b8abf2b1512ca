//! Addresses, interfaces and names.

use super::*;

#[test]
fn an_interface_down_and_a_full_conntrack_table() {
    let mut w = world();
    let f = w.b().facts_mut();
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
            target: t.into(),
            sent: 10,
            ok: 10,
            failures: FailureCounts::default(),
            rtt_p50_ms: Some(0.3),
            rtt_p99_ms: Some(0.9),
            last_outcome: Some(Outcome::Open),
            last_failure: None,
            state: TargetState::Ok,
            last_http_status: None,
            last_tls_error: None,
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
