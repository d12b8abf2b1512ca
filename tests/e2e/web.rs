//! The collector's web page in headless Chromium: first against a fixture
//! API whose states the test controls (colours, selector, details, live
//! updates, 200 nodes; the time control, "as of" a moment and back, and a
//! cell's history strip), then against a real fleet (states equal the
//! API's, a cell's history, the matrix as of a moment, a killed agent's row
//! turns disconnected and unknown without a reload).
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
use reachmap_fleet_tests::{Fleet, assert_eventually, ensure, in_ci, require_root};
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
    match q.get("at") {
        None => axum::Json(json!({
            "src": src, "dst": dst, "verdict": "reachable", "at": null,
            "causes": [], "checked": ["listeners", "firewall"], "changes": [],
        }))
        .into_response(),
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

/// Serves the real page plus the fixture API on 127.0.0.1 of the calling
/// thread's namespace, on a runtime that lives as long as the returned value.
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
        let url = format!("http://{addr}/");
        b.navigate(&url).expect("load the page");
        wait_polls(&mut b, 1, "first load");
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
        if let Some(dir) = std::env::var_os("REACHMAP_WEB_SCREENSHOT_DIR") {
            let path = std::path::Path::new(&dir).join("web-details.png");
            b.screenshot(&path).expect("screenshot");
        }
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
        let api = Api::default();
        api.set_matrix(fixture_matrix("ok"));
        // Then, node-a → node-b was failing.
        api.set_matrix_at(fixture_matrix("failing"));
        let names: Vec<String> = NODES4.iter().map(|s| s.to_string()).collect();
        api.set_nodes(fixture_nodes(&names, "node-d"));
        let (_rt, addr) = serve_fixture(api.clone());
        let mut b = Browser::launch(None).expect("launch chromium");
        // A zone that is not UTC and not whole hours, so "local" is tested.
        b.call(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": "Asia/Kolkata"}),
        )
        .expect("set the time zone");
        b.navigate(&format!("http://{addr}/"))
            .expect("load the page");
        wait_polls(&mut b, 1, "first load");
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
        if let Some(dir) = std::env::var_os("REACHMAP_WEB_SCREENSHOT_DIR") {
            let path = std::path::Path::new(&dir).join("web-history.png");
            b.screenshot(&path).expect("screenshot");
        }

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

        if let Some(dir) = std::env::var_os("REACHMAP_WEB_SCREENSHOT_DIR") {
            let path = std::path::Path::new(&dir).join("web-asof.png");
            b.screenshot(&path).expect("screenshot");
        }

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
            "{go}"
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
