//! End-to-end tests of the agent's fact sources: an agent never hangs at
//! start whatever its kernel log holds, a source that cannot read shows as
//! down (in `reachmap nodes`, `reachmap node` and `/metrics`) and recovers
//! by itself once fixed, and a state directory shared with other agents or
//! made read-only never blinds the kernel log reader.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reachmap_fleet_tests::cgroup::MemoryCgroup;
use reachmap_fleet_tests::{Fleet, assert_eventually, require_root};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");

fn node_detail(fleet: &Fleet, name: &str) -> Result<Value, String> {
    let out = fleet.cli(&["node", name, "--format", "json"]);
    if !out.status.success() {
        return Err(format!(
            "reachmap node {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
}

/// The source's entry in `reachmap node NAME --format json`.
fn source(d: &Value, name: &str) -> Option<Value> {
    d["sources"]
        .as_array()?
        .iter()
        .find(|s| s["source"] == name)
        .cloned()
}

/// Waits until node NAME's source is in `state`; returns its entry.
fn wait_source(fleet: &Fleet, node: &str, name: &str, state: &str) -> Value {
    assert_eventually!(
        Duration::from_secs(45),
        || {
            let d = node_detail(fleet, node)?;
            match source(&d, name) {
                Some(s) if s["state"] == state => Ok(s),
                _ => Err(serde_json::to_string_pretty(&d["sources"]).unwrap_or_default()),
            }
        },
        "{node}: source {name} {state}"
    )
}

/// The node's entry in `reachmap nodes --format json`.
fn summary(fleet: &Fleet, node: &str) -> Value {
    let nodes = fleet.nodes_json();
    nodes
        .as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == node).cloned())
        .unwrap_or_else(|| panic!("{node} not in {nodes:#}"))
}

/// Waits until the node is connected with its interfaces reported: its
/// first snapshot arrived.
fn wait_snapshot(fleet: &Fleet, node: &str, within: Duration) {
    assert_eventually!(
        within,
        || {
            let nodes = fleet.try_nodes_json()?;
            let n = nodes
                .as_array()
                .and_then(|l| l.iter().find(|n| n["name"] == node).cloned())
                .ok_or_else(|| format!("{node} not yet known: {nodes}"))?;
            let addresses = n["addresses"].as_array().map_or(0, Vec::len);
            if n["connected"] == true && addresses > 0 {
                Ok(())
            } else {
                Err(n.to_string())
            }
        },
        "{node} connected with its first snapshot"
    );
}

/// A kernel log of `n` records, every one a link message the classifier
/// turns into an event (the worst backlog for a reader starting afresh).
fn kernel_log_fixture(path: &Path, n: usize) {
    let mut text = String::with_capacity(n * 64);
    for seq in 0..n {
        text.push_str(&format!(
            "6,{seq},{},-;br0: port {}(rmtveth{}) entered blocking state\n",
            1_000_000 + seq * 10,
            seq % 50 + 1,
            seq % 500
        ));
    }
    std::fs::write(path, text).expect("cannot write the kernel log fixture");
}

#[test]
fn fresh_agents_on_a_long_kernel_log_send_their_first_snapshot_every_time() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("start_backlog", 3);
    fleet.start_collector();
    let kmsg = fleet.dir().join("kmsg-100k");
    kernel_log_fixture(&kmsg, 100_000);
    let kmsg = kmsg.to_str().expect("UTF-8 path").to_string();
    // Node 0 reads the 100,000-record fixture, nodes 1 and 2 the machine's
    // own kernel log (thousands of bridge and link records after a test
    // run); each start has a state directory never used before, so every
    // record is read again.
    for round in 0..5 {
        for i in 0..3 {
            let state = fleet.dir().join(format!("state-{i}-{round}"));
            let state = state.to_str().expect("UTF-8 path").to_string();
            if i == 0 {
                fleet.start_agent_with(i, &["--state-dir", &state, "--kmsg", &kmsg]);
            } else {
                fleet.start_agent_with(i, &["--state-dir", &state]);
            }
        }
        for i in 0..3 {
            wait_snapshot(&fleet, &format!("node-{i}"), Duration::from_secs(20));
        }
        for i in 0..3 {
            fleet.stop_agent(i);
        }
    }
}

#[test]
fn an_unreadable_kernel_log_is_blind_and_recovers_when_it_appears() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("blind_kmsg", 2);
    fleet.start_collector();
    let kmsg = fleet.dir().join("kmsg-later");
    let path = kmsg.to_str().expect("UTF-8 path").to_string();
    fleet.start_agent_with(0, &["--kmsg", &path]);
    fleet.start_agent(1);
    wait_snapshot(&fleet, "node-0", Duration::from_secs(20));
    wait_snapshot(&fleet, "node-1", Duration::from_secs(20));

    let s = wait_source(&fleet, "node-0", "kernel_log", "down");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("kmsg-later"),
        "the error names the path: {s:#}"
    );
    assert!(s["errors_total"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    let n = summary(&fleet, "node-0");
    assert!(
        n["blind"]
            .as_array()
            .is_some_and(|b| b.iter().any(|s| s == "kernel_log")),
        "reachmap nodes marks the node blind: {n:#}"
    );
    let table = fleet.cli(&["nodes"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("BLIND kernel_log"), "{text}");
    let detail = fleet.cli(&["node", "node-0"]);
    let text = String::from_utf8_lossy(&detail.stdout);
    assert!(
        text.contains("blind: kernel_log") && text.contains("kmsg-later"),
        "{text}"
    );
    let out = fleet.http_get("/metrics");
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains(
            "reachmap_node_source_state{node=\"node-0\",source=\"kernel_log\",state=\"down\"} 1"
        ),
        "{metrics}"
    );

    // `why` to a port nothing listens on: nothing listens, and whether an
    // OOM kill took it cannot be known — the answer names the blind source
    // instead of resting on a log nobody reads.
    let w = assert_eventually!(
        Duration::from_secs(30),
        || {
            let out = fleet.cli(&["why", "node-1", "node-0:8080", "--format", "json"]);
            let w: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let codes: Vec<&str> = w["causes"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c["code"].as_str()).collect())
                .unwrap_or_default();
            if codes.contains(&"NOT_LISTENING") && codes.contains(&"SOURCE_BLIND") {
                Ok(w)
            } else {
                Err(w.to_string())
            }
        },
        "why names the blind kernel log"
    );
    let checked = w["checked"].to_string();
    assert!(
        checked.contains("an OOM kill of what listened on port 8080 on node-0: not known")
            && checked.contains("kernel_log source is down"),
        "{w:#}"
    );
    assert!(!checked.contains("none in its kernel log"), "{w:#}");

    // The log appears, holding an OOM kill: the reader starts by itself and
    // reports it.
    std::fs::write(
        &kmsg,
        "3,900,5000000,-;Memory cgroup out of memory: Killed process 4242 (leaky) total-vm:221368kB, anon-rss:20224kB, file-rss:6360kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0\n",
    )
    .expect("cannot write the kernel log");
    let s = wait_source(&fleet, "node-0", "kernel_log", "ok");
    assert!(s["restarts_total"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    assert_eventually!(
        Duration::from_secs(20),
        || {
            let d = node_detail(&fleet, "node-0")?;
            let found = d["events"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|e| e["kind"] == "oom_kill" && e["detail"].to_string().contains("4242"))
            });
            if found {
                Ok(())
            } else {
                Err(d["events"].to_string())
            }
        },
        "the OOM kill in the log that appeared is reported"
    );
    let n = summary(&fleet, "node-0");
    assert_eq!(n["blind"], serde_json::json!([]), "{n:#}");
}

/// A --procfs tree of links to every entry of the real /proc but the
/// processes (so the agent starts as on a real host), removable at will.
fn proc_links(root: &Path) {
    std::fs::create_dir_all(root).expect("cannot create the procfs tree");
    for entry in std::fs::read_dir("/proc")
        .expect("cannot list /proc")
        .flatten()
    {
        let name = entry.file_name();
        if name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), root.join(&name)).expect("cannot link into /proc");
    }
}

#[test]
fn a_removed_procfs_tree_blinds_resources_until_it_is_back() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("blind_procfs", 2);
    fleet.start_collector();
    let tree = fleet.dir().join("procfs");
    proc_links(&tree);
    let path = tree.to_str().expect("UTF-8 path").to_string();
    fleet.start_agent_with(0, &["--procfs", &path]);
    fleet.start_agent(1);
    wait_snapshot(&fleet, "node-0", Duration::from_secs(20));
    wait_source(&fleet, "node-0", "resources", "ok");

    std::fs::remove_dir_all(&tree).expect("cannot remove the procfs tree");
    let s = wait_source(&fleet, "node-0", "resources", "down");
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("procfs")),
        "the error names what could not be read: {s:#}"
    );
    let n = summary(&fleet, "node-0");
    assert!(
        n["blind"]
            .as_array()
            .is_some_and(|b| b.iter().any(|s| s == "resources")),
        "{n:#}"
    );
    let out = fleet.cli(&["why", "node-1", "node-0:7442", "--format", "json"]);
    let w: Value = serde_json::from_slice(&out.stdout).expect("why JSON");
    let blind = w["causes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["code"] == "SOURCE_BLIND").cloned())
        .unwrap_or_else(|| panic!("no SOURCE_BLIND: {w:#}"));
    assert_eq!(blind["node"], "node-0", "{blind:#}");
    assert!(
        blind["detail"]
            .as_str()
            .is_some_and(|d| d.contains("resources source is down")),
        "{blind:#}"
    );

    proc_links(&tree);
    wait_source(&fleet, "node-0", "resources", "ok");
}

/// A directory for PATH holding links to `ip` (the harness runs agents
/// with `ip netns exec`) and the firewall tools but `nft`.
fn path_without_nft(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("cannot create the PATH directory");
    for tool in [
        "ip",
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        if let Some(found) = which(tool) {
            std::os::unix::fs::symlink(found, dir.join(tool)).expect("cannot link a tool");
        }
    }
    dir.to_path_buf()
}

fn which(tool: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(tool))
    .find(|p| p.exists())
}

#[test]
fn a_missing_nft_blinds_the_firewall_until_it_is_installed() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("blind_nft", 2);
    fleet.start_collector();
    let bin = path_without_nft(&fleet.dir().join("bin"));
    fleet.start_agent_env(0, &[], &[("PATH", bin.clone())]);
    fleet.start_agent(1);
    wait_snapshot(&fleet, "node-0", Duration::from_secs(20));
    let s = wait_source(&fleet, "node-0", "firewall", "down");
    let out = fleet.cli(&["why", "node-1", "node-0:7442", "--format", "json"]);
    let w: Value = serde_json::from_slice(&out.stdout).expect("why JSON");
    assert!(
        w["checked"]
            .to_string()
            .contains("the inbound firewall on node-0: not known — its firewall source is down"),
        "{w:#}"
    );
    assert!(
        s["last_error"].as_str().is_some_and(|e| e.contains("nft")),
        "{s:#}"
    );
    let n = summary(&fleet, "node-0");
    assert!(
        n["blind"]
            .as_array()
            .is_some_and(|b| b.iter().any(|s| s == "firewall")),
        "{n:#}"
    );

    let nft = which("nft").expect("nft is installed on this machine");
    std::os::unix::fs::symlink(nft, bin.join("nft")).expect("cannot link nft");
    wait_source(&fleet, "node-0", "firewall", "ok");
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let d = node_detail(&fleet, "node-0")?;
            if d["firewall"]["error"].is_null() || d["firewall"]["error"] == "" {
                Ok(())
            } else {
                Err(d["firewall"].to_string())
            }
        },
        "the ruleset is read once nft is there"
    );
}

#[test]
fn a_shared_and_then_read_only_state_directory_still_reports_an_oom_kill() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("ro_state", 2);
    fleet.start_collector();
    // One small file system for both agents' state, so it can be made
    // read-only under them.
    let state = fleet.dir().join("shared-state");
    std::fs::create_dir_all(&state).expect("cannot create the state directory");
    let mount = Mount::tmpfs(&state);
    let path = state.to_str().expect("UTF-8 path").to_string();
    fleet.start_agent_with(0, &["--state-dir", &path]);
    fleet.start_agent_with(1, &["--state-dir", &path]);
    wait_snapshot(&fleet, "node-0", Duration::from_secs(20));
    wait_snapshot(&fleet, "node-1", Duration::from_secs(20));
    wait_source(&fleet, "node-0", "kernel_log", "ok");
    wait_source(&fleet, "node-1", "kernel_log", "ok");

    mount.read_only();
    let cgroup = MemoryCgroup::new(&format!("rmt-{}-rostate", std::process::id()), 48);
    let pid = fleet.spawn(
        0,
        "eat-memory",
        &[TOOL, "eat-memory", "400", "--after", "2"],
    );
    cgroup.add(pid);
    for node in ["node-0", "node-1"] {
        assert_eventually!(
            Duration::from_secs(30),
            || {
                let d = node_detail(&fleet, node)?;
                let found = d["events"].as_array().is_some_and(|l| {
                    l.iter().any(|e| {
                        e["kind"] == "oom_kill"
                            && e["detail"].to_string().contains(&format!("(pid {pid})"))
                    })
                });
                if found {
                    Ok(())
                } else {
                    Err(d["events"].to_string())
                }
            },
            "{node} reports the OOM kill of {pid} with its state directory read-only"
        );
    }
    // Saving the place in the log fails now, and the agent says so while it
    // goes on reading.
    let s = wait_source(&fleet, "node-0", "kernel_log", "degraded");
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Read-only file system")),
        "{s:#}"
    );
    drop(cgroup);
    fleet.stop_agent(0);
    fleet.stop_agent(1);
    drop(mount);
}

/// A tmpfs mounted over a directory for the test's life.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path) -> Mount {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "rmt-state"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
        Mount(dir.to_path_buf())
    }

    /// Remounts it read-only. The kernel refuses (EBUSY) while a file is
    /// open for writing there — an agent's outbox log stays open until its
    /// events are synced, within a second — so this tries for a while.
    fn read_only(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ok = std::process::Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cannot remount {} read-only",
                self.0.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
