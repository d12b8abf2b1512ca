//! The collector's half of `Collector.Connect`: one session task per agent
//! stream. It checks every message (`validate`), forwards it to the fleet
//! state, acks what was stored, measures the agent's clock, and ends the
//! stream with a clear status on bad input — touching nothing but its own
//! node's state.

use crate::clock::ClockEstimator;
use crate::state::{Fleet, SessionId, unix_nanos};
use crate::trust::{Caller, Peer, Trust};
use crate::validate::{self, ProtocolError};
use reachmap_proto::v1 as pb;
use reachmap_proto::v1::agent_message::Body;
use reachmap_proto::v1::collector_message::Body as CBody;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// A new stream must say Hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time probes after the burst. Clocks drift by parts per million, so this
/// keeps a fresh estimate (the best of the last eight samples: two minutes)
/// at a small cost: each probe is a message each way and, at 10,000 agents,
/// probing every 5 s made 4,000 of the collector's messages a second.
const TIME_PROBE_EVERY: Duration = Duration::from_secs(15);
/// A quick burst of time probes when a stream starts, so a good
/// (short round trip) sample is found within a second, not after minutes.
const TIME_PROBE_BURST: u32 = 5;
const TIME_PROBE_BURST_EVERY: Duration = Duration::from_millis(200);
/// Messages queued toward one agent; the session waits when it is full.
const OUTBOUND_QUEUE: usize = 64;

pub struct Ingest {
    fleet: Fleet,
    trust: Arc<Trust>,
    next_session: AtomicU64,
    shutdown: CancellationToken,
}

impl Ingest {
    pub fn new(fleet: Fleet, trust: Arc<Trust>, shutdown: CancellationToken) -> Self {
        Ingest {
            fleet,
            trust,
            next_session: AtomicU64::new(1),
            shutdown,
        }
    }

    /// The node a request's certificate names (`None` with `--insecure`).
    fn node_of<T>(
        &self,
        request: &Request<T>,
        what: &str,
    ) -> Result<Option<(String, String)>, Status> {
        match self
            .trust
            .caller(request.extensions().get::<Peer>(), None)?
        {
            Caller::Lab => Ok(None),
            Caller::Node { name, serial } => Ok(Some((name, serial))),
            Caller::Client { name, .. } => Err(Status::permission_denied(format!(
                "{name} is a query client; only a node's certificate may {what}"
            ))),
        }
    }
}

fn peer_addr<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Peer>()
        .map(|p| p.addr.to_string())
        .or_else(|| request.remote_addr().map(|a| a.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn issued(trust: &Trust, i: crate::trust::Issued) -> Result<Response<pb::EnrollResponse>, Status> {
    Ok(Response::new(pb::EnrollResponse {
        cert_der: i.der,
        ca_der: trust.authority.ca_der.clone(),
        not_after_unix: i.not_after_unix,
    }))
}

type OutStream = Pin<Box<dyn futures::Stream<Item = Result<pb::CollectorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::collector_server::Collector for Ingest {
    type ConnectStream = OutStream;

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let peer = peer_addr(&request);
        if self.trust.insecure {
            return Err(Status::failed_precondition(
                "this collector runs with --insecure: there is nothing to enrol in",
            ));
        }
        let r = request.into_inner();
        match self.trust.enrol(&r.token, &r.node, &r.csr_der) {
            Ok(i) => {
                tracing::info!(node = %r.node, %peer, serial = %i.serial, "enrolled");
                issued(&self.trust, i)
            }
            Err(e) => {
                tracing::warn!(node = %r.node, %peer, reason = %e, "refused an enrolment");
                Err(Status::permission_denied(format!("enrolment refused: {e}")))
            }
        }
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let Some((node, _)) = self.node_of(&request, "renew")? else {
            return Err(Status::failed_precondition(
                "this collector runs with --insecure: there is nothing to renew",
            ));
        };
        match self.trust.renew(&node, &request.into_inner().csr_der) {
            Ok(i) => {
                tracing::info!(%node, serial = %i.serial, "renewed");
                issued(&self.trust, i)
            }
            Err(e) => {
                tracing::warn!(%node, reason = %e, "refused a renewal");
                Err(Status::invalid_argument(format!("renewal refused: {e}")))
            }
        }
    }

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = peer_addr(&request);
        let cert = self.node_of(&request, "speak the agent stream")?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let session = Session {
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            fleet: self.fleet.clone(),
            out: tx,
            cancel: self.shutdown.child_token(),
            cert,
            trust: self.trust.clone(),
        };
        let span =
            tracing::info_span!("session", id = session.id, %peer, node = tracing::field::Empty);
        tokio::spawn(session.run(inbound).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A message waiting for the store before it may be acked: an event (with
/// its commit) or, behind one, a message that needs no commit.
type Pending =
    Pin<Box<dyn Future<Output = (u64, Option<(pb::Event, crate::store::Committed)>)> + Send>>;

struct Session {
    id: SessionId,
    fleet: Fleet,
    out: mpsc::Sender<Result<pb::CollectorMessage, Status>>,
    /// Fired when a newer stream of the same node replaces this one, or at shutdown.
    cancel: CancellationToken,
    /// The node and serial of the certificate (none with `--insecure`).
    cert: Option<(String, String)>,
    trust: Arc<Trust>,
}

enum End {
    /// The stream ended for a reason worth recording; tell the agent `status`.
    Failed {
        reason: String,
        status: Option<Status>,
    },
}

fn protocol(seq: u64, e: &ProtocolError) -> End {
    End::Failed {
        reason: format!("protocol error in message {seq}: {e}"),
        status: Some(Status::invalid_argument(format!("message {seq}: {e}"))),
    }
}

impl Session {
    async fn send(&self, body: CBody) -> bool {
        self.out
            .send(Ok(pb::CollectorMessage { body: Some(body) }))
            .await
            .is_ok()
    }

    async fn run(self, mut inbound: Streaming<pb::AgentMessage>) {
        // Hello first.
        let first = tokio::select! {
            m = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => m,
            _ = self.cancel.cancelled() => return,
        };
        let (seq, mut hello) = match first {
            Ok(Ok(Some(pb::AgentMessage {
                seq,
                body: Some(Body::Hello(h)),
            }))) => (seq, h),
            Ok(Ok(Some(m))) => {
                let what = m.body.as_ref().map_or("an empty message", body_name);
                return self
                    .reject(Status::failed_precondition(format!(
                        "the first message must be hello, got {what}"
                    )))
                    .await;
            }
            Ok(Ok(None)) => return,
            Ok(Err(status)) => {
                tracing::warn!(%status, "stream failed before hello");
                return self
                    .reject(Status::invalid_argument(format!(
                        "unreadable message: {}",
                        status.message()
                    )))
                    .await;
            }
            Err(_) => {
                return self
                    .reject(Status::deadline_exceeded("no hello within 10s"))
                    .await;
            }
        };
        let raw_config = std::mem::take(&mut hello.config_json);
        let mut hello = match validate::hello(&hello) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "rejected hello");
                return self
                    .reject(Status::invalid_argument(format!("message {seq}: {e}")))
                    .await;
            }
        };
        // Only `reachmap diag` reads it: a bad one is left out, the stream
        // goes on.
        match validate::agent_config(&raw_config) {
            Ok(config) => hello.config_json = config,
            Err(e) => {
                tracing::warn!(node = %hello.node, error = %e, "left out the agent's configuration");
            }
        }
        if let Some((name, _)) = &self.cert
            && *name != hello.node
        {
            tracing::warn!(certificate = %name, hello = %hello.node, "refused a hello naming another node");
            return self
                .reject(Status::permission_denied(format!(
                    "this certificate is node {name}'s; the hello names {}",
                    hello.node
                )))
                .await;
        }
        let node = hello.node.clone();
        let instance = hello.instance_id;
        let idle_limit = Duration::from_millis(u64::from(hello.heartbeat_interval_ms)) * 3
            + Duration::from_secs(5);
        if let Err(e) = self
            .fleet
            .attach(hello, self.id, self.cancel.clone(), self.out.clone())
            .await
        {
            tracing::warn!(%node, error = %e, "rejected stream");
            return self.reject(Status::already_exists(e.to_string())).await;
        }
        tracing::Span::current().record("node", node.as_str());
        self.send(CBody::Ack(pb::Ack { seq })).await;

        let end = self
            .serve(&node, instance, seq, idle_limit, &mut inbound)
            .await;
        let End::Failed { reason, status } = end;
        if let Some(status) = status {
            tracing::warn!(%node, %reason, "ending stream");
            let _ = self.out.send(Err(status)).await;
        }
        self.fleet.detach(self.id, &node, reason).await;
    }

    async fn reject(&self, status: Status) {
        let _ = self.out.send(Err(status)).await;
    }

    async fn serve(
        &self,
        node: &str,
        instance: u64,
        mut last_seq: u64,
        idle_limit: Duration,
        inbound: &mut Streaming<pb::AgentMessage>,
    ) -> End {
        let mut clock = ClockEstimator::default();
        let mut reported = None;
        let mut revocations = self.trust.revocations();
        // Acks are cumulative and an event is acked only once committed, so
        // acks wait in arrival order behind the commits before them.
        let mut pending: futures::stream::FuturesOrdered<Pending> = Default::default();
        let store = self.fleet.store().clone();
        let mut store_status = store.status_watch();
        // A commit failed: nothing more is acked on this stream (the agent
        // keeps what is unacked); once the store takes writes again the
        // stream is ended, so the agent sends it all again.
        let mut store_failed = false;
        let mut probe = tokio::time::interval(TIME_PROBE_BURST_EVERY);
        let mut probes_sent = 0u32;
        loop {
            let msg = tokio::select! {
                _ = self.cancel.cancelled() => return End::Failed {
                    reason: "replaced by a newer stream or collector shutdown".into(),
                    status: Some(Status::aborted("stream replaced or collector shutting down")),
                },
                Ok(()) = revocations.changed() => {
                    if let Some((_, serial)) = &self.cert
                        && self.trust.is_denied(serial)
                    {
                        return End::Failed {
                            reason: "its certificate was revoked".into(),
                            status: Some(Status::permission_denied("this node's certificate was revoked")),
                        };
                    }
                    continue;
                }
                Some(first) = futures::StreamExt::next(&mut pending), if !pending.is_empty() => {
                    // Everything else already committed goes with it: acks
                    // are cumulative, so one ack answers the lot.
                    let mut done = Some(first);
                    let mut ack = 0;
                    while let Some((seq, event)) = done.take() {
                        match event {
                            Some((e, Ok(true))) => self.fleet.event(self.id, node, e).await,
                            Some((_, Ok(false))) => {} // a resend of one stored before
                            Some((_, Err(error))) => {
                                if !store_failed {
                                    tracing::warn!(%node, %error, "an event was not stored; acks stop until the store takes writes");
                                }
                                store_failed = true;
                            }
                            None => {}
                        }
                        ack = seq;
                        done = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut pending)).flatten();
                    }
                    if !store_failed && !self.send(CBody::Ack(pb::Ack { seq: ack })).await {
                        return End::Failed { reason: "stream closed".into(), status: None };
                    }
                    continue;
                }
                Ok(()) = store_status.changed(), if store_failed => {
                    if store_status.borrow_and_update().writable {
                        return End::Failed {
                            reason: "the store takes writes again; the agent resends what was not acked".into(),
                            status: Some(Status::unavailable("the collector's store failed and recovered: reconnect and resend unacked events")),
                        };
                    }
                    continue;
                }
                _ = probe.tick() => {
                    let t0 = unix_nanos(SystemTime::now());
                    if !self.send(CBody::TimeProbe(pb::TimeProbe { collector_time_unix_nanos: t0 })).await {
                        return End::Failed { reason: "stream closed".into(), status: None };
                    }
                    probes_sent += 1;
                    if probes_sent == TIME_PROBE_BURST {
                        probe = tokio::time::interval_at(tokio::time::Instant::now() + TIME_PROBE_EVERY, TIME_PROBE_EVERY);
                    }
                    continue;
                }
                m = tokio::time::timeout(idle_limit, inbound.message()) => m,
            };
            let msg = match msg {
                Err(_) => {
                    return End::Failed {
                        reason: format!("nothing received for {}s", idle_limit.as_secs()),
                        status: Some(Status::deadline_exceeded("no heartbeat")),
                    };
                }
                Ok(Ok(None)) => {
                    return End::Failed {
                        reason: "agent closed the stream".into(),
                        status: None,
                    };
                }
                Ok(Err(status)) => {
                    // Undecodable or oversized input, or the transport broke.
                    let reason = format!("stream error: {}", status.message());
                    let reply = matches!(
                        status.code(),
                        tonic::Code::Internal
                            | tonic::Code::OutOfRange
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::InvalidArgument
                    )
                    .then(|| {
                        Status::invalid_argument(format!(
                            "unreadable message after {last_seq}: {}",
                            status.message()
                        ))
                    });
                    return End::Failed {
                        reason,
                        status: reply,
                    };
                }
                Ok(Ok(Some(m))) => m,
            };
            if msg.seq <= last_seq {
                let e = ProtocolError {
                    field: "seq".into(),
                    problem: format!("{} is not above the previous {last_seq}", msg.seq),
                };
                return protocol(msg.seq, &e);
            }
            last_seq = msg.seq;
            let seq = msg.seq;
            let acked = match msg.body {
                None => {
                    return protocol(
                        seq,
                        &ProtocolError {
                            field: "body".into(),
                            problem: "missing".into(),
                        },
                    );
                }
                Some(Body::Hello(_)) => {
                    return protocol(
                        seq,
                        &ProtocolError {
                            field: "hello".into(),
                            problem: "sent twice on one stream".into(),
                        },
                    );
                }
                Some(Body::Snapshot(s)) => match validate::snapshot(&s) {
                    Ok(facts) => {
                        self.fleet.snapshot(self.id, node, facts).await;
                        true
                    }
                    Err(e) => return protocol(seq, &e),
                },
                Some(Body::Delta(d)) => match validate::delta(&d) {
                    Ok(delta) => {
                        self.fleet.delta(self.id, node, delta).await;
                        true
                    }
                    Err(e) => return protocol(seq, &e),
                },
                Some(Body::Event(mut e)) => match validate::event(&e) {
                    Ok(()) => {
                        // Made by an earlier instance when it says so (the
                        // agent's outbox survives restarts).
                        let made_by = if e.instance_id != 0 {
                            e.instance_id
                        } else {
                            instance
                        };
                        e.instance_id = made_by;
                        e.received_unix_nanos = unix_nanos(SystemTime::now());
                        let commit = store.event(node, made_by, e.clone()).await;
                        pending.push_back(Box::pin(async move {
                            let r = commit
                                .await
                                .unwrap_or_else(|_| Err("the store is gone".into()));
                            (seq, Some((e, r)))
                        }));
                        false
                    }
                    Err(err) => return protocol(seq, &err),
                },
                Some(Body::Heartbeat(h)) => {
                    let t2 = unix_nanos(SystemTime::now());
                    if h.echo_collector_time_unix_nanos != 0 {
                        clock.add(h.echo_collector_time_unix_nanos, h.wall_time_unix_nanos, t2);
                        // The state task hears only of a new best sample.
                        if let Some(sample) = clock.estimate()
                            && reported != Some(sample)
                        {
                            reported = Some(sample);
                            self.fleet.clock(self.id, node, sample).await;
                        }
                    }
                    self.fleet
                        .heartbeat(self.id, node, h.dropped_events_total)
                        .await;
                    false
                }
                // Results are not buffered by the agent (the next batch
                // carries the same windows), so they need no ack.
                Some(Body::ProbeResults(r)) => match validate::probe::batch(&r) {
                    Ok((windows, names)) => {
                        let received = unix_nanos(SystemTime::now());
                        self.fleet
                            .probe_results(self.id, node, windows, names, received)
                            .await;
                        false
                    }
                    Err(e) => return protocol(seq, &e),
                },
                Some(Body::CommandResult(r)) => match validate::probe::command_result(&r) {
                    Ok(()) => {
                        self.fleet.command_result(self.id, node, r).await;
                        false
                    }
                    Err(e) => return protocol(seq, &e),
                },
            };
            if acked && !pending.is_empty() {
                pending.push_back(Box::pin(async move { (seq, None) }));
            } else if acked && !store_failed && !self.send(CBody::Ack(pb::Ack { seq })).await {
                return End::Failed {
                    reason: "stream closed".into(),
                    status: None,
                };
            }
        }
    }
}

fn body_name(b: &Body) -> &'static str {
    match b {
        Body::Hello(_) => "hello",
        Body::Snapshot(_) => "snapshot",
        Body::Delta(_) => "delta",
        Body::Event(_) => "event",
        Body::ProbeResults(_) => "probe_results",
        Body::Heartbeat(_) => "heartbeat",
        Body::CommandResult(_) => "command_result",
    }
}
