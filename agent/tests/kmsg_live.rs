//! The kmsg reader on this machine's real /dev/kmsg (root only): a real OOM
//! kill in a small memory cgroup, and a flood of 100,000 records.
//!
//! Both tests share the one kernel log, so they take turns (a flood wraps the
//! ring buffer). Neither touches the network; the cgroup has a unique name
//! and is removed even when the test fails.

mod support;

use reachmap_agent::facts::kernel::{KernelEvent, KernelEventKind};
use reachmap_agent::inspect::kmsg::{KmsgReader, KmsgStats};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::require_root;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

static KMSG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KMSG_PATH: &str = "/dev/kmsg";

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot_id")
        .trim()
        .to_owned()
}

type Running = (
    mpsc::Receiver<KernelEvent>,
    std::sync::Arc<reachmap_agent::inspect::kmsg::KmsgCounters>,
    CancellationToken,
    JoinHandle<Result<KmsgStats, reachmap_agent::inspect::kmsg::KmsgError>>,
);

fn start_reader(capacity: usize) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let reader = KmsgReader::new(KMSG_PATH, boot_id());
    let counters = reader.counters();
    let token = CancellationToken::new();
    let task = tokio::spawn(reader.run(tx, token.clone()));
    (rx, counters, token, task)
}

/// A memory cgroup with a small limit, v2 or v1, removed on drop.
struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    fn new(limit: &str) -> MemCgroup {
        let name = format!(
            "rmtest-oom-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos()
        );
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let (dir, limits): (PathBuf, &[&str]) = if v2 {
            (
                Path::new("/sys/fs/cgroup").join(&name),
                &["memory.max", "memory.swap.max"],
            )
        } else {
            (
                Path::new("/sys/fs/cgroup/memory").join(&name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            )
        };
        std::fs::create_dir(&dir).expect("create memory cgroup");
        let cg = MemCgroup { dir };
        std::fs::write(cg.dir.join(limits[0]), limit).expect("memory limit");
        // The swap limit exists only with swap accounting; without it there
        // is no swap to escape into either way.
        let swap = if v2 { "0" } else { limit };
        let _ = std::fs::write(cg.dir.join(limits[1]), swap);
        cg
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // The killed process may take a moment to leave.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_oom_kill_is_reported_with_pid_and_name() {
    if !require_root() {
        return;
    }
    let _turn = KMSG.lock().await;
    let (mut rx, _counters, token, task) = start_reader(4096);

    let cg = MemCgroup::new("20971520");
    // `tail` keeps the whole "line" of /dev/zero in memory: it never ends.
    let procs = cg.dir.join("cgroup.procs");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}; exec tail /dev/zero",
            procs.display()
        ))
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(!status.success(), "the allocator should have been killed");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let oom = loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no OOM kill event within 10 s")
            .expect("reader stopped");
        if let KernelEventKind::OomKill(oom) = event.kind
            && oom.pid == pid
        {
            break oom;
        }
    };
    assert_eq!(oom.process, "tail");
    let cg_name = cg.dir.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        oom.cgroup.as_deref().is_some_and(|c| c.contains(cg_name)),
        "{oom:?}"
    );
    assert_eq!(oom.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert!(oom.anon_rss_kb.is_some_and(|kb| kb > 0), "{oom:?}");

    token.cancel();
    task.await.expect("join").expect("reader");
}

/// Writes `<6>MESSAGE` records; the kernel rate-limits each open file to 10
/// records, so the file is reopened every 10.
fn inject(tag: &str, count: u32) {
    let mut file = None;
    for n in 0..count {
        if n % 10 == 0 {
            file = Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(KMSG_PATH)
                    .expect("open /dev/kmsg for writing"),
            );
        }
        let f = file.as_mut().expect("open");
        f.write_all(format!("<6>rmtest flood {tag} {n}\n").as_bytes())
            .expect("write /dev/kmsg");
    }
}

/// The seq of the record with this exact message, if still in the buffer.
fn find_seq(message: &str) -> Option<u64> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(KMSG_PATH)
        .expect("open");
    let mut buf = vec![0u8; 16384];
    let mut found = None;
    loop {
        match f.read(&mut buf) {
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                if let Some((header, msg)) = rec.split_once(';')
                    && msg.trim_end() == message
                {
                    found = header.split(',').nth(1).and_then(|s| s.parse().ok());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return found,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("read /dev/kmsg: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_keeps_up_with_a_flood() {
    if !require_root() {
        return;
    }
    let _turn = KMSG.lock().await;
    let (mut rx, counters, token, task) = start_reader(64);
    let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id());
    const COUNT: u32 = 100_000;

    let started = Instant::now();
    let t = tag.clone();
    tokio::task::spawn_blocking(move || inject(&t, COUNT))
        .await
        .expect("join");
    let written = started.elapsed();
    let marker = format!("rmtest flood {tag} {}", COUNT - 1);
    let seq = find_seq(&marker).expect("the last record is in the buffer");

    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = counters.snapshot();
        if s.last_seq.is_some_and(|l| l >= seq) {
            break s;
        }
        assert!(!task.is_finished(), "the reader stopped: {s:?}");
        assert!(
            Instant::now() < deadline,
            "reader did not reach seq {seq}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!task.is_finished(), "the reader stopped");
    // Every record was either read or counted as lost.
    assert!(
        stats.records_total + stats.lost_records_total >= u64::from(COUNT),
        "{stats:?}"
    );
    eprintln!("{COUNT} records written in {written:?}; reader: {stats:?}");
    // Records written from user space are never events.
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(&e.kind, KernelEventKind::LinkState { message, .. } if message.contains("rmtest flood")),
            "{e:?}"
        );
    }
    token.cancel();
    let end = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("reader stops within 3 s of shutdown")
        .expect("join")
        .expect("reader");
    assert!(end.last_seq >= Some(seq));
}
