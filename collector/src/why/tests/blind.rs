//! Blind sources: a check whose source is not reading says so, and never
//! concludes from the absence of facts nobody read.

use super::*;
use crate::model::health::{FactSource, SourceHealth, SourceState};

fn set(w: &mut World, source: FactSource, state: SourceState, error: &str) {
    let now = unix_nanos(SystemTime::now());
    w.b().facts_mut().sources.insert(
        source,
        SourceHealth {
            state,
            since: now - 60_000_000_000,
            last_error: (!error.is_empty()).then(|| (now - 1_000_000_000, error.to_string())),
            errors_total: 3,
            restarts_total: 2,
        },
    );
}

#[test]
fn a_kernel_log_not_read_is_named_instead_of_no_oom_kill() {
    let mut w = world();
    set(
        &mut w,
        FactSource::KernelLog,
        SourceState::Down,
        "/dev/kmsg: permission denied",
    );
    set(&mut w, FactSource::Sockets, SourceState::Ok, "");
    w.probe(8080, TargetState::Failing, 1.0, Some(Outcome::Refused));
    let e = w.why(8080);
    let c = codes(&e);
    assert_eq!(c[0], ("NOT_LISTENING", "b"), "{c:?}");
    assert!(c.contains(&("SOURCE_BLIND", "b")), "{c:?}");
    let blind = e
        .causes
        .iter()
        .find(|c| c.code == "SOURCE_BLIND")
        .expect("blind");
    assert!(blind.detail.contains("kernel_log"), "{blind:?}");
    assert!(blind.detail.contains("OOM kills"), "{blind:?}");
    assert!(
        blind.evidence[0].text.contains("permission denied"),
        "{blind:?}"
    );
    assert!(
        e.checked.iter().any(|l| l
            .contains("an OOM kill of what listened on port 8080 on b: not known")
            && l.contains("kernel_log source is down")),
        "{:?}",
        e.checked
    );
    assert!(
        !e.checked
            .iter()
            .any(|l| l.contains("none in its kernel log")),
        "no answer rests on a log nobody reads: {:?}",
        e.checked
    );
}

#[test]
fn blind_sockets_make_no_not_listening() {
    let mut w = world();
    set(
        &mut w,
        FactSource::Sockets,
        SourceState::Down,
        "sock_diag: operation not permitted",
    );
    w.probe(8080, TargetState::Failing, 1.0, Some(Outcome::Refused));
    let e = w.why(8080);
    let c = codes(&e);
    assert!(!c.iter().any(|(code, _)| *code == "NOT_LISTENING"), "{c:?}");
    assert!(c.contains(&("SOURCE_BLIND", "b")), "{c:?}");
    assert!(
        e.checked
            .iter()
            .any(|l| l.starts_with("TCP listeners on port 8080 on b: not known")),
        "{:?}",
        e.checked
    );
}

#[test]
fn a_blind_firewall_is_no_network_path() {
    let mut w = world();
    w.b().facts_mut().listeners.insert(
        listener("0.0.0.0", 8080, BindScope::Any).key(),
        listener("0.0.0.0", 8080, BindScope::Any),
    );
    set(&mut w, FactSource::Firewall, SourceState::Starting, "");
    w.probe(8080, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(8080);
    let c = codes(&e);
    assert!(!c.iter().any(|(code, _)| *code == "NETWORK_PATH"), "{c:?}");
    assert_eq!(c[0], ("SOURCE_BLIND", "b"), "{c:?}");
    assert!(
        e.checked
            .iter()
            .any(|l| l.contains("not concluded, b's firewall not reading")),
        "{:?}",
        e.checked
    );
}

#[test]
fn sources_reading_or_degraded_are_no_cause() {
    let mut w = world();
    set(
        &mut w,
        FactSource::KernelLog,
        SourceState::Degraded,
        "resume state not saved",
    );
    w.probe(8080, TargetState::Failing, 1.0, Some(Outcome::Refused));
    let e = w.why(8080);
    assert!(!codes(&e).iter().any(|(code, _)| *code == "SOURCE_BLIND"));
    assert!(
        e.checked.iter().any(|l| l.contains("all reading")),
        "{:?}",
        e.checked
    );
}
