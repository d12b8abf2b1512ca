//! The state task and the store: cell changes past the store's queue.

use super::test_support::{hello, ok_window};
use super::*;
use crate::probe::{CellState, WindowTarget};
use crate::store::{Options, read};

#[tokio::test]
async fn cell_changes_past_the_stores_queue_are_owed_and_every_cell_written() {
    let dir = tempfile::tempdir().expect("dir");
    // A queue of three cell changes, for a plan of eight cells.
    let opts = Options {
        cell_rows: 3,
        ..Options::default()
    };
    let (store, _) = crate::store::Store::open(dir.path(), opts).expect("open");
    let names = ["a", "b", "c", "d", "e"];
    let registry: Vec<NodeRecord> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NodeRecord {
            name: n.to_string(),
            addresses: vec![format!("198.18.0.{}", i + 1)],
            ..NodeRecord::default()
        })
        .collect();
    let (fleet, _task) = Fleet::start(
        store.clone(),
        registry,
        &ProbeSettings::default(),
        CancellationToken::new(),
    );
    let mut streams = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let (out, rx) = mpsc::channel(64);
        fleet
            .attach(hello(n), i as u64 + 1, CancellationToken::new(), out)
            .await
            .expect("attach");
        streams.push(rx);
    }
    // a's plan, once it holds every peer (TCP and ICMP to each).
    let a = &mut streams[0];
    let ids = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(Ok(pb::CollectorMessage {
                body: Some(pb::collector_message::Body::Plan(p)),
            })) = a.recv().await
                && p.targets.len() == 8
            {
                break p.targets.iter().map(|t| t.id).collect::<Vec<u64>>();
            }
        }
    })
    .await
    .expect("a's plan within 20 s");
    let received = unix_nanos(SystemTime::now());
    fleet
        .probe_results(
            1,
            "a",
            ids.into_iter()
                .map(|id| ok_window(WindowTarget::Id(id)))
                .collect(),
            Vec::new(),
            received,
        )
        .await;
    // Eight first reports, three at a time through the queue.
    tokio::time::timeout(Duration::from_secs(20), async {
        while store.status().cell_changes < 8 || store.queued() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("written within 20 s: {:?}", store.status()));
    assert_eq!(store.status().cell_changes, 8);
    assert_eq!(store.status().dropped_writes_total, 0);
    let at = unix_nanos(SystemTime::now());
    let past = store
        .read(move |c| read::matrix_at(c, at).map_err(|e| e.to_string()))
        .await
        .expect("read");
    let from_a: Vec<CellState> = past
        .iter()
        .filter(|c| c.src == "a")
        .map(|c| c.cell.state())
        .collect();
    assert_eq!(from_a, vec![CellState::Ok; 8], "every cell as it is live");
    let owed = fleet
        .read_matrix(|m, _| (m.owed(), m.deferred_total()))
        .await
        .expect("matrix");
    assert_eq!(owed.0, 0);
    assert!(owed.1 >= 5, "past the queue's three: {owed:?}");
}
