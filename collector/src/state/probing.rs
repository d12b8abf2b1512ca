//! The probing half of the fleet state, owned by the state task: the plans
//! sent to every agent, the matrix their results fill, and the one-off
//! commands (test-port) waiting for an agent's answer.

use super::Node;
use crate::config::ProbeSettings;
use crate::encode;
use crate::model::{BindScope, Protocol};
use crate::probe::{
    Matrix, NodeInput, NodePlan, Planner, PlannerConfig, Service, ServiceKind, ServiceTls,
    StateChange, WindowInput,
};
use crate::store::NodeRecord;
use crate::store::plans::PlanRow;
use crate::store::registry::{ProbeInput, ProbeListener};
use reachmap_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use tokio::sync::oneshot;

pub fn planner_config(s: &ProbeSettings) -> PlannerConfig {
    // Each bundle once, in the order the services name them.
    let mut tls_cas: Vec<std::sync::Arc<str>> = Vec::new();
    let mut ca_of = |pem: &Option<std::sync::Arc<str>>| -> u32 {
        let Some(pem) = pem else { return 0 };
        let i = match tls_cas.iter().position(|c| c == pem) {
            Some(i) => i,
            None => {
                tls_cas.push(pem.clone());
                tls_cas.len() - 1
            }
        };
        u32::try_from(i + 1).unwrap_or(0)
    };
    let services = s
        .services
        .iter()
        .map(|c| Service {
            name: c.name.clone(),
            port: c.port,
            kind: match c.http_path() {
                _ if c.is_udp() => ServiceKind::Udp {
                    payload: c.udp_payload(),
                    expect_reply: c.expect_reply,
                },
                Some(path) => ServiceKind::Http {
                    path: path.to_string(),
                    expect_status: c.expect_status.unwrap_or(200),
                    tls: c.tls.then(|| ServiceTls {
                        server_name: c.server_name.clone(),
                        ca: ca_of(&c.ca_pem),
                    }),
                },
                None => ServiceKind::Tcp,
            },
        })
        .collect();
    PlannerConfig {
        interval: s.interval,
        timeout: s.timeout,
        window: s.window,
        max_probes_per_second: s.max_probes_per_second,
        full_mesh_max: s.full_mesh_max,
        representatives: s.zone_representatives,
        min_probers: s.min_probers,
        services,
        names: s.names.clone(),
        tls_cas,
        ..PlannerConfig::default()
    }
}

/// Addresses peers should probe: global ones, not loopback or link-local.
pub fn probe_addresses(node: &Node) -> Vec<IpAddr> {
    let Some(f) = &node.facts else {
        return node
            .remembered_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .filter(|a: &IpAddr| usable(*a))
            .collect();
    };
    let mut out: Vec<IpAddr> = f
        .interfaces
        .values()
        .filter(|i| i.name != "lo")
        .flat_map(|i| &i.addresses)
        .filter(|a| a.scope == "universe" && usable(a.ip))
        .map(|a| a.ip)
        .collect();
    // IPv4 first: the primary address is the one peers most likely use.
    out.sort_by_key(|a| (a.is_ipv6(), *a));
    out.dedup();
    out
}

fn usable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// What a shared store's leader plans `n`'s probes from, for its record;
/// `None` before its agent sent facts.
pub fn probe_input(n: &Node) -> Option<ProbeInput> {
    n.facts.as_ref()?;
    let input = node_input(n);
    Some(ProbeInput {
        addresses: input.addresses,
        listeners: input
            .listeners
            .into_iter()
            .filter(|(_, _, _, scope)| *scope != BindScope::Loopback)
            .map(|(_, address, port, scope)| ProbeListener {
                address,
                port,
                any: scope == BindScope::Any,
            })
            .collect(),
    })
}

/// A node another collector wrote, as its record says, for the planner
/// (connected as the record says); `None` when it has no probe input yet.
pub fn remote_input(r: &NodeRecord) -> Option<NodeInput> {
    let p = r.probe.as_ref()?;
    Some(NodeInput {
        name: r.name.clone(),
        zone: r.labels.get("zone").cloned(),
        connected: r.connected,
        addresses: p.addresses.iter().copied().filter(|a| usable(*a)).collect(),
        listeners: p
            .listeners
            .iter()
            .map(|l| {
                let scope = if l.any {
                    BindScope::Any
                } else {
                    BindScope::Address
                };
                (Protocol::Tcp, l.address, l.port, scope)
            })
            .collect(),
    })
}

fn node_input(n: &Node) -> NodeInput {
    NodeInput {
        name: n.name.clone(),
        zone: n.labels.get("zone").cloned(),
        connected: n.connected(),
        addresses: probe_addresses(n),
        listeners: n
            .facts
            .as_ref()
            .map(|f| {
                f.listeners
                    .values()
                    .filter(|l| l.protocol == Protocol::Tcp)
                    .map(|l| (l.protocol, l.address, l.port, l.scope))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

struct Pending {
    node: String,
    reply: oneshot::Sender<pb::CommandResult>,
}

pub struct Probing {
    pub matrix: Matrix,
    config: PlannerConfig,
    /// Every connected source's plan, recomputed where the fleet changed.
    planner: Planner,
    /// Set when the fleet changed in a way that may change plans.
    dirty: bool,
    /// Per node with a stream: the plan version and digest last sent.
    sent: HashMap<String, (u64, u64)>,
    /// The fleet's addresses as last sent to every agent in `addressed`.
    fleet: BTreeSet<IpAddr>,
    /// Nodes whose agent has the whole set and every change since.
    addressed: HashSet<String>,
    next_version: u64,
    pending: HashMap<u64, Pending>,
    next_command: u64,
    /// On a shared store: the nodes streaming to other collectors, which
    /// this collector's agents probe and, when it leads, plans for.
    remote: BTreeMap<String, NodeInput>,
    /// Leading: the digest last written to the store per remote source.
    written: HashMap<String, u64>,
    /// Not leading: the leader's plans, by source, and who the leader is.
    leader_plans: HashMap<String, NodePlan>,
    leader: String,
    leading: bool,
    /// While the fleet's members keep changing (a fleet joining at once):
    /// when the churn began and when it last changed (unix nanos).
    churn: Option<(i64, i64)>,
}

/// Agents that hold a plan get a changed one only once the fleet's members
/// have not changed for this long, so a fleet joining at once sends each
/// agent its plan once it settles rather than one for every step of the
/// way; at most two probe intervals after the churn began, for a fleet that
/// never settles. An agent without a plan gets its own at once.
const SETTLE_NANOS: i64 = 2_000_000_000;

/// Whether plans for agents that hold one wait (`SETTLE_NANOS`).
fn settling(churn: Option<(i64, i64)>, now: i64, interval: std::time::Duration) -> bool {
    let longest = i64::try_from(interval.as_nanos().saturating_mul(2)).unwrap_or(i64::MAX);
    churn.is_some_and(|(began, last)| now - last < SETTLE_NANOS && now - began < longest)
}

impl Probing {
    pub fn new(settings: &ProbeSettings, now_nanos: i64) -> Probing {
        Probing {
            matrix: Matrix::new(settings.interval),
            config: planner_config(settings),
            planner: Planner::default(),
            dirty: true,
            sent: HashMap::new(),
            fleet: BTreeSet::new(),
            addressed: HashSet::new(),
            // Versions keep rising across collector restarts.
            next_version: u64::try_from(now_nanos / 1_000_000).unwrap_or(1).max(1),
            pending: HashMap::new(),
            next_command: 1,
            remote: BTreeMap::new(),
            written: HashMap::new(),
            leader_plans: HashMap::new(),
            leader: String::new(),
            leading: false,
            churn: None,
        }
    }

    /// The nodes streaming to other collectors now; re-plans if they changed.
    pub fn set_remote(&mut self, remote: Vec<NodeInput>) {
        let remote: BTreeMap<String, NodeInput> =
            remote.into_iter().map(|n| (n.name.clone(), n)).collect();
        if remote != self.remote {
            self.remote = remote;
            self.dirty = true;
        }
    }

    /// Plans the leader `leader` wrote: all of them when `whole` (the leader
    /// changed, or there is none and `plans` is empty), else those newer
    /// than the last call's.
    pub fn leader_plans(&mut self, leader: String, whole: bool, plans: Vec<(String, NodePlan)>) {
        if whole {
            self.leader_plans.clear();
        }
        if whole || !plans.is_empty() || leader != self.leader {
            self.dirty = true;
        }
        self.leader = leader;
        self.leader_plans.extend(plans);
    }

    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// A node's stream began: it needs its plan (again).
    pub fn attached(&mut self, name: &str) {
        self.sent.remove(name);
        self.addressed.remove(name);
        self.matrix.add_node(name);
        self.dirty = true;
    }

    /// A node's stream ended: its row turns unknown, its commands fail.
    pub fn detached(&mut self, name: &str, now: i64) {
        self.sent.remove(name);
        self.addressed.remove(name);
        self.matrix.source_gone(name, now);
        self.dirty = true;
        let gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node == name)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.pending.remove(&id);
        }
    }

    pub fn results(&mut self, src: &str, windows: Vec<WindowInput>, now: i64) {
        let stats = self.matrix.apply(src, windows, now);
        if stats.ignored > 0 {
            tracing::debug!(node = %src, ignored = stats.ignored, "results outside the plan");
        }
    }

    pub fn state_change(&mut self, src: &str, change: &StateChange, now: i64) {
        self.matrix.apply_change(src, change, now);
    }

    /// Re-plans when something changed and sends each connected agent its
    /// plan when it differs from the one it has. A full stream queue leaves
    /// the plan for the next tick.
    ///
    /// On a shared store the plans cover the whole fleet: the nodes of other
    /// collectors (`set_remote`) are targets and, for the leader, sources
    /// too, whose plans it returns for the store. A collector that does not
    /// lead sends its agents the leader's plans, and its own only to an agent
    /// the leader has not planned (yet).
    ///
    /// Cells expire as of `heard` (`heard_until`): what the agents sent up
    /// to then has been applied.
    pub fn tick(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        now: i64,
        heard: i64,
        leading: Option<&str>,
    ) -> Vec<PlanRow> {
        self.matrix.expire(heard);
        if leading.is_some() != self.leading {
            // Leading again: every remote plan is written afresh.
            self.leading = leading.is_some();
            self.written.clear();
            self.dirty = true;
        }
        if !self.dirty {
            return Vec::new();
        }
        self.dirty = false;
        let mine = |name: &str| nodes.get(name).is_some_and(Node::connected);
        let mut inputs: Vec<NodeInput> = nodes
            .values()
            .filter(|n| n.connected() || !self.remote.contains_key(&n.name))
            .map(node_input)
            .collect();
        inputs.extend(self.remote.values().filter(|r| !mine(&r.name)).cloned());
        inputs.sort_by(|a, b| a.name.cmp(&b.name));
        self.send_addresses(nodes, &inputs);
        let started = std::time::Instant::now();
        let update = self.planner.update(&inputs, &self.config);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if update.whole {
            tracing::info!(
                plans = update.computed,
                changed = update.changed.len(),
                inputs = update.inputs_changed,
                ms,
                "planned the whole fleet"
            );
        } else {
            tracing::debug!(computed = update.computed, changed = update.changed.len(), inputs = update.inputs_changed, sample = ?update.sample, ms, "planned");
        }
        if update.inputs_changed > 0 {
            let began = self.churn.map_or(now, |(b, _)| b);
            self.churn = Some((began, now));
        }
        let settling = settling(self.churn, now, self.config.interval);
        if !settling {
            self.churn = None;
        }
        let mut plans: BTreeMap<String, crate::probe::NodePlan> = update
            .changed
            .into_iter()
            .filter(|(name, _)| mine(name))
            .map(|(name, plan)| (name.to_string(), plan))
            .collect();
        for (name, node) in nodes {
            if node.stream.is_none() {
                continue;
            }
            if leading.is_none()
                && let Some(lp) = self.leader_plans.get(name)
            {
                plans.insert(name.clone(), lp.clone());
                continue;
            }
            // Agents whose stream began since their plan last changed.
            if !plans.contains_key(name)
                && self.sent.get(name).map(|(_, d)| *d) != self.planner.digest(name)
                && let Some(p) = self.planner.plan(name)
            {
                plans.insert(name.clone(), p);
            }
        }
        for (name, p) in &plans {
            let Some(stream) = nodes.get(name).and_then(|n| n.stream.as_ref()) else {
                continue;
            };
            if self.sent.get(name).is_some_and(|(_, d)| *d == p.digest) {
                continue;
            }
            if settling && self.sent.contains_key(name) {
                // Sent once the fleet settles (the digests differ then).
                self.dirty = true;
                continue;
            }
            self.next_version += 1;
            let version = self.next_version;
            let msg = pb::CollectorMessage {
                body: Some(pb::collector_message::Body::Plan(encode::plan(p, version))),
            };
            if stream.outbound.try_send(Ok(msg)).is_ok() {
                tracing::info!(node = %name, version, targets = p.targets.len(), "probe plan sent");
                self.sent.insert(name.clone(), (version, p.digest));
                self.matrix.set_plan_at(name, &p.targets, now);
            } else {
                self.dirty = true;
            }
        }
        let Some(me) = leading else {
            return Vec::new();
        };
        self.remote_plans(me, now, &mine)
    }

    /// The leader's plans for the other collectors' agents that changed
    /// since it last wrote them.
    fn remote_plans(&mut self, me: &str, now: i64, mine: &dyn Fn(&str) -> bool) -> Vec<PlanRow> {
        use prost::Message;
        let mut rows = Vec::new();
        for name in self.remote.keys().filter(|n| !mine(n)) {
            let Some(digest) = self.planner.digest(name) else {
                continue;
            };
            if self.written.get(name) == Some(&digest) {
                continue;
            }
            let Some(p) = self.planner.plan(name) else {
                continue;
            };
            rows.push(PlanRow {
                source: name.clone(),
                collector: me.to_string(),
                digest,
                written_unix_nanos: now,
                plan: encode::plan(&p, 0).encode_to_vec(),
            });
            self.written.insert(name.clone(), digest);
        }
        if !rows.is_empty() {
            tracing::info!(
                plans = rows.len(),
                "wrote plans for other collectors' agents"
            );
        }
        rows
    }

    /// The fleet's addresses to every connected agent, before its plan: the
    /// whole set to one that has not had it, what changed to the others. A
    /// full queue leaves that agent for the next tick, with the whole set.
    fn send_addresses(&mut self, nodes: &BTreeMap<String, Node>, inputs: &[NodeInput]) {
        let fleet: BTreeSet<IpAddr> = inputs
            .iter()
            .flat_map(|n| n.addresses.iter().copied())
            .collect();
        let text = |s: &mut dyn Iterator<Item = &IpAddr>| -> Vec<String> {
            s.map(ToString::to_string).collect()
        };
        let delta = pb::FleetAddresses {
            replace: false,
            added: text(&mut fleet.difference(&self.fleet)),
            removed: text(&mut self.fleet.difference(&fleet)),
        };
        // The whole set only for an agent that needs it (a new stream).
        let mut whole: Option<pb::FleetAddresses> = None;
        let changed = !delta.added.is_empty() || !delta.removed.is_empty();
        for (name, node) in nodes {
            let Some(stream) = node.stream.as_ref() else {
                continue;
            };
            let body = if !self.addressed.contains(name) {
                whole
                    .get_or_insert_with(|| pb::FleetAddresses {
                        replace: true,
                        added: text(&mut fleet.iter()),
                        removed: Vec::new(),
                    })
                    .clone()
            } else if changed {
                delta.clone()
            } else {
                continue;
            };
            let msg = pb::CollectorMessage {
                body: Some(pb::collector_message::Body::FleetAddresses(body)),
            };
            if stream.outbound.try_send(Ok(msg)).is_ok() {
                self.addressed.insert(name.clone());
            } else {
                self.addressed.remove(name);
                self.dirty = true;
            }
        }
        self.fleet = fleet;
    }

    /// Sends `kind` to `node`'s agent; the answer arrives on the receiver.
    pub fn command(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        node: &str,
        kind: pb::command::Kind,
    ) -> Result<oneshot::Receiver<pb::CommandResult>, String> {
        let stream = nodes
            .get(node)
            .and_then(|n| n.stream.as_ref())
            .ok_or_else(|| format!("{node}'s agent is not connected"))?;
        let id = self.next_command;
        self.next_command += 1;
        let msg = pb::CollectorMessage {
            body: Some(pb::collector_message::Body::Command(pb::Command {
                id,
                kind: Some(kind),
            })),
        };
        stream
            .outbound
            .try_send(Ok(msg))
            .map_err(|_| format!("{node}'s stream is busy; try again"))?;
        let (reply, rx) = oneshot::channel();
        self.pending.insert(
            id,
            Pending {
                node: node.to_string(),
                reply,
            },
        );
        Ok(rx)
    }

    /// An agent answered a command.
    pub fn command_result(&mut self, node: &str, result: pb::CommandResult) {
        match self.pending.remove(&result.command_id) {
            Some(p) if p.node == node => {
                let _ = p.reply.send(result);
            }
            Some(p) => {
                tracing::warn!(node = %node, expected = %p.node, "command answered by another node; ignored");
            }
            None => {
                tracing::debug!(node = %node, id = result.command_id, "late or unknown command result")
            }
        }
    }
}

#[cfg(test)]
#[path = "probing_tests.rs"]
mod tests;
