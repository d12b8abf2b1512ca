//! Records → kernel events. Cheap checks on the message's first bytes come
//! first; only a record that is an event allocates.

use super::parse::Record;
use crate::facts::kernel::{KernelEvent, KernelEventKind, OomKill};
use std::collections::VecDeque;
use std::net::IpAddr;

/// OOM summaries waiting for their `Killed process` line; more than this many
/// at once means the lines do not pair up (lost records), so the oldest goes.
const MAX_PENDING_OOM: usize = 16;

#[derive(Debug)]
struct PendingOom {
    oom: OomKill,
    seq: u64,
    ts: u64,
    /// Survived one tick already.
    stale: bool,
}

/// Stateful only where the kernel splits one event over several records (the
/// OOM kill) and to coalesce repeats (conntrack table full). Call `tick` now
/// and then and `finish` at the end, so nothing held back is lost.
#[derive(Debug, Default)]
pub struct Classifier {
    boot_unix_us: Option<i64>,
    /// `oom-kill:` summaries waiting for their `Killed process` line.
    pending_oom: VecDeque<PendingOom>,
    /// Conntrack-full records since the last event: count, last seq, last time.
    conntrack: Option<(u32, u64, u64)>,
}

impl Classifier {
    /// `boot_unix_us`: the wall-clock time of boot, to give events a wall-clock
    /// time; `None` leaves `unix_ms` empty.
    pub fn new(boot_unix_us: Option<i64>) -> Self {
        Classifier {
            boot_unix_us,
            ..Self::default()
        }
    }

    /// The event this record completes, if any.
    pub fn feed(&mut self, r: &Record) -> Option<KernelEvent> {
        if !r.from_kernel() {
            return None;
        }
        let m = r.message;
        let kind = match m.as_bytes().first()? {
            b'o' if m.starts_with("oom-kill:") => {
                let summary = parse_oom_summary(&m["oom-kill:".len()..])?;
                if self.pending_oom.len() >= MAX_PENDING_OOM {
                    self.pending_oom.pop_front();
                }
                self.pending_oom.push_back(PendingOom {
                    oom: summary,
                    seq: r.seq,
                    ts: r.timestamp_us,
                    stale: false,
                });
                return None;
            }
            b'O' | b'M' | b'K' if m.contains("Killed process ") => {
                let killed = killed_process(m)?;
                let pos = self
                    .pending_oom
                    .iter()
                    .position(|p| p.oom.pid == killed.pid);
                let oom = match pos.and_then(|i| self.pending_oom.remove(i)) {
                    Some(p) => merge(p.oom, killed),
                    None => killed,
                };
                KernelEventKind::OomKill(oom)
            }
            b'n' if m.starts_with("nf_conntrack: ")
                && m.ends_with("table full, dropping packet") =>
            {
                let c = self.conntrack.get_or_insert((0, r.seq, r.timestamp_us));
                *c = (c.0.saturating_add(1), r.seq, r.timestamp_us);
                return None;
            }
            b'T' if m.starts_with("TCP") => syn_flood(m)?,
            _ => link_state(m)?,
        };
        Some(self.event(r.seq, r.timestamp_us, kind))
    }

    /// Called now and then (the reader does every second): the coalesced
    /// conntrack-full records, and OOM summaries whose `Killed process` line
    /// has not come since the previous tick.
    pub fn tick(&mut self) -> Vec<KernelEvent> {
        let mut out = Vec::new();
        if let Some((count, seq, ts)) = self.conntrack.take() {
            out.push(self.event(seq, ts, KernelEventKind::ConntrackFull { count }));
        }
        while self.pending_oom.front().is_some_and(|p| p.stale) {
            if let Some(p) = self.pending_oom.pop_front() {
                out.push(self.event(p.seq, p.ts, KernelEventKind::OomKill(p.oom)));
            }
        }
        for p in &mut self.pending_oom {
            p.stale = true;
        }
        out
    }

    /// Everything held back, at the end of the input.
    pub fn finish(&mut self) -> Vec<KernelEvent> {
        for p in &mut self.pending_oom {
            p.stale = true;
        }
        self.tick()
    }

    fn event(&self, seq: u64, monotonic_us: u64, kind: KernelEventKind) -> KernelEvent {
        let unix_ms = self.boot_unix_us.and_then(|b| {
            let ts = i64::try_from(monotonic_us).ok()?;
            Some(b.checked_add(ts)? / 1000)
        });
        KernelEvent {
            seq,
            monotonic_us,
            unix_ms,
            kind,
        }
    }
}

fn merge(summary: OomKill, killed: OomKill) -> OomKill {
    OomKill {
        pid: killed.pid,
        process: if killed.process.is_empty() {
            summary.process
        } else {
            killed.process
        },
        uid: killed.uid.or(summary.uid),
        constraint: summary.constraint,
        oom_memcg: summary.oom_memcg,
        cgroup: summary.cgroup,
        systemd_unit: summary.systemd_unit,
        ..killed
    }
}

/// `constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
/// oom_memcg=/x,task_memcg=/x/y,task=NAME,pid=123,uid=0`. Values may contain
/// commas (`mems_allowed=0-1,3`, cgroup paths, process names), so the fixed
/// tail is taken from the right and the cgroups between known keys.
pub(super) fn parse_oom_summary(s: &str) -> Option<OomKill> {
    let (rest, uid) = s.rsplit_once(",uid=")?;
    let (rest, pid) = rest.rsplit_once(",pid=")?;
    let (head, task) = rest.rsplit_once(",task=")?;
    let constraint = s
        .strip_prefix("constraint=")
        .and_then(|c| c.split(',').next())
        .map(str::to_owned);
    let cgroup = head.split_once(",task_memcg=").map(|(_, c)| c.to_owned());
    let oom_memcg = head.split_once(",oom_memcg=").map(|(_, c)| {
        c.split_once(",task_memcg=")
            .map_or(c, |(o, _)| o)
            .to_owned()
    });
    Some(OomKill {
        pid: pid.parse().ok()?,
        process: task.to_owned(),
        uid: uid.trim().parse().ok(),
        constraint,
        systemd_unit: cgroup.as_deref().and_then(systemd_unit),
        oom_memcg,
        cgroup,
        ..OomKill::default()
    })
}

/// `... Killed process 123 (NAME) total-vm:221368kB, anon-rss:20224kB,
/// file-rss:6360kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0`,
/// after `Out of memory: ` or `Memory cgroup out of memory: `, or alone on
/// older kernels.
pub(super) fn killed_process(m: &str) -> Option<OomKill> {
    let rest = match m.strip_prefix("Killed process ") {
        Some(r) => r,
        None => {
            let (before, after) = m.split_once(": Killed process ")?;
            if !before.starts_with("Out of memory")
                && !before.starts_with("Memory cgroup out of memory")
            {
                return None;
            }
            after
        }
    };
    let (pid, rest) = rest.split_once(" (")?;
    let pid: u32 = pid.parse().ok()?;
    // The name may itself contain ") ", so end it at the figures that follow.
    let (name, figures) = match rest.rfind(") total-vm:") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => {
            let i = rest.rfind(')')?;
            (&rest[..i], &rest[i + 1..])
        }
    };
    let mut oom = OomKill {
        pid,
        process: name.to_owned(),
        ..OomKill::default()
    };
    for token in figures.split([' ', ',']) {
        let Some((key, value)) = token.split_once(':') else {
            continue;
        };
        let kb = || value.strip_suffix("kB").and_then(|v| v.parse().ok());
        match key {
            "total-vm" => oom.total_vm_kb = kb(),
            "anon-rss" => oom.anon_rss_kb = kb(),
            "file-rss" => oom.file_rss_kb = kb(),
            "shmem-rss" => oom.shmem_rss_kb = kb(),
            "UID" => oom.uid = value.parse().ok(),
            "oom_score_adj" => oom.oom_score_adj = value.parse().ok(),
            _ => {}
        }
    }
    Some(oom)
}

/// The most specific `.service` or `.scope` unit in a cgroup path.
pub(super) fn systemd_unit(cgroup: &str) -> Option<String> {
    cgroup
        .rsplit('/')
        .find(|c| c.len() > 8 && (c.ends_with(".service") || c.ends_with(".scope")))
        .map(str::to_owned)
}

/// `TCP: request_sock_TCP: Possible SYN flooding on port 198.18.0.11:8080. Sending cookies.`,
/// `TCPv6: request_sock_TCPv6: Possible SYN flooding on port [2001:db8::1]:80. ...`,
/// older `TCP: Possible SYN flooding on port 8080. Sending cookies.  Check SNMP counters.`
pub(super) fn syn_flood(m: &str) -> Option<KernelEventKind> {
    let (_, rest) = m.split_once("Possible SYN flooding on port ")?;
    let target = rest.split(". ").next()?.trim_end_matches('.');
    let (address, port) = if let Some(v6) = target.strip_prefix('[') {
        let (addr, port) = v6.split_once("]:")?;
        (Some(addr.parse::<IpAddr>().ok()?), port)
    } else if let Some((addr, port)) = target.rsplit_once(':') {
        (Some(addr.parse::<IpAddr>().ok()?), port)
    } else {
        (None, target)
    };
    Some(KernelEventKind::SynFlood {
        address,
        port: port.parse().ok()?,
    })
}

/// Driver messages (`eth0: Link is Down`, `e1000e 0000:00:19.0 eth0: NIC Link
/// is Up 1000 Mbps Full Duplex`, `mlx5_core ... ens1f0: Link down`) and bridge
/// ports (`br0: port 1(veth0) entered disabled state`).
pub(super) fn link_state(m: &str) -> Option<KernelEventKind> {
    if let Some((_, port)) = m.split_once(": port ") {
        let (_, rest) = port.split_once('(')?;
        let (interface, rest) = rest.rsplit_once(") entered ")?;
        let up = match rest {
            "forwarding state" => true,
            "disabled state" => false,
            _ => return None,
        };
        return link(interface, up, m);
    }
    const PATTERNS: [(&str, bool); 6] = [
        ("NIC Link is Up", true),
        ("NIC Link is Down", false),
        (": Link is Up", true),
        (": Link is Down", false),
        (": Link up", true),
        (": Link down", false),
    ];
    for (pattern, up) in PATTERNS {
        if let Some(i) = m.find(pattern) {
            // The interface is the last word before the pattern.
            let before = m[..i].trim_end().trim_end_matches(':');
            let interface = before.rsplit(' ').next()?.trim_end_matches(':');
            return link(interface, up, m);
        }
    }
    None
}

fn link(interface: &str, up: bool, message: &str) -> Option<KernelEventKind> {
    let valid = !interface.is_empty()
        && interface.len() <= 15
        && interface
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    valid.then(|| KernelEventKind::LinkState {
        interface: interface.to_owned(),
        up,
        message: message.to_owned(),
    })
}
