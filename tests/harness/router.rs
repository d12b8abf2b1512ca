//! A routed fleet: a router namespace joining the hub's bridge to a second
//! bridge, so some nodes sit one router away from the others — the fleet a
//! trace or a port filter "in the path" needs.
//!
//! ```text
//!  node-0 ─┐                    ┌──────────┐                  ┌─ node-1
//!          br0 (hub, 198.18.0.1)┤  router  ├ br1 (hub, no IP) ┤
//!  ...    ─┘      198.18.0.254 ─┤ forwards ├─ 198.18.1.1      └─ ...
//!                               └──────────┘
//! ```
//!
//! The hub does not forward: everything between the two bridges goes
//! through the router, whose own firewall (`router_exec`) is the filter in
//! the path. The router namespace is torn down with the fleet.

use crate::fleet::{Fleet, checked, run_in};
use std::net::Ipv4Addr;
use std::process::Output;
use std::time::Duration;

/// The router's address on the hub's bridge.
pub const ROUTER_LAN: &str = "198.18.0.254";
/// The router's address on the far bridge, the moved nodes' gateway.
pub const ROUTER_FAR: &str = "198.18.1.1";
const FAR_NET: &str = "198.18.1.0/24";

/// Address of node `i` once moved behind the router: 198.18.1.(11 + i).
pub fn far_addr(i: usize) -> Ipv4Addr {
    let last = u8::try_from(11 + i).expect("node index out of range");
    Ipv4Addr::new(198, 18, 1, last)
}

impl Fleet {
    /// Adds the router and moves nodes `behind` onto the far bridge (their
    /// address becomes `far_addr(i)`). Call before starting the collector
    /// and agents, so every address they report is the final one.
    pub fn add_router(&mut self, behind: &[usize]) {
        let router = format!("{}-rt", self.hub.trim_end_matches("-hub"));
        self.add_netns(&router);
        let hub = self.hub.clone();
        let hub_run = |cmd: &str| {
            let args: Vec<&str> = cmd.split(' ').collect();
            checked(&hub, &args, run_in(&hub, &args, Duration::from_secs(30)));
        };
        let router_run = |cmd: &str| {
            let args: Vec<&str> = cmd.split(' ').collect();
            checked(
                &router,
                &args,
                run_in(&router, &args, Duration::from_secs(30)),
            );
        };
        hub_run("ip link add br1 type bridge");
        hub_run("ip link set br1 up");
        for (hub_end, router_end, bridge, addr) in [
            ("r0", "lan", "br0", format!("{ROUTER_LAN}/24")),
            ("r1", "far", "br1", format!("{ROUTER_FAR}/24")),
        ] {
            hub_run(&format!(
                "ip link add {hub_end} type veth peer name {router_end} netns {router}"
            ));
            hub_run(&format!("ip link set {hub_end} master {bridge}"));
            hub_run(&format!("ip link set {hub_end} up"));
            router_run(&format!("ip addr add {addr} dev {router_end}"));
            router_run(&format!("ip link set {router_end} up"));
        }
        router_run("ip link set lo up");
        router_run("sysctl -qw net.ipv4.ip_forward=1");
        // The collector reaches the far side through the router.
        hub_run(&format!("ip route add {FAR_NET} via {ROUTER_LAN}"));
        for i in 0..self.nodes.len() {
            let ns = self.nodes[i].netns.clone();
            let node_run = |cmd: &str| {
                let args: Vec<&str> = cmd.split(' ').collect();
                checked(&ns, &args, run_in(&ns, &args, Duration::from_secs(30)));
            };
            if behind.contains(&i) {
                hub_run(&format!("ip link set v{i} nomaster"));
                hub_run(&format!("ip link set v{i} master br1"));
                node_run("ip addr flush dev eth0");
                node_run(&format!("ip addr add {}/24 dev eth0", far_addr(i)));
                node_run(&format!("ip route add default via {ROUTER_FAR}"));
                self.nodes[i].addr = far_addr(i);
            } else {
                node_run(&format!("ip route add {FAR_NET} via {ROUTER_LAN}"));
            }
        }
        self.router = Some(router);
    }

    /// Runs a command inside the router; panics unless it succeeds.
    pub fn router_exec(&self, args: &[&str]) -> Output {
        let router = self
            .router
            .as_deref()
            .expect("no router: call add_router first");
        checked(router, args, run_in(router, args, Duration::from_secs(30)))
    }
}
