//! The listening family: what listens on the port, where, and its queue.

use super::*;

#[test]
fn no_fact_no_cause_and_the_checks_are_listed() {
    let mut w = world();
    w.b().facts_mut().listeners.insert(
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
    w.b().facts_mut().listeners.insert(l.key(), l);
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
fn a_listener_on_a_second_address_fails_clients_of_the_primary_one() {
    let mut w = world();
    let f = w.b().facts_mut();
    f.interfaces
        .get_mut(&2)
        .expect("eth0")
        .addresses
        .push(Addr {
            ip: ip("198.18.0.112"),
            prefix_len: 24,
            scope: "universe".into(),
        });
    let l = listener("198.18.0.112", 8080, BindScope::Address);
    f.listeners.insert(l.key(), l);
    // The planner probes the listener where it is bound: that works.
    w.probe_at("198.18.0.112", 8080, TargetState::Ok, 0.0, None);
    let e = w.why(8080);
    assert_eq!(e.verdict, Verdict::Unreachable, "{:?}", e.checked);
    assert_eq!(e.address.as_deref(), Some("198.18.0.12"));
    let c = &e.causes[0];
    assert_eq!(c.code, "BOUND_OTHER_ADDRESS", "{:?}", codes(&e));
    assert!(
        c.detail
            .contains("bound to 198.18.0.112, but a connects to 198.18.0.12 (b's primary address)"),
        "{c:?}"
    );
    let fix = c.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("0.0.0.0:8080") && fix.contains("point clients at 198.18.0.112:8080"),
        "{fix}"
    );
    assert_eq!(e.addresses.len(), 1);
    assert_eq!(e.addresses[0].listening, Some(false));
    assert!(
        e.checked
            .iter()
            .any(|l| l.contains("where the service listens, succeeds")),
        "{:?}",
        e.checked
    );

    // A name the source resolves to the second address is how its clients
    // come: that address works, the primary still does not.
    w.nodes
        .get_mut("a")
        .expect("a")
        .names
        .push(crate::probe::ResolvedName {
            name: "web.internal".into(),
            node: "b".into(),
            addresses: vec![ip("198.18.0.112")],
            error: None,
            resolved_unix_nanos: unix_nanos(SystemTime::now()),
        });
    let e = w.why(8080);
    let listening: Vec<_> = e
        .addresses
        .iter()
        .map(|a| (a.address.as_str(), a.listening))
        .collect();
    assert_eq!(
        listening,
        [("198.18.0.12", Some(false)), ("198.18.0.112", Some(true))]
    );
    assert!(
        e.addresses[1]
            .via
            .contains("web.internal resolves to it on a"),
        "{:?}",
        e.addresses
    );
}

#[test]
fn a_wildcard_listener_serves_every_client_address() {
    let mut w = world();
    let l = listener("0.0.0.0", 8080, BindScope::Any);
    w.b().facts_mut().listeners.insert(l.key(), l);
    w.probe(8080, TargetState::Ok, 0.0, None);
    let e = w.why(8080);
    assert_eq!(e.verdict, Verdict::Reachable);
    assert!(e.causes.is_empty(), "{:?}", codes(&e));
    assert_eq!(e.addresses[0].listening, Some(true));
    assert_eq!(e.address.as_deref(), Some("198.18.0.12"));
}

fn owner(unit: Option<&str>, process: Option<&str>) -> crate::why::Declared {
    crate::why::Declared {
        service: "db".into(),
        port: 5432,
        unit: unit.map(str::to_string),
        process: process.map(str::to_string),
        upstreams: Vec::new(),
    }
}

/// b's port 5432 held by `name` (pid 7, `unit`).
fn held_by(w: &mut World, name: &str, unit: Option<&str>) {
    let mut l = listener("0.0.0.0", 5432, BindScope::Any);
    l.processes = vec![Process {
        pid: 7,
        name: name.into(),
        unit: unit.map(str::to_string),
        cgroup: None,
    }];
    w.b().facts_mut().listeners.insert(l.key(), l);
}

#[test]
fn a_declared_port_held_by_another_process_is_named_with_both() {
    let mut w = world();
    w.owners = vec![owner(Some("postgresql.service"), None)];
    held_by(&mut w, "nc", Some("session-3.scope"));
    w.probe(5432, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(5432);
    let c = codes(&e);
    assert_eq!(c[0], ("PORT_HELD_BY_OTHER", "b"), "{c:?}");
    let cause = &e.causes[0];
    assert!(
        cause.detail.contains("nc (pid 7, session-3.scope)")
            && cause.detail.contains("not by postgresql.service"),
        "{}",
        cause.detail
    );
    assert!(
        cause.evidence.iter().any(|x| x
            .text
            .contains("service \"db\" declares port 5432 for postgresql.service")),
        "{:?}",
        cause.evidence
    );
    let fix = cause.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("stop nc (pid 7, session-3.scope)")
            && fix.contains("start postgresql.service"),
        "{fix}"
    );

    // Reported while the probe succeeds too: clients reach the wrong process.
    w.probe(5432, TargetState::Ok, 0.0, None);
    let e = w.why(5432);
    assert_eq!(e.verdict, Verdict::Reachable);
    assert!(
        codes(&e).contains(&("PORT_HELD_BY_OTHER", "b")),
        "{:?}",
        codes(&e)
    );
}

#[test]
fn the_declared_owner_holding_its_port_is_no_cause() {
    for (o, name, unit) in [
        (
            owner(Some("postgresql.service"), None),
            "postgres",
            Some("postgresql.service"),
        ),
        (owner(None, Some("postgres")), "postgres", None),
    ] {
        let mut w = world();
        w.owners = vec![o];
        held_by(&mut w, name, unit);
        w.probe(5432, TargetState::Failing, 1.0, Some(Outcome::Timeout));
        let e = w.why(5432);
        assert!(
            !codes(&e).contains(&("PORT_HELD_BY_OTHER", "b")),
            "{:?}",
            codes(&e)
        );
        assert!(
            e.checked
                .iter()
                .any(|c| c.contains("held by") && c.contains("as service \"db\" declares")),
            "{:?}",
            e.checked
        );
    }
    // Another port, or no declaration: nothing said.
    let mut w = world();
    held_by(&mut w, "nc", None);
    w.probe(5432, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    assert!(!codes(&w.why(5432)).contains(&("PORT_HELD_BY_OTHER", "b")));
}
