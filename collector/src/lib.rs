//! reachmap-collector: accepts agent streams, keeps the fleet state and
//! answers queries. `run` serves until `shutdown` fires, so a test can run a
//! real collector in-process.

pub mod cli;
pub mod clock;
pub mod config;
pub mod encode;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod packet;
pub mod probe;
pub mod query;
pub mod state;
pub mod store;
pub mod testport;
pub mod trust;
pub mod validate;
pub mod view;
pub mod web;
pub mod why;

use crate::config::Config;
use anyhow::Context;
use reachmap_proto::v1::{collector_server::CollectorServer, query_server::QueryServer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long streams and requests get to finish after the shutdown signal.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Multi-line library messages (TOML errors) squeezed to one line.
pub fn one_line(s: &str) -> String {
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next_back() {
        Some(last) if last != first => format!("{first} {last}"),
        _ => first,
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::Store::open(&config.data_dir)?;
    // The collector's own CA, made on first start; the connections do not
    // use it yet (see ARCHITECTURE.md, "Trust").
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string());
    let (authority, made) =
        trust::Authority::load_or_create(&config.data_dir, &config.server_names, host.as_deref())?;
    if made.ca {
        tracing::info!(pin = %authority.pin, dir = %trust::Authority::dir(&config.data_dir).display(), "made the collector's CA; agents enrol with --ca-pin {}", authority.pin);
    } else {
        tracing::info!(pin = %authority.pin, "collector CA");
    }
    if made.server {
        tracing::info!(names = ?config.server_names, "issued the collector's server certificate");
    }
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let http = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("http: cannot bind {}", config.http))?;
    let (fleet, state_task) = state::Fleet::start(store, &config.probe, shutdown.clone())?;
    tracing::info!(grpc = %config.listen, http = %config.http, data_dir = %config.data_dir.display(), "collector listening");

    let ingest = CollectorServer::new(ingest::Ingest::new(fleet.clone(), shutdown.clone()))
        .max_decoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES);
    let query = QueryServer::new(query::Query::new(fleet.clone()));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
    let grpc_shutdown = shutdown.clone();
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(ingest)
            .add_service(query)
            .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned()),
    );
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, http::router(fleet, config.metrics_pair_cap))
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
    });

    shutdown.cancelled().await;
    let stopped = async {
        if let Ok(Err(e)) = grpc_task.await {
            tracing::error!(error = %e, "gRPC server failed");
        }
        if let Ok(Err(e)) = http_task.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
        let _ = state_task.await;
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, stopped)
        .await
        .is_err()
    {
        tracing::warn!("did not stop within {SHUTDOWN_DEADLINE:?}");
    }
    tracing::info!("stopped");
    Ok(())
}
