//! What a benchmark reads of a running process: its CPU time from
//! `/proc/PID/stat`, its memory from `/proc/PID/status`, and the pid of a
//! program running in a namespace.

use std::process::Command;

/// (utime + stime, cutime + cstime) in clock ticks: the process's own CPU
/// time, and that of the children it waited for (the tools it ran).
pub fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14..17 (utime, stime, cutime, cstime) are at 11..14 after comm.
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(11) + at(12), at(13) + at(14))
}

/// A `/proc/PID/status` figure in kB (`VmRSS:`, `VmHWM:`); 0 when absent.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The pid of the process named `comm` in network namespace `ns`.
pub fn pid_in_netns(ns: &str, comm: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == comm)
                .unwrap_or(false)
        })
}
