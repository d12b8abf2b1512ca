//! Text sections of `reachmap node` for sockets, firewall and resources,
//! rendered from the collector's model.

use super::render::render;
use crate::model::{BindScope, Firewall, Listener, MemoryTrend, NodeFacts, Resources};
use std::fmt::Write;

fn scope(s: BindScope) -> &'static str {
    match s {
        BindScope::Loopback => "loopback only",
        BindScope::Any => "all addresses",
        BindScope::Address => "one address",
    }
}

fn endpoint(l: &Listener) -> String {
    if l.address.is_ipv6() {
        format!("[{}]:{}", l.address, l.port)
    } else {
        format!("{}:{}", l.address, l.port)
    }
}

pub fn listeners(f: &NodeFacts) -> String {
    let mut out = String::from("\nLISTENERS\n");
    if f.listeners.is_empty() {
        out.push_str("none reported\n");
        return out;
    }
    let rows: Vec<Vec<String>> = f
        .listeners
        .values()
        .map(|l| {
            let procs: Vec<String> = l
                .processes
                .iter()
                .map(|p| format!("{}[{}]", p.name, p.pid))
                .collect();
            let unit = l
                .processes
                .iter()
                .find_map(|p| p.unit.clone())
                .unwrap_or_else(|| "-".into());
            vec![
                l.protocol.name().to_string(),
                endpoint(l),
                scope(l.scope).to_string(),
                if procs.is_empty() {
                    "-".into()
                } else {
                    procs.join(",")
                },
                unit,
                l.established.to_string(),
                if l.protocol.name() == "tcp" {
                    format!("{}/{}", l.accept_queue, l.accept_queue_limit)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "PROTO", "LISTEN", "SCOPE", "PROCESS", "UNIT", "ESTAB", "QUEUE",
        ],
        &rows,
    ));
    let s = &f.socket_summary;
    let _ = writeln!(
        out,
        "tcp sockets {} ({} established, {} time-wait), udp sockets {}",
        s.tcp_total, s.tcp_established, s.tcp_time_wait, s.udp_total
    );
    out
}

pub fn firewall(fw: Option<&Firewall>) -> String {
    let mut out = String::from("\nFIREWALL\n");
    let Some(fw) = fw else {
        out.push_str("not reported\n");
        return out;
    };
    if let Some(e) = &fw.error {
        let _ = writeln!(out, "could not be read: {e}");
        return out;
    }
    let generation = fw
        .generation
        .map(|g| format!(", generation {g}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} with {} rules{generation}",
        fw.backend,
        fw.rule_count()
    );
    let rows: Vec<Vec<String>> = fw
        .tables
        .iter()
        .flat_map(|t| {
            t.chains.iter().map(move |c| {
                vec![
                    format!("{} {}", t.family, t.name),
                    c.name.clone(),
                    c.hook.clone().unwrap_or_else(|| "-".into()),
                    c.priority
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into()),
                    c.policy.clone().unwrap_or_else(|| "-".into()),
                    c.rules.len().to_string(),
                ]
            })
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&render(
            &["TABLE", "CHAIN", "HOOK", "PRIO", "POLICY", "RULES"],
            &rows,
        ));
    }
    out
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into())
}

pub fn resources(r: Option<&Resources>) -> String {
    let mut out = String::from("\nRESOURCES\n");
    let Some(r) = r else {
        out.push_str("not reported\n");
        return out;
    };
    let _ = writeln!(
        out,
        "load {:.2} {:.2} {:.2} on {} cpus, cpu busy {}, steal {}",
        r.load1,
        r.load5,
        r.load15,
        r.cpus,
        pct(r.cpu_busy_pct),
        pct(r.cpu_steal_pct)
    );
    let used = r.mem_total_bytes.saturating_sub(r.mem_available_bytes);
    let trend = match r.memory_trend {
        MemoryTrend::Unknown => "trend not known yet".to_string(),
        MemoryTrend::Steady => "steady".to_string(),
        MemoryTrend::Spike => "spike".to_string(),
        MemoryTrend::Growing => {
            format!("GROWING {:.1} MiB/min", r.memory_growth_mib_per_min)
        }
    };
    let _ = writeln!(
        out,
        "memory {} of {} used ({trend}), swap {} of {} used",
        gib(used),
        gib(r.mem_total_bytes),
        gib(r.swap_total_bytes.saturating_sub(r.swap_free_bytes)),
        gib(r.swap_total_bytes)
    );
    if let Some(p) = &r.pressure {
        let _ = writeln!(
            out,
            "pressure (avg10) cpu {:.1}%, memory {:.1}%, io {:.1}%",
            p.cpu_some.avg10, p.memory_some.avg10, p.io_some.avg10
        );
    }
    let conntrack = match (r.conntrack_count, r.conntrack_max) {
        (Some(c), Some(m)) => format!("conntrack {c} of {m}"),
        _ => "no conntrack".to_string(),
    };
    let disk = match (r.disk_root_used_bytes, r.disk_root_total_bytes) {
        (Some(u), Some(t)) if t > 0 => {
            format!(
                "disk / {} of {} ({:.0}%)",
                gib(u),
                gib(t),
                u as f64 * 100.0 / t as f64
            )
        }
        _ => "disk / unknown".to_string(),
    };
    let _ = writeln!(
        out,
        "{conntrack}, listen overflows {} drops {}, {disk}",
        r.listen_overflows, r.listen_drops
    );
    out
}
