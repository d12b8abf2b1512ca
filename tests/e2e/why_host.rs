//! End-to-end tests of `reachmap why` for causes the collector reads from
//! the hosts' own facts: an interface down (admin down, or its carrier
//! lost), a service bound to an address peers do not use, CPU steal and an
//! overloaded host. Each fault is made for real in a namespace fleet — the
//! CPU figures through `--procfs` trees the test writes — and asserted
//! through `reachmap why --format json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

mod why_support;

use reachmap_fleet_tests::{Fleet, assert_eventually, netns, node_addr, require_root};
use why_support::{causes, evidence, running_fleet, text, wait_cause, wait_mesh, why};

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");

// ---------------------------------------------------------------------------
// INTERFACE_DOWN
// ---------------------------------------------------------------------------

/// Commands that undo what a test added to its fleet, run in reverse order
/// on drop — also when the test panics. Each is `ip -n NS ...`, and may
/// fail harmlessly when what it removes is already gone. Declare it after
/// the fleet so it runs first.
struct Undo(Vec<Vec<String>>);

impl Undo {
    fn push(&mut self, args: &[&str]) {
        self.0.push(args.iter().map(|a| a.to_string()).collect());
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for args in self.0.iter().rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            netns::run_unchecked(&args);
        }
    }
}

/// The side network between two nodes.
const SIDE_NET: &str = "198.18.2.0/24";
const SIDE_RELAY_ADDR: &str = "198.18.2.1";
const SIDE_ROUTED_ADDR: &str = "198.18.2.2";

/// Adds a second link straight between two nodes (`side0` in the relay,
/// `side1` in the routed node), over which the routed node reaches the
/// collector through the relay: its agent keeps its stream while its own
/// `eth0` is down, so the collector hears about it.
///
/// Made before the agents start, so the routed agent's stream comes from
/// its side address from the beginning.
fn add_side_link(fleet: &Fleet, undo: &mut Undo, relay: usize, routed: usize) {
    let relay_ns = fleet.node(relay).netns.clone();
    let routed_ns = fleet.node(routed).netns.clone();
    let hub_ns = fleet.hub().to_string();
    // Deleting one end of a veth pair deletes both, and the routes over them.
    undo.push(&["ip", "-n", &relay_ns, "link", "del", "side0"]);
    fleet.exec(
        relay,
        &[
            "ip", "link", "add", "side0", "type", "veth", "peer", "name", "side1", "netns",
            &routed_ns,
        ],
    );
    let relay_cidr = format!("{SIDE_RELAY_ADDR}/24");
    let routed_cidr = format!("{SIDE_ROUTED_ADDR}/24");
    fleet.exec(relay, &["ip", "addr", "add", &relay_cidr, "dev", "side0"]);
    fleet.exec(relay, &["ip", "link", "set", "side0", "up"]);
    fleet.exec(relay, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    fleet.exec(routed, &["ip", "addr", "add", &routed_cidr, "dev", "side1"]);
    fleet.exec(routed, &["ip", "link", "set", "side1", "up"]);
    // The collector, and only it, through the relay.
    let hub = format!("{}/32", reachmap_fleet_tests::HUB_ADDR);
    fleet.exec(
        routed,
        &[
            "ip",
            "route",
            "add",
            &hub,
            "via",
            SIDE_RELAY_ADDR,
            "dev",
            "side1",
        ],
    );
    undo.push(&["ip", "-n", &hub_ns, "route", "del", SIDE_NET]);
    let relay_addr = node_addr(relay).to_string();
    fleet.hub_exec(&["ip", "route", "add", SIDE_NET, "via", &relay_addr]);
}

/// Starts the collector and the agents of a 2-node fleet, and waits for
/// the mesh.
fn start_and_wait(fleet: &mut Fleet) {
    fleet.start_collector();
    fleet.start_agents();
    wait_mesh(fleet, 2);
}

#[test]
fn the_destination_interface_is_down() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("why_ifdown", 2);
    let mut undo = Undo(Vec::new());
    add_side_link(&fleet, &mut undo, 0, 1);
    start_and_wait(&mut fleet);
    // node-1's probed address is on eth0; its agent still reports through
    // node-0 over the side link.
    fleet.exec(1, &["ip", "link", "set", "eth0", "down"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "INTERFACE_DOWN",
        "node-1",
    );
    let top = &w["causes"][0];
    assert!(
        text(top, "detail").contains("eth0 on node-1 is down (admin down"),
        "the detail names the interface: {top}"
    );
    assert!(
        evidence(top).contains("eth0: admin up -> down"),
        "the evidence shows the link change: {top}"
    );
    assert!(
        text(top, "fix").contains("ip link set eth0 up"),
        "the fix brings it up: {top}"
    );
    assert!(
        w["changes"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["node"] == "node-1" && c["kind"] == "link_changed")),
        "what changed shows the link going down: {w}"
    );
}

#[test]
fn the_source_interface_lost_its_carrier() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("why_carrier", 2);
    let mut undo = Undo(Vec::new());
    add_side_link(&fleet, &mut undo, 1, 0);
    start_and_wait(&mut fleet);
    // The far end of node-0's eth0 goes down (a pulled cable): eth0 stays
    // admin up, loses its carrier and keeps its routes, so node-0 still
    // sends node-1's probes out of it.
    fleet.hub_exec(&["ip", "link", "set", "v0", "down"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "INTERFACE_DOWN",
        "node-0",
    );
    let top = &w["causes"][0];
    assert!(
        text(top, "detail").contains("eth0 on node-0 is down (admin up, state down)"),
        "the detail names the interface and its state: {top}"
    );
    assert!(
        evidence(top).contains("eth0: admin up -> up, state up -> down"),
        "the evidence shows the carrier going: {top}"
    );
}

#[test]
fn the_destination_address_is_on_a_link_whose_lower_link_is_down() {
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new("why_lowerdown", 2);
    let mut undo = Undo(Vec::new());
    add_side_link(&fleet, &mut undo, 0, 1);
    // node-1's address moves to a macvlan on eth0 (as on a VLAN or a
    // container's link): when eth0 loses its carrier, the macvlan is
    // LOWERLAYERDOWN.
    let ns1 = fleet.node(1).netns.clone();
    undo.push(&["ip", "-n", &ns1, "link", "del", "mv0"]);
    fleet.exec(
        1,
        &[
            "ip", "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode", "bridge",
        ],
    );
    fleet.exec(1, &["ip", "addr", "flush", "dev", "eth0"]);
    fleet.exec(1, &["ip", "addr", "add", "198.18.0.12/24", "dev", "mv0"]);
    fleet.exec(1, &["ip", "link", "set", "mv0", "up"]);
    start_and_wait(&mut fleet);
    fleet.hub_exec(&["ip", "link", "set", "v1", "down"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1",
        "unreachable",
        "INTERFACE_DOWN",
        "node-1",
    );
    let top = &w["causes"][0];
    assert!(
        text(top, "detail").contains("mv0 on node-1 is down (admin up, state lower_layer_down)"),
        "the detail names the interface holding the address: {top}"
    );
}

// ---------------------------------------------------------------------------
// BOUND_OTHER_ADDRESS
// ---------------------------------------------------------------------------

#[test]
fn the_service_is_bound_to_another_address() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("why_bound", 2);
    wait_mesh(&fleet, 2);
    // A service address on the loopback interface (as for a VIP): peers
    // probe node-1 at its eth0 address, never at one on lo. (A second
    // address on eth0 would not do: the planner probes a listener at the
    // address it is bound to, and that cell is ok.)
    fleet.exec(1, &["ip", "addr", "add", "198.18.1.12/32", "dev", "lo"]);
    fleet.spawn(1, "listen", &[TOOL, "listen", "198.18.1.12:8080"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:8080",
        "unreachable",
        "BOUND_OTHER_ADDRESS",
        "node-1",
    );
    let top = &w["causes"][0];
    assert!(
        text(top, "detail").contains("bound to 198.18.1.12, but node-0 connects to 198.18.0.12"),
        "the detail names both addresses: {top}"
    );
    assert!(
        text(top, "fix").contains("instead of 198.18.1.12:8080"),
        "the fix names the bound address: {top}"
    );
    assert!(
        evidence(top).contains("198.18.1.12:8080 by reachmap-test-t"),
        "the evidence names the listener and its process: {top}"
    );
    // Nobody probes a service bound to an address peers do not use: the
    // verdict comes from the facts alone.
    assert!(w["probe"].is_null(), "{w}");
}

#[test]
fn a_service_on_the_second_address_of_the_link_fails_clients_of_the_first() {
    if !require_root() {
        return;
    }
    let mut fleet = running_fleet("why_second", 2);
    wait_mesh(&fleet, 2);
    // A second address on node-1's own link, reachable from node-0: the
    // planner probes the listener there and that probe succeeds, but a
    // client of node-1's address (198.18.0.12) is refused.
    fleet.exec(1, &["ip", "addr", "add", "198.18.0.112/24", "dev", "eth0"]);
    fleet.spawn(1, "listen", &[TOOL, "listen", "198.18.0.112:8080"]);
    let w = wait_cause(
        &fleet,
        "node-0",
        "node-1:8080",
        "unreachable",
        "BOUND_OTHER_ADDRESS",
        "node-1",
    );
    assert_eq!(
        w["address"], "198.18.0.12",
        "the verdict is the clients' address: {w:#}"
    );
    let top = &w["causes"][0];
    assert!(
        text(top, "detail").contains(
            "bound to 198.18.0.112, but node-0 connects to 198.18.0.12 (node-1's primary address)"
        ),
        "{top}"
    );
    assert!(
        text(top, "fix").contains("point clients at 198.18.0.112:8080"),
        "the fix names the address that works: {top}"
    );
    let clients = w["addresses"].as_array().expect("addresses");
    assert_eq!(clients[0]["address"], "198.18.0.12", "{w:#}");
    assert_eq!(clients[0]["listening"], false, "{w:#}");
    // The address that works, really works: a connection from node-0.
    let connect = |to: &str| {
        fleet
            .try_exec(0, &["bash", "-c", &format!("exec 3<>/dev/tcp/{to}")])
            .status
            .success()
    };
    assert!(
        connect("198.18.0.112/8080"),
        "the bound address takes connections"
    );
    assert!(!connect("198.18.0.12/8080"), "the primary address refuses");
}

// ---------------------------------------------------------------------------
// CPU_STEAL and HOST_OVERLOADED
// ---------------------------------------------------------------------------

/// Files of a real host's /proc (the agent's fixtures) the trees reuse.
const MEMINFO: &str = include_str!("../../agent/tests/fixtures/procfs/host/t0/meminfo");
const PRESSURE: [(&str, &str); 3] = [
    (
        "cpu",
        include_str!("../../agent/tests/fixtures/procfs/host/t0/pressure/cpu"),
    ),
    (
        "memory",
        include_str!("../../agent/tests/fixtures/procfs/host/t0/pressure/memory"),
    ),
    (
        "io",
        include_str!("../../agent/tests/fixtures/procfs/host/t0/pressure/io"),
    ),
];
/// Files the tree writes itself; everything else links to the real /proc.
const OWN: [&str; 4] = ["stat", "loadavg", "meminfo", "pressure"];
const CPUS: u64 = 2;

/// CPU ticks one step of the fake clock adds: 100 in all, so the figures
/// are percentages of a step whatever the number of steps between two of
/// the agent's reads.
#[derive(Clone, Copy)]
struct Step {
    user: u64,
    idle: u64,
    steal: u64,
}

/// A procfs tree for `reachmap-agent --procfs`: `stat`, `loadavg`,
/// `meminfo` and `pressure/` are the test's, every other entry (`sys`,
/// `net`, `uptime`, `self`...) is a link into the real /proc. A thread
/// advances the CPU counters of `stat` every 100 ms (the agent reads every
/// second), so CPU percentages come out exactly as `Step` says. The
/// thread stops and the tree is removed on drop.
struct ProcTree {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl ProcTree {
    fn new(loadavg: &str, step: Step) -> ProcTree {
        assert_eq!(
            step.user + step.idle + step.steal,
            100,
            "a step is 100 ticks"
        );
        let dir = tempfile::Builder::new()
            .prefix("rmt-procfs-")
            .tempdir()
            .expect("cannot create the procfs tree");
        let root = dir.path().to_path_buf();
        for entry in std::fs::read_dir("/proc")
            .expect("cannot list /proc")
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Processes come and go: the tree has none (the agent then names
            // no listener's process, which these tests do not need).
            if OWN.contains(&name.as_ref()) || name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), root.join(name.as_ref()))
                .expect("cannot link into /proc");
        }
        std::fs::write(root.join("loadavg"), loadavg).expect("cannot write loadavg");
        std::fs::write(root.join("meminfo"), MEMINFO).expect("cannot write meminfo");
        std::fs::create_dir(root.join("pressure")).expect("cannot create pressure/");
        for (name, content) in PRESSURE {
            std::fs::write(root.join("pressure").join(name), content)
                .expect("cannot write pressure");
        }
        write_stat(&root, step, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    n += 1;
                    write_stat(&root, step, n);
                }
            })
        };
        ProcTree {
            dir,
            stop,
            writer: Some(writer),
        }
    }

    fn path(&self) -> &str {
        self.dir
            .path()
            .to_str()
            .expect("temp dir path is not UTF-8")
    }
}

impl Drop for ProcTree {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// /proc/stat after `n` steps, replaced atomically so the agent never reads
/// half a file.
fn write_stat(root: &Path, step: Step, n: u64) {
    let (user, idle, steal) = (
        100_000 + step.user * n,
        900_000 + step.idle * n,
        step.steal * n,
    );
    let mut text = format!("cpu  {user} 0 0 {idle} 0 0 0 {steal} 0 0\n");
    for i in 0..CPUS {
        text.push_str(&format!(
            "cpu{i} {} 0 0 {} 0 0 0 {} 0 0\n",
            user / CPUS,
            idle / CPUS,
            steal / CPUS
        ));
    }
    text.push_str("intr 0\nctxt 0\nbtime 1700000000\nprocesses 1\n");
    let tmp: PathBuf = root.join(".stat.new");
    std::fs::write(&tmp, text).expect("cannot write stat");
    std::fs::rename(&tmp, root.join("stat")).expect("cannot replace stat");
}

#[test]
fn cpu_steal_on_the_destination_and_an_overloaded_source() {
    if !require_root() {
        return;
    }
    // node-0: load 24.5 on 2 CPUs (12 per CPU), no steal.
    let overloaded = ProcTree::new(
        "24.50 18.20 12.00 30/900 12345\n",
        Step {
            user: 60,
            idle: 40,
            steal: 0,
        },
    );
    // node-1: 40% of its CPU time stolen, little load.
    let stolen = ProcTree::new(
        "0.50 0.40 0.30 1/200 4242\n",
        Step {
            user: 10,
            idle: 50,
            steal: 40,
        },
    );
    let mut fleet = Fleet::new("why_cpu", 2);
    fleet.start_collector();
    fleet.start_agent_with(0, &["--procfs", overloaded.path()]);
    fleet.start_agent_with(1, &["--procfs", stolen.path()]);
    wait_mesh(&fleet, 2);
    // Load and steal explain only slow or lost probes: lose 30% of the
    // probes into node-1 (its agent's stream is left alone).
    fleet.exec(
        1,
        &[
            "nft",
            "add table inet rmtest; \
             add chain inet rmtest input { type filter hook input priority 0; policy accept; }; \
             add rule inet rmtest input tcp dport 7442 numgen random mod 100 < 30 drop",
        ],
    );
    // The loss itself weighs more than what may slow a host down: the top
    // cause is INTERMITTENT_LOSS, with CPU_STEAL and HOST_OVERLOADED after
    // it, each on its own node.
    let w = assert_eventually!(
        Duration::from_secs(60),
        || {
            let w = why(&fleet, "node-0", "node-1")?;
            let steal = causes(&w, "CPU_STEAL");
            let load = causes(&w, "HOST_OVERLOADED");
            if w["verdict"] == "degraded"
                && w["causes"][0]["code"] == "INTERMITTENT_LOSS"
                && !steal.is_empty()
                && !load.is_empty()
            {
                Ok(w)
            } else {
                Err(serde_json::to_string_pretty(&w).unwrap_or_default())
            }
        },
        "why node-0 node-1: degraded, INTERMITTENT_LOSS first, CPU_STEAL and HOST_OVERLOADED present"
    );
    assert_eq!(w["causes"][0]["node"], "node-1", "{w}");

    let steal = causes(&w, "CPU_STEAL");
    assert_eq!(steal.len(), 1, "CPU steal on node-1 only: {w}");
    let steal = steal[0];
    assert_eq!(steal["node"], "node-1", "{steal}");
    assert!(
        text(steal, "detail").contains("node-1 loses 40% of its CPU time"),
        "the detail gives the figure: {steal}"
    );
    assert!(
        evidence(steal).contains("cpu steal 40.0%"),
        "the evidence gives the figure: {steal}"
    );

    let load = causes(&w, "HOST_OVERLOADED");
    assert_eq!(load.len(), 1, "node-0 only is overloaded: {w}");
    let load = load[0];
    assert_eq!(load["node"], "node-0", "{load}");
    assert!(
        text(load, "detail").contains("node-0 is overloaded: load 24.5 on 2 cpus"),
        "the detail gives the load: {load}"
    );
    assert!(
        evidence(load).contains("load 24.50 18.20 12.00, cpu busy 60%"),
        "the evidence gives the load averages and CPU use: {load}"
    );
}
