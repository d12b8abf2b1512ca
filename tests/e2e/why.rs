//! End-to-end tests of `reachmap why`: each cause made for real in a
//! namespace fleet and asserted through `reachmap why --format json` — the
//! top cause's code and node, and the named rule or process where there is
//! one.

use std::time::Duration;

use reachmap_fleet_tests::cgroup::MemoryCgroup;
mod why_support;

use reachmap_fleet_tests::{Fleet, assert_eventually, require_root};
use serde_json::Value;
use why_support::{evidence_text, running_fleet, wait_cause, wait_mesh, why};

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");

#[test]
fn loopback_only_and_not_listening() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("why_listen", 2);
    wait_mesh(&fleet, 2);
    fleet.spawn(1, "listen", &[TOOL, "listen", "127.0.0.1:8080"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:8080",
        "unreachable",
        "LOOPBACK_ONLY",
        "node-1",
    );
    let top = &w["causes"][0];
    assert!(
        top["fix"]
            .as_str()
            .is_some_and(|f| f.contains("0.0.0.0:8080")),
        "the fix says what to bind: {top}"
    );
    assert!(
        top["evidence"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("reachmap-test-t")),
        "the evidence names the process: {top}"
    );
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:8081",
        "unreachable",
        "NOT_LISTENING",
        "node-1",
    );
    assert!(
        w["checked"].as_array().is_some_and(|c| !c.is_empty()),
        "{w}"
    );
}

#[test]
fn a_listener_that_does_not_accept_fills_its_queue() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("why_queue", 2);
    wait_mesh(&fleet, 2);
    // A service too slow to accept: backlog 1, never accepting. node-0's
    // probes of the port fill the queue, then their SYNs are dropped.
    fleet.spawn(1, "stall", &[TOOL, "stall", "0.0.0.0:8090", "1"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:8090",
        "unreachable",
        "LISTEN_QUEUE_OVERFLOW",
        "node-1",
    );
    let evidence = evidence_text(&w);
    assert!(
        evidence.contains("accept queue") && evidence.contains("of 1 on tcp 0.0.0.0:8090"),
        "the full queue is the evidence: {w}"
    );
    assert!(
        w["probe"]["failure"] == "timeout",
        "SYNs to a full queue are dropped: {w}"
    );
}

#[test]
fn the_listening_process_was_oom_killed() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("why_oom", 2);
    wait_mesh(&fleet, 2);
    let cgroup = MemoryCgroup::new(&format!("rmt-{}-whyoom", std::process::id()), 48);
    let pid = fleet.spawn(
        1,
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
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:8090",
        "unreachable",
        "PROCESS_OOM_KILLED",
        "node-1",
    );
    let detail = w["causes"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("pid {pid}")), "{w}");
    assert!(
        w["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["kind"] == "oom_kill")),
        "what changed shows the kill: {w}"
    );
    drop(cgroup);
}

#[test]
fn agent_down() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("why_agent", 2);
    wait_mesh(&fleet, 2);
    fleet.kill_agent(1);
    wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "AGENT_DOWN",
        "node-1",
    );
    // From the dead agent's side nothing is probed: unknown.
    wait_cause(
        &fleet,
        "node-1",
        "node-0",
        "unknown",
        "AGENT_DOWN",
        "node-1",
    );
}

#[test]
fn no_route() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_route", 2);
    wait_mesh(&fleet, 2);
    // node-0 keeps its way to the collector but loses the fleet's subnet.
    fleet.exec(0, &["ip", "route", "add", "198.18.0.1/32", "dev", "eth0"]);
    fleet.exec(0, &["ip", "route", "del", "198.18.0.0/24", "dev", "eth0"]);
    // And no default route to fall back on (there may be none).
    fleet.try_exec(0, &["ip", "route", "del", "default"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "NO_ROUTE",
        "node-0",
    );
    assert_eq!(w["probe"]["failure"], "no_route", "{w}");
}

#[test]
fn icmp_blocked_but_tcp_fine() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_icmp", 2);
    wait_mesh(&fleet, 2);
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmtest; \
             add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmtest input icmp type echo-request drop",
        ],
    );
    wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "reachable",
        "ICMP_ONLY_BLOCKED",
        "node-1",
    );
}

fn nft(fleet: &Fleet, i: usize, script: &str) {
    fleet.exec(i, &["nft", script]);
}

#[test]
fn firewall_inbound_drop_in_a_user_chain_with_a_set_names_the_rule() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_fw_in", 2);
    wait_mesh(&fleet, 2);
    nft(
        &fleet,
        1,
        "add table inet rmtest; \
         add set inet rmtest blocked { type ipv4_addr; elements = { 198.18.0.11 } }; \
         add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
         add chain inet rmtest probes; \
         add rule inet rmtest input tcp dport 7442 jump probes; \
         add rule inet rmtest probes ip saddr @blocked drop",
    );
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "FIREWALL_INBOUND",
        "node-1",
    );
    let top = &w["causes"][0];
    let ev = evidence_text(&w);
    assert!(
        ev.contains("@blocked") && ev.contains("chain probes"),
        "{ev}"
    );
    assert!(
        top["fix"]
            .as_str()
            .is_some_and(|f| f.contains("nft delete rule inet rmtest probes handle")),
        "{top}"
    );
    assert!(ev.contains("by nft"), "who changed the ruleset: {ev}");
}

#[test]
fn firewall_inbound_reject_with_iptables() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_fw_ipt", 2);
    wait_mesh(&fleet, 2);
    fleet.exec(
        1,
        &[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "-s",
            "198.18.0.11",
            "--dport",
            "7442",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "FIREWALL_INBOUND",
        "node-1",
    );
    assert_eq!(w["probe"]["failure"], "refused", "{w}");
    assert!(evidence_text(&w).contains("REJECT"), "{w}");
}

#[test]
fn firewall_outbound_drop() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_fw_out", 2);
    wait_mesh(&fleet, 2);
    nft(
        &fleet,
        0,
        "add table inet rmtest; \
         add chain inet rmtest output { type filter hook output priority 0; policy accept; }; \
         add rule inet rmtest output ip daddr 198.18.0.12 tcp dport 7442 drop",
    );
    wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "FIREWALL_OUTBOUND",
        "node-0",
    );
}

#[test]
fn stale_allow_list_after_an_address_change() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_stale", 2);
    wait_mesh(&fleet, 2);
    // node-1 lets in the collector and node-0's address only.
    nft(
        &fleet,
        1,
        "add table inet rmtest; \
         add chain inet rmtest input { type filter hook input priority 0; policy drop; }; \
         add rule inet rmtest input iif lo accept; \
         add rule inet rmtest input ct state established,related accept; \
         add rule inet rmtest input ip saddr 198.18.0.1 accept; \
         add rule inet rmtest input ip saddr 198.18.0.11 tcp dport 7442 accept",
    );
    // node-0 gets a new address (its agent reconnects from it); the new one
    // must survive the old primary's removal.
    fleet.exec(
        0,
        &["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
    );
    fleet.exec(0, &["ip", "addr", "add", "198.18.0.21/24", "dev", "eth0"]);
    fleet.exec(0, &["ip", "addr", "del", "198.18.0.11/24", "dev", "eth0"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "STALE_ALLOWLIST_ADDRESS",
        "node-1",
    );
    let detail = w["causes"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("198.18.0.11") && detail.contains("198.18.0.21"),
        "{w}"
    );
}

#[test]
fn a_name_still_pointing_at_the_old_address() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("why_dns", 2);
    // node-0's clients reach node-1 as db.fleet.test, through node-0's own
    // /etc/hosts (no name server: nothing leaves the fleet).
    fleet.etc_file(
        0,
        "hosts",
        "127.0.0.1 localhost\n198.18.0.12 db.fleet.test\n",
    );
    fleet.etc_file(0, "resolv.conf", "options timeout:1 attempts:1\n");
    fleet.start_collector_with(&["--name", "db.fleet.test=node-1"]);
    fleet.start_agents();
    wait_mesh(&fleet, 2);
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let w = why(&fleet, "node-0", "node-1")?;
            let checked = w["checked"].to_string();
            if checked.contains("resolves db.fleet.test to 198.18.0.12, node-1's") {
                Ok(())
            } else {
                Err(serde_json::to_string_pretty(&w).unwrap_or_default())
            }
        },
        "node-0 resolves db.fleet.test to node-1"
    );
    // `reachmap node` shows the lookups too.
    let out = fleet.cli(&["node", "node-0", "--format", "json"]);
    let node: Value = serde_json::from_slice(&out.stdout).expect("node JSON");
    assert_eq!(node["names"][0]["name"], "db.fleet.test", "{node}");
    assert_eq!(node["names"][0]["node"], "node-1", "{node}");
    assert_eq!(node["names"][0]["addresses"][0], "198.18.0.12", "{node}");
    let table = String::from_utf8_lossy(&fleet.cli(&["node", "node-0"]).stdout).into_owned();
    assert!(
        table.lines().any(|l| l.split_whitespace().take(3).eq([
            "db.fleet.test",
            "node-1",
            "198.18.0.12"
        ])),
        "{table}"
    );
    // node-1 gets a new address; the name still has the old one.
    fleet.exec(
        1,
        &["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
    );
    fleet.exec(1, &["ip", "addr", "add", "198.18.0.22/24", "dev", "eth0"]);
    fleet.exec(1, &["ip", "addr", "del", "198.18.0.12/24", "dev", "eth0"]);
    // Probes follow node-1 to its new address: the path works, but every
    // client that uses the name fails.
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "reachable",
        "STALE_DNS",
        "node-0",
    );
    let c = &w["causes"][0];
    let detail = c["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("db.fleet.test") && detail.contains("198.18.0.12"),
        "{w}"
    );
    assert!(
        c["fix"]
            .as_str()
            .is_some_and(|f| f.contains("db.fleet.test at 198.18.0.22")),
        "{w}"
    );
    assert!(
        evidence_text(&w).contains("198.18.0.12"),
        "the address change is evidence: {w}"
    );
    // Fixing the name clears the cause.
    fleet.etc_file(
        0,
        "hosts",
        "127.0.0.1 localhost\n198.18.0.22 db.fleet.test\n",
    );
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let w = why(&fleet, "node-0", "node-1")?;
            if w["verdict"] == "reachable" && w["causes"].as_array().is_some_and(|c| c.is_empty()) {
                Ok(())
            } else {
                Err(serde_json::to_string_pretty(&w).unwrap_or_default())
            }
        },
        "no cause once the name is right"
    );
}

#[test]
fn a_block_in_the_network_path() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("why_path", 2);
    wait_mesh(&fleet, 2);
    // The bridge between them drops node-0's probes to node-1: neither
    // host's own facts show anything.
    fleet.hub_exec(&[
        "nft",
        "add table bridge rmtest; \
         add chain bridge rmtest forward { type filter hook forward priority 0; policy accept; }; \
         add rule bridge rmtest forward ip saddr 198.18.0.11 ip daddr 198.18.0.12 tcp dport 7442 drop",
    ]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "NETWORK_PATH",
        "node-1",
    );
    assert!(
        evidence_text(&w).contains("the other way"),
        "direction evidence: {w}"
    );
}
