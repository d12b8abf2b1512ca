//! The bundle made from hand-made answers: its files, the manifest's hashes,
//! the archive's layout and modes, and that no secret gets in.

use super::*;
use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};

const TOKEN: &str = "k3x9q2.f1ne-enrolment-secret-0042";

fn made() -> SystemTime {
    // 2026-12-03T10:15:00Z
    UNIX_EPOCH + Duration::from_secs(1_796_292_900)
}

fn meta() -> Meta {
    Meta {
        collector: "https://viewer:hunter2@198.18.0.1:7440".into(),
        made: made(),
        cli_version: "9.9.9",
    }
}

fn cell(
    src: &str,
    dst: &str,
    port: u32,
    kind: pb::ProbeKind,
    state: pb::CellState,
) -> pb::MatrixCell {
    pb::MatrixCell {
        src: src.into(),
        dst: dst.into(),
        port,
        kind: kind as i32,
        state: state as i32,
        loss: if state == pb::CellState::Ok { 0.0 } else { 1.0 },
        failure: if state == pb::CellState::Ok {
            0
        } else {
            pb::ProbeOutcome::Timeout as i32
        },
        ..Default::default()
    }
}

fn matrix() -> pb::Matrix {
    use pb::{CellState as S, ProbeKind as K};
    pb::Matrix {
        nodes: vec!["node-0".into(), "node-1".into(), "node-2".into()],
        cells: vec![
            cell("node-0", "node-1", 7442, K::Tcp, S::Failing),
            cell("node-1", "node-0", 7442, K::Tcp, S::Ok),
            cell("node-2", "node-1", 7442, K::Tcp, S::Degraded),
            cell("node-0", "node-1", 0, K::Icmp, S::Failing),
            cell("node-0", "node-2", 7442, K::Tcp, S::Failing),
        ],
        generated_unix_nanos: 0,
        zones: Vec::new(),
        cells_left_out: 0,
    }
}

fn detail(config: &str) -> pb::NodeDetail {
    pb::NodeDetail {
        summary: Some(pb::NodeSummary {
            name: "node-1".into(),
            version: "0.1.0".into(),
            connected: true,
            clock_offset_ms: Some(1.5),
            clock_rtt_ms: Some(0.4),
            since_unix_nanos: nanos(made() - Duration::from_secs(60)),
            last_seen_unix_nanos: nanos(made()),
            addresses: vec!["198.18.0.12".into()],
            ..Default::default()
        }),
        facts: Some(pb::Snapshot {
            version: 3,
            host: Some(pb::HostInfo {
                hostname: "node-1".into(),
                kernel: "6.1.0".into(),
                ..Default::default()
            }),
            interfaces: vec![pb::Interface {
                index: 2,
                name: "eth0".into(),
                mtu: 1500,
                admin_up: true,
                oper_state: pb::OperState::Up as i32,
                addresses: vec![pb::Address {
                    ip: "198.18.0.12".into(),
                    prefix_len: 24,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        agent_config_json: config.into(),
        ..Default::default()
    }
}

fn firewall_answer(src: &str, dst: &str) -> pb::WhyAnswer {
    pb::WhyAnswer {
        src: src.into(),
        dst: dst.into(),
        port: 7442,
        verdict: "unreachable".into(),
        causes: vec![pb::WhyCause {
            code: "FIREWALL_INBOUND".into(),
            node: dst.into(),
            detail: "inet rmt input drops tcp 7442 from 198.18.0.11".into(),
            fix: "delete the rule".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn answers(config: &str) -> NodeAnswers {
    let m = matrix();
    let (asks, bad_cells) = cells_to_explain(&m, "node-1", MAX_WHY);
    let whys = asks
        .into_iter()
        .map(|(src, dst, port)| WhyOutcome {
            answer: if src == "node-0" {
                Ok(firewall_answer(&src, &dst))
            } else {
                Err("collector is shutting down".into())
            },
            src,
            dst,
            port,
        })
        .collect();
    NodeAnswers {
        detail: detail(config),
        events: pb::EventsResponse::default(),
        events_since: nanos(made() - Duration::from_secs(86_400)),
        matrix: m,
        whys,
        bad_cells,
    }
}

fn file<'a>(b: &'a Bundle, name: &str) -> &'a str {
    let bytes = b
        .files
        .iter()
        .find(|(p, _)| p == name)
        .map(|(_, bytes)| bytes.as_slice())
        .unwrap_or_else(|| panic!("no {name} in the bundle"));
    std::str::from_utf8(bytes).expect("UTF-8")
}

fn parsed(b: &Bundle, name: &str) -> Value {
    serde_json::from_str(file(b, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The manifest names every other file once, with its size and hash.
fn check_manifest(b: &Bundle) -> Value {
    assert_eq!(b.files[0].0, "manifest.json", "the manifest comes first");
    let m = parsed(b, "manifest.json");
    let listed = m["files"].as_array().expect("files");
    assert_eq!(listed.len(), b.files.len() - 1, "{m}");
    for (path, bytes) in &b.files[1..] {
        let entry = listed
            .iter()
            .find(|f| f["path"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} not in the manifest"));
        assert_eq!(entry["bytes"], bytes.len(), "{path}");
        assert_eq!(entry["sha256"], sha256_hex(bytes), "{path}");
    }
    m
}

#[test]
fn a_node_bundle_has_every_part_and_a_true_manifest() {
    let config = format!(
        r#"{{"node":"node-1","labels":{{"zone":"a"}},"enroll_token_given":true,"enroll_token":"{TOKEN}","nested":[{{"api_key":"{TOKEN}"}}]}}"#
    );
    let b = node_bundle(&answers(&config), &meta());
    assert_eq!(b.top, "reachmap-diag-node-1-20261203T101500Z");
    let names: Vec<&str> = b.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "summary.txt",
            "node.json",
            "events.json",
            "events.txt",
            "matrix.json",
            "why.json",
            "why.txt",
            "agent-config.json",
            "clock.json"
        ]
    );
    for (path, bytes) in &b.files {
        if path.ends_with(".json") {
            serde_json::from_slice::<Value>(bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(TOKEN), "the token is in {path}");
        assert!(!text.contains("hunter2"), "the URL's password is in {path}");
    }
    let m = check_manifest(&b);
    assert_eq!(m["format"], FORMAT_VERSION);
    assert_eq!(m["node"], "node-1");
    assert_eq!(m["collector"], "https://198.18.0.1:7440");
    assert_eq!(m["made"], "2026-12-03T10:15:00.000Z");
    assert_eq!(m["cli_version"], "9.9.9");
    assert_eq!(m["why"]["capped"], false);
    let notes = m["notes"].to_string();
    assert!(notes.contains("2 member(s) that looked secret"), "{m}");
    assert!(notes.contains("1 explanation(s) could not be had"), "{m}");

    // The agent's configuration without what looked secret.
    let config = parsed(&b, "agent-config.json");
    assert_eq!(config["labels"]["zone"], "a");
    assert_eq!(config["enroll_token_given"], true);
    assert!(config.get("enroll_token").is_none(), "{config}");

    // The node's row and column, ICMP included; nothing else.
    let cells = parsed(&b, "matrix.json");
    let cells = cells["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4);
    assert!(
        cells
            .iter()
            .all(|c| c["src"] == "node-1" || c["dst"] == "node-1"),
        "{cells:?}"
    );
    // Bad TCP cells explained, ICMP not.
    let why = parsed(&b, "why.json");
    assert_eq!(why["bad_cells"], 2, "{why}");
    let list = why["explanations"].as_array().expect("explanations");
    assert_eq!(list.len(), 2, "{why}");
    let firewall = list
        .iter()
        .find(|e| e["src"] == "node-0")
        .expect("node-0 -> node-1");
    assert_eq!(firewall["causes"][0]["code"], "FIREWALL_INBOUND");
    assert!(
        list.iter()
            .any(|e| e["src"] == "node-2" && e["error"] == "collector is shutting down"),
        "{why}"
    );
    assert!(
        file(&b, "why.txt").contains("1. FIREWALL_INBOUND on node-1"),
        "{}",
        file(&b, "why.txt")
    );

    // A person's summary: `reachmap node`, the bad cells with their causes,
    // the clock.
    let summary = file(&b, "summary.txt");
    assert!(
        summary.contains(&table::node(&detail(""), made())),
        "{summary}"
    );
    assert!(
        summary.contains("FIREWALL_INBOUND on node-1: inet rmt input"),
        "{summary}"
    );
    assert!(
        summary.contains("4 cells: 1 ok, 1 degraded, 2 failing"),
        "{summary}"
    );
    assert!(
        summary.contains("CLOCK offset +1.5ms (rtt 0.4ms), agent 0.1.0, connected"),
        "{summary}"
    );
    let clock = parsed(&b, "clock.json");
    assert_eq!(clock["clock_offset_ms"], 1.5);
    assert_eq!(clock["agent_version"], "0.1.0");
    let node = parsed(&b, "node.json");
    assert_eq!(node["interfaces"][0]["addresses"][0], "198.18.0.12/24");
}

#[test]
fn an_agent_that_sent_no_configuration_gets_a_note() {
    let b = node_bundle(&answers(""), &meta());
    let config = parsed(&b, "agent-config.json");
    assert!(
        config["note"]
            .as_str()
            .is_some_and(|n| n.contains("did not send")),
        "{config}"
    );
    assert!(
        check_manifest(&b)["notes"]
            .to_string()
            .contains("did not send")
    );
}

#[test]
fn explanations_are_capped_and_the_manifest_says_so() {
    let mut m = matrix();
    m.cells = (0..150)
        .map(|i| {
            cell(
                "node-0",
                "node-1",
                8000 + i,
                pb::ProbeKind::Tcp,
                pb::CellState::Failing,
            )
        })
        .collect();
    let (asks, bad) = cells_to_explain(&m, "node-1", MAX_WHY);
    assert_eq!((asks.len(), bad), (MAX_WHY, 150));
    let a = NodeAnswers {
        whys: asks
            .into_iter()
            .map(|(src, dst, port)| WhyOutcome {
                answer: Ok(firewall_answer(&src, &dst)),
                src,
                dst,
                port,
            })
            .collect(),
        bad_cells: bad,
        matrix: m,
        ..answers("{}")
    };
    let b = node_bundle(&a, &meta());
    let manifest = check_manifest(&b);
    assert_eq!(manifest["why"]["capped"], true);
    assert_eq!(manifest["why"]["explained"], MAX_WHY);
    assert!(
        manifest["notes"]
            .to_string()
            .contains("explains 100 of the 150"),
        "{manifest}"
    );
    assert!(file(&b, "summary.txt").contains("note: why.json explains 100 of the 150"));
}

#[test]
fn a_fleet_bundle_has_the_nodes_and_the_failing_cells() {
    let nodes = pb::ListNodesResponse {
        nodes: vec![
            pb::NodeSummary {
                name: "node-0".into(),
                connected: true,
                ..Default::default()
            },
            pb::NodeSummary {
                name: "node-1".into(),
                ..Default::default()
            },
        ],
        store: None,
    };
    let b = fleet_bundle(
        &FleetAnswers {
            nodes,
            matrix: matrix(),
        },
        &meta(),
    );
    assert_eq!(b.top, "reachmap-diag-fleet-20261203T101500Z");
    let m = check_manifest(&b);
    assert_eq!(m["kind"], "fleet");
    let nodes = parsed(&b, "nodes.json");
    let names: Vec<&str> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["node-0", "node-1"]);
    let s = parsed(&b, "matrix-summary.json");
    assert_eq!(s["cells"], 5);
    assert_eq!(s["states"]["failing"], 3);
    assert_eq!(s["states"]["degraded"], 1);
    assert_eq!(s["failing"].as_array().map(Vec::len), Some(3), "{s}");
    assert!(
        s["failing"].as_array().is_some_and(|f| f
            .iter()
            .any(|c| c["src"] == "node-0" && c["dst"] == "node-2" && c["port"] == 7442)),
        "{s}"
    );
    let summary = file(&b, "summary.txt");
    assert!(
        summary.contains("5 cells: 1 ok, 1 degraded, 3 failing"),
        "{summary}"
    );
    assert!(
        summary.starts_with("reachmap diag of the fleet"),
        "{summary}"
    );
}

#[test]
fn the_archive_holds_one_top_directory_of_private_files() {
    let b = node_bundle(&answers("{}"), &meta());
    let bytes = archive(&b, made()).expect("packed");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut seen = Vec::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().to_string();
        let header = entry.header();
        assert_eq!(header.mtime().expect("mtime"), 1_796_292_900, "{path}");
        if path.ends_with('/') {
            assert_eq!(path, format!("{}/", b.top));
            continue;
        }
        assert_eq!(header.mode().expect("mode") & 0o777, 0o600, "{path}");
        let name = path
            .strip_prefix(&format!("{}/", b.top))
            .unwrap_or_else(|| panic!("{path} is outside the top directory"))
            .to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read");
        let want = b
            .files
            .iter()
            .find(|(p, _)| *p == name)
            .map(|(_, c)| c)
            .expect("a file of the bundle");
        assert_eq!(&content, want, "{name}");
        seen.push(name);
    }
    assert_eq!(seen.len(), b.files.len());
}

#[test]
fn long_node_names_fit_the_archive() {
    let name = "n".repeat(63);
    let mut a = answers("{}");
    if let Some(s) = a.detail.summary.as_mut() {
        s.name = name.clone();
    }
    let b = node_bundle(&a, &meta());
    let bytes = archive(&b, made()).expect("packed");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let paths: Vec<String> = tar
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert!(
        paths.contains(&format!("{}/agent-config.json", b.top)),
        "{paths:?}"
    );
    assert!(b.top.contains(&name));
}

#[test]
fn the_file_is_written_private_and_whole() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("b.tar.gz");
    write_private(&path, b"bundle").expect("written");
    assert_eq!(std::fs::read(&path).expect("read"), b"bundle");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Over an older one, and no temporary file left beside it.
    write_private(&path, b"newer").expect("written again");
    assert_eq!(std::fs::read(&path).expect("read"), b"newer");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A directory that is not there: the path and the OS's reason, one line.
    let bad = dir.path().join("missing/b.tar.gz");
    let e = write_private(&bad, b"x")
        .expect_err("no such directory")
        .to_string();
    assert!(e.contains(&bad.display().to_string()), "{e}");
    assert!(e.contains("No such file or directory"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    // A directory given as -o gets the default name inside it.
    assert_eq!(
        target(Some(dir.path().to_path_buf()), "reachmap-diag-x-T"),
        dir.path().join("reachmap-diag-x-T.tar.gz")
    );
    assert_eq!(
        target(None, "reachmap-diag-x-T"),
        PathBuf::from("reachmap-diag-x-T.tar.gz")
    );
}

#[test]
fn names_and_urls() {
    assert_eq!(stamp(made()), "20261203T101500Z");
    assert_eq!(
        bundle_name("node-1", made()),
        "reachmap-diag-node-1-20261203T101500Z"
    );
    assert_eq!(without_userinfo("https://a:b@c:7440/x"), "https://c:7440/x");
    assert_eq!(without_userinfo("https://c:7440"), "https://c:7440");
    let mut v = serde_json::json!({"token": "x", "ca_pin": "sha256:ab", "list": [{"Password": "p"}], "token_given": true});
    assert_eq!(scrub(&mut v), 2);
    assert_eq!(
        v,
        serde_json::json!({"ca_pin": "sha256:ab", "list": [{}], "token_given": true})
    );
}
