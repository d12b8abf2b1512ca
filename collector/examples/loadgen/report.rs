//! What the run measured, printed for a person: ingest, queries, memory,
//! the matrix check and the streams.

use crate::queries::{Rounds, Series};
use crate::{Args, Shared, check, http, procstat, sim};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// min / median / p99 / max of durations, in ms.
pub fn summary(mut v: Vec<Duration>) -> String {
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

/// A collector sample and this process's, at one point of the run.
pub type Samples = (Option<procstat::Sample>, Option<procstat::Sample>);

/// Everything the run measured.
pub struct Run {
    /// The flags of the run.
    pub args: Args,
    /// The agents' counters and errors.
    pub shared: Arc<Shared>,
    /// How many agents.
    pub n: usize,
    /// Planned targets per agent.
    pub targets: Vec<usize>,
    /// The probe interval of the plans.
    pub interval: Duration,
    /// Plans and their bytes pushed until the plans converged.
    pub plans_at_convergence: (u64, u64),
    /// Decode and validate time per window, measured here.
    pub calibration: (Duration, Duration),
    /// The collector's and this process's samples before any agent connected.
    pub idle: Samples,
    /// The same when the plans converged,
    pub converged: Samples,
    /// when the ingest-only phase began,
    pub ingest_start: Samples,
    /// when it ended,
    pub ingest_end: Samples,
    /// when the queries ended
    pub query_end: Samples,
    /// and at the end.
    pub end: Samples,
    /// The matrix's own heap after ingest (`reachmap_matrix_heap_bytes`).
    pub matrix_heap: Option<f64>,
    /// How long the ingest-only phase ran.
    pub ingest_for: Duration,
    /// The state-task queueing probe during ingest only.
    pub ingest_queue: Series,
    /// Windows sent when ingest began, ended (`w1`) and the queries ended (`w2`).
    pub w0: u64,
    pub w1: u64,
    pub w2: u64,
    /// Result bytes sent when ingest began and ended.
    pub b0: u64,
    pub b1: u64,
    /// How long the queries ran.
    pub query_secs: f64,
    /// The timed queries.
    pub rounds: Rounds,
    /// The matrix checked against what the agents sent.
    pub check_report: check::Report,
    /// The fetch of that matrix.
    pub fetch: http::Fetched,
}

pub fn print(run: Run) {
    let Run {
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
    } = run;
    let c = &shared.counters;
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
    rounds
        .zones
        .print("GET /api/v1/matrix?view=zones (zone grid)", true, share);
    rounds
        .failing
        .print("GET /api/v1/matrix?state=failing", true, share);
    rounds.metrics.print("GET /metrics", true, share);
    rounds
        .why
        .print("GET /api/v1/why (5 pairs a round)", true, share);
    rounds
        .findings
        .print("GET /api/v1/findings (the whole fleet)", true, share);
    // Findings are kept while the fleet does not change: the answers made
    // afresh are the ones with an as_of not seen before.
    let mut fresh = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in &rounds.findings_made {
        if seen.insert(m.as_of) {
            fresh.push(m.compute);
        }
    }
    println!(
        "  findings made afresh for {} of {} answers; making them (fleet copy included): {}",
        fresh.len(),
        rounds.findings_made.len(),
        summary(fresh)
    );
    rounds.what_if.print(
        "gRPC WhatIf: a 5,000-rule ruleset for one agent against its cells",
        false,
        share,
    );
    for (name, series) in [
        ("every cell", &rounds.full),
        ("?detail=full", &rounds.detail),
        ("?port=7442", &rounds.port),
        ("?view=zones", &rounds.zones),
        ("?state=failing", &rounds.failing),
        ("/metrics", &rounds.metrics),
        ("/api/v1/findings", &rounds.findings),
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
    if let (Some(idle), Some(converged), Some(ingested)) = (idle.0, converged.0, ingest_end.0) {
        let cells = sum_t.max(1) as f64;
        println!(
            "  per cell: {:.0} bytes of RSS after ingest ({:.0} above idle), {:.0} at convergence",
            ingested.rss_kib as f64 * 1024.0 / cells,
            ingested.rss_kib.saturating_sub(idle.rss_kib) as f64 * 1024.0 / cells,
            converged.rss_kib.saturating_sub(idle.rss_kib) as f64 * 1024.0 / cells,
        );
    }
    if let Some(heap) = matrix_heap {
        println!(
            "  the matrix itself (reachmap_matrix_heap_bytes): {:.1} MiB = {:.0} bytes a cell",
            heap / (1024.0 * 1024.0),
            heap / sum_t.max(1) as f64
        );
    }
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
    if let Ok(errors) = shared.errors.lock() {
        let mut kinds: Vec<(&String, &u64)> = errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (e, n) in kinds.iter().take(5) {
            println!("  {n} streams ended: {e}");
        }
    }
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
}
