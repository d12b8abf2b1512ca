//! Fleet findings and what-if end to end, over real namespaces: a drop on
//! the bridge between two groups is one partition with the right members; a
//! node cut off is isolated, then only inbound; `what-if` with a ruleset
//! dropping a port in use lists exactly the cells that then really break,
//! and exits 1, and with a harmless one exits 0; `what-if --address` names
//! the allow-list rule and the name that would go stale.

mod why_support;

use reachmap_fleet_tests::{Fleet, assert_eventually, ensure, require_root};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use why_support::{cli_json, running_fleet, wait_mesh};

fn findings(fleet: &Fleet) -> Result<Value, String> {
    cli_json(fleet, &["findings", "--format", "json"])
}

/// Waits until `findings` holds exactly these kinds; returns the answer.
fn wait_kinds(fleet: &Fleet, kinds: &[&str], what: &str) -> Value {
    assert_eventually!(
        Duration::from_secs(60),
        || {
            let r = findings(fleet)?;
            let got: Vec<&str> = r["findings"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f["kind"].as_str()).collect())
                .unwrap_or_default();
            ensure(
                got == kinds,
                serde_json::to_string_pretty(&r).unwrap_or_default(),
            )?;
            Ok::<Value, String>(r)
        },
        "{what}: findings {kinds:?}"
    )
}

fn members(group: &Value) -> BTreeSet<String> {
    group["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_drop_between_two_groups_on_the_bridge_is_one_partition() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("findings_partition", 5);
    wait_mesh(&fleet, 5);
    // node-0..2 (198.18.0.11-13) and node-3..4 (.14-.15): the bridge drops
    // everything between the groups; each still reaches the collector.
    fleet.hub_exec(&[
        "nft",
        "add table bridge rmsplit; \
         add chain bridge rmsplit forward { type filter hook forward priority 0; policy accept; }; \
         add rule bridge rmsplit forward ip saddr 198.18.0.11-198.18.0.13 ip daddr 198.18.0.14-198.18.0.15 drop; \
         add rule bridge rmsplit forward ip saddr 198.18.0.14-198.18.0.15 ip daddr 198.18.0.11-198.18.0.13 drop",
    ]);
    let r = wait_kinds(&fleet, &["partition"], "split");
    let f = &r["findings"][0];
    let groups: Vec<BTreeSet<String>> = f["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(members)
        .collect();
    assert_eq!(
        groups,
        vec![
            set(&["node-0", "node-1", "node-2"]),
            set(&["node-3", "node-4"])
        ],
        "{f}"
    );
    // Every cell it covers crosses the split, and they are all of them.
    let side = |n: &str| ["node-0", "node-1", "node-2"].contains(&n);
    let cells = f["cells"].as_array().expect("cells");
    assert!(
        cells
            .iter()
            .all(|c| side(c["src"].as_str().unwrap_or_default())
                != side(c["dst"].as_str().unwrap_or_default())),
        "{f}"
    );
    assert_eq!(f["cell_count"].as_u64(), Some(cells.len() as u64));
    assert!(cells.len() >= 12, "3 x 2 probe cells each way: {f}");
    assert_eq!(r["uncovered_cells"], 0, "{r}");
    // The table says it in a line; the HTTP API gives the same JSON.
    let table = String::from_utf8_lossy(&fleet.cli(&["findings"]).stdout).into_owned();
    assert!(table.contains("[partition] the fleet is split"), "{table}");
    let http: Value =
        serde_json::from_slice(&fleet.http_get("/api/v1/findings").stdout).expect("HTTP JSON");
    assert_eq!(http["findings"][0]["kind"], "partition", "{http}");
}

#[test]
fn a_node_cut_off_is_isolated_then_only_inbound() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("findings_isolated", 4);
    wait_mesh(&fleet, 4);
    // node-3 drops new connections from its peers and everything to them;
    // the collector (198.18.0.1) still gets through.
    fleet.exec(
        3,
        &[
            "nft",
            "add table inet rmiso; \
             add chain inet rmiso input { type filter hook input priority 0; policy accept; }; \
             add chain inet rmiso output { type filter hook output priority 0; policy accept; }; \
             add rule inet rmiso input ip saddr 198.18.0.11-198.18.0.13 ct state new drop; \
             add rule inet rmiso output ip daddr 198.18.0.11-198.18.0.13 drop",
        ],
    );
    let r = wait_kinds(&fleet, &["isolated"], "cut both ways");
    assert_eq!(r["findings"][0]["node"], "node-3", "{r}");
    // Let it send again (the replies are not new): only inbound is cut now.
    fleet.exec(3, &["nft", "flush chain inet rmiso output"]);
    let r = wait_kinds(&fleet, &["isolated_inbound"], "cut inbound only");
    let f = &r["findings"][0];
    assert_eq!(f["node"], "node-3", "{r}");
    assert!(
        f["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .all(|c| c["dst"] == "node-3"),
        "{f}"
    );
}

/// The probe cells that are failing now, as (src, dst).
fn failing(fleet: &Fleet) -> Result<BTreeSet<(String, String)>, String> {
    let m = cli_json(fleet, &["matrix", "--port", "7442", "--format", "json"])?;
    Ok(m["cells"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| c["state"] == "failing")
        .map(|c| {
            (
                c["src"].as_str().unwrap_or_default().to_string(),
                c["dst"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn what_if(fleet: &Fleet, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["what-if"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = fleet.cli(&all);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("what-if JSON: {e}: {out:?}"));
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn what_if_a_ruleset_names_the_cells_that_then_really_break() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("findings_whatif", 3);
    wait_mesh(&fleet, 3);
    // node-1's proposed ruleset, in nft syntax: it would drop node-0's
    // probes (198.18.0.11) and let node-2's through.
    let breaking = fleet.dir().join("breaking.nft");
    std::fs::write(
        &breaking,
        "table inet rmwhatif {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    ip saddr 198.18.0.11 tcp dport 7442 drop\n  }\n}\n",
    )
    .expect("write ruleset");
    let path = breaking.to_str().expect("utf-8");
    let (code, v) = what_if(&fleet, &["node-1", "--ruleset", path]);
    assert_eq!(code, 1, "something would break: {v}");
    let predicted: BTreeSet<(String, String)> = v["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .filter(|c| c["port"] == 7442)
        .map(|c| {
            (
                c["src"].as_str().unwrap_or_default().to_string(),
                c["dst"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        predicted,
        BTreeSet::from([("node-0".to_string(), "node-1".to_string())]),
        "{v}"
    );
    assert!(
        v["breaks"][0]["decided_by"]
            .as_str()
            .is_some_and(|d| d.contains("drop")),
        "{v}"
    );
    // A harmless ruleset (iptables-save text this time) breaks nothing.
    let harmless = fleet.dir().join("harmless.rules");
    std::fs::write(
        &harmless,
        "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 9999 -j DROP\nCOMMIT\n",
    )
    .expect("write ruleset");
    let (code, v) = what_if(
        &fleet,
        &["node-1", "--ruleset", harmless.to_str().expect("utf-8")],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["would_break"], false, "{v}");
    // A broken file is a one-line error with exit status 2.
    let bad = fleet.dir().join("bad.rules");
    std::fs::write(&bad, "*filter\n-A INPUT -j DROP\n").expect("write");
    let out = fleet.cli(&[
        "what-if",
        "node-1",
        "--ruleset",
        bad.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );

    // Load the breaking ruleset for real: exactly the predicted cells fail.
    fleet.exec(1, &["nft", "-f", path]);
    assert_eventually!(
        Duration::from_secs(40),
        || {
            let now = failing(&fleet)?;
            ensure(now == predicted, now)
        },
        "the matrix fails exactly where what-if said"
    );
}

#[test]
fn what_if_an_address_change_names_the_allow_list_that_would_go_stale() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("findings_whatif_addr", 3);
    // node-1's clients reach node-0 as app.fleet.test, through node-1's own
    // /etc/hosts (no name server: nothing leaves the fleet).
    fleet.etc_file(
        1,
        "hosts",
        "127.0.0.1 localhost\n198.18.0.11 app.fleet.test\n",
    );
    fleet.etc_file(1, "resolv.conf", "options timeout:1 attempts:1\n");
    fleet.start_collector_with(&["--name", "app.fleet.test=node-0"]);
    fleet.start_agents();
    wait_mesh(&fleet, 3);
    // node-2 lets only node-0 and node-1 in on the probe port, by address.
    fleet.exec(
        2,
        &[
            "nft",
            "add table inet rmallow; \
             add chain inet rmallow input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmallow input ip saddr { 198.18.0.11, 198.18.0.12 } tcp dport 7442 accept; \
             add rule inet rmallow input tcp dport 7442 drop",
        ],
    );
    wait_mesh(&fleet, 3);
    let (code, v) = assert_eventually!(
        Duration::from_secs(30),
        || {
            let (code, v) = what_if(&fleet, &["node-0", "--address", "198.18.0.11=198.18.0.99"]);
            ensure(v["stale"].as_array().is_some_and(|s| s.len() == 2), &v)?;
            Ok::<(i32, Value), String>((code, v))
        },
        "node-2's ruleset and node-1's lookup of app.fleet.test are known"
    );
    assert_eq!(code, 1, "{v}");
    let breaks: Vec<(&str, &str)> = v["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|c| {
            (
                c["src"].as_str().unwrap_or(""),
                c["dst"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(breaks.contains(&("node-0", "node-2")), "{v}");
    assert!(
        !breaks.iter().any(|(_, d)| *d == "node-1"),
        "node-1 lets anyone in: {v}"
    );
    let stale = |kind: &str| {
        v["stale"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["kind"] == kind))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {v}"))
    };
    let rule = stale("allow_list");
    assert_eq!(rule["node"], "node-2", "{v}");
    assert!(
        rule["fix"]
            .as_str()
            .is_some_and(|f| f.contains("replace 198.18.0.11 with 198.18.0.99")),
        "{v}"
    );
    let name = stale("name");
    assert_eq!(name["node"], "node-1", "{v}");
    assert!(
        name["detail"]
            .as_str()
            .is_some_and(|d| d.contains("app.fleet.test resolves to 198.18.0.11 on node-1")),
        "{v}"
    );
}
