//! The agent's half of `Collector.Connect`: one task that owns the stream,
//! the outbox of unacked events and the sequence numbers, and reconnects
//! whenever the collector goes away — to the next collector address at once,
//! with backoff once every address failed (`collectors::Rotation`).

use crate::collectors::{Rotation, Target};
use crate::config::Config;
use crate::endpoint::StreamStats;
use crate::events::{EventKind, HostEvent};
use crate::hub::{Update, Versioned};
use crate::inspect::host::{Identity, read_host_info};
use crate::outbox::{Limits, Outbox};
use crate::probe::fleet::FleetSet;
use crate::probe::{Plan, ProberOutput, TempListeners};
use crate::wire;
use crate::wire::outbound::{AgentCodec, Outbound, Outgoing};
use reachmap_proto::v1 as pb;
use reachmap_proto::v1::agent_message::Body;
use reachmap_proto::v1::collector_message::Body as CBody;
use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// TCP and TLS to one collector address: a dead one costs this much
/// before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings once the collector has said nothing for this long (at most;
/// the heartbeat interval when shorter), and the wait for their answer: a
/// collector whose host vanished without a reset is noticed within about
/// ten seconds. One killed on a host that is still up closes the
/// connection (FIN or RST) and is noticed at once.
const KEEPALIVE_MAX: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued toward the transport; beyond it the task stops pulling
/// from the outbox until the collector catches up (Block).
const WIRE_QUEUE: usize = 64;
/// How long a clean shutdown waits for the collector to see the stream end.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot connect to {target}: {}", chain(.source))]
    Connect {
        target: String,
        source: tonic::transport::Error,
    },
    #[error("collector: {0}")]
    Status(#[from] tonic::Status),
    #[error("collector closed the stream")]
    Closed,
}

enum Ended {
    Shutdown,
}

/// An error and its sources on one line ("transport error: connection
/// refused"), since a transport error's own text says little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(next) = cur {
        let t = next.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        cur = next.source();
    }
    text
}

/// Sleeps until `at`; forever when `None` (the outbox has nothing to fsync).
async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Answers of commands still running, bounded: commands come one at a
/// time from `reachmap test-port`.
const COMMAND_QUEUE: usize = 16;

/// The probing side of the stream: plans in, results and answers out.
pub struct Probing {
    pub plan: watch::Sender<Option<Arc<Plan>>>,
    pub output: mpsc::Receiver<ProberOutput>,
    pub temp: TempListeners,
}

pub struct Client {
    config: Arc<Config>,
    identity: Identity,
    instance_id: u64,
    seq: u64,
    outbox: Outbox,
    net: watch::Receiver<Arc<Versioned>>,
    updates: mpsc::Receiver<Update>,
    probing: Probing,
    /// The fleet's addresses (`FleetAddresses`) and the plan's targets'.
    members: FleetSet,
    /// `members.allowed()`: the only addresses a command may make this
    /// agent probe.
    fleet: Arc<HashSet<IpAddr>>,
    answers_tx: mpsc::Sender<pb::CommandResult>,
    answers: mpsc::Receiver<pb::CommandResult>,
    /// The node's current certificate (renewed beside the stream); `None`
    /// with `--insecure`.
    tls: watch::Receiver<crate::credentials::Tls>,
    /// The stream's connection, for the renewal to go over it.
    connection: watch::Sender<Option<tonic::transport::Channel>>,
    /// What the health endpoint reports of the stream.
    stats: Arc<StreamStats>,
}

impl Client {
    pub fn new(
        config: Arc<Config>,
        identity: Identity,
        net: watch::Receiver<Arc<Versioned>>,
        updates: mpsc::Receiver<Update>,
        probing: Probing,
        tls: watch::Receiver<crate::credentials::Tls>,
        connection: watch::Sender<Option<tonic::transport::Channel>>,
    ) -> Self {
        let (answers_tx, answers) = mpsc::channel(COMMAND_QUEUE);
        let instance_id = rand::random::<u64>() | 1;
        // Unacked events of earlier runs come back from the state directory
        // with the instance and ids they were made with.
        let outbox = Outbox::open(
            &config.state_dir,
            &config.node,
            instance_id,
            Limits {
                events: config.event_buffer,
                bytes: config.event_buffer_bytes,
            },
        );
        Client {
            stats: Arc::default(),
            tls,
            connection,
            probing,
            members: FleetSet::default(),
            fleet: Arc::default(),
            answers_tx,
            answers,
            outbox,
            config,
            identity,
            instance_id,
            seq: 0,
            net,
            updates,
        }
    }

    /// Reports the stream's state into `stats` (the health endpoint's).
    pub fn with_stats(mut self, stats: Arc<StreamStats>) -> Self {
        self.stats = stats;
        self
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(mut rotation) = Rotation::new(
            self.config.collectors.clone(),
            self.config.reconnect_initial,
            self.config.reconnect_max,
        ) else {
            tracing::error!("no collector to connect to");
            return;
        };
        // The first snapshot waits for the first network reading (a node
        // without interfaces is not worth reporting); meanwhile everything
        // the hub and the prober produce is taken in, so they never wait
        // on a queue this task is not reading.
        let mut net = self.net.clone();
        let first = async move { net.wait_for(|v| v.version > 0).await.is_ok() };
        if self.taking_in(&shutdown, first).await != Some(true) {
            return;
        }
        loop {
            if rotation.round_starts() {
                // Names are looked up again every round, so a collector
                // moved to another address is found.
                let urls = rotation.urls().to_vec();
                let looked_up = crate::collectors::resolve(&urls);
                let Some(targets) = self.taking_in(&shutdown, looked_up).await else {
                    return;
                };
                rotation.set_targets(targets);
            }
            let target = rotation.current().clone();
            match self.session(&shutdown, &target, &mut rotation).await {
                Ok(Ended::Shutdown) => return,
                Err(e) => {
                    tracing::warn!(collector = %target, error = %e, "stream down");
                    self.stats.down(e.to_string());
                }
            }
            // The renewal must not use a connection to a collector that is
            // gone (a channel would dial the same address again).
            self.connection.send_replace(None);
            self.outbox.rewind();
            let delay = rotation.failed(&mut rand::rng());
            tracing::debug!(?delay, next = %rotation.current(), "reconnecting");
            if self
                .taking_in(&shutdown, tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Runs `fut` while taking in what the hub and the prober produce, so
    /// neither waits on a queue this task is not reading: events are kept in
    /// the outbox; result batches and command answers are dropped (the next
    /// batch carries the same windows, and no stream is there to answer
    /// on). `None` when `shutdown` fires first.
    async fn taking_in<T>(
        &mut self,
        shutdown: &CancellationToken,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                v = &mut fut => return Some(v),
                Some(update) = self.updates.recv() => self.absorb_events(&update),
                Some(out) = self.probing.output.recv() => { self.absorb_probe(out); }
                Some(_) = self.answers.recv() => {}
                _ = until(self.outbox.sync_due()) => self.outbox.sync(),
            }
        }
    }

    /// Keeps a state change as an event; returns a batch to send.
    fn absorb_probe(&mut self, out: ProberOutput) -> Option<Body> {
        tracing::trace!(?out, "prober output");
        match out {
            ProberOutput::Batch {
                plan_version,
                by_id,
                windows,
                names,
            } => Some(Body::ProbeResults(wire::probe::results(
                plan_version,
                by_id,
                &windows,
                &names,
            ))),
            ProberOutput::Changed(c) => {
                self.outbox.push(HostEvent {
                    time: SystemTime::now(),
                    kind: EventKind::ProbeState(c),
                });
                None
            }
        }
    }

    fn apply_plan(&mut self, p: &pb::ProbePlan) {
        match wire::probe::plan(p) {
            Ok((plan, unreadable)) => {
                for u in &unreadable {
                    tracing::warn!(target = %u, "probe target refused");
                }
                tracing::info!(
                    version = plan.version,
                    targets = plan.targets.len(),
                    "probe plan received"
                );
                self.members.set_plan(&plan.fleet_addresses);
                self.fleet = Arc::new(self.members.allowed());
                self.probing.plan.send_replace(Some(Arc::new(plan)));
            }
            Err(e) => tracing::warn!(error = %e, "probe plan refused"),
        }
    }

    fn apply_addresses(&mut self, f: &pb::FleetAddresses) {
        let (change, bad) = wire::probe::fleet_addresses(f);
        for b in &bad {
            tracing::warn!(error = %b, "fleet address refused");
        }
        self.members.apply(&change);
        self.fleet = Arc::new(self.members.allowed());
        tracing::debug!(
            replace = change.replace,
            added = change.added.len(),
            removed = change.removed.len(),
            "fleet addresses"
        );
    }

    /// Runs a command off the stream task; its answer comes back on
    /// `answers`.
    fn start_command(&self, cmd: pb::Command) {
        let answers = self.answers_tx.clone();
        let temp = self.probing.temp.clone();
        let fleet = self.fleet.clone();
        tokio::spawn(async move {
            let answer = crate::commands::run(cmd, &temp, &fleet).await;
            let _ = answers.send(answer).await;
        });
    }

    fn absorb_events(&mut self, update: &Update) {
        for e in &update.events {
            self.outbox.push(e.clone());
        }
    }

    fn snapshot(&self) -> (u64, Outbound) {
        let current = self.net.borrow().clone();
        let host = match read_host_info(&self.config.procfs) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "host info unavailable");
                Default::default()
            }
        };
        (
            current.version,
            wire::snapshot(current.version, &host, &current.facts),
        )
    }

    fn heartbeat(&self, echo: i64) -> Body {
        Body::Heartbeat(pb::Heartbeat {
            wall_time_unix_nanos: wire::unix_nanos(SystemTime::now()),
            echo_collector_time_unix_nanos: echo,
            unacked_events: self.outbox.unacked() as u64,
            dropped_events_total: self.outbox.dropped_total(),
        })
    }

    fn report_outbox(&self) {
        self.stats.outbox(
            self.outbox.unacked(),
            self.outbox.unacked_bytes(),
            self.outbox.dropped_total(),
        );
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        target: &Target,
        rotation: &mut Rotation,
    ) -> Result<Ended, StreamError> {
        let endpoint = Endpoint::from(target.url.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(
                self.config
                    .heartbeat_interval
                    .clamp(Duration::from_secs(1), KEEPALIVE_MAX),
            )
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let tls = self.tls.borrow().clone();
        let addr = target.addr;
        let connecting = async move {
            match (tls, addr) {
                (Some(tls), addr) => reachmap_tls::connect_at(endpoint, tls, addr).await,
                (None, Some(addr)) => reachmap_tls::connect_plain_at(endpoint, addr).await,
                (None, None) => endpoint.connect().await,
            }
        };
        tracing::debug!(collector = %target, "connecting");
        let Some(channel) = self.taking_in(shutdown, connecting).await else {
            return Ok(Ended::Shutdown);
        };
        let channel = channel.map_err(|source| StreamError::Connect {
            target: target.to_string(),
            source,
        })?;
        self.connection.send_replace(Some(channel.clone()));
        let mut client = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES);

        let (tx, rx) = mpsc::channel::<Outgoing>(WIRE_QUEUE);
        let hello = Outbound::from(Body::Hello(pb::Hello {
            node: self.config.node.clone(),
            machine_id: self.identity.machine_id.clone(),
            boot_id: self.identity.boot_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance_id: self.instance_id,
            heartbeat_interval_ms: u32::try_from(self.config.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            labels: self.config.labels.clone().into_iter().collect(),
            config_json: self.config.shown_json(&target.url),
        }));
        let (mut sent_version, snapshot) = self.snapshot();
        for body in [hello, snapshot] {
            let seq = self.next_seq();
            // The queue is empty and larger than two: this cannot wait.
            let _ = tx.send(body.numbered(seq)).await;
        }
        let opening = connect(&mut client, ReceiverStream::new(rx));
        let Some(inbound) = self.taking_in(shutdown, opening).await else {
            return Ok(Ended::Shutdown);
        };
        let mut inbound = inbound?.into_inner();
        tracing::info!(
            collector = %crate::collectors::shown_url(&target.url),
            address = %target.addr.map_or_else(|| "-".to_string(), |a| a.to_string()),
            node = %self.config.node,
            "connected"
        );
        self.stats.up_to(&target.to_string());

        let mut pending: VecDeque<Outbound> = VecDeque::new();
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The backoff starts over only once the collector has taken the
        // snapshot (sent last above): one it refuses ends every session at
        // the same point.
        let snapshot_seq = self.seq;
        let mut snapshot_taken = false;
        // The facts changed while the stream opened: the updates taken in
        // meanwhile kept their events, and a new snapshot carries the rest.
        if self.net.borrow().version > sent_version {
            let (v, snap) = self.snapshot();
            sent_version = v;
            pending.push_back(snap);
        }
        loop {
            let want_send = !pending.is_empty() || self.outbox.has_unsent();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = inbound.message() => {
                    let Some(msg) = msg? else { return Err(StreamError::Closed) };
                    match msg.body {
                        Some(CBody::Ack(ack)) => {
                            self.outbox.ack(ack.seq);
                            self.stats.acks_total.fetch_add(1, Ordering::Relaxed);
                            self.report_outbox();
                            if !snapshot_taken && ack.seq >= snapshot_seq {
                                snapshot_taken = true;
                                rotation.connected();
                            }
                        }
                        Some(CBody::TimeProbe(p)) => pending.push_front(self.heartbeat(p.collector_time_unix_nanos).into()),
                        Some(CBody::Resync(r)) => {
                            tracing::info!(reason = %r.reason, "collector asked for a snapshot");
                            let (v, snap) = self.snapshot();
                            sent_version = v;
                            pending.push_back(snap);
                        }
                        Some(CBody::Plan(plan)) => self.apply_plan(&plan),
                        Some(CBody::Command(cmd)) => self.start_command(cmd),
                        Some(CBody::FleetAddresses(f)) => self.apply_addresses(&f),
                        None => tracing::debug!("empty collector message"),
                    }
                }
                Some(update) = self.updates.recv() => {
                    self.absorb_events(&update);
                    if update.version <= sent_version || update.change.is_empty() {
                        // Already part of the snapshot we sent, or only events.
                    } else if update.base_version == sent_version {
                        let net = self.net.borrow().clone();
                        pending.push_back(wire::delta(update.base_version, update.version, &update.change, &net.facts.net));
                        sent_version = update.version;
                    } else {
                        let (v, snap) = self.snapshot();
                        sent_version = v;
                        pending.push_back(snap);
                    }
                }
                Some(out) = self.probing.output.recv() => {
                    if let Some(batch) = self.absorb_probe(out) {
                        // Only the newest batch is worth sending.
                        pending.retain(|b| !matches!(b.body, Body::ProbeResults(_)));
                        pending.push_back(batch.into());
                    }
                }
                Some(answer) = self.answers.recv() => pending.push_front(Body::CommandResult(answer).into()),
                _ = until(self.outbox.sync_due()) => self.outbox.sync(),
                _ = heartbeat.tick() => {
                    self.report_outbox();
                    pending.push_back(self.heartbeat(0).into());
                }
                permit = tx.reserve(), if want_send => {
                    let Ok(permit) = permit else { return Err(StreamError::Closed) };
                    let seq = self.next_seq();
                    let body = match pending.pop_front() {
                        Some(b) => Some(b),
                        None => self.outbox.next_unsent(seq).map(|e| Body::Event(e.event().clone()).into()),
                    };
                    if let Some(body) = body {
                        permit.send(body.numbered(seq));
                        self.stats.messages_sent_total.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        drop(tx);
        // Let the collector see the end of the stream before we exit.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        Ok(Ended::Shutdown)
    }
}

/// `Collector/Connect` as the generated client makes it, with the agent's
/// codec, which writes a whole ruleset chain by chain (`wire::outbound`).
async fn connect(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    messages: ReceiverStream<Outgoing>,
) -> Result<tonic::Response<tonic::codec::Streaming<pb::CollectorMessage>>, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("collector connection not ready: {e}")))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/reachmap.v1.Collector/Connect");
    let mut request = tonic::Request::new(messages);
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new("reachmap.v1.Collector", "Connect"));
    client.streaming(request, path, AgentCodec).await
}
