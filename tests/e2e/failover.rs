//! End-to-end tests of agents failing over between collectors: two real
//! collectors in the hub (198.18.0.1 and 198.18.0.2), each with its own data
//! directory and store, sharing one CA (the first's, given to the second
//! with `--ca-cert/--ca-key`); agents given both. The collector the agents
//! are on is killed with SIGKILL, and they must be connected to the other
//! within 10 s — by a list of URLs, and by one name (in the nodes'
//! /etc/hosts) standing for both addresses. A collector whose host goes
//! silent (every packet to it dropped: no FIN, no RST) is left once the
//! stream's HTTP/2 pings go unanswered.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reachmap_fleet_tests::{
    COLLECTOR_URL, Fleet, NodeView, assert_eventually, binary, ensure, node_views, require_root,
};

/// The second collector's address on the hub's bridge.
const SECOND_ADDR: &str = "198.18.0.2";
const SECOND_URL: &str = "https://198.18.0.2:7440";
/// How long agents may take to be on the other collector after a kill.
const FAILOVER: Duration = Duration::from_secs(10);
/// A first start: enrolment, the first readings, the first snapshot.
const FIRST_CONNECT: Duration = Duration::from_secs(45);
/// The name both collectors answer to, in the nodes' /etc/hosts only.
const NAME: &str = "collectors.test";

/// Starts a second collector in the hub on 198.18.0.2 with a data directory
/// of its own and the fleet's CA (made by `Fleet::trust`), and waits until
/// it listens. Returns its pid; it is stopped with the fleet.
fn start_second_collector(fleet: &mut Fleet, extra: &[&str]) -> u32 {
    fleet.trust();
    let cidr = format!("{SECOND_ADDR}/24");
    if !String::from_utf8_lossy(
        &fleet
            .hub_exec(&["ip", "-o", "addr", "show", "dev", "br0"])
            .stdout,
    )
    .contains(&cidr)
    {
        fleet.hub_exec(&["ip", "addr", "add", &cidr, "dev", "br0"]);
    }
    let tls = fleet.collector_data().join("tls");
    let data = fleet.dir().join("collector-b-data");
    std::fs::create_dir_all(&data).expect("cannot create the second collector's data dir");
    // No config file of this machine reaches it: only these flags.
    let config = fleet.dir().join("collector-b.toml");
    std::fs::write(&config, "").expect("cannot write the second collector's config");
    let path = |p: PathBuf| p.to_str().expect("temp dir path is not UTF-8").to_string();
    let bin = path(binary("reachmap-collector"));
    let (config, data) = (path(config), path(data));
    let (ca_cert, ca_key) = (path(tls.join("ca.crt")), path(tls.join("ca.key")));
    let listen = format!("{SECOND_ADDR}:7440");
    let http = format!("{SECOND_ADDR}:7441");
    let mut args = vec![
        bin.as_str(),
        "--config",
        &config,
        "--listen",
        &listen,
        "--http",
        &http,
        "--data-dir",
        &data,
        "--ca-cert",
        &ca_cert,
        "--ca-key",
        &ca_key,
        "--probe-interval",
        "1s",
        "--probe-timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    let pid = fleet.spawn_hub("collector-b", &args);
    assert_eventually!(
        Duration::from_secs(15),
        || {
            let out = fleet.try_hub_exec(&["ss", "-Hltn", "sport = :7440"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            ensure(text.contains(&listen), text)
        },
        "the second collector listening on {listen}"
    );
    pid
}

/// `reachmap nodes --format json` asked of the collector at `url`, with the
/// fleet's operator bundle (issued by the shared CA).
fn views_on(fleet: &mut Fleet, url: &str) -> Result<Vec<NodeView>, String> {
    let bundle = fleet.trust().operator_bundle;
    let bundle = bundle.to_str().expect("temp dir path is not UTF-8");
    let out = fleet.cli_as(
        &["--collector", url, "--credentials", bundle],
        &["nodes", "--format", "json"],
    );
    if !out.status.success() {
        return Err(format!(
            "reachmap nodes at {url} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json = serde_json::from_slice(&out.stdout).map_err(|e| format!("{url}: {e}"))?;
    node_views(&json)
}

/// Waits until every node is listed as connected by the collector at `url`.
fn wait_all_on(fleet: &mut Fleet, url: &str, timeout: Duration, what: &str) {
    let names: Vec<String> = fleet.nodes().iter().map(|n| n.name.clone()).collect();
    assert_eventually!(
        timeout,
        || {
            let views = views_on(fleet, url)?;
            let all = names
                .iter()
                .all(|n| views.iter().any(|v| v.name == *n && v.connected));
            ensure(all, &views)
        },
        "{what}: every node connected to {url}"
    )
}

/// The agent of node `i`'s `/readyz`, from inside its namespace.
fn readyz(fleet: &Fleet, i: usize) -> String {
    let out = fleet.try_exec(
        i,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:7443/readyz",
        ],
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Waits until node `i`'s log has a `connected` line naming `collector`
/// and `address`, and its `/readyz` names the same collector.
fn wait_logged_on(fleet: &Fleet, i: usize, collector: &str, address: &str, ready: &str) {
    assert_eventually!(
        Duration::from_secs(10),
        || {
            let log = fleet.agent_log(i);
            let logged = log.lines().any(|l| {
                l.contains(" connected ")
                    && l.contains(&format!("collector={collector} "))
                    && l.contains(&format!("address={address}"))
            });
            let body = readyz(fleet, i);
            let shown = body.contains(&format!("[+]stream: connected to {ready}\n"));
            ensure(logged && shown, (logged, body))
        },
        "node {i}: logged connected to {collector} ({address}), /readyz says {ready}"
    );
}

#[test]
fn agents_move_to_the_other_collector_when_theirs_is_killed() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("failover", 2);
    fleet.start_collector();
    let second = start_second_collector(&mut fleet, &[]);
    let both = format!("{COLLECTOR_URL},{SECOND_URL}");
    for i in 0..2 {
        fleet.start_agent_with(i, &["--collector", &both]);
    }
    // The first collector takes them: it comes first in the list.
    wait_all_on(&mut fleet, COLLECTOR_URL, FIRST_CONNECT, "fresh start");
    for i in 0..2 {
        wait_logged_on(&fleet, i, COLLECTOR_URL, "-", COLLECTOR_URL);
    }
    let on_second = views_on(&mut fleet, SECOND_URL).expect("the second collector answers");
    assert!(
        on_second.iter().all(|v| !v.connected),
        "nobody on the second collector yet: {on_second:#?}"
    );

    fleet.kill_collector();
    // Enrolled at the first (its token is in that store only), the agents
    // keep their certificates, which the shared CA signed: the second takes
    // them without a token of its own.
    wait_all_on(
        &mut fleet,
        SECOND_URL,
        FAILOVER,
        "after kill -9 of the first",
    );
    for i in 0..2 {
        wait_logged_on(&fleet, i, SECOND_URL, "-", SECOND_URL);
    }

    // Round robin: the first back, the second killed in turn, and they are
    // back on the first.
    fleet.start_collector();
    kill(
        Pid::from_raw(i32::try_from(second).expect("pid fits")),
        Signal::SIGKILL,
    )
    .expect("kill -9 the second collector");
    wait_all_on(
        &mut fleet,
        COLLECTOR_URL,
        FAILOVER,
        "after kill -9 of the second",
    );
    // One enrolment each, at the first start: every later connection, to
    // either collector, used the certificate it got then.
    for i in 0..2 {
        let log = fleet.agent_log(i);
        let enrolled = log.lines().filter(|l| l.contains(" enrolled ")).count();
        assert_eq!(enrolled, 1, "node {i} enrolled once:\n{log}");
    }
}

#[test]
fn one_name_with_two_addresses_is_tried_address_by_address() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("failover_dns", 1);
    // Both collectors' certificates name NAME, which only the node knows,
    // as both addresses: the agent connects by address and checks the
    // certificate for the name.
    fleet.start_collector_with(&["--server-name", NAME]);
    start_second_collector(&mut fleet, &["--server-name", NAME]);
    fleet.etc_file(
        0,
        "hosts",
        &format!("127.0.0.1 localhost\n198.18.0.1 {NAME}\n{SECOND_ADDR} {NAME}\n"),
    );
    let url = format!("https://{NAME}:7440");
    fleet.start_agent_with(0, &["--collector", &url]);
    wait_all_on(&mut fleet, COLLECTOR_URL, FIRST_CONNECT, "fresh start");
    let first = format!("{url} (198.18.0.1:7440)");
    wait_logged_on(&fleet, 0, &url, "198.18.0.1:7440", &first);

    fleet.kill_collector();
    wait_all_on(
        &mut fleet,
        SECOND_URL,
        FAILOVER,
        "after kill -9 of the first",
    );
    let second = format!("{url} ({SECOND_ADDR}:7440)");
    wait_logged_on(&fleet, 0, &url, "198.18.0.2:7440", &second);
}

#[test]
fn a_collector_gone_silent_is_left_when_its_pings_go_unanswered() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("failover_silent", 1);
    fleet.start_collector();
    start_second_collector(&mut fleet, &[]);
    let both = format!("{COLLECTOR_URL},{SECOND_URL}");
    fleet.start_agent_with(0, &["--collector", &both]);
    wait_all_on(&mut fleet, COLLECTOR_URL, FIRST_CONNECT, "fresh start");
    // The first collector's host vanishes as far as the node can tell: it
    // runs on, but nothing reaches it and nothing comes back, so the open
    // connection sees neither an end nor a reset.
    fleet.hub_exec(&[
        "nft",
        "add table inet silence { chain input { type filter hook input priority 0; ip daddr 198.18.0.1 tcp dport 7440 drop; }; }",
    ]);
    // A ping after a heartbeat interval (1 s here) of silence, five
    // seconds for its answer, then the next collector.
    wait_all_on(
        &mut fleet,
        SECOND_URL,
        Duration::from_secs(15),
        "after the first went silent",
    );
    wait_logged_on(&fleet, 0, SECOND_URL, "-", SECOND_URL);
}
