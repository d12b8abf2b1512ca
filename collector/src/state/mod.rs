//! Fleet state: one task owns every node's facts, events and stream status;
//! stream sessions and queries talk to it through `Fleet`, a handle that
//! sends commands over a bounded channel. When the channel is full, senders
//! wait (Block): an agent stream slows down rather than losing a fact.

mod node;
mod probing;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod test_support;
mod view;

pub use node::{Node, StoredEvent, unix_nanos};
pub use probing::{Probing, probe_addresses, remote_input};
pub use view::View;

use node::{Stream, from_unix_nanos};

use crate::clock::Sample;
use crate::config::ProbeSettings;
use crate::model::{FactsDelta, Hello, NodeFacts};
use crate::probe::{Matrix, ResolvedName, WindowInput};
use crate::store::{FactWrite, NodeRecord, Store, Write};
use reachmap_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const COMMAND_QUEUE: usize = 1024;
const READ_QUEUE: usize = 256;
/// Recent events kept per node.
pub const EVENTS_PER_NODE: usize = 1000;
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Resources samples are stored at most this often per node.
const RESOURCES_EVERY: Duration = Duration::from_secs(60);

pub type SessionId = u64;
pub type Outbound = mpsc::Sender<Result<pb::CollectorMessage, tonic::Status>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("node name {node:?} is already connected from machine {machine_id}")]
    NameTaken { node: String, machine_id: String },
    #[error("collector is shutting down")]
    ShuttingDown,
}

/// A read-only look at every node, run inside the owner task.
type Reader = Box<dyn FnOnce(&BTreeMap<String, Node>) + Send>;
/// The same, with the matrix and the fleet's generation.
type MatrixReader = Box<dyn FnOnce(&Matrix, &BTreeMap<String, Node>, u64) + Send>;
type CommandReply = oneshot::Sender<Result<oneshot::Receiver<pb::CommandResult>, String>>;

enum Cmd {
    Attach {
        hello: Hello,
        session: SessionId,
        cancel: CancellationToken,
        outbound: Outbound,
        reply: oneshot::Sender<Result<(), AttachError>>,
    },
    Snapshot(SessionId, String, NodeFacts),
    Delta(SessionId, String, FactsDelta),
    Event(SessionId, String, pb::Event),
    Heartbeat(SessionId, String, u64),
    Clock(SessionId, String, Sample),
    Seen(SessionId, String),
    Detach(SessionId, String, String),
    Read(Reader),
    ReadMatrix(MatrixReader),
    /// A batch and when its session read it off the stream (unix nanos).
    ProbeResults {
        session: SessionId,
        node: String,
        windows: Vec<WindowInput>,
        names: Vec<ResolvedName>,
        received: i64,
    },
    CommandResult(SessionId, String, pb::CommandResult),
    Command {
        node: String,
        kind: pb::command::Kind,
        reply: CommandReply,
    },
    /// On a shared store: the nodes streaming to other collectors.
    Remote(Vec<crate::probe::NodeInput>),
    /// On a shared store: plans the leader wrote (`Probing::leader_plans`).
    LeaderPlans {
        leader: String,
        whole: bool,
        plans: Vec<(String, crate::probe::NodePlan)>,
    },
}

/// A handle to the state task; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    tx: mpsc::Sender<Cmd>,
    /// Queries: the owner takes these before any command waiting on `tx`,
    /// so a question never queues behind ingest.
    reads: mpsc::Sender<Cmd>,
    store: Store,
    /// The latest findings and the fleet generation they were made from.
    findings: Arc<view::Slot<crate::findings::Report>>,
    /// The owner's generation, read without asking it.
    generation: Arc<AtomicU64>,
    /// Who the declared services say should hold their ports.
    owners: Arc<Vec<crate::why::Declared>>,
    /// The latest traces, for `why`.
    traces: crate::trace::Traces,
    /// On a shared store: the nodes other collectors wrote (`sharing.rs`);
    /// live queries read the rows of those streaming there from the store.
    remote: Arc<std::sync::RwLock<Arc<Vec<crate::probe::NodeInput>>>>,
}

impl Fleet {
    /// Starts the owner task, seeded from the store. It stops when every
    /// handle is gone or `shutdown` fires, saving the registry last.
    pub fn start(
        store: Store,
        registry: Vec<NodeRecord>,
        probe: &ProbeSettings,
        shutdown: CancellationToken,
    ) -> (Fleet, tokio::task::JoinHandle<()>) {
        let mut nodes = BTreeMap::new();
        for rec in registry {
            if reachmap_proto::check_node_name(&rec.name).is_err() {
                tracing::warn!(name = %rec.name, "ignoring stored node with an invalid name");
                continue;
            }
            let mut n = Node::new(&rec.name, from_unix_nanos(rec.last_seen_unix_nanos));
            n.machine_id = rec.machine_id;
            n.boot_id = rec.boot_id;
            n.version = rec.version;
            n.labels = rec.labels;
            n.remembered_addresses = rec.addresses;
            nodes.insert(rec.name, n);
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (reads, reads_rx) = mpsc::channel(READ_QUEUE);
        let mut probing = Probing::new(probe, unix_nanos(SystemTime::now()));
        probing.matrix.keep_changes();
        for name in nodes.keys() {
            probing.matrix.add_node(name);
        }
        let owner = Owner {
            nodes,
            store: store.clone(),
            dirty: BTreeSet::new(),
            probing,
            generation: Arc::default(),
            caught_up: 0,
        };
        let generation = owner.generation.clone();
        let task = tokio::spawn(owner.run(rx, reads_rx, shutdown));
        let fleet = Fleet {
            tx,
            reads,
            store,
            findings: Arc::default(),
            generation,
            owners: Arc::new(crate::why::Declared::from_config(&probe.services)),
            traces: crate::trace::Traces::default(),
            remote: Arc::default(),
        };
        (fleet, task)
    }

    /// The latest traces, kept for `why`.
    pub fn traces(&self) -> &crate::trace::Traces {
        &self.traces
    }

    /// Who the declared services say should hold their ports.
    pub fn owners(&self) -> Arc<Vec<crate::why::Declared>> {
        self.owners.clone()
    }

    /// The store, for the history the state task does not hold.
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn send(&self, cmd: Cmd) {
        // Fails only when the owner has stopped, i.e. during shutdown.
        let _ = self.tx.send(cmd).await;
    }

    async fn send_read(&self, cmd: Cmd) {
        let _ = self.reads.send(cmd).await;
    }

    pub async fn attach(
        &self,
        hello: Hello,
        session: SessionId,
        cancel: CancellationToken,
        outbound: Outbound,
    ) -> Result<(), AttachError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Attach {
            hello,
            session,
            cancel,
            outbound,
            reply,
        })
        .await;
        rx.await.unwrap_or(Err(AttachError::ShuttingDown))
    }

    pub async fn snapshot(&self, s: SessionId, node: &str, facts: NodeFacts) {
        self.send(Cmd::Snapshot(s, node.into(), facts)).await;
    }

    pub async fn delta(&self, s: SessionId, node: &str, d: FactsDelta) {
        self.send(Cmd::Delta(s, node.into(), d)).await;
    }

    /// An event the store has committed (or could not: it is still live).
    pub async fn event(&self, s: SessionId, node: &str, e: pb::Event) {
        self.send(Cmd::Event(s, node.into(), e)).await;
    }

    pub async fn heartbeat(&self, s: SessionId, node: &str, dropped_total: u64) {
        self.send(Cmd::Heartbeat(s, node.into(), dropped_total))
            .await;
    }

    pub async fn clock(&self, s: SessionId, node: &str, sample: Sample) {
        self.send(Cmd::Clock(s, node.into(), sample)).await;
    }

    pub async fn seen(&self, s: SessionId, node: &str) {
        self.send(Cmd::Seen(s, node.into())).await;
    }

    /// The nodes other collectors wrote on the shared store, as their
    /// records say (`sharing.rs`): probed by this collector's agents too.
    pub async fn remote(&self, nodes: Vec<crate::probe::NodeInput>) {
        if let Ok(mut r) = self.remote.write() {
            *r = Arc::new(nodes.clone());
        }
        self.send(Cmd::Remote(nodes)).await;
    }

    /// The nodes other collectors wrote last, connected while their agent
    /// streams to a live one.
    pub fn remote_nodes(&self) -> Arc<Vec<crate::probe::NodeInput>> {
        self.remote.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Plans the shared store's leader wrote for this collector's agents.
    pub async fn leader_plans(
        &self,
        leader: String,
        whole: bool,
        plans: Vec<(String, crate::probe::NodePlan)>,
    ) {
        self.send(Cmd::LeaderPlans {
            leader,
            whole,
            plans,
        })
        .await;
    }

    pub async fn detach(&self, s: SessionId, node: &str, reason: String) {
        self.send(Cmd::Detach(s, node.into(), reason)).await;
    }

    pub async fn probe_results(
        &self,
        s: SessionId,
        node: &str,
        windows: Vec<WindowInput>,
        names: Vec<ResolvedName>,
        received: i64,
    ) {
        self.send(Cmd::ProbeResults {
            session: s,
            node: node.into(),
            windows,
            names,
            received,
        })
        .await;
    }

    pub async fn command_result(&self, s: SessionId, node: &str, r: pb::CommandResult) {
        self.send(Cmd::CommandResult(s, node.into(), r)).await;
    }

    /// Sends a command to `node`'s agent and waits up to `timeout` for its
    /// answer.
    pub async fn command(
        &self,
        node: &str,
        kind: pb::command::Kind,
        timeout: Duration,
    ) -> Result<pb::CommandResult, String> {
        let (reply, rx) = oneshot::channel();
        self.send_read(Cmd::Command {
            node: node.into(),
            kind,
            reply,
        })
        .await;
        let answer = rx
            .await
            .map_err(|_| "collector is shutting down".to_string())??;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(format!("{node}'s agent went away before answering")),
            Err(_) => Err(format!(
                "{node}'s agent did not answer within {}",
                humantime::format_duration(timeout)
            )),
        }
    }

    /// Runs `f` on the matrix and the nodes inside the owner task.
    pub async fn read_matrix<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Matrix, &BTreeMap<String, Node>) -> T + Send + 'static,
    ) -> Option<T> {
        self.read_matrix_generation(move |m, nodes, _| f(m, nodes))
            .await
    }

    /// The same, told the fleet's generation too.
    async fn read_matrix_generation<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Matrix, &BTreeMap<String, Node>, u64) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.send_read(Cmd::ReadMatrix(Box::new(move |m, nodes, generation| {
            let _ = reply.send(f(m, nodes, generation));
        })))
        .await;
        rx.await.ok()
    }

    /// Runs `f` on the state inside the owner task and returns its result.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BTreeMap<String, Node>) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.send_read(Cmd::Read(Box::new(move |nodes| {
            let _ = reply.send(f(nodes));
        })))
        .await;
        rx.await.ok()
    }
}

struct Owner {
    nodes: BTreeMap<String, Node>,
    store: Store,
    /// Nodes whose registry record changed since the last flush.
    dirty: BTreeSet<String>,
    probing: Probing,
    /// Counts the changes an answer over the whole fleet could see: a cell's
    /// state, a node's facts, events, names or stream. A copy of the same
    /// generation would give the same findings.
    generation: Arc<AtomicU64>,
    /// When the last batch applied was read off its stream (unix nanos):
    /// while batches wait in the queue, the matrix is current up to here,
    /// not up to now.
    caught_up: i64,
}

/// How often plans are recomputed (when the fleet changed) and stale cells
/// expired.
const PLAN_EVERY: Duration = Duration::from_millis(500);
/// Owed cells (`store_cell_changes`) queued for the store per turn of the
/// state task's loop at most, and how often a turn comes without commands:
/// up to 80,000 a second, above what the writer commits.
const OWED_PER_TURN: usize = 8192;
const OWED_EVERY: Duration = Duration::from_millis(100);

/// Up to when the collector has heard what its agents sent (unix nanos):
/// a cell turns unknown when it had no report for three intervals before
/// this, not before now. With batches waiting in the queue that is when the
/// last one applied was received, so a collector that falls behind (a
/// saturated host, a long query) does not blame its agents for its own
/// delay and flood the history with cells that went unknown and back. A
/// lag of more than `cap` (the staleness limit itself) counts: cells then
/// turn unknown, and the collector's ingest lag says why.
fn heard_until(now: i64, caught_up: i64, idle: bool, cap: i64) -> i64 {
    if idle {
        now
    } else {
        caught_up.clamp(now.saturating_sub(cap), now)
    }
}

impl Owner {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut reads: mpsc::Receiver<Cmd>,
        shutdown: CancellationToken,
    ) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut plan = tokio::time::interval(PLAN_EVERY);
        plan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(OWED_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // In this order: under full ingest `rx` is never empty, and a
            // query or a due tick would otherwise wait behind it.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(read) = reads.recv() => self.handle(read, SystemTime::now()),
                _ = flush.tick() => self.flush(),
                _ = plan.tick() => self.plan(rx.is_empty()),
                // Owed cells go on toward the store without commands.
                _ = drain.tick(), if self.probing.matrix.owed() > 0 => {}
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd, SystemTime::now()),
                    None => break,
                },
            }
            self.store_cell_changes();
        }
        for node in self.nodes.values_mut() {
            if let Some(s) = node.stream.take() {
                s.cancel.cancel();
                self.dirty.insert(node.name.clone());
            }
        }
        self.flush();
        // Cells owed past the queue go too, waiting for room as they must.
        let m = &mut self.probing.matrix;
        while m.owed() > 0 {
            let owed = m.take_owed(OWED_PER_TURN);
            if !owed.is_empty() {
                self.store.queue_waiting(Write::Cells(owed)).await;
            }
        }
        self.store.set_owed(0);
        self.store.flush().await;
    }

    /// The records of the nodes that changed here go to the store: only
    /// those, so a shared store's records of other collectors' nodes are
    /// never overwritten with this collector's older copies.
    fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let records: Vec<NodeRecord> = std::mem::take(&mut self.dirty)
            .iter()
            .filter_map(|name| self.nodes.get(name).map(Node::to_record))
            .map(|mut r| {
                r.collector = self.store.member_name().to_string();
                r
            })
            .collect();
        self.store.queue(Write::Nodes(records));
    }

    /// Re-plans where needed; the leader's plans for other collectors'
    /// agents go to the store. `idle`: no command waits in the queue.
    fn plan(&mut self, idle: bool) {
        let me = self.store.member_name().to_string();
        let leading = self.store.is_leader().then_some(me.as_str());
        let now = unix_nanos(SystemTime::now());
        let heard = heard_until(now, self.caught_up, idle, self.probing.matrix.stale_after());
        let rows = self.probing.tick(&self.nodes, now, heard, leading);
        if !rows.is_empty() {
            self.store.queue(Write::Plans(rows));
        }
    }

    /// Something an answer over the whole fleet could see has changed.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The matrix's changes go to the store's queue. When it has no room
    /// (a fleet joining at once, a store that cannot commit), they stay in
    /// the matrix as owed cells, written one change each as room returns.
    fn store_cell_changes(&mut self) {
        let mut changes = self.probing.matrix.take_changes();
        if !changes.is_empty() {
            self.changed();
        }
        let m = &mut self.probing.matrix;
        if m.owed() > 0 {
            let (owed, fresh): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| m.owes(c));
            m.owe(owed);
            changes = fresh;
            let room = self.store.cell_room().saturating_sub(changes.len());
            changes.extend(m.take_owed(room.min(OWED_PER_TURN)));
        }
        if let Err(back) = self.store.queue_cells(changes) {
            self.probing.matrix.owe(back);
        }
        self.store.set_owed(self.probing.matrix.owed());
    }

    fn store_facts(&self, parts: Vec<FactWrite>) {
        for p in parts {
            self.store.queue(Write::Fact(p));
        }
    }

    fn store_event(&self, node: &str, event: pb::Event) {
        self.store.queue(Write::Event(crate::store::EventWrite {
            node: node.to_string(),
            instance: 0,
            event,
            done: None,
        }));
    }

    /// The node, if `session` is its current stream.
    fn current(&mut self, session: SessionId, node: &str) -> Option<&mut Node> {
        self.nodes
            .get_mut(node)
            .filter(|n| n.stream.as_ref().is_some_and(|s| s.session == session))
    }

    fn handle(&mut self, cmd: Cmd, now: SystemTime) {
        if matches!(
            cmd,
            Cmd::Attach { .. }
                | Cmd::Snapshot(..)
                | Cmd::Delta(..)
                | Cmd::Event(..)
                | Cmd::Detach(..)
        ) {
            self.changed();
        }
        match cmd {
            Cmd::Attach {
                hello,
                session,
                cancel,
                outbound,
                reply,
            } => {
                let _ = reply.send(self.attach(hello, session, cancel, outbound, now));
            }
            Cmd::Snapshot(s, name, facts) => {
                if let Some(n) = self.current(s, &name) {
                    n.facts = Some(Arc::new(facts));
                    n.last_seen = now;
                    let parts = n.changed_parts(&crate::store::facts::ALL, now);
                    self.store_facts(parts);
                    self.dirty.insert(name.clone());
                    self.probing.mark_dirty();
                }
            }
            Cmd::Delta(s, name, delta) => {
                if let Some(n) = self.current(s, &name) {
                    n.last_seen = now;
                    let fits = match &n.facts {
                        Some(f) => f.check(&delta),
                        None => Err(format!(
                            "delta from version {} but the collector has no facts",
                            delta.base_version
                        )),
                    };
                    match (&mut n.facts, fits) {
                        (Some(f), Ok(())) => {
                            // New addresses or listeners may change plans.
                            let replan = !delta.upserted.is_empty()
                                || !delta.removed.is_empty()
                                || !delta.listeners_upserted.is_empty()
                                || !delta.listeners_removed.is_empty();
                            let touched = crate::store::facts::touched(&delta);
                            Arc::make_mut(f).apply(delta);
                            let parts = n.changed_parts(&touched, now);
                            self.store_facts(parts);
                            self.dirty.insert(name.clone());
                            if replan {
                                self.probing.mark_dirty();
                            }
                        }
                        (None, Ok(())) => {}
                        (_, Err(reason)) => {
                            tracing::info!(node = %name, %reason, "asking for a snapshot");
                            if let Some(stream) = &n.stream {
                                let msg = pb::CollectorMessage {
                                    body: Some(pb::collector_message::Body::Resync(
                                        pb::ResyncRequest { reason },
                                    )),
                                };
                                if stream.outbound.try_send(Ok(msg)).is_err() {
                                    tracing::warn!(node = %name, "stream queue full; resync request dropped, will retry on the next delta");
                                }
                            }
                        }
                    }
                }
            }
            // Stored (and deduplicated) by the session before it comes here.
            Cmd::Event(s, name, event) => {
                if let Some(n) = self.current(s, &name) {
                    n.last_seen = now;
                    if let Some(pb::event::Kind::ProbeStateChanged(c)) = &event.kind
                        && let Ok(change) = crate::validate::probe::state_change(c)
                    {
                        self.probing.state_change(&name, &change, unix_nanos(now));
                    }
                    let Some(n) = self.nodes.get_mut(&name) else {
                        return;
                    };
                    n.push_event(StoredEvent {
                        received: now,
                        event,
                    });
                }
            }
            Cmd::Heartbeat(s, name, dropped) => {
                if let Some(n) = self.current(s, &name) {
                    n.last_seen = now;
                    n.dropped_events_total = dropped;
                }
            }
            Cmd::Clock(s, name, sample) => {
                if let Some(n) = self.current(s, &name) {
                    n.clock = Some(sample);
                }
            }
            Cmd::Remote(nodes) => self.probing.set_remote(nodes),
            Cmd::LeaderPlans {
                leader,
                whole,
                plans,
            } => self.probing.leader_plans(leader, whole, plans),
            Cmd::Seen(s, name) => {
                if let Some(n) = self.current(s, &name) {
                    n.last_seen = now;
                }
            }
            Cmd::Detach(s, name, reason) => {
                if let Some(n) = self.current(s, &name) {
                    n.stream = None;
                    n.since = now;
                    n.clock = None;
                    tracing::info!(node = %name, %reason, "disconnected");
                    self.probing.detached(&name, unix_nanos(now));
                    let Some(n) = self.nodes.get_mut(&name) else {
                        return;
                    };
                    let e = n.record(
                        now,
                        pb::event::Kind::StreamChanged(pb::StreamChanged {
                            connected: false,
                            reason,
                            agent_version: n.version.clone(),
                        }),
                    );
                    self.store_event(&name, e);
                    self.dirty.insert(name.clone());
                }
            }
            Cmd::Read(f) => f(&self.nodes),
            Cmd::ReadMatrix(f) => f(
                &self.probing.matrix,
                &self.nodes,
                self.generation.load(Ordering::Relaxed),
            ),
            Cmd::ProbeResults {
                session: s,
                node: name,
                windows,
                names,
                received,
            } => {
                self.caught_up = self.caught_up.max(received);
                if let Some(n) = self.current(s, &name) {
                    n.last_seen = now;
                    n.names = names;
                    let data = crate::store::facts::encode_names(&n.names);
                    let write = n.if_changed(
                        crate::store::facts::NAMES,
                        crate::store::facts::Encoded::bytes(data),
                        now,
                    );
                    if write.is_some() {
                        self.changed();
                    }
                    self.store_facts(write.into_iter().collect());
                    self.probing.results(&name, windows, received);
                }
            }
            Cmd::CommandResult(s, name, result) => {
                if self.current(s, &name).is_some() {
                    self.probing.command_result(&name, result);
                }
            }
            Cmd::Command { node, kind, reply } => {
                let _ = reply.send(self.probing.command(&self.nodes, &node, kind));
            }
        }
    }

    fn attach(
        &mut self,
        mut hello: Hello,
        session: SessionId,
        cancel: CancellationToken,
        outbound: Outbound,
        now: SystemTime,
    ) -> Result<(), AttachError> {
        let node = self
            .nodes
            .entry(hello.node.clone())
            .or_insert_with(|| Node::new(&hello.node, now));
        if let Some(old) = &node.stream {
            let other = &node.machine_id;
            if !other.is_empty() && !hello.machine_id.is_empty() && *other != hello.machine_id {
                return Err(AttachError::NameTaken {
                    node: hello.node.clone(),
                    machine_id: other.clone(),
                });
            }
            // The same machine reconnected before its old stream was noticed
            // dead (a half-open TCP connection): the newer stream wins.
            tracing::info!(node = %hello.node, "replacing an older stream from the same node");
            old.cancel.cancel();
        }
        let mut made = Vec::new();
        if !node.boot_id.is_empty() && node.boot_id != hello.boot_id {
            made.push(node.record(
                now,
                pb::event::Kind::NodeRebooted(pb::NodeRebooted {
                    old_boot_id: node.boot_id.clone(),
                    new_boot_id: hello.boot_id.clone(),
                }),
            ));
        }
        node.machine_id = hello.machine_id.clone();
        node.boot_id = hello.boot_id.clone();
        node.version = hello.version.clone();
        node.labels = hello.labels.clone();
        node.agent_config = hello.config_json.take();
        node.stream = Some(Stream {
            session,
            cancel,
            outbound,
        });
        node.since = now;
        node.last_seen = now;
        node.clock = None;
        made.push(node.record(
            now,
            pb::event::Kind::StreamChanged(pb::StreamChanged {
                connected: true,
                reason: String::new(),
                agent_version: hello.version.clone(),
            }),
        ));
        node.hello = Some(hello);
        let name = node.name.clone();
        self.dirty.insert(name.clone());
        self.probing.attached(&name);
        for e in made {
            self.store_event(&name, e);
        }
        tracing::info!(node = %name, "connected");
        Ok(())
    }
}

#[cfg(test)]
mod heard_tests {
    use super::heard_until;

    #[test]
    fn an_idle_queue_has_heard_everything_until_now() {
        assert_eq!(heard_until(100, 10, true, 30), 100);
    }

    #[test]
    fn a_busy_queue_has_heard_until_its_last_batch_within_the_limit() {
        assert_eq!(heard_until(100, 90, false, 30), 90);
        assert_eq!(
            heard_until(100, 10, false, 30),
            70,
            "lag beyond the limit counts"
        );
        assert_eq!(heard_until(100, 120, false, 30), 100, "never past now");
    }
}
