//! Deterministic figures of the simulated windows.

use super::pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Ok,
    Degraded,
    Failing,
}

impl Class {
    pub fn state(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Degraded => "degraded",
            Class::Failing => "failing",
        }
    }
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub fn kind_name(kind: i32) -> &'static str {
    match pb::ProbeKind::try_from(kind) {
        Ok(pb::ProbeKind::Tcp) => "tcp",
        Ok(pb::ProbeKind::Icmp) => "icmp",
        Ok(pb::ProbeKind::Http) => "http",
        _ => "unspecified",
    }
}

/// `--partition`: how many agents there are; the first half and the second
/// half fail to reach each other. 0: no partition.
pub static PARTITION_OF: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Which half of a staged partition a simulated agent is in.
fn half(name: &str, agents: usize) -> Option<bool> {
    let i: usize = name.strip_prefix("sim-")?.parse().ok()?;
    Some(i < agents / 2)
}

/// 97% ok, 2% degraded, 1% failing, by (source, destination, port, kind);
/// with a staged partition, every cell across it failing.
pub fn class(src: &str, dst: &str, port: u32, kind: &str) -> (Class, u64) {
    let agents = PARTITION_OF.load(std::sync::atomic::Ordering::Relaxed);
    let h = fnv(&[
        src.as_bytes(),
        dst.as_bytes(),
        &port.to_le_bytes(),
        kind.as_bytes(),
    ]);
    if agents > 0
        && half(src, agents)
            .zip(half(dst, agents))
            .is_some_and(|(a, b)| a != b)
    {
        return (Class::Failing, h);
    }
    let class = match h % 1000 {
        0..970 => Class::Ok,
        970..990 => Class::Degraded,
        _ => Class::Failing,
    };
    (class, h)
}

/// The outcome a failing or degraded cell reports.
pub fn failure(class: Class, kind: &str) -> Option<pb::ProbeOutcome> {
    match (class, kind) {
        (Class::Ok, _) => None,
        (Class::Failing, "tcp") => Some(pb::ProbeOutcome::Refused),
        _ => Some(pb::ProbeOutcome::Timeout),
    }
}

/// `w` naming its target by id alone, as an agent does when the plan says
/// `results_by_id`.
pub fn by_id(mut w: pb::TargetWindow) -> pb::TargetWindow {
    if let Some(t) = &mut w.target {
        *t = pb::ProbeTarget {
            id: t.id,
            ..Default::default()
        };
    }
    w
}

/// One target's window of `sent` probes at `now`; `batch` varies the RTTs.
pub fn window(src: &str, t: &pb::ProbeTarget, sent: u32, now: i64, batch: u64) -> pb::TargetWindow {
    let kind = kind_name(t.kind);
    let (class, h) = class(src, &t.node, t.port, kind);
    let wobble = ((h >> 16).wrapping_add(batch.wrapping_mul(0x9e37)) % 400) as f64 / 1000.0;
    let rtt = 0.15 + ((h >> 32) % 600) as f64 / 1000.0 + wobble;
    let failed = match class {
        Class::Ok => 0,
        Class::Degraded => 2.min(sent),
        Class::Failing => sent,
    };
    let mut w = pb::TargetWindow {
        target: Some(t.clone()),
        sent,
        ok: sent - failed,
        rtt_p50_ms: (failed < sent).then_some(rtt),
        rtt_p99_ms: (failed < sent).then_some(rtt * 1.8),
        last_outcome: pb::ProbeOutcome::Open as i32,
        state: match class {
            Class::Ok => pb::TargetState::Ok,
            Class::Degraded => pb::TargetState::Degraded,
            Class::Failing => pb::TargetState::Failing,
        } as i32,
        last_probe_unix_nanos: now - 1_000_000_000,
        ..Default::default()
    };
    if let Some(f) = failure(class, kind) {
        match f {
            pb::ProbeOutcome::Refused => w.refused = failed,
            _ => w.timeout = failed,
        }
        w.last_failure = f as i32;
        w.last_failure_unix_nanos = now - 3_000_000_000;
        if class == Class::Failing {
            w.last_outcome = f as i32;
        }
    }
    w
}

/// Nearest-rank percentile of sorted values.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
