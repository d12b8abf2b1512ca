//! The service family: the application answered with the wrong status.

use super::*;

/// a's HTTP probes of b:8081 get `status`.
fn http_probe(w: &mut World, status: u16) {
    let mut t = PlannedTarget::new("b", ip("198.18.0.12"), 8081, ProbeKind::Http);
    t.service = Some("web".into());
    let tcp = PlannedTarget::new("b", ip("198.18.0.12"), 8081, ProbeKind::Tcp);
    w.matrix.set_plan("a", &[tcp, t.clone()]);
    w.matrix.apply(
        "a",
        vec![WindowInput {
            target: t.into(),
            sent: 10,
            ok: 0,
            failures: FailureCounts {
                http_status: 10,
                ..FailureCounts::default()
            },
            rtt_p50_ms: None,
            rtt_p99_ms: None,
            last_outcome: Some(Outcome::HttpStatus),
            last_failure: Some((Outcome::HttpStatus, unix_nanos(SystemTime::now()))),
            state: TargetState::Failing,
            last_http_status: Some(status),
            last_tls_error: None,
        }],
        unix_nanos(SystemTime::now()),
    );
}

#[test]
fn a_wrong_status_is_the_service_s_and_says_which() {
    let mut w = world();
    w.b().facts_mut().listeners.insert(
        listener("0.0.0.0", 8081, BindScope::Any).key(),
        listener("0.0.0.0", 8081, BindScope::Any),
    );
    // Also probed as TCP, and that works (never reported: unknown); the HTTP
    // probe is the one explained.
    http_probe(&mut w, 503);
    assert!(w.matrix.cell("a", "b", 8081, ProbeKind::Tcp).is_some());
    let e = w.why(8081);
    assert_eq!(e.verdict, Verdict::Unreachable);
    assert_eq!(codes(&e)[0], ("HTTP_STATUS", "b"), "{:?}", codes(&e));
    assert!(
        e.causes[0].detail.contains("b:8081 answers 503")
            && e.causes[0].detail.contains("the application does not"),
        "{}",
        e.causes[0].detail
    );
}

#[test]
fn an_upstream_name_is_a_node_or_a_prefix_of_node_names() {
    use crate::why::Declared;
    assert!(Declared::upstream_is("app", "app"));
    assert!(Declared::upstream_is("app", "app-2"));
    assert!(!Declared::upstream_is("app", "apple"));
    assert!(!Declared::upstream_is("app-2", "app"));
}
