//! The collector's web page in headless Chromium: first against a fixture
//! API whose states the test controls (colours, selector, details, live
//! updates, 200 nodes), then against a real fleet (states equal the API's,
//! a killed agent's row turns disconnected and unknown without a reload).
//!
//! Chromium always runs inside a network namespace this test made, so it can
//! reach nothing but the page it tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
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
    nodes: Arc<Mutex<Value>>,
}

impl Api {
    fn set_matrix(&self, v: Value) {
        *self.matrix.lock().expect("fixture lock") = v;
    }
    fn set_nodes(&self, v: Value) {
        *self.nodes.lock().expect("fixture lock") = v;
    }
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
        .route(
            "/api/v1/matrix",
            get(|State(a): State<Api>| async move {
                axum::Json(a.matrix.lock().expect("fixture lock").clone())
            }),
        )
        .route(
            "/api/v1/nodes",
            get(|State(a): State<Api>| async move {
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
