//! Kernel events read from /dev/kmsg: OOM kills, conntrack table full, SYN
//! floods, link up/down.

use serde::Serialize;
use std::net::IpAddr;

/// One thing the kernel logged that explains failed or slow connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelEvent {
    /// The kmsg sequence number of the record that completed the event;
    /// strictly increasing within one boot.
    pub seq: u64,
    /// The record's timestamp: microseconds since boot (the kernel's
    /// monotonic clock, which stops during suspend).
    pub monotonic_us: u64,
    /// `monotonic_us` converted with the boot time; `None` when the boot time
    /// was not known.
    pub unix_ms: Option<i64>,
    pub kind: KernelEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum KernelEventKind {
    OomKill(OomKill),
    /// `nf_conntrack: table full, dropping packet`; `count` records coalesced
    /// into this event (the kernel itself rate-limits the message).
    ConntrackFull {
        count: u32,
    },
    /// `Possible SYN flooding on port ...`: a listener's SYN queue overflowed.
    /// Older kernels name only the port.
    SynFlood {
        address: Option<IpAddr>,
        port: u16,
    },
    /// A link went down or came up (driver `Link is Up/Down` messages, bridge
    /// ports entering the forwarding or disabled state).
    LinkState {
        interface: String,
        up: bool,
        message: String,
    },
}

/// A process killed by the OOM killer. Modern kernels log an `oom-kill:`
/// summary and a `Killed process` line; both are joined by pid. Fields a
/// kernel did not log are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OomKill {
    pub pid: u32,
    /// The process name (`comm`, at most 15 bytes).
    pub process: String,
    pub uid: Option<u32>,
    /// `CONSTRAINT_NONE` (the whole host ran out), `CONSTRAINT_MEMCG`,
    /// `CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY`.
    pub constraint: Option<String>,
    /// The memory cgroup whose limit was hit (memcg constraint only).
    pub oom_memcg: Option<String>,
    /// The victim's memory cgroup.
    pub cgroup: Option<String>,
    /// The systemd unit (`*.service`, `*.scope`) the victim's cgroup belongs to.
    pub systemd_unit: Option<String>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub oom_score_adj: Option<i32>,
}
