//! The resources sampler on fixture /proc trees. Each fixture has two trees,
//! t0 and t1, read one after the other (CPU figures are deltas).
//!
//! - host/: this machine's files (6.18 kernel, 2 CPUs), copied one second
//!   apart:
//!
//! ```text
//! for t in t0 t1; do for f in loadavg stat meminfo pressure/cpu \
//!   pressure/memory pressure/io net/netstat \
//!   sys/net/netfilter/nf_conntrack_count sys/net/netfilter/nf_conntrack_max; do
//!   cat /proc/$f > host/$t/$f; done; sleep 1; done
//! ```
//!
//! - steal/: hand-made, 4 CPUs, 40 % of the interval stolen by the hypervisor;
//!   no pressure, conntrack or netstat files (as on kernels without them).
//! - overloaded/: hand-made, load 24 on 2 CPUs, 99 % busy, memory and swap
//!   nearly gone, high pressure, conntrack table nearly full, listen overflows.

use reachmap_agent::facts::resources::{Conntrack, MemoryTrend};
use reachmap_agent::inspect::resources::{
    ResourceError, ResourceSampler, parse_loadavg, parse_meminfo, parse_netstat, parse_pressure,
    parse_stat,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn tree(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/tests/fixtures/procfs/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// Samples t0 then t1 of a fixture; returns the second reading.
fn two_readings(name: &str) -> reachmap_agent::facts::resources::Resources {
    let mut s = ResourceSampler::new(tree(&format!("{name}/t0")), "/", Duration::from_secs(600));
    let first = s.sample().expect("t0");
    assert_eq!((first.cpu_busy_pct, first.cpu_steal_pct), (None, None));
    s.procfs = tree(&format!("{name}/t1"));
    s.sample().expect("t1")
}

#[test]
fn real_host_tree() {
    let r = two_readings("host");
    assert_eq!((r.load1, r.load5, r.load15), (1.28, 1.0, 1.24));
    assert_eq!(r.cpus, 2);
    // t0 → t1: 167 busy ticks of 200.
    assert_eq!(r.cpu_busy_pct, Some(83.5));
    assert_eq!(r.cpu_steal_pct, Some(0.0));
    assert_eq!(r.mem_total_bytes, 24_684_096 * 1024);
    assert!(r.mem_available_bytes > 0 && r.mem_available_bytes < r.mem_total_bytes);
    assert_eq!((r.swap_total_bytes, r.swap_free_bytes), (0, 0));
    let p = r.pressure.as_ref().expect("pressure");
    let cpu = p.cpu.as_ref().expect("cpu pressure");
    assert!(cpu.some.avg10 > 0.0 && cpu.full.is_some());
    assert!(p.memory.is_some() && p.io.is_some());
    assert_eq!(r.conntrack.map(|c| c.max), Some(262_144));
    assert_eq!((r.listen_overflows, r.listen_drops), (Some(0), Some(0)));
    let disk = r.disk_root.as_ref().expect("statvfs of /");
    assert!(disk.total_bytes > 0 && disk.used_bytes <= disk.total_bytes);
    assert!((0.0..=100.0).contains(&disk.used_pct));
    assert_eq!(r.memory_trend, MemoryTrend::Unknown);
}

#[test]
fn steal_tree() {
    let r = two_readings("steal");
    assert_eq!(r.cpus, 4);
    assert_eq!(r.cpu_busy_pct, Some(60.0));
    assert_eq!(r.cpu_steal_pct, Some(40.0));
    assert_eq!(r.pressure, None);
    assert_eq!(r.conntrack, None);
    assert_eq!((r.listen_overflows, r.listen_drops), (None, None));
}

#[test]
fn overloaded_tree() {
    let r = two_readings("overloaded");
    assert_eq!((r.load1, r.cpus), (24.5, 2));
    assert_eq!(r.cpu_busy_pct, Some(99.0));
    assert_eq!(r.mem_available_bytes, 100_000 * 1024);
    assert_eq!(r.memory_used_bytes(), (3_900_000 + 1_500_000) * 1024);
    let p = r.pressure.expect("pressure");
    let mem = p.memory.expect("memory");
    assert_eq!(mem.some.avg10, 45.0);
    assert_eq!(mem.full.expect("full").avg300, 20.0);
    assert_eq!(
        r.conntrack,
        Some(Conntrack {
            count: 262_000,
            max: 262_144
        })
    );
    assert_eq!(
        (r.listen_overflows, r.listen_drops),
        (Some(98_765), Some(98_800))
    );
}

#[test]
fn serializes_for_the_snapshot() {
    let r = two_readings("steal");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["cpu_steal_pct"], 40.0);
    assert_eq!(json["memory_trend"]["trend"], "unknown");
}

/// Copies a fixture tree and replaces one file.
fn broken(file: &str, text: &str) -> (tempfile::TempDir, ResourceError) {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&tree("overloaded/t0"), dir.path());
    std::fs::write(dir.path().join(file), text).expect("write");
    let err = ResourceSampler::new(dir.path(), "/", Duration::ZERO)
        .sample()
        .expect_err("malformed file");
    (dir, err)
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn malformed_files_name_file_and_field() {
    let cases = [
        (
            "meminfo",
            "MemTotal:        4000000 kB\nMemAvailable: 1",
            "meminfo: SwapTotal: missing",
        ),
        (
            "meminfo",
            "MemTotal: lots kB\n",
            "meminfo: MemTotal: not a number",
        ),
        ("loadavg", "0.5 0.4", "loadavg: load15: missing"),
        ("loadavg", "NaN 1 1 1/1 1", "loadavg: load1: out of range"),
        (
            "stat",
            "cpu  1 2 3\ncpu0 1 2 3 4\n",
            "stat: cpu idle: missing",
        ),
        ("stat", "intr 0\n", "stat: cpu: no aggregate cpu line"),
        (
            "pressure/memory",
            "some avg10=1.0 avg60=x avg300=1 total=1\n",
            "pressure/memory: some avg60: not a number",
        ),
        (
            "pressure/io",
            "full avg10=1 avg60=1 avg300=1 total=1\n",
            "pressure/io: some: missing",
        ),
        (
            "net/netstat",
            "TcpExt: ListenOverflows ListenDrops\n",
            "net/netstat: TcpExt: header without a values line",
        ),
        (
            "net/netstat",
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n",
            "net/netstat: TcpExt: 2 names but 1 values",
        ),
        (
            "sys/net/netfilter/nf_conntrack_max",
            "",
            "nf_conntrack_max: nf_conntrack_max: missing",
        ),
    ];
    for (file, text, expect) in cases {
        let (_dir, err) = broken(file, text);
        let msg = err.to_string();
        assert!(
            msg.contains(expect),
            "{file}: {msg:?} should contain {expect:?}"
        );
    }
    // A missing required file is a read error naming it.
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ResourceSampler::new(dir.path(), "/", Duration::ZERO)
        .sample()
        .expect_err("empty tree");
    assert!(err.to_string().contains("loadavg"), "{err}");
}

#[test]
fn parsers_never_panic_on_truncations() {
    for name in ["host/t0", "overloaded/t0"] {
        for file in ["loadavg", "stat", "meminfo", "pressure/cpu", "net/netstat"] {
            let text = std::fs::read_to_string(tree(name).join(file)).expect("fixture");
            for cut in 0..text.len() {
                let Some(t) = text.get(..cut) else { continue };
                let _ = (
                    parse_loadavg(t),
                    parse_stat(t),
                    parse_meminfo(t),
                    parse_pressure(t),
                    parse_netstat(t),
                );
            }
        }
    }
}

#[test]
fn memory_trend_through_the_sampler() {
    // The same tree every minute with MemAvailable falling 50 MiB a minute.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&tree("steal/t0"), dir.path());
    let mut s = ResourceSampler::new(dir.path(), "/", Duration::from_secs(600));
    let t0 = Instant::now();
    let mut last = MemoryTrend::Unknown;
    for minute in 0..12u64 {
        let available_kb = 6_000_000 - minute * 50 * 1024;
        std::fs::write(
            dir.path().join("meminfo"),
            format!(
                "MemTotal: 8000000 kB\nMemAvailable: {available_kb} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
            ),
        )
        .expect("write");
        last = s
            .sample_at(t0 + Duration::from_secs(minute * 60))
            .expect("sample")
            .memory_trend;
        if minute < 4 {
            assert_eq!(last, MemoryTrend::Unknown, "minute {minute}");
        }
    }
    assert_eq!(last, MemoryTrend::Growing { mib_per_min: 50.0 });
}

#[tokio::test]
async fn read_once_has_cpu_figures() {
    let r = reachmap_agent::inspect::resources::read_once(
        Path::new("/proc"),
        Path::new("/"),
        Duration::from_millis(100),
    )
    .await
    .expect("this host's /proc");
    assert!(r.cpus >= 1);
    assert!(
        r.cpu_busy_pct.is_some_and(|b| (0.0..=100.0).contains(&b)),
        "{r:?}"
    );
    assert!(r.mem_total_bytes > 0);
}
