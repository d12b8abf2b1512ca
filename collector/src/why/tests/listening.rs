//! The listening family: what listens on the port, where, and its queue.

use super::*;

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
