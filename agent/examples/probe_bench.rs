//! TCP connect probes per second and per CPU-second: the real prober
//! (`Prober::run`, `probe_once`) against Prometheus blackbox_exporter probing
//! the same targets.
//!
//!   cargo run --release -p reachmap-agent --example probe_bench -- \
//!       --targets 5000 --seconds 20
//!
//! As root it first moves into a fresh network namespace (loopback only), so
//! every probe stays on 127.0.0.1 and no TIME_WAIT is left in the host's.
//! Half of the `--ports` listen (a child process accepting and closing, so its
//! CPU is not counted as the prober's), half refuse. Each of the `--targets`
//! targets is one of these ports; the prober probes each once per interval.
//! Correctness: every probe of a listening port must be `open`, every probe
//! of the others `refused`.
//!
//! blackbox_exporter (`apt-get install prometheus-blackbox-exporter`) then
//! gets `/probe?module=tcp_connect&target=127.0.0.1:P` requests over the same
//! ports from `--clients` keep-alive connections, as fast as it answers; its
//! CPU time comes from /proc/PID/stat.

use clap::Parser;
use reachmap_agent::probe::{Outcome, Plan, ProbeKind, Prober, ProberOutput, Target};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Targets probed once per interval.
    #[arg(long, default_value_t = 5_000)]
    targets: usize,
    #[arg(long, default_value_t = 1_000)]
    interval_ms: u64,
    /// Seconds measured (after one interval of warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Distinct ports: the first half listen, the second half refuse.
    #[arg(long, default_value_t = 200)]
    ports: u16,
    #[arg(long, default_value_t = 21_000)]
    first_port: u16,
    #[arg(long, default_value = "prometheus-blackbox-exporter")]
    blackbox: String,
    /// Keep-alive client connections driving blackbox_exporter.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Skip the blackbox_exporter run.
    #[arg(long)]
    no_blackbox: bool,
    /// Stay in the current network namespace.
    #[arg(long)]
    no_netns: bool,
    /// Internal: serve the listening ports (the child process).
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve {
        return serve(args.first_port, args.ports / 2);
    }
    if !args.no_netns && nix::unistd::geteuid().is_root() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        run("ip", &["link", "set", "lo", "up"])?;
        println!("network namespace: fresh (loopback only)");
    }
    let open_ports = args.ports / 2;
    let mut server = Command::new(std::env::current_exe()?)
        .args([
            "--serve",
            "--first-port",
            &args.first_port.to_string(),
            "--ports",
            &args.ports.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()?;
    wait_listening(SocketAddr::from((Ipv4Addr::LOCALHOST, args.first_port)))?;
    wait_listening(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        args.first_port + open_ports - 1,
    )))?;
    let server_cpu0 = cpu_seconds(server.id())?;

    let reachmap = bench_prober(&args)?;
    let server_cpu = cpu_seconds(server.id())? - server_cpu0;
    println!(
        "  listener process (not counted): {server_cpu:.2} CPU-s ({:.2} cores)",
        server_cpu / args.seconds as f64
    );

    if !args.no_blackbox {
        match bench_blackbox(&args) {
            Ok(bb) => {
                println!(
                    "\nreachmap probes per CPU-second / blackbox_exporter's: {:.1}x",
                    reachmap / bb
                );
            }
            Err(e) => println!("blackbox_exporter: not measured: {e:#}"),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}

fn is_open(args: &Args, port: u16) -> bool {
    port < args.first_port + args.ports / 2
}

/// The reachmap prober; returns probes per CPU-second.
fn bench_prober(args: &Args) -> anyhow::Result<f64> {
    let interval = Duration::from_millis(args.interval_ms);
    let window = ((args.seconds * 1_000 / args.interval_ms) as usize + 5).min(1_000);
    let targets: Vec<Target> = (0..args.targets)
        .map(|i| Target {
            id: i as u64,
            node: format!("n{i}"),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: args.first_port + (i % usize::from(args.ports)) as u16,
            kind: ProbeKind::Tcp,
            service: None,
            http_path: None,
            expect_status: None,
            tls: None,
            udp: None,
        })
        .collect();
    let expected_rate = args.targets as f64 * 1_000.0 / args.interval_ms as f64;
    let plan = Plan {
        version: 1,
        interval,
        timeout: Duration::from_secs(1).min(interval),
        max_probes_per_second: (expected_rate * 2.0) as u32,
        window,
        targets,
        fleet_addresses: [IpAddr::V4(Ipv4Addr::LOCALHOST)].into(),
        names: Vec::new(),
        results_by_id: true,
    };
    println!(
        "reachmap prober: {} targets every {:?} ({expected_rate:.0} probes/s planned), {} s",
        args.targets, interval, args.seconds
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (_plan_tx, plan_rx) = tokio::sync::watch::channel(Some(Arc::new(plan)));
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(64);
        let stop = tokio_util::sync::CancellationToken::new();
        let prober = Prober::new();
        let stats = prober.stats();
        let task = tokio::spawn(prober.run(plan_rx, out_tx, stop.clone()));
        let last_batch = tokio::spawn(async move {
            let mut last = None;
            let mut changes = 0u64;
            while let Some(out) = out_rx.recv().await {
                match out {
                    ProberOutput::Batch { windows, .. } => last = Some(windows),
                    ProberOutput::Changed(_) => changes += 1,
                }
            }
            (last, changes)
        });
        // Warm-up: one interval, so every target has its phase.
        tokio::time::sleep(interval).await;
        let cpu0 = cpu_seconds(std::process::id())?;
        let done0 = stats.probes_completed.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let done = stats.probes_completed.load(Ordering::Relaxed) - done0;
        let cpu = cpu_seconds(std::process::id())? - cpu0;
        let wall = t0.elapsed().as_secs_f64();
        // One more interval so the last batch covers the measured probes.
        tokio::time::sleep(interval + Duration::from_millis(100)).await;
        stop.cancel();
        task.await?;
        let (windows, changes) = last_batch.await?;
        let windows = windows.unwrap_or_default();
        let (mut checked, mut wrong) = (0u64, 0u64);
        for w in &windows {
            let want_open = is_open(args, w.target.port);
            checked += u64::from(w.sent);
            wrong += u64::from(if want_open {
                w.sent - w.ok
            } else {
                w.sent - w.refused
            });
            if want_open != (w.last_outcome == Outcome::Open) && wrong < 5 {
                println!(
                    "  misclassified: port {} got {:?}",
                    w.target.port, w.last_outcome
                );
            }
        }
        let per_cpu = done as f64 / cpu;
        println!(
            "  probes: {done} in {wall:.1} s = {:.0} probes/s sustained",
            done as f64 / wall
        );
        println!(
            "  CPU: {cpu:.2} s ({:.2} cores) -> {per_cpu:.0} probes per CPU-second",
            cpu / wall
        );
        println!(
            "  classification: {wrong} wrong of {checked} probes in the final windows; state changes {changes}; skipped slots {}; batches dropped {}",
            stats.probes_skipped.load(Ordering::Relaxed),
            stats.batches_dropped.load(Ordering::Relaxed)
        );
        Ok(per_cpu)
    })
}

/// blackbox_exporter driven as fast as it answers; returns probes per
/// CPU-second of the exporter process.
fn bench_blackbox(args: &Args) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("reachmap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("blackbox.yml");
    std::fs::write(
        &config,
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 1s\n",
    )?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 19_115));
    let mut exporter = Command::new(&args.blackbox)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", args.blackbox))?;
    let result = drive_blackbox(args, &exporter, listen);
    let _ = exporter.kill();
    let _ = exporter.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn drive_blackbox(args: &Args, exporter: &Child, listen: SocketAddr) -> anyhow::Result<f64> {
    wait_listening(listen)?;
    println!(
        "\nblackbox_exporter: tcp_connect over the same {} ports, {} clients, {} s",
        args.ports, args.clients, args.seconds
    );
    let probes = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let (probes, wrong, stop, measuring) = (
            probes.clone(),
            wrong.clone(),
            stop.clone(),
            measuring.clone(),
        );
        let (first, ports, open) = (args.first_port, args.ports, args.ports / 2);
        clients.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let stream = TcpStream::connect(listen)?;
            stream.set_nodelay(true)?;
            let mut conn = BufReader::new(stream);
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let port = first + (i % usize::from(ports)) as u16;
                i += 7;
                let success = blackbox_probe(&mut conn, port)?;
                if measuring.load(Ordering::Relaxed) {
                    probes.fetch_add(1, Ordering::Relaxed);
                    if success != (port < first + open) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let cpu0 = cpu_seconds(exporter.id())?;
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.seconds));
    measuring.store(false, Ordering::Relaxed);
    let cpu = cpu_seconds(exporter.id())? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    let done = probes.load(Ordering::Relaxed);
    let per_cpu = done as f64 / cpu;
    println!(
        "  probes: {done} in {wall:.1} s = {:.0} probes/s",
        done as f64 / wall
    );
    println!(
        "  CPU (exporter process): {cpu:.2} s ({:.2} cores) -> {per_cpu:.0} probes per CPU-second",
        cpu / wall
    );
    println!(
        "  classification: {} wrong of {done}",
        wrong.load(Ordering::Relaxed)
    );
    Ok(per_cpu)
}

/// One `/probe` request on a keep-alive connection; `probe_success`.
fn blackbox_probe(conn: &mut BufReader<TcpStream>, port: u16) -> anyhow::Result<bool> {
    // One write: pieces would meet Nagle and delayed ACKs (40 ms a request).
    let request = format!(
        "GET /probe?module=tcp_connect&target=127.0.0.1:{port} HTTP/1.1\r\nHost: bench\r\n\r\n"
    );
    conn.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    anyhow::ensure!(
        line.starts_with("HTTP/1.1 200"),
        "exporter answered {line:?}"
    );
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>()?);
        }
        if header.starts_with("transfer-encoding:") && header.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)?;
            let mut chunk = vec![0u8; size + 2];
            conn.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let length = length.ok_or_else(|| anyhow::anyhow!("no content length"))?;
        body.resize(length, 0);
        conn.read_exact(&mut body)?;
    }
    let body = String::from_utf8_lossy(&body);
    let success = body
        .lines()
        .find_map(|l| l.strip_prefix("probe_success "))
        .ok_or_else(|| anyhow::anyhow!("no probe_success in the answer"))?;
    Ok(success.trim() == "1")
}

/// The listening half of the ports: accept and close.
fn serve(first_port: u16, count: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        for port in first_port..first_port + count {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            tasks.push(tokio::spawn(reachmap_agent::probe::serve_probe_port(
                addr,
                stop.clone(),
            )));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    })
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} not listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(cmd).args(args).status()?;
    anyhow::ensure!(status.success(), "{cmd} {args:?} failed");
    Ok(())
}
