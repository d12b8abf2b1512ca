//! reachmap-collector: accepts agent streams, keeps the fleet state and
//! answers queries. `run` serves until `shutdown` fires, so a test can run a
//! real collector in-process.

pub mod cli;
pub mod clock;
pub mod config;
pub mod encode;
pub mod findings;
pub mod history;
pub mod http;
pub mod ingest;
pub mod members;
pub mod metrics;
pub mod model;
pub mod packet;
pub mod probe;
pub mod query;
pub mod select;
pub mod sharing;
pub mod state;
pub mod store;
pub mod testport;
pub mod trace;
pub mod trust;
pub mod validate;
pub mod view;
pub mod web;
pub mod whatif;
pub mod why;

use crate::config::Config;
use anyhow::Context;
use reachmap_proto::v1::{collector_server::CollectorServer, query_server::QueryServer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long streams and requests get to finish after the shutdown signal.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// HTTP/2 flow control: how much an agent may send on its stream before the
/// collector has read it. A collector behind on ingest holds at most this
/// per agent (the agent keeps the rest, and supersedes stale probe batches),
/// rather than the 1 MiB a stream and a connection hyper grants by default
/// (up to 5 GB of unread frames at 5,000 agents; 1.68 GB measured).
const STREAM_WINDOW: u32 = 64 * 1024;
/// The same for a whole connection: its agent stream and a few queries.
const CONNECTION_WINDOW: u32 = 128 * 1024;

/// Multi-line library messages (TOML errors) squeezed to one line.
pub fn one_line(s: &str) -> String {
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next_back() {
        Some(last) if last != first => format!("{first} {last}"),
        _ => first,
    }
}

/// The CA (made on first start, or the operator's) and the server
/// certificate for the configured names, the addresses the collector
/// listens on and loopback (a CLI on the same machine); `reachmap-collector
/// ca init` makes them ahead of the first start.
pub fn load_authority(config: &Config) -> anyhow::Result<(trust::Authority, trust::Made)> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string());
    let mut names = config.server_names.clone();
    for ip in [config.listen.ip(), config.http.ip()] {
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    names.sort();
    names.dedup();
    let own = config
        .own_ca
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    Ok(trust::Authority::load_with(
        &config.data_dir,
        &names,
        host.as_deref(),
        own,
    )?)
}

/// The CA (made on first start, or the operator's), the tokens and the
/// deny-list.
fn open_trust(config: &Config) -> anyhow::Result<trust::Trust> {
    if config.insecure {
        tracing::warn!(
            "--insecure: plaintext gRPC and HTTP, and nobody is authenticated: anyone who reaches these ports can pose as any node and read everything (for a lab only)"
        );
    }
    let (authority, made) = load_authority(config)?;
    if made.ca {
        tracing::info!(pin = %authority.pin, dir = %trust::Authority::dir(&config.data_dir).display(), "made the collector's CA; agents enrol with --ca-pin {}", authority.pin);
    } else {
        tracing::info!(pin = %authority.pin, "collector CA");
    }
    if made.server {
        tracing::info!("issued the collector's server certificate");
    }
    Ok(trust::Trust::open(
        &config.data_dir,
        &config.store_at,
        authority,
        config.node_cert_lifetime,
        config.insecure,
    )?)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (store, registry) = store::Store::open_at(&config.store_at, config.store.clone())?;
    tracing::info!(store = %config.store_at.shown(), "store open");
    let trust = std::sync::Arc::new(open_trust(&config)?);
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let http = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("http: cannot bind {}", config.http))?;
    let metrics_only = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics_listen: cannot bind {addr}"))?,
        ),
        None => None,
    };
    let (fleet, state_task) =
        state::Fleet::start(store.clone(), registry, &config.probe, shutdown.clone());
    fleet.evaluate_findings_in_background(shutdown.clone());
    let scheme = if config.insecure { "http" } else { "https" };
    let members = members::spawn(
        store.clone(),
        fleet.clone(),
        members::Identity {
            name: config.name.clone(),
            grpc: format!("{scheme}://{}", config.listen),
            http: format!("{scheme}://{}", config.http),
        },
        shutdown.clone(),
    );
    tracing::info!(grpc = %format!("{scheme}://{}", config.listen), http = %format!("{scheme}://{}", config.http), data_dir = %config.data_dir.display(), "collector listening");

    let ingest = CollectorServer::new(ingest::Ingest::new(
        fleet.clone(),
        trust.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES);
    let query = QueryServer::new(query::Query::new(fleet.clone(), trust.clone()));
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_service(ingest)
        .add_service(query);
    let grpc_shutdown = shutdown.clone();
    let router = http::router(fleet.clone(), trust.clone(), config.metrics_pair_cap);
    let (grpc_task, http_task) = if config.insecure {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
        let grpc_task = tokio::spawn(
            grpc_server.serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned()),
        );
        let http_shutdown = shutdown.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(http, router)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await
        });
        (grpc_task, http_task)
    } else {
        let grpc_tls = trust::server::server_config(&trust, reachmap_tls::ALPN_H2)?;
        let http_tls = trust::server::server_config(&trust, reachmap_tls::ALPN_HTTP1)?;
        let conns = trust::server::accept(grpc, grpc_tls, "gRPC", shutdown.clone());
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(conns),
            Ok::<_, std::io::Error>,
        );
        let grpc_task = tokio::spawn(
            grpc_server.serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned()),
        );
        let listener = trust::server::HttpsListener {
            local: http.local_addr()?,
            rx: trust::server::accept(http, http_tls, "HTTP", shutdown.clone()),
        };
        let http_shutdown = shutdown.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<trust::Peer>(),
            )
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
        });
        (grpc_task, http_task)
    };
    if let Some(listener) = metrics_only {
        tracing::info!(addr = %config.metrics_listen.map(|a| a.to_string()).unwrap_or_default(), "serving /metrics without authentication");
        let metrics_shutdown = shutdown.clone();
        let router = http::metrics_router(fleet.clone(), config.metrics_pair_cap);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(metrics_shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }

    shutdown.cancelled().await;
    let stopped = async {
        if let Ok(Err(e)) = grpc_task.await {
            tracing::error!(error = %e, "gRPC server failed");
        }
        if let Ok(Err(e)) = http_task.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
        let _ = members.await;
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
