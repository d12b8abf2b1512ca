//! Resource samples as protocol messages.

use crate::facts::resources::{MemoryTrend, PressureFile, PressureLine, Resources};
use reachmap_proto::v1 as pb;
use std::time::SystemTime;

fn figures(l: &PressureLine) -> pb::PressureFigures {
    pb::PressureFigures {
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    }
}

fn some(f: &Option<PressureFile>) -> Option<pb::PressureFigures> {
    f.as_ref().map(|f| figures(&f.some))
}

fn full(f: &Option<PressureFile>) -> Option<pb::PressureFigures> {
    f.as_ref().and_then(|f| f.full.as_ref()).map(figures)
}

pub fn resources(r: &Resources, sampled: SystemTime) -> pb::Resources {
    let (trend, growth) = match r.memory_trend {
        MemoryTrend::Unknown => (pb::MemoryTrend::Unknown, 0.0),
        MemoryTrend::Steady => (pb::MemoryTrend::Steady, 0.0),
        MemoryTrend::Spike => (pb::MemoryTrend::Spike, 0.0),
        MemoryTrend::Growing { mib_per_min } => (pb::MemoryTrend::Growing, mib_per_min),
    };
    pb::Resources {
        sampled_unix_nanos: super::unix_nanos(sampled),
        load1: r.load1,
        load5: r.load5,
        load15: r.load15,
        cpus: r.cpus,
        cpu_busy_pct: r.cpu_busy_pct,
        cpu_steal_pct: r.cpu_steal_pct,
        mem_total_bytes: r.mem_total_bytes,
        mem_available_bytes: r.mem_available_bytes,
        swap_total_bytes: r.swap_total_bytes,
        swap_free_bytes: r.swap_free_bytes,
        pressure: r.pressure.as_ref().map(|p| pb::Pressure {
            cpu_some: some(&p.cpu),
            memory_some: some(&p.memory),
            memory_full: full(&p.memory),
            io_some: some(&p.io),
            io_full: full(&p.io),
        }),
        conntrack_count: r.conntrack.map(|c| c.count),
        conntrack_max: r.conntrack.map(|c| c.max),
        listen_overflows: r.listen_overflows.unwrap_or(0),
        listen_drops: r.listen_drops.unwrap_or(0),
        disk_root_total_bytes: r.disk_root.as_ref().map(|d| d.total_bytes),
        disk_root_used_bytes: r.disk_root.as_ref().map(|d| d.used_bytes),
        memory_trend: trend as i32,
        memory_growth_mib_per_min: growth,
    }
}
