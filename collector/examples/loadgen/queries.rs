//! The queries timed while the agents ingest: HTTP, gRPC and the CLI, each
//! with the state task's queueing measured alongside.

use crate::report::summary;
use crate::{Args, PROBE_PORT, http, node_name, pb, procstat};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One request's figures.
pub struct Timed {
    pub start: Instant,
    pub first: Duration,
    pub total: Duration,
    pub bytes: usize,
    /// Collector CPU (all threads) during the request, and the time its
    /// threads were runnable but waiting for a core (other processes).
    pub cpu: Option<Duration>,
    pub waited: Option<Duration>,
}

#[derive(Default)]
pub struct Series {
    pub samples: Vec<Timed>,
    pub errors: Vec<String>,
}

impl Series {
    pub fn add(&mut self, r: anyhow::Result<Timed>) {
        match r {
            Ok(t) => self.samples.push(t),
            Err(e) => self.errors.push(format!("{e:#}")),
        }
    }

    pub fn of(&self, f: impl Fn(&Timed) -> Option<Duration>) -> Vec<Duration> {
        self.samples.iter().filter_map(f).collect()
    }

    /// `ingest_share`: the collector's CPU share (of one core) for ingest
    /// alone, subtracted to show what a request itself cost.
    pub fn print(&self, name: &str, with_first_byte: bool, ingest_share: f64) {
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
pub fn measured(
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

pub fn http_get(
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

/// What a findings answer says of itself: when the copy of the fleet it
/// was made from was taken, and how long making it took.
pub struct Made {
    pub as_of: i64,
    pub compute: Duration,
}

/// `/api/v1/findings`, timed, and what the answer says of itself.
pub fn findings_get(
    addr: SocketAddr,
    buf: &mut Vec<u8>,
    made: &mut Vec<Made>,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let (f, body) = http::get(addr, "/api/v1/findings", buf)?;
    if f.status != 200 {
        bail!("/api/v1/findings: status {}", f.status);
    }
    let v: serde_json::Value = serde_json::from_slice(&buf[body..body + f.body_len])
        .context("/api/v1/findings: the body is not JSON")?;
    let as_of = v["as_of"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .context("/api/v1/findings: no as_of")?;
    let micros = v["compute_micros"]
        .as_u64()
        .context("/api/v1/findings: no compute_micros")?;
    made.push(Made {
        as_of,
        compute: Duration::from_micros(micros),
    });
    Ok((f.first_byte, f.total, f.body_len))
}

pub fn cli_matrix(cli: &PathBuf, url: &str) -> anyhow::Result<(Duration, Duration, usize)> {
    let auth: Vec<String> = match crate::tls::CREDS.get() {
        Some(c) => vec!["--credentials".into(), c.bundle.display().to_string()],
        None => vec!["--insecure".into()],
    };
    let start = Instant::now();
    let out = std::process::Command::new(cli)
        .args(["--collector", url])
        .args(&auth)
        .args(["matrix", "--port", "7442", "--format", "json"])
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
pub fn grpc_matrix(
    rt: &tokio::runtime::Handle,
    url: &str,
    port: u32,
) -> anyhow::Result<(Duration, Duration, usize)> {
    rt.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?;
        let ch = match crate::tls::CREDS.get() {
            Some(c) => reachmap_tls::connect(endpoint, c.viewer_h2.clone()).await?,
            None => endpoint.connect().await?,
        };
        let mut q = pb::query_client::QueryClient::new(ch).max_decoding_message_size(1 << 30);
        let start = Instant::now();
        let m = q
            .get_matrix(pb::MatrixRequest {
                port,
                ..Default::default()
            })
            .await?
            .into_inner();
        let total = start.elapsed();
        Ok((total, total, prost::Message::encoded_len(&m)))
    })
}

/// The same number of bytes from memory over a loopback TCP connection,
/// read the same way: what transfer alone costs on this machine now.
pub fn loopback_copy(bytes: usize, buf: &mut Vec<u8>) -> anyhow::Result<Duration> {
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
pub struct Rounds {
    pub queue_probe: Series,
    pub full: Series,
    pub detail: Series,
    pub port: Series,
    /// `?view=zones`: the zone × zone grid.
    pub zones: Series,
    /// `?state=failing`: the failing cells only.
    pub failing: Series,
    pub metrics: Series,
    /// `reachmap why` over HTTP, for pairs spread over the fleet.
    pub why: Series,
    /// `/api/v1/findings`: the whole fleet's findings.
    pub findings: Series,
    /// What each findings answer said of itself.
    pub findings_made: Vec<Made>,
    /// `what-if` of a 5,000-rule ruleset for one agent, over gRPC.
    pub what_if: Series,
    pub grpc: Series,
    pub cli: Series,
    pub loopback: Option<anyhow::Result<Duration>>,
    /// Back-to-back 404 probes from another thread: (start, latency).
    pub watch: Vec<(Instant, Duration)>,
}

impl Rounds {
    /// For each request of `s`: the longest a 404 probe started while it
    /// ran waited — how long the state task was busy with it.
    pub fn state_task_busy(&self, s: &Series) -> Vec<Duration> {
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
pub const SLOW_ROUNDS: usize = 3;

/// Requests one after another until `until`, pausing between rounds, with
/// a watcher probing the state task meanwhile.
pub fn query_rounds(
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
        r.zones.add(measured(pid, || {
            http_get(addr, "/api/v1/matrix?view=zones", buf, 200)
        }));
        r.failing.add(measured(pid, || {
            http_get(addr, "/api/v1/matrix?state=failing", buf, 200)
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
        r.findings.add(measured(pid, || {
            findings_get(addr, buf, &mut r.findings_made)
        }));
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let proposed = crate::whatif::ruleset(crate::whatif::RULES);
    for round in 0..SLOW_ROUNDS {
        let node = node_name((round * 97) % args.agents.max(1));
        r.what_if.add(measured(pid, || {
            crate::whatif::grpc_what_if(rt, &args.collector, &node, &proposed)
        }));
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
