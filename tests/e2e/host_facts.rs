//! End-to-end tests of the host facts: a real agent in a namespace node reads
//! its sockets, firewall, interfaces and kernel log, and the collector shows
//! them through `reachmap node NAME --format json`.

use std::time::Duration;

use reachmap_fleet_tests::cgroup::MemoryCgroup;
use reachmap_fleet_tests::{Fleet, assert_eventually, ensure, require_root};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");
/// The kernel keeps 15 bytes of a process name.
const TOOL_COMM: &str = "reachmap-test-t";

fn running_fleet(test: &str, n: usize) -> Fleet {
    let mut fleet = Fleet::new(test, n);
    fleet.start_collector();
    fleet.start_agents();
    fleet
}

/// `reachmap node NAME --format json`, parsed; `Err` carries the output.
fn node_detail(fleet: &Fleet, name: &str) -> Result<Value, String> {
    let out = fleet.cli(&["node", name, "--format", "json"]);
    if !out.status.success() {
        return Err(format!(
            "reachmap node {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "reachmap node {name} printed bad JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Waits until `check` finds what it wants in node `name`'s details.
fn wait_detail<T>(
    fleet: &Fleet,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    assert_eventually!(
        timeout,
        || {
            let d = node_detail(fleet, name)?;
            check(&d).ok_or_else(|| serde_json::to_string_pretty(&d).unwrap_or_default())
        },
        "{name}: {what}"
    )
}

/// Waits until node-0 has reported its firewall once.
fn wait_firewall_reading(fleet: &Fleet) {
    wait_detail(
        fleet,
        "node-0",
        Duration::from_secs(15),
        "a firewall reading",
        |d| d["firewall"].is_object().then_some(()),
    );
}

fn listener<'a>(d: &'a Value, proto: &str, port: u64) -> Option<&'a Value> {
    d["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["protocol"] == proto && l["port"] == port)
}

fn event<'a>(d: &'a Value, kind: &str, needle: &str) -> Option<&'a Value> {
    d["events"]
        .as_array()?
        .iter()
        .find(|e| e["kind"] == kind && e["detail"].as_str().is_some_and(|t| t.contains(needle)))
}

#[test]
fn listeners_report_bind_scope_and_process_and_going_away() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("listeners", 1);
    let pid = fleet.spawn(
        0,
        "listen",
        &[
            TOOL,
            "listen",
            "127.0.0.1:8081",
            "0.0.0.0:8082",
            "198.18.0.11:8083",
            "[::]:8084",
            "udp:0.0.0.0:8085",
        ],
    );
    let d = wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(15),
        "the test tool's five listeners",
        |d| {
            (1..=5)
                .all(|i| listener(d, if i == 5 { "udp" } else { "tcp" }, 8080 + i).is_some())
                .then(|| d.clone())
        },
    );
    let expect = [
        ("tcp", 8081, "loopback"),
        ("tcp", 8082, "any"),
        ("tcp", 8083, "address"),
        ("tcp", 8084, "any"),
        ("udp", 8085, "any"),
    ];
    for (proto, port, scope) in expect {
        let l = listener(&d, proto, port).expect("listed");
        assert_eq!(l["scope"], scope, "{proto}/{port}: {l:#}");
        let procs = l["processes"].as_array().expect("processes");
        assert!(
            procs
                .iter()
                .any(|p| p["pid"] == u64::from(pid) && p["name"] == TOOL_COMM),
            "{proto}/{port} is held by the tool (pid {pid}): {l:#}"
        );
    }
    assert_eq!(
        listener(&d, "tcp", 8081).expect("listed")["address"],
        "127.0.0.1"
    );

    // The text view a person reads says the same.
    let out = fleet.cli(&["node", "node-0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("127.0.0.1:8081"))
        .unwrap_or_else(|| panic!("no line for 127.0.0.1:8081 in:\n{text}"));
    assert!(
        line.contains("loopback only") && line.contains(TOOL_COMM),
        "{line}"
    );

    // The listener going away is an event, and it leaves the facts.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the tool");
    wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "listener_gone events and no more listeners on 8081",
        |d| {
            (listener(d, "tcp", 8081).is_none()
                && event(d, "listener_gone", "127.0.0.1:8081").is_some())
            .then_some(())
        },
    );
}

#[test]
fn an_nft_rule_is_reported_with_its_chain_verdict_and_author() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("nft_rule", 1);
    wait_firewall_reading(&fleet);
    fleet.exec(
        0,
        &[
            "nft",
            "add table inet rmtest; \
             add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmtest input tcp dport 9999 counter drop",
        ],
    );
    let d = wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "the new rule in the ruleset and a firewall_changed event",
        |d| {
            let fw = &d["firewall"];
            let table = fw["tables"]
                .as_array()?
                .iter()
                .find(|t| t["name"] == "rmtest")?;
            let chain = table["chains"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "input")?;
            event(d, "firewall_changed", "nft")?;
            Some((table.clone(), chain.clone()))
        },
    );
    let (table, chain) = d;
    assert_eq!(table["family"], "inet");
    assert_eq!(chain["hook"], "input", "{chain:#}");
    assert_eq!(chain["priority"], 0, "{chain:#}");
    assert_eq!(chain["policy"], "accept", "{chain:#}");
    let rules = chain["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{chain:#}");
    let rule = &rules[0];
    assert_eq!(rule["verdict"]["kind"], "drop", "{rule:#}");
    assert!(rule["handle"].as_u64().is_some(), "{rule:#}");
    assert!(
        rule["matches"].as_array().expect("matches").iter().any(|m| {
            m["field"] == "destination_port"
                && m["values"][0] == serde_json::json!({"kind": "ports", "value": {"first": 9999, "last": 9999}})
        }),
        "{rule:#}"
    );
}

#[test]
fn a_rule_with_a_thousand_element_set_keeps_the_node_connected() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("nft_big_rule", 1);
    wait_firewall_reading(&fleet);
    // One rule whose text is over 8 KiB (addresses outside the fleet, which
    // nothing sends to).
    let set: Vec<String> = (0..1000)
        .map(|i| format!("198.19.{}.{}", i / 250, i % 250 + 1))
        .collect();
    fleet.exec(
        0,
        &[
            "nft",
            &format!(
                "add table inet big; \
                 add chain inet big input {{ type filter hook input priority 0; policy accept; }}; \
                 add rule inet big input ip saddr {{ {} }} drop",
                set.join(", ")
            ),
        ],
    );
    let rule = wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(15),
        "connected, with the big rule in its ruleset",
        |d| {
            if d["node"]["connected"] != true {
                return None;
            }
            let table = d["firewall"]["tables"]
                .as_array()?
                .iter()
                .find(|t| t["name"] == "big")?;
            Some(table["chains"][0]["rules"][0].clone())
        },
    );
    let text = rule["text"].as_str().expect("text");
    assert!(text.len() <= 8_192 && text.ends_with('…'), "{}", text.len());
    // The matches still hold every address.
    let values: usize = rule["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter(|m| m["field"] == "source_address")
        .map(|m| m["values"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(values, 1000, "{rule:#}");
}

#[test]
fn address_and_link_changes_arrive_as_events() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("addr_link", 1);
    wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(15),
        "first facts",
        |d| {
            d["interfaces"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|_| ())
        },
    );
    fleet.exec(
        0,
        &[
            "ip", "link", "add", "rmt0", "type", "veth", "peer", "name", "rmt1",
        ],
    );
    fleet.exec(0, &["ip", "link", "set", "rmt0", "up"]);
    fleet.exec(0, &["ip", "link", "set", "rmt1", "up"]);
    fleet.exec(0, &["ip", "addr", "add", "198.18.0.200/32", "dev", "rmt0"]);
    wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "address_added for 198.18.0.200",
        |d| event(d, "address_added", "198.18.0.200/32 added on rmt0").map(|_| ()),
    );
    fleet.exec(0, &["ip", "link", "set", "rmt0", "down"]);
    fleet.exec(0, &["ip", "addr", "del", "198.18.0.200/32", "dev", "rmt0"]);
    let d = wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(10),
        "rmt0 going down and its address removed",
        |d| {
            event(d, "link_changed", "rmt0: admin up -> down")?;
            event(d, "address_removed", "198.18.0.200/32")?;
            Some(d.clone())
        },
    );
    let e = event(&d, "link_changed", "rmt0: admin up -> down").expect("found");
    assert!(e["received"].is_string(), "{e:#}");
}

#[test]
fn an_oom_kill_is_reported_with_pid_name_and_the_ports_it_held() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("oom_kill", 1);
    let cgroup = MemoryCgroup::new(&format!("rmt-{}-oom", std::process::id()), 48);
    // The tool listens at once and starts eating memory two seconds later,
    // by which time it is in the cgroup and the agent has seen its port.
    let pid = fleet.spawn(
        0,
        "eat-memory",
        &[
            TOOL,
            "eat-memory",
            "400",
            "--after",
            "2",
            "--listen",
            "0.0.0.0:8090",
        ],
    );
    cgroup.add(pid);
    let d = wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(20),
        "an oom_kill event for the tool",
        |d| event(d, "oom_kill", &format!("(pid {pid})")).cloned(),
    );
    let detail = d["detail"].as_str().expect("detail");
    assert!(detail.contains(TOOL_COMM), "{d:#}");
    assert!(
        detail.contains("listened on tcp 0.0.0.0:8090"),
        "the event names the port the victim held: {d:#}"
    );
    drop(cgroup);
}

#[test]
fn resources_and_socket_counts_are_reported() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("resources", 1);
    // The agent's own stream to the collector is an established socket,
    // counted from the second socket reading on.
    let d = wait_detail(
        &fleet,
        "node-0",
        Duration::from_secs(15),
        "resources with CPU figures and the agent's connection counted",
        |d| {
            (d["resources"]["cpu_busy_pct"].is_number()
                && d["sockets"]["tcp_established"].as_u64().unwrap_or(0) >= 1)
                .then(|| d.clone())
        },
    );
    let r = &d["resources"];
    assert!(r["mem_total_bytes"].as_u64().unwrap_or(0) > 0, "{r:#}");
    assert!(r["cpus"].as_u64().unwrap_or(0) > 0, "{r:#}");
    assert!(
        r["disk_root_total_bytes"].as_u64().unwrap_or(0) > 0,
        "{r:#}"
    );
}

#[test]
fn one_shot_snapshot_reads_everything() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("oneshot_all", 1);
    fleet.spawn(0, "listen", &[TOOL, "listen", "127.0.0.1:8081"]);
    fleet.exec(0, &["nft", "add table inet rmtest"]);
    let agent = reachmap_fleet_tests::binary("reachmap-agent");
    let agent = agent.to_str().expect("utf-8 path");
    let snap: Value = assert_eventually!(
        Duration::from_secs(10),
        || {
            let out = fleet.try_exec(0, &[agent, "snapshot", "--format", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
            let has = v["sockets"]["listeners"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["port"] == 8081));
            ensure(has, &v)?;
            Ok::<_, String>(v)
        },
        "the snapshot lists the listener on 8081"
    );
    assert!(snap["firewall"]["tables"].is_array(), "{snap:#}");
    assert!(snap["resources"]["mem_total_bytes"].is_number(), "{snap:#}");
    assert!(snap["interfaces"].is_array(), "{snap:#}");
}
