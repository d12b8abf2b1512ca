//! Self-tests of the fleet harness. They need root but not the reachmap
//! binaries: they check that a fleet is a working network and that it leaves
//! nothing behind.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use reachmap_fleet_tests::{Fleet, netns, require_root};

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
