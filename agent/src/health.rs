//! The health of the agent's fact sources, and the supervisor that keeps
//! them running.
//!
//! Every source (sockets, firewall, network, kernel log, resources, prober,
//! name lookups) reports to one [`HealthBoard`]: reading (`ok`), reading with
//! part of its facts missing (`degraded`), or not reading (`down`). The board
//! is a `watch` channel the hub follows, so a source's health is a fact like
//! any other: versioned, in every snapshot, and in a delta when it changes.
//! A source blind to its facts is therefore visible at the collector, and an
//! answer never rests on the absence of a fact nobody was reading.
//!
//! [`supervise`] runs a source as a task: an error or a panic is logged
//! (rate-limited), counted, and the source restarted with capped, jittered
//! backoff. Updating the board never blocks.

use crate::backoff::Backoff;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Sockets,
    Firewall,
    Network,
    KernelLog,
    Resources,
    Prober,
    Names,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Sockets,
        Source::Firewall,
        Source::Network,
        Source::KernelLog,
        Source::Resources,
        Source::Prober,
        Source::Names,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Sockets => "sockets",
            Source::Firewall => "firewall",
            Source::Network => "network",
            Source::KernelLog => "kernel_log",
            Source::Resources => "resources",
            Source::Prober => "prober",
            Source::Names => "names",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not read yet since the agent started.
    Starting,
    Ok,
    /// Reading, with part of its facts missing.
    Degraded,
    /// Not reading.
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceHealth {
    pub state: State,
    /// When it entered `state`.
    pub since: SystemTime,
    pub last_error: Option<(SystemTime, String)>,
    pub errors_total: u64,
    pub restarts_total: u64,
    /// Readings made (ok or degraded); counted without telling receivers.
    pub readings_total: u64,
}

pub type HealthMap = BTreeMap<Source, SourceHealth>;

/// How often the same error is logged again while it persists.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct LogLimit {
    last: Option<(Instant, String)>,
    suppressed: u64,
}

impl LogLimit {
    /// True when `error` should be logged now: it is new, or the last log of
    /// it was `LOG_EVERY` ago. Returns how many were held back meanwhile.
    fn admit(&mut self, error: &str, now: Instant) -> Option<u64> {
        let due = match &self.last {
            Some((at, text)) => text != error || now.duration_since(*at) >= LOG_EVERY,
            None => true,
        };
        if due {
            self.last = Some((now, error.to_owned()));
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Where every source says how it is. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct HealthBoard {
    tx: Arc<watch::Sender<HealthMap>>,
    logs: Arc<Mutex<BTreeMap<Source, LogLimit>>>,
}

impl std::fmt::Debug for HealthBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HealthBoard")
            .field(&*self.tx.borrow())
            .finish()
    }
}

impl HealthBoard {
    /// A board with every source `Starting`, and the receiver the hub follows.
    pub fn new() -> (Self, watch::Receiver<HealthMap>) {
        let now = SystemTime::now();
        let map = Source::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    SourceHealth {
                        state: State::Starting,
                        since: now,
                        last_error: None,
                        errors_total: 0,
                        restarts_total: 0,
                        readings_total: 0,
                    },
                )
            })
            .collect();
        let (tx, rx) = watch::channel(map);
        let board = HealthBoard {
            tx: Arc::new(tx),
            logs: Arc::default(),
        };
        (board, rx)
    }

    pub fn current(&self) -> HealthMap {
        self.tx.borrow().clone()
    }

    /// The source is reading.
    pub fn ok(&self, source: Source) {
        self.set(source, State::Ok, None);
    }

    /// The source reads, but part of its facts are missing: `why`.
    pub fn degraded(&self, source: Source, why: impl Display) {
        self.set(source, State::Degraded, Some(why.to_string()));
    }

    /// The source is not reading: `why`.
    pub fn down(&self, source: Source, why: impl Display) {
        self.set(source, State::Down, Some(why.to_string()));
    }

    fn restarted(&self, source: Source) {
        self.tx.send_modify(|m| {
            if let Some(h) = m.get_mut(&source) {
                h.restarts_total += 1;
            }
        });
    }

    /// Receivers hear of a change of state or of error text; a count going
    /// up alone is carried by the next change (or snapshot), so a source
    /// failing the same way every second does not make a delta every second.
    fn set(&self, source: Source, state: State, error: Option<String>) {
        let now = SystemTime::now();
        if let Some(e) = &error {
            self.log(source, state, e);
        }
        self.tx.send_if_modified(|m| {
            let Some(h) = m.get_mut(&source) else {
                return false;
            };
            let mut news = false;
            if matches!(state, State::Ok | State::Degraded) {
                h.readings_total += 1;
            }
            if h.state != state {
                if state == State::Ok && h.state != State::Starting {
                    tracing::info!(source = source.name(), "fact source recovered");
                }
                h.state = state;
                h.since = now;
                news = true;
            }
            if let Some(e) = error {
                h.errors_total += 1;
                news |= h.last_error.as_ref().is_none_or(|(_, old)| *old != e);
                h.last_error = Some((now, e));
            }
            news
        });
    }

    fn log(&self, source: Source, state: State, error: &str) {
        let admitted = match self.logs.lock() {
            Ok(mut logs) => logs.entry(source).or_default().admit(error, Instant::now()),
            Err(_) => Some(0),
        };
        let Some(suppressed) = admitted else {
            return;
        };
        match state {
            State::Down => {
                tracing::warn!(
                    source = source.name(),
                    error,
                    suppressed,
                    "fact source down"
                )
            }
            _ => {
                tracing::warn!(
                    source = source.name(),
                    error,
                    suppressed,
                    "fact source degraded"
                )
            }
        }
    }
}

/// Delays between restarts of a failed source.
pub const RESTART_INITIAL: Duration = Duration::from_millis(500);
pub const RESTART_MAX: Duration = Duration::from_secs(30);

/// Runs `start()` as a task until it returns `Ok` (the source stopped because
/// the agent is stopping) or `shutdown` fires. An `Err` or a panic marks the
/// source down with the reason, and it is started again after a backoff; a
/// run that lasted longer than the longest delay starts the backoff over.
pub async fn supervise<F, Fut>(
    source: Source,
    board: HealthBoard,
    shutdown: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut backoff = Backoff::new(RESTART_INITIAL, RESTART_MAX);
    loop {
        let began = Instant::now();
        let task = tokio::spawn(start());
        let abort = task.abort_handle();
        let result = tokio::select! {
            r = task => r,
            _ = shutdown.cancelled() => {
                // Sources watch the token themselves; this only bounds it.
                abort.abort();
                return;
            }
        };
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e)),
            Err(e) => format!("stopped: {e}"),
        };
        if shutdown.is_cancelled() {
            return;
        }
        board.down(source, &error);
        if began.elapsed() > RESTART_MAX {
            backoff.reset();
        }
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        board.restarted(source);
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn states_and_errors_are_recorded_and_counted() {
        let (board, mut rx) = HealthBoard::new();
        assert!(rx.borrow().values().all(|h| h.state == State::Starting));
        board.ok(Source::Sockets);
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();
        board.ok(Source::Sockets);
        assert!(!rx.has_changed().expect("open"), "no news: no change");
        board.down(Source::KernelLog, "cannot open /dev/kmsg");
        board.down(Source::KernelLog, "cannot open /dev/kmsg");
        let m = rx.borrow_and_update().clone();
        let k = &m[&Source::KernelLog];
        assert_eq!(k.state, State::Down);
        assert_eq!(k.errors_total, 2);
        assert_eq!(
            k.last_error.as_ref().map(|(_, e)| e.as_str()),
            Some("cannot open /dev/kmsg")
        );
        // The same error again is counted without waking the hub.
        board.down(Source::KernelLog, "cannot open /dev/kmsg");
        assert!(!rx.has_changed().expect("open"));
        assert_eq!(board.current()[&Source::KernelLog].errors_total, 3);
        board.ok(Source::KernelLog);
        assert!(rx.has_changed().expect("open"));
        assert_eq!(rx.borrow()[&Source::KernelLog].state, State::Ok);
    }

    #[test]
    fn the_same_error_is_logged_once_a_minute() {
        let mut l = LogLimit::default();
        let t = Instant::now();
        assert_eq!(l.admit("a", t), Some(0));
        assert_eq!(l.admit("a", t + Duration::from_secs(1)), None);
        assert_eq!(l.admit("a", t + Duration::from_secs(2)), None);
        assert_eq!(l.admit("b", t + Duration::from_secs(3)), Some(2));
        assert_eq!(l.admit("b", t + Duration::from_secs(64)), Some(0));
    }

    #[tokio::test]
    async fn a_failing_source_is_restarted_until_it_works() {
        let (board, rx) = HealthBoard::new();
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let r = runs.clone();
        let b = board.clone();
        supervise(
            Source::Resources,
            board.clone(),
            shutdown.clone(),
            move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                async move {
                    match n {
                        0 => Err("no /proc/stat".to_string()),
                        1 => panic!("bad sample"),
                        _ => {
                            b.ok(Source::Resources);
                            Ok(())
                        }
                    }
                }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let h = rx.borrow()[&Source::Resources].clone();
        assert_eq!(h.state, State::Ok);
        assert_eq!((h.errors_total, h.restarts_total), (2, 2));
        assert!(
            h.last_error
                .as_ref()
                .is_some_and(|(_, e)| e.contains("panicked: bad sample")),
            "{h:?}"
        );
    }
}
