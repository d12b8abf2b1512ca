//! The matrix at fleet scale: 1,000 nodes probing each other's probe port
//! (999,000 cells). Measures planning, result ingestion (windows/s), the
//! JSON view (`/api/v1/matrix`), `/metrics` and the process's memory.
//!
//!     cargo run --release -p reachmap-collector --example matrix_bench [NODES]

use reachmap_collector::metrics::{self, MetricsInput, NodeMetrics};
use reachmap_collector::probe::{
    FailureCounts, Matrix, NodeInput, Outcome, PlannedTarget, PlannerConfig, ProbeKind,
    TargetState, WindowInput, plan,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let base_rss = rss_kib("VmRSS:");
    // Names arrive in a scrambled order, as agents connect, so the matrix's
    // ids are not in name order (the slower path of its sorted views).
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let fleet: Vec<NodeInput> = order
        .iter()
        .map(|&i| NodeInput {
            name: format!("node-{i:04}"),
            zone: Some(format!("zone-{}", i % 4)),
            connected: true,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(
                198,
                18 + (i / 65536) as u8,
                (i / 256 % 256) as u8,
                (i % 256) as u8,
            ))],
            listeners: Vec::new(),
        })
        .collect();

    let mut m = Matrix::new(Duration::from_secs(10));
    for node in &fleet {
        m.add_node(&node.name);
    }
    // Probe-port TCP cells only, every node to every other: the 1M-cell
    // case. Each source's plan is made just before it is set.
    let mut set_plan = Duration::ZERO;
    for src in &fleet {
        let targets: Vec<PlannedTarget> = fleet
            .iter()
            .filter(|d| d.name != src.name)
            .map(|d| PlannedTarget::new(&d.name, d.addresses[0], 7442, ProbeKind::Tcp))
            .collect();
        let t = Instant::now();
        m.set_plan(&src.name, &targets);
        set_plan += t.elapsed();
    }
    let rss_planned = rss_kib("VmRSS:");

    // One batch per source, as its agent sends every interval; made just
    // before it is applied (as ingest decodes one message at a time), and
    // only the apply timed.
    let sources: Vec<(String, Vec<(String, IpAddr, u16, ProbeKind)>)> = {
        let mut v: Vec<(String, Vec<_>)> = Vec::new();
        for c in m.cells(None) {
            if v.last().is_none_or(|b| b.0 != c.src) {
                v.push((c.src.to_string(), Vec::new()));
            }
            if let Some(b) = v.last_mut() {
                b.1.push((
                    c.dst.to_string(),
                    c.cell.address(),
                    c.cell.port(),
                    c.cell.kind(),
                ));
            }
        }
        v
    };
    let rounds: i64 = 3;
    let mut windows = 0usize;
    let mut apply_time = Duration::ZERO;
    for round in 0..rounds {
        for (src, targets) in &sources {
            let batch: Vec<WindowInput> = targets
                .iter()
                .enumerate()
                .map(|(k, (dst, address, port, kind))| {
                    let ok = if (k + round as usize) % 97 == 0 {
                        7
                    } else {
                        10
                    };
                    WindowInput {
                        target: PlannedTarget::new(dst, *address, *port, *kind),
                        sent: 10,
                        ok,
                        failures: FailureCounts {
                            timeout: 10 - ok,
                            ..FailureCounts::default()
                        },
                        rtt_p50_ms: Some(0.1 + k as f64 / 1000.0),
                        rtt_p99_ms: Some(0.9),
                        last_outcome: Some(Outcome::Open),
                        last_failure: (ok < 10).then_some((Outcome::Timeout, 1)),
                        state: if ok < 10 {
                            TargetState::Degraded
                        } else {
                            TargetState::Ok
                        },
                    }
                })
                .collect();
            windows += batch.len();
            let t = Instant::now();
            m.apply(src, batch, 1_000_000_000 * (round + 1));
            apply_time += t.elapsed();
        }
    }
    drop(sources);
    let rss_filled = rss_kib("VmRSS:");

    let t = Instant::now();
    let expired = m.expire(4_000_000_000);
    let expire_time = t.elapsed();

    // As a handler would: a fresh buffer sized from the hint each time.
    let mut json = Vec::new();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        json = m.to_json(None);
        times.push(t.elapsed());
    }
    times.sort();
    let (best, median) = (times[0], times[2]);
    let mut sink = std::io::sink();
    let t = Instant::now();
    m.write_json(None, &mut sink)?;
    let json_sink = t.elapsed();
    let t = Instant::now();
    let cells = m.cells(None).len();
    let cells_time = t.elapsed();
    let t = Instant::now();
    let one_port = m.to_json(Some(7442));
    let one_port_time = t.elapsed();

    // Planning last: a full-mesh plan of 1,000 nodes is 2M targets, which
    // would otherwise count in the matrix's memory.
    let rss_before_plan = rss_kib("VmRSS:");
    let full = PlannerConfig {
        full_mesh_max: n,
        max_targets_per_node: 2 * n,
        ..PlannerConfig::default()
    };
    let t = Instant::now();
    let plans = plan(&fleet, &full);
    let plan_full = t.elapsed();
    drop(plans);
    let sparse_cfg = PlannerConfig::default();
    let t = Instant::now();
    let sparse = plan(&fleet, &sparse_cfg);
    let plan_sparse = t.elapsed();
    let sparse_max = sparse.values().map(|p| p.targets.len()).max().unwrap_or(0);

    let nodes: Vec<NodeMetrics> = fleet
        .iter()
        .map(|f| NodeMetrics {
            name: f.name.clone(),
            connected: true,
            clock_offset_seconds: Some(0.001),
            events_total: 10,
            dropped_events_total: 0,
        })
        .collect();
    let t = Instant::now();
    let text = metrics::render(&MetricsInput {
        nodes: &nodes,
        matrix: &m,
        pair_cap: metrics::DEFAULT_PAIR_CAP,
    });
    let metrics_time = t.elapsed();

    println!("nodes                      {n}");
    println!("cells                      {cells} (expired at +4s: {expired})");
    println!(
        "plan, full mesh            {:.1} ms ({} targets per node)",
        ms(plan_full),
        2 * (n - 1)
    );
    println!(
        "plan, sparse (default)     {:.1} ms (max {sparse_max} targets per node)",
        ms(plan_sparse)
    );
    println!("set_plan, every node       {:.1} ms", ms(set_plan));
    println!(
        "apply                      {:.0} windows/s ({} windows in {:.1} ms)",
        windows as f64 / apply_time.as_secs_f64(),
        windows,
        ms(apply_time)
    );
    println!("expire                     {:.1} ms", ms(expire_time));
    println!("cells() sorted             {:.1} ms", ms(cells_time));
    println!(
        "write_json, whole matrix   {:.1} ms median of 5 ({:.1} best) with to_json (a fresh buffer), {:.1} ms with write_json into a sink, {} bytes",
        ms(median),
        ms(best),
        ms(json_sink),
        json.len()
    );
    println!(
        "write_json, --port 7442    {:.1} ms, {} bytes",
        ms(one_port_time),
        one_port.len()
    );
    println!(
        "metrics::render            {:.1} ms, {} bytes (pair series capped)",
        ms(metrics_time),
        text.len()
    );
    println!(
        "RSS                        {} MiB at start, {} MiB with every plan set, {} MiB after the results, {} MiB after the JSON views and metrics, peak {} MiB",
        base_rss / 1024,
        rss_planned / 1024,
        rss_filled / 1024,
        rss_before_plan / 1024,
        rss_kib("VmHWM:") / 1024
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
