//! End-to-end test of `reachmap diag`: a cell made to fail for real (an nft
//! rule on node-1 dropping node-0's probes), the bundle unpacked with `tar`,
//! each part checked against the manifest and against what the CLI itself
//! answers; the fleet's bundle; an unknown node.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reachmap_fleet_tests::{Fleet, assert_eventually, require_root};
use serde_json::Value;

mod why_support;
use why_support::{cli_json, running_fleet, wait_cause, wait_mesh};

const DROP_PROBES: &str = "add table inet rmdiag; \
     add chain inet rmdiag input { type filter hook input priority 0; policy accept; }; \
     add rule inet rmdiag input ip saddr 198.18.0.11 tcp dport 7442 drop";

fn cell_state(fleet: &Fleet, src: &str, dst: &str) -> Result<String, String> {
    let m = cli_json(fleet, &["matrix", "--port", "7442", "--format", "json"])?;
    m["cells"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["src"] == src && c["dst"] == dst)
                .and_then(|c| c["state"].as_str().map(str::to_string))
        })
        .ok_or_else(|| format!("no cell {src} -> {dst}: {m}"))
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `reachmap diag ARGS`; its stdout, or the failure.
fn diag(fleet: &Fleet, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["diag"];
    all.extend_from_slice(args);
    let out = fleet.cli(&all);
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("reachmap diag {args:?} failed: {stderr}"))
    }
}

/// Unpacks `archive` into `into` with `tar -xzf`; the one top directory.
fn unpack(archive: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).expect("unpack dir");
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .expect("tar runs");
    assert!(out.status.success(), "tar -xzf failed: {:?}", text(&out));
    let tops: Vec<PathBuf> = std::fs::read_dir(into)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(tops.len(), 1, "one top directory: {tops:?}");
    assert!(tops[0].is_dir(), "{tops:?}");
    tops[0].clone()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success(), "{:?}", text(&out));
    text(&out)
        .0
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every file of the bundle parses when it is JSON and is in the manifest
/// with its true size and SHA-256; the manifest.
fn check_manifest(top: &Path) -> Value {
    let manifest = read_json(&top.join("manifest.json"));
    let listed: BTreeSet<String> = manifest["files"]
        .as_array()
        .expect("manifest files")
        .iter()
        .map(|f| {
            let name = f["path"].as_str().expect("path");
            let path = top.join(name);
            let len = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{name} listed but not there: {e}"))
                .len();
            assert_eq!(f["bytes"], len, "size of {name}");
            assert_eq!(f["sha256"], sha256(&path), "SHA-256 of {name}");
            name.to_string()
        })
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(top)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "manifest.json")
        .collect();
    assert_eq!(listed, present, "the manifest lists every file");
    for name in &present {
        if name.ends_with(".json") {
            read_json(&top.join(name));
        }
    }
    manifest
}

/// The lines of `reachmap node node-1` that were the same just before and
/// just after the bundle was made, leaving out relative times.
fn stable_lines(before: &str, after: &str) -> Vec<String> {
    let after: BTreeSet<&str> = after.lines().collect();
    before
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("ago") && after.contains(l))
        .map(str::to_string)
        .collect()
}

/// Makes the bundle of node-1 into `archive`, checking that its summary
/// holds what `reachmap node node-1` prints; retried while the node's
/// facts move under it (connection counts, resources).
fn node_bundle(fleet: &Fleet, archive: &Path, unpack_root: &Path) -> (String, PathBuf) {
    let out = archive.to_str().expect("UTF-8 path");
    let mut attempt = 0;
    assert_eventually!(
        Duration::from_secs(60),
        || {
            attempt += 1;
            let before = text(&fleet.cli(&["node", "node-1"])).0;
            let printed = diag(fleet, &["node-1", "-o", out])?;
            let after = text(&fleet.cli(&["node", "node-1"])).0;
            let top = unpack(archive, &unpack_root.join(attempt.to_string()));
            let summary =
                std::fs::read_to_string(top.join("summary.txt")).map_err(|e| e.to_string())?;
            let summary_lines: BTreeSet<&str> = summary.lines().collect();
            let stable = stable_lines(&before, &after);
            let missing: Vec<&String> = stable
                .iter()
                .filter(|l| !summary_lines.contains(l.as_str()))
                .collect();
            if stable.len() < 10 || !missing.is_empty() {
                return Err(format!(
                    "{} stable lines of `reachmap node node-1`, missing from summary.txt: {missing:#?}\nsummary.txt:\n{summary}",
                    stable.len()
                ));
            }
            for heading in ["INTERFACES", "ROUTES", "LISTENERS", "FIREWALL"] {
                if !stable.iter().any(|l| l == heading) {
                    return Err(format!("no {heading} in the stable lines: {stable:#?}"));
                }
            }
            Ok((printed, top))
        },
        "summary.txt holds `reachmap node node-1`"
    )
}

#[test]
fn a_node_bundle_holds_what_the_cli_shows_and_no_secret() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("diag_node", 2);
    wait_mesh(&fleet, 2);
    let token = fleet.trust().enroll_token;
    fleet.exec(1, &["nft", DROP_PROBES]);
    assert_eventually!(
        Duration::from_secs(30),
        || match cell_state(&fleet, "node-0", "node-1")? {
            s if s == "failing" => Ok(()),
            s => Err(s),
        },
        "node-0 -> node-1 is failing"
    );
    wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "FIREWALL_INBOUND",
        "node-1",
    );

    let work = tempfile::tempdir().expect("temp dir");
    let archive = work.path().join("b.tar.gz");
    let (printed, top) = node_bundle(&fleet, &archive, &work.path().join("x"));
    let meta = std::fs::metadata(&archive).expect("the bundle is there");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "private");
    assert_eq!(
        printed.trim(),
        format!("wrote {} ({} bytes)", archive.display(), meta.len()),
        "the path and the size"
    );
    let name = top.file_name().expect("name").to_string_lossy().to_string();
    assert!(name.starts_with("reachmap-diag-node-1-"), "{name}");

    let manifest = check_manifest(&top);
    assert_eq!(manifest["node"], "node-1", "{manifest}");
    assert_eq!(manifest["kind"], "node", "{manifest}");
    assert_eq!(manifest["format"], 1, "{manifest}");
    assert_eq!(manifest["top"], name.as_str(), "{manifest}");
    for part in [
        "summary.txt",
        "node.json",
        "events.json",
        "events.txt",
        "matrix.json",
        "why.json",
        "why.txt",
        "agent-config.json",
        "clock.json",
    ] {
        assert!(top.join(part).is_file(), "{part} is in the bundle");
    }

    // The failing cell, explained as `reachmap why` explains it.
    let why = read_json(&top.join("why.json"));
    let firewall = why["explanations"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["src"] == "node-0" && e["dst"] == "node-1" && e["port"] == 7442)
        })
        .unwrap_or_else(|| panic!("no explanation of node-0 -> node-1: {why}"));
    assert_eq!(firewall["causes"][0]["code"], "FIREWALL_INBOUND", "{why}");
    assert_eq!(firewall["causes"][0]["node"], "node-1", "{why}");
    let matrix = read_json(&top.join("matrix.json"));
    let cells = matrix["cells"].as_array().expect("cells");
    assert!(
        cells.iter().any(|c| c["src"] == "node-0"
            && c["dst"] == "node-1"
            && c["port"] == 7442
            && c["state"] == "failing"),
        "{matrix}"
    );
    assert!(
        cells
            .iter()
            .all(|c| c["src"] == "node-1" || c["dst"] == "node-1"),
        "only node-1's row and column: {matrix}"
    );
    let summary = std::fs::read_to_string(top.join("summary.txt")).expect("summary");
    assert!(
        summary.contains("FIREWALL_INBOUND on node-1"),
        "the failing cell's top cause: {summary}"
    );
    assert!(summary.contains("\nCLOCK offset "), "{summary}");

    // The agent's configuration, without the enrolment token.
    let config_text =
        std::fs::read_to_string(top.join("agent-config.json")).expect("agent-config.json");
    let config: Value = serde_json::from_str(&config_text).expect("JSON");
    assert_eq!(config["node"], "node-1", "the agent sent it: {config}");
    assert_eq!(config["heartbeat_interval"], "1s", "{config}");
    let secret = token.split_once('.').map_or(token.as_str(), |(_, s)| s);
    for dir_entry in std::fs::read_dir(&top).expect("list").flatten() {
        let body = std::fs::read_to_string(dir_entry.path()).expect("text");
        assert!(
            !body.contains(secret),
            "the enrolment token is in {:?}",
            dir_entry.file_name()
        );
    }
    let clock = read_json(&top.join("clock.json"));
    assert_eq!(clock["connected"], true, "{clock}");
    assert!(
        clock["agent_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    let events = read_json(&top.join("events.json"));
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["node"] == "node-1")
                && e.iter().any(|e| e["kind"] == "firewall_changed")),
        "node-1's events, the rule's among them: {events}"
    );

    // The fleet's bundle.
    let fleet_archive = work.path().join("fleet.tar.gz");
    let printed = diag(
        &fleet,
        &["--fleet", "-o", fleet_archive.to_str().expect("UTF-8")],
    )
    .expect("diag --fleet");
    assert!(printed.starts_with("wrote "), "{printed}");
    let top = unpack(&fleet_archive, &work.path().join("fleet"));
    assert!(
        top.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("reachmap-diag-fleet-")),
        "{top:?}"
    );
    let manifest = check_manifest(&top);
    assert_eq!(manifest["kind"], "fleet", "{manifest}");
    let nodes = read_json(&top.join("nodes.json"));
    let names: BTreeSet<&str> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["node-0", "node-1"]), "{nodes}");
    let m = read_json(&top.join("matrix-summary.json"));
    assert!(
        m["failing"].as_array().is_some_and(|f| f
            .iter()
            .any(|c| c["src"] == "node-0" && c["dst"] == "node-1" && c["port"] == 7442)),
        "{m}"
    );
    assert!(
        m["states"]["failing"].as_u64().is_some_and(|n| n >= 1),
        "{m}"
    );

    // An unknown node: one line, exit 1, nothing written.
    let nowhere = work.path().join("nosuch.tar.gz");
    let out = fleet.cli(&["diag", "nosuch", "-o", nowhere.to_str().expect("UTF-8")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("no node named \"nosuch\""), "{stderr}");
    assert!(!nowhere.exists(), "nothing written");
    // An unwritable place: the path and the reason.
    let out = fleet.cli(&["diag", "node-0", "-o", "/nonexistent-dir/b.tar.gz"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent-dir/b.tar.gz") && stderr.contains("No such file"),
        "{stderr}"
    );
}
