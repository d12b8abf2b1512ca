//! What every agent probes, computed from the fleet: pure and deterministic,
//! so the same fleet always gives the same plans (and the same digests, which
//! is how the state task knows whether to push a new plan version).
//!
//! For each connected source and each chosen peer (never itself):
//! - TCP to the peer's probe port and an ICMP echo, at the peer's primary
//!   address — the first of `NodeInput::addresses`. One address is enough to
//!   answer "can A reach B"; probing every address would multiply the matrix
//!   without adding a cell.
//! - every declared service (HTTP when declared with a path);
//! - TCP to every port the peer listens on at a non-loopback address (any
//!   address, or one of its own addresses), except the probe port, UDP, and
//!   ephemeral ports (>= 32768) unless a service declares them; at most
//!   `max_learned_ports_per_peer` of them, lowest first.
//!
//! One target per (peer, port, kind): that is a matrix cell. The first one
//! wins, in the order above, so a declared service names the cell of a port
//! its peer also listens on.
//!
//! Peers: every other node while the fleet has at most `full_mesh_max` nodes.
//! Beyond, as in Pingmesh: the node's own zone (label `zone`; nodes without
//! one form one zone) — all of it, or `full_mesh_max` of it by rendezvous hash
//! when the zone itself is larger — plus `representatives` nodes of each other
//! zone, chosen by rendezvous hashing of (source, candidate): stable as the
//! fleet changes (a node joining moves few choices) and spread over the
//! candidates, so no node is everyone's representative. A plan then names at
//! most `full_mesh_max + representatives × (zones − 1)` peers, and never more
//! than `max_targets_per_node` targets (probe ports first, then ICMP, then
//! services, then learned ports, so a cap drops the least useful).
//!
//! Zone choices can leave a node with few probers (a zone larger than
//! `full_mesh_max`, no representatives): every node gets at least
//! `min_probers` of them, the extra ones from a hash ring of the sources
//! (`incremental.rs`, which also keeps the plans between passes).
//!
//! Disconnected nodes are still probed (the host may be up while its agent is
//! down); a disconnected source gets no plan. Nodes without an address cannot
//! be probed and are not peers.

use super::StableHash;
use crate::model::{BindScope, Protocol};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

pub const DEFAULT_PROBE_PORT: u16 = 7442;
/// Linux's default `ip_local_port_range` starts here: listeners above it are
/// usually clients' ephemeral ports or short-lived, not services.
pub const EPHEMERAL_PORT_START: u16 = 32768;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    Tcp,
    Http {
        path: String,
        expect_status: u16,
        tls: Option<ServiceTls>,
    },
    Udp {
        payload: Vec<u8>,
        expect_reply: bool,
    },
}

/// How an HTTPS service's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTls {
    /// `{node}` stands for the probed node's name; `None` is its address.
    pub server_name: Option<String>,
    /// 1 + the index into `PlannerConfig::tls_cas`; 0 for the system roots.
    pub ca: u32,
}

/// A service declared in the collector's config, probed on every peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub kind: ServiceKind,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannerConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Results per target in the agent's rolling window.
    pub window: usize,
    pub max_probes_per_second: u32,
    pub probe_port: u16,
    pub services: Vec<Service>,
    /// Fleet size up to which every node probes every other.
    pub full_mesh_max: usize,
    /// Nodes of each other zone a node probes in a sparse plan.
    pub representatives: usize,
    /// In a sparse plan, every node is probed by at least this many
    /// sources (when the fleet has that many others): a node the zone
    /// choices leave short gets extra probers.
    pub min_probers: usize,
    pub learn_listener_ports: bool,
    pub max_learned_ports_per_peer: usize,
    pub max_targets_per_node: usize,
    /// Names the fleet's clients use for its members: every agent looks up
    /// the names of the other members.
    pub names: Vec<FleetName>,
    /// CA bundles (PEM) HTTPS services are checked against.
    pub tls_cas: Vec<std::sync::Arc<str>>,
}

/// A name the config gives a fleet member, e.g. `db.example.com` → `db-1`
/// (`[[names]]` in the collector's config).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetName {
    pub name: String,
    pub node: String,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            window: 10,
            max_probes_per_second: 200,
            probe_port: DEFAULT_PROBE_PORT,
            services: Vec::new(),
            full_mesh_max: 50,
            representatives: 3,
            min_probers: 3,
            learn_listener_ports: true,
            max_learned_ports_per_peer: 32,
            max_targets_per_node: 1024,
            names: Vec::new(),
            tls_cas: Vec::new(),
        }
    }
}

/// One fleet member as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInput {
    pub name: String,
    /// The node's `zone` label.
    pub zone: Option<String>,
    pub connected: bool,
    /// The addresses peers should probe (universe scope, not loopback, not
    /// link-local), the primary one first.
    pub addresses: Vec<IpAddr>,
    pub listeners: Vec<(Protocol, IpAddr, u16, BindScope)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Tcp,
    Icmp,
    Http,
    Https,
    Udp,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 5] = [
        ProbeKind::Tcp,
        ProbeKind::Icmp,
        ProbeKind::Http,
        ProbeKind::Https,
        ProbeKind::Udp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Icmp => "icmp",
            ProbeKind::Http => "http",
            ProbeKind::Https => "https",
            ProbeKind::Udp => "udp",
        }
    }

    pub fn parse(s: &str) -> Option<ProbeKind> {
        ProbeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn code(self) -> u8 {
        match self {
            ProbeKind::Tcp => 1,
            ProbeKind::Icmp => 2,
            ProbeKind::Http => 3,
            ProbeKind::Https => 4,
            ProbeKind::Udp => 5,
        }
    }
}

/// One target of a plan; maps 1:1 onto the wire's `ProbeTarget`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannedTarget {
    /// Stable for the same (node, address, port, kind), never 0.
    pub id: u64,
    pub node: String,
    pub address: IpAddr,
    /// 0 for ICMP.
    pub port: u16,
    pub kind: ProbeKind,
    pub service: Option<String>,
    pub http_path: Option<String>,
    pub expect_status: Option<u16>,
    /// HTTPS: the name checked, `{node}` filled in; `None` is the address.
    pub tls_server_name: Option<String>,
    /// HTTPS: 1 + the index into the plan's `tls_cas`; 0 for system roots.
    pub tls_ca: u32,
    /// UDP: the datagram sent; empty for other kinds.
    pub udp_payload: Vec<u8>,
    /// UDP: silence is a failure.
    pub udp_expect_reply: bool,
}

impl PlannedTarget {
    pub fn new(node: &str, address: IpAddr, port: u16, kind: ProbeKind) -> PlannedTarget {
        PlannedTarget::owned(node.to_string(), address, port, kind)
    }

    /// `new` taking the name it keeps.
    pub fn owned(node: String, address: IpAddr, port: u16, kind: ProbeKind) -> PlannedTarget {
        PlannedTarget {
            id: target_id(&node, address, port, kind),
            node,
            address,
            port,
            kind,
            service: None,
            http_path: None,
            expect_status: None,
            tls_server_name: None,
            tls_ca: 0,
            udp_payload: Vec::new(),
            udp_expect_reply: false,
        }
    }
}

/// One node's plan; maps 1:1 onto the wire's `ProbePlan` (without the
/// version, which the state task assigns when the digest changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// Sorted by (node, port, kind).
    pub targets: Vec<PlannedTarget>,
    /// The addresses of this plan's targets, sorted: the only ones its
    /// probes may go to. Not the whole fleet's (that goes to agents as
    /// `FleetAddresses` deltas): at 10,000 nodes a copy per plan was 1.7 GB,
    /// and a member joining changed every plan.
    pub fleet_addresses: Vec<IpAddr>,
    pub interval: Duration,
    pub timeout: Duration,
    pub window: usize,
    pub max_probes_per_second: u32,
    /// Names of other members for the agent to look up, sorted.
    pub names: Vec<FleetName>,
    /// CA bundles the plan's HTTPS targets name (all the config's, when
    /// one does).
    pub tls_cas: Vec<std::sync::Arc<str>>,
    /// A hash of everything above.
    pub digest: u64,
}

/// A target's id: the same for the same (node, address, port, kind) in every
/// plan and across collector restarts; never 0 (the wire's "unset").
pub fn target_id(node: &str, address: IpAddr, port: u16, kind: ProbeKind) -> u64 {
    let h = StableHash::new()
        .str(node)
        .ip(address)
        .bytes(&port.to_le_bytes())
        .bytes(&[kind.code()])
        .finish();
    h.max(1)
}

/// Every connected source's plan for `fleet`, by source name. The state
/// task keeps a `Planner` instead, which recomputes only the plans a change
/// touches; the result is the same.
pub fn plan(fleet: &[NodeInput], cfg: &PlannerConfig) -> BTreeMap<String, NodePlan> {
    let mut p = super::Planner::default();
    p.update(fleet, cfg)
        .changed
        .into_iter()
        .map(|(name, plan)| (name.to_string(), plan))
        .collect()
}

pub(super) fn zone_of(n: &NodeInput) -> &str {
    n.zone.as_deref().unwrap_or("")
}

/// Rendezvous weight of `candidate` for `source`.
pub(super) fn weight(source: u64, candidate: u64) -> u64 {
    super::mix(source.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ candidate)
}

/// The peer's targets, each tagged with its priority tier (0 first).
pub(super) fn peer_targets(
    peer: &NodeInput,
    cfg: &PlannerConfig,
    declared_ports: &HashSet<u16>,
    out: &mut Vec<(u8, PlannedTarget)>,
) {
    let Some(&primary) = peer.addresses.first() else {
        return;
    };
    let mut seen: HashSet<(u16, ProbeKind)> = HashSet::new();
    let mut push = |tier: u8, t: PlannedTarget, out: &mut Vec<(u8, PlannedTarget)>| {
        if seen.insert((t.port, t.kind)) {
            out.push((tier, t));
        }
    };
    let name = peer.name.as_str();
    push(
        0,
        PlannedTarget::new(name, primary, cfg.probe_port, ProbeKind::Tcp),
        out,
    );
    push(
        1,
        PlannedTarget::new(name, primary, 0, ProbeKind::Icmp),
        out,
    );
    for s in &cfg.services {
        let t = match &s.kind {
            ServiceKind::Tcp => PlannedTarget::new(name, primary, s.port, ProbeKind::Tcp),
            ServiceKind::Udp {
                payload,
                expect_reply,
            } => PlannedTarget {
                udp_payload: payload.clone(),
                udp_expect_reply: *expect_reply,
                ..PlannedTarget::new(name, primary, s.port, ProbeKind::Udp)
            },
            ServiceKind::Http {
                path,
                expect_status,
                tls,
            } => PlannedTarget {
                http_path: Some(path.clone()),
                expect_status: Some(*expect_status),
                tls_server_name: tls
                    .as_ref()
                    .and_then(|t| t.server_name.as_ref())
                    .map(|n| n.replace("{node}", name)),
                tls_ca: tls.as_ref().map_or(0, |t| t.ca),
                ..PlannedTarget::new(
                    name,
                    primary,
                    s.port,
                    if tls.is_some() {
                        ProbeKind::Https
                    } else {
                        ProbeKind::Http
                    },
                )
            },
        };
        push(
            2,
            PlannedTarget {
                service: Some(s.name.clone()),
                ..t
            },
            out,
        );
    }
    if !cfg.learn_listener_ports {
        return;
    }
    let mut learned: Vec<(u16, IpAddr)> = peer
        .listeners
        .iter()
        .filter(|(proto, _, port, _)| {
            *proto == Protocol::Tcp
                && *port != cfg.probe_port
                && *port != 0
                && (*port < EPHEMERAL_PORT_START || declared_ports.contains(port))
        })
        .filter_map(|(_, address, port, scope)| {
            listener_address(peer, *address, *scope).map(|a| (*port, a))
        })
        .collect();
    learned.sort_unstable();
    let mut ports = 0;
    for (port, address) in learned {
        if ports == cfg.max_learned_ports_per_peer {
            break;
        }
        let before = out.len();
        push(
            3,
            PlannedTarget::new(name, address, port, ProbeKind::Tcp),
            out,
        );
        if out.len() > before {
            ports += 1;
        }
    }
}

/// Where a peer's listener is reachable from other nodes, if it is: the
/// primary address for a wildcard bind (the first address of the listener's
/// family for a 0.0.0.0 bind; `::` is dual-stack by default), the bound
/// address when it is one of the peer's addresses, never loopback.
fn listener_address(peer: &NodeInput, bound: IpAddr, scope: BindScope) -> Option<IpAddr> {
    match scope {
        BindScope::Loopback => None,
        BindScope::Address => peer.addresses.iter().copied().find(|a| *a == bound),
        BindScope::Any => match bound {
            IpAddr::V4(_) => peer.addresses.iter().copied().find(IpAddr::is_ipv4),
            IpAddr::V6(_) => peer.addresses.first().copied(),
        },
    }
}

pub(super) fn digest(plan: &NodePlan) -> u64 {
    let mut h = StableHash::new()
        .u64(u64::try_from(plan.interval.as_nanos()).unwrap_or(u64::MAX))
        .u64(u64::try_from(plan.timeout.as_nanos()).unwrap_or(u64::MAX))
        .u64(plan.window as u64)
        .u64(u64::from(plan.max_probes_per_second));
    for t in &plan.targets {
        h = h
            .u64(t.id)
            .str(&t.node)
            .ip(t.address)
            .bytes(&t.port.to_le_bytes())
            .bytes(&[t.kind.code()])
            .str(t.service.as_deref().unwrap_or(""))
            .str(t.http_path.as_deref().unwrap_or(""))
            .bytes(&t.expect_status.unwrap_or(0).to_le_bytes())
            .str(t.tls_server_name.as_deref().unwrap_or(""))
            .u64(u64::from(t.tls_ca))
            .u64(t.udp_payload.len() as u64)
            .bytes(&t.udp_payload)
            .bytes(&[u8::from(t.udp_expect_reply)]);
    }
    h = h.bytes(b"cas");
    for ca in &plan.tls_cas {
        h = h.str(ca);
    }
    h = h.bytes(b"addresses");
    for a in &plan.fleet_addresses {
        h = h.ip(*a);
    }
    h = h.bytes(b"names");
    for n in &plan.names {
        h = h.str(&n.name).str(&n.node);
    }
    h.finish()
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
