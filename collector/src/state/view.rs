//! Copies of the fleet for the answers that read all of it (findings,
//! what-if): taken in the state task in one step, worked on on a blocking
//! thread, so such an answer neither holds up ingest nor waits behind it.
//!
//! A node's facts and events are behind `Arc`s, so a copy shares them; the
//! matrix is copied whole (about 30 ms for a million cells). Findings are
//! evaluated in the background, like alert rules: every `EVALUATE_EVERY`
//! they are made again when the fleet generation moved since the kept ones
//! were made (or they are older than `REFRESH_AFTER`), one evaluation at a
//! time, with a pause of at least `IDLE_PER_BUSY` times the last one's
//! length after it, so a large fleet's findings take a bounded share of a
//! core. A request is answered with the kept ones — the answer says as of
//! when — and only makes them itself when there are none younger than
//! `MAX_AGE`.

use super::{Fleet, Node, Stream};
use crate::probe::Matrix;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Kept findings are answered for this long after they were made; older
/// ones are made again before the answer.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Kept findings are made again in the background after this long even when
/// the generation did not move: what it does not count (clock samples, a
/// node's last-seen time) changes slowly, and this bounds how old it gets.
const REFRESH_AFTER: Duration = Duration::from_secs(30);
/// How often the collector looks whether findings are due to be made again.
const EVALUATE_EVERY: Duration = Duration::from_secs(5);
/// Findings are made again no sooner than this many times as long as the
/// last making took after it ended: at most a tenth of one core goes to
/// them, however large the fleet (at 10,000 nodes a making takes seconds
/// and ingest needs the cores).
const IDLE_PER_BUSY: u32 = 9;

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
    /// How long making it took, the fleet copy included.
    took: Duration,
}

impl<T> Made<T> {
    /// Whether a newer one is due at `now` for a fleet at `generation`: it
    /// is behind or old, and the pause since it was made is long enough for
    /// making findings to stay within its share of a core.
    ///
    /// On a fleet split over collectors (`shared`) the generation does not
    /// count the rows other collectors' agents send, so it is due every
    /// evaluation.
    fn stale(&self, generation: u64, shared: bool, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.made);
        let refresh = if shared {
            EVALUATE_EVERY
        } else {
            REFRESH_AFTER
        };
        (self.generation != generation || since >= refresh) && since >= self.took * IDLE_PER_BUSY
    }
}

impl<T> Clone for Made<T> {
    fn clone(&self) -> Self {
        Made {
            value: Arc::clone(&self.value),
            generation: self.generation,
            made: self.made,
            took: self.took,
        }
    }
}

/// The latest answer of one kind, and the right to make the next: whoever
/// holds `making` makes it, so at most one is being made at a time.
pub struct Slot<T> {
    kept: std::sync::Mutex<Option<Made<T>>>,
    making: Arc<tokio::sync::Mutex<()>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            kept: std::sync::Mutex::new(None),
            making: Arc::default(),
        }
    }
}

impl<T> Slot<T> {
    fn kept(&self) -> Option<Made<T>> {
        self.kept
            .lock()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn keep(&self, made: Made<T>) {
        let mut k = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One made from an older copy never replaces a newer one.
        if k.as_ref()
            .is_none_or(|old| old.generation <= made.generation)
        {
            *k = Some(made);
        }
    }
}

impl Fleet {
    /// A copy of the fleet now, or `None` when the collector is stopping.
    pub async fn view(&self) -> Option<View> {
        self.view_with(Matrix::clone).await
    }

    /// The same with only the cells from and to `node`: what what-if reads.
    pub async fn view_around(&self, node: &str) -> Option<View> {
        let node = node.to_string();
        self.view_with(move |m| m.around(&node)).await
    }

    /// A copy of the fleet with `matrix` of the matrix, taken in one step.
    async fn view_with(
        &self,
        matrix: impl FnOnce(&Matrix) -> Matrix + Send + 'static,
    ) -> Option<View> {
        self.read_matrix_generation(move |m, nodes, generation| View {
            matrix: matrix(m),
            nodes: nodes.iter().map(|(k, n)| (k.clone(), n.copy())).collect(),
            generation,
            taken: SystemTime::now(),
        })
        .await
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fleet's findings: the kept ones when they are younger than
    /// `MAX_AGE` (and newer ones started in the background if they are due),
    /// else made now. `None` when the collector is stopping.
    pub async fn findings(&self) -> Option<Made<crate::findings::Report>> {
        let fresh = |m: &Made<_>| m.made.elapsed() < MAX_AGE;
        if let Some(kept) = self.findings.kept().filter(fresh) {
            self.refresh_findings();
            return Some(kept);
        }
        let _making = self.findings.making.lock().await;
        // Made by whoever held the lock before.
        if let Some(kept) = self.findings.kept().filter(fresh) {
            return Some(kept);
        }
        self.make_findings().await
    }

    /// Whether the kept findings are behind the fleet or old.
    fn findings_due(&self) -> bool {
        self.findings.kept().is_none_or(|k| {
            let shared = !self.remote_nodes().is_empty();
            k.stale(self.generation(), shared, Instant::now())
        })
    }

    /// New findings made in the background when they are due and none are
    /// being made.
    fn refresh_findings(&self) {
        if !self.findings_due() {
            return;
        }
        if let Ok(making) = self.findings.making.clone().try_lock_owned() {
            let fleet = self.clone();
            tokio::spawn(async move {
                let _making = making;
                fleet.make_findings().await;
            });
        }
    }

    /// Starts the background evaluation of findings; it runs until
    /// `shutdown`.
    pub fn evaluate_findings_in_background(&self, shutdown: tokio_util::sync::CancellationToken) {
        tokio::spawn(self.clone().evaluate_findings(shutdown, EVALUATE_EVERY));
    }

    async fn evaluate_findings(
        self,
        shutdown: tokio_util::sync::CancellationToken,
        every: Duration,
    ) {
        let mut every = tokio::time::interval(every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Finding detection is fleet-wide work: on a shared store
                // only the holder of the fleet lock does it unasked; the
                // others make findings when a query asks for them.
                _ = every.tick() => if self.store().is_leader() {
                    self.refresh_findings();
                },
            }
        }
    }

    /// Findings made now from a copy, on a blocking thread, and kept.
    async fn make_findings(&self) -> Option<Made<crate::findings::Report>> {
        let started = Instant::now();
        let View {
            matrix,
            nodes,
            generation,
            taken,
        } = self.view().await?;
        // Over the whole fleet: on a shared store the rows of the agents
        // streaming to other collectors come from the database.
        let matrix = match crate::sharing::with_others_rows(self, matrix, &nodes).await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "findings over this collector's agents only: the other collectors' rows cannot be read");
                self.view().await?.matrix
            }
        };
        let view = View {
            matrix,
            nodes,
            generation,
            taken,
        };
        let owners = self.owners.clone();
        let mut report = tokio::task::spawn_blocking(move || {
            crate::findings::detect(&view.matrix, &view.nodes, &owners, view.taken)
        })
        .await
        .ok()?;
        report.as_of = super::unix_nanos(taken);
        let took = started.elapsed();
        report.compute_micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let made = Made {
            value: Arc::new(report),
            generation,
            made: Instant::now(),
            took,
        };
        self.findings.keep(made.clone());
        Some(made)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{COMMAND_QUEUE, Fleet, READ_QUEUE};
    use crate::config::ProbeSettings;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
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

    use super::super::test_support::hello;

    async fn attach(fleet: &Fleet, node: &str, session: u64) {
        let (outbound, _) = mpsc::channel(1);
        fleet
            .attach(hello(node), session, CancellationToken::new(), outbound)
            .await
            .expect("attach");
    }

    #[test]
    fn findings_are_due_when_behind_or_old_and_never_more_than_a_tenth_of_the_time() {
        let made = Instant::now();
        let kept = |took_ms: u64| super::Made {
            value: Arc::new(()),
            generation: 7,
            made,
            took: Duration::from_millis(took_ms),
        };
        let at = |secs: f64| made + Duration::from_secs_f64(secs);
        // Current and young: not due, whatever it cost.
        assert!(!kept(1).stale(7, false, at(1.0)));
        // Behind: due at once when it was cheap.
        assert!(kept(1).stale(8, false, at(0.01)));
        // Old: due even when current.
        assert!(kept(1).stale(7, false, at(31.0)));
        // Behind but expensive (3 s): not before 27 s have passed.
        assert!(!kept(3000).stale(8, false, at(26.0)));
        assert!(kept(3000).stale(8, false, at(27.0)));
        // Old and very expensive: the pause still wins.
        assert!(!kept(5000).stale(7, false, at(31.0)));
        assert!(kept(5000).stale(7, false, at(45.0)));
        // Split over collectors: current by its own count, due all the same.
        assert!(!kept(1).stale(7, false, at(6.0)));
        assert!(kept(1).stale(7, true, at(6.0)));
        assert!(!kept(1000).stale(7, true, at(6.0)));
    }

    #[tokio::test]
    async fn findings_are_kept_while_the_fleet_does_not_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(&dir);
        attach(&fleet, "a", 1).await;
        // The background evaluation may have made some before the attach.
        let current = async {
            loop {
                let f = fleet.findings().await.expect("findings");
                if f.generation == fleet.generation() {
                    break f;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(10), current)
            .await
            .expect("current findings within 10 s");
        let again = fleet.findings().await.expect("findings");
        assert!(Arc::ptr_eq(&first.value, &again.value), "made again");
        assert_eq!(first.generation, again.generation);
        assert!(first.value.as_of > 0, "as_of not set");

        // After a change the kept ones are answered at once, and newer ones
        // are made meanwhile for the next caller.
        attach(&fleet, "b", 2).await;
        let at_once = fleet.findings().await.expect("findings");
        assert!(Arc::ptr_eq(&first.value, &at_once.value));
        let newer = async {
            loop {
                let f = fleet.findings().await.expect("findings");
                if f.generation > first.generation {
                    break f;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let after = tokio::time::timeout(Duration::from_secs(10), newer)
            .await
            .expect("newer findings within 10 s");
        assert!(!Arc::ptr_eq(&first.value, &after.value), "not made again");
        assert!(after.value.as_of >= first.value.as_of);
        let view = fleet.view().await.expect("view");
        assert_eq!(view.nodes.len(), 2);
        assert!(view.nodes.values().all(super::super::Node::connected));
    }

    #[tokio::test]
    async fn findings_are_evaluated_without_being_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(&dir);
        let stop = CancellationToken::new();
        fleet.evaluate_findings_in_background(stop.clone());
        attach(&fleet, "a", 1).await;
        let made = async {
            loop {
                if let Some(k) = fleet.findings.kept()
                    && k.generation == fleet.generation()
                {
                    break k;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let kept = tokio::time::timeout(Duration::from_secs(30), made)
            .await
            .expect("findings made in the background within 30 s");
        assert_eq!(kept.value.cells, 0);
        assert!(kept.value.as_of > 0);
        stop.cancel();
    }

    #[tokio::test]
    async fn only_the_fleet_lock_holder_evaluates_findings_unasked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(&dir);
        fleet.store().set_leader(false);
        let stop = CancellationToken::new();
        let every = Duration::from_millis(20);
        tokio::spawn(fleet.clone().evaluate_findings(stop.clone(), every));
        attach(&fleet, "a", 1).await;
        // Many evaluation ticks pass.
        tokio::time::sleep(every * 25).await;
        assert!(
            fleet.findings.kept().is_none(),
            "a follower made findings unasked"
        );
        // Asked, it makes them; then it leads and keeps them current itself.
        let asked = fleet.findings().await.expect("findings");
        assert_eq!(asked.generation, fleet.generation());
        fleet.store().set_leader(true);
        attach(&fleet, "b", 2).await;
        let moved = async {
            loop {
                if let Some(k) = fleet.findings.kept()
                    && k.generation == fleet.generation()
                {
                    break k;
                }
                tokio::time::sleep(every).await;
            }
        };
        let kept = tokio::time::timeout(Duration::from_secs(30), moved)
            .await
            .expect("the leader keeps findings current");
        assert!(kept.generation > asked.generation);
        stop.cancel();
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
