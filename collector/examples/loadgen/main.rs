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

mod agent;
mod calibrate;
mod check;
mod collector;
mod http;
mod procstat;
mod queries;
mod report;
mod sim;
#[cfg(test)]
mod tests;
mod tls;
mod whatif;

use calibrate::calibrate;
use collector::{find_collector, loopback_host, open_files_limit, spawn_collector};
use queries::{Series, http_get, measured, query_rounds};

/// Load the collector with simulated agents and measure it.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Simulated agents
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The collector's gRPC URL (loopback only; http:// with --insecure);
    /// a comma list gives every agent others to fail over to, in order
    #[arg(long, default_value = "https://127.0.0.1:7440")]
    collector: String,
    /// The first agent is sim-N: two load generators on two collectors
    /// sharing a store keep their agents apart
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// An argument for a spawned collector (repeat for several)
    #[arg(long, allow_hyphen_values = true)]
    collector_arg: Vec<String>,
    /// At the end, kill -9 the collector (--pid) and time the agents' move
    /// to the next collector of --collector
    #[arg(long)]
    failover: bool,
    /// Plaintext agents and queries against an --insecure collector (to
    /// compare with the default, mutual TLS)
    #[arg(long)]
    insecure: bool,
    /// The data directory of a collector not spawned here, whose CA issues
    /// the simulated agents' certificates
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    /// Host events the whole fleet sends a second (spread over the agents),
    /// beside the probe results: each is acked once the store committed it
    #[arg(long, default_value_t = 0.0)]
    events_per_second: f64,
    /// Stage a partition: the first half of the agents and the second half
    /// report every cell between them failing (findings are timed either way)
    #[arg(long)]
    partition: bool,
    /// Label the agents `zone=zone-K` over this many zones, and plan sparse
    /// (a spawned collector keeps its default --full-mesh-max); 0: one
    /// zone, full mesh
    #[arg(long, default_value_t = 0)]
    zones: usize,
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
    events_acked: AtomicU64,
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
    /// Why streams ended, by the error's text: how many of each.
    errors: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    started: Instant,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.partition {
        sim::PARTITION_OF.store(args.agents, Ordering::Relaxed);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    let collectors: Vec<String> = args.collector.split(',').map(str::to_string).collect();
    for c in &collectors {
        loopback_host(c)?;
    }
    args.collector = collectors[0].clone();
    if args.failover && (collectors.len() < 2 || args.spawn.is_some()) {
        bail!(
            "--failover needs a collector not spawned here and another to move to (--collector A,B)"
        );
    }
    NAME_OFFSET.store(args.first_index, Ordering::Relaxed);
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
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--collector")?;
    if args.insecure != args.collector.starts_with("http://") {
        bail!("--collector must be https:// (http:// with --insecure)");
    }
    let mut spawned = match &args.spawn {
        Some(bin) => Some(spawn_collector(&args, bin, grpc)?),
        None => None,
    };
    let mut node_tls: Vec<Option<Arc<rustls::ClientConfig>>> = vec![None; args.agents];
    if !args.insecure {
        let data = spawned
            .as_ref()
            .map(|s| s.dir.join("data"))
            .or_else(|| args.data_dir.clone())
            .context("--data-dir: the collector's data directory (its CA issues the agents' certificates), or --spawn, or --insecure")?;
        let work = spawned
            .as_ref()
            .map(|s| s.dir.clone())
            .unwrap_or_else(std::env::temp_dir);
        let issued_at = Instant::now();
        let n = args.agents;
        let creds =
            tokio::task::spawn_blocking(move || tls::make(&data, n, node_name, &work)).await??;
        println!(
            "mutual TLS: {n} node certificates issued in {:.2}s (key, CSR, check, sign each)",
            issued_at.elapsed().as_secs_f64()
        );
        for (slot, c) in node_tls.iter_mut().zip(&creds.nodes) {
            *slot = Some(c.clone());
        }
        let _ = tls::CREDS.set(creds);
    }
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
        errors: std::sync::Mutex::default(),
        started: Instant::now(),
    });
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let pace = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    let base_n = u32::from(base);
    for (i, tls) in node_tls.into_iter().enumerate() {
        let sim = agent::Sim {
            index: i,
            name: node_name(i),
            address: Ipv4Addr::from(base_n + 1 + i as u32),
            collectors: collectors.clone(),
            heartbeat: args.heartbeat.into(),
            tls,
            events_per_second: args.events_per_second / args.agents as f64,
            zone: (args.zones > 0).then(|| format!("zone-{:02}", i % args.zones)),
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
    // Converged: every agent has a plan naming every peer (a sparse plan:
    // some), and no plan has arrived for 2 s (a sparse fleet: a probe
    // interval).
    let full = if args.zones == 0 { n } else { 2 };
    let t_converged = loop {
        let all = shared
            .agents
            .iter()
            .all(|a| a.plan_targets.load(Ordering::Relaxed) + 1 >= full);
        // Quiet for an interval: a planning pass of a large fleet takes
        // seconds, and plans arrive in bursts between passes.
        let quiet_ms = if args.zones == 0 {
            2000
        } else {
            c.plan_interval_ms.load(Ordering::Relaxed).max(2000)
        };
        let quiet = shared.started.elapsed().as_millis() as u64
            > c.last_plan_ms.load(Ordering::Relaxed) + quiet_ms;
        if all && quiet {
            break Duration::from_millis(c.last_plan_ms.load(Ordering::Relaxed));
        }
        if Instant::now() > deadline {
            let planned = shared
                .agents
                .iter()
                .filter(|a| a.plan_targets.load(Ordering::Relaxed) + 1 >= full)
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
    // Every cell's first report is a state change the store writes: ingest
    // is measured once that backlog — the queue, and the cells the matrix
    // owes the store past it — has drained, not while it drains.
    let addr = args.http;
    let drained = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut queued = None;
        while started.elapsed() < Duration::from_secs(180) {
            // Rows queued, and cells the matrix owes past the queue.
            queued = http::store_queue(addr, &mut buf).ok();
            if queued == Some(0) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (started.elapsed(), queued)
    })
    .await?;
    println!(
        "store: the ramp-up's writes drained {:.1}s after the warm-up (queued and owed now {})",
        drained.0.as_secs_f64(),
        drained.1.map_or("unknown".to_string(), |q| q.to_string())
    );

    // Ingest only.
    let duration: Duration = args.duration.into();
    let ingest_for = (duration / 3).max(interval);
    let w0 = c.windows.load(Ordering::Relaxed);
    let b0 = c.result_bytes.load(Ordering::Relaxed);
    let (ev0, ea0) = (
        c.events.load(Ordering::Relaxed),
        c.events_acked.load(Ordering::Relaxed),
    );
    let ingest_started = Instant::now();
    let ingest_start = (coll(), own());
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
    let ingest_secs = ingest_started.elapsed().as_secs_f64();
    let matrix_heap = {
        let addr = args.http;
        tokio::task::spawn_blocking(move || {
            http::metric(addr, "reachmap_matrix_heap_bytes", &mut Vec::new()).ok()
        })
        .await?
    };
    if args.events_per_second > 0.0 {
        let sent = c.events.load(Ordering::Relaxed) - ev0;
        let acked = c.events_acked.load(Ordering::Relaxed) - ea0;
        // Sustained means the backlog (sent, not yet acked) does not grow
        // over the window; a rate alone can hide a warm-up backlog drained.
        let backlog_end = c.events.load(Ordering::Relaxed) - c.events_acked.load(Ordering::Relaxed);
        println!(
            "events: {:.0}/s sent, {:.0}/s acked after the store committed them, over {:.0}s of ingest; not yet acked {} at the start, {} at the end",
            sent as f64 / ingest_secs,
            acked as f64 / ingest_secs,
            ingest_secs,
            ev0 - ea0,
            backlog_end
        );
    }
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
        let sends = |src: &str| -> Option<Vec<i64>> {
            let agent = src
                .strip_prefix("sim-")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| i.checked_sub(NAME_OFFSET.load(Ordering::Relaxed)))
                .and_then(|i| fetch_shared.agents.get(i))?;
            Some(
                agent
                    .sends
                    .lock()
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default(),
            )
        };
        let r = check::check(&buf[start..], sends)?;
        anyhow::Ok((r, f))
    })
    .await??;
    let end = (coll(), own());

    // Every agent reconnecting at once: the collector is killed and
    // started again on the same data directory.
    let storm = match spawned.as_mut() {
        Some(sp) => {
            sp.restart()?;
            let restarted = Instant::now();
            let pid = sp.child.id().to_string();
            // The streams of the dead collector end first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let by = Instant::now() + Duration::from_secs(60);
            loop {
                if c.connected.load(Ordering::Relaxed) == n {
                    let cpu = procstat::sample(&pid).map(|s| s.cpu_ticks);
                    break Some((restarted.elapsed(), cpu));
                }
                if Instant::now() > by {
                    println!(
                        "reconnect storm: only {} of {n} back within 60s",
                        c.connected.load(Ordering::Relaxed)
                    );
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        None => None,
    };
    let failover = match (args.failover, pid) {
        (true, Some(pid)) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let killed = Instant::now();
            let by = Instant::now() + Duration::from_secs(60);
            let mut first_gone = None;
            loop {
                let now_connected = c.connected.load(Ordering::Relaxed);
                if first_gone.is_none() && now_connected < n {
                    first_gone = Some(killed.elapsed());
                }
                if first_gone.is_some() && now_connected == n {
                    break Some((first_gone, killed.elapsed()));
                }
                if Instant::now() > by {
                    println!(
                        "failover: only {now_connected} of {n} agents on another collector within 60s"
                    );
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        (true, None) => bail!("--failover needs the collector's pid (--pid)"),
        _ => None,
    };

    let insecure = args.insecure;
    cancel.cancel();
    let stop_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::timeout_at(stop_by, tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}

    report::print(report::Run {
        args,
        shared,
        n,
        targets,
        interval,
        plans_at_convergence,
        calibration,
        idle,
        converged,
        ingest_start,
        ingest_end,
        matrix_heap,
        query_end,
        end,
        ingest_for,
        ingest_queue,
        w0,
        w1,
        w2,
        b0,
        b1,
        query_secs,
        rounds,
        check_report,
        fetch,
    });
    if let Some((back, cpu)) = storm {
        let hz = procstat::TICKS_PER_SECOND;
        let cpu_s = cpu.map(|t| t as f64 / hz);
        println!(
            "reconnect storm ({}): {n} agents back {:.2}s after the collector was killed and restarted; the new collector's CPU until then {} ({} per agent: handshake, hello, snapshot, plan)",
            if insecure { "plaintext" } else { "mutual TLS" },
            back.as_secs_f64(),
            cpu_s.map_or("?".into(), |s| format!("{s:.2}s")),
            cpu_s.map_or("?".into(), |s| format!("{:.2} ms", s * 1000.0 / n as f64)),
        );
    }
    if let Some((gone, back)) = failover {
        println!(
            "failover: {n} agents on {} {:.2}s after a kill -9 of {} (their streams ended after {:.2}s)",
            collectors[1],
            back.as_secs_f64(),
            collectors[0],
            gone.map_or(0.0, |g| g.as_secs_f64()),
        );
    }
    drop(spawned);
    Ok(())
}

/// Added to every agent's index in its name (`--first-index`).
static NAME_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// The name of simulated agent `i`.
fn node_name(i: usize) -> String {
    format!("sim-{:04}", i + NAME_OFFSET.load(Ordering::Relaxed))
}
