//! The matrix at fleet scale: 1,000 nodes probing each other's probe port
//! (999,000 cells). Measures planning, result ingestion (windows/s), the
//! JSON view (`/api/v1/matrix`), `/metrics` and the process's memory.
//!
//!     cargo run --release -p reachmap-collector --example matrix_bench [NODES]

use reachmap_collector::metrics::{self, MetricsInput, NodeMetrics};
use reachmap_collector::probe::{
    FailureCounts, JsonDetail, Matrix, NodeInput, Outcome, PlannedTarget, PlannerConfig, ProbeKind,
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

/// Time this thread has spent on a CPU: unlike wall time, not inflated when
/// other processes compete for the cores.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu_time());
    let r = f();
    (r, w.elapsed(), cpu_time().saturating_sub(c))
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
    let mut set_plan = (Duration::ZERO, Duration::ZERO);
    for src in &fleet {
        let targets: Vec<PlannedTarget> = fleet
            .iter()
            .filter(|d| d.name != src.name)
            .map(|d| PlannedTarget::new(&d.name, d.addresses[0], 7442, ProbeKind::Tcp))
            .collect();
        let ((), w, c) = timed(|| m.set_plan(&src.name, &targets));
        set_plan.0 += w;
        set_plan.1 += c;
    }
    let rss_planned = rss_kib("VmRSS:");

    // One batch per source, as its agent sends every interval; made just
    // before it is applied (as ingest decodes one message at a time), and
    // only the apply timed.
    type Targets = Vec<(String, IpAddr, u16, ProbeKind)>;
    let sources: Vec<(String, Targets)> = {
        let mut v: Vec<(String, Vec<_>)> = Vec::new();
        for c in m.cells(None) {
            if v.last().is_none_or(|b| b.0 != c.src) {
                v.push((c.src.to_string(), Vec::new()));
            }
            if let Some(b) = v.last_mut() {
                b.1.push((c.dst.to_string(), c.address, c.cell.port(), c.cell.kind()));
            }
        }
        v
    };
    let rounds: i64 = 3;
    let mut windows = 0usize;
    let mut apply_time = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        for (src, targets) in &sources {
            let batch: Vec<WindowInput> = targets
                .iter()
                .enumerate()
                .map(|(k, (dst, address, port, kind))| {
                    let ok = if (k + round as usize).is_multiple_of(97) {
                        7
                    } else {
                        10
                    };
                    WindowInput {
                        target: PlannedTarget::new(dst, *address, *port, *kind).into(),
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
                        last_http_status: None,
                        last_tls_error: None,
                    }
                })
                .collect();
            windows += batch.len();
            let (_, w, c) = timed(|| m.apply(src, batch, 1_000_000_000 * (round + 1)));
            apply_time.0 += w;
            apply_time.1 += c;
        }
    }
    drop(sources);
    let rss_filled = rss_kib("VmRSS:");

    let (expired, expire_w, expire_c) = timed(|| m.expire(4_000_000_000));
    let (cells, cells_w, cells_c) = timed(|| m.cells(None).len());
    // As a handler would: a fresh buffer each time.
    let mut json_runs = Vec::new();
    let mut json_len = 0;
    for _ in 0..5 {
        let (json, w, c) = timed(|| m.to_json(None, JsonDetail::Summary));
        json_len = json.len();
        json_runs.push((c, w));
    }
    json_runs.sort();
    let (json_c, json_w) = json_runs[2];
    let mut kept = Vec::new();
    m.write_json_into(None, JsonDetail::Summary, &mut kept);
    let ((), kept_w, kept_c) = timed(|| m.write_json_into(None, JsonDetail::Summary, &mut kept));
    let (detail_len, detail_w, detail_c) = timed(|| m.to_json(None, JsonDetail::Full).len());
    drop(kept);
    let (r, sink_w, sink_c) =
        timed(|| m.write_json(None, JsonDetail::Summary, &mut std::io::sink()));
    r?;
    let (one_port, port_w, port_c) = timed(|| m.to_json(Some(7442), JsonDetail::Summary).len());

    let nodes: Vec<NodeMetrics> = fleet
        .iter()
        .map(|f| NodeMetrics {
            name: f.name.clone(),
            connected: true,
            clock_offset_seconds: Some(0.001),
            events_total: 10,
            dropped_events_total: 0,
            sources: Vec::new(),
        })
        .collect();
    // The zone view: the zone × zone grid of the 4 zones and the worst
    // cells, as `/api/v1/matrix?view=zones` makes it (before the JSON).
    let zones = reachmap_collector::select::Zones::from_pairs(
        fleet
            .iter()
            .map(|f| (f.name.as_str(), f.zone.as_deref().unwrap_or(""))),
    );
    let (zone_view, zones_w, zones_c) = timed(|| {
        reachmap_collector::encode::matrix_selected(
            &m,
            &reachmap_collector::select::Selection::default(),
            &zones,
            true,
            0,
        )
    });
    let (text, metrics_w, metrics_c) = timed(|| {
        metrics::render(&MetricsInput {
            nodes: &nodes,
            matrix: &m,
            pair_cap: metrics::DEFAULT_PAIR_CAP,
            store: None,
        })
    });
    let rss_views = rss_kib("VmRSS:");

    // Planning last: a full-mesh plan of 1,000 nodes is 2M targets, which
    // would otherwise count in the matrix's memory.
    let full = PlannerConfig {
        full_mesh_max: n,
        max_targets_per_node: 2 * n,
        ..PlannerConfig::default()
    };
    let (full_max, full_w, full_c) = timed(|| {
        plan(&fleet, &full)
            .values()
            .map(|p| p.targets.len())
            .max()
            .unwrap_or(0)
    });
    let (sparse_max, sparse_w, sparse_c) = timed(|| {
        plan(&fleet, &PlannerConfig::default())
            .values()
            .map(|p| p.targets.len())
            .max()
            .unwrap_or(0)
    });

    let line = |what: &str, w: Duration, c: Duration, rest: String| {
        println!(
            "{what:<28}{:>8.1} ms wall {:>8.1} ms cpu  {rest}",
            ms(w),
            ms(c)
        );
    };
    println!("nodes {n}, cells {cells}, expired at +4s: {expired}");
    line(
        "plan, full mesh",
        full_w,
        full_c,
        format!("max {full_max} targets per node"),
    );
    line(
        "plan, sparse (default)",
        sparse_w,
        sparse_c,
        format!("max {sparse_max} targets per node"),
    );
    line(
        "set_plan, every node",
        set_plan.0,
        set_plan.1,
        String::new(),
    );
    line(
        "apply",
        apply_time.0,
        apply_time.1,
        format!(
            "{windows} windows: {:.0} windows per cpu-second",
            windows as f64 / apply_time.1.as_secs_f64()
        ),
    );
    line("expire", expire_w, expire_c, String::new());
    line("cells(None), sorted", cells_w, cells_c, String::new());
    line(
        "to_json, whole matrix",
        json_w,
        json_c,
        format!("{json_len} bytes (median of 5 by cpu)"),
    );
    line("write_json_into, reused buf", kept_w, kept_c, String::new());
    line(
        "to_json, whole matrix, detail=full",
        detail_w,
        detail_c,
        format!("{detail_len} bytes"),
    );
    line("write_json into a sink", sink_w, sink_c, String::new());
    line(
        "to_json, port 7442",
        port_w,
        port_c,
        format!("{one_port} bytes"),
    );
    line(
        "zone view (grid + worst cells)",
        zones_w,
        zones_c,
        format!(
            "{} zone pairs, {} cells listed, {} left out",
            zone_view.zones.len(),
            zone_view.cells.len(),
            zone_view.cells_left_out
        ),
    );
    line(
        "metrics::render",
        metrics_w,
        metrics_c,
        format!("{} bytes, pair series capped", text.len()),
    );
    println!(
        "RSS: {} MiB at start, {} MiB with every plan set (the matrix), {} MiB after the results, {} MiB after the views, peak {} MiB",
        base_rss / 1024,
        rss_planned / 1024,
        rss_filled / 1024,
        rss_views / 1024,
        rss_kib("VmHWM:") / 1024
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
