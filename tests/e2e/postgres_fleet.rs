//! A fleet whose collector keeps its store in PostgreSQL: the database runs
//! on a host of its own (node-2's namespace, no agent there), reached over
//! the fleet's bridge with TLS verified against the server's CA. History
//! and `why --at` survive a kill -9 of the collector; a collector cut off
//! from the database by an nft drop stops acking, says so, keeps serving
//! live state and catches up when the database is back. Two collectors on
//! one database list each other, answer history for each other's agents,
//! and the fleet lock moves to the survivor when its holder is killed. A
//! fleet split over two collectors is one mesh, planned by the lock holder,
//! and planned by the other when the holder dies; either collector shows
//! and explains the other's agents' cells.

use std::time::{Duration, SystemTime};

use reachmap_fleet_tests::postgres::{Postgres, require_postgres};
use reachmap_fleet_tests::{Fleet, assert_eventually, binary};
use serde_json::Value;

mod why_support;
use why_support::{cli_json as json, metric, rfc3339, wait_cause, wait_mesh};

/// The database's host.
const DB_NODE: usize = 2;

const DROP_PROBES: &str = "add table inet rmpg; \
     add chain inet rmpg input { type filter hook input priority 0; policy accept; }; \
     add rule inet rmpg input ip saddr 198.18.0.11 tcp dport 7442 drop";

/// Two agents (node-0, node-1) and a collector on a PostgreSQL server on
/// node-2; returns once the mesh is ok.
/// The fleet drops first: its collector stops before the database does.
fn fleet_on_postgres(test: &str) -> (Postgres, Fleet) {
    let mut fleet = Fleet::new(test, 3);
    let node = fleet.node(DB_NODE).clone();
    let pg = Postgres::start_in(&node.netns, &node.addr.to_string());
    let ca = pg.ca_pem_path().display().to_string();
    fleet.use_store(&["--store", &pg.url_tls(), "--store-ca", &ca]);
    fleet.start_collector();
    fleet.start_agent(0);
    fleet.start_agent(1);
    wait_mesh(&fleet, 2);
    (pg, fleet)
}

/// An nft drop of node-0's probes on node-1, until `why` names it; lifted
/// two seconds later. Returns a moment inside it.
fn outage(fleet: &Fleet) -> SystemTime {
    fleet.exec(1, &["nft", DROP_PROBES]);
    wait_cause(
        fleet,
        "node-0",
        "node-1",
        "unreachable",
        "FIREWALL_INBOUND",
        "node-1",
    );
    let inside = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    fleet.exec(1, &["nft", "delete table inet rmpg"]);
    inside
}

fn cell_state(fleet: &Fleet) -> Result<String, String> {
    let m = json(fleet, &["matrix", "--port", "7442", "--format", "json"])?;
    state_of(&m, "node-0", "node-1")
}

/// The state of `src -> dst` in a matrix answer.
fn state_of(m: &Value, src: &str, dst: &str) -> Result<String, String> {
    m["cells"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["src"] == src && c["dst"] == dst)
                .and_then(|c| c["state"].as_str().map(str::to_string))
        })
        .ok_or_else(|| format!("no cell {src} -> {dst}: {m}"))
}

#[test]
fn a_collector_on_postgres_keeps_history_across_a_kill_and_why_at_names_the_rule() {
    if !require_postgres() {
        return;
    }
    let (pg, mut fleet) = fleet_on_postgres("pg_history");
    let inside = outage(&fleet);
    assert_eventually!(
        Duration::from_secs(30),
        || match cell_state(&fleet)? {
            s if s == "ok" => Ok(()),
            s => Err(s),
        },
        "node-0 -> node-1 is ok again"
    );

    fleet.kill_collector();
    fleet.start_collector();
    wait_mesh(&fleet, 2);
    assert!(
        !fleet.collector_data().join("store.db").exists(),
        "nothing is kept in a file beside the database"
    );

    let at = rfc3339(inside);
    let w = json(
        &fleet,
        &["why", "node-0", "node-1", "--at", &at, "--format", "json"],
    )
    .expect("why --at");
    assert_eq!(w["verdict"], "unreachable", "{w}");
    assert_eq!(w["causes"][0]["code"], "FIREWALL_INBOUND", "{w}");
    assert_eq!(w["causes"][0]["node"], "node-1", "{w}");
    let h = json(
        &fleet,
        &[
            "history", "node-0", "node-1", "--since", "10m", "--format", "json",
        ],
    )
    .expect("history");
    let failing = h["intervals"]
        .as_array()
        .map(|i| i.iter().filter(|i| i["state"] == "failing").count())
        .unwrap_or_default();
    assert_eq!(failing, 1, "{h}");
    // The rows are the database's.
    let nodes = pg.psql("SELECT string_agg(name, ',' ORDER BY name) FROM nodes");
    assert_eq!(nodes, "node-0,node-1");
    let changes: u64 = pg
        .psql("SELECT count(*) FROM cell_changes")
        .parse()
        .expect("a count");
    assert!(changes >= 3, "{changes} cell changes");
    let plain = pg.psql(
        "SELECT count(*) FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
         WHERE a.application_name = 'reachmap-collector' AND NOT coalesce(s.ssl, false)",
    );
    assert_eq!(plain, "0", "every connection of the collector is over TLS");
}

#[test]
fn a_collector_cut_off_from_its_database_stops_acking_says_so_and_catches_up() {
    if !require_postgres() {
        return;
    }
    let (pg, fleet) = fleet_on_postgres("pg_partition");
    let cut = format!(
        "add table inet rmcut; \
         add chain inet rmcut input {{ type filter hook input priority 0; policy accept; }}; \
         add rule inet rmcut input ip saddr 198.18.0.1 tcp dport {} drop",
        pg.port()
    );
    fleet.exec(DB_NODE, &["nft", &cut]);
    // A change made while the database is out of reach.
    fleet.exec(1, &["nft", "add table inet rmwhilecut"]);
    assert_eventually!(
        Duration::from_secs(60),
        || {
            let out = fleet.cli(&["nodes"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("store takes no writes") {
                Ok(())
            } else {
                Err(text)
            }
        },
        "reachmap nodes says the store takes no writes"
    );
    assert_eq!(
        metric(&fleet, "reachmap_store_writable").expect("metric"),
        0.0
    );
    // Live state is still served.
    assert_eq!(cell_state(&fleet).expect("matrix"), "ok");
    let stored = || {
        pg.psql("SELECT count(*) FROM events WHERE node = 'node-1' AND kind = 'firewall_changed'")
    };
    assert_eq!(stored(), "0", "nothing reached the database");

    fleet.exec(DB_NODE, &["nft", "delete table inet rmcut"]);
    assert_eventually!(
        Duration::from_secs(60),
        || match stored().as_str() {
            "0" => Err("not yet".to_string()),
            _ => Ok(()),
        },
        "the event made while the database was cut off is stored once it is back"
    );
    assert_eventually!(
        Duration::from_secs(30),
        || match metric(&fleet, "reachmap_store_writable")? {
            1.0 => Ok(()),
            v => Err(format!("writable {v}")),
        },
        "the store takes writes again"
    );
    let v = json(
        &fleet,
        &[
            "events",
            "node-1",
            "--type",
            "firewall_changed",
            "--format",
            "json",
        ],
    )
    .expect("events");
    assert!(v["events"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    let log = fleet.collector_log();
    assert!(log.contains("the store cannot commit"), "logged: {log}");
    assert!(
        log.contains("the store takes writes again"),
        "logged: {log}"
    );
}

/// The second collector's host and its gRPC URL.
const B_NODE: usize = 3;
const B_URL: &str = "https://198.18.0.14:7440";

/// `reachmap collectors --format json` asked of the collector at `url`.
fn collectors(fleet: &Fleet, url: &str, bundle: &str) -> Result<Vec<Value>, String> {
    let out = fleet.cli_as(
        &["--collector", url, "--credentials", bundle],
        &["collectors", "--format", "json"],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v.as_array().cloned().ok_or_else(|| v.to_string())
}

fn by_name<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["name"] == name)
}

/// A fleet of `hosts` whose first collector, collector-a, keeps its store
/// on a PostgreSQL server on node-2; returns the database, the fleet, the
/// database's URL and its CA file, for a second collector.
fn shared_fleet(test: &str, hosts: usize) -> (Postgres, Fleet, String, String) {
    let mut fleet = Fleet::new(test, hosts);
    let db = fleet.node(DB_NODE).clone();
    let pg = Postgres::start_in(&db.netns, &db.addr.to_string());
    let ca = pg.ca_pem_path().display().to_string();
    let url = pg.url_tls();
    fleet.use_store(&["--store", &url, "--store-ca", &ca]);
    fleet.start_collector_with(&["--collector-name", "collector-a"]);
    (pg, fleet, url, ca)
}

/// The second collector, on node-3: the same CA and database.
fn start_collector_b(fleet: &mut Fleet, url: &str, ca: &str) {
    let tls = fleet.collector_data().join("tls");
    let data_b = fleet.dir().join("collector-b-data");
    let config_b = fleet.dir().join("collector-b.toml");
    std::fs::write(&config_b, "").expect("config");
    let path = |p: &std::path::Path| p.display().to_string();
    let (bin, data_b, config_b) = (
        path(&binary("reachmap-collector")),
        path(&data_b),
        path(&config_b),
    );
    let (ca_cert, ca_key) = (path(&tls.join("ca.crt")), path(&tls.join("ca.key")));
    fleet.spawn(
        B_NODE,
        "collector-b",
        &[
            &bin,
            "--config",
            &config_b,
            "--collector-name",
            "collector-b",
            "--listen",
            "198.18.0.14:7440",
            "--http",
            "198.18.0.14:7441",
            "--data-dir",
            &data_b,
            "--ca-cert",
            &ca_cert,
            "--ca-key",
            &ca_key,
            "--store",
            url,
            "--store-ca",
            ca,
            "--probe-interval",
            "1s",
            "--probe-timeout",
            "1s",
        ],
    );
}

#[test]
fn two_collectors_share_the_database_and_the_survivor_takes_the_agents_and_the_lock() {
    if !require_postgres() {
        return;
    }
    let (pg, mut fleet, url, ca) = shared_fleet("pg_two", 4);
    let both_urls = format!("{},{B_URL}", reachmap_fleet_tests::COLLECTOR_URL);
    fleet.start_agent_with(0, &["--collector", &both_urls]);
    fleet.start_agent_with(1, &["--collector", &both_urls]);
    wait_mesh(&fleet, 2);
    let bundle = fleet.trust().operator_bundle.display().to_string();

    start_collector_b(&mut fleet, &url, &ca);
    let both = assert_eventually!(
        Duration::from_secs(30),
        || {
            let list = collectors(&fleet, B_URL, &bundle)?;
            let (a, b) = (by_name(&list, "collector-a"), by_name(&list, "collector-b"));
            match (a, b) {
                (Some(a), Some(b))
                    if a["alive"] == true && b["alive"] == true && a["agents"] == 2 =>
                {
                    Ok(list)
                }
                _ => Err(format!("{list:?}")),
            }
        },
        "the second collector lists both, with the agents on the first"
    );
    let leaders: Vec<&Value> = both.iter().filter(|c| c["leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "one leader: {both:?}");
    assert_eq!(
        leaders[0]["name"], "collector-a",
        "the first to start leads"
    );
    assert_eq!(by_name(&both, "collector-b").expect("b")["agents"], 0);

    // The first collector's agents, listed by the second.
    let out = fleet.cli_as(
        &["--collector", B_URL, "--credentials", &bundle],
        &["nodes", "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Value = serde_json::from_slice(&out.stdout).expect("json");
    for name in ["node-0", "node-1"] {
        let n = nodes
            .as_array()
            .and_then(|l| l.iter().find(|n| n["name"] == name))
            .unwrap_or_else(|| panic!("{name} through collector-b: {nodes}"));
        assert_eq!(n["connected"], true, "{n}");
        assert_eq!(n["collector"], "collector-a", "{n}");
    }

    // History the first collector stored, asked of the second.
    let out = fleet.cli_as(
        &["--collector", B_URL, "--credentials", &bundle],
        &["events", "node-0", "--since", "10m", "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        events["events"].as_array().is_some_and(|e| !e.is_empty()),
        "node-0's events through collector-b: {events}"
    );

    // An outage seen through the first collector, then over.
    let inside = outage(&fleet);
    wait_mesh(&fleet, 2);
    let count = || -> u64 {
        pg.psql("SELECT count(*) FROM events")
            .parse()
            .expect("a count")
    };
    let before = count();

    fleet.kill_collector();
    let on_b = |args: &[&str]| -> Result<Value, String> {
        let out = fleet.cli_as(&["--collector", B_URL, "--credentials", &bundle], args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    };
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let nodes = on_b(&["nodes", "--format", "json"])?;
            let here = nodes
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter(|n| n["connected"] == true && n.get("collector").is_none())
                        .count()
                })
                .unwrap_or(0);
            if here == 2 {
                Ok(())
            } else {
                Err(nodes.to_string())
            }
        },
        "both agents stream to collector-b within 10 s of the kill"
    );
    assert_eventually!(
        Duration::from_secs(20),
        || {
            let m = on_b(&["matrix", "--port", "7442", "--format", "json"])?;
            let ok = m["cells"]
                .as_array()
                .map(|c| c.iter().filter(|c| c["state"] == "ok").count())
                .unwrap_or(0);
            if ok == 2 { Ok(()) } else { Err(m.to_string()) }
        },
        "the matrix is whole again on collector-b"
    );
    assert!(count() >= before, "no stored event is lost");
    // The outage's facts arrived through the dead collector.
    let at = rfc3339(inside);
    let w = on_b(&["why", "node-0", "node-1", "--at", &at, "--format", "json"]).expect("why --at");
    assert_eq!(w["causes"][0]["code"], "FIREWALL_INBOUND", "{w}");
    assert_eq!(w["causes"][0]["node"], "node-1", "{w}");
    // A change made after the move is stored through the survivor.
    let changes = || -> u64 {
        pg.psql("SELECT count(*) FROM events WHERE node = 'node-1' AND kind = 'firewall_changed'")
            .parse()
            .expect("a count")
    };
    let seen = changes();
    fleet.exec(1, &["nft", "add table inet rmafter"]);
    assert_eventually!(
        Duration::from_secs(30),
        || match changes() {
            n if n > seen => Ok(()),
            n => Err(format!("{n} firewall changes stored")),
        },
        "an event made after the move is stored"
    );
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let list = collectors(&fleet, B_URL, &bundle)?;
            let b = by_name(&list, "collector-b").ok_or("no collector-b")?;
            let a = by_name(&list, "collector-a").ok_or("no collector-a")?;
            if b["leader"] == true && a["alive"] == false && a["leader"] == false {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        },
        "the survivor leads and the killed collector is listed as gone"
    );
    let log_b =
        std::fs::read_to_string(fleet.dir().join("node-3-collector-b.log")).unwrap_or_default();
    assert!(log_b.contains("leading fleet-wide work"), "{log_b}");
    drop(fleet);
    drop(pg);
}

/// The state of `src -> dst` on the probe port, as `collector` shows it.
fn cell_via(
    fleet: &Fleet,
    collector: &str,
    bundle: &str,
    src: &str,
    dst: &str,
) -> Result<String, String> {
    let out = fleet.cli_as(
        &["--collector", collector, "--credentials", bundle],
        &["matrix", "--port", "7442", "--format", "json"],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let m: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    state_of(&m, src, dst).map_err(|e| format!("through {collector}: {e}"))
}

#[test]
fn a_fleet_split_over_two_collectors_is_one_mesh_planned_by_the_lock_holder() {
    if !require_postgres() {
        return;
    }
    let (pg, mut fleet, url, ca) = shared_fleet("pg_split", 5);
    let bundle = fleet.trust().operator_bundle.display().to_string();
    let a_url = reachmap_fleet_tests::COLLECTOR_URL;
    // node-0 streams to collector-a only, node-1 to collector-b only.
    fleet.start_agent(0);
    start_collector_b(&mut fleet, &url, &ca);
    fleet.start_agent_with(1, &["--collector", B_URL]);
    let cross = |fleet: &Fleet| -> Result<(), String> {
        let there = cell_via(fleet, a_url, &bundle, "node-0", "node-1")?;
        let back = cell_via(fleet, B_URL, &bundle, "node-1", "node-0")?;
        if there == "ok" && back == "ok" {
            Ok(())
        } else {
            Err(format!("node-0 -> node-1 {there}, node-1 -> node-0 {back}"))
        }
    };
    assert_eventually!(
        Duration::from_secs(60),
        || cross(&fleet),
        "each collector's agent probes the other's: one mesh"
    );
    // Any collector answers for the whole fleet: collector-a shows
    // collector-b's agent's row, and explains its failure.
    assert_eq!(
        cell_via(&fleet, a_url, &bundle, "node-1", "node-0").as_deref(),
        Ok("ok")
    );
    fleet.exec(
        0,
        &[
            "nft",
            "add table inet rmsplit; \
             add chain inet rmsplit input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmsplit input ip saddr 198.18.0.12 tcp dport 7442 drop",
        ],
    );
    let w = wait_cause(
        &fleet,
        "node-1",
        "node-0",
        "unreachable",
        "FIREWALL_INBOUND",
        "node-0",
    );
    assert!(
        w["causes"][0]["evidence"].to_string().contains("rmsplit"),
        "the rule is named: {w}"
    );
    assert_eq!(
        cell_via(&fleet, a_url, &bundle, "node-1", "node-0").as_deref(),
        Ok("failing")
    );
    // Findings are over the whole fleet too: the lock holder's count the
    // failing cell of the other collector's agent, whose row it has only
    // from the database.
    assert_eventually!(
        Duration::from_secs(60),
        || {
            let out = fleet.cli_as(
                &["--collector", a_url, "--credentials", &bundle],
                &["findings", "--format", "json"],
            );
            let r: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
            if r["bad_cells"].as_u64().unwrap_or(0) >= 1 {
                Ok(())
            } else {
                Err(r.to_string())
            }
        },
        "collector-a's findings count node-1's failing cell"
    );
    fleet.exec(0, &["nft", "delete table inet rmsplit"]);
    assert_eventually!(
        Duration::from_secs(60),
        || cross(&fleet),
        "the mesh heals once the rule is gone"
    );
    let planner_of = |source: &str| {
        pg.psql(&format!(
            "SELECT collector FROM plans WHERE source = '{source}'"
        ))
    };
    assert_eq!(
        planner_of("node-1"),
        "collector-a",
        "the lock holder planned collector-b's agent"
    );
    assert_eq!(
        planner_of("node-0"),
        "",
        "its own agents' plans it sends, not stores"
    );
    let log_b =
        std::fs::read_to_string(fleet.dir().join("node-3-collector-b.log")).unwrap_or_default();
    assert!(
        !log_b.contains("wrote plans for other collectors"),
        "{log_b}"
    );

    // The lock holder dies: collector-b takes the lock, and the planning.
    fleet.kill_collector();
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let list = collectors(&fleet, B_URL, &bundle)?;
            let b = by_name(&list, "collector-b").ok_or("no collector-b")?;
            if b["leader"] == true {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        },
        "collector-b leads once collector-a is killed"
    );
    // collector-a comes back, now led; node-0's agent returns to it.
    fleet.start_collector_with(&["--collector-name", "collector-a"]);
    assert_eventually!(
        Duration::from_secs(60),
        || match planner_of("node-0").as_str() {
            "collector-b" => Ok(()),
            other => Err(format!("node-0 planned by {other:?}")),
        },
        "the new lock holder plans the other collector's agent"
    );
    assert_eventually!(
        Duration::from_secs(60),
        || cross(&fleet),
        "still one mesh under the new leader"
    );
    let list = collectors(&fleet, a_url, &bundle).expect("collectors through collector-a");
    let a = by_name(&list, "collector-a").expect("collector-a");
    assert_eq!(a["leader"], false, "{list:?}");
    drop(fleet);
    drop(pg);
}
