//! Self-tests of the fleet harness. They need root but not the reachmap
//! binaries: they check that a fleet is a working network, that the
//! throwaway PostgreSQL server works, and that both leave nothing behind.

use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use reachmap_fleet_tests::postgres::{self, Postgres, require_postgres};
use reachmap_fleet_tests::{Fleet, HUB_ADDR, netns, require_root};

fn assert_all_gone(names: &[String]) {
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn nodes_reach_each_other_and_teardown_is_complete() {
    if !require_root() {
        return;
    }
    let fleet = Fleet::new("selftest_ping", 2);
    let names = fleet.namespaces();
    assert_eq!(names.len(), 3, "hub plus two nodes: {names:?}");
    for name in &names {
        assert!(netns::exists(name), "namespace {name} was not created");
        assert!(name.len() < 64, "namespace name too long: {name}");
    }

    // Node 0 reaches node 1 across the bridge, and the hub.
    let peer = fleet.node(1).addr.to_string();
    fleet.exec(0, &["ping", "-c1", "-W1", &peer]);
    fleet.exec(0, &["ping", "-c1", "-W1", "198.18.0.1"]);

    // Each node has its own address on eth0 and a default route via the hub.
    let addr = fleet.exec(1, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("198.18.0.12/24"), "node 1 eth0: {addr}");
    let route = fleet.exec(1, &["ip", "route", "show", "default"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("via 198.18.0.1"),
        "node 1 default route: {route}"
    );

    // A failing command is reported, not hidden.
    let out = fleet.try_exec(0, &["ip", "link", "show", "dev", "no-such-link"]);
    assert!(!out.status.success());

    let dir = fleet.dir().to_path_buf();
    drop(fleet);
    assert_all_gone(&names);
    assert!(
        !dir.exists(),
        "temp dir of a passing test was kept: {}",
        dir.display()
    );
}

#[test]
fn no_link_of_a_fleet_appears_in_the_root_namespace() {
    if !require_root() {
        return;
    }
    let before = netns::run(&["ip", "-o", "link", "show"]).stdout;
    let fleet = Fleet::new("selftest_links", 2);
    let after = netns::run(&["ip", "-o", "link", "show"]).stdout;
    assert_eq!(
        String::from_utf8_lossy(&before).lines().count(),
        String::from_utf8_lossy(&after).lines().count(),
        "building a fleet changed the root namespace's links"
    );
    drop(fleet);
}

#[test]
fn fleet_dropped_during_a_panic_leaves_no_namespaces() {
    if !require_root() {
        return;
    }
    let mut names: Vec<String> = Vec::new();
    let mut dir = PathBuf::new();
    let mut pids: Vec<u32> = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut fleet = Fleet::new("selftest_panic", 2);
        names = fleet.namespaces();
        dir = fleet.dir().to_path_buf();
        pids.push(fleet.spawn(0, "sleeper", &["sleep", "600"]));
        pids.push(fleet.spawn(1, "sleeper", &["sleep", "600"]));
        panic!("deliberate panic with a live fleet");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    assert_eq!(names.len(), 3);
    assert_all_gone(&names);
    for pid in pids {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "process {pid} survived the fleet"
        );
    }
    // A failed test keeps its logs; this one failed on purpose, so clean up.
    assert!(dir.exists(), "logs of a failed test should be kept");
    std::fs::remove_dir_all(&dir).expect("cannot remove the kept temp dir");
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    if !require_root() {
        return;
    }
    // A pid above the kernel's maximum can never be running.
    let dead = "rmt-4194399-stale-0-hub";
    let foreign = format!("rmtx-{}-keep", std::process::id());
    netns::add(dead);
    netns::add(&foreign);
    let fleet = Fleet::new("selftest_sweep", 0);
    let still_there = netns::exists(dead);
    let foreign_kept = netns::exists(&foreign);
    netns::delete(&foreign).expect("cannot delete the foreign namespace");
    let _ = netns::delete(dead);
    drop(fleet);
    assert!(!still_there, "stale namespace {dead} was not swept");
    assert!(foreign_kept, "a namespace outside the prefix was touched");
}

const SSL_OF_THIS_SESSION: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

fn assert_process_gone(pid: i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    assert!(stat.is_empty() || zombie, "process {pid} survived: {stat}");
}

#[test]
fn postgres_on_loopback_serves_plain_and_tls_and_keeps_data_across_restarts() {
    if !require_postgres() {
        return;
    }
    let mut pg = Postgres::start();
    assert_eq!(pg.psql("select 1"), "1");
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://reachmap:reachmap@127.0.0.1:{port}/reachmap")
    );
    assert_eq!(pg.url_tls(), format!("{}?sslmode=require", pg.url()));

    // The password works over TCP, plain and with TLS; a wrong one does not.
    let who = pg
        .psql_conn(&pg.url(), "select current_user")
        .expect("plain TCP login");
    assert_eq!(who, "reachmap");
    let plain = pg.psql_conn(&pg.conninfo("sslmode=disable"), SSL_OF_THIS_SESSION);
    assert_eq!(plain.expect("sslmode=disable"), "f");
    let tls = pg.psql_conn(&pg.conninfo("sslmode=require"), SSL_OF_THIS_SESSION);
    assert_eq!(tls.expect("sslmode=require"), "t");
    let via_url = pg.psql_conn(&pg.url_tls(), SSL_OF_THIS_SESSION);
    assert_eq!(via_url.expect("url_tls"), "t");
    let wrong = pg.psql_conn(
        &format!("host=127.0.0.1 port={port} user=reachmap password=wrong dbname=reachmap"),
        "select 1",
    );
    assert!(wrong.is_err(), "a wrong password was accepted");

    // The certificate names the listen address and localhost, under the CA.
    let ca = pg.ca_pem_path().to_str().expect("UTF-8 path").to_string();
    for host in ["127.0.0.1", "localhost"] {
        let verified = pg.psql_conn(
            &format!(
                "host={host} port={port} user=reachmap password=reachmap dbname=reachmap \
                 sslmode=verify-full sslrootcert={ca}"
            ),
            SSL_OF_THIS_SESSION,
        );
        assert_eq!(verified.expect("verify-full"), "t", "verify-full as {host}");
    }
    assert!(!pg.url_tls().contains(&ca), "url_tls names a file");

    // A table made by the client role survives a restart and a crash.
    let kept = pg.psql_conn(
        &pg.url(),
        "create table kept (v int); insert into kept values (42); select count(*) from kept",
    );
    assert_eq!(kept.expect("create table"), "1");
    pg.restart();
    assert_eq!(pg.port(), port, "restart moved the port");
    assert_eq!(pg.psql("select v from kept"), "42");
    let postmaster = pg.postmaster_pid().expect("running postmaster");
    pg.kill();
    assert!(!pg.is_running(), "still running after kill");
    assert_process_gone(postmaster);
    assert!(
        pg.psql_conn(&pg.url(), "select 1").is_err(),
        "killed server answered"
    );
    pg.restart();
    let owner = pg.psql("select tableowner from pg_tables where tablename = 'kept'");
    assert_eq!(owner, "reachmap");
    assert_eq!(
        pg.psql_conn(&pg.url_tls(), "select v from kept")
            .expect("after crash"),
        "42"
    );
    pg.stop();
    assert!(!pg.is_running(), "still running after stop");
    pg.restart();
    assert_eq!(pg.psql("select v from kept"), "42");

    // Drop stops the server and removes the directory.
    let dir = pg.dir().to_path_buf();
    let postmaster = pg.postmaster_pid().expect("running postmaster");
    drop(pg);
    assert!(!dir.exists(), "PostgreSQL dir kept: {}", dir.display());
    assert_process_gone(postmaster);
}

#[test]
fn postgres_in_a_namespace_is_reachable_from_a_node() {
    if !require_postgres() {
        return;
    }
    let fleet = Fleet::new("selftest_postgres", 1);
    let pg = Postgres::start_in(fleet.hub(), HUB_ADDR);
    assert_eq!(pg.psql("select 1"), "1");
    assert!(pg.url().contains(&format!("@{HUB_ADDR}:")), "{}", pg.url());

    // The server runs in the hub's network namespace.
    let postmaster = pg.postmaster_pid().expect("running postmaster");
    let ns_of = |path: &Path| std::fs::metadata(path).expect("stat namespace").ino();
    assert_eq!(
        ns_of(&PathBuf::from(format!("/proc/{postmaster}/ns/net"))),
        ns_of(&Path::new("/run/netns").join(fleet.hub())),
        "postmaster is not in the hub namespace"
    );

    // A node reaches it across the bridge, with a verified TLS session.
    let ca = pg.ca_pem_path().to_str().expect("UTF-8 path").to_string();
    let conninfo = pg.conninfo(&format!("sslmode=verify-full sslrootcert={ca}"));
    let psql = postgres::bin_dir()
        .expect("PostgreSQL binaries")
        .join("psql");
    let out = fleet.exec(
        0,
        &[
            psql.to_str().expect("UTF-8 path"),
            "-X",
            "-At",
            "-d",
            &conninfo,
            "-c",
            SSL_OF_THIS_SESSION,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    let hub_side = pg.psql_conn(&pg.url_tls(), SSL_OF_THIS_SESSION);
    assert_eq!(hub_side.expect("from the hub"), "t");

    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "PostgreSQL dir kept: {}", dir.display());
    assert_process_gone(postmaster);
    drop(fleet);
}

#[test]
fn postgres_dropped_during_a_panic_is_stopped_and_removed() {
    if !require_postgres() {
        return;
    }
    let mut dir = PathBuf::new();
    let mut postmaster = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let pg = Postgres::start();
        dir = pg.dir().to_path_buf();
        postmaster = pg.postmaster_pid();
        panic!("deliberate panic with a live PostgreSQL");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    assert!(
        !dir.as_os_str().is_empty() && !dir.exists(),
        "dir kept: {}",
        dir.display()
    );
    assert_process_gone(postmaster.expect("postmaster pid while running"));
}
