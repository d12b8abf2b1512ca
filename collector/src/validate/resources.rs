//! Resource samples from the wire.

use super::{ProtocolError, err};
use crate::model::{MemoryTrend, Pressure, PressureFigures, Resources};
use reachmap_proto::v1 as pb;

fn finite(field: &str, v: f64) -> Result<f64, ProtocolError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(err(
            field,
            format!("{v} is not a finite, non-negative number"),
        ))
    }
}

fn pct(field: &str, v: Option<f64>) -> Result<Option<f64>, ProtocolError> {
    match v {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(Some(v)),
        Some(v) => Err(err(field, format!("{v} is not a percentage"))),
    }
}

fn figures(field: &str, p: &Option<pb::PressureFigures>) -> Result<PressureFigures, ProtocolError> {
    let p = p.unwrap_or_default();
    Ok(PressureFigures {
        avg10: pct(&format!("{field}.avg10"), Some(p.avg10))?.unwrap_or(0.0),
        avg60: pct(&format!("{field}.avg60"), Some(p.avg60))?.unwrap_or(0.0),
        avg300: pct(&format!("{field}.avg300"), Some(p.avg300))?.unwrap_or(0.0),
    })
}

pub fn resources(field: &str, r: &pb::Resources) -> Result<Resources, ProtocolError> {
    let pressure = match &r.pressure {
        None => None,
        Some(p) => {
            let f = format!("{field}.pressure");
            Some(Pressure {
                cpu_some: figures(&format!("{f}.cpu_some"), &p.cpu_some)?,
                memory_some: figures(&format!("{f}.memory_some"), &p.memory_some)?,
                memory_full: figures(&format!("{f}.memory_full"), &p.memory_full)?,
                io_some: figures(&format!("{f}.io_some"), &p.io_some)?,
                io_full: figures(&format!("{f}.io_full"), &p.io_full)?,
            })
        }
    };
    let memory_trend = match pb::MemoryTrend::try_from(r.memory_trend) {
        Ok(pb::MemoryTrend::Unspecified | pb::MemoryTrend::Unknown) => MemoryTrend::Unknown,
        Ok(pb::MemoryTrend::Steady) => MemoryTrend::Steady,
        Ok(pb::MemoryTrend::Growing) => MemoryTrend::Growing,
        Ok(pb::MemoryTrend::Spike) => MemoryTrend::Spike,
        Err(_) => {
            return Err(err(
                format!("{field}.memory_trend"),
                format!("unknown trend {}", r.memory_trend),
            ));
        }
    };
    if r.mem_available_bytes > r.mem_total_bytes {
        return Err(err(
            format!("{field}.mem_available_bytes"),
            "is more than mem_total_bytes",
        ));
    }
    Ok(Resources {
        sampled_unix_nanos: r.sampled_unix_nanos,
        load1: finite(&format!("{field}.load1"), r.load1)?,
        load5: finite(&format!("{field}.load5"), r.load5)?,
        load15: finite(&format!("{field}.load15"), r.load15)?,
        cpus: r.cpus,
        cpu_busy_pct: pct(&format!("{field}.cpu_busy_pct"), r.cpu_busy_pct)?,
        cpu_steal_pct: pct(&format!("{field}.cpu_steal_pct"), r.cpu_steal_pct)?,
        mem_total_bytes: r.mem_total_bytes,
        mem_available_bytes: r.mem_available_bytes,
        swap_total_bytes: r.swap_total_bytes,
        swap_free_bytes: r.swap_free_bytes,
        pressure,
        conntrack_count: r.conntrack_count,
        conntrack_max: r.conntrack_max,
        listen_overflows: r.listen_overflows,
        listen_drops: r.listen_drops,
        disk_root_total_bytes: r.disk_root_total_bytes,
        disk_root_used_bytes: r.disk_root_used_bytes,
        memory_trend,
        memory_growth_mib_per_min: r.memory_growth_mib_per_min,
    })
}
