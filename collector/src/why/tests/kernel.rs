//! The kernel and resources family: load, CPU steal, memory, conntrack,
//! clock and reboots.

use super::*;

#[test]
fn an_overloaded_stealing_short_of_memory_host_explains_slow_probes() {
    let mut w = world();
    let r = w.b().facts_mut().resources.as_mut().expect("resources");
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
    w.b().facts_mut().resources.as_mut().expect("r").load1 = 9.0;
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
