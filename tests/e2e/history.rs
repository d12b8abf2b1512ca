//! End-to-end tests of the store: history and `why --at` after a real nft
//! outage, FLAPPING from real flaps, no acked event lost or duplicated when
//! the collector is killed mid-burst, events kept by an agent restarted
//! while the collector is down, a full disk survived, a corrupt store
//! refused, and retention.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use reachmap_fleet_tests::{Fleet, assert_eventually, require_root};
use serde_json::Value;

mod why_support;
use why_support::{
    causes, cli_json as json, evidence, metric, rfc3339, running_fleet, wait_cause, wait_mesh,
};

const DROP_PROBES: &str = "add table inet rmhist; \
     add chain inet rmhist input { type filter hook input priority 0; policy accept; }; \
     add rule inet rmhist input ip saddr 198.18.0.11 tcp dport 7442 drop";

fn cell_state(fleet: &Fleet) -> Result<String, String> {
    let m = json(fleet, &["matrix", "--port", "7442", "--format", "json"])?;
    m["cells"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["src"] == "node-0" && c["dst"] == "node-1")
                .and_then(|c| c["state"].as_str().map(str::to_string))
        })
        .ok_or_else(|| format!("no cell node-0 -> node-1: {m}"))
}

fn wait_state(fleet: &Fleet, want: &str) {
    assert_eventually!(
        Duration::from_secs(30),
        || match cell_state(fleet)? {
            s if s == want => Ok(()),
            s => Err(s),
        },
        "node-0 -> node-1 is {want}"
    );
}

/// One outage: the drop rule until the cell is failing, a few seconds
/// more, then the rule goes.
fn outage(fleet: &Fleet) {
    fleet.exec(1, &["nft", DROP_PROBES]);
    wait_state(fleet, "failing");
    std::thread::sleep(Duration::from_secs(2));
    fleet.exec(1, &["nft", "delete table inet rmhist"]);
    wait_state(fleet, "ok");
}

#[test]
fn an_nft_outage_is_one_failing_interval_and_why_at_names_the_rule_after_its_deletion() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("hist_outage", 2);
    wait_mesh(&fleet, 2);
    fleet.exec(1, &["nft", DROP_PROBES]);
    wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "FIREWALL_INBOUND",
        "node-1",
    );
    let inside = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    fleet.exec(1, &["nft", "delete table inet rmhist"]);
    wait_state(&fleet, "ok");

    let h = assert_eventually!(
        Duration::from_secs(30),
        || {
            let h = json(
                &fleet,
                &[
                    "history", "node-0", "node-1", "--since", "10m", "--format", "json",
                ],
            )?;
            let failing: Vec<&Value> = h["intervals"]
                .as_array()
                .map(|i| i.iter().filter(|i| i["state"] == "failing").collect())
                .unwrap_or_default();
            if failing.len() == 1 && failing[0]["cause"]["code"] == "FIREWALL_INBOUND" {
                Ok(h)
            } else {
                Err(serde_json::to_string_pretty(&h).unwrap_or_default())
            }
        },
        "history shows one failing interval with FIREWALL_INBOUND"
    );
    assert_eq!(h["outages"], 1, "{h}");
    let last = h["intervals"]
        .as_array()
        .and_then(|i| i.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["state"], "ok", "it ends working again: {h}");
    assert!(last["end"].is_null(), "and still is: {h}");

    // Now the rule is gone; the moment inside the outage still names it.
    let at = rfc3339(inside);
    let w = json(
        &fleet,
        &["why", "node-0", "node-1", "--at", &at, "--format", "json"],
    )
    .expect("why --at");
    assert_eq!(w["verdict"], "unreachable", "{w}");
    let top = &w["causes"][0];
    assert_eq!(top["code"], "FIREWALL_INBOUND", "{w}");
    assert_eq!(top["node"], "node-1", "{w}");
    let ev = evidence(top);
    assert!(
        ev.contains("198.18.0.11") && ev.contains("drop"),
        "the rule: {ev}"
    );
    assert!(
        ev.contains("changed after this moment"),
        "its deletion: {ev}"
    );
    assert!(
        w["at"].as_str().is_some_and(|a| a.starts_with(&at[..16])),
        "{w}"
    );
    // And now, live: nothing to explain.
    let live = json(&fleet, &["why", "node-0", "node-1", "--format", "json"]).expect("why");
    assert_eq!(live["verdict"], "reachable", "{live}");
    // The table says the same for a person.
    let out = fleet.cli(&["history", "node-0", "node-1", "--since", "10m"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 outage, longest") && text.contains("FIREWALL_INBOUND on node-1"),
        "{text}"
    );
    // The matrix of that moment has the cell failing.
    let m = json(
        &fleet,
        &["matrix", "--port", "7442", "--at", &at, "--format", "json"],
    )
    .expect("matrix --at");
    let cell = m["cells"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["src"] == "node-0" && c["dst"] == "node-1")
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(cell["state"], "failing", "{m}");
}

#[test]
fn three_flaps_are_flapping_with_three_outages() {
    if !require_root() {
        return;
    }
    let fleet = running_fleet("hist_flap", 2);
    wait_mesh(&fleet, 2);
    for _ in 0..3 {
        outage(&fleet);
    }
    let w = assert_eventually!(
        Duration::from_secs(20),
        || {
            let w = json(&fleet, &["why", "node-0", "node-1", "--format", "json"])?;
            if causes(&w, "FLAPPING").is_empty() {
                Err(serde_json::to_string_pretty(&w).unwrap_or_default())
            } else {
                Ok(w)
            }
        },
        "why names FLAPPING"
    );
    assert_eq!(w["verdict"], "reachable", "it works now: {w}");
    let flap = causes(&w, "FLAPPING")[0];
    let detail = flap["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("3 outages in the last hour, longest"),
        "{detail}"
    );
    let ev = evidence(flap);
    assert_eq!(ev.lines().count(), 3, "{ev}");
    assert!(
        ev.contains("firewall_changed on node-1"),
        "what changed before: {ev}"
    );
    let h = json(
        &fleet,
        &[
            "history", "node-0", "node-1", "--since", "10m", "--format", "json",
        ],
    )
    .expect("history");
    assert_eq!(h["outages"], 3, "{h}");
}

/// A kernel-log fixture of `n` bridge-port records, each an event, logged
/// (by their timestamps since boot) a moment ago.
fn kernel_log_fixture(path: &Path, n: usize, node: usize) {
    let uptime_us = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(1_000_000, |s| (s * 1e6) as usize);
    let first = uptime_us.saturating_sub(n * 10 + 1_000_000);
    let mut text = String::new();
    for seq in 0..n {
        let state = if seq % 2 == 0 {
            "disabled"
        } else {
            "forwarding"
        };
        text.push_str(&format!(
            "6,{seq},{},-;br0: port {}(rmh{node}v{}) entered {state} state\n",
            first + seq * 10,
            seq % 50 + 1,
            seq % 1000
        ));
    }
    std::fs::write(path, text).expect("cannot write the kernel log fixture");
}

/// Every stored agent event of `node`: (instance, ids).
fn stored_ids(fleet: &Fleet, node: &str) -> Result<BTreeMap<String, Vec<u64>>, String> {
    let v = json(
        fleet,
        &[
            "events", node, "--since", "1h", "--limit", "100000", "--format", "json",
        ],
    )?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in v["events"].as_array().cloned().unwrap_or_default() {
        let instance = e["instance"].as_str().unwrap_or("0").to_string();
        if instance != "0" {
            out.entry(instance)
                .or_default()
                .push(e["id"].as_u64().unwrap_or(0));
        }
    }
    Ok(out)
}

fn kernel_events(fleet: &Fleet, node: &str) -> Result<usize, String> {
    let v = json(
        fleet,
        &[
            "events",
            node,
            "--since",
            "1h",
            "--limit",
            "100000",
            "--type",
            "kernel_link_up,kernel_link_down",
            "--format",
            "json",
        ],
    )?;
    Ok(v["events"].as_array().map_or(0, Vec::len))
}

#[test]
fn a_collector_killed_mid_burst_loses_no_acked_event_and_stores_none_twice() {
    if !require_root() {
        return;
    }
    const PER_NODE: usize = 3_400;
    let mut fleet = Fleet::new("hist_kill9", 3);
    fleet.start_collector();
    let mut fixtures = Vec::new();
    for i in 0..3 {
        let p = fleet.dir().join(format!("kmsg-{i}"));
        kernel_log_fixture(&p, PER_NODE, i);
        fixtures.push(p.to_str().expect("UTF-8").to_string());
    }
    for (i, f) in fixtures.iter().enumerate() {
        fleet.start_agent_with(i, &["--kmsg", f]);
    }
    // Kill it as soon as some of the burst is stored.
    let started = Instant::now();
    loop {
        if kernel_events(&fleet, "node-0").unwrap_or(0) > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no kernel events arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fleet.kill_collector();
    fleet.start_collector();
    // The agents' bursts are in: the stored counts stop growing.
    let mut last = Vec::new();
    let mut steady = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while steady < 3 {
        assert!(
            Instant::now() < deadline,
            "the counts never settled: {last:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
        let now: Vec<usize> = ["node-0", "node-1", "node-2"]
            .iter()
            .map(|n| kernel_events(&fleet, n).unwrap_or(0))
            .collect();
        steady = if now == last && now.iter().all(|k| *k > 0) {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    let total: usize = last.iter().sum();
    eprintln!("kernel events stored per node: {last:?}");
    assert!(
        total >= 10_000,
        "a burst of at least 10,000 events: {last:?}"
    );
    for n in ["node-0", "node-1", "node-2"] {
        let ids = stored_ids(&fleet, n).expect("events");
        assert_eq!(
            ids.len(),
            1,
            "{n}: one agent instance made them: {:?}",
            ids.keys()
        );
        for (instance, list) in ids {
            let distinct: BTreeSet<u64> = list.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                list.len(),
                "{n}/{instance}: an event stored twice"
            );
            let max = distinct.iter().max().copied().unwrap_or(0);
            assert_eq!(
                distinct.len() as u64,
                max,
                "{n}/{instance}: ids 1..={max} with none missing (a gap is a lost event)"
            );
        }
    }
}

#[test]
fn an_agent_restarted_while_the_collector_is_down_keeps_its_unsent_events() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("hist_outbox", 2);
    wait_mesh(&fleet, 2);
    // The instance of the agent that is about to make the event.
    let before: Vec<String> = stored_ids(&fleet, "node-0")
        .expect("events")
        .into_keys()
        .collect();
    assert_eq!(before.len(), 1, "one agent instance so far: {before:?}");
    fleet.stop_collector();
    fleet.exec(0, &["nft", "add table inet rmoutbox"]);
    // Long enough for the agent to read the change and make its event.
    std::thread::sleep(Duration::from_secs(3));
    fleet.stop_agent(0);
    fleet.start_agent(0);
    std::thread::sleep(Duration::from_secs(1));
    fleet.start_collector();
    let v = assert_eventually!(
        Duration::from_secs(30),
        || {
            let v = json(
                &fleet,
                &[
                    "events",
                    "node-0",
                    "--type",
                    "firewall_changed",
                    "--format",
                    "json",
                ],
            )?;
            if v["events"].as_array().is_some_and(|e| !e.is_empty()) {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
        "the ruleset change made while the collector was down is stored"
    );
    // Made by the agent that was then stopped, sent by the one started after
    // it: it came through the outbox on disk.
    let first = &v["events"][0];
    assert_eq!(first["instance"], before[0].as_str(), "{v}");
    assert!(
        first["detail"]
            .as_str()
            .is_some_and(|d| d.contains("by nft")),
        "{v}"
    );
}

/// A tmpfs of `mib` MiB mounted on `dir`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mkdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        SmallDisk(dir.to_owned())
    }

    /// Fills what is left; returns the filler's path.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k", "status=none"])
            .arg(format!("of={}", filler.display()))
            .status();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_stops_acks_keeps_live_state_and_recovers_by_itself() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("hist_diskfull", 2);
    let disk = SmallDisk::mount(&fleet.collector_data(), 24);
    fleet.start_collector();
    fleet.start_agents();
    wait_mesh(&fleet, 2);
    let filler = disk.fill();
    fleet.exec(1, &["nft", "add table inet rmfull"]);
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
    std::fs::remove_file(&filler).expect("free the disk");
    assert_eventually!(
        Duration::from_secs(60),
        || {
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
            )?;
            if v["events"].as_array().is_some_and(|e| !e.is_empty()) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
        "the event made while the disk was full is stored once there is room"
    );
    assert_eq!(
        metric(&fleet, "reachmap_store_writable").expect("metric"),
        1.0
    );
    let log = fleet.collector_log();
    assert!(log.contains("the store cannot commit"), "logged: {log}");
    // `disk` goes first (a lazy unmount), then the fleet and its directory.
}

#[test]
fn a_corrupt_store_is_a_one_line_error_and_store_recover_starts_afresh() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("hist_corrupt", 1);
    fleet.trust();
    let store = fleet.collector_data().join("store.db");
    std::fs::write(&store, vec![0x42u8; 16 * 1024]).expect("write garbage");
    let out = fleet.collector_run(&[], Duration::from_secs(20));
    assert!(!out.status.success(), "a corrupt store must stop the start");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let line = err
        .lines()
        .rfind(|l| l.contains("store.db"))
        .unwrap_or_default();
    assert!(line.contains("--store-recover"), "{err}");
    fleet.start_collector_with(&["--store-recover"]);
    // The garbage held nothing to salvage: the old tokens are gone, and the
    // log says what to do.
    assert!(
        fleet.collector_log().contains("make new tokens"),
        "{}",
        fleet.collector_log()
    );
    let token = String::from_utf8_lossy(&fleet.cli(&["token", "create"]).stdout)
        .trim()
        .to_string();
    fleet.start_agent_with(0, &["--enroll-token", &token]);
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let v = json(&fleet, &["events", "node-0", "--format", "json"])?;
            if v["events"].as_array().is_some_and(|e| !e.is_empty()) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
        "the new store takes events"
    );
    let aside = std::fs::read_dir(fleet.collector_data())
        .expect("ls")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("broken-"));
    assert!(aside, "the corrupt file is kept aside");
}

#[test]
fn retention_prunes_old_rows_and_a_moment_before_it_is_refused() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("hist_retention", 2);
    fleet.start_collector_with(&["--retention", "10s"]);
    fleet.start_agents();
    wait_mesh(&fleet, 2);
    let start = SystemTime::now();
    assert_eventually!(
        Duration::from_secs(60),
        || match metric(&fleet, "reachmap_store_pruned_rows_total")? {
            n if n > 0.0 => Ok(()),
            n => Err(format!("{n} rows pruned")),
        },
        "old rows are pruned"
    );
    let v = json(&fleet, &["events", "--since", "1h", "--format", "json"]).expect("events");
    assert!(v["retained_since"].is_string(), "{v}");
    let at = rfc3339(start - Duration::from_secs(60));
    let out = fleet.cli(&["why", "node-0", "node-1", "--at", &at]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before what the store keeps"), "{err}");
}
