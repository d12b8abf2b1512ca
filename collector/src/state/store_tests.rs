//! The state task and the store: cell changes past the store's queue.

use super::test_support::{hello, ok_window};
use super::*;
use crate::probe::{CellState, WindowTarget};
use crate::store::{Options, read};

/// Five agents on a store whose queue takes `cell_rows` cell changes, and
/// the ids of a's plan once it holds every peer (TCP and ICMP to each:
/// eight cells). The receivers keep the streams open.
struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    fleet: Fleet,
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    ids: Vec<u64>,
    _streams: Vec<mpsc::Receiver<Result<pb::CollectorMessage, tonic::Status>>>,
}

async fn setup(cell_rows: usize) -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let opts = Options {
        cell_rows,
        ..Options::default()
    };
    let (store, _) = Store::open(dir.path(), opts).expect("open");
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
    let shutdown = CancellationToken::new();
    let (fleet, task) = Fleet::start(
        store.clone(),
        registry,
        &ProbeSettings::default(),
        shutdown.clone(),
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
    Setup {
        _dir: dir,
        store,
        fleet,
        task,
        shutdown,
        ids,
        _streams: streams,
    }
}

impl Setup {
    /// a reports every cell ok.
    async fn report(&self) {
        let windows = self
            .ids
            .iter()
            .map(|id| ok_window(WindowTarget::Id(*id)))
            .collect();
        let received = unix_nanos(SystemTime::now());
        self.fleet
            .probe_results(1, "a", windows, Vec::new(), received)
            .await;
    }

    /// a's cells as the store has them now.
    async fn stored(&self) -> Vec<CellState> {
        let at = unix_nanos(SystemTime::now());
        let past = self
            .store
            .read(move |c| read::matrix_at(c, at).map_err(|e| e.to_string()))
            .await
            .expect("read");
        past.iter()
            .filter(|c| c.src == "a")
            .map(|c| c.cell.state())
            .collect()
    }
}

#[tokio::test]
async fn cell_changes_past_the_stores_queue_are_owed_and_every_cell_written() {
    // A queue of three cell changes, for a plan of eight cells.
    let s = setup(3).await;
    s.report().await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while s.store.status().cell_changes < 8 || s.store.queued() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("written within 20 s: {:?}", s.store.status()));
    assert_eq!(s.store.status().cell_changes, 8);
    assert_eq!(s.store.status().dropped_writes_total, 0);
    assert_eq!(
        s.stored().await,
        vec![CellState::Ok; 8],
        "every cell as live"
    );
    let owed = s
        .fleet
        .read_matrix(|m, _| (m.owed(), m.deferred_total()))
        .await
        .expect("matrix");
    assert_eq!(owed.0, 0);
    assert!(owed.1 >= 5, "past the queue's three: {owed:?}");
}

#[tokio::test]
async fn owed_cells_are_written_when_the_collector_stops() {
    // A queue that takes nothing: every change is owed until the end.
    let mut s = setup(0).await;
    s.report().await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while s
            .fleet
            .read_matrix(|m, _| m.owed())
            .await
            .is_none_or(|n| n < 8)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("eight owed cells within 20 s");
    assert_eq!(s.store.queued(), 8, "what waits counts the owed cells");
    assert!(s.stored().await.is_empty());
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), &mut s.task)
        .await
        .expect("stopped within 20 s")
        .expect("the state task ends");
    assert_eq!(
        s.stored().await,
        vec![CellState::Ok; 8],
        "written at the end"
    );
    assert_eq!(s.store.queued(), 0);
}
