//! Copies of the fleet for the answers that read all of it (findings,
//! what-if): taken in the state task in one step, worked on on a blocking
//! thread, so such an answer neither holds up ingest nor waits behind it.
//!
//! A node's facts and events are behind `Arc`s, so a copy shares them; the
//! matrix is copied whole (about 30 ms for a million cells). Findings are
//! kept with the fleet generation they were made from and given again while
//! nothing an answer could see has changed.

use super::{Fleet, Node, Stream};
use crate::probe::Matrix;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Kept findings are made again after this long even when the generation
/// did not move: what the generation does not count (clock samples, a
/// node's last-seen time) changes slowly, and this bounds how old it gets.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// The fleet as it was at `taken`.
pub struct View {
    pub matrix: Matrix,
    pub nodes: BTreeMap<String, Node>,
    pub generation: u64,
    pub taken: SystemTime,
}

impl Node {
    /// This node for a `View`: facts and events shared, the stream only as
    /// "connected".
    fn copy(&self) -> Node {
        Node {
            name: self.name.clone(),
            hello: self.hello.clone(),
            machine_id: self.machine_id.clone(),
            boot_id: self.boot_id.clone(),
            version: self.version.clone(),
            labels: self.labels.clone(),
            agent_config: None,
            stream: self.stream.as_ref().map(|s| Stream::gone(s.session)),
            since: self.since,
            last_seen: self.last_seen,
            facts: self.facts.clone(),
            remembered_addresses: self.remembered_addresses.clone(),
            events: Arc::clone(&self.events),
            stored_parts: Default::default(),
            resources_stored: None,
            clock: self.clock,
            dropped_events_total: self.dropped_events_total,
            events_total: self.events_total,
            names: self.names.clone(),
        }
    }
}

/// An answer made from a `View`, and which generation of the fleet.
pub struct Made<T> {
    pub value: Arc<T>,
    pub generation: u64,
    made: Instant,
}

impl<T> Clone for Made<T> {
    fn clone(&self) -> Self {
        Made {
            value: Arc::clone(&self.value),
            generation: self.generation,
            made: self.made,
        }
    }
}

/// The latest answer of one kind. The lock is held while a new one is made,
/// so callers that arrive meanwhile wait for it instead of making their own.
pub type Slot<T> = Arc<tokio::sync::Mutex<Option<Made<T>>>>;

impl Fleet {
    /// A copy of the fleet now; `None` when it is of generation `unless`
    /// (the caller's copy is still current), or the collector is stopping.
    async fn view_unless(&self, unless: Option<u64>) -> Option<Result<View, u64>> {
        self.read_matrix_generation(move |m, nodes, generation| {
            if unless == Some(generation) {
                return Err(generation);
            }
            Ok(View {
                matrix: m.clone(),
                nodes: nodes.iter().map(|(k, n)| (k.clone(), n.copy())).collect(),
                generation,
                taken: SystemTime::now(),
            })
        })
        .await
    }

    /// A copy of the fleet now, or `None` when the collector is stopping.
    pub async fn view(&self) -> Option<View> {
        self.view_unless(None).await.and_then(Result::ok)
    }

    /// The fleet's findings: the kept ones while the fleet has not changed
    /// (and they are younger than `MAX_AGE`), otherwise made again from a
    /// copy on a blocking thread. `None` when the collector is stopping.
    pub async fn findings(&self) -> Option<Made<crate::findings::Report>> {
        let mut slot = self.findings.lock().await;
        let current = slot
            .as_ref()
            .filter(|m| m.made.elapsed() < MAX_AGE)
            .map(|m| m.generation);
        let started = Instant::now();
        let view = match self.view_unless(current).await? {
            Ok(view) => view,
            Err(_) => return slot.clone(),
        };
        let (generation, taken) = (view.generation, view.taken);
        let mut report = tokio::task::spawn_blocking(move || {
            crate::findings::detect(&view.matrix, &view.nodes, view.taken)
        })
        .await
        .ok()?;
        report.as_of = super::unix_nanos(taken);
        report.compute_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let made = Made {
            value: Arc::new(report),
            generation,
            made: Instant::now(),
        };
        *slot = Some(made.clone());
        Some(made)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{COMMAND_QUEUE, Fleet, READ_QUEUE};
    use crate::config::ProbeSettings;
    use crate::model::Hello;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn fleet(dir: &tempfile::TempDir) -> Fleet {
        let (store, registry) =
            crate::store::Store::open(dir.path(), crate::store::Options::default()).expect("open");
        let (fleet, _task) = Fleet::start(
            store,
            registry,
            &ProbeSettings::default(),
            CancellationToken::new(),
        );
        fleet
    }

    fn hello(node: &str) -> Hello {
        Hello {
            node: node.into(),
            machine_id: format!("m-{node}"),
            boot_id: "b".into(),
            version: "0.1.0".into(),
            instance_id: 1,
            heartbeat_interval_ms: 1000,
            labels: BTreeMap::new(),
            config_json: None,
        }
    }

    async fn attach(fleet: &Fleet, node: &str, session: u64) {
        let (outbound, _) = mpsc::channel(1);
        fleet
            .attach(hello(node), session, CancellationToken::new(), outbound)
            .await
            .expect("attach");
    }

    #[tokio::test]
    async fn findings_are_kept_while_the_fleet_does_not_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(&dir);
        attach(&fleet, "a", 1).await;
        let first = fleet.findings().await.expect("findings");
        let again = fleet.findings().await.expect("findings");
        assert!(Arc::ptr_eq(&first.value, &again.value), "made again");
        assert_eq!(first.generation, again.generation);
        assert!(first.value.as_of > 0, "as_of not set");

        attach(&fleet, "b", 2).await;
        let after = fleet.findings().await.expect("findings");
        assert!(after.generation > first.generation);
        assert!(
            !Arc::ptr_eq(&first.value, &after.value),
            "kept across a change"
        );
        let view = fleet.view().await.expect("view");
        assert_eq!(view.nodes.len(), 2);
        assert!(view.nodes.values().all(super::super::Node::connected));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_is_answered_before_commands_already_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(&dir);
        // Hold the state task so that commands pile up behind it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let f = fleet.clone();
        let hold = tokio::spawn(async move { f.read(move |_| held.recv().is_ok()).await });
        while fleet.reads.capacity() != READ_QUEUE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let waiting = 100;
        let attaches: Vec<_> = (0..waiting)
            .map(|i| {
                let f = fleet.clone();
                tokio::spawn(async move { attach(&f, &format!("n{i}"), i + 1).await })
            })
            .collect();
        while fleet.tx.capacity() > COMMAND_QUEUE - waiting as usize {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let f = fleet.clone();
        let count = tokio::spawn(async move { f.read(|nodes| nodes.len()).await });
        while fleet.reads.capacity() == READ_QUEUE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).expect("release");
        assert_eq!(hold.await.expect("hold"), Some(true));
        assert_eq!(
            count.await.expect("count"),
            Some(0),
            "the query waited for the attaches queued before it"
        );
        for a in attaches {
            a.await.expect("attach");
        }
        assert_eq!(
            fleet.read(|nodes| nodes.len()).await,
            Some(waiting as usize),
            "the attaches are still done"
        );
    }
}
