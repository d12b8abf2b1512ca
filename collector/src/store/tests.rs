//! The store on a real file: commits, duplicates, the past read back,
//! pruning, and files it must refuse.

use super::*;
use crate::probe::{CellState, Outcome, ProbeKind};

fn event(id: u64, time: i64) -> pb::Event {
    pb::Event {
        time_unix_nanos: time,
        id,
        received_unix_nanos: time,
        instance_id: 7,
        kind: Some(pb::event::Kind::KernelLogLost(pb::KernelLogLost {
            count: id,
        })),
    }
}

fn cell(time: i64, new: CellState) -> CellChange {
    CellChange {
        time,
        src: "a".into(),
        dst: "b".into(),
        port: 7442,
        kind: ProbeKind::Tcp,
        service: None,
        old: CellState::Unknown,
        new,
        failure: (new == CellState::Failing).then_some(Outcome::Timeout),
        sent: 10,
        ok: if new == CellState::Ok { 10 } else { 0 },
        rtt_ms: Some(0.5),
        address: "198.18.0.2".parse().expect("ip"),
        last_failure_at: 0,
        gone: false,
    }
}

/// Waits (at most 10 s) for the writer's status to satisfy `done`.
async fn status_until(store: &Store, done: impl Fn(&Status) -> bool) {
    let mut watch = store.status_watch();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done(&store.status()) {
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("{:?}", store.status()),
        }
    }
}

fn now() -> i64 {
    crate::state::unix_nanos(std::time::SystemTime::now())
}

#[tokio::test]
async fn an_event_is_committed_once_and_a_resend_is_a_duplicate() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, nodes) = Store::open(dir.path(), Options::default()).expect("open");
    assert!(nodes.is_empty());
    let t = now();
    let first = store
        .event("a", 7, event(1, t))
        .await
        .await
        .expect("answer");
    assert_eq!(first, Ok(true));
    let again = store
        .event("a", 7, event(1, t))
        .await
        .await
        .expect("answer");
    assert_eq!(again, Ok(false), "same node, instance and id");
    let other = store
        .event("a", 8, event(1, t))
        .await
        .await
        .expect("answer");
    assert_eq!(other, Ok(true), "another instance's id 1");
    let (list, truncated) = store
        .read(move |c| {
            read::events(
                c,
                &read::EventsQuery {
                    node: Some("a".into()),
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())
        })
        .await
        .expect("read");
    assert_eq!(list.len(), 2);
    assert!(!truncated);
    // The status is published just after the commit answers.
    status_until(&store, |s| s.events == 2).await;
}

#[tokio::test]
async fn what_was_committed_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let (store, _) = Store::open(dir.path(), Options::default()).expect("open");
        for i in 1..=100 {
            store.queue(Write::Event(EventWrite {
                node: "a".into(),
                instance: 7,
                event: event(i, now()),
                done: None,
            }));
        }
        store.queue(Write::Nodes(vec![NodeRecord {
            name: "a".into(),
            ..Default::default()
        }]));
        store.flush().await;
    }
    let (store, nodes) = Store::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(nodes.len(), 1);
    assert_eq!(store.status().events, 100);
}

#[tokio::test]
async fn the_matrix_and_facts_of_a_past_moment_come_back() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = Store::open(dir.path(), Options::default()).expect("open");
    let t = now() - 60_000_000_000;
    store.queue(Write::Cells(vec![cell(t, CellState::Ok)]));
    store.queue(Write::Cells(vec![cell(t + 10, CellState::Failing)]));
    store.queue(Write::Cells(vec![cell(t + 20, CellState::Ok)]));
    let mut f = crate::model::NodeFacts::default();
    f.host.hostname = "first".into();
    let one = facts::encode(&f, facts::NETWORK);
    f.host.hostname = "second".into();
    let two = facts::encode(&f, facts::NETWORK);
    for (time, data) in [(t, one), (t + 15, two)] {
        store.queue(Write::Fact(FactWrite {
            node: "b".into(),
            part: facts::NETWORK,
            time,
            hash: hash(&data),
            data,
            firewall: None,
        }));
    }
    store.flush().await;
    let (at_failing, history, then, later) = store
        .read(move |c| {
            let cells = read::matrix_at(c, t + 12).map_err(|e| e.to_string())?;
            let history = read::cell_history(c, "a", "b", 7442, ProbeKind::Tcp, t + 5, t + 30)
                .map_err(|e| e.to_string())?;
            let then = read::facts_at(c, "b", t + 12)?;
            let later = read::facts_at(c, "b", t + 16)?;
            Ok((cells, history, then, later))
        })
        .await
        .expect("read");
    assert_eq!(at_failing.len(), 1);
    let c = at_failing
        .cell("a", "b", 7442, ProbeKind::Tcp)
        .expect("the cell");
    assert_eq!(c.cell.state(), CellState::Failing);
    assert_eq!(c.cell.failure(), Some(Outcome::Timeout));
    // The change before the range leads, then the two in it.
    let states: Vec<CellState> = history.iter().map(|c| c.new).collect();
    assert_eq!(
        states,
        vec![CellState::Ok, CellState::Failing, CellState::Ok]
    );
    let host = |s: Option<pb::Snapshot>| s.and_then(|s| s.host).map(|h| h.hostname);
    assert_eq!(host(then), Some("first".into()));
    assert_eq!(host(later), Some("second".into()));
}

#[tokio::test]
async fn rows_past_retention_are_pruned_and_the_oldest_moment_moves() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = Options {
        retention: std::time::Duration::from_secs(10),
        ..Options::default()
    };
    let (store, _) = Store::open(dir.path(), opts).expect("open");
    let old = now() - 3_600_000_000_000;
    for i in 1..=50 {
        store.queue(Write::Event(EventWrite {
            node: "a".into(),
            instance: 7,
            event: event(i, old),
            done: None,
        }));
        store.queue(Write::Cells(vec![cell(old + i as i64, CellState::Ok)]));
    }
    store.queue(Write::Event(EventWrite {
        node: "a".into(),
        instance: 7,
        event: event(99, now()),
        done: None,
    }));
    store.flush().await;
    let mut watch = store.status_watch();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.status().pruned_rows_total < 100 {
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("not pruned: {:?}", store.status()),
        }
    }
    let s = store.status();
    assert_eq!(s.events, 1, "{s:?}");
    assert_eq!(s.cell_changes, 0, "{s:?}");
    assert!(s.oldest > old, "{s:?}");
}

#[test]
fn a_file_that_is_not_a_store_is_refused_with_its_name_and_recovered_when_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(FILE);
    std::fs::write(&path, vec![0x5a; 8192]).expect("write");
    let e = match Store::open(dir.path(), Options::default()) {
        Ok(_) => panic!("opened garbage"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("store.db"), "{e}");
    assert!(e.contains("--store-recover"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let opts = Options {
            recover: true,
            ..Options::default()
        };
        let (store, _) = Store::open(dir.path(), opts).expect("recovered");
        assert!(store.status().writable);
    });
    let aside = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("broken-"));
    assert!(aside, "the old file is kept aside");
}

#[test]
fn a_store_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(FILE);
    {
        let mut c = writer::open(&path).expect("open");
        c.pragma_update(None, "user_version", schema::VERSION + 1)
            .expect("bump");
        let _ = &mut c;
    }
    let e = match Store::open(dir.path(), Options::default()) {
        Ok(_) => panic!("opened a newer store"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("newer reachmap"), "{e}");
}

#[test]
fn recovering_a_refused_store_keeps_its_trust_documents_and_registry() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let docs = documents::Documents::open(dir.path()).expect("docs");
        docs.put("tokens", "{\"format\":1,\"tokens\":[]}")
            .expect("put");
        let c = Db::from(writer::open(&dir.path().join(FILE)).expect("open"));
        registry::save(
            &c,
            &[NodeRecord {
                name: "kept".into(),
                ..Default::default()
            }],
        )
        .expect("save");
        c.sqlite()
            .expect("a SQLite store")
            .pragma_update(None, "user_version", schema::VERSION + 1)
            .expect("bump");
    }
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let opts = Options {
            recover: true,
            ..Options::default()
        };
        let (_, nodes) = Store::open(dir.path(), opts).expect("recovered");
        assert_eq!(nodes.len(), 1, "the registry was salvaged");
    });
    let docs = documents::Documents::open(dir.path()).expect("docs");
    assert!(
        docs.get("tokens").expect("get").is_some(),
        "the tokens were salvaged"
    );
}

#[tokio::test]
async fn another_collectors_rows_replace_a_live_copys_own() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = Store::open(dir.path(), Options::default()).expect("open");
    let t = now() - 60_000_000_000;
    // "a" streams to another collector: its cells are in the store.
    store.queue(Write::Cells(vec![cell(t, CellState::Ok)]));
    store.queue(Write::Cells(vec![cell(t + 10, CellState::Failing)]));
    store.flush().await;
    // This collector's copy: its own row of "c", and a stale row of "a"
    // from when a's agent streamed here, to a node it no longer probes.
    let mut live = crate::probe::Matrix::new(std::time::Duration::from_secs(10));
    let stale = CellChange {
        src: "a".into(),
        dst: "gone".into(),
        ..cell(t - 5, CellState::Ok)
    };
    let own = CellChange {
        src: "c".into(),
        ..cell(t - 5, CellState::Ok)
    };
    live.restore(&[stale, own]);
    let merged = store
        .read(move |c| {
            let mut m = live;
            read::rows_into(c, &mut m, t + 20, &["a".to_string(), "unknown".to_string()])
                .map_err(|e| e.to_string())?;
            Ok(m)
        })
        .await
        .expect("read");
    let cells: Vec<(String, String, CellState)> = merged
        .cells(None)
        .iter()
        .map(|c| (c.src.to_string(), c.dst.to_string(), c.cell.state()))
        .collect();
    assert_eq!(
        cells,
        [
            ("a".into(), "b".into(), CellState::Failing),
            ("c".into(), "b".into(), CellState::Ok),
        ]
    );
}

#[tokio::test]
async fn cell_changes_past_the_queues_bound_are_given_back_not_dropped() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = Store::open(dir.path(), Options::default()).expect("open");
    let t = now() - 60_000_000_000;
    let too_many = vec![cell(t, CellState::Ok); CELL_ROWS + 1];
    let back = store.queue_cells(too_many).expect_err("over the bound");
    assert_eq!(back.len(), CELL_ROWS + 1, "every change given back");
    assert_eq!(store.status().dropped_writes_total, 0);
    store
        .queue_cells(vec![
            cell(t, CellState::Ok),
            cell(t + 10, CellState::Failing),
        ])
        .expect("room");
    store.flush().await;
    assert_eq!(store.cell_room(), CELL_ROWS, "the writer took them off");
    // What waits for the writer counts the cells owed past the queue.
    assert_eq!(store.queued(), 0);
    store.set_owed(7);
    assert_eq!(store.queued(), 7);
    store.set_owed(0);
    // The status is published just after the commit answers.
    status_until(&store, |s| s.cell_changes == 2).await;
}

#[tokio::test]
async fn a_cell_that_left_the_matrix_is_not_in_a_later_moments() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = Store::open(dir.path(), Options::default()).expect("open");
    let t = now() - 60_000_000_000;
    let gone = CellChange {
        gone: true,
        new: CellState::Unknown,
        old: CellState::Ok,
        ..cell(t + 10, CellState::Unknown)
    };
    let other = CellChange {
        dst: "c".into(),
        ..cell(t, CellState::Ok)
    };
    store
        .queue_cells(vec![
            cell(t, CellState::Ok),
            other,
            gone,
            cell(t + 20, CellState::Failing),
        ])
        .expect("room");
    store.flush().await;
    let (before, between, after, why_between, pair_between) = store
        .read(move |c| {
            let m = |at| read::matrix_at(c, at).map_err(|e| e.to_string());
            let why = read::cells_at(c, t + 15, "b").map_err(|e| e.to_string())?;
            let pair = read::pair_at(c, t + 15, "a", "b", 7442).map_err(|e| e.to_string())?;
            Ok((m(t + 5)?, m(t + 15)?, m(t + 25)?, why, pair))
        })
        .await
        .expect("read");
    let ab = |m: &crate::probe::Matrix| {
        m.cell("a", "b", 7442, ProbeKind::Tcp)
            .map(|c| c.cell.state())
    };
    assert_eq!((before.len(), ab(&before)), (2, Some(CellState::Ok)));
    assert_eq!((between.len(), ab(&between)), (1, None), "gone at t+10");
    assert!(between.cell("a", "c", 7442, ProbeKind::Tcp).is_some());
    assert_eq!(ab(&after), Some(CellState::Failing), "back at t+20");
    assert!(why_between.is_empty(), "{why_between:?}");
    assert!(pair_between.is_empty(), "{pair_between:?}");
}
