//! End-to-end tests of the probe mesh: real agents in namespace nodes probe
//! each other, the collector keeps the matrix, `reachmap matrix --format json`
//! shows it. Faults are real nft rules inside the nodes.

use std::time::Duration;

use reachmap_fleet_tests::{Fleet, assert_eventually, require_root};
use serde_json::Value;

const PROBE_PORT: u64 = 7442;

fn running_fleet(test: &str, n: usize) -> Fleet {
    let mut fleet = Fleet::new(test, n);
    fleet.start_collector();
    fleet.start_agents();
    fleet
}

fn matrix(fleet: &Fleet) -> Result<Value, String> {
    let out = fleet.cli(&["matrix", "--format", "json"]);
    if !out.status.success() {
        return Err(format!(
            "reachmap matrix failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
}

fn cells(m: &Value) -> Vec<Value> {
    m["cells"].as_array().cloned().unwrap_or_default()
}

/// The probe-port TCP cells and the ICMP cells between fleet nodes.
fn mesh(m: &Value, kind: &str) -> Vec<Value> {
    cells(m)
        .into_iter()
        .filter(|c| c["kind"] == kind && (kind == "icmp" || c["port"] == PROBE_PORT))
        .collect()
}

fn show(cells: &[Value]) -> String {
    cells
        .iter()
        .map(|c| {
            format!(
                "{} -> {} {}/{} {} failure={} loss={}",
                c["src"], c["dst"], c["kind"], c["port"], c["state"], c["failure"], c["loss"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `check` holds for the matrix; returns it.
fn wait_matrix(
    fleet: &Fleet,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    assert_eventually!(
        timeout,
        || {
            let m = matrix(fleet)?;
            if check(&m) {
                Ok(m)
            } else {
                Err(format!(
                    "{}\n{}",
                    show(&mesh(&m, "tcp")),
                    show(&mesh(&m, "icmp"))
                ))
            }
        },
        "{what}"
    )
}

fn all_ok(m: &Value, n: usize, kind: &str) -> bool {
    let c = mesh(m, kind);
    c.len() == n * (n - 1) && c.iter().all(|c| c["state"] == "ok")
}

fn node(i: usize) -> String {
    format!("node-{i}")
}

fn nft(fleet: &Fleet, i: usize, script: &str) {
    fleet.exec(i, &["nft", script]);
}

#[test]
fn a_fleet_converges_and_a_drop_then_a_reject_show_on_exactly_the_right_cells() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("matrix_drop", 4);
    let m = wait_matrix(&fleet, Duration::from_secs(30), "4 nodes, all ok", |m| {
        all_ok(m, 4, "tcp") && all_ok(m, 4, "icmp")
    });
    assert_eq!(m["nodes"].as_array().map(Vec::len), Some(4), "{m}");
    for c in mesh(&m, "tcp") {
        assert!(c["rtt_ms"].as_f64().is_some(), "an ok cell has an RTT: {c}");
        assert_eq!(c["loss"], 0.0, "{c}");
    }

    // DROP on node-3's probe port: every cell into node-3 times out, and
    // nothing else changes.
    nft(
        &fleet,
        3,
        "add table inet rmtest; \
         add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
         add rule inet rmtest input tcp dport 7442 drop",
    );
    let into = |c: &Value, kind: &str| c["dst"] == node(3).as_str() && c["kind"] == kind;
    wait_matrix(
        &fleet,
        Duration::from_secs(20),
        "cells into node-3 failing with timeout, every other tcp cell ok",
        |m| {
            mesh(m, "tcp").iter().all(|c| {
                if into(c, "tcp") {
                    c["state"] == "failing" && c["failure"] == "timeout"
                } else {
                    c["state"] == "ok"
                }
            }) && mesh(m, "icmp").iter().all(|c| c["state"] == "ok")
        },
    );

    // Removed: back to ok.
    nft(&fleet, 3, "flush chain inet rmtest input");
    wait_matrix(&fleet, Duration::from_secs(30), "all ok again", |m| {
        all_ok(m, 4, "tcp")
    });

    // REJECT with a TCP reset: refused, not a timeout.
    nft(
        &fleet,
        3,
        "add rule inet rmtest input tcp dport 7442 reject with tcp reset",
    );
    wait_matrix(
        &fleet,
        Duration::from_secs(20),
        "cells into node-3 failing with refused",
        |m| {
            mesh(m, "tcp").iter().all(|c| {
                if into(c, "tcp") {
                    c["state"] == "failing" && c["failure"] == "refused"
                } else {
                    c["state"] == "ok"
                }
            })
        },
    );
}

#[test]
fn icmp_dropped_but_tcp_allowed_shows_icmp_failing_and_tcp_ok() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("matrix_icmp", 3);
    wait_matrix(&fleet, Duration::from_secs(30), "3 nodes, all ok", |m| {
        all_ok(m, 3, "tcp") && all_ok(m, 3, "icmp")
    });
    nft(
        &fleet,
        1,
        "add table inet rmtest; \
         add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
         add rule inet rmtest input icmp type echo-request drop",
    );
    wait_matrix(
        &fleet,
        Duration::from_secs(20),
        "icmp into node-1 failing, tcp into node-1 ok",
        |m| {
            let icmp_ok = mesh(m, "icmp").iter().all(|c| {
                if c["dst"] == "node-1" {
                    c["state"] == "failing" && c["failure"] == "timeout"
                } else {
                    c["state"] == "ok"
                }
            });
            icmp_ok && all_ok(m, 3, "tcp")
        },
    );
}

#[test]
fn random_loss_turns_cells_degraded() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("matrix_loss", 3);
    wait_matrix(&fleet, Duration::from_secs(30), "3 nodes, all ok", |m| {
        all_ok(m, 3, "tcp")
    });
    // 30% of the probes into node-2 are lost (only probes: the agent's own
    // stream to the collector is left alone).
    nft(
        &fleet,
        2,
        "add table inet rmtest; \
         add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
         add rule inet rmtest input tcp dport 7442 numgen random mod 100 < 30 drop",
    );
    let m = wait_matrix(
        &fleet,
        Duration::from_secs(40),
        "a tcp cell into node-2 degraded with some loss",
        |m| {
            mesh(m, "tcp").iter().any(|c| {
                c["dst"] == "node-2"
                    && c["state"] == "degraded"
                    && c["loss"].as_f64().is_some_and(|l| l > 0.0 && l < 1.0)
            })
        },
    );
    // Cells that do not go to node-2 are untouched.
    for c in mesh(&m, "tcp").iter().filter(|c| c["dst"] != "node-2") {
        assert_eq!(c["state"], "ok", "{c}");
    }
}

#[test]
fn a_killed_agent_turns_its_row_unknown() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("matrix_killed", 3);
    wait_matrix(&fleet, Duration::from_secs(30), "3 nodes, all ok", |m| {
        all_ok(m, 3, "tcp")
    });
    fleet.kill_agent(2);
    wait_matrix(
        &fleet,
        Duration::from_secs(20),
        "node-2's row unknown; node-2's probe port gone, so cells into it failing",
        |m| {
            mesh(m, "tcp").iter().all(|c| {
                if c["src"] == "node-2" {
                    c["state"] == "unknown"
                } else if c["dst"] == "node-2" {
                    // The host still answers: its probe port is closed.
                    c["state"] == "failing" && c["failure"] == "refused"
                } else {
                    c["state"] == "ok"
                }
            })
        },
    );
}

#[test]
fn test_port_checks_the_path_without_a_service() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("test_port", 2);
    wait_matrix(&fleet, Duration::from_secs(30), "2 nodes, all ok", |m| {
        all_ok(m, 2, "tcp")
    });
    let run = |args: &[&str]| -> (bool, Value) {
        let out = fleet.cli(args);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), v)
    };
    let (ok, v) = run(&["test-port", "node-0", "node-1:9999", "--format", "json"]);
    assert!(ok, "{v}");
    assert_eq!(v["open"], true, "{v}");
    assert_eq!(v["address"], "198.18.0.12", "{v}");

    // Nothing is left listening afterwards.
    let ss = fleet.exec(1, &["ss", "-Hltn", "sport = :9999"]);
    assert!(
        String::from_utf8_lossy(&ss.stdout).trim().is_empty(),
        "the temporary listener is gone"
    );

    // A firewall on the path: blocked, with the reason.
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmtest; \
             add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmtest input tcp dport 9999 drop",
        ],
    );
    let (ok, v) = run(&[
        "test-port",
        "node-0",
        "node-1:9999",
        "--timeout",
        "1s",
        "--format",
        "json",
    ]);
    assert!(ok, "{v}");
    assert_eq!(v["open"], false, "{v}");
    assert_eq!(v["outcome"], "timeout", "{v}");

    // A port in use is refused, with who holds it.
    let out = fleet.cli(&["test-port", "node-0", "node-1:7442"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.lines().count() == 1, "{err}");
}

#[test]
fn metrics_and_the_matrix_api_serve_the_same_fleet() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("metrics", 2);
    wait_matrix(&fleet, Duration::from_secs(30), "2 nodes, all ok", |m| {
        all_ok(m, 2, "tcp")
    });
    let get = |path: &str| -> String {
        let out = fleet.http_get(path);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = get("/metrics");
    for want in [
        "reachmap_nodes{state=\"connected\"} 2",
        "reachmap_node_up{node=\"node-0\"} 1",
        "reachmap_matrix_cells{state=\"ok\"}",
        "reachmap_pair_loss_ratio{",
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }
    let api: Value = serde_json::from_str(&get("/api/v1/matrix?port=7442")).expect("matrix JSON");
    let cells = api["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2, "{api}");
    assert!(
        cells
            .iter()
            .all(|c| c["port"] == PROBE_PORT && c["state"] == "ok"),
        "{api}"
    );
    // The summary carries the fields scripts need; `detail=full` the rest.
    assert!(cells.iter().all(|c| c.get("address").is_none()), "{api}");
    let full: Value =
        serde_json::from_str(&get("/api/v1/matrix?port=7442&detail=full")).expect("matrix JSON");
    let full_cells = full["cells"].as_array().expect("cells");
    assert_eq!(full_cells.len(), 2, "{full}");
    assert!(
        full_cells.iter().all(|c| c["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("198.18."))
            && c["sent"].as_u64().is_some_and(|n| n > 0)),
        "{full}"
    );
    // A detail it does not know is a one-line error, not a guess.
    let out = fleet.try_http_get(
        "/api/v1/matrix?detail=everything",
        &["-w", "\n%{http_code}"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n400") && text.contains("detail=\\\"everything\\\""),
        "{text}"
    );
}

#[test]
fn the_zone_view_and_the_filters_narrow_a_fleet_down_to_its_failing_cells() {
    if !require_root() {
        return;
    }
    // node-0 and node-1 in zone a, node-2 in zone b, node-3 without one.
    let mut fleet = Fleet::new("zones", 4);
    fleet.start_collector();
    for (i, zone) in [(0, Some("a")), (1, Some("a")), (2, Some("b")), (3, None)] {
        match zone {
            Some(z) => fleet.start_agent_with(i, &["--label", &format!("zone={z}")]),
            None => fleet.start_agent(i),
        }
    }
    wait_matrix(&fleet, Duration::from_secs(30), "4 nodes, all ok", |m| {
        all_ok(m, 4, "tcp")
    });
    // node-2 drops the probe port from zone a.
    nft(
        &fleet,
        2,
        "add table inet rmzone; \
         add chain inet rmzone input { type filter hook input priority 0; policy accept; }; \
         add rule inet rmzone input ip saddr { 198.18.0.11, 198.18.0.12 } tcp dport 7442 drop",
    );
    let json = |args: &[&str]| -> Result<Value, String> {
        let out = fleet.cli(args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
    };
    let v = assert_eventually!(
        Duration::from_secs(30),
        || {
            let v = json(&["matrix", "--zones", "--port", "7442", "--format", "json"])?;
            let ab = v["zones"]
                .as_array()
                .and_then(|z| {
                    z.iter()
                        .find(|z| z["src_zone"] == "a" && z["dst_zone"] == "b")
                })
                .cloned()
                .unwrap_or_default();
            if ab["worst"] == "failing" && ab["failing"] == 2 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
        "zone a to zone b is failing"
    );
    // Every other pair is ok, and only the two failing cells are listed.
    for z in v["zones"].as_array().expect("zones") {
        if z["src_zone"] != "a" || z["dst_zone"] != "b" {
            assert_eq!(z["worst"], "ok", "{v:#}");
        }
    }
    assert!(
        v["zones"]
            .as_array()
            .expect("zones")
            .iter()
            .any(|z| z["src_zone"] == "" && z["dst_zone"] == "b" && z["ok"] == 1),
        "node-3 has no zone: {v:#}"
    );
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v["cells"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        (
                            c["src"].as_str().unwrap_or_default().to_string(),
                            c["dst"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let failing = [
        ("node-0".to_string(), "node-2".to_string()),
        ("node-1".to_string(), "node-2".to_string()),
    ];
    assert_eq!(pairs(&v), failing, "{v:#}");

    // The table: a zone grid, then the failing cells.
    let out = fleet.cli(&["matrix", "--zones", "--port", "7442"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("reachability by zone"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("XX 2/2")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-0") && l.contains("failing")),
        "{table}"
    );

    // --state failing lists them; --src and --zone narrow further.
    let v = json(&[
        "matrix", "--state", "failing", "--port", "7442", "--format", "json",
    ])
    .expect("matrix --state");
    assert_eq!(pairs(&v), failing, "{v:#}");
    let v = json(&[
        "matrix", "--src", "node-1", "--zone", "b", "--port", "7442", "--format", "json",
    ])
    .expect("matrix --src --zone");
    assert_eq!(pairs(&v), [failing[1].clone()], "{v:#}");
    assert_eq!(v["nodes"], serde_json::json!(["node-1", "node-2"]), "{v:#}");
    // One pair of the zone view, node by node: a to b is node-0 and node-1
    // to node-2, both failing; b to a is ok.
    let v = json(&[
        "matrix",
        "--src-zone",
        "a",
        "--dst-zone",
        "b",
        "--port",
        "7442",
        "--format",
        "json",
    ])
    .expect("matrix --src-zone --dst-zone");
    assert_eq!(pairs(&v), failing, "{v:#}");
    let out = fleet.http_get("/api/v1/matrix?src_zone=b&dst_zone=a&port=7442");
    let api: Value = serde_json::from_slice(&out.stdout).expect("matrix JSON");
    let back = pairs(&api);
    assert_eq!(
        back,
        [
            ("node-2".to_string(), "node-0".to_string()),
            ("node-2".to_string(), "node-1".to_string())
        ],
        "{api}"
    );

    // The same filters over HTTP.
    let out = fleet.http_get("/api/v1/matrix?zone=b&state=failing&port=7442");
    let api: Value = serde_json::from_slice(&out.stdout).expect("matrix JSON");
    assert_eq!(pairs(&api), failing, "{api}");
    let out = fleet.http_get("/api/v1/matrix?view=zones&port=7442");
    let api: Value = serde_json::from_slice(&out.stdout).expect("matrix JSON");
    assert!(
        api["zones"].as_array().is_some_and(|z| z.len() == 7),
        "{api}"
    );
    let out = fleet.try_http_get("/api/v1/matrix?state=broken", &["-w", "\n%{http_code}"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n400") && text.contains("expected one of ok, degraded, failing, unknown"),
        "{text}"
    );
}

#[test]
fn a_sparse_plan_still_lets_test_port_reach_every_member() {
    if !require_root() {
        return;
    }
    // node-0 alone in zone a; node-1..3 in zone b. With one representative
    // per other zone (and no extra probers for coverage), node-0 probes one
    // of zone b's three nodes.
    let mut fleet = Fleet::new("sparse", 4);
    let config = fleet.dir().join("collector.toml");
    std::fs::write(&config, "zone_representatives = 1\nmin_probers = 0\n")
        .expect("write collector.toml");
    let config = config.to_str().expect("UTF-8 path").to_string();
    fleet.start_collector_with(&["--config", &config, "--full-mesh-max", "1"]);
    for i in 0..4 {
        let zone = if i == 0 { "zone=a" } else { "zone=b" };
        fleet.start_agent_with(i, &["--label", zone]);
    }
    let m = wait_matrix(
        &fleet,
        Duration::from_secs(30),
        "node-0 probes one of zone b",
        |m| {
            let from0: Vec<Value> = mesh(m, "tcp")
                .into_iter()
                .filter(|c| c["src"] == "node-0")
                .collect();
            from0.len() == 1 && from0[0]["state"] == "ok"
        },
    );
    let probed = mesh(&m, "tcp")
        .into_iter()
        .find(|c| c["src"] == "node-0")
        .map(|c| c["dst"].clone())
        .expect("node-0's cell");
    // The members node-0's plan leaves out are still fleet members to its
    // agent (the collector's FleetAddresses), so test-port runs to each.
    for dst in ["node-1", "node-2", "node-3"] {
        let out = fleet.cli(&[
            "test-port",
            "node-0",
            &format!("{dst}:9999"),
            "--format",
            "json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success() && v["open"] == true,
            "test-port node-0 -> {dst} (node-0 probes {probed}): {v} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_node_of_a_sparse_fleet_is_probed_by_min_probers_others() {
    if !require_root() {
        return;
    }
    // Five nodes, each its own zone, no representatives: the zone choices
    // alone would leave every node unprobed. min_probers = 2 gives each
    // exactly two probers, not a full mesh.
    let mut fleet = Fleet::new("cover", 5);
    let config = fleet.dir().join("collector.toml");
    std::fs::write(&config, "zone_representatives = 0\nmin_probers = 2\n")
        .expect("write collector.toml");
    let config = config.to_str().expect("UTF-8 path").to_string();
    fleet.start_collector_with(&["--config", &config, "--full-mesh-max", "1"]);
    for i in 0..5 {
        fleet.start_agent_with(i, &["--label", &format!("zone=z{i}")]);
    }
    let m = wait_matrix(
        &fleet,
        Duration::from_secs(30),
        "every node probed, ok, by two others",
        |m| {
            let tcp = mesh(m, "tcp");
            (0..5).all(|i| {
                let dst = format!("node-{i}");
                tcp.iter()
                    .filter(|c| c["dst"] == dst.as_str() && c["state"] == "ok")
                    .count()
                    == 2
            })
        },
    );
    assert_eq!(mesh(&m, "tcp").len(), 10, "{}", show(&mesh(&m, "tcp")));
}
