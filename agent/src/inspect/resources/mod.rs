//! Resources inspector: /proc figures, pressure stall info, disk use, and the
//! memory trend.
//!
//! The parsers (`parse`) and the trend (`trend`) are pure. `ResourceSampler`
//! reads the files under a configurable procfs root (so tests use fixture
//! trees) and keeps what needs history: the previous /proc/stat reading, for
//! CPU percentages, and the memory samples of the trend window.
//!
//! CPU busy/steal are deltas between two readings, so the sampler's first
//! `sample` reports `None` for them (a poller gets figures from its second
//! poll on, without ever sleeping); `read_once` is for the one-shot snapshot
//! and takes two readings `gap` apart to report real figures.

mod parse;
mod trend;

pub use parse::{
    CpuTimes, FieldError, MemInfo, parse_loadavg, parse_meminfo, parse_netstat, parse_number,
    parse_pressure, parse_stat,
};
pub use trend::memory_trend;

use crate::facts::resources::{Conntrack, Disk, Pressure, Resources};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {field}: {what}")]
    Malformed {
        path: PathBuf,
        field: String,
        what: String,
    },
}

/// Reads `Resources` from a procfs root and the filesystem at `root`.
#[derive(Clone, Debug)]
pub struct ResourceSampler {
    /// The proc filesystem (`/proc`, or a fixture tree). Public so a test can
    /// point the next sample at a later tree.
    pub procfs: PathBuf,
    /// The path whose filesystem is reported as `disk_root` (`/`, or the
    /// host's root mounted into a container).
    pub root: PathBuf,
    window: Duration,
    prev_cpu: Option<CpuTimes>,
    /// Memory in use (RAM + swap) per sample, oldest first.
    memory: VecDeque<(Instant, u64)>,
}

impl ResourceSampler {
    /// `window`: how far back the memory trend looks (e.g. 10 minutes).
    pub fn new(procfs: impl Into<PathBuf>, root: impl Into<PathBuf>, window: Duration) -> Self {
        ResourceSampler {
            procfs: procfs.into(),
            root: root.into(),
            window,
            prev_cpu: None,
            memory: VecDeque::new(),
        }
    }

    /// Reads /proc/stat only, so that the next `sample` has CPU figures.
    pub fn prime(&mut self) -> Result<(), ResourceError> {
        self.prev_cpu = Some(self.file("stat", parse_stat)?);
        Ok(())
    }

    pub fn sample(&mut self) -> Result<Resources, ResourceError> {
        self.sample_at(Instant::now())
    }

    /// `sample` with the time of the reading given (for the trend window).
    pub fn sample_at(&mut self, now: Instant) -> Result<Resources, ResourceError> {
        let [load1, load5, load15] = self.file("loadavg", parse_loadavg)?;
        let cpu = self.file("stat", parse_stat)?;
        let mem = self.file("meminfo", parse_meminfo)?;
        let usage = self.prev_cpu.and_then(|prev| cpu.usage_since(&prev));
        self.prev_cpu = Some(cpu);
        let pressure = Pressure {
            cpu: self.optional("pressure/cpu", parse_pressure)?,
            memory: self.optional("pressure/memory", parse_pressure)?,
            io: self.optional("pressure/io", parse_pressure)?,
        };
        let pressure =
            (pressure.cpu.is_some() || pressure.memory.is_some() || pressure.io.is_some())
                .then_some(pressure);
        let count = self.optional("sys/net/netfilter/nf_conntrack_count", |t| {
            parse_number("nf_conntrack_count", t)
        })?;
        let max = self.optional("sys/net/netfilter/nf_conntrack_max", |t| {
            parse_number("nf_conntrack_max", t)
        })?;
        let listen = self.optional("net/netstat", parse_netstat)?;
        let mut r = Resources {
            load1,
            load5,
            load15,
            cpus: cpu.cpus,
            cpu_busy_pct: usage.map(|u| round2(u.0)),
            cpu_steal_pct: usage.map(|u| round2(u.1)),
            mem_total_bytes: mem.mem_total,
            mem_available_bytes: mem.mem_available,
            swap_total_bytes: mem.swap_total,
            swap_free_bytes: mem.swap_free,
            pressure,
            conntrack: count.zip(max).map(|(count, max)| Conntrack { count, max }),
            listen_overflows: listen.map(|l| l.0),
            listen_drops: listen.map(|l| l.1),
            disk_root: disk(&self.root),
            memory_trend: crate::facts::resources::MemoryTrend::Unknown,
        };
        self.memory.push_back((now, r.memory_used_bytes()));
        while let Some((t, _)) = self.memory.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.memory.pop_front();
            } else {
                break;
            }
        }
        let start = self.memory.front().map_or(now, |s| s.0);
        let series: Vec<(f64, u64)> = self
            .memory
            .iter()
            .map(|(t, b)| (t.saturating_duration_since(start).as_secs_f64(), *b))
            .collect();
        r.memory_trend = memory_trend(&series);
        Ok(r)
    }

    fn file<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Result<T, ResourceError> {
        let path = self.procfs.join(name);
        let text = std::fs::read_to_string(&path).map_err(|error| ResourceError::Read {
            path: path.clone(),
            error,
        })?;
        parse(&text).map_err(|e| ResourceError::Malformed {
            path,
            field: e.field,
            what: e.what,
        })
    }

    /// Like `file`, but a file that does not exist is `None`.
    fn optional<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, ResourceError> {
        match self.file(name, parse) {
            Ok(v) => Ok(Some(v)),
            Err(ResourceError::Read { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// One reading with real CPU figures: /proc/stat read twice, `gap` apart
/// (100 ms is plenty), for `reachmap-agent snapshot`.
pub async fn read_once(
    procfs: &Path,
    root: &Path,
    gap: Duration,
) -> Result<Resources, ResourceError> {
    let mut sampler = ResourceSampler::new(procfs, root, Duration::ZERO);
    sampler.prime()?;
    tokio::time::sleep(gap).await;
    sampler.sample()
}

/// statvfs of `root`; `None` (logged) when it fails.
fn disk(root: &Path) -> Option<Disk> {
    let st = match nix::sys::statvfs::statvfs(root) {
        Ok(st) => st,
        Err(e) => {
            tracing::debug!(path = %root.display(), error = %e, "statvfs failed");
            return None;
        }
    };
    let frsize = st.fragment_size();
    let total_bytes = st.blocks().saturating_mul(frsize);
    let free = st.blocks_free().saturating_mul(frsize);
    let available_bytes = st.blocks_available().saturating_mul(frsize);
    let used_bytes = total_bytes.saturating_sub(free);
    let denominator = used_bytes.saturating_add(available_bytes);
    let used_pct = if denominator == 0 {
        0.0
    } else {
        round2(used_bytes as f64 * 100.0 / denominator as f64)
    };
    Some(Disk {
        path: root.display().to_string(),
        total_bytes,
        used_bytes,
        available_bytes,
        used_pct,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
