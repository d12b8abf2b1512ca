//! reachmap-agent: reads its host's facts from the kernel and streams them to
//! the collector. `run` starts every task and returns when `shutdown` fires
//! and they have stopped, so a test can run a real agent in-process.

pub mod alloc;
pub mod backoff;
pub mod collectors;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod diff;
pub mod endpoint;
pub mod events;
pub mod facts;
pub mod health;
pub mod hub;
pub mod inspect;
pub mod oneshot;
pub mod outbox;
pub mod probe;
pub mod sources;
pub mod stream;
pub mod wire;

use crate::config::Config;
use crate::health::{HealthBoard, Source};
use crate::hub::Versioned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Network updates in flight from the watcher to the stream task.
const UPDATE_QUEUE: usize = 256;
/// Prober output waiting for the stream task: a batch per interval and state
/// changes; when full the prober drops batches (counted), never changes.
const PROBE_OUTPUT_QUEUE: usize = 256;
/// How long tasks get to stop after the shutdown signal.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let identity = inspect::host::read_identity(&config.procfs, &config.etc)?;
    let config = Arc::new(config);
    let collectors = config
        .collectors
        .iter()
        .map(collectors::shown_url)
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(node = %config.node, boot_id = %identity.boot_id, %collectors, "starting");
    // The health endpoint answers from the first moment, enrolment
    // included, so a liveness probe never kills an agent waiting for its
    // collector; until the stream opens it says why it is not ready.
    let (board, health_rx) = HealthBoard::new();
    let stream_stats = Arc::new(endpoint::StreamStats::default());
    let prober_stats = Arc::new(probe::ProberStats::default());
    if !config.insecure {
        stream_stats.down("enrolling or loading this node's certificate".into());
    }
    // Bound before anything else is said, so its line comes first in the
    // log and a port that cannot be had is known at once.
    let health_listener = match config.health_listen {
        Some(addr) => match endpoint::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "no health endpoint");
                None
            }
        },
        None => None,
    };
    let health_task = health_listener.map(|listener| {
        let telemetry = endpoint::Telemetry {
            board: board.clone(),
            stream: stream_stats.clone(),
            prober: prober_stats.clone(),
            collector: collectors.clone(),
        };
        let s = shutdown.clone();
        tokio::spawn(
            async move {
                if let Err(e) = endpoint::serve(listener, telemetry, s).await {
                    tracing::error!(error = %e, "the health endpoint stopped");
                }
            }
            .instrument(tracing::info_span!("health_endpoint")),
        )
    });
    // Who this node is to the collector: its certificate, from the state
    // directory or by enrolment (before anything else starts).
    let (tls_tx, tls_rx) = watch::channel(None);
    let (conn_tx, conn_rx) = watch::channel(None);
    let mut renewal = None;
    if config.insecure {
        tracing::warn!(
            "--insecure: plaintext to the collector, which is not authenticated: anyone on the path can read this host's facts or pose as the collector (for a lab only)"
        );
    } else {
        match credentials::obtain_patiently(&config, &shutdown).await {
            Ok(Some(creds)) => {
                tls_tx.send_replace(Some(creds.tls.clone()));
                renewal = Some(creds);
            }
            Ok(None) => return Ok(()),
            Err(e) => anyhow::bail!("{e}"),
        }
    }

    // Every queue below has a consumer from the first moment: the hub
    // drains the readings, and the stream task drains the hub's updates
    // (keeping their events) even before it has a first reading to send,
    // so no burst a source makes at start (a kernel-log backlog, a storm of
    // listener changes) can fill a queue nobody reads.
    let (facts_tx, net_rx) = watch::channel(Arc::new(Versioned::default()));
    let (updates_tx, updates_rx) = mpsc::channel(UPDATE_QUEUE);
    let (readings_tx, readings_rx) = mpsc::channel(hub::READINGS_QUEUE);
    let (plan_tx, plan_rx) = watch::channel(None);
    let (probe_tx, probe_rx) = mpsc::channel(PROBE_OUTPUT_QUEUE);

    let mut tasks: Vec<_> = health_task.into_iter().collect();
    if let Some(creds) = renewal {
        tasks.push(tokio::spawn(
            credentials::renew(config.clone(), creds, tls_tx, conn_rx, shutdown.clone())
                .instrument(tracing::info_span!("renewal")),
        ));
    }
    tasks.push(tokio::spawn(
        hub::run(
            readings_rx,
            health_rx,
            facts_tx,
            updates_tx,
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("hub")),
    ));
    let probing = stream::Probing {
        plan: plan_tx,
        output: probe_rx,
        temp: probe::TempListeners::new(shutdown.clone()),
    };
    let client = stream::Client::new(
        config.clone(),
        identity.clone(),
        net_rx,
        updates_rx,
        probing,
        tls_rx,
        conn_tx,
    )
    .with_stats(stream_stats.clone());
    tasks.push(tokio::spawn(
        client
            .run(shutdown.clone())
            .instrument(tracing::info_span!("stream", node = %config.node)),
    ));

    let supervised = |source: Source, start: Box<dyn FnMut() -> SourceRun + Send>| {
        tokio::spawn(
            health::supervise(source, board.clone(), shutdown.clone(), start)
                .instrument(tracing::info_span!("source", name = source.name())),
        )
    };
    let env = sources::SourceEnv {
        config: config.clone(),
        boot_id: identity.boot_id.clone(),
        readings: readings_tx.clone(),
        board: board.clone(),
        shutdown: shutdown.clone(),
    };
    let readers: [(Source, StartSource); 4] = [
        (Source::Sockets, |e| Box::pin(sources::sockets(e))),
        (Source::Firewall, |e| Box::pin(sources::firewall(e))),
        (Source::Resources, |e| Box::pin(sources::resources(e))),
        (Source::KernelLog, |e| Box::pin(sources::kernel_log(e))),
    ];
    for (source, start) in readers {
        let env = env.clone();
        tasks.push(supervised(source, Box::new(move || start(env.clone()))));
    }
    {
        let (r, b, s) = (readings_tx, board.clone(), shutdown.clone());
        tasks.push(supervised(
            Source::Network,
            Box::new(move || {
                let (r, b, s) = (r.clone(), b.clone(), s.clone());
                Box::pin(async move {
                    inspect::watch::run(r, || b.ok(Source::Network), s)
                        .await
                        .map_err(|e| format!("network watcher: {e}"))
                }) as SourceRun
            }),
        ));
    }
    {
        // Probing: the plan comes from the collector over the stream;
        // results and state changes go back the same way.
        let (b, s, stats) = (board.clone(), shutdown.clone(), prober_stats.clone());
        tasks.push(supervised(
            Source::Prober,
            Box::new(move || {
                let prober = probe::Prober::new()
                    .with_health(b.clone())
                    .with_stats(stats.clone());
                let (plan, out, s) = (plan_rx.clone(), probe_tx.clone(), s.clone());
                Box::pin(async move {
                    prober.run(plan, out, s).await;
                    Ok(())
                }) as SourceRun
            }),
        ));
    }
    {
        let (listen, b, s) = (config.probe_listen, board.clone(), shutdown.clone());
        tasks.push(tokio::spawn(
            health::supervise(Source::Prober, board.clone(), shutdown.clone(), move || {
                let (b, s) = (b.clone(), s.clone());
                Box::pin(async move {
                    probe::serve_probe_port_reporting(listen, s, || b.ok(Source::Prober))
                        .await
                        .map_err(|e| {
                            format!("cannot serve the probe port {listen}: {e}; peers see this node as unreachable")
                        })
                }) as SourceRun
            })
            .instrument(tracing::info_span!("probe_port")),
        ));
    }

    shutdown.cancelled().await;
    let stopped = futures::future::join_all(tasks);
    if tokio::time::timeout(SHUTDOWN_DEADLINE, stopped)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within {SHUTDOWN_DEADLINE:?}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// One run of a supervised source.
type SourceRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
/// Starts one run of a source that reads the host.
type StartSource = fn(sources::SourceEnv) -> SourceRun;
