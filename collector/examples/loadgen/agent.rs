//! One simulated agent: reconnects until cancelled.

use super::{PROBE_PORT, Shared, WIRE_QUEUE, pb, sim, unix_nanos};
use pb::agent_message::Body;
use pb::collector_message::Body as CBody;
use std::collections::{HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub struct Sim {
    pub index: usize,
    pub name: String,
    pub address: Ipv4Addr,
    /// Tried in turn: the next after a stream fails.
    pub collectors: Vec<String>,
    pub heartbeat: Duration,
    /// The node certificate's client configuration; `None` with --insecure.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Host events (kernel link messages) this agent sends a second, beside
    /// its probe results; 0 for none.
    pub events_per_second: f64,
    /// Its `zone` label.
    pub zone: Option<String>,
}

pub async fn run(sim: Sim, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut attempt = 0usize;
    while !cancel.is_cancelled() {
        shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
        let collector = &sim.collectors[attempt % sim.collectors.len()];
        let started = Instant::now();
        match session(&sim, collector, &shared, &cancel).await {
            Ok(()) => break,
            Err(e) => {
                attempt += 1;
                shared
                    .counters
                    .stream_errors
                    .fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = shared.first_error.lock() {
                    first.get_or_insert_with(|| format!("{}: {e:#}", sim.name));
                }
                if let Ok(mut errors) = shared.errors.lock() {
                    *errors.entry(format!("{e:#}")).or_default() += 1;
                }
            }
        }
        // A stream that lived is retried at once on the next collector,
        // as an agent fails over; a failed connect waits 1-2 s.
        let pause = if started.elapsed() > Duration::from_secs(5) && sim.collectors.len() > 1 {
            Duration::ZERO
        } else {
            Duration::from_millis(1000 + rand::random::<u64>() % 1000)
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

fn hello(sim: &Sim) -> Body {
    Body::Hello(pb::Hello {
        node: sim.name.clone(),
        machine_id: format!("{:032x}", 0x5eed_0000_0000u64 + sim.index as u64),
        boot_id: format!("00000000-0000-4000-8000-{:012x}", sim.index),
        version: "loadgen".into(),
        instance_id: rand::random(),
        heartbeat_interval_ms: u32::try_from(sim.heartbeat.as_millis()).unwrap_or(5000),
        labels: sim
            .zone
            .iter()
            .map(|z| ("zone".to_string(), z.clone()))
            .collect(),
        config_json: String::new(),
    })
}

fn snapshot(sim: &Sim) -> Body {
    let up = pb::OperState::Up as i32;
    Body::Snapshot(pb::Snapshot {
        sources: Vec::new(),
        version: 1,
        host: Some(pb::HostInfo {
            hostname: sim.name.clone(),
            kernel: "6.1.0-loadgen".into(),
            os: "simulated".into(),
            uptime_seconds: 3600,
            boot_time_unix_seconds: unix_nanos() / 1_000_000_000 - 3600,
        }),
        interfaces: vec![
            pb::Interface {
                index: 1,
                name: "lo".into(),
                mtu: 65536,
                admin_up: true,
                oper_state: pb::OperState::Unknown as i32,
                addresses: vec![pb::Address {
                    ip: "127.0.0.1".into(),
                    prefix_len: 8,
                    scope: pb::AddressScope::Host as i32,
                }],
                ..Default::default()
            },
            pb::Interface {
                index: 2,
                name: "eth0".into(),
                mac: format!(
                    "02:00:00:00:{:02x}:{:02x}",
                    sim.index >> 8 & 0xff,
                    sim.index & 0xff
                ),
                mtu: 1500,
                admin_up: true,
                oper_state: up,
                addresses: vec![pb::Address {
                    ip: sim.address.to_string(),
                    prefix_len: 15,
                    scope: pb::AddressScope::Universe as i32,
                }],
                ..Default::default()
            },
        ],
        routes: vec![pb::Route {
            destination: "198.18.0.0/15".into(),
            interface: "eth0".into(),
            preferred_source: sim.address.to_string(),
            table: 254,
            ..Default::default()
        }],
        sockets: Some(pb::SocketFacts {
            listeners: vec![pb::Listener {
                protocol: pb::Protocol::Tcp as i32,
                address: "0.0.0.0".into(),
                port: PROBE_PORT,
                scope: pb::BindScope::Any as i32,
                accept_queue_limit: 4096,
                processes: vec![pb::Process {
                    pid: 1000,
                    name: "reachmap-agent".into(),
                    unit: "reachmap-agent.service".into(),
                    cgroup: "/system.slice/reachmap-agent.service".into(),
                }],
                ..Default::default()
            }],
            summary: Some(pb::SocketSummary {
                tcp_total: 12,
                tcp_established: 3,
                ..Default::default()
            }),
        }),
        firewall: None,
        resources: None,
    })
}

fn heartbeat(echo: i64) -> Body {
    Body::Heartbeat(pb::Heartbeat {
        wall_time_unix_nanos: unix_nanos(),
        echo_collector_time_unix_nanos: echo,
        unacked_events: 0,
        dropped_events_total: 0,
    })
}

struct Plan {
    version: u64,
    interval: Duration,
    window: u32,
    targets: Vec<pb::ProbeTarget>,
    /// The collector reads windows by target id.
    by_id: bool,
}

/// One stream: `Ok` when cancelled, `Err` when the stream failed.
async fn session(
    sim: &Sim,
    collector: &str,
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let c = &shared.counters;
    let me = &shared.agents[sim.index];
    let endpoint = tonic::transport::Endpoint::from_shared(collector.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(sim.heartbeat.max(Duration::from_secs(1)) * 2)
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        ch = async {
            match &sim.tls {
                Some(tls) => reachmap_tls::connect(endpoint, tls.clone()).await,
                None => endpoint.connect().await,
            }
        } => ch?,
    };
    let mut client = pb::collector_client::CollectorClient::new(channel)
        .max_decoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(WIRE_QUEUE);
    let mut seq = 0u64;
    for body in [hello(sim), snapshot(sim)] {
        seq += 1;
        tx.send(pb::AgentMessage {
            seq,
            body: Some(body),
        })
        .await?;
    }
    let mut inbound = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = client.connect(ReceiverStream::new(rx)) => r?.into_inner(),
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(&c.connected);

    let mut pending: VecDeque<Body> = VecDeque::new();
    let mut beat = tokio::time::interval(sim.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut plan: Option<Plan> = None;
    let mut batch_due: Option<Instant> = None;
    let mut batch_no = 0u64;
    let mut announced: HashSet<u64> = HashSet::new();
    // Events sent and not acked yet, by the seq that carried them: the
    // collector acks an event once its store has committed it.
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut events = (sim.events_per_second > 0.0).then(|| {
        let every = Duration::from_secs_f64(1.0 / sim.events_per_second);
        let mut i = tokio::time::interval_at(
            tokio::time::Instant::now() + every.mul_f64(rand::random::<f64>()),
            every,
        );
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    let mut event_id = 0u64;
    loop {
        let due = batch_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            msg = inbound.message() => {
                let Some(msg) = msg? else { anyhow::bail!("the collector closed the stream") };
                match msg.body {
                    Some(CBody::Ack(a)) => {
                        c.acks.fetch_add(1, Ordering::Relaxed);
                        while unacked.front().is_some_and(|s| *s <= a.seq) {
                            unacked.pop_front();
                            c.events_acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(CBody::TimeProbe(p)) => {
                        c.time_probes.fetch_add(1, Ordering::Relaxed);
                        pending.push_front(heartbeat(p.collector_time_unix_nanos));
                    }
                    Some(CBody::Plan(p)) => {
                        c.plans.fetch_add(1, Ordering::Relaxed);
                        c.plan_bytes.fetch_add(prost::Message::encoded_len(&p) as u64, Ordering::Relaxed);
                        let ms = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        c.last_plan_ms.fetch_max(ms, Ordering::Relaxed);
                        me.plan_targets.store(p.targets.len(), Ordering::Relaxed);
                        let interval = Duration::from_millis(u64::from(p.interval_ms.max(100)));
                        c.plan_interval_ms.store(u64::from(p.interval_ms), Ordering::Relaxed);
                        // A random phase: agents' batches are spread over the interval.
                        batch_due.get_or_insert_with(|| {
                            Instant::now() + interval.mul_f64(rand::random::<f64>())
                        });
                        plan = Some(Plan {
                            version: p.version,
                            interval,
                            window: p.window.clamp(1, 1000),
                            targets: p.targets,
                            by_id: p.results_by_id,
                        });
                    }
                    Some(CBody::Resync(_)) => {
                        c.resyncs.fetch_add(1, Ordering::Relaxed);
                        pending.push_back(snapshot(sim));
                    }
                    Some(CBody::Command(cmd)) => {
                        c.commands.fetch_add(1, Ordering::Relaxed);
                        pending.push_front(Body::CommandResult(pb::CommandResult {
                            command_id: cmd.id,
                            ok: false,
                            error: "simulated agent: no commands".into(),
                            ..Default::default()
                        }));
                    }
                    // The fleet's addresses: a simulated agent runs no commands.
                    Some(CBody::FleetAddresses(_)) => {}
                    None => {}
                }
            }
            _ = beat.tick() => pending.push_back(heartbeat(0)),
            _ = async { events.as_mut().expect("guarded").tick().await }, if events.is_some() => {
                event_id += 1;
                pending.push_back(Body::Event(pb::Event {
                    time_unix_nanos: unix_nanos(),
                    id: event_id,
                    received_unix_nanos: 0,
                    instance_id: 0,
                    kind: Some(pb::event::Kind::KernelLink(pb::KernelLinkMessage {
                        interface: "eth0".into(),
                        up: event_id.is_multiple_of(2),
                        message: "eth0: Link is Up 1000 Mbps Full Duplex".into(),
                    })),
                }));
            }
            _ = tokio::time::sleep_until(due), if batch_due.is_some() => {
                let Some(p) = &plan else { continue };
                let now = unix_nanos();
                batch_no += 1;
                let mut windows: Vec<pb::TargetWindow> = p
                    .targets
                    .iter()
                    .map(|t| sim::window(&sim.name, t, p.window, now, batch_no))
                    .collect();
                // A target's first bad result is news, sent at once.
                for w in windows.iter().filter(|w| w.state != pb::TargetState::Ok as i32) {
                    let Some(t) = &w.target else { continue };
                    if announced.insert(t.id) {
                        event_id += 1;
                        pending.push_back(Body::Event(pb::Event {
                            time_unix_nanos: now,
                            id: event_id,
                            received_unix_nanos: 0,
                            instance_id: 0,
                            kind: Some(pb::event::Kind::ProbeStateChanged(pb::ProbeStateChanged {
                                target: Some(t.clone()),
                                old_state: 0,
                                new_state: w.state,
                                outcome: if w.last_failure != 0 { w.last_failure } else { w.last_outcome },
                            })),
                        }));
                    }
                }
                if p.by_id {
                    windows = windows.into_iter().map(sim::by_id).collect();
                }
                // Only the newest batch is worth sending.
                let before = pending.len();
                pending.retain(|b| !matches!(b, Body::ProbeResults(_)));
                c.superseded.fetch_add((before - pending.len()) as u64, Ordering::Relaxed);
                pending.push_back(Body::ProbeResults(pb::ProbeResults {
                    plan_version: p.version,
                    windows,
                    names: Vec::new(),
                }));
                let jitter = 0.98 + 0.04 * rand::random::<f64>();
                batch_due = Some(due + p.interval.mul_f64(jitter));
            }
            permit = tx.reserve(), if !pending.is_empty() => {
                let permit = permit?;
                let Some(body) = pending.pop_front() else { continue };
                seq += 1;
                match &body {
                    Body::ProbeResults(r) => {
                        c.batches.fetch_add(1, Ordering::Relaxed);
                        c.windows.fetch_add(r.windows.len() as u64, Ordering::Relaxed);
                        c.result_bytes.fetch_add(prost::Message::encoded_len(r) as u64, Ordering::Relaxed);
                        if let Ok(mut s) = me.sends.lock() {
                            if s.len() == 8 {
                                s.pop_front();
                            }
                            s.push_back(unix_nanos());
                        }
                    }
                    Body::Event(_) => {
                        c.events.fetch_add(1, Ordering::Relaxed);
                        unacked.push_back(seq);
                    }
                    _ => {}
                }
                permit.send(pb::AgentMessage { seq, body: Some(body) });
            }
        }
    }
}

/// Counts a live stream down when the session ends, however it ends.
struct Connected<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
