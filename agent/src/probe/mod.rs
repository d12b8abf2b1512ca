//! The prober: probes the targets of the collector's plan (TCP connect, ICMP
//! echo, HTTP GET), keeps a rolling window per target, and reports windows
//! in batches plus state changes at once. Also the probe port listener and
//! the test-port listeners.
//!
//! One task owns everything: the plan, the schedule, the windows and the
//! probes in flight (a `FuturesUnordered`, polled by the same task, so no
//! result channel and no lock). Output goes over one bounded channel:
//! a full channel drops the batch (counted; the next batch carries the same
//! windows), while a state change waits for room — it is the news.
//!
//! A target's first result is reported as a change (from no state) only
//! when it is not `Ok`: a new healthy target is no news, and the next batch
//! carries it.

pub mod fleet;
pub mod http;
pub mod icmp;
pub mod listener;
pub mod model;
pub mod names;
pub mod scheduler;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod udp;
pub mod window;

pub use listener::{ProbeError, TempListeners, serve_probe_port, serve_probe_port_reporting};
pub use model::{
    FleetName, NameResolution, Outcome, Plan, ProbeKind, ProbeResult, ProberOutput, StateChange,
    Target, TargetKey, TargetState, UdpTarget, WindowSummary, check_plan, valid_host_name,
};

use crate::health::{HealthBoard, Source};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use scheduler::{Schedule, TokenBucket, random_phases};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use window::Window;

/// Probes in flight at most, whatever the rate: bounds sockets held by
/// probes waiting for a timeout.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4_096;

/// One probe of `target`, classified.
pub async fn probe_once(target: &Target, timeout: Duration) -> ProbeResult {
    let addr = SocketAddr::new(target.address, target.port);
    match target.kind {
        ProbeKind::Tcp => tcp::probe(addr, timeout).await,
        ProbeKind::Icmp => icmp::probe(target.address, timeout).await,
        ProbeKind::Http | ProbeKind::Https => {
            let path = target.http_path.as_deref().unwrap_or("/");
            let tls = target
                .tls
                .as_ref()
                .filter(|_| target.kind == ProbeKind::Https);
            http::probe(addr, path, target.expect_status, tls, timeout).await
        }
        ProbeKind::Udp => match &target.udp {
            Some(u) => udp::probe(addr, u, timeout).await,
            None => ProbeResult::new(Outcome::Unreachable, None),
        },
    }
}

/// What the prober has done since it started.
#[derive(Debug, Default)]
pub struct ProberStats {
    pub probes_started: AtomicU64,
    pub probes_completed: AtomicU64,
    /// Slots skipped because the prober was more than an interval late.
    pub probes_skipped: AtomicU64,
    /// Batches dropped because the output channel was full.
    pub batches_dropped: AtomicU64,
    pub state_changes: AtomicU64,
    /// Targets of received plans refused by `check_plan`.
    pub targets_refused: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Prober {
    stats: Arc<ProberStats>,
    max_in_flight: usize,
    health: Option<HealthBoard>,
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a prober with default settings; see [`Prober::run`].
pub async fn run(
    plan: watch::Receiver<Option<Arc<Plan>>>,
    out: mpsc::Sender<ProberOutput>,
    shutdown: CancellationToken,
) {
    Prober::new().run(plan, out, shutdown).await
}

struct Slot {
    target: Target,
    window: Window,
}

/// The plan being run and what has been learnt about its targets.
struct Running {
    plan: Arc<Plan>,
    slots: Vec<Slot>,
    schedule: Schedule,
    bucket: TokenBucket,
    /// Set while rate-limited: when the next token is there.
    retry_at: Option<Instant>,
    batch_due: Instant,
    /// The latest lookup of each of the plan's names.
    resolved: Vec<NameResolution>,
}

type InFlight = Pin<Box<dyn Future<Output = (u64, usize, ProbeResult, SystemTime)> + Send>>;
/// One round of name lookups, for the plan version it was started for.
type Lookups = Pin<Box<dyn Future<Output = (u64, Vec<NameResolution>)> + Send>>;

impl Prober {
    pub fn new() -> Self {
        Prober {
            stats: Arc::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            health: None,
        }
    }

    /// Report the prober's and the name lookups' health on `board`.
    pub fn with_health(mut self, board: HealthBoard) -> Self {
        self.health = Some(board);
        self
    }

    fn report_names(&self, names: usize, resolved: &[NameResolution]) {
        let Some(board) = &self.health else { return };
        // An answer that a name does not exist is a fact about the name; no
        // answer for any name at all is the resolver not working.
        let unanswered = resolved
            .iter()
            .filter(|r| {
                r.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(names::NO_ANSWER))
            })
            .count();
        if names > 0 && unanswered == names {
            board.degraded(
                Source::Names,
                format!("the resolver answered none of the {names} lookups"),
            );
        } else {
            board.ok(Source::Names);
        }
    }

    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Counts into `stats` (shared with the health endpoint, and kept across
    /// restarts of the prober).
    pub fn with_stats(mut self, stats: Arc<ProberStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn stats(&self) -> Arc<ProberStats> {
        self.stats.clone()
    }

    /// Probes the current plan until `shutdown` (or until `out` is closed).
    /// A new plan version keeps the windows of the targets that stay (same
    /// node, address, port and kind) and drops the others; `None` stops
    /// probing. Every plan goes through `check_plan` again here, so nothing
    /// outside the fleet is ever probed.
    pub async fn run(
        self,
        mut plan_rx: watch::Receiver<Option<Arc<Plan>>>,
        out: mpsc::Sender<ProberOutput>,
        shutdown: CancellationToken,
    ) {
        let mut running: Option<Running> = None;
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        // At most one round of name lookups at a time: a slow resolver
        // delays the next round, never piles rounds up.
        let mut lookups: Option<Lookups> = None;
        let mut plan_open = true;
        // State changes waiting for room on `out`, oldest first. They are
        // never dropped; meanwhile probing goes on and batches (which a
        // change must not overtake) are dropped and counted.
        let mut changes: std::collections::VecDeque<ProberOutput> = Default::default();
        if let Some(b) = &self.health {
            b.ok(Source::Prober);
        }
        let initial = plan_rx.borrow_and_update().clone();
        if self.apply(&mut running, initial) {
            lookups = running.as_ref().and_then(start_lookups);
        }
        loop {
            let can_start = in_flight.len() < self.max_in_flight;
            let wake = running.as_ref().map(|r| match r.next_start() {
                Some(start) if can_start => start.min(r.batch_due),
                _ => r.batch_due,
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                permit = out.reserve(), if !changes.is_empty() => {
                    let Ok(permit) = permit else { return };
                    if let Some(change) = changes.pop_front() {
                        permit.send(change);
                    }
                }
                changed = plan_rx.changed(), if plan_open => {
                    if changed.is_err() {
                        plan_open = false;
                        continue;
                    }
                    let plan = plan_rx.borrow_and_update().clone();
                    if self.apply(&mut running, plan) {
                        lookups = running.as_ref().and_then(start_lookups);
                    }
                }
                (version, resolved) = lookups_done(&mut lookups), if lookups.is_some() => {
                    lookups = None;
                    if let Some(r) = running.as_mut().filter(|r| r.plan.version == version) {
                        self.report_names(r.plan.names.len(), &resolved);
                        r.resolved = resolved;
                    }
                }
                Some((version, i, result, at)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.stats.probes_completed.fetch_add(1, Ordering::Relaxed);
                    let change = running.as_mut().and_then(|r| record(r, version, i, result, at));
                    if let Some(change) = change {
                        self.stats.state_changes.fetch_add(1, Ordering::Relaxed);
                        changes.push_back(ProberOutput::Changed(change));
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    let Some(r) = running.as_mut() else { continue };
                    let now = Instant::now();
                    if now >= r.batch_due {
                        r.batch_due = now + r.plan.interval;
                        if !changes.is_empty() {
                            self.stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
                        } else if !self.send_batch(r, &out) {
                            return;
                        }
                        if lookups.is_none() {
                            lookups = start_lookups(r);
                        }
                    }
                    self.start_due(r, &mut in_flight, now);
                }
            }
        }
    }

    /// Switches to `plan`, keeping the windows of targets that stay; true
    /// when a new plan now runs.
    fn apply(&self, running: &mut Option<Running>, plan: Option<Arc<Plan>>) -> bool {
        if let (Some(b), Some(p)) = (&self.health, &plan)
            && p.names.is_empty()
        {
            b.ok(Source::Names);
        }
        let Some(plan) = plan else {
            if running.take().is_some() {
                tracing::info!("probe plan withdrawn");
            }
            return false;
        };
        if running
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.plan, &plan) || r.plan.version == plan.version)
        {
            return false;
        }
        let (checked, refused) = check_plan((*plan).clone());
        for (target, reason) in &refused {
            tracing::warn!(node = %target.node, address = %target.address, port = target.port, reason, "probe target refused");
        }
        self.stats
            .targets_refused
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        let previous = running.take();
        // Lookups of names that stay are kept until the next round.
        let resolved: Vec<NameResolution> = previous
            .as_ref()
            .map(|r| {
                r.resolved
                    .iter()
                    .filter(|n| checked.names.contains(&n.name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut old: HashMap<TargetKey, Window> = previous
            .map(|r| {
                r.slots
                    .into_iter()
                    .map(|s| (s.target.key(), s.window))
                    .collect()
            })
            .unwrap_or_default();
        let window = checked.window;
        let slots: Vec<Slot> = checked
            .targets
            .iter()
            .map(|t| {
                let mut w = old.remove(&t.key()).unwrap_or_else(|| Window::new(window));
                w.resize(window);
                Slot {
                    target: t.clone(),
                    window: w,
                }
            })
            .collect();
        let now = Instant::now();
        let schedule = Schedule::new(
            checked.interval,
            now,
            random_phases(slots.len(), checked.interval),
        );
        tracing::info!(
            version = checked.version,
            targets = slots.len(),
            refused = refused.len(),
            interval_ms = checked.interval.as_millis() as u64,
            "probe plan applied"
        );
        *running = Some(Running {
            bucket: TokenBucket::new(checked.max_probes_per_second, now),
            retry_at: None,
            batch_due: now + checked.interval,
            plan: Arc::new(checked),
            slots,
            schedule,
            resolved,
        });
        true
    }

    /// Starts every probe that is due, as far as the rate limit and the cap
    /// on probes in flight allow.
    fn start_due(&self, r: &mut Running, in_flight: &mut FuturesUnordered<InFlight>, now: Instant) {
        while in_flight.len() < self.max_in_flight
            && r.schedule.next_due().is_some_and(|d| d <= now)
        {
            if let Err(wait) = r.bucket.take(now) {
                // Rate-limited: wake when the next token is there.
                r.retry_at = Some(now + wait);
                return;
            }
            let Some((i, skipped)) = r.schedule.pop_due(now) else {
                break;
            };
            if skipped > 0 {
                self.stats
                    .probes_skipped
                    .fetch_add(skipped, Ordering::Relaxed);
            }
            let Some(slot) = r.slots.get(i) else { continue };
            let target = slot.target.clone();
            let timeout = r.plan.timeout;
            let version = r.plan.version;
            self.stats.probes_started.fetch_add(1, Ordering::Relaxed);
            in_flight.push(Box::pin(async move {
                let result = probe_once(&target, timeout).await;
                (version, i, result, SystemTime::now())
            }));
        }
        r.retry_at = None;
    }

    /// Sends every window; `false` when the receiver is gone.
    fn send_batch(&self, r: &Running, out: &mpsc::Sender<ProberOutput>) -> bool {
        let windows: Vec<WindowSummary> = r
            .slots
            .iter()
            .filter_map(|s| s.window.summary(&s.target))
            .collect();
        let batch = ProberOutput::Batch {
            plan_version: r.plan.version,
            by_id: r.plan.results_by_id,
            windows,
            names: r.resolved.clone(),
        };
        match out.try_send(batch) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl Running {
    /// When the next probe may start: when it is due, and not before the
    /// rate limit has a token for it.
    fn next_start(&self) -> Option<Instant> {
        let due = self.schedule.next_due()?;
        Some(self.retry_at.map_or(due, |retry| retry.max(due)))
    }
}

/// A round of lookups of the running plan's names; `None` when it has none.
fn start_lookups(r: &Running) -> Option<Lookups> {
    if r.plan.names.is_empty() {
        return None;
    }
    let names = r.plan.names.clone();
    let version = r.plan.version;
    let timeout = names::lookup_timeout(r.plan.interval);
    Some(Box::pin(async move {
        (version, names::resolve_all(&names, timeout).await)
    }))
}

/// The running round of lookups' answers; never, when none runs.
async fn lookups_done(lookups: &mut Option<Lookups>) -> (u64, Vec<NameResolution>) {
    match lookups {
        Some(round) => round.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Adds a result to its target's window; the state change it made, if any.
fn record(
    r: &mut Running,
    version: u64,
    i: usize,
    result: ProbeResult,
    at: SystemTime,
) -> Option<StateChange> {
    // Results of an earlier plan's probes are dropped: the target may have
    // moved or gone.
    if version != r.plan.version {
        return None;
    }
    let slot = r.slots.get_mut(i)?;
    let old = slot.window.state();
    let outcome = result.outcome;
    let new = slot.window.push(result, at);
    let changed = match old {
        None => new != TargetState::Ok,
        Some(old) => old != new,
    };
    changed.then(|| StateChange {
        target: slot.target.clone(),
        old,
        new,
        outcome,
    })
}
