//! Trust end to end: agents enrol with a bootstrap token and the CA pin,
//! come back on their certificates without one, renew short-lived
//! certificates with no gap in the stream, are cut within a second when
//! revoked; a revoked query client is refused and no other; bad tokens and
//! pins are one-line errors; roles hold for the CLI and HTTP.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use reachmap_fleet_tests::{Fleet, assert_eventually, ensure, require_root};

fn connected(fleet: &Fleet, name: &str) -> Result<bool, String> {
    let views = fleet.try_node_views()?;
    Ok(views.iter().any(|v| v.name == name && v.connected))
}

fn wait_connected(fleet: &Fleet, names: &[&str], timeout: Duration, what: &str) {
    assert_eventually!(
        timeout,
        || {
            let views = fleet.try_node_views()?;
            let ok = names
                .iter()
                .all(|n| views.iter().any(|v| v.name == *n && v.connected));
            ensure(ok, views)
        },
        "{what}: {names:?} connected"
    );
}

/// A collector and two enrolled, connected agents.
fn two_nodes_up(test: &str) -> Fleet {
    let mut fleet = Fleet::new(test, 2);
    fleet.start_collector();
    fleet.start_agents();
    wait_connected(
        &fleet,
        &["node-0", "node-1"],
        Duration::from_secs(20),
        "fleet up",
    );
    fleet
}

fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("===="))
        .unwrap_or_default()
        .to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_fleet_enrols_and_comes_back_on_its_certificates_without_a_token() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("trust_enrol", 3);
    fleet.start_collector();
    fleet.start_agents();
    let names = ["node-0", "node-1", "node-2"];
    wait_connected(&fleet, &names, Duration::from_secs(20), "enrolled");
    // The key and certificate are the node's, private to it.
    let state = fleet.dir().join("agent-state-node-0");
    for f in ["node-0.key", "node-0.crt", "node-0.ca.crt"] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The token is revoked: from now on only certificates get in.
    let list = fleet.cli(&["token", "list", "--format", "json"]);
    let tokens: serde_json::Value = serde_json::from_slice(&list.stdout).expect("token list JSON");
    let id = tokens
        .as_array()
        .and_then(|a| a.iter().find(|t| t["description"] == "harness"))
        .and_then(|t| t["id"].as_str())
        .expect("the harness's enrolment token")
        .to_string();
    let out = fleet.cli(&["token", "revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    // The collector restarts: every agent is back on its certificate.
    fleet.stop_collector();
    fleet.start_collector();
    wait_connected(
        &fleet,
        &names,
        Duration::from_secs(20),
        "after a collector restart",
    );
    // An agent restarts with no token at all and reconnects.
    fleet.stop_agent(1);
    fleet.start_agent_with(1, &["--enroll-token", ""]);
    wait_connected(
        &fleet,
        &names,
        Duration::from_secs(20),
        "after an agent restart",
    );
    // A new node with the revoked token is refused, in one line.
    std::fs::remove_dir_all(fleet.dir().join("agent-state-node-2")).expect("forget node-2");
    fleet.stop_agent(2);
    fleet.start_agent(2);
    let status = fleet
        .wait_agent_exit(2, Duration::from_secs(15))
        .expect("the agent gives up on a revoked token");
    assert!(!status.success());
    let line = last_line(&fleet.agent_log(2));
    assert!(
        line.contains("enrolment refused: token") && line.contains("is revoked"),
        "{line}"
    );
}

#[test]
fn bad_tokens_and_pins_are_one_line_errors() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("trust_bad", 4);
    fleet.start_collector();
    let once = stdout(&fleet.cli(&["token", "create", "--uses", "1"]));
    let bound = stdout(&fleet.cli(&["token", "create", "--node", "db-9"]));
    let short = stdout(&fleet.cli(&["token", "create", "--ttl", "1s"]));
    std::thread::sleep(Duration::from_millis(1500));
    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    let cases: Vec<(usize, Vec<&str>, &str)> = vec![
        (0, vec!["--enroll-token", &once], ""),
        (1, vec!["--enroll-token", &once], "is used up"),
        (
            2,
            vec!["--enroll-token", &bound],
            "is for node db-9, not node-2",
        ),
        (3, vec!["--enroll-token", &short], "expired"),
    ];
    for (i, args, want) in &cases {
        fleet.start_agent_with(*i, args);
        if want.is_empty() {
            wait_connected(&fleet, &["node-0"], Duration::from_secs(20), "a good token");
            continue;
        }
        let status = fleet
            .wait_agent_exit(*i, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("node-{i} should give up: {want}"));
        assert!(!status.success());
        let line = last_line(&fleet.agent_log(*i));
        assert!(
            line.contains(want),
            "node-{i}: {line:?} does not say {want:?}"
        );
    }
    let unknown = "0123abcd.0123456789abcdef0123456789abcdef";
    fleet.start_agent_with(1, &["--enroll-token", unknown]);
    fleet
        .wait_agent_exit(1, Duration::from_secs(15))
        .expect("exits");
    assert!(last_line(&fleet.agent_log(1)).contains("unknown token 0123abcd"));
    // A wrong pin: the collector is not trusted, and nothing is sent.
    let good = stdout(&fleet.cli(&["token", "create"]));
    fleet.start_agent_with(1, &["--enroll-token", &good, "--ca-pin", &wrong_pin]);
    fleet
        .wait_agent_exit(1, Duration::from_secs(15))
        .expect("exits");
    let line = last_line(&fleet.agent_log(1));
    assert!(line.contains("does not match the pin"), "{line}");
    // The token was not used by that attempt: the right pin enrols with it.
    fleet.start_agent_with(1, &["--enroll-token", &good]);
    wait_connected(
        &fleet,
        &["node-0", "node-1"],
        Duration::from_secs(20),
        "right pin",
    );
    // Plaintext agents and CLIs get nowhere on the TLS ports.
    let plain = fleet.cli_as(
        &["--collector", "http://198.18.0.1:7440", "--insecure"],
        &["nodes"],
    );
    assert!(!plain.status.success());
}

#[test]
fn short_lifetimes_renew_with_no_disconnect_and_an_expired_certificate_says_so() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("trust_renew", 1);
    fleet.start_collector_with(&["--node-cert-lifetime", "12s"]);
    fleet.start_agent(0);
    wait_connected(&fleet, &["node-0"], Duration::from_secs(20), "enrolled");
    let start = Instant::now();
    // Two renewals (at 70-90 % of 12 s each) while the node stays connected.
    while start.elapsed() < reachmap_fleet_tests::patient(Duration::from_secs(26)) {
        assert!(
            connected(&fleet, "node-0").expect("nodes"),
            "node-0 dropped"
        );
        std::thread::sleep(Duration::from_millis(250));
        if fleet
            .agent_log(0)
            .matches("renewed the node certificate")
            .count()
            >= 2
        {
            break;
        }
    }
    let log = fleet.agent_log(0);
    let renewals = log.matches("renewed the node certificate").count();
    // At 70-90 % of 12 s: two in about 17-22 s, never a burst.
    assert!(
        (2..=3).contains(&renewals),
        "two renewals, {renewals} seen in {:?}:\n{log}",
        start.elapsed()
    );
    assert_eq!(log.matches("stream down").count(), 0, "{log}");
    // One stream the whole time: the renewals went beside it.
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("reachmap_agent::stream: connected"))
            .count(),
        1,
        "{log}"
    );
    // Stopped past its certificate's end, with no token: it says what to do.
    fleet.stop_agent(0);
    std::thread::sleep(reachmap_fleet_tests::patient(Duration::from_secs(13)));
    fleet.start_agent_with(0, &["--enroll-token", ""]);
    fleet
        .wait_agent_exit(0, Duration::from_secs(15))
        .expect("exits on an expired certificate");
    let line = last_line(&fleet.agent_log(0));
    assert!(
        line.contains("expired") && line.contains("reachmap token create --node node-0"),
        "{line}"
    );
    // With a valid token it enrols again by itself.
    fleet.start_agent(0);
    wait_connected(&fleet, &["node-0"], Duration::from_secs(20), "re-enrolled");
    assert!(
        fleet
            .agent_log(0)
            .contains("enrolling again with the token")
    );
}

#[test]
fn tls_and_plaintext_do_not_meet_and_another_ca_is_refused() {
    if !require_root() {
        return;
    }
    // A TLS agent toward a collector started with --insecure: one line
    // saying so, no retry loop.
    let mut lab = Fleet::new("trust_lab", 2);
    let pin = lab.trust().pin;
    lab.start_collector_with(&["--insecure"]);
    assert!(lab.collector_log().contains("--insecure: plaintext"));
    lab.start_agent(0);
    lab.wait_agent_exit(0, Duration::from_secs(15))
        .expect("a TLS agent gives up on a plaintext collector");
    let line = last_line(&lab.agent_log(0));
    assert!(line.contains("does not speak TLS"), "{line}");
    // The lab switch on both ends works, and says so.
    lab.start_agent_with(1, &["--insecure"]);
    assert_eventually!(
        Duration::from_secs(20),
        || {
            let out = lab.cli_as(
                &["--collector", "http://198.18.0.1:7440", "--insecure"],
                &["nodes", "--format", "json"],
            );
            ensure(stdout(&out).contains("\"node-1\""), stdout(&out))
        },
        "an --insecure fleet"
    );
    assert!(lab.agent_log(1).contains("--insecure: plaintext"));
    drop(lab);

    // A bundle from another fleet's CA is refused by the handshake, and so
    // is an agent given the other CA's pin.
    let mut fleet = Fleet::new("trust_other_ca", 1);
    fleet.start_collector();
    let mut other = Fleet::new("trust_other_ca_b", 0);
    let foreign = other.trust();
    let foreign_bundle = foreign.operator_bundle.to_str().expect("utf-8").to_string();
    let out = fleet.cli_as(
        &[
            "--collector",
            "https://198.18.0.1:7440",
            "--credentials",
            &foreign_bundle,
        ],
        &["nodes"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("TLS handshake failed"), "{err}");
    fleet.start_agent_with(0, &["--ca-pin", &foreign.pin]);
    fleet
        .wait_agent_exit(0, Duration::from_secs(15))
        .expect("exits on a wrong pin");
    assert!(last_line(&fleet.agent_log(0)).contains("does not match the pin"));
    assert_ne!(foreign.pin, pin);
}

#[test]
fn metrics_listen_serves_metrics_alone_without_auth() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("trust_metrics", 1);
    fleet.start_collector_with(&["--metrics-listen", "127.0.0.1:7444"]);
    fleet.start_agent(0);
    wait_connected(&fleet, &["node-0"], Duration::from_secs(20), "up");
    let out = fleet.hub_exec(&["curl", "-sf", "http://127.0.0.1:7444/metrics"]);
    assert!(stdout(&out).contains("reachmap_node_up{node=\"node-0\"} 1"));
    // Only /metrics there.
    let out = fleet.hub_exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:7444/api/v1/nodes",
    ]);
    assert_eq!(stdout(&out), "404");
}

#[test]
fn a_revoked_node_is_cut_at_once_and_stays_out() {
    if !require_root() {
        return;
    }
    let fleet = two_nodes_up("trust_revoke");
    let out = fleet.cli(&["node", "revoke", "node-1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("its stream cut"), "{}", stdout(&out));
    let cut = Instant::now();
    assert_eventually!(
        Duration::from_secs(1),
        || ensure(!connected(&fleet, "node-1")?, "still connected"),
        "node-1 cut within a second"
    );
    eprintln!("node-1 was cut {:?} after the revocation", cut.elapsed());
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !connected(&fleet, "node-1").expect("nodes"),
        "node-1 is back"
    );
    assert!(
        connected(&fleet, "node-0").expect("nodes"),
        "node-0 untouched"
    );
    assert!(
        fleet
            .collector_log()
            .contains("refused a revoked certificate"),
        "its handshakes are refused"
    );
}

#[test]
fn a_revoked_client_certificate_is_refused_and_other_clients_are_not() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("trust_client_revoke", 1);
    fleet.start_collector();
    fleet.start_agents();
    wait_connected(&fleet, &["node-0"], Duration::from_secs(20), "fleet up");
    let t = fleet.trust();
    // A bundle issued while the collector runs, on its host.
    let ann = fleet.dir().join("ann.pem");
    let ann = ann.to_str().expect("utf-8").to_string();
    fleet.collector_cmd(&["issue-client", "ann", "--role", "viewer", "-o", &ann]);
    let viewer = t.viewer_bundle.to_str().expect("utf-8").to_string();
    let ca = t.ca_file.to_str().expect("utf-8").to_string();
    let url = ["--collector", "https://198.18.0.1:7440"];
    let as_bundle = |bundle: &str, args: &[&str]| {
        let pre: Vec<&str> = url
            .iter()
            .copied()
            .chain(["--credentials", bundle])
            .collect();
        fleet.cli_as(&pre, args)
    };
    let https_code = |bundle: &str| {
        let out = fleet.try_hub_exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca,
            "--cert",
            bundle,
            "https://198.18.0.1:7441/api/v1/nodes",
        ]);
        stdout(&out)
    };
    let out = as_bundle(&ann, &["nodes"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(https_code(&ann), "200", "ann's certificate reads over HTTP");

    // The operator sees it, with its role, and revokes it by name.
    let out = fleet.cli(&["client", "list", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("client list JSON");
    let entry = |name: &str| {
        list.as_array()
            .expect("a list")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {list}"))
    };
    assert_eq!(entry("ann")["role"], "viewer");
    assert!(entry("ann")["revoked"].is_null());
    assert_eq!(entry("harness-operator")["role"], "operator");
    // A viewer may not revoke anyone.
    let out = as_bundle(&viewer, &["client", "revoke", "ann"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "reachmap: not allowed: client harness-viewer is a viewer; client revoke needs the operator role"
    );
    let out = fleet.cli(&["client", "revoke", "ann"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "revoked client ann: 1 certificate(s) denied");

    // Refused from then on, over gRPC and HTTP, with a one-line error.
    let out = as_bundle(&ann, &["nodes"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.to_lowercase().contains("revoked"), "{err}");
    assert_ne!(
        https_code(&ann),
        "200",
        "ann's certificate still reads over HTTP"
    );
    assert!(
        fleet
            .collector_log()
            .contains("refused a revoked certificate"),
        "its handshakes are refused"
    );
    // Everyone else is untouched.
    let out = as_bundle(&viewer, &["nodes"]);
    assert!(out.status.success(), "{out:?}");
    assert!(connected(&fleet, "node-0").expect("nodes"));
    let out = fleet.cli(&["client", "list"]);
    assert!(stdout(&out).contains("revoked"), "{}", stdout(&out));
    // An unknown name is a one-line error, and denies nothing.
    let out = fleet.cli(&["client", "revoke", "nobody"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no client certificate was issued to \"nobody\""),
        "{out:?}"
    );
}

#[test]
fn roles_hold_for_the_cli_and_http() {
    if !require_root() {
        return;
    }
    let mut fleet = two_nodes_up("trust_roles");
    let t = fleet.trust();
    let viewer = t.viewer_bundle.to_str().expect("utf-8").to_string();
    let ca = t.ca_file.to_str().expect("utf-8").to_string();
    let url = ["--collector", "https://198.18.0.1:7440"];
    // A viewer's certificate reads, and cannot command.
    let pre: Vec<&str> = url
        .iter()
        .copied()
        .chain(["--credentials", &viewer])
        .collect();
    let out = fleet.cli_as(&pre, &["nodes"]);
    assert!(out.status.success(), "{out:?}");
    let out = fleet.cli_as(&pre, &["test-port", "node-0", "node-1:9000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "reachmap: not allowed: client harness-viewer is a viewer; test-port needs the operator role"
    );
    // A viewer token with the CA file reads too.
    let pre: Vec<&str> = url
        .iter()
        .copied()
        .chain(["--token", &t.viewer_token, "--ca-file", &ca])
        .collect();
    let out = fleet.cli_as(&pre, &["matrix", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    // No credentials: a one-line error before anything is sent.
    let out = fleet.cli_as(&url, &["nodes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));
    // HTTP: the token gets in, nothing else does.
    let out = fleet.http_get("/api/v1/nodes");
    assert!(stdout(&out).contains("node-0"));
    let code = |extra: &[&str], path: &str| {
        let mut args = vec![
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca,
        ];
        args.extend_from_slice(extra);
        let url = format!("https://198.18.0.1:7441{path}");
        args.push(&url);
        stdout(&fleet.hub_exec(&args))
    };
    assert_eq!(code(&[], "/api/v1/nodes"), "401");
    assert_eq!(code(&[], "/metrics"), "401");
    assert_eq!(code(&[], "/healthz"), "200");
    assert_eq!(
        code(
            &[
                "-H",
                "Authorization: Bearer 0000aaaa.00000000000000000000000000000000"
            ],
            "/metrics"
        ),
        "401"
    );
    let bearer = format!("Authorization: Bearer {}", t.viewer_token);
    assert_eq!(code(&["-H", &bearer], "/metrics"), "200");
    // Plaintext HTTP gets no answer.
    let out = fleet.try_hub_exec(&["curl", "-s", "-m", "3", "http://198.18.0.1:7441/healthz"]);
    assert!(!out.status.success() || stdout(&out).is_empty(), "{out:?}");
}

#[test]
fn prometheus_scrapes_metrics_with_a_viewer_token() {
    if !require_root() {
        return;
    }
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        if reachmap_fleet_tests::in_ci() {
            panic!("prometheus is not installed; deploy/common.sh ensure_packages installs it");
        }
        eprintln!("SKIPPED: prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let mut fleet = Fleet::new("trust_prometheus", 1);
    fleet.start_collector();
    fleet.start_agent(0);
    wait_connected(&fleet, &["node-0"], Duration::from_secs(20), "up");
    let t = fleet.trust();
    // The collector's own scrape config: a viewer token and its CA; a
    // second job without the token must fail to scrape.
    let ca = t.ca_file.display().to_string();
    let config = [
        "global:".to_string(),
        "  scrape_interval: 1s".into(),
        "  scrape_timeout: 1s".into(),
        "scrape_configs:".into(),
        "- job_name: reachmap".into(),
        "  scheme: https".into(),
        "  authorization:".into(),
        format!("    credentials: {}", t.viewer_token),
        "  tls_config:".into(),
        format!("    ca_file: {ca}"),
        "  static_configs:".into(),
        "  - targets: ['198.18.0.1:7441']".into(),
        "- job_name: anonymous".into(),
        "  scheme: https".into(),
        "  tls_config:".into(),
        format!("    ca_file: {ca}"),
        "  static_configs:".into(),
        "  - targets: ['198.18.0.1:7441']".into(),
    ]
    .join("\n");
    let cfg = fleet.dir().join("prometheus.yml");
    std::fs::write(&cfg, config).expect("write prometheus.yml");
    let data = fleet.dir().join("prometheus-data");
    let cfg_arg = format!("--config.file={}", cfg.display());
    let data_arg = format!("--storage.tsdb.path={}", data.display());
    fleet.spawn_hub(
        "prometheus",
        &[
            "prometheus",
            &cfg_arg,
            &data_arg,
            "--web.listen-address=127.0.0.1:9090",
        ],
    );
    let query = |q: &str| -> serde_json::Value {
        let url = format!("http://127.0.0.1:9090/api/v1/query?query={q}");
        let out = fleet.try_hub_exec(&["curl", "-s", &url]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let value = |v: &serde_json::Value, job: &str| -> Option<String> {
        v["data"]["result"]
            .as_array()?
            .iter()
            .find(|r| r["metric"]["job"] == job)
            .and_then(|r| r["value"][1].as_str())
            .map(str::to_string)
    };
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let up = query("up");
            let node = query("reachmap_node_up");
            ensure(
                value(&up, "reachmap").as_deref() == Some("1")
                    && value(&up, "anonymous").as_deref() == Some("0")
                    && value(&node, "reachmap").as_deref() == Some("1"),
                (up, node),
            )
        },
        "prometheus scrapes with the token, and not without"
    );
}
