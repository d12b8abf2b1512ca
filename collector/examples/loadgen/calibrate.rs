//! Protobuf decode and validation of one window, measured in this process.

use crate::{PROBE_PORT, pb, sim, unix_nanos};
use anyhow::bail;
use std::net::Ipv4Addr;
use std::time::Duration;

/// This thread's CPU time (ns resolution).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// The collector's per-window work outside the state task, in this
/// process: protobuf decode and `validate::probe::results` of a batch like
/// the agents send (windows naming their targets by id, as the collector's
/// plans ask). Returns CPU per window (decode, validate).
pub fn calibrate(agents: usize) -> anyhow::Result<(Duration, Duration)> {
    let targets: Vec<pb::ProbeTarget> = (1..agents.max(2))
        .flat_map(|i| {
            let node = format!("sim-{i:04}");
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + i as u32);
            [pb::ProbeKind::Tcp, pb::ProbeKind::Icmp].map(|kind| pb::ProbeTarget {
                id: i as u64 * 2 + kind as u64,
                node: node.clone(),
                address: address.to_string(),
                port: if kind == pb::ProbeKind::Tcp {
                    PROBE_PORT
                } else {
                    0
                },
                kind: kind as i32,
                ..Default::default()
            })
        })
        .take(1024)
        .collect();
    let batch = pb::AgentMessage {
        seq: 9,
        body: Some(pb::agent_message::Body::ProbeResults(pb::ProbeResults {
            plan_version: 1,
            windows: targets
                .iter()
                .map(|t| sim::by_id(sim::window("sim-0000", t, 10, unix_nanos(), 1)))
                .collect(),
            names: Vec::new(),
        })),
    };
    let bytes = prost::Message::encode_to_vec(&batch);
    // Whole blocks of rounds: the kernel updates a thread's CPU time at
    // ticks and switches, too coarse for one batch.
    const ROUNDS: u32 = 100;
    let c0 = thread_cpu();
    let decoded = (0..ROUNDS)
        .map(|_| <pb::AgentMessage as prost::Message>::decode(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()?;
    let c1 = thread_cpu();
    for m in &decoded {
        let Some(pb::agent_message::Body::ProbeResults(r)) = &m.body else {
            bail!("calibration batch did not decode to results");
        };
        let v = reachmap_collector::validate::probe::results(r)
            .map_err(|e| anyhow::anyhow!("calibration batch rejected: {e:?}"))?;
        std::hint::black_box(v);
    }
    let c2 = thread_cpu();
    let (decode, validate) = (c1 - c0, c2 - c1);
    let per = targets.len() as u32 * ROUNDS;
    Ok((decode / per, validate / per))
}
