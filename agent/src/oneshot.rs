//! `reachmap-agent snapshot`: everything the agent sees on this host, read
//! once and printed — no collector needed. The first thing to run on a
//! suspicious host. The inspectors run at the same time, each on a thread
//! of its own.

use crate::facts::firewall::Ruleset;
use crate::facts::kernel::KernelEvent;
use crate::facts::resources::Resources;
use crate::facts::sockets::SocketFacts;
use crate::facts::{HostInfo, NetState};
use crate::inspect;
use crate::inspect::firewall::reader::{ReadOptions, read_ruleset};
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

/// CPU figures need two readings of /proc/stat; this is the gap between
/// them (the other readers run meanwhile, so it costs no extra time).
const CPU_SAMPLE_GAP: Duration = Duration::from_millis(50);

/// Where the host is read from.
#[derive(Clone, Debug)]
pub struct Paths {
    pub procfs: PathBuf,
    pub etc: PathBuf,
    pub kmsg: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            procfs: "/proc".into(),
            etc: "/etc".into(),
            kmsg: "/dev/kmsg".into(),
            rootfs: "/".into(),
        }
    }
}

/// A part that could not be read says why instead of failing the whole.
#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum Part<T> {
    Read(T),
    Unreadable { error: String },
}

impl<T> Part<T> {
    fn from<E: std::fmt::Display>(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Part::Read(v),
            Err(e) => Part::Unreadable {
                error: e.to_string(),
            },
        }
    }

    fn get(&self) -> Option<&T> {
        match self {
            Part::Read(v) => Some(v),
            Part::Unreadable { .. } => None,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct HostSnapshot {
    pub machine_id: String,
    pub boot_id: String,
    pub host: HostInfo,
    #[serde(flatten)]
    pub net: NetState,
    pub sockets: Part<SocketFacts>,
    pub firewall: Part<Ruleset>,
    pub resources: Part<Resources>,
    /// OOM kills, conntrack and SYN-flood warnings, link messages still in
    /// the kernel's log buffer, oldest first.
    pub kernel_events: Part<Vec<KernelEvent>>,
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> tokio::task::JoinHandle<Result<T, String>> {
    tokio::task::spawn_blocking(f)
}

async fn joined<T>(h: tokio::task::JoinHandle<Result<T, String>>) -> Result<T, String> {
    h.await
        .unwrap_or_else(|e| Err(format!("reader stopped: {e}")))
}

pub async fn read(paths: &Paths) -> anyhow::Result<HostSnapshot> {
    let identity = inspect::host::read_identity(&paths.procfs, &paths.etc)?;
    let host = inspect::host::read_host_info(&paths.procfs)?;
    let procfs = paths.procfs.clone();
    let sockets = blocking(move || {
        inspect::sockets::SocketReader::new(procfs)
            .read_all()
            .map_err(|e| e.to_string())
    });
    let opts = ReadOptions {
        procfs: paths.procfs.clone(),
        ..ReadOptions::default()
    };
    let firewall = blocking(move || read_ruleset(&opts).map_err(|e| e.to_string()));
    let (kmsg, procfs) = (paths.kmsg.clone(), paths.procfs.clone());
    let kernel = blocking(move || {
        inspect::kmsg::read_recent(&kmsg, inspect::kmsg::boot_unix_us(&procfs))
            .map_err(|e| e.to_string())
    });
    let (procfs, rootfs) = (paths.procfs.clone(), paths.rootfs.clone());
    let resources = async move {
        inspect::resources::read_once(&procfs, &rootfs, CPU_SAMPLE_GAP)
            .await
            .map_err(|e| e.to_string())
    };
    let (net, resources, sockets, firewall, kernel) = tokio::join!(
        inspect::watch::read_once(),
        resources,
        joined(sockets),
        joined(firewall),
        joined(kernel)
    );
    Ok(HostSnapshot {
        machine_id: identity.machine_id,
        boot_id: identity.boot_id,
        host,
        net: net?,
        sockets: Part::from(sockets),
        firewall: Part::from(firewall),
        resources: Part::from(resources),
        kernel_events: Part::from(kernel),
    })
}

pub fn json(s: &HostSnapshot) -> String {
    let mut out =
        serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    out.push('\n');
    out
}

pub fn text(s: &HostSnapshot) -> String {
    let mut out = String::new();
    let h = &s.host;
    let _ = writeln!(
        out,
        "host {}  kernel {}  {}  up {}s",
        h.hostname, h.kernel, h.os, h.uptime_seconds
    );
    let _ = writeln!(out, "boot id {}  machine id {}", s.boot_id, s.machine_id);
    out.push_str("\ninterfaces\n");
    for i in &s.net.interfaces {
        let addrs: Vec<String> = i
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.ip, a.prefix_len))
            .collect();
        let _ = writeln!(
            out,
            "  {:<16} {:<8} admin {:<4} mtu {:<6} {}",
            i.name,
            format!("{:?}", i.oper_state).to_lowercase(),
            if i.admin_up { "up" } else { "down" },
            i.mtu,
            addrs.join(" ")
        );
    }
    out.push_str("\nroutes (main table)\n");
    for r in &s.net.routes {
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let dev = r
            .interface
            .as_deref()
            .map(|d| format!(" dev {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}{via}{dev} metric {}",
            r.destination_cidr(),
            r.metric
        );
    }
    text_sockets(&mut out, s);
    text_firewall(&mut out, s);
    text_resources(&mut out, s);
    text_kernel(&mut out, s);
    out
}

fn text_sockets(out: &mut String, s: &HostSnapshot) {
    out.push_str("\nlisteners\n");
    let Some(f) = s.sockets.get() else {
        if let Part::Unreadable { error } = &s.sockets {
            let _ = writeln!(out, "  unreadable: {error}");
        }
        return;
    };
    for l in &f.listeners {
        let procs: Vec<String> = l
            .processes
            .iter()
            .map(|p| match &p.unit {
                Some(u) => format!("{}[{}] {u}", p.name, p.pid),
                None => format!("{}[{}]", p.name, p.pid),
            })
            .collect();
        let scope = match l.scope {
            crate::facts::sockets::BindScope::Loopback => "loopback only",
            crate::facts::sockets::BindScope::Any => "all addresses",
            crate::facts::sockets::BindScope::Address => "one address",
        };
        let endpoint = if l.address.is_ipv6() {
            format!("[{}]:{}", l.address, l.port)
        } else {
            format!("{}:{}", l.address, l.port)
        };
        let _ = writeln!(
            out,
            "  {:<4} {:<28} {:<14} estab {:<6} queue {}/{}  {}",
            format!("{:?}", l.protocol).to_lowercase(),
            endpoint,
            scope,
            l.established,
            l.accept_queue,
            l.accept_queue_limit,
            procs.join(", ")
        );
    }
    let m = &f.summary;
    let _ = writeln!(
        out,
        "  tcp sockets {} ({} established, {} time-wait), udp sockets {}",
        m.tcp_total, m.tcp_established, m.tcp_time_wait, m.udp_total
    );
}

fn text_firewall(out: &mut String, s: &HostSnapshot) {
    out.push_str("\nfirewall\n");
    let Some(r) = s.firewall.get() else {
        if let Part::Unreadable { error } = &s.firewall {
            let _ = writeln!(out, "  unreadable: {error}");
        }
        return;
    };
    let _ = writeln!(
        out,
        "  {} with {} rules{}",
        crate::wire::firewall::backends(r),
        crate::wire::firewall::rule_count(r),
        r.generation
            .map(|g| format!(", generation {g}"))
            .unwrap_or_default()
    );
    for t in &r.tables {
        for c in &t.chains {
            let hook = c
                .hook
                .map(|h| format!("{h:?} prio {}", c.priority.unwrap_or(0)).to_lowercase())
                .unwrap_or_else(|| "-".into());
            let policy = c
                .policy
                .map(|p| format!("policy {p:?}").to_lowercase())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:?} {:<16} {:<20} {:<20} {:<14} {} rules",
                t.family,
                t.name,
                c.name,
                hook,
                policy,
                c.rules.len()
            );
        }
    }
}

fn text_resources(out: &mut String, s: &HostSnapshot) {
    out.push_str("\nresources\n");
    let Some(r) = s.resources.get() else {
        if let Part::Unreadable { error } = &s.resources {
            let _ = writeln!(out, "  unreadable: {error}");
        }
        return;
    };
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into());
    let gib = |b: u64| format!("{:.1}G", b as f64 / (1u64 << 30) as f64);
    let _ = writeln!(
        out,
        "  load {:.2} {:.2} {:.2} on {} cpus, cpu busy {}, steal {}",
        r.load1,
        r.load5,
        r.load15,
        r.cpus,
        pct(r.cpu_busy_pct),
        pct(r.cpu_steal_pct)
    );
    let _ = writeln!(
        out,
        "  memory {} of {} used, swap {} of {} used",
        gib(r.mem_total_bytes.saturating_sub(r.mem_available_bytes)),
        gib(r.mem_total_bytes),
        gib(r.swap_total_bytes.saturating_sub(r.swap_free_bytes)),
        gib(r.swap_total_bytes)
    );
    if let Some(c) = r.conntrack {
        let _ = writeln!(out, "  conntrack {} of {}", c.count, c.max);
    }
    if let (Some(o), Some(d)) = (r.listen_overflows, r.listen_drops) {
        let _ = writeln!(out, "  listen queue overflows {o}, drops {d}");
    }
    if let Some(d) = &r.disk_root {
        let _ = writeln!(
            out,
            "  disk {} {} of {} used ({:.0}%)",
            d.path,
            gib(d.used_bytes),
            gib(d.total_bytes),
            d.used_pct
        );
    }
}

fn text_kernel(out: &mut String, s: &HostSnapshot) {
    let Some(events) = s.kernel_events.get() else {
        return;
    };
    if events.is_empty() {
        return;
    }
    out.push_str("\nkernel events in the log buffer\n");
    for e in events {
        let _ = writeln!(
            out,
            "  {:>12.3}s  {:?}",
            e.monotonic_us as f64 / 1e6,
            e.kind
        );
    }
}
