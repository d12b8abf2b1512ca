//! The kmsg parser and classifier on records captured from a real kernel
//! (6.18, cgroup v1 memory controller), and the reader on fixture files.
//!
//! Fixtures in tests/fixtures/kmsg/:
//! - oom_memcg.txt: a real OOM kill in a 20 MiB memory cgroup, made with
//!
//! ```text
//! CG=/sys/fs/cgroup/memory/rmtest-oom-$$; mkdir $CG
//! echo 20M > $CG/memory.limit_in_bytes; echo 20M > $CG/memory.memsw.limit_in_bytes
//! sh -c "echo \$\$ > $CG/cgroup.procs; exec python3 -c 'x=bytearray(200*1024*1024)'"
//! rmdir $CG
//! dd if=/dev/kmsg iflag=nonblock bs=8192 | awk -F, '$2 >= 6633'
//! ```
//!
//! - syn_flood.txt: real SYN-queue overflows, in a fresh namespace with
//!   198.18.0.11/32 on lo, `sysctl net.ipv4.tcp_syncookies=1`, the clients'
//!   final ACKs dropped by `nft add rule inet t out 'tcp dport {8080,8443}
//!   tcp flags & (syn|ack) == ack drop'`, listeners on 198.18.0.11:8080 and
//!   [::1]:8443 with `listen(2)` and ten non-blocking connects to each; then
//!   `dd if=/dev/kmsg iflag=nonblock bs=8192`.
//! - bridge.txt: bridge port state changes from the same machine
//!   (`dd if=/dev/kmsg iflag=nonblock bs=8192 | grep -m12 -E 'br0: port|promisc'`).
//! - handmade.txt: forms this machine cannot produce, written after the
//!   kernel's format strings: conntrack table full (the root namespace's
//!   nf_conntrack_max is off limits), physical NIC drivers with SUBSYSTEM/DEVICE
//!   continuation lines, older kernels' OOM and SYN-flood lines, and records
//!   written from user space (facility != 0) that must not count.
//! - malformed.txt: truncated and corrupt records.

use reachmap_agent::facts::kernel::{KernelEvent, KernelEventKind, OomKill};
use reachmap_agent::inspect::kmsg::{
    Classifier, KmsgError, KmsgReader, parse_record, read_recent, split_records,
};
use std::net::IpAddr;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/tests/fixtures/kmsg/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn classify(name: &str) -> Vec<KernelEvent> {
    let text = std::fs::read(fixture(name)).expect("fixture");
    let mut c = Classifier::new(Some(1_700_000_000_000_000));
    let mut out = Vec::new();
    for rec in split_records(&text) {
        let r = parse_record(rec).expect("fixture records parse");
        out.extend(c.feed(&r));
    }
    out.extend(c.finish());
    out
}

fn kinds(events: &[KernelEvent]) -> Vec<KernelEventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

#[test]
fn record_header_and_continuation_lines() {
    let r = parse_record(
        b"6,103,6000000,-;e1000e 0000:00:19.0 eth0: NIC Link is Up\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:19.0\n",
    )
    .expect("parse");
    assert_eq!((r.prio, r.level(), r.facility()), (6, 6, 0));
    assert_eq!((r.seq, r.timestamp_us, r.flags), (103, 6_000_000, b'-'));
    assert_eq!(r.message, "e1000e 0000:00:19.0 eth0: NIC Link is Up");
    assert_eq!(r.subsystem, Some("pci"));
    assert_eq!(r.device, Some("+pci:0000:00:19.0"));
    // Newer kernels may add header fields after the flags.
    let r = parse_record(b"4,7,8,-,caller=T1;x\n").expect("extra header field");
    assert_eq!(r.message, "x");
}

#[test]
fn real_memcg_oom_kill_joins_both_records() {
    let events = classify("oom_memcg.txt");
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.seq, 6711);
    assert_eq!(e.monotonic_us, 3_004_630_905);
    assert_eq!(e.unix_ms, Some(1_700_000_000_000 + 3_004_630));
    assert_eq!(
        e.kind,
        KernelEventKind::OomKill(OomKill {
            pid: 15283,
            process: "python3".into(),
            uid: Some(0),
            constraint: Some("CONSTRAINT_MEMCG".into()),
            oom_memcg: Some("/rmtest-oom-14046".into()),
            cgroup: Some("/rmtest-oom-14046".into()),
            systemd_unit: None,
            total_vm_kb: Some(221_368),
            anon_rss_kb: Some(20_224),
            file_rss_kb: Some(6_360),
            shmem_rss_kb: Some(0),
            oom_score_adj: Some(0),
        })
    );
}

#[test]
fn real_syn_flood_v4_and_v6() {
    assert_eq!(
        kinds(&classify("syn_flood.txt")),
        vec![
            KernelEventKind::SynFlood {
                address: Some("198.18.0.11".parse::<IpAddr>().expect("ip")),
                port: 8080
            },
            KernelEventKind::SynFlood {
                address: Some("::1".parse::<IpAddr>().expect("ip")),
                port: 8443
            },
        ]
    );
}

#[test]
fn real_bridge_ports_forwarding_and_disabled() {
    let got: Vec<(String, bool)> = classify("bridge.txt")
        .into_iter()
        .map(|e| match e.kind {
            KernelEventKind::LinkState { interface, up, .. } => (interface, up),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expect = [
        ("v0", false),
        ("v0", false),
        ("v0", true),
        ("v0", true),
        ("v1", false),
    ];
    let expect: Vec<(String, bool)> = expect.iter().map(|(i, u)| (i.to_string(), *u)).collect();
    assert_eq!(got, expect);
}

#[test]
fn handmade_forms() {
    let events = classify("handmade.txt");
    let k = kinds(&events);
    let link = |i: &str, up| KernelEventKind::LinkState {
        interface: i.into(),
        up,
        message: String::new(),
    };
    let strip = |k: &KernelEventKind| match k {
        KernelEventKind::LinkState { interface, up, .. } => link(interface, *up),
        other => other.clone(),
    };
    let k: Vec<KernelEventKind> = k.iter().map(strip).collect();
    assert_eq!(k[0], link("eth0", true));
    assert_eq!(k[1], link("eno1", false));
    assert_eq!(k[2], link("ens3", false));
    assert_eq!(k[3], link("ens1f0", true));
    assert_eq!(
        k[4],
        KernelEventKind::SynFlood {
            address: None,
            port: 8080
        }
    );
    let KernelEventKind::OomKill(global) = &k[5] else {
        panic!("expected an OOM kill, got {:?}", k[5]);
    };
    assert_eq!((global.pid, global.process.as_str()), (4242, "java"));
    assert_eq!(global.constraint.as_deref(), Some("CONSTRAINT_NONE"));
    assert_eq!(global.cgroup.as_deref(), Some("/system.slice/app.service"));
    assert_eq!(global.systemd_unit.as_deref(), Some("app.service"));
    assert_eq!(global.oom_memcg, None);
    assert_eq!((global.uid, global.oom_score_adj), (Some(1000), Some(500)));
    let KernelEventKind::OomKill(old) = &k[6] else {
        panic!("expected an OOM kill, got {:?}", k[6]);
    };
    assert_eq!((old.pid, old.process.as_str()), (777, "node"));
    assert_eq!(
        (old.anon_rss_kb, old.uid, old.constraint.as_ref()),
        (Some(524_288), None, None)
    );
    // Flushed at the end: the conntrack records coalesced into one event with
    // the last record's seq, and the summary whose Killed line never came.
    assert_eq!(k[7], KernelEventKind::ConntrackFull { count: 3 });
    assert_eq!(events[7].seq, 102);
    let KernelEventKind::OomKill(orphan) = &k[8] else {
        panic!("expected the unpaired summary, got {:?}", k[8]);
    };
    assert_eq!((orphan.pid, orphan.process.as_str()), (31337, "a) b"));
    assert_eq!(orphan.oom_memcg.as_deref(), Some("/kubepods/pod1"));
    // Records written from user space (facility 1) are never events.
    assert_eq!(k.len(), 9, "{k:#?}");
}

#[test]
fn malformed_records_are_errors_not_panics() {
    let text = std::fs::read(fixture("malformed.txt")).expect("fixture");
    let results: Vec<Result<u64, String>> = split_records(&text)
        .map(|r| parse_record(r).map(|r| r.seq).map_err(|e| e.to_string()))
        .collect();
    assert!(matches!(
        parse_record(b"6,200,10000000,-"),
        Err(KmsgError::NoHeaderEnd)
    ));
    assert_eq!(
        results[1].as_ref().expect_err("short header"),
        "kmsg record: header field timestamp is missing"
    );
    assert!(results[2].as_ref().expect_err("prio").contains("prio"));
    assert!(results[3].as_ref().expect_err("seq").contains("seq"));
    assert!(results[4].as_ref().expect_err("ts").contains("timestamp"));
    assert!(results[5].as_ref().expect_err("flags").contains("flags"));
    assert_eq!(results[6], Ok(206));
    assert!(parse_record(b"6,1,2,-;\xff\xfe\n").is_err());
    assert!(parse_record(b"6,1,2,-;x\nno space\n").is_err());
    // What does parse is classified without panicking, and the bad events are
    // not reported.
    let events = read_recent(&fixture("malformed.txt"), None).expect("read");
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn read_recent_on_a_file() {
    let events = read_recent(&fixture("oom_memcg.txt"), None).expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].unix_ms, None);
}

async fn run_once(path: &PathBuf, state: &PathBuf, boot: &str) -> (Vec<KernelEvent>, u64) {
    let (tx, mut rx) = mpsc::channel(64);
    let reader = KmsgReader::new(path, boot).state_file(state);
    let stats = reader
        .run(tx, CancellationToken::new())
        .await
        .expect("reader");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (events, stats.skipped_total)
}

#[tokio::test]
async fn resumes_after_restart_without_replaying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("kmsg");
    let state = dir.path().join("kmsg.state");
    std::fs::copy(fixture("syn_flood.txt"), &log).expect("copy");
    let boot = "acf79588-20a8-4b3b-bb5a-7e209249f859";

    let (events, skipped) = run_once(&log, &state, boot).await;
    assert_eq!((events.len(), skipped), (2, 0));
    assert_eq!(
        std::fs::read_to_string(&state).expect("state"),
        format!("{boot} 6713\n")
    );

    // Restarted: nothing new.
    let (events, skipped) = run_once(&log, &state, boot).await;
    assert_eq!((events.len(), skipped), (0, 2));

    // New records arrive; only they are reported, and the gap is counted.
    let mut text = std::fs::read(&log).expect("read");
    text.extend_from_slice(b"6,6720,3300000000,-;br0: port 1(v0) entered forwarding state\n");
    std::fs::write(&log, text).expect("write");
    let (tx, mut rx) = mpsc::channel(64);
    let stats = KmsgReader::new(&log, boot)
        .state_file(&state)
        .run(tx, CancellationToken::new())
        .await
        .expect("reader");
    assert_eq!(stats.lost_records_total, 6);
    assert_eq!(rx.try_recv().expect("one event").seq, 6720);
    assert!(rx.try_recv().is_err());

    // Another boot: everything in the buffer happened in it.
    let (events, skipped) = run_once(&log, &state, "another-boot").await;
    assert_eq!((events.len(), skipped), (3, 0));

    // A corrupt state file is an error naming it, not a silent replay.
    std::fs::write(&state, "garbage").expect("write");
    let (tx, _rx) = mpsc::channel(1);
    let err = KmsgReader::new(&log, boot)
        .state_file(&state)
        .run(tx, CancellationToken::new())
        .await
        .expect_err("bad state");
    assert!(err.to_string().contains("kmsg.state"), "{err}");
}

#[tokio::test]
async fn full_channel_drops_and_counts() {
    let (tx, _rx) = mpsc::channel(1);
    let stats = KmsgReader::new(fixture("bridge.txt"), "b")
        .run(tx, CancellationToken::new())
        .await
        .expect("reader");
    assert_eq!((stats.events_total, stats.dropped_events_total), (1, 4));
}

#[test]
fn events_serialize_with_snake_case_tags() {
    let events = classify("syn_flood.txt");
    let json = serde_json::to_value(&events[0]).expect("json");
    assert_eq!(json["kind"]["type"], "syn_flood");
    assert_eq!(json["kind"]["port"], 8080);
}

#[tokio::test]
async fn a_followed_file_reports_records_appended_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("kmsg");
    std::fs::copy(fixture("bridge.txt"), &log).expect("copy");
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let reader = KmsgReader::new(&log, "b").follow(true);
    let task = tokio::spawn(reader.run(tx, stop.clone()));
    for _ in 0..5 {
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("the file's records")
            .expect("open");
    }
    // Half a record, then the rest: only whole lines are read.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    f.write_all(b"6,99999,4000000000,-;br0: port 2(v9) entered ")
        .expect("write");
    f.flush().expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    f.write_all(b"forwarding state\n").expect("write");
    let e = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("the appended record")
        .expect("open");
    assert_eq!(e.seq, 99999);
    stop.cancel();
    task.await.expect("joined").expect("stats");
}

#[tokio::test]
async fn a_resume_state_that_cannot_be_saved_never_stops_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("no-such-dir").join("kmsg.state");
    let (tx, mut rx) = mpsc::channel(64);
    let stats = KmsgReader::new(fixture("syn_flood.txt"), "b")
        .state_file(&state)
        .run(tx, CancellationToken::new())
        .await
        .expect("reading goes on");
    assert_eq!(stats.save_errors_total, 1, "{stats:?}");
    assert!(
        stats
            .save_error
            .as_deref()
            .is_some_and(|e| e.contains("no-such-dir")),
        "{stats:?}"
    );
    let mut events = 0;
    while rx.try_recv().is_ok() {
        events += 1;
    }
    assert_eq!(events, 2);
}
