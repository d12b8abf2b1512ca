//! End-to-end tests: a real collector and real agents in a namespace fleet,
//! observed through the `reachmap` CLI.

use std::time::{Duration, Instant};

use reachmap_fleet_tests::{
    COLLECTOR_URL, Fleet, NodeView, assert_eventually, binary, ensure, require_root,
};

/// A fleet of `n` nodes with the collector and every agent running.
fn running_fleet(test: &str, n: usize) -> Fleet {
    let mut fleet = Fleet::new(test, n);
    fleet.start_collector();
    fleet.start_agents();
    fleet
}

/// Waits until every node of the fleet is listed, connected, with its own
/// bridge address; returns the views.
fn wait_all_connected(fleet: &Fleet, timeout: Duration, what: &str) -> Vec<NodeView> {
    assert_eventually!(
        timeout,
        || {
            let views = fleet.try_node_views()?;
            let ok = fleet.nodes().iter().all(|n| {
                views
                    .iter()
                    .any(|v| v.name == n.name && v.connected && v.has_address(&n.addr.to_string()))
            });
            ensure(ok, &views)?;
            Ok::<_, String>(views)
        },
        "{what}: every node listed as connected with its 198.18.0.x address"
    )
}

/// Waits until node `name` satisfies `pred`; returns its view.
fn wait_node(
    fleet: &Fleet,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&NodeView) -> bool,
) -> NodeView {
    assert_eventually!(
        timeout,
        || {
            let views = fleet.try_node_views()?;
            match views.iter().find(|v| v.name == name) {
                Some(v) if pred(v) => Ok(v.clone()),
                _ => Err(format!("{views:#?}")),
            }
        },
        "{name}: {what}"
    )
}

#[test]
fn three_nodes_appear_connected_with_their_addresses() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("three_nodes", 3);
    let views = wait_all_connected(&fleet, Duration::from_secs(20), "fresh fleet");
    assert_eq!(
        views.len(),
        3,
        "exactly the three nodes are listed: {views:#?}"
    );
    for node in fleet.nodes() {
        let view = views.iter().find(|v| v.name == node.name).expect("listed");
        assert!(
            view.has_address("127.0.0.1"),
            "{} lists its loopback address: {view:?}",
            node.name
        );
        for other in fleet.nodes().iter().filter(|o| o.index != node.index) {
            assert!(
                !view.has_address(&other.addr.to_string()),
                "{} lists {}'s address: {view:?}",
                node.name,
                other.name
            );
        }
    }
    // Every agent's clock offset is measured over its stream. All nodes share
    // this machine's clock, so the estimate must be near zero: within a
    // second even on a loaded machine.
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let json = fleet.try_nodes_json()?;
            let offsets: Vec<Option<f64>> = json
                .as_array()
                .map(|a| a.iter().map(|n| n["clock_offset_ms"].as_f64()).collect())
                .unwrap_or_default();
            let ok = offsets.len() == 3
                && offsets
                    .iter()
                    .all(|o| o.is_some_and(|ms| ms.abs() < 1000.0));
            ensure(ok, &offsets)?;
            Ok::<_, String>(offsets)
        },
        "every node has a measured clock offset near zero"
    );
}

fn agents_come_back_after_collector_restart(test: &str, sigkill: bool) {
    let mut fleet = running_fleet(test, 3);
    wait_all_connected(&fleet, Duration::from_secs(20), "before the restart");
    if sigkill {
        fleet.kill_collector();
    } else {
        let status = fleet.stop_collector();
        assert!(
            status.success(),
            "collector did not exit cleanly on SIGTERM: {status}"
        );
    }
    // Agents keep retrying while the collector is down.
    std::thread::sleep(Duration::from_secs(2));
    let restarted = Instant::now();
    fleet.start_collector();
    wait_all_connected(
        &fleet,
        Duration::from_secs(5),
        "within 5 s of the collector's restart",
    );
    eprintln!(
        "agents back {:.1}s after restart",
        restarted.elapsed().as_secs_f64()
    );
}

#[test]
fn agents_reconnect_after_collector_is_killed() {
    if !require_root() {
        return;
    }
    agents_come_back_after_collector_restart("collector_sigkill", true);
}

#[test]
fn agents_reconnect_after_collector_is_stopped() {
    if !require_root() {
        return;
    }
    agents_come_back_after_collector_restart("collector_sigterm", false);
}

#[test]
fn added_address_is_reported_after_collector_restart() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("addr_restart", 3);
    wait_all_connected(&fleet, Duration::from_secs(20), "before the change");
    fleet.kill_collector();
    fleet.exec(1, &["ip", "addr", "add", "198.18.1.77/24", "dev", "eth0"]);
    fleet.start_collector();
    let view = wait_node(
        &fleet,
        "node-1",
        Duration::from_secs(10),
        "198.18.1.77 reported within 10 s of the collector's restart",
        |v| v.connected && v.has_address("198.18.1.77"),
    );
    assert!(
        view.has_address("198.18.0.12"),
        "old address kept: {view:?}"
    );
    let others = fleet.try_node_views().expect("nodes");
    for v in others.iter().filter(|v| v.name != "node-1") {
        assert!(
            !v.has_address("198.18.1.77"),
            "{} got node-1's address: {v:?}",
            v.name
        );
    }
}

#[test]
fn added_address_is_reported_while_connected() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("addr_live", 2);
    wait_all_connected(&fleet, Duration::from_secs(20), "before the change");
    fleet.exec(0, &["ip", "addr", "add", "198.18.1.77/24", "dev", "eth0"]);
    wait_node(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "198.18.1.77 reported within 10 s without any restart",
        |v| v.connected && v.has_address("198.18.1.77"),
    );
    fleet.exec(0, &["ip", "addr", "del", "198.18.1.77/24", "dev", "eth0"]);
    wait_node(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "198.18.1.77 gone within 10 s of its removal",
        |v| v.connected && !v.has_address("198.18.1.77"),
    );
}

#[test]
fn agent_stopped_with_sigterm_is_shown_disconnected() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("agent_sigterm", 3);
    wait_all_connected(&fleet, Duration::from_secs(20), "before stopping an agent");
    let status = fleet.stop_agent(1);
    assert!(
        status.success(),
        "agent did not exit cleanly on SIGTERM: {status}"
    );
    wait_node(
        &fleet,
        "node-1",
        Duration::from_secs(5),
        "shown connected=false",
        |v| !v.connected,
    );
    let views = fleet.try_node_views().expect("nodes");
    for name in ["node-0", "node-2"] {
        let v = views.iter().find(|v| v.name == name);
        assert!(
            v.is_some_and(|v| v.connected),
            "{name} still connected: {views:#?}"
        );
    }
}

#[test]
fn agent_killed_with_sigkill_is_shown_disconnected() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("agent_sigkill", 2);
    wait_all_connected(&fleet, Duration::from_secs(20), "before killing an agent");
    fleet.kill_agent(0);
    wait_node(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "shown connected=false",
        |v| !v.connected,
    );
    fleet.start_agent(0);
    wait_all_connected(&fleet, Duration::from_secs(10), "after the agent's restart");
}

#[test]
fn agents_started_before_the_collector_connect_once_it_is_up() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("agents_first", 2);
    fleet.start_agents();
    std::thread::sleep(Duration::from_secs(3));
    fleet.start_collector();
    wait_all_connected(
        &fleet,
        Duration::from_secs(5),
        "within 5 s of the collector's start",
    );
}

#[test]
fn cli_fails_in_one_line_when_the_collector_is_unreachable() {
    if !require_root() {
        return;
    }
    let fleet = Fleet::new("cli_unreachable", 0);
    let out = fleet.cli(&["nodes", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {} with no collector",
        out.status
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line error, got:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
}

#[test]
fn cli_takes_the_collector_from_the_environment() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("cli_env", 1);
    wait_all_connected(&fleet, Duration::from_secs(20), "fleet up");
    let cli = binary("reachmap");
    let cli = cli.to_str().expect("binary path is not UTF-8");
    let env = format!("REACHMAP_COLLECTOR={COLLECTOR_URL}");
    let bundle = fleet.trust().viewer_bundle;
    let creds = format!("REACHMAP_CREDENTIALS={}", bundle.display());
    let out = fleet.hub_exec(&["env", &env, &creds, cli, "nodes", "--format", "json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let views = reachmap_fleet_tests::node_views(&nodes).expect("node objects");
    assert!(views.iter().any(|v| v.name == "node-0"), "{views:#?}");
}

#[test]
fn one_shot_snapshot_inside_a_node_shows_its_own_address() {
    if !require_root() {
        return;
    }
    let fleet = Fleet::new("snapshot", 1);
    let agent = binary("reachmap-agent");
    let agent = agent.to_str().expect("utf-8 path");
    let out = fleet.exec(0, &[agent, "snapshot", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("snapshot is JSON");
    let addrs: Vec<String> = json["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .flat_map(|i| i["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect();
    let own = fleet.node(0).addr.to_string();
    assert!(addrs.contains(&own), "{own} in {addrs:?}");
    let default = json["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .any(|r| r["prefix_len"] == 0 && r["gateway"] == "198.18.0.1");
    assert!(default, "default route via the hub: {json}");
}
