//! CPU time and memory of a process, from /proc.

use std::time::Instant;

/// USER_HZ: /proc reports CPU time in these ticks on every Linux ABI.
pub const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime, in ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

/// utime + stime from the text of /proc/PID/stat.
pub fn parse_stat(text: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start
    // after the last ')'. utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` field of /proc/PID/status.
pub fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn sample(pid: &str) -> Option<Sample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample {
        at,
        cpu_ticks: parse_stat(&stat)?,
        rss_kib: status_field(&status, "VmRSS")?,
        hwm_kib: status_field(&status, "VmHWM")?,
        threads: status_field(&status, "Threads").unwrap_or(0),
    })
}

/// (CPU time, run-queue wait) of every thread, in nanoseconds, from
/// /proc/PID/task/*/schedstat: finer than ticks, and the wait shows
/// how much other processes kept the threads from a core.
pub fn sched(pid: &str) -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue; // the thread ended
        };
        let mut f = text
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        total.0 += f.next().unwrap_or(0);
        total.1 += f.next().unwrap_or(0);
    }
    Some(total)
}

/// CPU used between two samples, in percent of one core.
pub fn cpu_pct(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / TICKS_PER_SECOND / wall * 100.0
}

/// CPU seconds between two samples.
pub fn cpu_seconds(a: &Sample, b: &Sample) -> f64 {
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / TICKS_PER_SECOND
}
