//! The fleet: a hub namespace with a bridge and N node namespaces, and the
//! guaranteed teardown of everything it created.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns;
use crate::patient;
use crate::process::{self, GRACE, Proc};

/// Address of the hub's bridge, where the collector listens.
pub const HUB_ADDR: &str = "198.18.0.1";
/// The collector's gRPC port (agents and the CLI).
pub const COLLECTOR_GRPC_PORT: u16 = 7440;
/// The collector's HTTP port (JSON, metrics).
pub const COLLECTOR_HTTP_PORT: u16 = 7441;
/// The URL agents and the CLI use to reach the collector.
pub const COLLECTOR_URL: &str = "https://198.18.0.1:7440";
/// The collector's HTTP side (API, page, metrics), over TLS.
pub const COLLECTOR_HTTP_URL: &str = "https://198.18.0.1:7441";

/// Name of the bridge inside the hub namespace.
const BRIDGE: &str = "br0";
/// Lines of each log printed when a test fails.
const TAIL_LINES: usize = 60;
/// Largest fleet: node addresses run from .11 upwards inside one /24.
const MAX_NODES: usize = 200;

/// Address of node `i` on the fleet's bridge: 198.18.0.(11 + i).
pub fn node_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_NODES, "node index {i} out of range");
    let last = u8::try_from(11 + i).expect("node index out of range");
    Ipv4Addr::new(198, 18, 0, last)
}

/// One node of the fleet.
#[derive(Debug, Clone)]
pub struct Node {
    /// Position in the fleet, from 0.
    pub index: usize,
    /// The node name the agent reports, `node-<index>`.
    pub name: String,
    /// The node's network namespace.
    pub netns: String,
    /// The node's address on `eth0` (a /24 on the hub's bridge).
    pub addr: Ipv4Addr,
}

/// A running fleet. Dropping it stops every process it started and deletes
/// every namespace it created, also when the test panics.
pub struct Fleet {
    pub(crate) hub: String,
    pub(crate) nodes: Vec<Node>,
    /// Namespaces created so far, in creation order.
    created: Vec<String>,
    dir: Option<TempDir>,
    dir_path: PathBuf,
    pub(crate) collector: Option<Proc>,
    pub(crate) agents: Vec<Option<Proc>>,
    pub(crate) extra: Vec<Proc>,
    /// The fleet's credentials, made before the collector or an agent
    /// first starts.
    pub(crate) trust: Option<crate::control::FleetTrust>,
    /// The router namespace, once `add_router` made one.
    pub(crate) router: Option<String>,
    /// Flags naming the collector's store (`--store URL --store-ca FILE`),
    /// given to every run of the collector, offline commands included.
    pub(crate) store_flags: Vec<String>,
}

impl Fleet {
    /// Builds a fleet of `n_nodes` nodes for the test `test_name`. Sweeps
    /// namespaces left behind by earlier crashed runs first.
    pub fn new(test_name: &str, n_nodes: usize) -> Fleet {
        assert!(n_nodes <= MAX_NODES, "at most {MAX_NODES} nodes per fleet");
        netns::sweep_stale();
        let prefix = netns::fleet_prefix(test_name);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("cannot create the fleet's temporary directory");
        let dir_path = dir.path().to_path_buf();
        let nodes = (0..n_nodes)
            .map(|i| Node {
                index: i,
                name: format!("node-{i}"),
                netns: format!("{prefix}-n{i}"),
                addr: node_addr(i),
            })
            .collect();
        // The fleet exists before anything is created, so a failure half-way
        // through the build still tears down what was made.
        let mut fleet = Fleet {
            hub: format!("{prefix}-hub"),
            nodes,
            created: Vec::new(),
            dir: Some(dir),
            dir_path,
            collector: None,
            agents: (0..n_nodes).map(|_| None).collect(),
            extra: Vec::new(),
            trust: None,
            router: None,
            store_flags: Vec::new(),
        };
        fleet.build();
        fleet
    }

    fn build(&mut self) {
        let hub = self.hub.clone();
        self.add_netns(&hub);
        netns::run(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        netns::run(&["ip", "-n", &hub, "link", "add", BRIDGE, "type", "bridge"]);
        let hub_cidr = format!("{HUB_ADDR}/24");
        netns::run(&["ip", "-n", &hub, "addr", "add", &hub_cidr, "dev", BRIDGE]);
        netns::run(&["ip", "-n", &hub, "link", "set", BRIDGE, "up"]);
        for node in self.nodes.clone() {
            let ns = node.netns.as_str();
            self.add_netns(ns);
            let veth = format!("v{}", node.index);
            // Created from inside the hub: no link name ever exists in the
            // root namespace, so parallel fleets cannot collide.
            netns::run(&[
                "ip", "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            netns::run(&["ip", "-n", &hub, "link", "set", &veth, "master", BRIDGE]);
            netns::run(&["ip", "-n", &hub, "link", "set", &veth, "up"]);
            let cidr = format!("{}/24", node.addr);
            netns::run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            netns::run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
            netns::run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            netns::run(&["ip", "-n", ns, "route", "add", "default", "via", HUB_ADDR]);
        }
    }

    pub(crate) fn add_netns(&mut self, name: &str) {
        netns::add(name);
        self.created.push(name.to_string());
    }

    /// The hub namespace (bridge, collector).
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`; panics if there is no such node.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("fleet has {} nodes, no node {i}", self.nodes.len()))
    }

    /// Every namespace this fleet created (hub first).
    pub fn namespaces(&self) -> Vec<String> {
        self.created.clone()
    }

    /// The fleet's temporary directory (logs, collector data). Kept after a
    /// failed test, removed after a passing one.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Gives node `i` its own `/etc/<file>` (e.g. "hosts"): processes started
    /// in it from now on see `contents` there (`ip netns exec` mounts it).
    /// Later writes are seen by running processes too: the file is rewritten
    /// in place, never replaced. Removed with the namespace.
    pub fn etc_file(&self, i: usize, file: &str, contents: &str) {
        assert!(
            !file.contains('/') && !file.is_empty(),
            "{file:?} is not a file name"
        );
        let dir = netns::etc_dir(&self.node(i).netns);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(file);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Runs a command inside node `i`; panics with its output unless it succeeds.
    pub fn exec(&self, i: usize, args: &[&str]) -> Output {
        let ns = self.node(i).netns.clone();
        checked(&ns, args, self.try_exec(i, args))
    }

    /// Runs a command inside node `i` and returns its output whatever the
    /// exit status.
    pub fn try_exec(&self, i: usize, args: &[&str]) -> Output {
        run_in(&self.node(i).netns, args, Duration::from_secs(30))
    }

    /// Runs a command inside the hub namespace; panics unless it succeeds.
    pub fn hub_exec(&self, args: &[&str]) -> Output {
        checked(&self.hub, args, self.try_hub_exec(args))
    }

    /// Runs a command inside the hub namespace, whatever the exit status.
    pub fn try_hub_exec(&self, args: &[&str]) -> Output {
        run_in(&self.hub, args, Duration::from_secs(30))
    }

    fn all_procs(&mut self) -> Vec<&mut Proc> {
        let mut procs: Vec<&mut Proc> = self.agents.iter_mut().flatten().collect();
        procs.extend(self.extra.iter_mut());
        procs.extend(self.collector.iter_mut());
        procs
    }

    /// SIGTERM to everything, one shared grace period, then SIGKILL.
    fn stop_everything(&mut self) {
        let mut procs = self.all_procs();
        for p in procs.iter_mut() {
            p.signal(nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        for p in procs {
            let left = deadline.saturating_duration_since(Instant::now());
            if p.wait_timeout(left).is_none() {
                eprintln!("harness: {} ignored SIGTERM; killing it", p.label());
                p.kill();
            }
        }
    }

    fn print_logs(&self) {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir_path)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for log in logs {
            eprintln!("\n===== tail of {} =====", log.display());
            eprint!("{}", process::tail(&log, TAIL_LINES));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        self.stop_everything();
        if failing {
            self.print_logs();
        }
        let mut errors = Vec::new();
        for ns in self.created.iter().rev() {
            if let Err(e) = netns::delete(ns) {
                errors.push(e);
            }
        }
        if let Some(dir) = self.dir.take() {
            if failing {
                eprintln!(
                    "harness: test failed; logs kept in {}",
                    dir.keep().display()
                );
            } else if let Err(e) = dir.close() {
                errors.push(format!("cannot remove {}: {e}", self.dir_path.display()));
            }
        }
        if !errors.is_empty() {
            let msg = format!("fleet teardown failed:\n{}", errors.join("\n"));
            if failing {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// Runs `args` inside `netns` via `ip netns exec`, with a timeout.
pub(crate) fn run_in(netns: &str, args: &[&str], timeout: Duration) -> Output {
    assert!(!args.is_empty(), "empty command line");
    let mut cmd = Command::new("ip");
    process::scrub_env(&mut cmd);
    cmd.args(["netns", "exec", netns]).args(args);
    process::output_with_timeout(cmd, patient(timeout))
}

pub(crate) fn checked(netns: &str, args: &[&str], out: Output) -> Output {
    if !out.status.success() {
        panic!(
            "command failed in {netns}: {}\n{}",
            args.join(" "),
            netns::describe(&out)
        );
    }
    out
}
