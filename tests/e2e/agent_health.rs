//! End-to-end tests of the agent's own health endpoint (`--health-listen`,
//! 127.0.0.1:7443 by default, inside each node's namespace): `/healthz`,
//! `/readyz` and `/metrics` of a healthy agent; an agent started the way a
//! bad manifest or unit would start it — its kernel log not mounted, or
//! without CAP_NET_ADMIN — says which fact source is down and why, on
//! `/readyz` and in `reachmap nodes`; and an agent whose collector is gone
//! is not ready and says so.

use std::time::Duration;

use reachmap_fleet_tests::{Fleet, assert_eventually, require_root};
use serde_json::Value;

/// `curl` of the agent's endpoint inside node `i`: (HTTP status, body).
fn get(fleet: &Fleet, i: usize, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://127.0.0.1:7443{path}");
    let out = fleet.try_exec(
        i,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            url.as_str(),
        ],
    );
    if !out.status.success() {
        return Err(format!(
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text
        .rsplit_once('\n')
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let code = code.parse().map_err(|_| format!("bad status {code:?}"))?;
    Ok((code, body.to_string()))
}

fn wait_ready(fleet: &Fleet, i: usize, want_ready: bool, must_contain: &str) -> String {
    assert_eventually!(
        Duration::from_secs(45),
        || {
            let (code, body) = get(fleet, i, "/readyz")?;
            let ready = code == 200;
            if ready == want_ready && body.contains(must_contain) {
                Ok(body)
            } else {
                Err(format!("{code}: {body}"))
            }
        },
        "node {i}: /readyz {} with {must_contain:?}",
        if want_ready { "200" } else { "503" }
    )
}

/// The node's entry in `reachmap nodes --format json`.
fn summary(fleet: &Fleet, node: &str) -> Result<Value, String> {
    let nodes = fleet.try_nodes_json()?;
    nodes
        .as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == node).cloned())
        .ok_or_else(|| format!("{node} not in {nodes}"))
}

#[test]
fn the_health_endpoint_says_ready_and_names_each_missing_fact() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("agent_health", 3);
    fleet.start_collector();
    fleet.start_agent(0);
    // The kernel log at the path a manifest would mount it, not mounted.
    fleet.start_agent_with(1, &["--kmsg", "/host/dev/kmsg"]);
    // Without CAP_NET_ADMIN the firewall cannot be read (a unit or a pod
    // that left the capability out).
    fleet.start_agent_via(
        2,
        &[
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            "--",
        ],
        &[],
        &[],
    );

    // The healthy agent: live, ready with every check passing, metrics.
    let body = wait_ready(&fleet, 0, true, "[+]stream: connected to https://");
    assert!(body.starts_with("ready\n"), "{body}");
    for source in [
        "sockets",
        "firewall",
        "network",
        "kernel_log",
        "resources",
        "prober",
    ] {
        assert!(body.contains(&format!("[+]{source}: reading")), "{body}");
    }
    assert!(!body.contains("[-]"), "{body}");
    let (code, body) = get(&fleet, 0, "/healthz").expect("GET /healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let metrics = assert_eventually!(
        Duration::from_secs(20),
        || {
            let (code, text) = get(&fleet, 0, "/metrics")?;
            let acked = text
                .lines()
                .find_map(|l| l.strip_prefix("reachmap_agent_stream_acks_total "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if code == 200 && acked > 0.0 {
                Ok(text)
            } else {
                Err(format!("{code}: {text}"))
            }
        },
        "node 0's metrics count acks from the collector"
    );
    for line in [
        "reachmap_agent_stream_connected 1",
        "reachmap_agent_source_up{source=\"sockets\"} 1",
        "reachmap_agent_source_up{source=\"firewall\"} 1",
        "reachmap_agent_stream_connects_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let readings = metrics
        .lines()
        .find_map(|l| l.strip_prefix("reachmap_agent_source_readings_total{source=\"sockets\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a readings count for sockets");
    assert!(readings >= 1.0, "{metrics}");

    // The kernel log not mounted: named on /readyz with the path, and the
    // node is blind to it in `reachmap nodes`.
    let body = wait_ready(&fleet, 1, false, "[-]kernel_log: down: ");
    let line = body
        .lines()
        .find(|l| l.starts_with("[-]kernel_log"))
        .unwrap_or_default();
    assert!(line.contains("/host/dev/kmsg"), "{body}");
    assert!(body.contains("[+]stream: connected"), "{body}");
    assert!(body.contains("[+]sockets: reading"), "{body}");

    // No CAP_NET_ADMIN: the firewall source is down, and says why.
    let body = wait_ready(&fleet, 2, false, "[-]firewall: down: ");
    assert!(body.contains("[+]kernel_log: reading"), "{body}");

    assert_eventually!(
        Duration::from_secs(30),
        || {
            let n1 = summary(&fleet, "node-1")?;
            let n2 = summary(&fleet, "node-2")?;
            let n0 = summary(&fleet, "node-0")?;
            if n1["blind"] == serde_json::json!(["kernel_log"])
                && n2["blind"] == serde_json::json!(["firewall"])
                && n0["blind"] == serde_json::json!([])
            {
                Ok(())
            } else {
                Err(format!("{n0}\n{n1}\n{n2}"))
            }
        },
        "reachmap nodes names each node's missing fact"
    );
    let out = fleet.cli(&["nodes"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("kernel_log"), "{table}");
    assert!(table.contains("firewall"), "{table}");

    // The collector gone: alive, not ready, and saying why.
    fleet.stop_collector();
    let body = wait_ready(&fleet, 0, false, "[-]stream: not connected to https://");
    assert!(body.contains("[+]sockets: reading"), "{body}");
    let (code, _) = get(&fleet, 0, "/healthz").expect("GET /healthz");
    assert_eq!(code, 200, "liveness does not depend on the collector");
    let metrics = get(&fleet, 0, "/metrics").expect("GET /metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l == "reachmap_agent_stream_connected 0"),
        "{metrics}"
    );
}
