//! The agent's own health endpoint, on a local address (`--health-listen`,
//! default 127.0.0.1:7443): `/healthz` (the agent runs), `/readyz` (it is
//! connected to the collector and every fact source is reading) and
//! `/metrics` (Prometheus text: readings, errors and restarts per source,
//! the prober's counters, the stream's state and the outbox).
//!
//! What `/readyz` says is what the collector hears: a source that is down
//! (a missing mount, a missing capability) is named with its reason, the
//! same text `reachmap nodes` shows, so a manifest that starts the agent
//! without a fact it needs is never silent.

use crate::health::{HealthBoard, HealthMap, Source, SourceHealth, State};
use crate::probe::ProberStats;
use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The stream's side of the agent's health, written by the stream task.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub connected: AtomicBool,
    /// Unix seconds of the last change of `connected` (0: never connected).
    pub since: AtomicI64,
    pub connects_total: AtomicU64,
    pub disconnects_total: AtomicU64,
    pub messages_sent_total: AtomicU64,
    pub acks_total: AtomicU64,
    pub outbox_events: AtomicU64,
    pub outbox_bytes: AtomicU64,
    pub events_dropped_total: AtomicU64,
    /// Why the last stream ended or could not open.
    pub last_error: Mutex<Option<String>>,
    /// The collector (URL and address) the stream is open to, or was last.
    pub collector: Mutex<Option<String>>,
}

impl StreamStats {
    pub fn up(&self) {
        self.connects_total.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
        self.since
            .store(unix_secs(SystemTime::now()), Ordering::Relaxed);
    }

    /// The stream opened to `collector` (`collectors::Target`'s text).
    pub fn up_to(&self, collector: &str) {
        if let Ok(mut c) = self.collector.lock() {
            *c = Some(collector.to_string());
        }
        self.up();
    }

    /// The collector the stream is open to, while it is.
    pub fn current(&self) -> Option<String> {
        if !self.connected.load(Ordering::Relaxed) {
            return None;
        }
        self.collector.lock().ok().and_then(|c| c.clone())
    }

    pub fn down(&self, error: String) {
        if self.connected.swap(false, Ordering::Relaxed) {
            self.disconnects_total.fetch_add(1, Ordering::Relaxed);
            self.since
                .store(unix_secs(SystemTime::now()), Ordering::Relaxed);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    pub fn outbox(&self, events: usize, bytes: u64, dropped_total: u64) {
        self.outbox_events.store(events as u64, Ordering::Relaxed);
        self.outbox_bytes.store(bytes, Ordering::Relaxed);
        self.events_dropped_total
            .store(dropped_total, Ordering::Relaxed);
    }
}

/// Everything the endpoint reports; cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    pub board: HealthBoard,
    pub stream: Arc<StreamStats>,
    pub prober: Arc<ProberStats>,
    /// Every configured collector, comma-separated.
    pub collector: String,
}

/// Binds the endpoint's address. A port that cannot be bound is an error
/// for the caller to report; the agent goes on reading without it.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve the health endpoint on {addr}: {e}"))?;
    tracing::info!(%addr, "health endpoint: /healthz, /readyz, /metrics");
    Ok(listener)
}

/// Serves the endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let addr = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(telemetry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| format!("health endpoint on {addr}: {e}"))
}

async fn readyz(Extract(t): Extract<Telemetry>) -> Response {
    let (ready, text) = readiness(&t.board.current(), &t.stream, &t.collector);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn metrics(Extract(t): Extract<Telemetry>) -> Response {
    let text = render_metrics(&t.board.current(), &t.stream, &t.prober, SystemTime::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Ready when the stream is up and no source is down or still starting;
/// one line per check, `[+]` passing, `[!]` passing with a warning, `[-]`
/// failing (the style of Kubernetes' own `/readyz?verbose`). Connected, it
/// names the collector the stream is on; not, `collector` (every one
/// configured).
pub fn readiness(health: &HealthMap, stream: &StreamStats, collector: &str) -> (bool, String) {
    let mut ready = true;
    let mut lines = String::new();
    if stream.connected.load(Ordering::Relaxed) {
        let on = stream.current().unwrap_or_else(|| collector.to_string());
        let _ = writeln!(lines, "[+]stream: connected to {on}");
    } else {
        ready = false;
        let why = stream
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "not connected yet".into());
        let _ = writeln!(lines, "[-]stream: not connected to {collector}: {why}");
    }
    for source in Source::ALL {
        let Some(h) = health.get(&source) else {
            continue;
        };
        let error = h.last_error.as_ref().map(|(_, e)| e.as_str());
        let name = source.name();
        match (h.state, error) {
            (State::Ok, _) => {
                let _ = writeln!(lines, "[+]{name}: reading");
            }
            (State::Degraded, e) => {
                let _ = writeln!(
                    lines,
                    "[!]{name}: reading, part of its facts missing: {}",
                    e.unwrap_or("no reason given")
                );
            }
            (State::Starting, _) => {
                ready = false;
                let _ = writeln!(lines, "[-]{name}: not read yet");
            }
            (State::Down, e) => {
                ready = false;
                let _ = writeln!(lines, "[-]{name}: down: {}", e.unwrap_or("no reason given"));
            }
        }
    }
    let head = if ready { "ready\n" } else { "not ready\n" };
    (ready, format!("{head}{lines}"))
}

/// Writes one metric family: its header, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The agent's own series, in Prometheus text format.
pub fn render_metrics(
    health: &HealthMap,
    stream: &StreamStats,
    prober: &ProberStats,
    now: SystemTime,
) -> String {
    type Per = fn(&SourceHealth, SystemTime) -> f64;
    let per_source: [(&str, &str, &str, Per); 6] = [
        (
            "reachmap_agent_source_up",
            "gauge",
            "1 when the fact source is reading (ok or degraded), 0 when down or not read yet.",
            |h, _| f64::from(u8::from(matches!(h.state, State::Ok | State::Degraded))),
        ),
        (
            "reachmap_agent_source_degraded",
            "gauge",
            "1 when the fact source reads with part of its facts missing.",
            |h, _| f64::from(u8::from(h.state == State::Degraded)),
        ),
        (
            "reachmap_agent_source_readings_total",
            "counter",
            "Readings each fact source made.",
            |h, _| h.readings_total as f64,
        ),
        (
            "reachmap_agent_source_errors_total",
            "counter",
            "Errors each fact source met (a degraded or failed reading).",
            |h, _| h.errors_total as f64,
        ),
        (
            "reachmap_agent_source_restarts_total",
            "counter",
            "Restarts of each fact source after an error or a panic.",
            |h, _| h.restarts_total as f64,
        ),
        (
            "reachmap_agent_source_state_seconds",
            "gauge",
            "Seconds each fact source has been in its current state.",
            |h, now| {
                now.duration_since(h.since)
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64()
            },
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in per_source {
        let samples: Vec<(String, f64)> = health
            .iter()
            .map(|(s, h)| (format!("{{source=\"{}\"}}", s.name()), value(h, now)))
            .collect();
        family(&mut out, name, kind, help, &samples);
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let since = stream.since.load(Ordering::Relaxed);
    let singles: [(&str, &str, &str, f64); 15] = [
        (
            "reachmap_agent_stream_connected",
            "gauge",
            "1 while the stream to the collector is open.",
            f64::from(u8::from(stream.connected.load(Ordering::Relaxed))),
        ),
        (
            "reachmap_agent_stream_state_since_seconds",
            "gauge",
            "Unix time the stream last opened or ended (0: never opened).",
            since as f64,
        ),
        (
            "reachmap_agent_stream_connects_total",
            "counter",
            "Streams opened to the collector.",
            load(&stream.connects_total),
        ),
        (
            "reachmap_agent_stream_disconnects_total",
            "counter",
            "Streams that ended.",
            load(&stream.disconnects_total),
        ),
        (
            "reachmap_agent_stream_messages_sent_total",
            "counter",
            "Messages sent on the stream.",
            load(&stream.messages_sent_total),
        ),
        (
            "reachmap_agent_stream_acks_total",
            "counter",
            "Acks received from the collector.",
            load(&stream.acks_total),
        ),
        (
            "reachmap_agent_outbox_events",
            "gauge",
            "Events not acked by the collector yet.",
            load(&stream.outbox_events),
        ),
        (
            "reachmap_agent_outbox_bytes",
            "gauge",
            "Encoded bytes of the events not acked yet.",
            load(&stream.outbox_bytes),
        ),
        (
            "reachmap_agent_events_dropped_total",
            "counter",
            "Events dropped because the outbox was full.",
            load(&stream.events_dropped_total),
        ),
        (
            "reachmap_agent_probes_started_total",
            "counter",
            "Probes started.",
            load(&prober.probes_started),
        ),
        (
            "reachmap_agent_probes_completed_total",
            "counter",
            "Probes that completed (with any result).",
            load(&prober.probes_completed),
        ),
        (
            "reachmap_agent_probes_skipped_total",
            "counter",
            "Probe slots skipped because the prober was more than an interval late.",
            load(&prober.probes_skipped),
        ),
        (
            "reachmap_agent_probe_batches_dropped_total",
            "counter",
            "Result batches dropped because the stream was not taking them.",
            load(&prober.batches_dropped),
        ),
        (
            "reachmap_agent_probe_state_changes_total",
            "counter",
            "Probe target state changes (ok, degraded, failing).",
            load(&prober.state_changes),
        ),
        (
            "reachmap_agent_plan_targets_refused_total",
            "counter",
            "Plan targets refused because they are not fleet addresses.",
            load(&prober.targets_refused),
        ),
    ];
    for (name, kind, help, value) in singles {
        family(&mut out, name, kind, help, &[(String::new(), value)]);
    }
    let on: Vec<(String, f64)> = stream
        .current()
        .map(|c| (format!("{{collector=\"{}\"}}", label_value(&c)), 1.0))
        .into_iter()
        .collect();
    family(
        &mut out,
        "reachmap_agent_stream_collector",
        "gauge",
        "1 for the collector (URL and address) the stream is open to; no sample while it is not.",
        &on,
    );
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board_with(states: &[(Source, State, Option<&str>)]) -> HealthBoard {
        let (board, _rx) = HealthBoard::new();
        for (s, st, e) in states {
            match st {
                State::Ok => board.ok(*s),
                State::Degraded => board.degraded(*s, e.unwrap_or_default()),
                State::Down => board.down(*s, e.unwrap_or_default()),
                State::Starting => {}
            }
        }
        board
    }

    fn all_ok() -> Vec<(Source, State, Option<&'static str>)> {
        Source::ALL.iter().map(|s| (*s, State::Ok, None)).collect()
    }

    #[test]
    fn ready_only_when_connected_and_every_source_reads() {
        let stream = StreamStats::default();
        let board = board_with(&all_ok());
        let (ready, text) = readiness(&board.current(), &stream, "https://c:7440");
        assert!(!ready, "not connected yet: {text}");
        assert!(text.contains("[-]stream: not connected to https://c:7440: not connected yet"));
        stream.up();
        let (ready, text) = readiness(&board.current(), &stream, "https://c:7440");
        assert!(ready, "{text}");
        assert!(text.starts_with("ready\n"));
        assert_eq!(text.matches("[+]").count(), 1 + Source::ALL.len());
    }

    #[test]
    fn a_down_source_is_named_with_its_reason() {
        let stream = StreamStats::default();
        stream.up();
        let mut states = all_ok();
        states[3] = (
            Source::KernelLog,
            State::Down,
            Some("cannot open /host/dev/kmsg: No such file or directory"),
        );
        let board = board_with(&states);
        let (ready, text) = readiness(&board.current(), &stream, "c");
        assert!(!ready);
        assert!(
            text.contains(
                "[-]kernel_log: down: cannot open /host/dev/kmsg: No such file or directory"
            ),
            "{text}"
        );
        // Degraded is reading: still ready, with the reason shown.
        states[3] = (Source::KernelLog, State::Ok, None);
        states[0] = (Source::Sockets, State::Degraded, Some("no process owners"));
        let (ready, text) = readiness(&board_with(&states).current(), &stream, "c");
        assert!(ready, "{text}");
        assert!(text.contains("[!]sockets: reading, part of its facts missing: no process owners"));
    }

    #[test]
    fn a_source_not_read_yet_or_a_lost_stream_is_not_ready() {
        let stream = StreamStats::default();
        stream.up();
        let (ready, text) = readiness(&HealthBoard::new().0.current(), &stream, "c");
        assert!(!ready);
        assert_eq!(text.matches("not read yet").count(), Source::ALL.len());
        stream.down("connection refused".into());
        assert_eq!(stream.disconnects_total.load(Ordering::Relaxed), 1);
        let (_, text) = readiness(&board_with(&all_ok()).current(), &stream, "c");
        assert!(text.contains("[-]stream: not connected to c: connection refused"));
    }

    #[test]
    fn the_collector_the_stream_is_on_is_named() {
        let stream = StreamStats::default();
        let board = board_with(&all_ok());
        let all = "https://a:7440, https://b:7440";
        let empty = ProberStats::default();
        let text = render_metrics(&board.current(), &stream, &empty, SystemTime::now());
        assert!(!text.contains("reachmap_agent_stream_collector{"), "{text}");
        stream.up_to("https://b:7440 (198.18.0.2:7440)");
        let (ready, text) = readiness(&board.current(), &stream, all);
        assert!(ready, "{text}");
        assert!(
            text.contains("[+]stream: connected to https://b:7440 (198.18.0.2:7440)\n"),
            "{text}"
        );
        let text = render_metrics(&board.current(), &stream, &empty, SystemTime::now());
        assert!(
            text.contains(
                "reachmap_agent_stream_collector{collector=\"https://b:7440 (198.18.0.2:7440)\"} 1\n"
            ),
            "{text}"
        );
        stream.down("collector closed the stream".into());
        assert_eq!(stream.current(), None);
        let (_, text) = readiness(&board.current(), &stream, all);
        assert!(
            text.contains("[-]stream: not connected to https://a:7440, https://b:7440: collector closed the stream"),
            "{text}"
        );
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn metrics_have_every_family_with_its_rows() {
        let mut states = all_ok();
        states[1] = (
            Source::Firewall,
            State::Down,
            Some("nft: Operation not permitted"),
        );
        let board = board_with(&states);
        board.ok(Source::Sockets);
        let stream = StreamStats::default();
        stream.up();
        stream.outbox(3, 300, 7);
        let prober = ProberStats::default();
        prober.probes_started.store(11, Ordering::Relaxed);
        let text = render_metrics(&board.current(), &stream, &prober, SystemTime::now());
        assert!(
            text.contains("reachmap_agent_source_up{source=\"firewall\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("reachmap_agent_source_up{source=\"sockets\"} 1\n"));
        assert!(text.contains("reachmap_agent_source_readings_total{source=\"sockets\"} 2\n"));
        assert!(text.contains("reachmap_agent_source_errors_total{source=\"firewall\"} 1\n"));
        assert!(text.contains("reachmap_agent_stream_connected 1\n"));
        assert!(text.contains("reachmap_agent_outbox_events 3\n"));
        assert!(text.contains("reachmap_agent_events_dropped_total 7\n"));
        assert!(text.contains("reachmap_agent_probes_started_total 11\n"));
        // Every sample line follows its own family's TYPE line.
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or_default().to_string();
            } else if !line.starts_with('#') {
                let family = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(family, current, "{line} outside its family");
            }
        }
    }
}
