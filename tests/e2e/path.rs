//! Where in the path a block is, end to end over real namespaces:
//! `test-port --ports` tries many ports through temporary listeners and
//! tells a port filter between the hosts (here the forward chain of a router
//! namespace joining their two bridges, which neither host's ruleset shows)
//! from a host firewall whose rule the facts name, and from everything
//! passing; `trace` names that router as the last hop before a drop. And who holds a
//! declared service's port: another process is PORT_HELD_BY_OTHER.

mod why_support;

use reachmap_fleet_tests::{Fleet, ROUTER_LAN, assert_eventually, ensure, require_root};
use serde_json::Value;
use std::time::Duration;
use why_support::{cli_json, running_fleet, wait_cause, wait_mesh};

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");

const PORTS: &str = "80,443,8080,9000-9002";

fn test_ports(fleet: &Fleet, ports: &str) -> Result<Value, String> {
    cli_json(
        fleet,
        &[
            "test-port",
            "node-0",
            "node-1",
            "--ports",
            ports,
            "--timeout",
            "1s",
            "--format",
            "json",
        ],
    )
}

/// Each port's result word, by port.
fn results(v: &Value) -> Vec<(u64, String)> {
    v["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["port"].as_u64().unwrap_or_default(),
                        p["result"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn open_only(v: &Value, open: &[u64]) -> bool {
    results(v)
        .iter()
        .all(|(p, r)| (r == "open") == open.contains(p))
}

#[test]
fn many_ports_tell_a_filter_in_the_path_from_a_host_firewall() {
    if !require_root() {
        return;
    }
    let fleet = routed_fleet("path_ports");
    wait_mesh(&fleet, 2);

    // Nothing in the way: every port passes, and nothing is left listening.
    let v = test_ports(&fleet, PORTS).expect("test-port");
    assert_eq!(v["verdict"], "all_pass", "{v:#}");
    assert_eq!(results(&v).len(), 6, "{v:#}");
    assert!(open_only(&v, &[80, 443, 8080, 9000, 9001, 9002]), "{v:#}");
    let ss = fleet.exec(1, &["ss", "-Hltn", "sport = :9001"]);
    assert!(String::from_utf8_lossy(&ss.stdout).trim().is_empty());

    // The router between them lets node-0 reach node-1 on 80 and 443 only
    // (and the probe port, so the mesh stays as it was).
    fleet.router_exec(&[
        "nft",
        "add table inet rmports; \
         add chain inet rmports forward { type filter hook forward priority 0; policy accept; }; \
         add rule inet rmports forward ip saddr 198.18.0.11 ip daddr 198.18.1.12 tcp dport != { 80, 443, 7442 } drop",
    ]);
    let v = test_ports(&fleet, PORTS).expect("test-port");
    assert_eq!(v["verdict"], "path_filter", "{v:#}");
    assert!(open_only(&v, &[80, 443]), "{v:#}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("only 80 and 443 pass from node-0 to node-1")
            && detail.contains("a port filter in the path"),
        "{detail}"
    );
    let table = String::from_utf8_lossy(
        &fleet
            .cli(&[
                "test-port",
                "node-0",
                "node-1",
                "--ports",
                "80,8080",
                "--timeout",
                "1s",
            ])
            .stdout,
    )
    .into_owned();
    assert!(
        table.starts_with("PATH FILTER: node-0 -> node-1"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("8080") && l.contains("timeout")),
        "{table}"
    );

    // The router lets everything through again; node-1's own firewall drops
    // 8080: the blocked port is the host firewall's, by its rule.
    fleet.router_exec(&["nft", "delete table inet rmports"]);
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmhost; \
             add chain inet rmhost input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmhost input tcp dport 8080 drop",
        ],
    );
    let v = assert_eventually!(
        Duration::from_secs(20),
        || {
            let v = test_ports(&fleet, PORTS)?;
            ensure(v["verdict"] == "host_firewall", &v)?;
            Ok::<Value, String>(v)
        },
        "8080 blocked by node-1's firewall"
    );
    assert!(open_only(&v, &[80, 443, 9000, 9001, 9002]), "{v:#}");
    let blocked = v["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["port"] == 8080))
        .cloned()
        .expect("8080");
    let rule = blocked["host_firewall"].as_str().unwrap_or_default();
    assert!(
        rule.starts_with("node-1's firewall") && rule.contains("rmhost"),
        "{blocked:#}"
    );

    // A port something already holds on node-1 is not tested, and says who.
    let v = test_ports(&fleet, "80,7442").expect("test-port");
    let held = v["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["port"] == 7442))
        .cloned()
        .expect("7442");
    assert_eq!(held["result"], "not tested", "{v:#}");
    assert!(
        held["error"]
            .as_str()
            .is_some_and(|e| e.contains("in use on node-1")),
        "{held:#}"
    );
    assert_eq!(v["verdict"], "all_pass", "{v:#}");

    // A bad list is one line, and nothing runs.
    let out = fleet.cli(&["test-port", "node-0", "node-1", "--ports", "80,0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"0\"") && err.lines().count() == 1, "{err}");
}

#[test]
fn a_declared_port_held_by_another_process_names_both() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("path_held", 2);
    let config = fleet.dir().join("collector.toml");
    std::fs::write(
        &config,
        "[[services]]\nname = \"db\"\nport = 5432\nprocess = \"postgres\"\n",
    )
    .expect("write collector.toml");
    let config = config.to_str().expect("UTF-8 path").to_string();
    fleet.start_collector_with(&["--config", &config]);
    fleet.start_agents();
    wait_mesh(&fleet, 2);
    // Not postgres: the test tool took the port first.
    fleet.spawn(1, "squatter", &[TOOL, "listen", "0.0.0.0:5432"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:5432",
        "reachable",
        "PORT_HELD_BY_OTHER",
        "node-1",
    );
    let top = &w["causes"][0];
    let detail = top["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("reachmap-test") && detail.contains("not by process postgres"),
        "{top:#}"
    );
    let fix = top["fix"].as_str().unwrap_or_default();
    assert!(
        fix.starts_with("stop reachmap-test") && fix.ends_with("then start process postgres"),
        "{fix}"
    );
}

fn test_udp(fleet: &Fleet, dst: &str) -> Result<Value, String> {
    cli_json(
        fleet,
        &[
            "test-port",
            "--udp",
            "node-0",
            dst,
            "--timeout",
            "1s",
            "--format",
            "json",
        ],
    )
}

#[test]
fn udp_open_dropped_and_rejected() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("path_udp", 2);
    wait_mesh(&fleet, 2);

    let v = test_udp(&fleet, "node-1:9053").expect("test-port --udp");
    assert_eq!(v["protocol"], "udp", "{v:#}");
    assert_eq!(v["open"], true, "{v:#}");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("OPEN: node-0 -> node-1 (198.18.0.12) UDP port 9053")),
        "{v:#}"
    );
    // Nothing is left bound afterwards.
    let ss = fleet.exec(1, &["ss", "-Hlun", "sport = :9053"]);
    assert!(String::from_utf8_lossy(&ss.stdout).trim().is_empty());

    // node-1 drops 9053 and rejects 9054 (an ICMP port unreachable).
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmudp; \
             add chain inet rmudp input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmudp input udp dport 9053 drop; \
             add rule inet rmudp input udp dport 9054 reject",
        ],
    );
    let v = test_udp(&fleet, "node-1:9053").expect("test-port --udp");
    assert_eq!(v["open"], false, "{v:#}");
    assert!(v.get("icmp").is_none(), "a drop says nothing back: {v:#}");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nothing arrived and nothing came back")),
        "{v:#}"
    );
    let v = test_udp(&fleet, "node-1:9054").expect("test-port --udp");
    assert_eq!(v["open"], false, "{v:#}");
    assert_eq!(v["icmp"], "port_unreachable", "{v:#}");
    assert_eq!(v["outcome"], "refused", "{v:#}");
}

/// node-1 behind a router: node-0 (198.18.0.11) on the hub's bridge,
/// node-1 (198.18.1.12) on a second bridge, a router namespace forwarding
/// between them (198.18.0.254 on the first, 198.18.1.1 on the second) — one
/// router on the way, whose firewall is the filter in the path.
fn routed_fleet(test: &str) -> Fleet {
    let mut fleet = Fleet::new(test, 2);
    fleet.add_router(&[1]);
    fleet.start_collector();
    fleet.start_agents();
    fleet
}

fn trace(fleet: &Fleet) -> Value {
    cli_json(
        fleet,
        &[
            "trace",
            "node-0",
            "node-1:9000",
            "--max-hops",
            "6",
            "--format",
            "json",
        ],
    )
    .expect("trace")
}

#[test]
fn a_trace_names_the_router_after_which_a_drop_happens_and_why_says_so() {
    if !require_root() {
        return;
    }
    let mut fleet = routed_fleet("path_trace");
    wait_mesh(&fleet, 2);
    fleet.spawn(1, "listen", &[TOOL, "listen", "0.0.0.0:9000"]);

    // Open: the router answers hop 1, node-1 accepts at hop 2.
    let t = trace(&fleet);
    assert_eq!(t["reached"], true, "{t:#}");
    assert_eq!(t["hops"][0]["answer"], "time_exceeded", "{t:#}");
    assert_eq!(t["hops"][0]["address"], ROUTER_LAN, "{t:#}");
    assert_eq!(t["hops"][1]["answer"], "reached", "{t:#}");
    assert_eq!(t["hops"][1]["address"], "198.18.1.12", "{t:#}");

    // The router's forward chain drops node-1's port 9000.
    fleet.router_exec(&[
        "nft",
        "add table inet rmroute; \
         add chain inet rmroute forward { type filter hook forward priority 0; policy accept; }; \
         add rule inet rmroute forward ip daddr 198.18.1.12 tcp dport 9000 drop",
    ]);
    let t = trace(&fleet);
    assert_eq!(t["reached"], false, "{t:#}");
    assert_eq!(t["last_hop"]["address"], ROUTER_LAN, "{t:#}");
    assert_eq!(t["last_hop"]["ttl"], 1, "{t:#}");
    assert_eq!(t["hops"][1]["answer"], "silent", "{t:#}");
    assert!(
        t["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("blocked after hop 1, 198.18.0.254, before node-1")),
        "{t:#}"
    );

    // why: both ends allow it, so NETWORK_PATH — and now where.
    let w = assert_eventually!(
        Duration::from_secs(40),
        || {
            let w = cli_json(
                &fleet,
                &["why", "node-0", "node-1:9000", "--format", "json"],
            )?;
            let top = &w["causes"][0];
            ensure(
                top["code"] == "NETWORK_PATH"
                    && top["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("blocked after hop 1, 198.18.0.254")),
                &w,
            )?;
            Ok::<Value, String>(w)
        },
        "why names the router"
    );
    let evidence = w["causes"][0]["evidence"].to_string();
    assert!(
        evidence.contains(
            "trace node-0 -> 198.18.1.12:9000: hop 1: 198.18.0.254 (time exceeded), hop 2: no answer"
        ),
        "{w:#}"
    );
}

#[test]
fn a_proxy_answering_502_is_followed_to_its_firewalled_upstream() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("path_upstream", 3);
    let config = fleet.dir().join("collector.toml");
    std::fs::write(
        &config,
        "[[services]]\nname = \"web\"\nport = 8081\npath = \"/\"\nupstreams = [\"node-2:8080\"]\n",
    )
    .expect("write collector.toml");
    let config = config.to_str().expect("UTF-8 path").to_string();
    fleet.start_collector_with(&["--config", &config]);
    fleet.start_agents();
    wait_mesh(&fleet, 3);
    // node-2 is the application; node-1 a proxy in front of it.
    fleet.spawn(2, "app", &[TOOL, "listen", "0.0.0.0:8080"]);
    fleet.spawn(
        1,
        "proxy",
        &[TOOL, "proxy", "0.0.0.0:8081", "198.18.0.13:8080"],
    );
    // node-2's firewall drops the proxy's connections: it answers 502.
    fleet.exec(
        2,
        &[
            "nft",
            "add table inet rmapp; \
             add chain inet rmapp input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmapp input ip saddr 198.18.0.12 tcp dport 8080 drop",
        ],
    );
    let w = assert_eventually!(
        Duration::from_secs(40),
        || {
            let w = cli_json(
                &fleet,
                &["why", "node-0", "node-1:8081", "--format", "json"],
            )?;
            let top = &w["causes"][0];
            ensure(
                top["code"] == "HTTP_STATUS"
                    && top["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("FIREWALL_INBOUND on node-2"))
                    && top["evidence"]
                        .to_string()
                        .contains("upstream node-1 -> node-2:8080: failing"),
                &w,
            )?;
            Ok::<Value, String>(w)
        },
        "why follows the 502 to node-2's firewall"
    );
    let top = &w["causes"][0];
    assert_eq!(top["node"], "node-1", "{top:#}");
    assert_eq!(
        top["detail"],
        "node-1:8081 answers 502 (service \"web\") because node-1 cannot reach node-2:8080: FIREWALL_INBOUND on node-2",
        "{top:#}"
    );
    let evidence = top["evidence"].to_string();
    assert!(
        evidence.contains("rule `ip saddr 198.18.0.12 tcp dport 8080 drop`"),
        "the upstream cell and the rule: {top:#}"
    );
}

/// `why node-0 node-1:PORT` once its top cause is `code`.
fn udp_why(fleet: &Fleet, port: u16, code: &str) -> Value {
    let target = format!("node-1:{port}");
    assert_eventually!(
        Duration::from_secs(40),
        || {
            let w = cli_json(fleet, &["why", "node-0", &target, "--format", "json"])?;
            ensure(
                w["probe"]["kind"] == "udp" && w["causes"][0]["code"] == code,
                &w,
            )?;
            Ok::<Value, String>(w)
        },
        "why explains the UDP service"
    )
}

#[test]
fn declared_udp_services_are_probed_and_explained() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("path_udp_services", 2);
    let config = fleet.dir().join("collector.toml");
    // dns answers (so silence fails it); syslog does not (only an ICMP
    // error can).
    std::fs::write(
        &config,
        "[[services]]\nname = \"dns\"\nport = 5353\nprotocol = \"udp\"\nexpect_reply = true\n\
         send_hex = \"1234 0100 0001 0000 0000 0000 00 0002 0001\"\n\n\
         [[services]]\nname = \"syslog\"\nport = 5514\nprotocol = \"udp\"\n",
    )
    .expect("write collector.toml");
    let config = config.to_str().expect("UTF-8 path").to_string();
    fleet.start_collector_with(&["--config", &config]);
    fleet.start_agents();
    wait_mesh(&fleet, 2);
    let echo = fleet.spawn(1, "dns", &[TOOL, "udp-echo", "0.0.0.0:5353"]);
    fleet.spawn(1, "syslog", &[TOOL, "listen", "udp:0.0.0.0:5514"]);

    // Both work: the one that answers, and the one that keeps quiet.
    for port in ["5353", "5514"] {
        let target = format!("node-1:{port}");
        let w = assert_eventually!(
            Duration::from_secs(30),
            || {
                let w = cli_json(&fleet, &["why", "node-0", &target, "--format", "json"])?;
                ensure(
                    w["probe"]["kind"] == "udp" && w["probe"]["state"] == "ok",
                    &w,
                )?;
                Ok::<Value, String>(w)
            },
            "the UDP service is ok"
        );
        assert_eq!(w["verdict"], "reachable", "{w:#}");
    }

    // node-1 drops the one that answers, and rejects the quiet one.
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmudp; \
             add chain inet rmudp input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmudp input udp dport 5353 drop; \
             add rule inet rmudp input udp dport 5514 reject",
        ],
    );
    let w = udp_why(&fleet, 5353, "FIREWALL_INBOUND");
    assert_eq!(w["probe"]["failure"], "timeout", "{w:#}");
    assert!(
        w["causes"][0]["evidence"]
            .to_string()
            .contains("udp dport 5353 drop"),
        "{w:#}"
    );
    let w = udp_why(&fleet, 5514, "FIREWALL_INBOUND");
    assert_eq!(w["probe"]["failure"], "refused", "{w:#}");
    assert!(
        w["causes"][0]["evidence"]
            .to_string()
            .contains("udp dport 5514 reject"),
        "{w:#}"
    );

    // The firewall goes, and the DNS server dies: nothing is bound there.
    fleet.exec(1, &["nft", "delete table inet rmudp"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(echo).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the UDP service");
    let w = udp_why(&fleet, 5353, "NOT_LISTENING");
    assert_eq!(
        w["causes"][0]["detail"], "nothing listens on UDP port 5353 on node-1",
        "{w:#}"
    );
}
