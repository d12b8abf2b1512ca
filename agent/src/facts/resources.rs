//! Resource figures: load, CPU busy and steal, memory and swap, pressure,
//! conntrack, listen overflows, disk use, and the memory trend.

use serde::Serialize;

/// One reading of the host's resources.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resources {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    /// Logical CPUs (`cpuN` lines of /proc/stat).
    pub cpus: u32,
    /// Share of CPU time not idle or waiting for I/O since the previous
    /// reading (user, nice, system, irq, softirq, steal); `None` without one.
    pub cpu_busy_pct: Option<f64>,
    /// Share of CPU time the hypervisor gave to someone else.
    pub cpu_steal_pct: Option<f64>,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    /// Pressure stall information; `None` when the kernel has none (no
    /// CONFIG_PSI, or `psi=0`).
    pub pressure: Option<Pressure>,
    /// `None` when the conntrack module is not loaded.
    pub conntrack: Option<Conntrack>,
    /// TcpExt ListenOverflows / ListenDrops since boot; `None` without
    /// /proc/net/netstat.
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
    /// The filesystem at the configured root; `None` when statvfs failed.
    pub disk_root: Option<Disk>,
    pub memory_trend: MemoryTrend,
}

impl Resources {
    /// RAM in use plus swap in use: what a leak makes climb.
    pub fn memory_used_bytes(&self) -> u64 {
        self.mem_total_bytes
            .saturating_sub(self.mem_available_bytes)
            + self.swap_total_bytes.saturating_sub(self.swap_free_bytes)
    }
}

/// /proc/pressure/{cpu,memory,io}; each `None` when its file is absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu: Option<PressureFile>,
    pub memory: Option<PressureFile>,
    pub io: Option<PressureFile>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PressureFile {
    /// Some task stalled.
    pub some: PressureLine,
    /// All non-idle tasks stalled at once; `None` where the kernel has no
    /// `full` line (CPU before 5.13).
    pub full: Option<PressureLine>,
}

/// Percent of wall time stalled over 10 s, 60 s and 300 s, and the total
/// stall time in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Conntrack {
    pub count: u64,
    pub max: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Disk {
    /// The path measured (the configured root).
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// Free for unprivileged users.
    pub available_bytes: u64,
    /// used / (used + available), as `df` reports it.
    pub used_pct: f64,
}

/// How memory in use (RAM + swap) moved over the sampler's window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "trend")]
pub enum MemoryTrend {
    /// Too few samples, or too short a span, to say.
    Unknown,
    Steady,
    /// Rising steadily, as a leak does: a good straight-line fit, rising in
    /// most intervals.
    Growing {
        mib_per_min: f64,
    },
    /// One sudden jump (then flat or back down), not a steady climb.
    Spike,
}
