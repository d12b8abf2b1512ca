//! Collector load benchmark: N simulated agents speak the real protocol to a
//! real `reachmap-collector` (one HTTP/2 connection and one `Connect` stream
//! per agent), and the collector is measured while it ingests their results.
//!
//! Each simulated agent sends Hello, a Snapshot (one interface with a unique
//! address, the probe listener 0.0.0.0:7442), heartbeats, answers time
//! probes, and once per interval of the plan the collector pushed to it a
//! `ProbeResults` batch with one window per planned target — the load a real
//! agent with that plan makes. Batches are spread over the interval (a random
//! phase per agent, ±2% jitter per batch); window figures are deterministic
//! per (source, destination, port, kind) — 97% ok, 2% degraded, 1% failing —
//! so the matrix the collector serves can be checked cell by cell.
//!
//! The simulated agents send no traffic anywhere but the collector: their
//! addresses are data only. They come from 198.18.0.0/15 (network testing)
//! by default because the planner never plans loopback addresses; the
//! collector and its HTTP port must be on 127.0.0.0/8.
//!
//!     cargo run --release -p reachmap-collector --example loadgen -- \
//!         --agents 1000 --collector http://127.0.0.1:17440 --http 127.0.0.1:17441 \
//!         --pid PID --duration 60s
//!
//! or `--spawn target/release/reachmap-collector` to start (and stop) one.
//! `deploy/bench.sh loadgen` runs it the documented way.

use anyhow::{Context, bail};
use clap::Parser;
use reachmap_proto::v1 as pb;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Load the collector with simulated agents and measure it.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Simulated agents
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The collector's gRPC URL (loopback only)
    #[arg(long, default_value = "http://127.0.0.1:7440")]
    collector: String,
    /// The collector's HTTP address (loopback only)
    #[arg(long, default_value = "127.0.0.1:7441")]
    http: SocketAddr,
    /// The collector's pid, for its CPU and memory [default: found by its command line]
    #[arg(long)]
    pid: Option<u32>,
    /// Start this collector binary on --collector/--http (temp data dir,
    /// --probe-interval, --full-mesh-max = agents) and stop it at the end
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Probe interval for a spawned collector
    #[arg(long, default_value = "10s")]
    probe_interval: humantime::Duration,
    /// How long to measure once every agent has its plan and sent a batch
    #[arg(long, default_value = "60s")]
    duration: humantime::Duration,
    /// The reachmap CLI, timed on `matrix --port 7442 --format json`
    #[arg(long, default_value = "target/release/reachmap")]
    cli: PathBuf,
    /// New agent streams per second while ramping up
    #[arg(long, default_value_t = 250)]
    connect_rate: u32,
    /// First simulated address (198.18.0.0/15 or 127.0.0.0/8; the collector
    /// plans no loopback address)
    #[arg(long, default_value = "198.19.0.0")]
    address_base: Ipv4Addr,
    /// Agent heartbeat interval
    #[arg(long, default_value = "5s")]
    heartbeat: humantime::Duration,
}

const PROBE_PORT: u32 = 7442;
/// Messages queued toward the collector per agent (as the agent's wire queue).
const WIRE_QUEUE: usize = 16;

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Figures every simulated agent adds to.
#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    sessions: AtomicU64,
    stream_errors: AtomicU64,
    plans: AtomicU64,
    plan_bytes: AtomicU64,
    batches: AtomicU64,
    windows: AtomicU64,
    result_bytes: AtomicU64,
    superseded: AtomicU64,
    events: AtomicU64,
    acks: AtomicU64,
    time_probes: AtomicU64,
    commands: AtomicU64,
    resyncs: AtomicU64,
    /// Milliseconds since the start when the last plan arrived.
    last_plan_ms: AtomicU64,
    /// The interval of the last plan, in milliseconds.
    plan_interval_ms: AtomicU64,
}

/// What the measuring side reads of one agent.
#[derive(Default)]
struct AgentShared {
    plan_targets: AtomicUsize,
    /// Unix nanos of the last batches handed to the stream, newest last.
    sends: std::sync::Mutex<std::collections::VecDeque<i64>>,
}

struct Shared {
    counters: Counters,
    agents: Vec<AgentShared>,
    first_error: std::sync::Mutex<Option<String>>,
    started: Instant,
}

/// Deterministic figures of the simulated windows.
mod sim {
    use super::pb;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Class {
        Ok,
        Degraded,
        Failing,
    }

    impl Class {
        pub fn state(self) -> &'static str {
            match self {
                Class::Ok => "ok",
                Class::Degraded => "degraded",
                Class::Failing => "failing",
            }
        }
    }

    fn fnv(parts: &[&[u8]]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in parts {
            for b in p.iter().chain(&[0xff]) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    pub fn kind_name(kind: i32) -> &'static str {
        match pb::ProbeKind::try_from(kind) {
            Ok(pb::ProbeKind::Tcp) => "tcp",
            Ok(pb::ProbeKind::Icmp) => "icmp",
            Ok(pb::ProbeKind::Http) => "http",
            _ => "unspecified",
        }
    }

    /// 97% ok, 2% degraded, 1% failing, by (source, destination, port, kind).
    pub fn class(src: &str, dst: &str, port: u32, kind: &str) -> (Class, u64) {
        let h = fnv(&[
            src.as_bytes(),
            dst.as_bytes(),
            &port.to_le_bytes(),
            kind.as_bytes(),
        ]);
        let class = match h % 1000 {
            0..970 => Class::Ok,
            970..990 => Class::Degraded,
            _ => Class::Failing,
        };
        (class, h)
    }

    /// The outcome a failing or degraded cell reports.
    pub fn failure(class: Class, kind: &str) -> Option<pb::ProbeOutcome> {
        match (class, kind) {
            (Class::Ok, _) => None,
            (Class::Failing, "tcp") => Some(pb::ProbeOutcome::Refused),
            _ => Some(pb::ProbeOutcome::Timeout),
        }
    }

    /// One target's window of `sent` probes at `now`; `batch` varies the RTTs.
    pub fn window(
        src: &str,
        t: &pb::ProbeTarget,
        sent: u32,
        now: i64,
        batch: u64,
    ) -> pb::TargetWindow {
        let kind = kind_name(t.kind);
        let (class, h) = class(src, &t.node, t.port, kind);
        let wobble = ((h >> 16).wrapping_add(batch.wrapping_mul(0x9e37)) % 400) as f64 / 1000.0;
        let rtt = 0.15 + ((h >> 32) % 600) as f64 / 1000.0 + wobble;
        let failed = match class {
            Class::Ok => 0,
            Class::Degraded => 2.min(sent),
            Class::Failing => sent,
        };
        let mut w = pb::TargetWindow {
            target: Some(t.clone()),
            sent,
            ok: sent - failed,
            rtt_p50_ms: (failed < sent).then_some(rtt),
            rtt_p99_ms: (failed < sent).then_some(rtt * 1.8),
            last_outcome: pb::ProbeOutcome::Open as i32,
            state: match class {
                Class::Ok => pb::TargetState::Ok,
                Class::Degraded => pb::TargetState::Degraded,
                Class::Failing => pb::TargetState::Failing,
            } as i32,
            last_probe_unix_nanos: now - 1_000_000_000,
            ..Default::default()
        };
        if let Some(f) = failure(class, kind) {
            match f {
                pb::ProbeOutcome::Refused => w.refused = failed,
                _ => w.timeout = failed,
            }
            w.last_failure = f as i32;
            w.last_failure_unix_nanos = now - 3_000_000_000;
            if class == Class::Failing {
                w.last_outcome = f as i32;
            }
        }
        w
    }

    /// Nearest-rank percentile of sorted values.
    pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
        if sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1])
    }
}

/// CPU time and memory of a process, from /proc.
mod procstat {
    use std::time::Instant;

    /// USER_HZ: /proc reports CPU time in these ticks on every Linux ABI.
    const TICKS_PER_SECOND: f64 = 100.0;

    #[derive(Clone, Copy, Debug)]
    pub struct Sample {
        pub at: Instant,
        /// utime + stime, in ticks.
        pub cpu_ticks: u64,
        pub rss_kib: u64,
        pub hwm_kib: u64,
        pub threads: u64,
    }

    /// utime + stime from the text of /proc/PID/stat.
    pub fn parse_stat(text: &str) -> Option<u64> {
        // The command name may hold spaces and parentheses: fields start
        // after the last ')'. utime and stime are fields 14 and 15.
        let rest = &text[text.rfind(')')? + 1..];
        let mut f = rest.split_whitespace().skip(11);
        let utime: u64 = f.next()?.parse().ok()?;
        let stime: u64 = f.next()?.parse().ok()?;
        Some(utime + stime)
    }

    /// A `Key:   123 kB` field of /proc/PID/status.
    pub fn status_field(text: &str, key: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    pub fn sample(pid: &str) -> Option<Sample> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Sample {
            at,
            cpu_ticks: parse_stat(&stat)?,
            rss_kib: status_field(&status, "VmRSS")?,
            hwm_kib: status_field(&status, "VmHWM")?,
            threads: status_field(&status, "Threads").unwrap_or(0),
        })
    }

    /// (CPU time, run-queue wait) of every thread, in nanoseconds, from
    /// /proc/PID/task/*/schedstat: finer than ticks, and the wait shows
    /// how much other processes kept the threads from a core.
    pub fn sched(pid: &str) -> Option<(u64, u64)> {
        let mut total = (0u64, 0u64);
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue; // the thread ended
            };
            let mut f = text
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            total.0 += f.next().unwrap_or(0);
            total.1 += f.next().unwrap_or(0);
        }
        Some(total)
    }

    /// CPU used between two samples, in percent of one core.
    pub fn cpu_pct(a: &Sample, b: &Sample) -> f64 {
        let wall = b.at.duration_since(a.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / TICKS_PER_SECOND / wall * 100.0
    }

    /// CPU seconds between two samples.
    pub fn cpu_seconds(a: &Sample, b: &Sample) -> f64 {
        b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / TICKS_PER_SECOND
    }
}

/// A blocking HTTP/1.1 GET that times the first and the last byte.
mod http {
    use anyhow::{Context, bail};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    pub struct Fetched {
        pub status: u16,
        /// Request sent → first response byte: queueing and encoding.
        pub first_byte: Duration,
        /// Request sent → last byte: what a client waits for.
        pub total: Duration,
        /// Body bytes (after de-chunking).
        pub body_len: usize,
    }

    /// Reads the whole response into `buf` (kept by the caller, so its pages
    /// are touched once, not per request); the body is `buf[body_start..]`.
    pub fn get(
        addr: SocketAddr,
        path: &str,
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<(Fetched, usize)> {
        buf.clear();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let start = Instant::now();
        s.write_all(req.as_bytes())?;
        let mut first = None;
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = s
                .read(&mut chunk)
                .with_context(|| format!("reading {path}"))?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| start.elapsed());
            buf.extend_from_slice(&chunk[..n]);
        }
        let total = start.elapsed();
        let Some(first_byte) = first else {
            bail!("{path}: the connection closed without a response");
        };
        let (status, body_start, body_len) = parse(buf)?;
        Ok((
            Fetched {
                status,
                first_byte,
                total,
                body_len,
            },
            body_start,
        ))
    }

    /// Status, body offset and body length of a complete response; a
    /// chunked body is de-chunked in place.
    pub fn parse(buf: &mut Vec<u8>) -> anyhow::Result<(u16, usize, usize)> {
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let head = std::str::from_utf8(&buf[..end]).context("headers are not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let mut length = None;
        let mut chunked = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(v.parse::<usize>().context("bad content-length")?);
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        let start = end + 4;
        if chunked {
            let body = dechunk(&buf[start..])?;
            buf.truncate(start);
            buf.extend_from_slice(&body);
        } else if let Some(len) = length
            && buf.len() - start != len
        {
            bail!(
                "body is {} bytes, content-length says {len}",
                buf.len() - start
            );
        }
        Ok((status, start, buf.len() - start))
    }

    fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(b.len());
        loop {
            let eol = b
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("truncated chunk size")?;
            let size_text = std::str::from_utf8(&b[..eol]).context("bad chunk size")?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
            b = &b[eol + 2..];
            if size == 0 {
                return Ok(out);
            }
            if b.len() < size + 2 {
                bail!("truncated chunk");
            }
            out.extend_from_slice(&b[..size]);
            b = &b[size + 2..];
        }
    }
}

/// One simulated agent: reconnects until cancelled.
mod agent {
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
        pub collector: String,
        pub heartbeat: Duration,
    }

    pub async fn run(sim: Sim, shared: Arc<Shared>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
            match session(&sim, &shared, &cancel).await {
                Ok(()) => break,
                Err(e) => {
                    shared
                        .counters
                        .stream_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = shared.first_error.lock() {
                        first.get_or_insert_with(|| format!("{}: {e:#}", sim.name));
                    }
                }
            }
            let pause = Duration::from_millis(1000 + rand::random::<u64>() % 1000);
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
            labels: Default::default(),
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
    }

    /// One stream: `Ok` when cancelled, `Err` when the stream failed.
    async fn session(sim: &Sim, shared: &Shared, cancel: &CancellationToken) -> anyhow::Result<()> {
        let c = &shared.counters;
        let me = &shared.agents[sim.index];
        let endpoint = tonic::transport::Endpoint::from_shared(sim.collector.clone())?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(sim.heartbeat.max(Duration::from_secs(1)) * 2)
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ch = endpoint.connect() => ch?,
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
        let mut event_id = 0u64;
        loop {
            let due = batch_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                msg = inbound.message() => {
                    let Some(msg) = msg? else { anyhow::bail!("the collector closed the stream") };
                    match msg.body {
                        Some(CBody::Ack(_)) => { c.acks.fetch_add(1, Ordering::Relaxed); }
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
                        None => {}
                    }
                }
                _ = beat.tick() => pending.push_back(heartbeat(0)),
                _ = tokio::time::sleep_until(due), if batch_due.is_some() => {
                    let Some(p) = &plan else { continue };
                    let now = unix_nanos();
                    batch_no += 1;
                    let windows: Vec<pb::TargetWindow> = p
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
                                kind: Some(pb::event::Kind::ProbeStateChanged(pb::ProbeStateChanged {
                                    target: Some(t.clone()),
                                    old_state: 0,
                                    new_state: w.state,
                                    outcome: if w.last_failure != 0 { w.last_failure } else { w.last_outcome },
                                })),
                            }));
                        }
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
                        Body::Event(_) => { c.events.fetch_add(1, Ordering::Relaxed); }
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
}

/// The matrix JSON as served, checked against what the agents sent.
mod check {
    use super::sim;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        nodes: Vec<&'a str>,
        #[serde(borrow)]
        cells: Vec<Cell<'a>>,
    }

    #[derive(Deserialize)]
    struct Cell<'a> {
        src: &'a str,
        dst: &'a str,
        port: u32,
        kind: &'a str,
        state: &'a str,
        loss: f64,
        sent: u32,
        updated: i64,
        failure: Option<&'a str>,
    }

    #[derive(Debug, Default)]
    pub struct Report {
        pub nodes: usize,
        pub cells: usize,
        pub tcp_cells: usize,
        pub icmp_cells: usize,
        pub min_row: usize,
        pub max_row: usize,
        pub never_reported: usize,
        pub unknown: usize,
        pub states: [usize; 3],
        pub wrong: usize,
        pub first_wrong: Option<String>,
        pub sent_total: u64,
        /// Cells showing their agent's latest batch, the one before, older.
        pub latest: usize,
        pub previous: usize,
        pub older: usize,
        /// Batch handed to the stream → applied in the matrix (`updated`), ms.
        pub lag_ms: Vec<f64>,
    }

    /// `sends(src)`: the unix nanos the agent handed its recent batches to
    /// the stream, oldest first.
    pub fn check(body: &[u8], sends: impl Fn(&str) -> Vec<i64>) -> anyhow::Result<Report> {
        let doc: Doc = serde_json::from_slice(body)?;
        let mut r = Report {
            nodes: doc.nodes.len(),
            cells: doc.cells.len(),
            min_row: usize::MAX,
            ..Report::default()
        };
        let mut row = (None::<&str>, 0usize, Vec::new());
        let finish_row = |r: &mut Report, n: usize| {
            r.min_row = r.min_row.min(n);
            r.max_row = r.max_row.max(n);
        };
        for c in &doc.cells {
            if row.0 != Some(c.src) {
                if row.0.is_some() {
                    finish_row(&mut r, row.1);
                }
                row = (Some(c.src), 0, sends(c.src));
            }
            row.1 += 1;
            match c.kind {
                "tcp" => r.tcp_cells += 1,
                "icmp" => r.icmp_cells += 1,
                _ => {}
            }
            r.sent_total += u64::from(c.sent);
            if c.updated == 0 {
                r.never_reported += 1;
            }
            let (class, _) = sim::class(c.src, c.dst, c.port, c.kind);
            let expected_failure = sim::failure(class, c.kind).map(|o| match o {
                super::pb::ProbeOutcome::Refused => "refused",
                _ => "timeout",
            });
            match c.state {
                "unknown" => r.unknown += 1,
                s => {
                    let i = ["ok", "degraded", "failing"].iter().position(|x| *x == s);
                    if let Some(i) = i {
                        r.states[i] += 1;
                    }
                    let loss = match class {
                        sim::Class::Ok => 0.0,
                        sim::Class::Degraded => 0.2,
                        sim::Class::Failing => 1.0,
                    };
                    if s != class.state()
                        || c.failure != expected_failure
                        || (c.loss - loss).abs() > 1e-6
                    {
                        r.wrong += 1;
                        r.first_wrong.get_or_insert_with(|| {
                            format!(
                                "{}→{}:{} {}: {s} loss {} failure {:?}, expected {} loss {loss} failure {expected_failure:?}",
                                c.src, c.dst, c.port, c.kind, c.loss, c.failure, class.state()
                            )
                        });
                    }
                }
            }
            // Which batch the cell shows: the newest send at or before it.
            let s = &row.2;
            match s.iter().rposition(|t| *t <= c.updated) {
                Some(i) => {
                    r.lag_ms.push((c.updated - s[i]) as f64 / 1e6);
                    match s.len() - 1 - i {
                        0 => r.latest += 1,
                        1 => r.previous += 1,
                        _ => r.older += 1,
                    }
                }
                None => r.older += 1,
            }
        }
        if row.0.is_some() {
            finish_row(&mut r, row.1);
        }
        if r.min_row == usize::MAX {
            r.min_row = 0;
        }
        r.lag_ms.sort_by(f64::total_cmp);
        Ok(r)
    }
}

/// min / median / p99 / max of durations, in ms.
fn summary(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    format!(
        "min {:7.1}  median {:7.1}  p99 {:7.1}  max {:7.1} ms  (n={})",
        ms(v.first().copied()),
        ms(sim::percentile(&v, 50.0)),
        ms(sim::percentile(&v, 99.0)),
        ms(v.last().copied()),
        v.len()
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn loopback_host(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?} is not an http:// URL"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr = hostport.parse().with_context(|| {
        format!("{url:?}: the collector must be given as http://127.x.y.z:PORT")
    })?;
    if !addr.ip().is_loopback() {
        bail!("{url:?} is not a loopback address: the load generator only talks to 127.0.0.0/8");
    }
    Ok(())
}

/// The reachmap-collector whose command line names `port`.
fn find_collector(port: u16) -> Option<u32> {
    let needle = format!(":{port}");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with("reachmap-collector"))
            && args.iter().any(|a| a.ends_with(&needle))
        {
            found.push(pid);
        }
    }
    (found.len() == 1).then(|| found[0])
}

fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

struct Spawned {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SIGTERM first (a clean shutdown), then SIGKILL.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_collector(args: &Args, bin: &PathBuf, grpc: SocketAddr) -> anyhow::Result<Spawned> {
    let dir = std::env::temp_dir().join(format!("reachmap-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("collector.log"))?;
    let child = std::process::Command::new(bin)
        .arg("--listen")
        .arg(grpc.to_string())
        .arg("--http")
        .arg(args.http.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--probe-interval")
        .arg(args.probe_interval.to_string())
        .arg("--full-mesh-max")
        .arg(args.agents.max(1).to_string())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Spawned { child, dir })
}

/// One request's figures.
struct Timed {
    start: Instant,
    first: Duration,
    total: Duration,
    bytes: usize,
    /// Collector CPU (all threads) during the request, and the time its
    /// threads were runnable but waiting for a core (other processes).
    cpu: Option<Duration>,
    waited: Option<Duration>,
}

#[derive(Default)]
struct Series {
    samples: Vec<Timed>,
    errors: Vec<String>,
}

impl Series {
    fn add(&mut self, r: anyhow::Result<Timed>) {
        match r {
            Ok(t) => self.samples.push(t),
            Err(e) => self.errors.push(format!("{e:#}")),
        }
    }

    fn of(&self, f: impl Fn(&Timed) -> Option<Duration>) -> Vec<Duration> {
        self.samples.iter().filter_map(f).collect()
    }

    /// `ingest_share`: the collector's CPU share (of one core) for ingest
    /// alone, subtracted to show what a request itself cost.
    fn print(&self, name: &str, with_first_byte: bool, ingest_share: f64) {
        println!("  {name}");
        if let Some(t) = self.samples.last() {
            println!(
                "    total (last byte)  {}",
                summary(self.of(|t| Some(t.total)))
            );
            if with_first_byte {
                println!(
                    "    first byte         {}",
                    summary(self.of(|t| Some(t.first)))
                );
                println!(
                    "    transfer           {}",
                    summary(self.of(|t| Some(t.total.saturating_sub(t.first))))
                );
            }
            let cpu = self.of(|t| t.cpu);
            if !cpu.is_empty() {
                println!("    collector CPU      {}", summary(cpu));
                println!(
                    "    CPU above ingest   {}",
                    summary(self.of(|t| {
                        t.cpu
                            .map(|c| c.saturating_sub(t.total.mul_f64(ingest_share)))
                    }))
                );
                println!("    collector waited   {}", summary(self.of(|t| t.waited)));
            }
            println!("    size               {:.1} MB", t.bytes as f64 / 1e6);
        }
        if let Some(e) = self.errors.first() {
            println!("    ERRORS: {} (first: {e})", self.errors.len());
        }
    }
}

/// Runs `f` (giving first-byte time, total time, bytes) with the
/// collector's scheduler figures around it.
fn measured(
    pid: Option<&str>,
    f: impl FnOnce() -> anyhow::Result<(Duration, Duration, usize)>,
) -> anyhow::Result<Timed> {
    let before = pid.and_then(procstat::sched);
    let start = Instant::now();
    let (first, total, bytes) = f()?;
    let after = pid.and_then(procstat::sched);
    let (cpu, waited) = match (before, after) {
        (Some(a), Some(b)) => (
            Some(Duration::from_nanos(b.0.saturating_sub(a.0))),
            Some(Duration::from_nanos(b.1.saturating_sub(a.1))),
        ),
        _ => (None, None),
    };
    Ok(Timed {
        start,
        first,
        total,
        bytes,
        cpu,
        waited,
    })
}

fn http_get(
    addr: SocketAddr,
    path: &str,
    buf: &mut Vec<u8>,
    want: u16,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let (f, _) = http::get(addr, path, buf)?;
    if f.status != want {
        bail!("{path}: status {} (expected {want})", f.status);
    }
    Ok((f.first_byte, f.total, f.body_len))
}

fn cli_matrix(cli: &PathBuf, url: &str) -> anyhow::Result<(Duration, Duration, usize)> {
    let start = Instant::now();
    let out = std::process::Command::new(cli)
        .args([
            "--collector",
            url,
            "matrix",
            "--port",
            "7442",
            "--format",
            "json",
        ])
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("running {}", cli.display()))?;
    let total = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} exited with {}: {}",
            cli.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((total, total, out.stdout.len()))
}

/// `GetMatrix` over gRPC, decoded; the connection is made before the clock
/// starts.
fn grpc_matrix(
    rt: &tokio::runtime::Handle,
    url: &str,
    port: u32,
) -> anyhow::Result<(Duration, Duration, usize)> {
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect()
            .await?;
        let mut q = pb::query_client::QueryClient::new(ch).max_decoding_message_size(1 << 30);
        let start = Instant::now();
        let m = q.get_matrix(pb::MatrixRequest { port }).await?.into_inner();
        let total = start.elapsed();
        Ok((total, total, prost::Message::encoded_len(&m)))
    })
}

/// The same number of bytes from memory over a loopback TCP connection,
/// read the same way: what transfer alone costs on this machine now.
fn loopback_copy(bytes: usize, buf: &mut Vec<u8>) -> anyhow::Result<Duration> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let data = vec![b'x'; bytes];
        let mut go = [0u8; 1];
        s.read_exact(&mut go)?;
        s.write_all(&data)
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    buf.clear();
    let mut chunk = vec![0u8; 1 << 20];
    let start = Instant::now();
    s.write_all(b"g")?;
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let took = start.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("loopback writer panicked"))??;
    Ok(took)
}

#[derive(Default)]
struct Rounds {
    queue_probe: Series,
    full: Series,
    detail: Series,
    port: Series,
    metrics: Series,
    /// `reachmap why` over HTTP, for pairs spread over the fleet.
    why: Series,
    grpc: Series,
    cli: Series,
    loopback: Option<anyhow::Result<Duration>>,
    /// Back-to-back 404 probes from another thread: (start, latency).
    watch: Vec<(Instant, Duration)>,
}

impl Rounds {
    /// For each request of `s`: the longest a 404 probe started while it
    /// ran waited — how long the state task was busy with it.
    fn state_task_busy(&self, s: &Series) -> Vec<Duration> {
        s.samples
            .iter()
            .filter_map(|t| {
                let end = t.start + t.total;
                self.watch
                    .iter()
                    .filter(|(at, _)| *at >= t.start && *at < end)
                    .map(|(_, d)| *d)
                    .max()
            })
            .collect()
    }
}

/// gRPC and CLI runs, after the HTTP rounds: each takes seconds.
const SLOW_ROUNDS: usize = 3;

/// Requests one after another until `until`, pausing between rounds, with
/// a watcher probing the state task meanwhile.
fn query_rounds(
    args: &Args,
    pid: Option<&str>,
    rt: &tokio::runtime::Handle,
    until: Instant,
    buf: &mut Vec<u8>,
) -> Rounds {
    let mut r = Rounds::default();
    let addr = args.http;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch_stop = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        while !watch_stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            if http_get(addr, "/api/v1/nodes/loadgen-queue-probe", &mut buf, 404).is_ok() {
                seen.push((at, at.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    });
    let cli_ok = args.cli.exists();
    let mut round = 0;
    while Instant::now() < until || round < 3 {
        // A name no node has: the answer is a 404 from the state task, so
        // its latency is the state task's queueing (plus HTTP).
        r.queue_probe.add(measured(pid, || {
            http_get(addr, "/api/v1/nodes/loadgen-queue-probe", buf, 404)
        }));
        r.full
            .add(measured(pid, || http_get(addr, "/api/v1/matrix", buf, 200)));
        if round == 0
            && let Some(t) = r.full.samples.last()
        {
            r.loopback = Some(loopback_copy(t.bytes, buf));
        }
        r.detail.add(measured(pid, || {
            http_get(addr, "/api/v1/matrix?detail=full", buf, 200)
        }));
        r.port.add(measured(pid, || {
            http_get(addr, "/api/v1/matrix?port=7442", buf, 200)
        }));
        r.metrics
            .add(measured(pid, || http_get(addr, "/metrics", buf, 200)));
        for k in 0..5 {
            let n = args.agents.max(2);
            let (a, b) = ((round * 7 + k * 131) % n, (round * 13 + k * 257 + 1) % n);
            let b = if a == b { (b + 1) % n } else { b };
            let path = format!("/api/v1/why?src={}&dst={}", node_name(a), node_name(b));
            r.why.add(measured(pid, || http_get(addr, &path, buf, 200)));
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    // The gRPC path last: each answer takes the state task for seconds.
    for _ in 0..SLOW_ROUNDS {
        r.grpc.add(measured(pid, || {
            grpc_matrix(rt, &args.collector, PROBE_PORT)
        }));
        std::thread::sleep(Duration::from_millis(500));
        if cli_ok {
            r.cli
                .add(measured(pid, || cli_matrix(&args.cli, &args.collector)));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    r.watch = watcher.join().unwrap_or_default();
    r
}

/// This thread's CPU time (ns resolution).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// The collector's per-window work outside the state task, in this
/// process: protobuf decode and `validate::probe::results` of a batch like
/// the agents send. Returns CPU per window (decode, validate).
fn calibrate(agents: usize) -> anyhow::Result<(Duration, Duration)> {
    let targets: Vec<pb::ProbeTarget> = (1..agents.max(2))
        .flat_map(|i| {
            let node = format!("sim-{i:04}");
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + i as u32);
            [pb::ProbeKind::Tcp, pb::ProbeKind::Icmp].map(|kind| pb::ProbeTarget {
                id: i as u64 * 2 + kind as u64,
                node: node.clone(),
                address: address.to_string(),
                port: if kind == pb::ProbeKind::Tcp {
                    PROBE_PORT
                } else {
                    0
                },
                kind: kind as i32,
                ..Default::default()
            })
        })
        .take(1024)
        .collect();
    let batch = pb::AgentMessage {
        seq: 9,
        body: Some(pb::agent_message::Body::ProbeResults(pb::ProbeResults {
            plan_version: 1,
            windows: targets
                .iter()
                .map(|t| sim::window("sim-0000", t, 10, unix_nanos(), 1))
                .collect(),
            names: Vec::new(),
        })),
    };
    let bytes = prost::Message::encode_to_vec(&batch);
    // Whole blocks of rounds: the kernel updates a thread's CPU time at
    // ticks and switches, too coarse for one batch.
    const ROUNDS: u32 = 100;
    let c0 = thread_cpu();
    let decoded = (0..ROUNDS)
        .map(|_| <pb::AgentMessage as prost::Message>::decode(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()?;
    let c1 = thread_cpu();
    for m in &decoded {
        let Some(pb::agent_message::Body::ProbeResults(r)) = &m.body else {
            bail!("calibration batch did not decode to results");
        };
        let v = reachmap_collector::validate::probe::results(r)
            .map_err(|e| anyhow::anyhow!("calibration batch rejected: {e:?}"))?;
        std::hint::black_box(v);
    }
    let c2 = thread_cpu();
    let (decode, validate) = (c1 - c0, c2 - c1);
    let per = targets.len() as u32 * ROUNDS;
    Ok((decode / per, validate / per))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    loopback_host(&args.collector)?;
    if !args.http.ip().is_loopback() {
        bail!("--http {} is not a loopback address", args.http);
    }
    let base = args.address_base;
    let in_test_range = base.octets()[0] == 198 && (base.octets()[1] & 0xfe) == 18;
    if !(base.is_loopback() || in_test_range) {
        bail!("--address-base {base} is neither in 198.18.0.0/15 nor in 127.0.0.0/8");
    }
    if args.agents == 0 || args.agents > 60_000 {
        bail!("--agents {} is out of range (1..=60000)", args.agents);
    }
    if let Some(limit) = open_files_limit()
        && limit < args.agents as u64 + 256
    {
        bail!(
            "open files limit is {limit}: {} agent connections need more (ulimit -n {})",
            args.agents,
            args.agents * 2 + 256
        );
    }
    let grpc: SocketAddr = args
        .collector
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--collector")?;
    let spawned = match &args.spawn {
        Some(bin) => Some(spawn_collector(&args, bin, grpc)?),
        None => None,
    };
    // Wait for the collector's HTTP side.
    let mut buf = Vec::new();
    let ready_by = Instant::now() + Duration::from_secs(15);
    loop {
        match http::get(args.http, "/healthz", &mut buf) {
            Ok((f, _)) if f.status == 200 => break,
            _ if Instant::now() > ready_by => {
                bail!("the collector at {} is not answering", args.http)
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let pid = args
        .pid
        .or_else(|| spawned.as_ref().map(|s| s.child.id()))
        .or_else(|| find_collector(grpc.port()));
    let pid_s = pid.map(|p| p.to_string());
    let coll = || pid_s.as_deref().and_then(procstat::sample);
    let own = || procstat::sample("self");
    if pid.is_none() {
        println!("warning: collector pid unknown (--pid): no collector CPU or memory figures");
    }

    let calibration = tokio::task::spawn_blocking({
        let n = args.agents;
        move || calibrate(n)
    })
    .await??;
    let idle = (coll(), own());
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        agents: (0..args.agents).map(|_| AgentShared::default()).collect(),
        first_error: std::sync::Mutex::new(None),
        started: Instant::now(),
    });
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let pace = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    let base_n = u32::from(base);
    for i in 0..args.agents {
        let sim = agent::Sim {
            index: i,
            name: format!("sim-{i:04}"),
            address: Ipv4Addr::from(base_n + 1 + i as u32),
            collector: args.collector.clone(),
            heartbeat: args.heartbeat.into(),
        };
        tasks.spawn(agent::run(sim, shared.clone(), cancel.clone()));
        tokio::time::sleep(pace).await;
    }
    let c = &shared.counters;
    let n = args.agents;
    let deadline = Instant::now() + Duration::from_secs(120);
    let t_connected = loop {
        if c.connected.load(Ordering::Relaxed) == n {
            break shared.started.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} agents connected in 120s (first error: {:?})",
                c.connected.load(Ordering::Relaxed),
                shared.first_error.lock().ok().and_then(|e| e.clone())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Converged: every agent has a plan naming every peer, and no plan has
    // arrived for 2 s.
    let t_converged = loop {
        let all = shared
            .agents
            .iter()
            .all(|a| a.plan_targets.load(Ordering::Relaxed) + 1 >= n);
        let quiet = shared.started.elapsed().as_millis() as u64
            > c.last_plan_ms.load(Ordering::Relaxed) + 2000;
        if all && quiet {
            break Duration::from_millis(c.last_plan_ms.load(Ordering::Relaxed));
        }
        if Instant::now() > deadline {
            let planned = shared
                .agents
                .iter()
                .filter(|a| a.plan_targets.load(Ordering::Relaxed) + 1 >= n)
                .count();
            let mut sizes: Vec<usize> = shared
                .agents
                .iter()
                .map(|a| a.plan_targets.load(Ordering::Relaxed))
                .collect();
            sizes.sort_unstable();
            bail!(
                "plans did not converge in 120s: {planned} of {n} agents have a full plan (targets min {} max {}); with --address-base in 127.0.0.0/8 the collector plans nothing",
                sizes.first().unwrap_or(&0),
                sizes.last().unwrap_or(&0)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let plans_at_convergence = (
        c.plans.load(Ordering::Relaxed),
        c.plan_bytes.load(Ordering::Relaxed),
    );
    let converged = (coll(), own());
    let targets: Vec<usize> = shared
        .agents
        .iter()
        .map(|a| a.plan_targets.load(Ordering::Relaxed))
        .collect();
    let interval = Duration::from_millis(c.plan_interval_ms.load(Ordering::Relaxed).max(100));
    println!(
        "ramp-up: {n} streams in {:.1}s, plans converged at {:.1}s; warming up for one interval ({})",
        t_connected.as_secs_f64(),
        t_converged.as_secs_f64(),
        humantime::format_duration(interval)
    );
    // Every agent sends at least one batch with its final plan.
    tokio::time::sleep(interval + Duration::from_secs(2)).await;

    // Ingest only.
    let duration: Duration = args.duration.into();
    let ingest_for = (duration / 3).max(interval);
    let w0 = c.windows.load(Ordering::Relaxed);
    let b0 = c.result_bytes.load(Ordering::Relaxed);
    let ingest_start = (coll(), own());
    let addr = args.http;
    let probe_until = Instant::now() + ingest_for;
    let ingest_queue = tokio::task::spawn_blocking(move || {
        let mut s = Series::default();
        let mut buf = Vec::new();
        while Instant::now() < probe_until {
            s.add(measured(None, || {
                http_get(addr, "/api/v1/nodes/loadgen-queue-probe", &mut buf, 404)
            }));
            std::thread::sleep(Duration::from_millis(250));
        }
        s
    })
    .await?;
    let ingest_end = (coll(), own());
    let w1 = c.windows.load(Ordering::Relaxed);
    let b1 = c.result_bytes.load(Ordering::Relaxed);

    // Queries while ingesting.
    let query_for = duration
        .saturating_sub(ingest_for)
        .max(Duration::from_secs(5));
    let qargs = args.clone();
    let until = Instant::now() + query_for;
    let query_started = Instant::now();
    let rt = tokio::runtime::Handle::current();
    let qpid = pid_s.clone();
    let (rounds, buf) = tokio::task::spawn_blocking(move || {
        let mut buf = buf;
        let r = query_rounds(&qargs, qpid.as_deref(), &rt, until, &mut buf);
        (r, buf)
    })
    .await?;
    let query_end = (coll(), own());
    let query_secs = query_started.elapsed().as_secs_f64();
    let w2 = c.windows.load(Ordering::Relaxed);

    // The matrix against what the agents sent.
    let fetch_shared = shared.clone();
    let (check_report, fetch) = tokio::task::spawn_blocking(move || {
        let mut buf = buf;
        let (f, start) = http::get(addr, "/api/v1/matrix?detail=full", &mut buf)?;
        let sends = |src: &str| -> Vec<i64> {
            src.strip_prefix("sim-")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| fetch_shared.agents.get(i))
                .and_then(|a| a.sends.lock().ok().map(|s| s.iter().copied().collect()))
                .unwrap_or_default()
        };
        let r = check::check(&buf[start..], sends)?;
        anyhow::Ok((r, f))
    })
    .await??;
    let end = (coll(), own());

    cancel.cancel();
    let stop_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::timeout_at(stop_by, tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}

    // ------------------------------------------------------------ report
    let sum_t: usize = targets.iter().sum();
    let (tmin, tmax) = (
        targets.iter().min().copied().unwrap_or(0),
        targets.iter().max().copied().unwrap_or(0),
    );
    println!();
    println!("== reachmap collector load: {n} simulated agents ==");
    println!(
        "setup: one HTTP/2 connection and one Connect stream per agent; probe interval {}; heartbeat {}",
        humantime::format_duration(interval),
        humantime::format_duration(args.heartbeat.into())
    );
    println!(
        "plans: {} targets per agent (min {tmin}, max {tmax}) = {sum_t} matrix cells; {} plans ({:.1} MB) pushed during ramp-up, {} in total",
        sum_t / n.max(1),
        plans_at_convergence.0,
        plans_at_convergence.1 as f64 / 1e6,
        c.plans.load(Ordering::Relaxed)
    );
    let ingest_secs = ingest_end.1.map_or(ingest_for.as_secs_f64(), |e| {
        ingest_start.1.map_or(ingest_for.as_secs_f64(), |s| {
            e.at.duration_since(s.at).as_secs_f64()
        })
    });
    println!();
    println!("ingest (no queries, {:.0}s)", ingest_secs);
    println!(
        "  sent       {:.0} windows/s in {:.0} batches/s ({:.1} MB/s of protobuf)",
        (w1 - w0) as f64 / ingest_secs,
        n as f64 / interval.as_secs_f64(),
        (b1 - b0) as f64 / ingest_secs / 1e6
    );
    if let (Some(a), Some(b)) = (ingest_start.0, ingest_end.0) {
        println!(
            "  collector  CPU {:.1}% of one core ({:.2} µs per window); RSS {:.0} MiB",
            procstat::cpu_pct(&a, &b),
            procstat::cpu_seconds(&a, &b) * 1e6 / (w1 - w0).max(1) as f64,
            mib(b.rss_kib)
        );
    }
    println!(
        "  of which, measured in this process: protobuf decode {:.2} µs, validate {:.2} µs per window",
        calibration.0.as_secs_f64() * 1e6,
        calibration.1.as_secs_f64() * 1e6
    );
    if let (Some(a), Some(b)) = (ingest_start.1, ingest_end.1) {
        println!(
            "  loadgen    CPU {:.1}% of one core",
            procstat::cpu_pct(&a, &b)
        );
    }
    println!(
        "  state-task queueing probe (404 through the state task): {}",
        summary(ingest_queue.samples.iter().map(|t| t.total).collect())
    );
    let share = match (ingest_start.0, ingest_end.0) {
        (Some(a), Some(b)) => procstat::cpu_pct(&a, &b) / 100.0,
        _ => 0.0,
    };
    println!();
    println!(
        "queries while ingesting ({query_secs:.0}s, {:.0} windows/s sent)",
        (w2 - w1) as f64 / query_secs
    );
    rounds
        .queue_probe
        .print("state-task queueing probe (404)", false, share);
    rounds
        .full
        .print("GET /api/v1/matrix (every cell)", true, share);
    rounds
        .detail
        .print("GET /api/v1/matrix?detail=full", true, share);
    rounds
        .port
        .print("GET /api/v1/matrix?port=7442", true, share);
    rounds.metrics.print("GET /metrics", true, share);
    rounds
        .why
        .print("GET /api/v1/why (5 pairs a round)", true, share);
    for (name, series) in [
        ("every cell", &rounds.full),
        ("?detail=full", &rounds.detail),
        ("?port=7442", &rounds.port),
        ("/metrics", &rounds.metrics),
    ] {
        println!(
            "  state task busy during {name} (longest wait of a 404 probe started meanwhile): {}",
            summary(rounds.state_task_busy(series))
        );
    }
    match &rounds.loopback {
        Some(Ok(d)) => println!(
            "  loopback TCP copy of the same {:.1} MB from memory, read the same way: {:.1} ms",
            rounds
                .full
                .samples
                .first()
                .map_or(0.0, |t| t.bytes as f64 / 1e6),
            d.as_secs_f64() * 1e3
        ),
        Some(Err(e)) => println!("  loopback TCP copy failed: {e:#}"),
        None => {}
    }
    rounds.grpc.print(
        "GetMatrix port=7442 over gRPC (connected; response received and decoded)",
        false,
        share,
    );
    if args.cli.exists() {
        rounds.cli.print(
            "reachmap matrix --port 7442 --format json (gRPC, process run to exit)",
            false,
            share,
        );
    } else {
        println!(
            "  reachmap CLI not found at {}: not timed",
            args.cli.display()
        );
    }
    if let (Some(a), Some(b)) = (ingest_end.0, query_end.0) {
        println!(
            "  collector  CPU {:.1}% of one core during the queries",
            procstat::cpu_pct(&a, &b)
        );
    }
    if let (Some(a), Some(b)) = (ingest_end.1, query_end.1) {
        println!(
            "  loadgen    CPU {:.1}% of one core during the queries (the reading client included)",
            procstat::cpu_pct(&a, &b)
        );
    }
    println!();
    println!("collector memory");
    let row = |label: &str, s: &Option<procstat::Sample>| {
        if let Some(s) = s {
            println!(
                "  {label:<26} RSS {:7.1} MiB   peak {:7.1} MiB   threads {}",
                mib(s.rss_kib),
                mib(s.hwm_kib),
                s.threads
            );
        }
    };
    row("idle, no agents", &idle.0);
    row("plans converged", &converged.0);
    row("after ingest only", &ingest_end.0);
    row("after the queries", &query_end.0);
    row("end", &end.0);
    if let (Some(a), Some(b)) = (idle.0, end.0) {
        println!(
            "  collector CPU over the whole run: {:.1} s",
            procstat::cpu_seconds(&a, &b)
        );
    }
    if let (Some(a), Some(b)) = (idle.1, end.1) {
        println!(
            "  loadgen CPU over the whole run:   {:.1} s (RSS {:.0} MiB)",
            procstat::cpu_seconds(&a, &b),
            mib(b.rss_kib)
        );
    }
    println!();
    let r = &check_report;
    println!(
        "matrix check (one more GET /api/v1/matrix: {:.0} ms, {:.1} MB)",
        fetch.total.as_secs_f64() * 1e3,
        fetch.body_len as f64 / 1e6
    );
    println!(
        "  nodes {}  cells {} (tcp {}, icmp {}), per source {}..{}",
        r.nodes, r.cells, r.tcp_cells, r.icmp_cells, r.min_row, r.max_row
    );
    println!(
        "  states ok {} degraded {} failing {} unknown {}; never reported {}",
        r.states[0], r.states[1], r.states[2], r.unknown, r.never_reported
    );
    println!(
        "  cells unlike what their agent sent: {}{}",
        r.wrong,
        r.first_wrong
            .as_ref()
            .map(|w| format!(" (first: {w})"))
            .unwrap_or_default()
    );
    println!(
        "  sum of `sent`: {} (= {} windows × 10)",
        r.sent_total,
        r.sent_total / 10
    );
    println!(
        "  cells showing their agent's latest batch {}, the one before {} (in flight), older {}",
        r.latest, r.previous, r.older
    );
    let lag = |p: f64| sim::percentile(&r.lag_ms, p).unwrap_or(f64::NAN);
    println!(
        "  ingest lag (batch handed to the stream → applied): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lag(50.0),
        lag(99.0),
        r.lag_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!();
    println!(
        "streams: {} sessions, {} stream errors{}; {} batches superseded before sending; {} acks, {} time probes answered, {} state-change events, {} resyncs, {} commands",
        c.sessions.load(Ordering::Relaxed),
        c.stream_errors.load(Ordering::Relaxed),
        shared
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        c.superseded.load(Ordering::Relaxed),
        c.acks.load(Ordering::Relaxed),
        c.time_probes.load(Ordering::Relaxed),
        c.events.load(Ordering::Relaxed),
        c.resyncs.load(Ordering::Relaxed),
        c.commands.load(Ordering::Relaxed)
    );
    let full_p = {
        let mut v: Vec<Duration> = rounds.full.samples.iter().map(|t| t.total).collect();
        v.sort();
        sim::percentile(&v, 50.0)
    };
    if let Some(m) = full_p {
        println!(
            "/api/v1/matrix median {:.0} ms: {} the 200 ms goal",
            m.as_secs_f64() * 1e3,
            if m <= Duration::from_millis(200) {
                "meets"
            } else {
                "MISSES"
            }
        );
    }
    drop(spawned);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(node: &str, kind: pb::ProbeKind) -> pb::ProbeTarget {
        pb::ProbeTarget {
            id: 7,
            node: node.into(),
            address: "198.19.0.9".into(),
            port: if kind == pb::ProbeKind::Tcp { 7442 } else { 0 },
            kind: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn windows_pass_the_collectors_validation_and_carry_their_class() {
        let mut seen = [0usize; 3];
        for i in 0..2000 {
            for kind in [pb::ProbeKind::Tcp, pb::ProbeKind::Icmp] {
                let t = target(&format!("sim-{i:04}"), kind);
                let w = sim::window("sim-9999", &t, 10, 1_700_000_000_000_000_000, 3);
                let v = reachmap_collector::validate::probe::window("w", &w)
                    .expect("the collector accepts every simulated window");
                let (class, _) = sim::class("sim-9999", &t.node, t.port, sim::kind_name(t.kind));
                let i = match class {
                    sim::Class::Ok => 0,
                    sim::Class::Degraded => 1,
                    sim::Class::Failing => 2,
                };
                seen[i] += 1;
                assert_eq!(v.sent, 10);
                assert_eq!(
                    v.last_failure.map(|(o, _)| o.as_str()),
                    sim::failure(class, sim::kind_name(t.kind)).map(|o| match o {
                        pb::ProbeOutcome::Refused => "refused",
                        _ => "timeout",
                    })
                );
            }
        }
        // 97 / 2 / 1 percent, roughly.
        assert!(seen[0] > 3800 && seen[1] > 40 && seen[2] > 15, "{seen:?}");
    }

    #[test]
    fn proc_stat_fields() {
        let stat = "1234 (reachmap (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(procstat::parse_stat(stat), Some(325));
        assert_eq!(procstat::parse_stat("garbage"), None);
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t3\n";
        assert_eq!(procstat::status_field(status, "VmRSS"), Some(1024));
        assert_eq!(procstat::status_field(status, "VmHWM"), Some(2048));
        assert_eq!(procstat::status_field(status, "Threads"), Some(3));
        assert_eq!(procstat::status_field(status, "VmSwap"), None);
    }

    #[test]
    fn http_responses() {
        let mut b = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec();
        assert_eq!(http::parse(&mut b).expect("ok"), (200, 38, 5));
        let mut b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n"
            .to_vec();
        let (status, start, len) = http::parse(&mut b).expect("chunked");
        assert_eq!((status, len), (200, 5));
        assert_eq!(&b[start..], b"hello");
        let mut short = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello".to_vec();
        assert!(http::parse(&mut short).is_err());
        assert!(http::parse(&mut b"HTTP/1.1 200".to_vec()).is_err());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(sim::percentile(&v, 50.0), Some(50));
        assert_eq!(sim::percentile(&v, 99.0), Some(99));
        assert_eq!(sim::percentile(&v, 100.0), Some(100));
        assert_eq!(sim::percentile(&[5u32], 99.0), Some(5));
        assert_eq!(sim::percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn matrix_check_counts_states_and_batches() {
        let (class, _) = sim::class("sim-0000", "sim-0001", 7442, "tcp");
        let loss = match class {
            sim::Class::Ok => 0.0,
            sim::Class::Degraded => 0.2,
            sim::Class::Failing => 1.0,
        };
        let failure = match sim::failure(class, "tcp") {
            None => "null".to_string(),
            Some(pb::ProbeOutcome::Refused) => "\"refused\"".into(),
            Some(_) => "\"timeout\"".into(),
        };
        let body = format!(
            r#"{{"nodes":["sim-0000","sim-0001"],"cells":[
            {{"src":"sim-0000","dst":"sim-0001","port":7442,"kind":"tcp","service":null,"state":"{}","loss":{loss},"rtt_ms":0.5,"rtt_p99_ms":0.9,"failure":{failure},"sent":10,"address":"198.19.0.2","updated":1500}},
            {{"src":"sim-0001","dst":"sim-0000","port":7442,"kind":"tcp","service":null,"state":"unknown","loss":0,"rtt_ms":null,"rtt_p99_ms":null,"failure":null,"sent":0,"address":"198.19.0.1","updated":0}}]}}"#,
            class.state()
        );
        let r = check::check(body.as_bytes(), |src| {
            if src == "sim-0000" {
                vec![1000, 1400, 2000]
            } else {
                vec![]
            }
        })
        .expect("parses");
        assert_eq!((r.nodes, r.cells, r.tcp_cells), (2, 2, 2));
        assert_eq!(r.wrong, 0, "{:?}", r.first_wrong);
        assert_eq!((r.unknown, r.never_reported), (1, 1));
        // Updated at 1500: the batch sent at 1400, one before the latest.
        assert_eq!((r.latest, r.previous, r.older), (0, 1, 1));
        assert_eq!(r.lag_ms, vec![100.0 / 1e6]);
        assert_eq!((r.min_row, r.max_row), (1, 1));
    }
}

/// The name of simulated agent `i`.
fn node_name(i: usize) -> String {
    format!("sim-{i:04}")
}
