//! reachmap-agent: reads its host's facts from the kernel and streams them to
//! the collector. `run` starts every task and returns when `shutdown` fires
//! and they have stopped, so a test can run a real agent in-process.

pub mod backoff;
pub mod config;
pub mod diff;
pub mod events;
pub mod facts;
pub mod hub;
pub mod inspect;
pub mod oneshot;
pub mod outbox;
pub mod probe;
pub mod sources;
pub mod stream;
pub mod wire;

use crate::config::Config;
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
    tracing::info!(node = %config.node, boot_id = %identity.boot_id, collector = %config.collector, "starting");

    let (facts_tx, net_rx) = watch::channel(Arc::new(Versioned::default()));
    let (updates_tx, updates_rx) = mpsc::channel(UPDATE_QUEUE);
    let (readings_tx, readings_rx) = mpsc::channel(hub::READINGS_QUEUE);

    let hub_task = tokio::spawn(
        hub::run(readings_rx, facts_tx, updates_tx, shutdown.clone())
            .instrument(tracing::info_span!("hub")),
    );
    let sockets = sources::sockets(config.clone(), readings_tx.clone(), shutdown.clone())?;
    let firewall = tokio::spawn(
        sources::firewall(config.clone(), readings_tx.clone(), shutdown.clone())
            .instrument(tracing::info_span!("firewall")),
    );
    let resources = tokio::spawn(
        sources::resources(config.clone(), readings_tx.clone(), shutdown.clone())
            .instrument(tracing::info_span!("resources")),
    );
    let kernel_log = tokio::spawn(
        sources::kernel_log(
            config.clone(),
            identity.boot_id.clone(),
            readings_tx.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("kernel_log")),
    );
    let watcher = tokio::spawn(
        inspect::watch::run(readings_tx, shutdown.clone())
            .instrument(tracing::info_span!("net_watcher")),
    );
    // Wait for the first reading so the first snapshot is complete.
    let mut first = net_rx.clone();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = first.wait_for(|v| v.version > 0) => { r?; }
    }

    // Probing: the plan comes from the collector over the stream; results
    // and state changes go back the same way.
    let (plan_tx, plan_rx) = watch::channel(None);
    let (probe_tx, probe_rx) = mpsc::channel(PROBE_OUTPUT_QUEUE);
    let prober = tokio::spawn(
        probe::run(plan_rx, probe_tx, shutdown.clone()).instrument(tracing::info_span!("prober")),
    );
    let probe_listen = config.probe_listen;
    let probe_port_shutdown = shutdown.clone();
    let probe_port = tokio::spawn(
        async move {
            if let Err(e) = probe::serve_probe_port(probe_listen, probe_port_shutdown).await {
                tracing::error!(address = %probe_listen, error = %e, "cannot serve the probe port; peers will see this node as unreachable");
            }
        }
        .instrument(tracing::info_span!("probe_port")),
    );
    let probing = stream::Probing {
        plan: plan_tx,
        output: probe_rx,
        temp: probe::TempListeners::new(shutdown.clone()),
    };
    let client = stream::Client::new(config.clone(), identity, net_rx, updates_rx, probing);
    let streamer = tokio::spawn(
        client
            .run(shutdown.clone())
            .instrument(tracing::info_span!("stream", node = %config.node)),
    );

    shutdown.cancelled().await;
    let stopped = async {
        let _ = streamer.await;
        let _ = watcher.await;
        let _ = firewall.await;
        let _ = resources.await;
        let _ = kernel_log.await;
        let _ = hub_task.await;
        let _ = prober.await;
        let _ = probe_port.await;
        let _ = tokio::task::spawn_blocking(move || sockets.join()).await;
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, stopped)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within {SHUTDOWN_DEADLINE:?}");
    }
    tracing::info!("stopped");
    Ok(())
}
