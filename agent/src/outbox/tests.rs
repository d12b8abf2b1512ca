//! The outbox in memory and on disk: ids, bounds, drops, restarts, damaged
//! logs, compaction, and directories it cannot write.

use super::*;
use crate::facts::OperState;
use std::path::PathBuf;

const A: u64 = 0xa1;
const B: u64 = 0xb1;

fn limits(events: usize) -> Limits {
    Limits {
        events,
        bytes: 16 << 20,
    }
}

fn ev(n: u32) -> HostEvent {
    ev_named(format!("eth{n}"), n)
}

fn ev_named(interface: String, n: u32) -> HostEvent {
    HostEvent {
        time: UNIX_EPOCH + Duration::from_secs(u64::from(n)),
        kind: EventKind::LinkAdded {
            interface,
            admin_up: true,
            oper_state: OperState::Up,
        },
    }
}

fn name(e: &pb::Event) -> String {
    match &e.kind {
        Some(pb::event::Kind::LinkChanged(l)) => l.interface.clone(),
        Some(pb::event::Kind::EventsDropped(d)) => format!("dropped:{}", d.count),
        other => format!("{other:?}"),
    }
}

/// Sends everything unsent: (instance, id, name) in delivery order.
fn drain(o: &mut Outbox, seq: &mut u64) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    while o.has_unsent() {
        *seq += 1;
        let e = o.next_unsent(*seq).expect("unsent entry");
        out.push((e.instance_id(), e.id(), name(e.event())));
    }
    out
}

fn ids(sent: &[(u64, u64, String)]) -> Vec<u64> {
    sent.iter().map(|e| e.1).collect()
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join(log_name("n1"))
}

fn open(dir: &Path, instance: u64, l: Limits) -> Outbox {
    Outbox::open(dir, "n1", instance, l)
}

#[test]
fn acked_events_leave_unacked_are_resent_with_the_same_id() {
    let mut o = Outbox::in_memory(A, limits(10));
    let mut seq = 0;
    for n in 0..3 {
        o.push(ev(n));
    }
    let first = drain(&mut o, &mut seq);
    assert_eq!(ids(&first), [1, 2, 3]);
    assert!(first.iter().all(|e| e.0 == A));
    o.ack(seq - 1); // the last one's ack was lost
    o.rewind();
    let again = drain(&mut o, &mut seq);
    assert_eq!(again, vec![(A, 3, "eth2".to_string())]);
    o.ack(seq);
    assert_eq!(o.unacked(), 0);
    assert_eq!(o.unacked_bytes(), 0);
    assert!(!o.has_unsent());
}

#[test]
fn ids_are_given_at_push() {
    let mut o = Outbox::in_memory(A, limits(10));
    o.push(ev(0));
    o.push(ev(1));
    let mut seq = 10;
    assert_eq!(ids(&drain(&mut o, &mut seq)), [1, 2]);
}

#[test]
fn overflow_drops_oldest_counts_and_reports_behind_the_survivors() {
    let mut o = Outbox::in_memory(A, limits(3));
    for n in 0..5 {
        o.push(ev(n));
    }
    assert_eq!(o.dropped_total(), 2);
    let mut seq = 0;
    let sent = drain(&mut o, &mut seq);
    let names: Vec<&str> = sent.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(names, ["eth2", "eth3", "eth4", "dropped:2"]);
    let ids = ids(&sent);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // The drop report may hold the buffer one over capacity.
    assert_eq!(o.unacked(), 4);
}

#[test]
fn overflow_after_a_lost_stream_keeps_ids_in_delivery_order() {
    let mut o = Outbox::in_memory(A, limits(3));
    let mut seq = 0;
    o.push(ev(0));
    o.push(ev(1));
    let first = drain(&mut o, &mut seq);
    o.rewind(); // stream lost before any ack
    for n in 2..6 {
        o.push(ev(n));
    }
    let second = drain(&mut o, &mut seq);
    let ids = ids(&second);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase: {second:?}"
    );
    assert!(
        second.iter().any(|e| e.2.starts_with("dropped:")),
        "{second:?}"
    );
    // Anything resent keeps the id it had the first time.
    for (_, id, name) in &second {
        if let Some((_, first_id, _)) = first.iter().find(|f| &f.2 == name) {
            assert_eq!(id, first_id);
        }
    }
}

#[test]
fn one_drop_report_waits_at_a_time_and_an_unsent_one_dropped_is_folded() {
    let mut o = Outbox::in_memory(A, limits(2));
    for n in 0..4 {
        o.push(ev(n));
    }
    let mut seq = 0;
    // The report is made at the first send, behind eth2 and eth3.
    seq += 1;
    assert_eq!(
        o.next_unsent(seq).map(|e| name(e.event())),
        Some("eth2".into())
    );
    // More drops meanwhile: the waiting report is itself pushed out
    // unsent, and its count carried into the next one.
    for n in 4..8 {
        o.push(ev(n));
    }
    assert_eq!(o.dropped_total(), 2 + 4);
    let rest = drain(&mut o, &mut seq);
    let reports: Vec<&str> = rest
        .iter()
        .filter(|e| e.2.starts_with("dropped:"))
        .map(|e| e.2.as_str())
        .collect();
    let counted: u64 = reports
        .iter()
        .filter_map(|r| r.strip_prefix("dropped:")?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, o.dropped_total(), "{rest:?}");
}

#[test]
fn ack_of_unknown_seq_removes_nothing_unsent() {
    let mut o = Outbox::in_memory(A, limits(4));
    o.push(ev(1));
    o.ack(100);
    assert_eq!(o.unacked(), 1);
}

#[test]
fn unacked_events_survive_a_restart_with_their_ids_and_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seq = 0;
    {
        let mut o = open(dir.path(), A, limits(100));
        assert!(o.is_durable());
        for n in 0..5 {
            o.push(ev(n));
        }
        let sent = drain(&mut o, &mut seq);
        assert_eq!(ids(&sent), [1, 2, 3, 4, 5]);
        o.ack(2); // ids 1 and 2
    } // the agent stops
    let mut o = open(dir.path(), B, limits(100));
    assert_eq!(o.load_report().loaded, 3);
    assert!(o.load_report().parse.clean());
    o.push(ev(9));
    let mut seq = 0; // a new instance's stream
    let sent = drain(&mut o, &mut seq);
    assert_eq!(
        sent,
        vec![
            (A, 3, "eth2".into()),
            (A, 4, "eth3".into()),
            (A, 5, "eth4".into()),
            (B, 1, "eth9".into()),
        ]
    );
    // Acked now: gone after the next restart, across both instances.
    o.ack(2);
    drop(o);
    let mut o = open(dir.path(), 0xc1, limits(100));
    let sent = drain(&mut o, &mut 0);
    assert_eq!(
        sent,
        vec![(A, 5, "eth4".into()), (B, 1, "eth9".into())],
        "{sent:?}"
    );
}

#[test]
fn a_torn_last_record_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut o = open(dir.path(), A, limits(100));
        for n in 0..3 {
            o.push(ev(n));
        }
    }
    let path = log_path(dir.path());
    let len = std::fs::metadata(&path).expect("log").len();
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(len - 5).expect("truncate");
    drop(f);
    let mut o = open(dir.path(), B, limits(100));
    let r = o.load_report().clone();
    assert_eq!(r.loaded, 2);
    assert_eq!(r.parse.corrupt, 0);
    assert!(r.parse.torn_bytes > 0, "{r:?}");
    // Rewritten without the torn record: appends come after whole ones.
    assert_eq!(
        std::fs::metadata(&path).expect("log").len(),
        o.unacked_bytes()
    );
    o.push(ev(7));
    drop(o);
    let mut o = open(dir.path(), 0xc1, limits(100));
    assert!(o.load_report().parse.clean());
    let names: Vec<String> = drain(&mut o, &mut 0).into_iter().map(|e| e.2).collect();
    assert_eq!(names, ["eth0", "eth1", "eth7"]);
}

#[test]
fn a_flipped_byte_skips_one_record_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut starts = Vec::new();
    {
        let mut o = open(dir.path(), A, limits(100));
        for n in 0..5 {
            starts.push(o.log.as_ref().expect("log").len as usize);
            o.push(ev(n));
        }
    }
    let path = log_path(dir.path());
    let mut bytes = std::fs::read(&path).expect("log");
    // In the middle of the third record's payload.
    let at = (starts[2] + starts[3]) / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let mut o = open(dir.path(), B, limits(100));
    let r = o.load_report().clone();
    assert_eq!((r.loaded, r.parse.corrupt), (4, 1), "{r:?}");
    assert_eq!(r.parse.corrupt_bytes, starts[3] - starts[2]);
    let sent = drain(&mut o, &mut 0);
    assert_eq!(ids(&sent), [1, 2, 4, 5]);
}

#[test]
fn a_corrupt_length_resyncs_to_the_next_record() {
    let recs: Vec<Vec<u8>> = (1..=4)
        .map(|id| {
            let e = crate::wire::event(id, A, &ev(id as u32));
            encode_record(&Record::Event(e)).expect("small")
        })
        .collect();
    let mut bytes = recs.concat();
    // The second record's length becomes absurd.
    let at = recs[0].len() + 3;
    bytes[at] = 0xff;
    let (records, stats) = parse_records(&bytes);
    let got: Vec<u64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.id),
            Record::Acked { .. } => None,
        })
        .collect();
    assert_eq!(got, [1, 3, 4]);
    assert_eq!(stats.corrupt, 1);
    assert_eq!(stats.corrupt_bytes, recs[1].len());
    assert_eq!(
        stats.record_bytes + stats.corrupt_bytes + stats.torn_bytes,
        bytes.len()
    );
}

#[test]
fn garbage_never_panics_and_every_byte_is_accounted_for() {
    let mut good = Vec::new();
    for id in 1..=20u64 {
        let e = crate::wire::event(id, A, &ev(id as u32));
        good.extend(encode_record(&Record::Event(e)).expect("small"));
        good.extend(encode_record(&Record::Acked { instance_id: A, id }).expect("small"));
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let mut b = good.clone();
        for _ in 0..(round % 7) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        b.truncate(if round % 3 == 0 { cut } else { b.len() });
        let (records, s) = parse_records(&b);
        assert_eq!(records.len(), s.records);
        assert_eq!(s.record_bytes + s.corrupt_bytes + s.torn_bytes, b.len());
    }
    let zeros = vec![0u8; 4096];
    let (records, s) = parse_records(&zeros);
    assert!(records.is_empty());
    assert_eq!(s.corrupt_bytes + s.torn_bytes, zeros.len());
}

#[test]
fn the_resync_search_is_bounded() {
    // Every fourth offset looks like an event record of 8 KiB.
    let bytes: Vec<u8> = [1u8, 0x20, 0, 0].repeat(16 << 10);
    let (records, s) = parse_records_within(&bytes, 1 << 20);
    assert!(records.is_empty());
    assert!(s.gave_up, "{s:?}");
    assert_eq!(s.corrupt_bytes, bytes.len());
}

#[test]
fn the_byte_bound_drops_oldest_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bound = 64 << 10;
    let mut o = open(
        dir.path(),
        A,
        Limits {
            events: 10_000,
            bytes: bound,
        },
    );
    for n in 0..200 {
        o.push(ev_named(format!("eth{n}-{}", "x".repeat(1000)), n));
    }
    assert!(o.unacked_bytes() <= bound, "{}", o.unacked_bytes());
    assert!(o.unacked() < 70, "{}", o.unacked());
    let dropped = o.dropped_total();
    assert_eq!(dropped, 200 - o.unacked() as u64);
    let sent = drain(&mut o, &mut 0);
    assert!(sent[0].2.starts_with("eth"), "{:?}", sent[0].2);
    assert!(sent[0].2.starts_with(&format!("eth{dropped}-")));
    assert_eq!(
        sent.last().map(|e| e.2.clone()),
        Some(format!("dropped:{dropped}"))
    );
}

#[test]
fn the_bounds_apply_to_what_is_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut o = open(dir.path(), A, limits(100));
        for n in 0..10 {
            o.push(ev(n));
        }
    }
    let mut o = open(dir.path(), B, limits(4));
    assert_eq!(o.dropped_total(), 6);
    let sent = drain(&mut o, &mut 0);
    assert_eq!(
        sent.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(),
        ["eth6", "eth7", "eth8", "eth9", "dropped:6"]
    );
    assert_eq!(sent[4].0, B);
}

#[test]
fn a_log_too_large_is_read_from_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut o = open(dir.path(), A, limits(100));
        for n in 0..20 {
            o.push(ev(n));
        }
    }
    let len = std::fs::metadata(log_path(dir.path())).expect("log").len();
    let mut o = Outbox::open_reading_at_most(dir.path(), "n1", B, limits(100), len / 2);
    let r = o.load_report().clone();
    assert_eq!(r.skipped_head_bytes, len - len / 2);
    assert!((8..=10).contains(&r.loaded), "{r:?}");
    let sent = drain(&mut o, &mut 0);
    assert_eq!(sent.last().map(|e| e.1), Some(20));
    let ids = ids(&sent);
    assert!(ids.windows(2).all(|w| w[0] + 1 == w[1]), "{ids:?}");
    // Rewritten with what was kept.
    assert_eq!(
        std::fs::metadata(log_path(dir.path())).expect("log").len(),
        o.unacked_bytes()
    );
}

#[test]
fn compaction_keeps_exactly_the_unacked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let l = Limits {
        events: 10_000,
        bytes: 64 << 10,
    };
    let mut o = open(dir.path(), A, l);
    let mut seq = 0;
    let mut max_len = 0;
    for n in 0..2000 {
        o.push(ev(n));
        let sent = drain(&mut o, &mut seq);
        assert_eq!(sent.len(), 1);
        // Every event but each hundredth is acked at once.
        if n % 100 != 0 {
            o.ack(seq);
        }
        max_len = max_len.max(std::fs::metadata(&path).expect("log").len());
    }
    // Ack is cumulative: only the last unacked one was still unacked.
    assert_eq!(o.unacked(), 0);
    o.push(ev(5000));
    o.push(ev(5001));
    drain(&mut o, &mut seq);
    o.ack(seq - 1);
    // Compacted whenever it grew past twice its live content plus a
    // quarter of the byte bound.
    assert!(
        max_len <= (64 << 10) / 4 + 1024,
        "the log grew to {max_len}"
    );
    // A compaction now leaves exactly the one unacked event.
    let log = o.log.as_mut().expect("log");
    log.rewrite(o.entries.iter()).expect("rewrite");
    assert_eq!(
        std::fs::metadata(&path).expect("log").len(),
        o.unacked_bytes()
    );
    drop(o);
    let mut o = open(dir.path(), B, l);
    assert!(o.load_report().parse.clean());
    let sent = drain(&mut o, &mut 0);
    assert_eq!(sent, vec![(A, 2002, "eth5001".into())]);
    assert!(!dir.path().join("outbox-n1.log.tmp").exists());
}

#[test]
fn a_compaction_by_growth_keeps_the_unacked_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Limits {
        events: 10_000,
        bytes: 64 << 10,
    };
    let mut o = open(dir.path(), A, l);
    let mut seq = 0;
    // Three old ones stay unacked through many compactions.
    for n in 0..3 {
        o.push(ev(n));
    }
    drain(&mut o, &mut seq);
    o.rewind();
    let resend_from = seq;
    for n in 3..1000 {
        o.push(ev(n));
    }
    // Nothing acked, and everything fits: nothing compacts away.
    let all = drain(&mut o, &mut seq);
    assert_eq!(all.len(), 1000);
    assert_eq!(o.dropped_total(), 0);
    let path = log_path(dir.path());
    assert_eq!(
        std::fs::metadata(&path).expect("log").len(),
        o.unacked_bytes()
    );
    // Acking all but the last ten shrinks the log to them.
    o.ack(resend_from + 990);
    assert_eq!(
        std::fs::metadata(&path).expect("log").len(),
        o.unacked_bytes()
    );
    drop(o);
    let mut o = open(dir.path(), B, l);
    let sent = drain(&mut o, &mut 0);
    assert_eq!(ids(&sent), (991..=1000).collect::<Vec<_>>());
}

#[test]
fn a_missing_state_directory_falls_back_to_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let state = file.join("state");
    let mut o = open(&state, A, limits(10));
    assert!(!o.is_durable());
    o.push(ev(1));
    o.push(ev(2));
    let mut seq = 0;
    assert_eq!(ids(&drain(&mut o, &mut seq)), [1, 2]);
    o.ack(seq);
    assert_eq!(o.unacked(), 0);
    assert_eq!(o.sync_due(), None);
}

#[test]
fn a_read_only_state_directory_loads_and_keeps_working_in_memory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    {
        let mut o = open(&state, A, limits(10));
        o.push(ev(1));
        o.push(ev(2));
        let mut seq = 0;
        drain(&mut o, &mut seq);
        o.ack(1);
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    // Root writes anyway; the rest holds either way.
    let writable = std::fs::write(state.join("probe"), b"").is_ok();
    let mut o = open(&state, B, limits(10));
    assert_eq!(o.is_durable(), writable);
    o.push(ev(3));
    let sent = drain(&mut o, &mut 0);
    assert_eq!(sent, vec![(A, 2, "eth2".into()), (B, 1, "eth3".into())]);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
}

#[test]
fn a_log_that_fails_to_write_is_rewritten_when_it_can_be() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full here
    };
    let mut o = open(dir.path(), A, limits(100));
    o.push(ev(0));
    // The disk fills up.
    o.log.as_mut().expect("log").file = Some(full);
    o.push(ev(1));
    assert!(!o.is_durable());
    o.push(ev(2));
    // Later it has room again.
    o.log.as_mut().expect("log").retry_at = Some(Instant::now());
    o.push(ev(3));
    assert!(o.is_durable());
    drop(o);
    let mut o = open(dir.path(), B, limits(100));
    assert!(o.load_report().parse.clean());
    assert_eq!(ids(&drain(&mut o, &mut 0)), [1, 2, 3, 4]);
}

#[test]
fn writes_are_fsynced_within_the_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = open(dir.path(), A, limits(10));
    assert_eq!(o.sync_due(), None);
    let before = Instant::now();
    o.push(ev(1));
    let due = o.sync_due().expect("due");
    assert!(due >= before + SYNC_DELAY && due <= Instant::now() + SYNC_DELAY);
    o.sync();
    assert_eq!(o.sync_due(), None);
}

#[test]
fn agents_sharing_a_state_directory_keep_their_own_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Outbox::open(dir.path(), "n1", A, limits(10));
    let mut b = Outbox::open(dir.path(), "n2", B, limits(10));
    a.push(ev(1));
    b.push(ev(2));
    drop((a, b));
    let mut a = Outbox::open(dir.path(), "n1", 0xc1, limits(10));
    assert_eq!(drain(&mut a, &mut 0), vec![(A, 1, "eth1".into())]);
    assert!(dir.path().join("outbox-n2.log").exists());
}

#[test]
fn records_round_trip() {
    let e = crate::wire::event(7, A, &ev(7));
    for r in [
        Record::Event(e),
        Record::Acked {
            instance_id: A,
            id: u64::MAX,
        },
    ] {
        let bytes = encode_record(&r).expect("small");
        assert_eq!(
            parse_records(&bytes),
            (
                vec![r],
                ParseStats {
                    records: 1,
                    record_bytes: bytes.len(),
                    ..ParseStats::default()
                }
            )
        );
    }
}
