//! The kernel and the host's resources: PROCESS_OOM_KILLED, CONNTRACK_FULL,
//! HOST_OVERLOADED, CPU_STEAL, MEMORY_PRESSURE, CLOCK_SKEW, NODE_REBOOTED.

use super::blind;
use super::{cause, event, events, fact, sampled};
use crate::model::health::FactSource;
use crate::state::Node;
use crate::why::code::CauseCode;
use crate::why::{Cause, Context};
use reachmap_proto::v1 as pb;

/// The process that listened on the port was killed by the OOM killer;
/// `gone` is the event of its listener going away, when there is one.
pub(super) fn oom_killed(
    ctx: &Context,
    kill: &pb::Event,
    o: &pb::OomKill,
    gone: Option<&pb::Event>,
) -> Cause {
    let port = ctx.port;
    let mut c = cause(
        CauseCode::ProcessOomKilled,
        ctx.dst,
        95,
        format!(
            "the OOM killer killed {} (pid {}) which listened on port {port}; nothing listens there now",
            o.process, o.pid
        ),
    );
    c.evidence.push(event(ctx.dst, kill));
    if let Some(g) = gone {
        c.evidence.push(event(ctx.dst, g));
    }
    c.fix = Some(if o.unit.is_empty() {
        format!(
            "restart {} and give it more memory (its cgroup {} hit its limit)",
            o.process, o.cgroup
        )
    } else {
        format!(
            "`systemctl restart {}` and raise its MemoryMax, or fix its memory use",
            o.unit
        )
    });
    c
}

pub(super) fn conntrack(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for n in [ctx.dst, ctx.src] {
        let full = events(n, |k| matches!(k, pb::event::Kind::ConntrackFull(_))).next();
        if full.is_none()
            && (blind::skipped(n, FactSource::KernelLog, "conntrack-full messages", checked)
                | blind::skipped(n, FactSource::Resources, "conntrack figures", checked))
        {
            continue;
        }
        let resources = n.facts.as_ref().and_then(|f| f.resources.as_ref());
        let at_max = resources
            .and_then(|r| Some((r.conntrack_count?, r.conntrack_max?)))
            .filter(|(c, m)| *m > 0 && *c * 100 >= *m * 95);
        checked.push(format!(
            "conntrack on {}: {}",
            n.name,
            match at_max {
                Some((c, m)) => format!("{c} of {m}"),
                None => "not full".into(),
            }
        ));
        if full.is_some() || at_max.is_some() {
            let mut c = cause(
                CauseCode::ConntrackFull,
                n,
                78,
                format!(
                    "{}'s connection tracking table is full: new connections are dropped",
                    n.name
                ),
            );
            if let Some(e) = full {
                c.evidence.push(event(n, e));
            }
            if let Some((cnt, max)) = at_max
                && let Some(r) = resources
            {
                c.evidence.push(sampled(
                    n,
                    r,
                    format!("nf_conntrack_count {cnt} of nf_conntrack_max {max}"),
                ));
            }
            c.fix = Some(format!(
                "raise net.netfilter.nf_conntrack_max on {} or find what opens so many connections",
                n.name
            ));
            out.push(c);
        }
    }
}

pub(super) fn resources(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for n in [ctx.dst, ctx.src] {
        if blind::skipped(
            n,
            FactSource::Resources,
            "load, CPU steal and memory",
            checked,
        ) {
            continue;
        }
        let Some(r) = n.facts.as_ref().and_then(|f| f.resources.as_ref()) else {
            checked.push(format!("resources of {}: not reported", n.name));
            continue;
        };
        let cpus = f64::from(r.cpus.max(1));
        checked.push(format!(
            "resources of {}: load {:.1} on {} cpus, steal {}, memory pressure {}",
            n.name,
            r.load1,
            r.cpus,
            r.cpu_steal_pct
                .map(|s| format!("{s:.0}%"))
                .unwrap_or_else(|| "-".into()),
            r.pressure
                .as_ref()
                .map(|p| format!("{:.0}%", p.memory_some.avg10))
                .unwrap_or_else(|| "-".into())
        ));
        if r.load1 / cpus >= 2.0 || r.cpu_busy_pct.is_some_and(|b| b >= 95.0) {
            let mut c = cause(
                CauseCode::HostOverloaded,
                n,
                45,
                format!(
                    "{} is overloaded: load {:.1} on {} cpus",
                    n.name, r.load1, r.cpus
                ),
            );
            c.evidence.push(sampled(
                n,
                r,
                format!(
                    "load {:.2} {:.2} {:.2}, cpu busy {}",
                    r.load1,
                    r.load5,
                    r.load15,
                    r.cpu_busy_pct
                        .map(|b| format!("{b:.0}%"))
                        .unwrap_or_else(|| "-".into())
                ),
            ));
            c.fix = Some(format!(
                "find what keeps {} busy, or give it more CPU",
                n.name
            ));
            out.push(c);
        }
        if let Some(steal) = r.cpu_steal_pct.filter(|s| *s >= 10.0) {
            let mut c = cause(
                CauseCode::CpuSteal,
                n,
                45,
                format!(
                    "{} loses {steal:.0}% of its CPU time to other guests of its hypervisor",
                    n.name
                ),
            );
            c.evidence
                .push(sampled(n, r, format!("cpu steal {steal:.1}%")));
            c.fix = Some(format!(
                "move {} to another host or a bigger instance type",
                n.name
            ));
            out.push(c);
        }
        let psi = r
            .pressure
            .as_ref()
            .map(|p| p.memory_some.avg10)
            .unwrap_or(0.0);
        let swap_used = r.swap_total_bytes.saturating_sub(r.swap_free_bytes);
        let low_mem = r.mem_total_bytes > 0 && r.mem_available_bytes * 20 < r.mem_total_bytes;
        if psi >= 10.0 || low_mem || r.memory_trend == crate::model::MemoryTrend::Growing {
            let mut c = cause(
                CauseCode::MemoryPressure,
                n,
                45,
                format!(
                    "{} is short of memory{}",
                    n.name,
                    if r.memory_trend == crate::model::MemoryTrend::Growing {
                        format!(
                            " and used memory grows steadily ({:.1} MiB/min, a leak?)",
                            r.memory_growth_mib_per_min
                        )
                    } else {
                        String::new()
                    }
                ),
            );
            c.evidence.push(sampled(n, r, format!(
                "memory available {} MiB of {} MiB, swap used {} MiB, memory pressure {psi:.1}%",
                r.mem_available_bytes >> 20, r.mem_total_bytes >> 20, swap_used >> 20
            )));
            c.fix = Some(format!(
                "find what uses the memory on {} (a leak grows steadily), or add memory",
                n.name
            ));
            out.push(c);
        }
    }
}

pub(super) fn clock(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let offset = |n: &Node| n.clock.map(|c| c.offset_nanos as f64 / 1e9);
    let (a, b) = (offset(ctx.src), offset(ctx.dst));
    checked.push(format!(
        "clock offsets: {} {}, {} {}",
        ctx.src.name,
        a.map(|o| format!("{o:+.3}s")).unwrap_or_else(|| "-".into()),
        ctx.dst.name,
        b.map(|o| format!("{o:+.3}s")).unwrap_or_else(|| "-".into())
    ));
    if let (Some(a), Some(b)) = (a, b)
        && (a - b).abs() >= 1.0
    {
        let worse = if a.abs() > b.abs() { ctx.src } else { ctx.dst };
        let mut c = cause(
            CauseCode::ClockSkew,
            worse,
            20,
            format!(
                "the clocks of {} and {} differ by {:.1}s: TLS, tokens and logs break",
                ctx.src.name,
                ctx.dst.name,
                (a - b).abs()
            ),
        );
        c.evidence.push(fact(
            worse,
            format!(
                "clock offset to the collector {:+.3}s",
                if worse.name == ctx.src.name { a } else { b }
            ),
        ));
        c.fix = Some(format!(
            "check time synchronisation (chrony/systemd-timesyncd) on {}",
            worse.name
        ));
        out.push(c);
    }
}

pub(super) fn reboot(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for n in [ctx.dst, ctx.src] {
        let from = ctx.bad_since.unwrap_or(ctx.now) - crate::why::CHANGE_WINDOW_NANOS;
        let e = events(n, |k| matches!(k, pb::event::Kind::NodeRebooted(_)))
            .find(|e| e.time_unix_nanos >= from);
        checked.push(format!("{} rebooted recently: {}", n.name, e.is_some()));
        if let Some(e) = e {
            let mut c = cause(
                CauseCode::NodeRebooted,
                n,
                40,
                format!("{} rebooted shortly before the failure", n.name),
            );
            c.evidence.push(event(n, e));
            c.fix = Some(format!(
                "check that everything {} needs starts at boot (enabled units, addresses, firewall)",
                n.name
            ));
            out.push(c);
        }
    }
}
