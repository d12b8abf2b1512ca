//! The tasks that run the inspectors and send their readings to the hub.
//! Inspectors that block (netlink dumps, /proc walks, running `nft`) run on
//! threads of their own; each task stops when `shutdown` fires.
//!
//! Each source runs under `health::supervise`: it returns `Ok` only when
//! the agent is stopping, and `Err` with the reason when it cannot read; it
//! says how it is on the health board after every reading, so a source that
//! cannot read is a fact the collector sees, never a line in a log alone.

use crate::config::Config;
use crate::facts::firewall::Ruleset;
use crate::health::{HealthBoard, Source};
use crate::hub::{ChangeAuthor, Reading};
use crate::inspect::firewall::notify::{NftMonitor, Touched};
use crate::inspect::firewall::reader::{LegacyPoller, ReadOptions, read_ruleset, read_touched};
use crate::inspect::kmsg::{KmsgError, KmsgReader, ResumeState, boot_unix_us};
use crate::inspect::resources::ResourceSampler;
use crate::inspect::sockets::SocketReader;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What every source is run with.
#[derive(Clone)]
pub struct SourceEnv {
    pub config: Arc<Config>,
    /// This boot's id, which the kernel log's resume state is kept for.
    pub boot_id: String,
    pub readings: mpsc::Sender<Reading>,
    pub board: HealthBoard,
    pub shutdown: CancellationToken,
}

/// A blocking thread's view of the shutdown token: `sleep` returns early,
/// with false, once shutdown fires.
struct ThreadShutdown(std::sync::mpsc::Receiver<()>);

impl ThreadShutdown {
    /// Must be called inside the runtime: a task drops the sender when
    /// `shutdown` fires, which wakes the thread at once.
    fn new(shutdown: &CancellationToken) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let token = shutdown.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            drop(tx);
        });
        ThreadShutdown(rx)
    }

    fn sleep_until(&self, deadline: Instant) -> bool {
        let wait = deadline.saturating_duration_since(Instant::now());
        matches!(
            self.0.recv_timeout(wait),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    }
}

/// Sockets: which listeners exist every `listener_interval` (a dump the
/// kernel filters to listening sockets, cheap on any host), and the full
/// reading with connection counts every `socket_poll_interval` (it walks
/// every socket: about 30 ms of kernel time on a host with 20,000).
pub async fn sockets(env: SourceEnv) -> Result<(), String> {
    let SourceEnv {
        config,
        readings,
        board,
        shutdown,
        ..
    } = env;
    let stop = ThreadShutdown::new(&shutdown);
    let thread = tokio::task::spawn_blocking(move || {
        let mut reader = SocketReader::new(config.procfs.clone());
        let mut next_full = Instant::now();
        loop {
            let now = Instant::now();
            let reading = if now >= next_full {
                next_full = now + config.socket_poll_interval;
                reader.read_all().map(|f| Reading::Sockets {
                    listeners: f.listeners,
                    summary: f.summary,
                })
            } else {
                reader.read_listeners().map(Reading::Listeners)
            };
            match reading {
                Ok(r) => {
                    board.ok(Source::Sockets);
                    if readings.blocking_send(r).is_err() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(format!("cannot read sockets: {e}")),
            }
            if !stop.sleep_until(now + config.listener_interval) {
                return Ok(());
            }
        }
    });
    match thread.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(format!("socket reader stopped: {e}")),
    }
}

/// A burst of nft commands (a script, `iptables-restore`) commits several
/// generations in a row; read once after it settles.
const FIREWALL_DEBOUNCE: Duration = Duration::from_millis(30);

/// Reads the whole ruleset, or — given the last reading and what the
/// notifications say changed since — only the touched parts.
async fn read_firewall_async(
    opts: ReadOptions,
    since: Option<(Arc<Ruleset>, Touched)>,
) -> Result<Arc<Ruleset>, String> {
    let read = move || match &since {
        Some((base, touched)) => read_touched(&opts, base, touched),
        None => read_ruleset(&opts),
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(r) => r.map(Arc::new).map_err(|e| e.to_string()),
        Err(e) => Err(format!("firewall reader stopped: {e}")),
    }
}

/// Firewall: one reading at start, then a new one whenever nftables
/// announces a committed change (with the generation, pid and command that
/// made it). iptables-legacy has no notifications: it is polled by content
/// hash every `poll_interval`; so is everything when the notification
/// socket cannot be opened.
pub async fn firewall(env: SourceEnv) -> Result<(), String> {
    let SourceEnv {
        config,
        readings,
        board,
        shutdown,
        ..
    } = env;
    let opts = ReadOptions {
        procfs: config.procfs.clone(),
        sysfs: config.sysfs.clone(),
        ..ReadOptions::default()
    };
    let mut monitor = match NftMonitor::open() {
        Ok(m) => Some(m),
        Err(e) => {
            board.degraded(
                Source::Firewall,
                format!(
                    "no nftables change notifications ({e}); polling the ruleset every {:?}",
                    config.poll_interval
                ),
            );
            None
        }
    };
    let healthy = |monitor: &Option<NftMonitor>| {
        if monitor.is_some() {
            board.ok(Source::Firewall);
        }
    };
    // The last reading, which a change that names its parts is read on top of.
    let mut last: Option<Arc<Ruleset>> = None;
    if !read_and_send(&opts, &readings, None, &mut last, None).await? {
        return Ok(());
    }
    healthy(&monitor);
    let (mut legacy, _) = poll_legacy(LegacyPoller::new(opts.clone()), &opts).await;
    let mut poll = tokio::time::interval(config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        let (author, touched) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            change = next_change(&mut monitor) => match change {
                Ok(c) => {
                    // Let a burst settle; the last change names the author,
                    // and the read covers what any of them touched.
                    let mut touched = c.touched;
                    let mut newest = c.change;
                    let settle = tokio::time::sleep(FIREWALL_DEBOUNCE);
                    tokio::pin!(settle);
                    loop {
                        tokio::select! {
                            _ = &mut settle => break,
                            more = next_change(&mut monitor) => match more {
                                Ok(c) => {
                                    touched.merge(c.touched);
                                    newest = c.change;
                                }
                                Err(_) => {
                                    touched = Touched::Everything;
                                    break;
                                }
                            },
                        }
                    }
                    (
                        Some(ChangeAuthor {
                            generation: (newest.generation != 0).then_some(newest.generation),
                            pid: newest.pid,
                            command: newest.command,
                        }),
                        Some(touched),
                    )
                }
                Err(e) => {
                    board.degraded(
                        Source::Firewall,
                        format!("nftables notifications failed ({e}); polling the ruleset every {:?}", config.poll_interval),
                    );
                    monitor = None;
                    continue;
                }
            },
            _ = poll.tick() => {
                // Without notifications every poll is a full reading; with
                // them only iptables-legacy needs looking at.
                let changed = match &monitor {
                    None => true,
                    Some(_) => {
                        let p = std::mem::replace(&mut legacy, LegacyPoller::new(opts.clone()));
                        let (p, changed) = poll_legacy(p, &opts).await;
                        legacy = p;
                        changed
                    }
                };
                if !changed {
                    continue;
                }
                (None, None)
            }
        };
        if !read_and_send(&opts, &readings, author, &mut last, touched).await? {
            return Ok(());
        }
        healthy(&monitor);
    }
}

/// Reads the ruleset and hands it to the hub — an unreadable one too, its
/// error is a fact. `Ok(false)` when the hub is gone; `Err` when the
/// ruleset could not be read, for the supervisor to try again.
async fn read_and_send(
    opts: &ReadOptions,
    readings: &mpsc::Sender<Reading>,
    author: Option<ChangeAuthor>,
    last: &mut Option<Arc<Ruleset>>,
    touched: Option<Touched>,
) -> Result<bool, String> {
    // Parts are read on top of the last reading; a poll (no notification
    // said what changed) or no good last reading is a full read.
    let since = match (last.take(), touched) {
        (Some(base), Some(t)) => Some((base, t)),
        _ => None,
    };
    let ruleset = read_firewall_async(opts.clone(), since).await;
    *last = ruleset.as_ref().ok().cloned();
    let failed = ruleset.as_ref().err().cloned();
    if readings
        .send(Reading::Firewall { ruleset, author })
        .await
        .is_err()
    {
        return Ok(false);
    }
    match failed {
        Some(e) => Err(format!("cannot read the ruleset: {e}")),
        None => Ok(true),
    }
}

/// Runs one iptables-legacy poll off the runtime; true when the rules changed.
async fn poll_legacy(mut p: LegacyPoller, opts: &ReadOptions) -> (LegacyPoller, bool) {
    let opts = opts.clone();
    match tokio::task::spawn_blocking(move || {
        let changed = matches!(p.poll(), Ok(true));
        (p, changed)
    })
    .await
    {
        Ok(x) => x,
        Err(_) => (LegacyPoller::new(opts), false),
    }
}

async fn next_change(
    monitor: &mut Option<NftMonitor>,
) -> Result<crate::inspect::firewall::notify::Transaction, String> {
    match monitor {
        Some(m) => m.next_change().await.map_err(|e| e.to_string()),
        None => std::future::pending().await,
    }
}

/// How far back the memory trend looks.
const MEMORY_TREND_WINDOW: Duration = Duration::from_secs(600);

/// Resources: a sample every `poll_interval` (the first one a moment after
/// start, so CPU figures have two readings to compare).
pub async fn resources(env: SourceEnv) -> Result<(), String> {
    let SourceEnv {
        config,
        readings,
        board,
        shutdown,
        ..
    } = env;
    let mut sampler = ResourceSampler::new(
        config.procfs.clone(),
        config.rootfs.clone(),
        MEMORY_TREND_WINDOW,
    );
    // Without a first reading of CPU times the first sample has no CPU
    // figures; the sample says whether the rest can be read.
    let _ = sampler.prime();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(500),
        config.poll_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let (s, r) = match tokio::task::spawn_blocking(move || {
            let r = sampler.sample();
            (sampler, r)
        })
        .await
        {
            Ok(x) => x,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(format!("resource sampler stopped: {e}")),
        };
        sampler = s;
        match r {
            Ok(r) => {
                board.ok(Source::Resources);
                if readings.send(Reading::Resources(r)).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("cannot read resources: {e}")),
        }
    }
}

/// Kernel events waiting for the hub; beyond this the kernel-log reader
/// counts and drops them (a flood of log lines must not stall it).
const KERNEL_EVENT_QUEUE: usize = 1024;

/// Kernel log: OOM kills, conntrack table full, SYN floods and link
/// messages from /dev/kmsg, resumed after the last record an earlier run
/// reported. Overwritten records are reported as lost once a second.
pub async fn kernel_log(env: SourceEnv) -> Result<(), String> {
    let SourceEnv {
        config,
        boot_id,
        readings,
        board,
        shutdown,
    } = env;
    let state_file = config.state_dir.join(kmsg_state_name(&config.node));
    let mut resume_problem = None;
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        resume_problem = Some(format!(
            "cannot create the state directory {}: {e}; kernel messages may be reported again after a restart",
            config.state_dir.display()
        ));
    }
    // A resume state that cannot be read is set aside: reading everything
    // again is better than reading nothing.
    if let Err(e @ KmsgError::BadState { .. }) = ResumeState::load(&state_file) {
        let _ = std::fs::remove_file(&state_file);
        resume_problem = Some(format!(
            "{e}; removed, kernel messages may be reported again"
        ));
    }
    let reader = KmsgReader::new(config.kmsg.clone(), boot_id)
        .state_file(state_file)
        .follow(true)
        .boot_unix_us(boot_unix_us(&config.procfs));
    let counters = reader.counters();
    let (tx, mut rx) = mpsc::channel(KERNEL_EVENT_QUEUE);
    let stop = shutdown.clone();
    let mut task = tokio::spawn(async move { reader.run(tx, stop).await });
    let mut lost_reported = 0;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            e = rx.recv() => match e {
                Some(e) => {
                    if readings.send(Reading::Kernel(e)).await.is_err() {
                        break Ok(());
                    }
                }
                // The reader ended: shutdown, or an error it returns below.
                None => break Ok(()),
            },
            _ = tick.tick() => {
                let stats = counters.snapshot();
                let lost = stats.lost_records_total;
                if lost > lost_reported {
                    let _ = readings.send(Reading::KernelLogLost(lost - lost_reported)).await;
                    lost_reported = lost;
                }
                if task.is_finished() {
                    continue;
                }
                match stats.save_error.or_else(|| resume_problem.clone()) {
                    Some(e) => board.degraded(Source::KernelLog, format!("reading, but the resume state is not saved: {e}")),
                    None => board.ok(Source::KernelLog),
                }
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), &mut task).await {
        Ok(Ok(Err(e))) => Err(format!("kernel log reader stopped: {e}")),
        Ok(Ok(Ok(_))) => outcome,
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => Err(format!("kernel log reader stopped: {e}")),
        Err(_) => {
            task.abort();
            outcome
        }
    }
}

/// Each node's own resume state: agents sharing a state directory (several
/// on one machine) never overwrite each other's place in the log.
pub fn kmsg_state_name(node: &str) -> String {
    format!("kmsg-{node}.state")
}
