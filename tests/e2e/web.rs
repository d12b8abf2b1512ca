//! The collector's web page in headless Chromium: first against a fixture
//! API whose states the test controls (colours, selector, details, live
//! updates, 200 nodes; the time control, "as of" a moment and back, and a
//! cell's history strip; the summary line, the problems list and its
//! bounded explanations, a node's panel; cells sized to the window at
//! several viewport sizes), then against a real fleet (states equal the
//! API's, a cell's history, the matrix as of a moment, a firewall drop shown
//! in the summary and the problems with the API's cause, a node's facts and
//! events equal to the API's, a killed agent's row turns disconnected and
//! unknown without a reload).
//!
//! Screenshots of the main views go to `REACHMAP_WEB_SCREENSHOT_DIR`, or
//! `target/web-screenshots/`; the test prints where.
//!
//! Chromium always runs inside a network namespace this test made, so it can
//! reach nothing but the page it tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use reachmap_fleet_tests::browser::{Browser, chromium_available};
use reachmap_fleet_tests::{
    Fleet, assert_eventually, ensure, firewall_rule_count, in_ci, require_root,
};
use serde_json::{Value, json};

/// Where the harness's collector serves HTTP, as seen from the hub namespace.
const COLLECTOR_PAGE: &str = "https://198.18.0.1:7441/";

/// Skips (or, under CI, fails) when there is no root or no Chromium.
fn can_run() -> bool {
    if !require_root() {
        return false;
    }
    if chromium_available() {
        return true;
    }
    if in_ci() {
        panic!("chromium is not installed; deploy/common.sh ensure_packages installs it");
    }
    eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
    false
}

/// Runs `f` on a thread of its own in a fresh network namespace with `lo`
/// up; processes it starts inherit the namespace, which goes when they do.
fn in_own_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let out = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("ip link set lo up");
        assert!(out.status.success(), "ip link set lo up: {out:?}");
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ------------------------------------------------------------------ fixture

#[derive(Clone, Default)]
struct Api {
    matrix: Arc<Mutex<Value>>,
    /// What `/api/v1/matrix?at=` answers for any moment the fixture holds.
    matrix_at: Arc<Mutex<Value>>,
    nodes: Arc<Mutex<Value>>,
    /// What `?view=zones` answers, and `?src_zone=&dst_zone=` by "src dst".
    zone_matrix: Arc<Mutex<Value>>,
    pair_matrix: Arc<Mutex<HashMap<String, Value>>>,
    /// What live `/api/v1/why` answers as the top cause, by
    /// "src dst port"; pairs not in it are reachable.
    causes: Arc<Mutex<HashMap<String, Value>>>,
    /// Every API request, `path?query`, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn set_matrix(&self, v: Value) {
        *self.matrix.lock().expect("fixture lock") = v;
    }
    fn set_matrix_at(&self, v: Value) {
        *self.matrix_at.lock().expect("fixture lock") = v;
    }
    fn set_nodes(&self, v: Value) {
        *self.nodes.lock().expect("fixture lock") = v;
    }
    fn set_cause(&self, src: &str, dst: &str, port: u16, code: &str, node: &str) {
        let cause = json!({
            "code": code, "node": node,
            "detail": format!("{code} between {src} and {dst}"),
            "evidence": [], "fix": format!("fix {code}"),
        });
        self.causes
            .lock()
            .expect("fixture lock")
            .insert(format!("{src} {dst} {port}"), cause);
    }
    fn record(&self, path: &str, query: Option<String>) {
        let line = format!("{path}?{}", query.unwrap_or_default());
        self.requests.lock().expect("fixture lock").push(line);
    }
    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("fixture lock").clone()
    }
    /// The requests to `path` so far, as their decoded query parameters.
    fn queries(&self, path: &str) -> Vec<HashMap<String, String>> {
        self.requests()
            .iter()
            .filter_map(|r| r.strip_prefix(path)?.strip_prefix('?').map(decode_query))
            .collect()
    }
}

/// `a=1&b=x%3Ay` → {a: 1, b: x:y}.
fn decode_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fixture store holds the last 30 days.
const RETAINED: Duration = Duration::from_secs(30 * 86400);

/// An API error as the collector answers it: a status and `{"error": ...}`.
type ApiError = (StatusCode, String);

fn api_error((code, message): ApiError) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

/// A moment the page sent, checked as the collector does: 400 when it is
/// not a time or in the future, 410 when before what the store keeps.
fn check_at(at: &str) -> Result<(), ApiError> {
    let t = humantime::parse_rfc3339(at).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("at: {at:?} is not a time: {e}"),
        )
    })?;
    let now = SystemTime::now();
    if t > now + Duration::from_secs(1) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("at: {at} is in the future"),
        ));
    }
    let oldest = now - RETAINED;
    if t < oldest {
        return Err((
            StatusCode::GONE,
            format!(
                "{at} is before what the store keeps (retention): it holds from {} on",
                humantime::format_rfc3339_seconds(oldest)
            ),
        ));
    }
    Ok(())
}

async fn fixture_matrix_route(
    State(a): State<Api>,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    a.record("/api/v1/matrix", raw);
    if q.get("view").is_some_and(|v| v == "zones") {
        return axum::Json(a.zone_matrix.lock().expect("fixture lock").clone()).into_response();
    }
    if let (Some(s), Some(d)) = (q.get("src_zone"), q.get("dst_zone")) {
        let pairs = a.pair_matrix.lock().expect("fixture lock");
        let empty = json!({"nodes": [], "cells": []});
        return axum::Json(pairs.get(&format!("{s} {d}")).cloned().unwrap_or(empty))
            .into_response();
    }
    match q.get("at") {
        None => axum::Json(a.matrix.lock().expect("fixture lock").clone()).into_response(),
        Some(at) => match check_at(at) {
            Ok(()) => axum::Json(a.matrix_at.lock().expect("fixture lock").clone()).into_response(),
            Err(e) => api_error(e),
        },
    }
}

/// Reachable now; "as of" any moment, unreachable through a firewall drop.
async fn fixture_why_route(
    State(a): State<Api>,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    a.record("/api/v1/why", raw);
    let (src, dst) = (q.get("src").cloned(), q.get("dst").cloned());
    let key = format!(
        "{} {} {}",
        src.as_deref().unwrap_or_default(),
        dst.as_deref().unwrap_or_default(),
        q.get("port").map_or("7442", String::as_str)
    );
    let cause = a.causes.lock().expect("fixture lock").get(&key).cloned();
    match q.get("at") {
        None => match cause {
            None => axum::Json(json!({
                "src": src, "dst": dst, "verdict": "reachable", "at": null,
                "causes": [], "checked": ["listeners", "firewall"], "changes": [],
            }))
            .into_response(),
            Some(c) => axum::Json(json!({
                "src": src, "dst": dst, "verdict": "unreachable", "at": null,
                "causes": [c], "checked": ["listeners", "firewall"], "changes": [],
            }))
            .into_response(),
        },
        Some(at) => match check_at(at) {
            Ok(()) => axum::Json(json!({
                "src": src, "dst": dst, "verdict": "unreachable", "at": at,
                "causes": [{
                    "code": "FIREWALL_INBOUND", "node": dst,
                    "detail": "rule 12 of inet filter input drops tcp/7442",
                    "evidence": [], "fix": "allow tcp/7442 from the source",
                }],
                "checked": ["firewall"], "changes": [],
            }))
            .into_response(),
            Err(e) => api_error(e),
        },
    }
}

/// The fixture's 24 hours of every pair, oldest first: (state, seconds,
/// cause code). They add up to exactly a day; the last goes on.
const HISTORY: [(&str, u64, Option<&str>); 10] = [
    ("unknown", 14_400, None),
    ("ok", 28_800, None),
    ("failing", 130, Some("FIREWALL_INBOUND")),
    ("ok", 18_000, None),
    ("degraded", 7_200, Some("INTERMITTENT_LOSS")),
    ("ok", 10_000, None),
    ("failing", 60, None),
    ("ok", 7_000, None),
    ("failing", 90, Some("NOT_LISTENING")),
    ("ok", 720, None),
];

fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339_secs(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The interval starts of [`HISTORY`] when the fixture answers at `now`.
fn history_starts(now: u64) -> Vec<u64> {
    let mut t = now - 86_400;
    HISTORY
        .iter()
        .map(|(_, secs, _)| {
            let start = t;
            t += secs;
            start
        })
        .collect()
}

/// `/api/v1/history` for any pair, shaped as `HistoryView`.
async fn fixture_history_route(
    State(a): State<Api>,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    a.record("/api/v1/history", raw);
    let now = whole_seconds(SystemTime::now());
    let (src, dst) = (
        q.get("src").cloned().unwrap_or_default(),
        q.get("dst").cloned().unwrap_or_default(),
    );
    let starts = history_starts(now);
    let intervals: Vec<Value> = HISTORY
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(n, ((state, secs, code), start))| {
            let last = n + 1 == HISTORY.len();
            let bad = *state == "failing" || *state == "degraded";
            let cause = code.map(|c| {
                json!({
                    "code": c, "node": if c == "INTERMITTENT_LOSS" { &src } else { &dst },
                    "detail": format!("{c} detail for {src} → {dst}"),
                    "evidence": [], "fix": format!("fix {c}"),
                })
            });
            json!({
                "start": rfc3339_secs(*start),
                "end": if last { Value::Null } else { json!(rfc3339_secs(start + secs)) },
                "seconds": *secs as f64,
                "state": state,
                "failure": if bad { json!("timeout") } else { Value::Null },
                "loss": if *state == "failing" { 1.0 } else if bad { 0.12 } else { 0.0 },
                "cause": cause,
                "changes": if code == &Some("FIREWALL_INBOUND") {
                    json!([{"node": dst, "time": rfc3339_secs(start - 5), "kind": "ruleset_changed",
                            "detail": "nft by pid 4242 (nft)"}])
                } else { json!([]) },
            })
        })
        .collect();
    let last_outage_end = starts[8] + HISTORY[8].1;
    axum::Json(json!({
        "src": src, "dst": dst, "port": 7442, "kind": "tcp",
        "intervals": intervals,
        "outages": 3,
        "longest_outage_seconds": 130.0,
        "last_outage_end": rfc3339_secs(last_outage_end),
        "retained_since": rfc3339_secs(now - RETAINED.as_secs()),
    }))
    .into_response()
}

/// A node's number in the fixture: its last letter or digits (node-b → 1,
/// n007 → 7), which its facts are made from so each node's differ.
fn node_number(name: &str) -> u64 {
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    match digits.parse() {
        Ok(n) => n,
        Err(_) => name
            .bytes()
            .last()
            .map_or(0, |b| u64::from(b.saturating_sub(b'a'))),
    }
}

/// The firewall rules of `name` in the fixture: 3 more than its number.
fn fixture_rules(name: &str) -> usize {
    node_number(name) as usize + 3
}

/// `/api/v1/nodes/NAME`, shaped as `NodeDetailView`: an address and facts
/// made from the node's number; 404 for a name the fixture lacks.
async fn fixture_node_route(
    State(a): State<Api>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    a.record(&format!("/api/v1/nodes/{name}"), None);
    let nodes = a.nodes.lock().expect("fixture lock").clone();
    let Some(summary) = nodes
        .as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == name.as_str()))
        .cloned()
    else {
        return api_error((StatusCode::NOT_FOUND, format!("no node {name:?}")));
    };
    let i = node_number(&name);
    let address = format!("198.18.0.{}", 11 + i);
    let mut node = summary;
    node["addresses"] = json!([address]);
    node["version"] = json!("0.1.0");
    node["last_seen"] = json!(rfc3339_secs(whole_seconds(SystemTime::now())));
    node["blind"] = json!(["kmsg"]);
    let rules = fixture_rules(&name);
    // Two tables: the first with `rules - 1` rules in its input chain.
    let rule = |n: usize| json!({"handle": n, "text": format!("rule {n}")});
    let input: Vec<Value> = (0..rules - 1).map(rule).collect();
    axum::Json(json!({
        "node": node,
        "host": {"hostname": name, "kernel": "6.1.0", "os": "Debian 12", "uptime_seconds": 3600 + i},
        "interfaces": [
            {"name": "lo", "index": 1, "state": "unknown", "admin_up": true, "mac": "", "mtu": 65536,
             "kind": "", "addresses": ["127.0.0.1/8"]},
            {"name": "eth0", "index": 2, "state": "up", "admin_up": true, "mac": "02:00:00:00:00:01",
             "mtu": 1500, "kind": "veth", "addresses": [format!("{address}/24")]},
        ],
        "routes": [],
        "listeners": [
            {"protocol": "tcp", "address": "0.0.0.0", "port": 7442, "scope": "any", "v6only": null,
             "accept_queue": 0, "accept_queue_limit": 4096, "established": 2,
             "processes": [{"pid": 100 + i, "name": "reachmap-agent", "unit": "reachmap-agent.service", "cgroup": null}],
             "interface": null, "uid": 0, "inode": 1},
            {"protocol": "tcp", "address": "127.0.0.1", "port": 5432, "scope": "loopback", "v6only": null,
             "accept_queue": 0, "accept_queue_limit": 244, "established": 0,
             "processes": [{"pid": 200 + i, "name": "postgres", "unit": null, "cgroup": null}],
             "interface": null, "uid": 0, "inode": 2},
        ],
        "sockets": {"tcp_total": 12, "tcp_established": 4, "tcp_time_wait": 1, "udp_total": 2},
        "firewall": {
            "backend": "nftables", "generation": 57 + i, "hash": 1, "error": null,
            "tables": [
                {"family": "inet", "name": "filter", "backend": "nftables", "sets": [],
                 "chains": [{"name": "input", "hook": "input", "chain_type": "filter", "priority": 0,
                             "policy": "drop", "rules": input}]},
                {"family": "ip", "name": "nat", "backend": "nftables", "sets": [],
                 "chains": [{"name": "post", "hook": "postrouting", "chain_type": "nat", "priority": 100,
                             "policy": "accept", "rules": [rule(99)]}]},
            ],
        },
        "resources": {
            "sampled_unix_nanos": 0, "load1": 0.5, "load5": 0.25, "load15": 0.125, "cpus": 2,
            "cpu_busy_pct": 12.0, "cpu_steal_pct": 0.0, "mem_total_bytes": 4_294_967_296_u64,
            "mem_available_bytes": 1_073_741_824_u64, "swap_total_bytes": 0, "swap_free_bytes": 0,
            "pressure": null, "conntrack_count": 120, "conntrack_max": 65536, "listen_overflows": 0,
            "listen_drops": 0, "disk_root_total_bytes": null, "disk_root_used_bytes": null,
            "memory_trend": "steady", "memory_growth_mib_per_min": 0.0,
        },
        "events": [],
        "names": [],
        "sources": [
            {"source": "rtnl", "state": "ok", "since": null, "last_error": null, "last_error_at": null,
             "errors_total": 0, "restarts_total": 0},
            {"source": "sockets", "state": "ok", "since": null, "last_error": null, "last_error_at": null,
             "errors_total": 0, "restarts_total": 0},
            {"source": "firewall", "state": "degraded", "since": null,
             "last_error": "nft: netlink busy", "last_error_at": null, "errors_total": 2, "restarts_total": 1},
            {"source": "kmsg", "state": "down", "since": null,
             "last_error": format!("/dev/kmsg of {name}: permission denied"), "last_error_at": null,
             "errors_total": 5, "restarts_total": 5},
        ],
    }))
    .into_response()
}

/// The fixture's events of `node`: three, oldest first, as the store
/// answers them.
fn fixture_events(node: &str) -> Vec<Value> {
    let now = whole_seconds(SystemTime::now());
    [
        (
            600,
            "listener_appeared",
            format!("tcp 0.0.0.0:7442 on {node}"),
        ),
        (
            300,
            "firewall_changed",
            format!("ruleset of {node} changed by nft"),
        ),
        (60, "oom_kill", format!("OOM killer killed web on {node}")),
    ]
    .into_iter()
    .enumerate()
    .map(|(id, (ago, kind, detail))| {
        json!({"node": node, "instance": "7", "id": id, "time": rfc3339_secs(now - ago),
               "received": rfc3339_secs(now - ago), "kind": kind, "detail": detail})
    })
    .collect()
}

/// `/api/v1/events`, shaped as `EventsView`.
async fn fixture_events_route(
    State(a): State<Api>,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    a.record("/api/v1/events", raw);
    let events = q.get("node").map(|n| fixture_events(n)).unwrap_or_default();
    axum::Json(json!({"events": events, "truncated": false, "retained_since": null}))
        .into_response()
}

/// Serves the real page plus the fixture API on 127.0.0.1 of the calling
/// thread's namespace, on a runtime that lives as long as the returned value.
/// The fixture fleet of four nodes (node-d disconnected): all ok now, and
/// node-a → node-b failing in the past.
fn four_node_api() -> Api {
    let api = Api::default();
    api.set_matrix(fixture_matrix("ok"));
    api.set_matrix_at(fixture_matrix("failing"));
    let names: Vec<String> = NODES4.iter().map(|s| s.to_string()).collect();
    api.set_nodes(fixture_nodes(&names, "node-d"));
    api
}

/// Loads the page served at `addr` and waits for its first poll.
fn load_page(b: &mut Browser, addr: SocketAddr) {
    b.navigate(&format!("http://{addr}/"))
        .expect("load the page");
    wait_polls(b, 1, "first load");
}

fn serve_fixture(api: Api) -> (tokio::runtime::Runtime, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fixture server");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let router = reachmap_collector::web::routes::<Api>()
        .route("/api/v1/matrix", get(fixture_matrix_route))
        .route("/api/v1/why", get(fixture_why_route))
        .route("/api/v1/history", get(fixture_history_route))
        .route("/api/v1/nodes/{name}", get(fixture_node_route))
        .route("/api/v1/events", get(fixture_events_route))
        .route(
            "/api/v1/findings",
            get(|State(a): State<Api>| async move {
                a.record("/api/v1/findings", None);
                axum::Json(fixture_findings())
            }),
        )
        .route(
            "/api/v1/nodes",
            get(|State(a): State<Api>| async move {
                a.record("/api/v1/nodes", None);
                axum::Json(a.nodes.lock().expect("fixture lock").clone())
            }),
        )
        .with_state(api);
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        axum::serve(listener, router).await
    });
    (rt, addr)
}

/// One finding: node-a and node-b cut from node-c and node-d.
fn fixture_findings() -> Value {
    json!({
        "cells": 12, "bad_cells": 8, "uncovered_cells": 0,
        "findings": [{
            "kind": "partition", "severity": 100,
            "title": "the fleet is split: node-a, node-b (2 nodes) and node-c, node-d (2 nodes) cannot reach each other",
            "detail": "8 cells between the groups fail and none reach",
            "groups": [
                {"name": "node-a, node-b", "nodes": ["node-a", "node-b"]},
                {"name": "node-c, node-d", "nodes": ["node-c", "node-d"]},
            ],
            "cells": [{"src": "node-a", "dst": "node-c", "port": 7442}],
            "cell_count": 8, "evidence": [],
            "fix": "something between the groups drops their traffic",
            "since": null, "code": "NETWORK_PATH", "node": "",
        }],
    })
}

#[allow(clippy::too_many_arguments)]
fn cell(
    src: &str,
    dst: &str,
    port: u16,
    kind: &str,
    service: &str,
    state: &str,
    loss: f64,
    failure: Option<&str>,
) -> Value {
    let ok = state == "ok" || state == "degraded";
    json!({
        "src": src, "dst": dst, "port": port, "kind": kind, "service": service,
        "state": state, "loss": loss,
        "rtt_ms": if ok { json!(0.42) } else { Value::Null },
        "rtt_p99_ms": if ok { json!(1.5) } else { Value::Null },
        "failure": failure, "sent": 10,
        "address": format!("198.18.0.{}", 11 + dst.as_bytes().last().map_or(0, |b| b.saturating_sub(b'a'))),
        "updated": "2025-01-01T00:00:00Z",
    })
}

fn probe(src: &str, dst: &str, state: &str, loss: f64, failure: Option<&str>) -> Value {
    cell(src, dst, 7442, "tcp", "", state, loss, failure)
}

const NODES4: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];

fn fixture_matrix(a_to_b: &str) -> Value {
    let failure = (a_to_b == "failing").then_some("timeout");
    json!({
        "nodes": NODES4,
        "cells": [
            probe("node-a", "node-b", a_to_b, if failure.is_some() { 1.0 } else { 0.0 }, failure),
            probe("node-a", "node-c", "degraded", 0.3, Some("timeout")),
            probe("node-a", "node-d", "failing", 1.0, Some("timeout")),
            probe("node-b", "node-a", "ok", 0.0, None),
            probe("node-b", "node-c", "failing", 1.0, Some("refused")),
            // node-b → node-d: no cell at all, shown as unknown.
            probe("node-c", "node-a", "unknown", 0.0, None),
            probe("node-c", "node-b", "ok", 0.0, None),
            probe("node-c", "node-d", "ok", 0.0, None),
            probe("node-d", "node-a", "unknown", 0.0, None),
            cell("node-a", "node-b", 0, "icmp", "", "failing", 1.0, Some("timeout")),
            cell("node-a", "node-c", 0, "icmp", "", "ok", 0.0, None),
            cell("node-b", "node-c", 8080, "tcp", "web", "ok", 0.0, None),
        ]
    })
}

fn fixture_nodes(names: &[String], disconnected: &str) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "connected": n != disconnected, "addresses": []}))
            .collect(),
    )
}

// --------------------------------------------------------- page inspection

/// Every table cell: src, dst, state, port, kind, whether it is the
/// diagonal, its text and title.
const GRID_JS: &str = "[...document.querySelectorAll('#matrix td')].map(td => ({
    src: td.dataset.src, dst: td.dataset.dst, state: td.dataset.state ?? null,
    port: td.dataset.port ?? null, kind: td.dataset.kind ?? null,
    self: td.classList.contains('self'), text: td.textContent, title: td.title,
    bg: getComputedStyle(td).backgroundColor }))";

/// The test's own GET of /api/v1/matrix, from the page's origin.
const FETCH_MATRIX_JS: &str = "fetch('api/v1/matrix', {cache: 'no-store'})
    .then(async r => ({status: r.status, body: r.ok ? await r.json() : null}))";

fn grid(b: &mut Browser) -> Vec<Value> {
    match b.eval(GRID_JS).expect("read the grid") {
        Value::Array(a) => a,
        other => panic!("grid is not an array: {other}"),
    }
}

fn find<'a>(grid: &'a [Value], src: &str, dst: &str) -> &'a Value {
    grid.iter()
        .find(|c| c["src"] == src && c["dst"] == dst)
        .unwrap_or_else(|| panic!("no cell {src} → {dst} in {grid:#?}"))
}

fn polls(b: &mut Browser) -> u64 {
    b.eval("Number(document.body.dataset.polls || 0)")
        .expect("read polls")
        .as_u64()
        .unwrap_or(0)
}

/// Waits for `n` more completed polls of the page.
fn wait_polls(b: &mut Browser, n: u64, what: &str) {
    let start = polls(b);
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let p = polls(b);
            ensure(p >= start + n, p)
        },
        "{what}: the page polls the API"
    );
}

fn text(b: &mut Browser, id: &str) -> String {
    b.eval(&format!("document.getElementById('{id}').textContent"))
        .expect("read text")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A `data-` attribute of the page's body (`polls`, `loads`, `mode`, `at`).
fn body_data(b: &mut Browser, key: &str) -> String {
    b.eval(&format!("document.body.dataset.{key} ?? ''"))
        .expect("read the body's data")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn hidden(b: &mut Browser, id: &str) -> bool {
    b.eval(&format!("document.getElementById('{id}').hidden"))
        .expect("read hidden")
        == true
}

/// Moves the mouse over the centre of the element (no click).
fn hover(b: &mut Browser, selector: &str) {
    let sel = json!(selector);
    let centre = b
        .eval(&format!(
            "(() => {{ const r = document.querySelector({sel}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ))
        .expect("find the element");
    let (Some(x), Some(y)) = (centre[0].as_f64(), centre[1].as_f64()) else {
        panic!("no element {selector}: {centre}");
    };
    b.call(
        "Input.dispatchMouseEvent",
        json!({"type": "mouseMoved", "x": x, "y": y}),
    )
    .expect("move the mouse");
}

/// The history strip as drawn: its inner width and every segment's state,
/// seconds, index, cause, offset and width in pixels; the "as of" marker's
/// offset when there is one.
const STRIP_JS: &str = "(() => {
    const strip = document.getElementById('history-strip');
    const box = strip.getBoundingClientRect();
    const x0 = box.left + strip.clientLeft;
    const segs = [...strip.querySelectorAll('.seg')].map(s => { const r = s.getBoundingClientRect();
      return { state: s.dataset.state, seconds: Number(s.dataset.seconds), index: Number(s.dataset.index),
               cause: s.dataset.cause ?? null, left: r.left - x0, width: r.width,
               label: s.getAttribute('aria-label') }; });
    const m = strip.querySelector('.strip-at');
    return { width: strip.clientWidth, segs,
             marker: m ? m.getBoundingClientRect().left + 1 - x0 : null }; })()";

/// Waits until the history strip has been drawn (again, when `after` is the
/// history request count it must pass).
fn wait_strip(b: &mut Browser, api: &Api, after: usize, what: &str) -> Value {
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let n = api.queries("/api/v1/history").len();
            let loaded = b.eval("document.getElementById('history').dataset.loaded")?;
            ensure(n > after && loaded == "true", (n, loaded))
        },
        "{what}: the history strip is drawn"
    );
    // The answer may still be on its way to the page for a moment.
    std::thread::sleep(Duration::from_millis(300));
    b.eval(STRIP_JS).expect("read the strip")
}

/// The strip shows [`HISTORY`]: one segment per interval with its state, at
/// its place in the day and as wide as it lasted (bad ones at least 3 px).
fn check_strip(strip: &Value) {
    let width = strip["width"].as_f64().unwrap_or_default();
    assert!(width > 150.0, "the strip is {width} px wide");
    let segs = strip["segs"].as_array().cloned().unwrap_or_default();
    let states: Vec<&str> = segs.iter().filter_map(|s| s["state"].as_str()).collect();
    let want: Vec<&str> = HISTORY.iter().map(|h| h.0).collect();
    assert_eq!(states, want, "{strip:#}");
    let mut offset = 0.0;
    for (seg, (state, secs, code)) in segs.iter().zip(HISTORY) {
        let px = secs as f64 / 86_400.0 * width;
        let (left, w) = (
            seg["left"].as_f64().unwrap_or(-1.0),
            seg["width"].as_f64().unwrap_or(-1.0),
        );
        assert_eq!(seg["seconds"].as_f64(), Some(secs as f64), "{seg}");
        assert_eq!(seg["cause"].as_str(), code, "{seg}");
        assert!(
            (left - offset).abs() <= 1.0,
            "{state} starts at {left}, not {offset}: {seg}"
        );
        let bad = state == "failing" || state == "degraded";
        if px >= 3.0 || !bad {
            assert!(
                (w - px).abs() <= 1.0,
                "{state} {secs}s is {w} px, not {px}: {seg}"
            );
        } else {
            assert!(
                (2.99..=3.5).contains(&w),
                "a short {state} is {w} px, not 3: {seg}"
            );
        }
        let label = seg["label"].as_str().unwrap_or_default();
        assert!(label.starts_with(state), "{label}");
        if let Some(c) = code {
            assert!(label.contains(c), "{label}");
        }
        offset += px;
    }
    assert!((offset - width).abs() <= 1.0, "{offset} of {width}");
}

/// `t` as a datetime-local value and as the banner shows it, in Asia/Kolkata
/// (UTC+05:30, no daylight saving), the zone the browser test runs in.
fn kolkata(unix: u64) -> (String, String) {
    let text = rfc3339_secs(unix + 19_800);
    let value = text.trim_end_matches('Z').to_string();
    let shown = value.replacen('T', " ", 1);
    (value, shown)
}

fn live_matrix_requests(api: &Api) -> usize {
    api.queries("/api/v1/matrix")
        .iter()
        .filter(|q| !q.contains_key("at"))
        .count()
}

fn last_at(api: &Api, path: &str) -> Option<String> {
    api.queries(path).last().and_then(|q| q.get("at").cloned())
}

/// Submits the time control's picker with `value` and waits for the load.
fn submit_moment(b: &mut Browser, value: &str) {
    let loads = body_data(b, "loads").parse::<u64>().unwrap_or(0);
    b.eval(&format!(
        "document.getElementById('at-input').value = {}; true",
        json!(value)
    ))
    .expect("set the picker");
    b.click("#at-go").expect("click Show");
    wait_loads(b, loads + 1, value);
}

fn wait_loads(b: &mut Browser, n: u64, what: &str) {
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let l = body_data(b, "loads").parse::<u64>().unwrap_or(0);
            ensure(l >= n, l)
        },
        "{what}: the page loads the matrix of the moment"
    );
}

/// Where the screenshots go: `REACHMAP_WEB_SCREENSHOT_DIR`, else
/// `target/web-screenshots/` of the workspace (or of `CARGO_TARGET_DIR`).
fn screenshot_dir() -> std::path::PathBuf {
    let dir = match std::env::var_os("REACHMAP_WEB_SCREENSHOT_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("web-screenshots"),
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// A PNG of the viewport as `name` in [`screenshot_dir`], its path printed.
fn save_screenshot(b: &mut Browser, name: &str) {
    let path = screenshot_dir().join(name);
    b.screenshot(&path).expect("screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The summary line: its figures (from its data attributes) and its text.
const SUMMARY_JS: &str =
    "(() => { const s = document.getElementById('summary'); const d = s.dataset;
    return { nodes: d.nodes ?? null, connected: d.connected ?? null, failing: d.failing ?? null,
             degraded: d.degraded ?? null, cells: d.cells ?? null, explained: d.explained ?? null,
             explainable: d.explainable ?? null, causes: JSON.parse(d.causes || '{}'),
             nodes_text: document.getElementById('sum-nodes').textContent,
             cells_text: document.getElementById('sum-cells').textContent,
             causes_text: document.getElementById('sum-causes').textContent }; })()";

/// The problems list as shown: each entry's cell, view, state, cause code,
/// cause state and one-line text.
const PROBLEMS_JS: &str =
    "[...document.querySelectorAll('#problems-list button.problem')].map(b => ({
    src: b.dataset.src, dst: b.dataset.dst, view: b.dataset.view, state: b.dataset.state,
    code: b.dataset.code, cause: b.dataset.cause,
    text: b.querySelector('.p-text').textContent, current: b.getAttribute('aria-current') }))";

/// The node panel as shown.
const NODE_JS: &str = "(() => { const p = document.getElementById('node'); const $ = (id) => document.getElementById(id);
    return { hidden: p.hidden, node: p.dataset.node ?? null, loaded: p.dataset.loaded ?? null,
             loads: Number(p.dataset.loads || 0), connected: p.dataset.connected ?? null,
             title: $('node-title').textContent, state: $('n-state').textContent,
             host: $('n-host').textContent,
             addresses: $('n-addresses').dataset.addresses ?? null, addresses_text: $('n-addresses').textContent,
             firewall: $('n-firewall').textContent, backend: $('n-firewall').dataset.backend ?? null,
             rules: $('n-firewall').dataset.rules ?? null, resources: $('n-resources').textContent,
             listeners: [...$('n-listeners').tBodies[0].rows].map(r => ({ port: Number(r.dataset.port),
                 scope: r.dataset.scope, text: r.textContent })),
             listener_count: Number($('n-listeners').dataset.count || 0),
             sources: [...$('n-sources').querySelectorAll('li[data-source]')].map(l => ({
                 source: l.dataset.source, state: l.dataset.state, text: l.textContent })),
             events: [...$('n-events').children].map(l => ({ kind: l.dataset.kind, text: l.textContent })),
             asof: $('n-asof').hidden ? null : $('n-asof').textContent,
             error: $('n-error').hidden ? null : $('n-error').textContent }; })()";

/// The heat map's size against the room it has.
const LAYOUT_JS: &str = "(() => { const w = document.getElementById('grid-wrap'); const t = document.getElementById('matrix');
    const r = w.getBoundingClientRect(); const tr = t.getBoundingClientRect();
    const td = t.querySelector('td:not(.self)'); const c = td ? td.getBoundingClientRect() : {width: 0, height: 0};
    return { cell: Number(t.dataset.cell || 0), td_w: c.width, td_h: c.height,
             wrap_w: r.width, wrap_h: r.height, wrap_bottom: r.bottom, max_h: parseFloat(w.style.maxHeight),
             client_w: w.clientWidth, client_h: w.clientHeight, scroll_w: w.scrollWidth, scroll_h: w.scrollHeight,
             table_w: tr.width, table_h: tr.height, doc_w: document.documentElement.scrollWidth,
             doc_h: document.documentElement.scrollHeight, win_w: innerWidth, win_h: innerHeight,
             min: window.reachmap.CELL_MIN, max: window.reachmap.CELL_MAX,
             room: innerHeight - r.top - parseFloat(getComputedStyle(document.querySelector('main')).paddingBottom) }; })()";

/// The viewport as `width`×`height` CSS pixels.
fn set_viewport(b: &mut Browser, width: u32, height: u32) {
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
    )
    .expect("set the viewport");
}

/// Why the layout is not "`n` nodes' cells as large as the room allows"
/// (the map's width, and the height down to the window's bottom):
/// no horizontal scrolling of the map or the page; above the minimum the
/// whole map in view (no vertical scrolling either) and one pixel more per
/// cell would not fit (or the cells are at the maximum); at the minimum
/// the map scrolls inside its own box.
fn misfit(l: &Value, n: f64) -> Option<String> {
    let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
    let (cell, min, max) = (f("cell"), f("min"), f("max"));
    let mut why = Vec::new();
    if !(min..=max).contains(&cell) {
        why.push(format!("cell {cell} outside {min}..={max}"));
    }
    if (f("td_w") - cell).abs() > 0.6 || (f("td_h") - cell).abs() > 0.6 {
        why.push(format!(
            "a cell is drawn {}×{}, not {cell}",
            f("td_w"),
            f("td_h")
        ));
    }
    if f("doc_w") > f("win_w") {
        why.push("the page scrolls sideways".to_string());
    }
    if cell > min {
        if f("scroll_w") > f("client_w") || f("scroll_h") > f("client_h") {
            why.push("the map scrolls although its cells are above the minimum".to_string());
        }
        if f("wrap_bottom") > f("win_h") + 0.5 {
            why.push("the map goes below the window".to_string());
        }
        // The room down to the window's bottom (less the page's padding),
        // with one pixel of slack for rounding.
        let grows = f("table_w") + n <= f("wrap_w") - 1.0 && f("table_h") + n <= f("room") - 1.0;
        if cell < max && grows {
            why.push("a pixel more per cell would still fit".to_string());
        }
    }
    (!why.is_empty()).then(|| format!("{}: {l}", why.join("; ")))
}

/// Waits until the map of `n` nodes fits the viewport and returns its
/// layout.
fn wait_fit(b: &mut Browser, n: usize, what: &str) -> Value {
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let l = b.eval(LAYOUT_JS)?;
            match misfit(&l, n as f64) {
                None => Ok::<_, String>(l),
                Some(e) => Err(e),
            }
        },
        "{what}: the cells fit the window"
    )
}

/// Cells of `state` in a matrix answer.
fn count_state(matrix: &Value, state: &str) -> usize {
    matrix["cells"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["state"] == state).count())
}

fn problems(b: &mut Browser) -> Vec<Value> {
    match b.eval(PROBLEMS_JS).expect("read the problems") {
        Value::Array(a) => a,
        other => panic!("problems are not an array: {other}"),
    }
}

/// Waits until the node panel shows `name`, loaded at least `loads` times.
fn wait_node(b: &mut Browser, name: &str, loads: u64) -> Value {
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let p = b.eval(NODE_JS)?;
            let ok = p["hidden"] == false
                && p["node"] == name
                && p["loaded"] == "true"
                && p["loads"].as_u64().unwrap_or(0) >= loads;
            ensure(ok, &p)?;
            Ok::<_, String>(p)
        },
        "the node panel shows {name}"
    )
}

// -------------------------------------------------------------------- tests

#[test]
fn page_shows_fixture_states_details_and_live_updates() {
    if !can_run() {
        return;
    }
    in_own_netns(|| {
        let api = Api::default();
        api.set_matrix(fixture_matrix("ok"));
        let names: Vec<String> = NODES4.iter().map(|s| s.to_string()).collect();
        api.set_nodes(fixture_nodes(&names, "node-d"));
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        load_page(&mut b, addr);
        b.eval("window.__same_document = true").expect("mark");

        // Grid: 4×4 with a blank diagonal; the default view is the probe port.
        let g = grid(&mut b);
        assert_eq!(g.len(), 16, "{g:#?}");
        for c in &g {
            if c["src"] == c["dst"] {
                assert!(
                    c["self"] == true && c["state"].is_null() && c["text"] == "",
                    "{c}"
                );
            } else {
                assert_eq!(
                    (&c["port"], &c["kind"]),
                    (&json!("7442"), &json!("tcp")),
                    "{c}"
                );
            }
        }
        let expect = [
            ("node-a", "node-b", "ok"),
            ("node-a", "node-c", "degraded"),
            ("node-a", "node-d", "failing"),
            ("node-b", "node-c", "failing"),
            ("node-b", "node-d", "unknown"),
            ("node-c", "node-a", "unknown"),
            ("node-d", "node-c", "unknown"),
        ];
        for (src, dst, state) in expect {
            assert_eq!(find(&g, src, dst)["state"], state, "{src} → {dst}");
        }
        // Colours by state, and a title that says it without colour.
        let colour = |s, d| {
            find(&g, s, d)["bg"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(colour("node-a", "node-b"), "rgb(46, 158, 79)");
        assert_eq!(colour("node-a", "node-c"), "rgb(224, 161, 0)");
        assert_eq!(colour("node-a", "node-d"), "rgb(211, 59, 47)");
        assert_eq!(colour("node-b", "node-d"), "rgb(154, 154, 154)");
        let title = find(&g, "node-a", "node-c")["title"]
            .as_str()
            .unwrap_or_default();
        assert!(
            title.contains("degraded") && title.contains("loss 30.0%") && title.contains("timeout"),
            "{title}"
        );

        // Selector built from the cells present, probe first.
        let options = b
            .eval("[...document.querySelectorAll('#view option')].map(o => o.text)")
            .expect("options");
        assert_eq!(options, json!(["probe tcp/7442", "icmp", "tcp/8080 web"]));
        assert_eq!(
            b.eval("document.getElementById('view').value")
                .expect("value"),
            "tcp/7442/"
        );

        // Disconnected nodes are marked in their row header.
        let heads = b
            .eval("Object.fromEntries([...document.querySelectorAll('#matrix tbody th')].map(th => [th.dataset.node, th.dataset.connected]))")
            .expect("row heads");
        assert_eq!(
            heads,
            json!({"node-a": "true", "node-b": "true", "node-c": "true", "node-d": "false"})
        );
        assert!(text(&mut b, "legend").contains("degraded"));
        assert_ne!(text(&mut b, "updated"), "never");

        // A real click opens the details.
        assert_eq!(
            b.eval("document.getElementById('details').hidden")
                .expect("hidden"),
            true
        );
        b.click("td[data-src='node-a'][data-dst='node-c']")
            .expect("click a cell");
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let open = b.eval("!document.getElementById('details').hidden")?;
                ensure(open == true, open)
            },
            "the details panel opens on a click"
        );
        save_screenshot(&mut b, "web-details.png");
        assert_eq!(text(&mut b, "details-title"), "node-a → node-c");
        assert_eq!(text(&mut b, "d-target"), "198.18.0.13:7442");
        assert_eq!(text(&mut b, "d-state"), "degraded");
        assert_eq!(text(&mut b, "d-loss"), "30.0%");
        assert_eq!(text(&mut b, "d-rtt"), "0.42 ms / 1.50 ms");
        assert_eq!(text(&mut b, "d-sent"), "10");
        assert!(text(&mut b, "d-failure").starts_with("timeout"));
        assert!(!text(&mut b, "d-hint").is_empty());
        assert_eq!(
            b.eval("!!document.getElementById('cell-why')")
                .expect("why"),
            true
        );

        // The API changes: the page follows without a reload, the open
        // details panel too.
        b.click("td[data-src='node-a'][data-dst='node-b']")
            .expect("click a→b");
        api.set_matrix(fixture_matrix("failing"));
        let changed = Instant::now();
        assert_eventually!(
            Duration::from_secs(6),
            || {
                let g = grid(&mut b);
                let st = find(&g, "node-a", "node-b")["state"].clone();
                ensure(st == "failing", st)
            },
            "node-a → node-b turns failing on the page"
        );
        eprintln!("live update shown after {:?}", changed.elapsed());
        assert_eq!(text(&mut b, "d-state"), "failing");
        assert!(text(&mut b, "d-failure").starts_with("timeout"));
        assert_eq!(
            b.eval("window.__same_document === true").expect("same"),
            true
        );

        // Another view: ICMP.
        b.eval(
            "(() => { const s = document.getElementById('view'); s.value = 'icmp/0/'; \
             s.dispatchEvent(new Event('change')); })()",
        )
        .expect("select icmp");
        let g = grid(&mut b);
        assert_eq!(find(&g, "node-a", "node-b")["kind"], "icmp");
        assert_eq!(find(&g, "node-a", "node-b")["state"], "failing");
        assert_eq!(find(&g, "node-a", "node-c")["state"], "ok");
        assert_eq!(find(&g, "node-b", "node-a")["state"], "unknown");
        assert_eq!(text(&mut b, "d-target"), "198.18.0.12");

        // 200 nodes, every cell ok: the table is rebuilt and filled in place.
        let big: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
        let cells: Vec<Value> = big
            .iter()
            .flat_map(|s| {
                big.iter()
                    .filter(move |d| *d != s)
                    .map(move |d| probe(s, d, "ok", 0.0, None))
            })
            .collect();
        api.set_nodes(fixture_nodes(&big, ""));
        api.set_matrix(json!({"nodes": big, "cells": cells}));
        b.eval(
            "(() => { const s = document.getElementById('view'); s.value = 'tcp/7442/'; \
             s.dispatchEvent(new Event('change')); })()",
        )
        .expect("select probe");
        let start = Instant::now();
        assert_eventually!(
            Duration::from_secs(15),
            || {
                let n = b.eval("document.querySelectorAll('#matrix td.ok').length")?;
                ensure(n == 200 * 199, n)
            },
            "200×200 grid all ok"
        );
        let rebuild = b.eval("document.body.dataset.applyMs").expect("apply ms");
        wait_polls(&mut b, 1, "200 nodes, steady");
        let steady = b.eval("document.body.dataset.applyMs").expect("apply ms");
        eprintln!(
            "200 nodes: grid filled {:?} after the API changed (poll every 2s); \
             apply with rebuild {rebuild} ms, in-place update {steady} ms",
            start.elapsed()
        );
    });
}

#[test]
fn the_findings_panel_lists_the_fleets_findings_and_opens_a_cell() {
    if !can_run() {
        return;
    }
    in_own_netns(|| {
        let api = four_node_api();
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        load_page(&mut b, addr);
        assert_eventually!(
            Duration::from_secs(15),
            || {
                let n = b.eval("document.body.dataset.findings || ''")?;
                ensure(n == "1", n)
            },
            "the panel shows the finding"
        );
        let item = b
            .eval("document.querySelector('#findings-list li').textContent")
            .expect("read the finding");
        let item = item.as_str().unwrap_or_default();
        assert!(
            item.contains("the fleet is split") && item.contains("fix: something between"),
            "{item}"
        );
        assert!(text(&mut b, "findings-note").contains("1 finding(s)"));
        b.eval("document.querySelector('#findings-list button').click()")
            .expect("click the finding");
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let t = text(&mut b, "details-title");
                ensure(t == "node-a → node-c", t)
            },
            "its first cell opens"
        );
        assert!(!api.queries("/api/v1/findings").is_empty());
    });
}

#[test]
fn page_follows_a_real_fleet() {
    if !can_run() {
        return;
    }
    let mut fleet = Fleet::new("web_page", 3);
    fleet.start_collector();
    fleet.start_agents();
    assert_eventually!(
        Duration::from_secs(20),
        || {
            let views = fleet.try_node_views()?;
            ensure(views.len() == 3 && views.iter().all(|v| v.connected), views)
        },
        "every node connected"
    );
    let trust = fleet.chromium_trust_flag();
    let mut b =
        Browser::launch_with(Some(fleet.hub()), &[trust]).expect("launch chromium in the hub");
    // No cookie yet: the page sends the browser to sign in; a wrong token
    // is refused there, a viewer token lets it in.
    b.navigate(COLLECTOR_PAGE)
        .expect("load the collector's page");
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let at = b.eval("location.pathname + '|' + !!document.getElementById('token')")?;
            ensure(at == "/login|true", at)
        },
        "sent to /login"
    );
    let sign_in = |b: &mut Browser, token: &str| {
        b.eval(&format!(
            "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
            json!(token)
        ))
        .expect("submit the login form");
    };
    sign_in(&mut b, "0000aaaa.00000000000000000000000000000000");
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let e = b.eval("(document.getElementById('login-error') || {}).textContent || ''")?;
            ensure(e.as_str().is_some_and(|t| t.contains("not a valid")), e)
        },
        "a wrong token is refused"
    );
    let viewer = fleet.trust().viewer_token;
    sign_in(&mut b, &viewer);
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let at = b.eval("location.pathname")?;
            ensure(at == "/", at)
        },
        "signed in"
    );
    // The token is in an HttpOnly cookie: the page's scripts cannot read it.
    let cookies = b.eval("document.cookie").expect("cookies");
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("reachmap_token"),
        "{cookies}"
    );
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let rows = b.eval("document.querySelectorAll('#matrix tbody tr').length")?;
            ensure(rows == 3, rows)
        },
        "one row per node"
    );
    b.eval("window.__same_document = true").expect("mark");
    let g = grid(&mut b);
    assert_eq!(g.len(), 9, "{g:#?}");
    assert_eq!(g.iter().filter(|c| c["self"] == true).count(), 3, "{g:#?}");

    // The agents probe each other: every cell turns ok on the page.
    assert_eventually!(
        Duration::from_secs(20),
        || {
            let g = grid(&mut b);
            let states: Vec<Value> = g
                .iter()
                .filter(|c| c["self"] == false)
                .map(|c| c["state"].clone())
                .collect();
            ensure(
                states.len() == 6 && states.iter().all(|s| s == "ok"),
                states,
            )
        },
        "every cell of the page ok"
    );

    // Cells carry the states the API gives (unknown where it has no cell).
    let g = assert_eventually!(
        Duration::from_secs(10),
        || {
            let api = b.eval(FETCH_MATRIX_JS)?;
            if api["status"] != 200 {
                return Err(format!("GET /api/v1/matrix answered {}", api["status"]));
            }
            let g = grid(&mut b);
            let mismatches: Vec<String> = g
                .iter()
                .filter(|c| c["self"] == false)
                .filter_map(|c| {
                    let want = api["body"]["cells"]
                        .as_array()
                        .and_then(|cells| {
                            cells.iter().find(|a| {
                                a["src"] == c["src"]
                                    && a["dst"] == c["dst"]
                                    && a["kind"] == "tcp"
                                    && a["port"] == 7442
                            })
                        })
                        .map_or(json!("unknown"), |a| a["state"].clone());
                    (c["state"] != want).then(|| {
                        format!(
                            "{} → {}: page {} api {want}",
                            c["src"], c["dst"], c["state"]
                        )
                    })
                })
                .collect();
            ensure(mismatches.is_empty(), mismatches)?;
            Ok::<_, String>(g)
        },
        "the page shows the API's states"
    );
    let states: Vec<String> = g
        .iter()
        .filter(|c| c["self"] == false)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
            format!("{}→{} {}", s("src"), s("dst"), s("state"))
        })
        .collect();
    eprintln!("fleet page states, equal to the API's: {states:?}");

    // A click names the cell.
    b.click("td[data-src='node-0'][data-dst='node-1']")
        .expect("click");
    assert_eventually!(
        Duration::from_secs(5),
        || {
            let title = text(&mut b, "details-title");
            ensure(title == "node-0 → node-1", title)
        },
        "details of node-0 → node-1"
    );

    // Its last 24 hours, from the collector's store: a strip and a caption.
    let strip = assert_eventually!(
        Duration::from_secs(10),
        || {
            let loaded = b.eval("document.getElementById('history').dataset.loaded")?;
            let strip = b.eval(STRIP_JS)?;
            let n = strip["segs"].as_array().map_or(0, Vec::len);
            ensure(loaded == "true" && n >= 1, (loaded, strip.clone()))?;
            Ok::<_, String>(strip)
        },
        "the history strip of node-0 → node-1"
    );
    let caption = text(&mut b, "history-caption");
    assert!(caption.contains("in 24h"), "{caption}");
    let segs = strip["segs"].as_array().cloned().unwrap_or_default();
    assert!(
        segs.iter().all(|s| ["ok", "degraded", "failing", "unknown"]
            .contains(&s["state"].as_str().unwrap_or(""))),
        "{strip:#}"
    );
    let drawn: f64 = segs.iter().filter_map(|s| s["width"].as_f64()).sum();
    eprintln!(
        "fleet history of node-0 → node-1: {caption}; {} segments, {drawn:.1} px drawn",
        segs.len()
    );

    // The matrix as of a second ago, from the store: every cell ok then,
    // fetched once; then back to live.
    let polls_before = polls(&mut b);
    assert_eventually!(
        Duration::from_secs(15),
        || {
            let loads = body_data(&mut b, "loads").parse::<u64>().unwrap_or(0);
            b.eval(
                "document.getElementById('at-input').value = \
                 window.reachmap.fmtLocal(new Date(Date.now() - 1000)).replace(' ', 'T'); true",
            )?;
            b.click("#at-go")?;
            wait_loads(&mut b, loads + 1, "as of a second ago");
            let error = text(&mut b, "asof-error");
            let g = grid(&mut b);
            let states: Vec<Value> = g
                .iter()
                .filter(|c| c["self"] == false)
                .map(|c| c["state"].clone())
                .collect();
            ensure(
                body_data(&mut b, "mode") == "asof"
                    && error.is_empty()
                    && states.len() == 6
                    && states.iter().all(|s| s == "ok"),
                (error, states),
            )
        },
        "the page shows the stored matrix of a second ago"
    );
    let polls_then = polls(&mut b);
    assert!(polls_then >= polls_before);
    assert!(!hidden(&mut b, "asof-banner"));
    assert!(text(&mut b, "asof-text").starts_with("as of "));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(polls(&mut b), polls_then, "the page polls while not live");
    b.click("#back-live").expect("back to live");
    wait_polls(&mut b, 1, "back to live");
    assert_eq!(body_data(&mut b, "mode"), "live");

    // The summary: every node connected, nothing failing, no problem listed.
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let s = b.eval(SUMMARY_JS)?;
            let api = b.eval(FETCH_MATRIX_JS)?;
            let cells = api["body"]["cells"].as_array().map_or(0, Vec::len);
            ensure(
                s["nodes"] == "3"
                    && s["connected"] == "3"
                    && s["failing"] == "0"
                    && s["degraded"] == "0"
                    && s["cells"] == cells.to_string().as_str()
                    && s["causes_text"] == "no problems",
                (&s, cells),
            )
        },
        "the summary of a healthy fleet"
    );
    assert!(problems(&mut b).is_empty());
    assert_eq!(
        text(&mut b, "problems-note"),
        "No failing or degraded cells."
    );

    // node-1 drops node-0's probes: the summary counts the failing cell as
    // the API does, and the problems list names the API's cause.
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmweb; \
             add chain inet rmweb input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmweb input ip saddr 198.18.0.11 tcp dport 7442 drop",
        ],
    );
    let (summary, listed) = assert_eventually!(
        Duration::from_secs(60),
        || {
            let api = b.eval(FETCH_MATRIX_JS)?;
            let why = b.eval(
                "fetch('api/v1/why?src=node-0&dst=node-1&port=7442', {cache: 'no-store'}).then(r => r.json())",
            )?;
            let s = b.eval(SUMMARY_JS)?;
            let list = problems(&mut b);
            let failing = count_state(&api["body"], "failing");
            let degraded = count_state(&api["body"], "degraded");
            let code = why["causes"][0]["code"].clone();
            let first = list.first().cloned().unwrap_or(Value::Null);
            ensure(
                failing >= 1
                    && s["failing"] == failing.to_string().as_str()
                    && s["degraded"] == degraded.to_string().as_str()
                    && code == "FIREWALL_INBOUND"
                    && first["src"] == "node-0"
                    && first["dst"] == "node-1"
                    && first["view"] == "tcp/7442/"
                    && first["code"] == code,
                (&s, failing, degraded, &code, &first),
            )?;
            Ok::<_, String>((s, list))
        },
        "the summary and the problems show node-1's drop with the API's cause"
    );
    assert!(
        summary["causes_text"]
            .as_str()
            .is_some_and(|t| t.contains("FIREWALL_INBOUND ×")),
        "{summary}"
    );
    eprintln!(
        "fleet summary with node-1 dropping node-0's probes: {summary}; problems: {listed:?}"
    );
    b.click("#problems-list button.problem[data-src='node-0'][data-dst='node-1'][data-view='tcp/7442/']")
        .expect("click the problem");
    assert_eventually!(
        Duration::from_secs(5),
        || {
            let t = text(&mut b, "details-title");
            let st = text(&mut b, "d-state");
            ensure(t == "node-0 → node-1" && st == "failing", (t, st))
        },
        "the problem opens node-0 → node-1"
    );
    save_screenshot(&mut b, "web-fleet-problem.png");

    // node-1's panel: its facts as the API has them, and its events with
    // the ruleset change among them.
    b.click("#matrix tbody th[data-node='node-1']")
        .expect("click node-1");
    wait_node(&mut b, "node-1", 1);
    let p = assert_eventually!(
        Duration::from_secs(45),
        || {
            let detail =
                b.eval("fetch('api/v1/nodes/node-1', {cache: 'no-store'}).then(r => r.json())")?;
            let events = b.eval(
                "fetch('api/v1/events?node=node-1&since=24h&limit=20', {cache: 'no-store'}).then(r => r.json())",
            )?;
            let p = b.eval(NODE_JS)?;
            let addresses: Vec<&str> = detail["node"]["addresses"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let rules = firewall_rule_count(&detail["firewall"]);
            let api_events: Vec<(String, String)> = events["events"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .rev()
                        .map(|e| {
                            (
                                e["kind"].as_str().unwrap_or("").to_string(),
                                e["detail"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let page_events: Vec<(String, String)> = p["events"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .map(|e| {
                            let kind = e["kind"].as_str().unwrap_or("").to_string();
                            let text = e["text"].as_str().unwrap_or("").to_string();
                            let detail = text
                                .split_once(&format!(" {kind}: "))
                                .map(|(_, d)| d.to_string())
                                .unwrap_or_default();
                            (kind, detail)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let listeners = detail["listeners"].as_array().map_or(0, Vec::len);
            let sources = detail["sources"].as_array().map_or(0, Vec::len);
            let shown_sources = p["sources"].as_array().map_or(0, Vec::len);
            ensure(
                p["addresses"] == addresses.join(",").as_str()
                    && addresses.contains(&"198.18.0.12")
                    && p["backend"] == detail["firewall"]["backend"]
                    && p["rules"] == rules.to_string().as_str()
                    && rules >= 1
                    && p["listener_count"] == listeners
                    && p["listeners"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|l| l["port"] == 7442))
                    && sources >= 1
                    && shown_sources == sources
                    && page_events == api_events
                    && page_events.iter().any(|(k, _)| k == "firewall_changed"),
                (&p, &addresses, rules, listeners, sources, &api_events),
            )?;
            Ok::<_, String>(p)
        },
        "node-1's panel shows the API's facts and events"
    );
    eprintln!(
        "fleet node-1: firewall {}, {} listeners, {} events",
        p["firewall"],
        p["listener_count"],
        p["events"].as_array().map_or(0, Vec::len)
    );
    save_screenshot(&mut b, "web-fleet-node.png");

    // node-2's agent dies: its row header turns disconnected and its cells
    // unknown, without a reload.
    fleet.kill_agent(2);
    assert_eventually!(
        Duration::from_secs(15),
        || {
            let connected = b
                .eval("document.querySelector(\"#matrix tbody th[data-node='node-2']\").dataset.connected")
                ?;
            let g = grid(&mut b);
            let row: Vec<Value> = g
                .iter()
                .filter(|c| c["src"] == "node-2" && c["self"] == false)
                .map(|c| c["state"].clone())
                .collect();
            ensure(
                connected == "false" && row == [json!("unknown"), json!("unknown")],
                (connected, row),
            )
        },
        "node-2's row shows a disconnected, unknown source"
    );
    let other = b
        .eval("document.querySelector(\"#matrix tbody th[data-node='node-0']\").dataset.connected")
        .expect("node-0 head");
    assert_eq!(other, "true");
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let s = b.eval(SUMMARY_JS)?;
            ensure(
                s["connected"] == "2"
                    && s["nodes"] == "3"
                    && s["nodes_text"] == "2/3 nodes connected (1 disconnected)",
                &s,
            )
        },
        "the summary counts node-2 disconnected"
    );
    assert_eq!(
        b.eval("window.__same_document === true").expect("same"),
        true
    );
}

#[test]
fn page_goes_back_in_time_and_shows_a_cells_history() {
    if !can_run() {
        return;
    }
    in_own_netns(|| {
        // Now all ok; then, node-a → node-b was failing.
        let api = four_node_api();
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        // A zone that is not UTC and not whole hours, so "local" is tested.
        b.call(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": "Asia/Kolkata"}),
        )
        .expect("set the time zone");
        load_page(&mut b, addr);
        assert_eq!(
            b.eval("new Date(2026, 0, 1).getTimezoneOffset()")
                .expect("offset"),
            -330
        );
        assert_eq!(body_data(&mut b, "mode"), "live");
        assert!(hidden(&mut b, "asof-banner"));
        assert_eq!(
            b.eval("document.getElementById('live').getAttribute('aria-pressed')")
                .expect("pressed"),
            "true"
        );

        // A cell's details: its last 24 hours as a strip, with a caption.
        b.click("td[data-src='node-a'][data-dst='node-b']")
            .expect("click a→b");
        let strip = wait_strip(&mut b, &api, 0, "live");
        let q = api.queries("/api/v1/history");
        let q = q.last().expect("a history request");
        let want: HashMap<String, String> = [
            ("src", "node-a"),
            ("dst", "node-b"),
            ("port", "7442"),
            ("since", "24h"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(q, &want);
        check_strip(&strip);
        assert!(strip["marker"].is_null(), "a marker while live: {strip}");
        let caption = text(&mut b, "history-caption");
        assert!(
            caption.starts_with("3 outages in 24h, longest 2m10s"),
            "{caption}"
        );
        assert_eq!(text(&mut b, "history-to"), "now");

        // Hovering the first outage names its cause; a click picks it and
        // offers to show the matrix then.
        let outage = "#history-strip .seg[data-index='2']";
        hover(&mut b, outage);
        let seg = text(&mut b, "history-seg");
        assert!(
            seg.starts_with("failing for 2m10s")
                && seg.contains(
                    "FIREWALL_INBOUND on node-b: FIREWALL_INBOUND detail for node-a → node-b"
                )
                && seg.contains("fix FIREWALL_INBOUND")
                && seg.contains("nft by pid 4242"),
            "{seg}"
        );
        assert!(hidden(&mut b, "history-goto"), "offered on a mere hover");
        hover(&mut b, "#history-strip .seg[data-index='6']");
        let seg = text(&mut b, "history-seg");
        assert!(
            seg.starts_with("failing for 1m") && seg.contains("No cause found"),
            "{seg}"
        );
        hover(&mut b, "#history-strip .seg[data-index='4']");
        assert!(text(&mut b, "history-seg").contains("INTERMITTENT_LOSS on node-a"));
        b.click(outage).expect("click the outage");
        assert!(!hidden(&mut b, "history-goto"));
        assert_eq!(
            b.eval(&format!(
                "document.querySelector(\"{outage}\").getAttribute('aria-pressed')"
            ))
            .expect("pressed"),
            "true"
        );
        save_screenshot(&mut b, "web-history.png");

        // "−1h": the matrix of an hour ago, fetched once; polling stops.
        let why_before = api.queries("/api/v1/why").len();
        let history_before = api.queries("/api/v1/history").len();
        let clicked = whole_seconds(SystemTime::now());
        b.click("#timectl button[data-ago='3600']")
            .expect("click −1h");
        wait_loads(&mut b, 1, "−1h");
        let at = last_at(&api, "/api/v1/matrix").expect("the matrix was asked with at");
        let at_unix = whole_seconds(humantime::parse_rfc3339(&at).expect("RFC 3339 at"));
        assert!(
            at.ends_with('Z')
                && at_unix + 3600 >= clicked.saturating_sub(2)
                && at_unix + 3600 <= clicked + 5,
            "at={at}, clicked at {}",
            rfc3339_secs(clicked)
        );
        assert_eq!(
            api.queries("/api/v1/matrix")
                .last()
                .and_then(|q| q.get("detail").cloned()),
            Some("full".to_string())
        );
        assert_eq!(body_data(&mut b, "mode"), "asof");
        assert_eq!(body_data(&mut b, "at"), at);
        assert!(!hidden(&mut b, "asof-banner"));
        let (value, shown) = kolkata(at_unix);
        assert_eq!(text(&mut b, "asof-text"), format!("as of {shown} (local)"));
        assert_eq!(
            b.eval("document.getElementById('at-input').value")
                .expect("picker"),
            value.as_str()
        );
        assert_eq!(
            b.eval("document.getElementById('live').getAttribute('aria-pressed')")
                .expect("pressed"),
            "false"
        );
        // The grid and the open details are of that moment.
        let g = grid(&mut b);
        assert_eq!(find(&g, "node-a", "node-b")["state"], "failing");
        assert_eq!(
            b.eval(
                "document.querySelector(\"#matrix tbody th[data-node='node-d']\").dataset.connected"
            )
            .expect("row head"),
            "unknown",
            "connectivity now is not connectivity then"
        );
        assert_eq!(text(&mut b, "d-state"), "failing");
        assert_eq!(text(&mut b, "d-asof"), format!("as of {shown} (local)"));
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let why = api.queries("/api/v1/why");
                let asked =
                    why.len() > why_before && why.last().and_then(|q| q.get("at")) == Some(&at);
                let shown_at = b.eval("document.getElementById('cell-why').dataset.at")?;
                let verdict =
                    b.eval("(document.querySelector('#cell-why .why-verdict') || {}).textContent")?;
                ensure(
                    asked && shown_at == at.as_str() && verdict == "Verdict: UNREACHABLE",
                    (why.last().cloned(), shown_at, verdict),
                )
            },
            "the details ask why with the same at"
        );
        // The strip is asked again and marks the moment shown.
        let strip = wait_strip(&mut b, &api, history_before, "as of −1h");
        assert_eq!(
            api.queries("/api/v1/history")
                .last()
                .and_then(|q| q.get("since").cloned()),
            Some("24h".to_string())
        );
        check_strip(&strip);
        let width = strip["width"].as_f64().unwrap_or_default();
        let marker = strip["marker"]
            .as_f64()
            .expect("a marker at the moment shown");
        let want = (86_400.0 - 3_600.0) / 86_400.0 * width;
        assert!(
            (marker - want).abs() <= 2.0,
            "marker at {marker}, not {want}"
        );

        save_screenshot(&mut b, "web-asof.png");

        // Nothing polls now.
        let polls_then = polls(&mut b);
        let live_then = live_matrix_requests(&api);
        let nodes_then = api.queries("/api/v1/nodes").len();
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(polls(&mut b), polls_then, "the page still polls");
        assert_eq!(live_matrix_requests(&api), live_then, "live matrix asked");
        assert_eq!(api.queries("/api/v1/nodes").len(), nodes_then);
        assert_eq!(body_data(&mut b, "loads"), "1", "as of is loaded once");

        // A moment typed in the picker is local time.
        let typed = whole_seconds(SystemTime::now()) - 3 * 3600 - 17;
        let (value, shown) = kolkata(typed);
        submit_moment(&mut b, &value);
        assert_eq!(last_at(&api, "/api/v1/matrix"), Some(rfc3339_secs(typed)));
        assert_eq!(text(&mut b, "asof-text"), format!("as of {shown} (local)"));
        assert!(hidden(&mut b, "asof-error"));

        // Moments the API refuses: one line each, the page stays whole.
        submit_moment(&mut b, "2001-06-01T12:00:00");
        assert_eq!(
            last_at(&api, "/api/v1/matrix").as_deref(),
            Some("2001-06-01T06:30:00Z")
        );
        let line = text(&mut b, "asof-error");
        assert!(
            !hidden(&mut b, "asof-error")
                && line.starts_with("Cannot show the matrix as of 2001-06-01 12:00:00: ")
                && line.contains("before what the store keeps")
                && line.ends_with("(HTTP 410)")
                && !line.contains('\n'),
            "{line}"
        );
        assert!(
            hidden(&mut b, "grid-wrap"),
            "a matrix shown for a moment it is not of"
        );
        assert!(hidden(&mut b, "details"));
        assert!(!hidden(&mut b, "asof-banner"));
        submit_moment(&mut b, "2099-06-01T12:00:00");
        let line = text(&mut b, "asof-error");
        assert!(
            line.contains("is in the future") && line.ends_with("(HTTP 400)"),
            "{line}"
        );
        // An empty picker is refused on the page.
        let loads = body_data(&mut b, "loads");
        let asked = api.queries("/api/v1/matrix").len();
        b.eval("document.getElementById('at-input').value = ''; true")
            .expect("clear");
        b.click("#at-go").expect("click Show");
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let invalid =
                    b.eval("document.getElementById('at-input').getAttribute('aria-invalid')")?;
                ensure(invalid == "true", invalid)
            },
            "an empty moment is marked invalid"
        );
        assert!(text(&mut b, "status").contains("choose a date"));
        assert_eq!(body_data(&mut b, "loads"), loads);
        assert_eq!(api.queries("/api/v1/matrix").len(), asked);

        // From a cell's strip to the moment of its outage.
        b.click("#timectl button[data-ago='900']")
            .expect("click −15m");
        wait_loads(&mut b, 5, "−15m");
        assert!(!hidden(&mut b, "grid-wrap") && hidden(&mut b, "asof-error"));
        let history_before = api.queries("/api/v1/history").len();
        b.click("td[data-src='node-a'][data-dst='node-c']")
            .expect("click a→c");
        let strip = wait_strip(&mut b, &api, history_before, "as of −15m");
        check_strip(&strip);
        let served = whole_seconds(SystemTime::now());
        b.click(outage).expect("click the outage");
        let go = b
            .eval("document.getElementById('history-goto').dataset.at")
            .expect("goto at");
        let go = go.as_str().unwrap_or_default().to_string();
        let go_unix = whole_seconds(humantime::parse_rfc3339(&go).expect("goto at"));
        // A second into the outage, as the fixture answered (a second or
        // two before the click).
        let outage_start = |now: u64| history_starts(now)[2] + 1;
        assert!(
            (outage_start(served.saturating_sub(3))..=outage_start(served)).contains(&go_unix),
            "{go}: served {} − outage start {}",
            rfc3339_secs(served),
            rfc3339_secs(outage_start(served))
        );
        b.click("#history-goto").expect("go to the outage");
        wait_loads(&mut b, 6, "the outage");
        assert_eq!(last_at(&api, "/api/v1/matrix"), Some(go.clone()));
        assert_eq!(body_data(&mut b, "at"), go);
        let (_, shown) = kolkata(go_unix);
        assert_eq!(text(&mut b, "asof-text"), format!("as of {shown} (local)"));
        assert_eq!(
            b.eval("location.hash").expect("hash"),
            format!("#at={}", go.replace(':', "%3A")).as_str()
        );

        // Back to live: polling resumes, live answers again, no `at`.
        let live_then = live_matrix_requests(&api);
        b.click("#back-live").expect("back to live");
        wait_polls(&mut b, 2, "back to live");
        assert_eq!(body_data(&mut b, "mode"), "live");
        assert!(hidden(&mut b, "asof-banner"));
        assert!(live_matrix_requests(&api) >= live_then + 2);
        let g = grid(&mut b);
        assert_eq!(find(&g, "node-a", "node-b")["state"], "ok");
        assert_eq!(
            b.eval(
                "document.querySelector(\"#matrix tbody th[data-node='node-d']\").dataset.connected"
            )
            .expect("row head"),
            "false"
        );
        assert_eq!(b.eval("location.hash").expect("hash"), "");
        assert!(hidden(&mut b, "d-asof"));
        let why = api.queries("/api/v1/why");
        assert!(!why.last().is_some_and(|q| q.contains_key("at")), "{why:?}");
        assert_eq!(text(&mut b, "history-to"), "now");
    });
}

#[test]
fn page_sums_up_problems_and_opens_a_nodes_facts() {
    if !can_run() {
        return;
    }
    in_own_netns(|| {
        let api = four_node_api();
        api.set_cause("node-a", "node-d", 7442, "FIREWALL_INBOUND", "node-d");
        api.set_cause("node-b", "node-c", 7442, "NOT_LISTENING", "node-c");
        api.set_cause("node-a", "node-c", 7442, "INTERMITTENT_LOSS", "node-a");
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        load_page(&mut b, addr);

        // The summary line: the fixture's figures, counted from its answer.
        let served = api.matrix.lock().expect("fixture lock").clone();
        let (failing, degraded) = (
            count_state(&served, "failing"),
            count_state(&served, "degraded"),
        );
        assert_eq!((failing, degraded), (3, 1), "the fixture changed");
        let cells = served["cells"].as_array().map_or(0, Vec::len);
        let s = assert_eventually!(
            Duration::from_secs(10),
            || {
                let s = b.eval(SUMMARY_JS)?;
                ensure(s["explained"] == "3", &s)?;
                Ok::<_, String>(s)
            },
            "the three TCP problems are explained"
        );
        assert_eq!(s["nodes"], "4", "{s}");
        assert_eq!(s["connected"], "3", "{s}");
        assert_eq!(s["failing"], failing.to_string().as_str(), "{s}");
        assert_eq!(s["degraded"], degraded.to_string().as_str(), "{s}");
        assert_eq!(s["cells"], cells.to_string().as_str(), "{s}");
        assert_eq!(s["nodes_text"], "3/4 nodes connected (1 disconnected)");
        assert_eq!(
            s["cells_text"],
            format!("{failing} failing, {degraded} degraded of {cells} cells").as_str()
        );
        assert_eq!(
            s["causes_text"],
            "top causes: FIREWALL_INBOUND ×1, INTERMITTENT_LOSS ×1, NOT_LISTENING ×1"
        );
        assert_eq!(
            s["causes"],
            json!({"FIREWALL_INBOUND": 1, "INTERMITTENT_LOSS": 1, "NOT_LISTENING": 1})
        );
        // Each TCP problem was asked about once, on its own port; ICMP not.
        let mut asked: Vec<(String, String, String)> = api
            .queries("/api/v1/why")
            .iter()
            .map(|q| {
                let g = |k: &str| q.get(k).cloned().unwrap_or_default();
                (g("src"), g("dst"), g("port"))
            })
            .collect();
        asked.sort();
        let want: Vec<(String, String, String)> = [
            ("node-a", "node-c"),
            ("node-a", "node-d"),
            ("node-b", "node-c"),
        ]
        .iter()
        .map(|(s, d)| (s.to_string(), d.to_string(), "7442".to_string()))
        .collect();
        assert_eq!(asked, want);

        // The problems: failing first (probe port, then ICMP), then degraded,
        // each with its cause code and line.
        let list = problems(&mut b);
        let shown: Vec<(String, String, String, String, String)> = list
            .iter()
            .map(|p| {
                let g = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (g("src"), g("dst"), g("view"), g("state"), g("code"))
            })
            .collect();
        let want = [
            (
                "node-a",
                "node-d",
                "tcp/7442/",
                "failing",
                "FIREWALL_INBOUND",
            ),
            ("node-b", "node-c", "tcp/7442/", "failing", "NOT_LISTENING"),
            ("node-a", "node-b", "icmp/0/", "failing", ""),
            (
                "node-a",
                "node-c",
                "tcp/7442/",
                "degraded",
                "INTERMITTENT_LOSS",
            ),
        ]
        .map(|(a, b, c, d, e)| (a.into(), b.into(), c.into(), d.into(), e.into()));
        assert_eq!(shown, want);
        assert_eq!(
            list[0]["text"],
            "on node-d: FIREWALL_INBOUND between node-a and node-d"
        );
        assert_eq!(list[2]["cause"], "unexplained", "{}", list[2]);
        assert!(
            list[2]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("icmp: timeout")),
            "{}",
            list[2]
        );
        // Four nodes at 1280×900: the largest cells, no scrolling.
        let l = wait_fit(&mut b, 4, "4 nodes");
        assert_eq!(l["cell"], l["max"], "{l}");
        save_screenshot(&mut b, "web-summary.png");

        // A click on a problem opens its cell, in its own view.
        b.click("#problems-list button.problem[data-src='node-b'][data-dst='node-c']")
            .expect("click the problem b→c");
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let t = text(&mut b, "details-title");
                ensure(t == "node-b → node-c" && !hidden(&mut b, "details"), t)
            },
            "the problem opens its cell"
        );
        assert_eq!(text(&mut b, "d-state"), "failing");
        assert_eq!(text(&mut b, "d-failure").split(',').next(), Some("refused"));
        let list = problems(&mut b);
        let current: Vec<&Value> = list.iter().filter(|p| p["current"] == "true").collect();
        assert_eq!(current.len(), 1, "{list:#?}");
        assert_eq!(
            (&current[0]["src"], &current[0]["dst"]),
            (&json!("node-b"), &json!("node-c"))
        );
        b.click("#problems-list button.problem[data-view='icmp/0/']")
            .expect("click the ICMP problem");
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let v = b.eval("document.getElementById('view').value")?;
                let t = text(&mut b, "details-title");
                ensure(v == "icmp/0/" && t == "node-a → node-b", (v, t))
            },
            "the ICMP problem switches the view and opens its cell"
        );
        assert_eq!(text(&mut b, "d-kind"), "icmp");
        assert_eq!(text(&mut b, "d-target"), "198.18.0.12");
        let g = grid(&mut b);
        assert_eq!(find(&g, "node-a", "node-b")["kind"], "icmp");

        // The fleet changes: the summary and the list follow without a reload.
        api.set_matrix(fixture_matrix("failing"));
        let s = assert_eventually!(
            Duration::from_secs(10),
            || {
                let s = b.eval(SUMMARY_JS)?;
                ensure(s["failing"] == "4" && s["explained"] == "4", &s)?;
                Ok::<_, String>(s)
            },
            "a→b's probe failing is counted and explained"
        );
        assert_eq!(
            s["causes_text"],
            "top causes: FIREWALL_INBOUND ×1, INTERMITTENT_LOSS ×1, NOT_LISTENING ×1, no cause found ×1"
        );
        let list = problems(&mut b);
        let ab = list
            .iter()
            .find(|p| p["src"] == "node-a" && p["dst"] == "node-b" && p["view"] == "tcp/7442/")
            .unwrap_or_else(|| panic!("no a→b probe problem: {list:#?}"));
        assert_eq!(ab["cause"], "none", "{ab}");
        assert!(
            ab["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("no cause found")),
            "{ab}"
        );

        // A click on a row's name opens that node's facts and events; the
        // cell's details close.
        b.click("#matrix tbody th[data-node='node-b']")
            .expect("click node-b's row");
        let p = wait_node(&mut b, "node-b", 1);
        assert!(hidden(&mut b, "details"), "the cell's details stay open");
        assert_eq!(p["title"], "node-b");
        assert!(
            p["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("connected, last seen")),
            "{p}"
        );
        assert_eq!(p["connected"], "true");
        assert_eq!(p["addresses"], "198.18.0.12");
        assert!(
            p["addresses_text"]
                .as_str()
                .is_some_and(|t| t.contains("eth0 (up): 198.18.0.12/24")),
            "{p}"
        );
        assert_eq!(p["backend"], "nftables");
        assert_eq!(p["rules"], fixture_rules("node-b").to_string().as_str());
        assert_eq!(
            p["firewall"],
            "nftables: 4 rules in 2 tables, generation 58"
        );
        assert!(
            p["resources"].as_str().is_some_and(|r| r
                .starts_with("load 0.50 / 0.25 / 0.13 on 2 CPUs · CPU 12% busy")
                && r.contains("memory 1.0 GiB free of 4.0 GiB (steady)")
                && r.contains("conntrack 120/65536")),
            "{p}"
        );
        assert!(
            p["host"]
                .as_str()
                .is_some_and(|h| h.starts_with("node-b, Debian 12")),
            "{p}"
        );
        let listeners: Vec<(u64, String)> = p["listeners"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|l| {
                        (
                            l["port"].as_u64().unwrap_or(0),
                            l["scope"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            listeners,
            [(7442, "any".to_string()), (5432, "loopback".to_string())]
        );
        assert!(
            p["listeners"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("reachmap-agent[101]")),
            "{p}"
        );
        let sources: Vec<(&str, &str)> = p["sources"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|s| {
                        (
                            s["source"].as_str().unwrap_or(""),
                            s["state"].as_str().unwrap_or(""),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            sources,
            [
                ("rtnl", "ok"),
                ("sockets", "ok"),
                ("firewall", "degraded"),
                ("kmsg", "down")
            ]
        );
        let kmsg = p["sources"][3]["text"].as_str().unwrap_or_default();
        assert!(
            kmsg.contains("blind") && kmsg.contains("/dev/kmsg of node-b: permission denied"),
            "{kmsg}"
        );
        // Its events, newest first, from the store's API for that node.
        let kinds: Vec<&str> = p["events"]
            .as_array()
            .map(|e| e.iter().map(|e| e["kind"].as_str().unwrap_or("")).collect())
            .unwrap_or_default();
        assert_eq!(kinds, ["oom_kill", "firewall_changed", "listener_appeared"]);
        assert!(
            p["events"]
                .as_array()
                .is_some_and(|e| e.iter().all(|e| e["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("on node-b") || t.contains("of node-b")))),
            "{p}"
        );
        let q = api.queries("/api/v1/events");
        let q = q.last().expect("an events request");
        assert_eq!(q.get("node").map(String::as_str), Some("node-b"), "{q:?}");
        assert_eq!(q.get("since").map(String::as_str), Some("24h"), "{q:?}");
        assert!(p["asof"].is_null() && p["error"].is_null(), "{p}");
        assert_eq!(
            b.eval("document.querySelector(\"#matrix tbody th[data-node='node-b']\").classList.contains('selected')")
                .expect("selected"),
            true
        );
        save_screenshot(&mut b, "web-node.png");

        // A column's name opens that node: the disconnected one.
        b.click("#matrix thead th[data-node='node-d']")
            .expect("click node-d's column");
        let p = wait_node(&mut b, "node-d", 2);
        assert_eq!(p["connected"], "false");
        assert!(
            p["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("disconnected")),
            "{p}"
        );
        assert_eq!(p["addresses"], "198.18.0.14");
        assert_eq!(p["rules"], fixture_rules("node-d").to_string().as_str());
        assert!(
            p["events"].as_array().is_some_and(|e| e.len() == 3
                && e.iter()
                    .all(|e| e["text"].as_str().is_some_and(|t| t.contains("node-d")))),
            "{p}"
        );
        assert_eq!(
            api.queries("/api/v1/events")
                .last()
                .and_then(|q| q.get("node").cloned())
                .as_deref(),
            Some("node-d")
        );

        // As of an hour ago: the summary is of that moment's matrix, its
        // causes asked with the same `at`, the node's events end then.
        let why_before = api.queries("/api/v1/why").len();
        b.click("#timectl button[data-ago='3600']")
            .expect("click −1h");
        wait_loads(&mut b, 1, "−1h");
        let at = body_data(&mut b, "at");
        let s = assert_eventually!(
            Duration::from_secs(10),
            || {
                let s = b.eval(SUMMARY_JS)?;
                ensure(s["explained"] == "4" && s["failing"] == "4", &s)?;
                Ok::<_, String>(s)
            },
            "the problems of an hour ago are explained"
        );
        let then = api.matrix_at.lock().expect("fixture lock").clone();
        assert_eq!(
            s["failing"],
            count_state(&then, "failing").to_string().as_str()
        );
        assert_eq!(s["connected"], "", "connections then are not known: {s}");
        assert_eq!(
            s["nodes_text"],
            "4 nodes (which were connected then is not known)"
        );
        assert_eq!(s["causes_text"], "top causes: FIREWALL_INBOUND ×4");
        let asked_then: Vec<HashMap<String, String>> = api
            .queries("/api/v1/why")
            .into_iter()
            .skip(why_before)
            .collect();
        assert!(
            asked_then.len() >= 4 && asked_then.iter().all(|q| q.get("at") == Some(&at)),
            "{asked_then:?}"
        );
        let p = wait_node(&mut b, "node-d", 3);
        assert!(
            p["asof"]
                .as_str()
                .is_some_and(|t| t.contains("events are of the day before")),
            "{p}"
        );
        let q = api.queries("/api/v1/events");
        let q = q.last().expect("an events request");
        assert_eq!(q.get("until"), Some(&at), "{q:?}");
        assert_eq!(q.get("node").map(String::as_str), Some("node-d"), "{q:?}");

        // Escape closes the panel.
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}),
        )
        .expect("press Escape");
        assert_eventually!(
            Duration::from_secs(5),
            || {
                let h = hidden(&mut b, "node");
                ensure(h, h)
            },
            "Escape closes the node panel"
        );
    });
}

/// `n` nodes n000…, every cell to n000, n001 and n002 failing (three
/// causes, by destination), n{n-1} → n010 degraded, the rest ok.
fn fleet_of(api: &Api, n: usize) -> (Vec<String>, Value) {
    let names: Vec<String> = (0..n).map(|i| format!("n{i:03}")).collect();
    let mut cells = Vec::new();
    for s in &names {
        for d in names.iter().filter(|d| *d != s) {
            let c = if ["n000", "n001", "n002"].contains(&d.as_str()) {
                probe(s, d, "failing", 1.0, Some("timeout"))
            } else if *s == names[n - 1] && d == "n010" {
                probe(s, d, "degraded", 0.2, Some("timeout"))
            } else {
                probe(s, d, "ok", 0.0, None)
            };
            cells.push(c);
        }
    }
    for s in &names {
        for (d, code) in [
            ("n000", "FIREWALL_INBOUND"),
            ("n001", "LOOPBACK_ONLY"),
            ("n002", "NOT_LISTENING"),
        ] {
            if s != d {
                api.set_cause(s, d, 7442, code, d);
            }
        }
    }
    (names.clone(), json!({"nodes": names, "cells": cells}))
}

#[test]
fn cells_fit_the_window_and_causes_are_asked_for_a_bounded_few() {
    if !can_run() {
        return;
    }
    in_own_netns(|| {
        const N: usize = 30;
        let api = Api::default();
        let (names, matrix) = fleet_of(&api, N);
        api.set_matrix(matrix.clone());
        api.set_nodes(fixture_nodes(&names, ""));
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        set_viewport(&mut b, 1280, 900);
        load_page(&mut b, addr);
        let limit = b
            .eval("window.reachmap.WHY_LIMIT")
            .expect("the limit")
            .as_u64()
            .expect("a number") as usize;
        assert!(limit > 0 && limit < 87, "{limit}");

        // 87 failing cells: only the first `limit` (in the list's order:
        // by source, then destination) are explained, each asked once.
        let failing = count_state(&matrix, "failing");
        assert_eq!(failing, 3 * N - 3);
        let first: Vec<(String, String)> = names
            .iter()
            .flat_map(|s| {
                ["n000", "n001", "n002"]
                    .into_iter()
                    .filter(move |d| d != s)
                    .map(move |d| (s.clone(), d.to_string()))
            })
            .take(limit)
            .collect();
        let mut want_counts: HashMap<&str, u64> = HashMap::new();
        for (_, d) in &first {
            let code = match d.as_str() {
                "n000" => "FIREWALL_INBOUND",
                "n001" => "LOOPBACK_ONLY",
                _ => "NOT_LISTENING",
            };
            *want_counts.entry(code).or_default() += 1;
        }
        let s = assert_eventually!(
            Duration::from_secs(15),
            || {
                let s = b.eval(SUMMARY_JS)?;
                ensure(s["explained"] == limit.to_string().as_str(), &s)?;
                Ok::<_, String>(s)
            },
            "the first problems are explained"
        );
        assert_eq!(s["failing"], failing.to_string().as_str(), "{s}");
        assert_eq!(s["degraded"], "1", "{s}");
        // The degraded cell counts as explainable, past the limit.
        assert_eq!(s["explainable"], (failing + 1).to_string().as_str(), "{s}");
        assert_eq!(s["causes"], json!(want_counts), "{s}");
        let mut ranked: Vec<(&str, u64)> = want_counts.iter().map(|(k, v)| (*k, *v)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let listed: Vec<String> = ranked.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
        assert_eq!(
            s["causes_text"],
            format!(
                "top causes of the first {limit} of {}: {}",
                failing + 1,
                listed.join(", ")
            )
            .as_str()
        );
        let asked = |api: &Api| -> Vec<(String, String)> {
            api.queries("/api/v1/why")
                .iter()
                .map(|q| {
                    let g = |k: &str| q.get(k).cloned().unwrap_or_default();
                    (g("src"), g("dst"))
                })
                .collect()
        };
        let mut distinct = asked(&api);
        distinct.sort();
        distinct.dedup();
        let mut want = first.clone();
        want.sort();
        assert_eq!(distinct, want, "the cells asked about");
        // Answers are kept: polls go on, nothing more is asked.
        let n_asked = asked(&api).len();
        assert!(n_asked <= 2 * limit, "{n_asked} requests for {limit} cells");
        wait_polls(&mut b, 3, "steady");
        assert_eq!(asked(&api).len(), n_asked, "causes asked again");
        assert_eq!(
            b.eval("window.reachmap.whyAsked()")
                .expect("asked")
                .as_u64(),
            Some(n_asked as u64)
        );
        // Every problem is listed; those past the limit say so.
        let list = problems(&mut b);
        assert_eq!(list.len(), failing + 1);
        assert_eq!(list[limit - 1]["cause"], "explained", "{}", list[limit - 1]);
        assert_eq!(list[limit]["cause"], "unexplained", "{}", list[limit]);
        assert!(
            list[limit]["text"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("only the first {limit}"))),
            "{}",
            list[limit]
        );
        assert_eq!(list[failing]["state"], "degraded");

        // The cells fit 1280×900 ...
        let small = wait_fit(&mut b, N, "1280×900");
        save_screenshot(&mut b, "web-fit-1280x900.png");
        // ... and grow with a larger window ...
        set_viewport(&mut b, 1600, 1100);
        let large = wait_fit(&mut b, N, "1600×1100");
        save_screenshot(&mut b, "web-fit-1600x1100.png");
        let cell = |l: &Value| l["cell"].as_f64().unwrap_or(0.0);
        assert!(cell(&large) > cell(&small), "{small} → {large}");
        // ... shrink with a smaller one ...
        set_viewport(&mut b, 1000, 700);
        let smaller = wait_fit(&mut b, N, "1000×700");
        assert!(cell(&smaller) < cell(&small), "{small} → {smaller}");
        // ... or only a shorter one ...
        set_viewport(&mut b, 1280, 700);
        let shorter = wait_fit(&mut b, N, "1280×700");
        assert!(cell(&shorter) < cell(&small), "{small} → {shorter}");
        // ... and make room for an open cell's details.
        set_viewport(&mut b, 1280, 900);
        wait_fit(&mut b, N, "1280×900 again");
        b.click("td[data-src='n005'][data-dst='n006']")
            .expect("click a cell");
        let open = assert_eventually!(
            Duration::from_secs(10),
            || {
                let l = b.eval(LAYOUT_JS)?;
                if let Some(e) = misfit(&l, N as f64) {
                    return Err(e);
                }
                ensure(cell(&l) < cell(&small) && !hidden(&mut b, "details"), &l)?;
                Ok::<_, String>(l)
            },
            "the cells shrink for the details panel"
        );
        eprintln!(
            "{N} nodes: cells {} px at 1280×900, {} px at 1600×1100, {} px at 1000×700, {} px at 1280×700, {} px with details open",
            cell(&small),
            cell(&large),
            cell(&smaller),
            cell(&shorter),
            cell(&open)
        );
        save_screenshot(&mut b, "web-fit-details.png");

        // 200 nodes cannot fit: the smallest cells, and the map scrolls in
        // its own box while the page does not.
        let (big, matrix) = fleet_of(&api, 200);
        api.set_nodes(fixture_nodes(&big, ""));
        api.set_matrix(matrix);
        let l = assert_eventually!(
            Duration::from_secs(15),
            || {
                let rows = b.eval("document.querySelectorAll('#matrix tbody tr').length")?;
                ensure(rows == 200, rows)?;
                let l = b.eval(LAYOUT_JS)?;
                if let Some(e) = misfit(&l, 200.0) {
                    return Err(e);
                }
                Ok::<_, String>(l)
            },
            "200 nodes laid out"
        );
        assert_eq!(l["cell"], l["min"], "{l}");
        let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            f("scroll_w") > f("client_w") && f("scroll_h") > f("client_h"),
            "{l}"
        );
        assert!(f("doc_w") <= f("win_w"), "{l}");
        let s = b.eval(SUMMARY_JS).expect("summary");
        assert_eq!(s["nodes"], "200", "{s}");
        assert_eq!(s["failing"], (3 * 200 - 3).to_string().as_str(), "{s}");
        // Still at most the limit explained, and the list is capped.
        assert_eventually!(
            Duration::from_secs(15),
            || {
                let s = b.eval(SUMMARY_JS)?;
                ensure(s["explained"] == limit.to_string().as_str(), &s)
            },
            "200 nodes: the first problems explained"
        );
        let distinct: std::collections::HashSet<(String, String)> =
            asked(&api).into_iter().collect();
        assert!(
            distinct.len() <= 2 * limit,
            "{} cells asked about for a limit of {limit}",
            distinct.len()
        );
        let shown = problems(&mut b).len();
        assert!(shown < 3 * 200 - 3, "{shown} problems drawn");
        assert!(!hidden(&mut b, "problems-more"));
    });
}

/// A fleet of 320 nodes in zones a and b: past 300 nodes the page shows the
/// zone grid, asks for no node grid, and a click on a zone pair shows that
/// pair node by node.
#[test]
fn a_large_fleet_is_shown_zone_by_zone_and_a_pair_node_by_node() {
    if !can_run() {
        return;
    }
    in_own_netns(|| {
        let api = Api::default();
        let names: Vec<String> = (0..320).map(|i| format!("n{i:02}")).collect();
        api.set_nodes(fixture_nodes(&names, ""));
        *api.zone_matrix.lock().expect("fixture lock") = json!({
            "nodes": ["n00", "n41"],
            "zones": [
                {"src_zone": "a", "dst_zone": "a", "worst": "ok", "ok": 1560, "degraded": 0, "failing": 0, "unknown": 0},
                {"src_zone": "a", "dst_zone": "b", "worst": "failing", "ok": 1599, "degraded": 0, "failing": 1, "unknown": 0},
                {"src_zone": "b", "dst_zone": "a", "worst": "ok", "ok": 1600, "degraded": 0, "failing": 0, "unknown": 0},
                {"src_zone": "b", "dst_zone": "b", "worst": "degraded", "ok": 1559, "degraded": 1, "failing": 0, "unknown": 0},
            ],
            "cells": [probe("n00", "n41", "failing", 1.0, Some("timeout"))],
        });
        api.pair_matrix.lock().expect("fixture lock").insert(
            "a b".into(),
            json!({
                "nodes": ["n00", "n01", "n40", "n41"],
                "cells": [
                    probe("n00", "n40", "ok", 0.0, None),
                    probe("n00", "n41", "failing", 1.0, Some("timeout")),
                    probe("n01", "n40", "ok", 0.0, None),
                    probe("n01", "n41", "ok", 0.0, None),
                ],
            }),
        );
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        load_page(&mut b, addr);
        assert_eventually!(
            Duration::from_secs(10),
            || {
                let v = body_data(&mut b, "zoneView");
                ensure(v == "zones", v)
            },
            "the zone grid is shown"
        );
        let zones = b
            .eval(
                "[...document.querySelectorAll('#zones td[data-src-zone]')].map(td => ({
                    src: td.dataset.srcZone, dst: td.dataset.dstZone,
                    state: td.dataset.state, text: td.textContent }))",
            )
            .expect("read the zone grid");
        assert_eq!(
            zones,
            json!([
                {"src": "a", "dst": "a", "state": "ok", "text": "0/1560"},
                {"src": "a", "dst": "b", "state": "failing", "text": "1/1600"},
                {"src": "b", "dst": "a", "state": "ok", "text": "0/1600"},
                {"src": "b", "dst": "b", "state": "degraded", "text": "1/1560"},
            ])
        );
        assert!(
            hidden(&mut b, "matrix"),
            "no node grid beside the zone grid"
        );
        // The page never asked for every cell of the 320 nodes.
        let asked = api.queries("/api/v1/matrix");
        assert!(
            asked
                .iter()
                .all(|q| q.get("view").is_some_and(|v| v == "zones")),
            "{asked:?}"
        );
        // The failing cell the zone answer lists is a problem of the page.
        assert_eventually!(
            Duration::from_secs(10),
            || {
                let t = b.eval("document.querySelector('#problems-list')?.textContent || ''")?;
                let t = t.as_str().unwrap_or_default().to_string();
                ensure(t.contains("n00") && t.contains("n41"), t)
            },
            "the failing cell is listed"
        );

        b.eval(
            "document.querySelector('#zones td[data-src-zone=\"a\"][data-dst-zone=\"b\"]').click()",
        )
        .expect("click a → b");
        assert_eventually!(
            Duration::from_secs(10),
            || {
                let v = body_data(&mut b, "zoneView");
                ensure(v == "pair" && grid(&mut b).len() == 4, v)
            },
            "zone a → b is shown node by node"
        );
        let g = grid(&mut b);
        assert_eq!(find(&g, "n00", "n41")["state"], "failing", "{g:#?}");
        assert_eq!(find(&g, "n01", "n40")["state"], "ok", "{g:#?}");
        assert!(text(&mut b, "scope-text").contains("zone a → zone b"));
        assert!(api.queries("/api/v1/matrix").iter().any(|q| {
            q.get("src_zone").is_some_and(|s| s == "a")
                && q.get("dst_zone").is_some_and(|d| d == "b")
        }));
        // Back to the zones.
        b.eval("document.getElementById('scope-back').click()")
            .expect("back");
        assert_eventually!(
            Duration::from_secs(10),
            || {
                let v = body_data(&mut b, "zoneView");
                ensure(v == "zones", v)
            },
            "the zone grid again"
        );
    });
}
