//! The store at fleet scale: 7 days of a 1,000-node fleet (999,000 probe
//! cells, each recorded once as it came up; 1% of them flapping ten times a
//! day; 200 events per node a day; a resources sample a minute — what the
//! collector stores of the agents' 10 s samples — for the pair asked about) written through the store's one writer, then the
//! questions operators ask of the past, timed:
//!
//! - `history` of one flapping pair over the 7 days, each bad interval's
//!   cause explained (`why --at` at its start);
//! - `matrix --at` of all 999,000 cells;
//! - `events` of one node over a day;
//!
//! and the store's bytes per node per day.
//!
//!     cargo run --release -p reachmap-collector --example store_bench [NODES] [DAYS]
//!
//! With `STORE_URL=postgres://…` (and `STORE_CA=FILE` for its TLS) the
//! same history goes to an empty PostgreSQL database instead of a SQLite
//! file: the two engines side by side (`deploy/bench.sh store-postgres`).

use reachmap_collector::config::ProbeSettings;
use reachmap_collector::probe::{CellChange, CellState, Outcome, ProbeKind};
use reachmap_collector::store::{self, EventWrite, FactWrite, NodeRecord, Options, Store, Write};
use reachmap_collector::{history, state};
use reachmap_proto::v1 as pb;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

const DAY: i64 = 86_400 * 1_000_000_000;

fn name(i: usize) -> String {
    format!("node-{i:04}")
}

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(198, 19, 0, 0)) + 1 + i as u32,
    ))
}

fn change(t: i64, s: usize, d: usize, old: CellState, new: CellState) -> CellChange {
    CellChange {
        time: t,
        src: name(s),
        dst: name(d),
        port: 7442,
        kind: ProbeKind::Tcp,
        service: None,
        old,
        new,
        failure: (new == CellState::Failing).then_some(Outcome::Timeout),
        sent: 10,
        ok: if new == CellState::Ok { 10 } else { 0 },
        rtt_ms: Some(0.4),
        address: addr(d),
        last_failure_at: 0,
        gone: false,
    }
}

/// The k-th resources sample of a node, a minute apart from `t0`, as the
/// collector stores it.
fn resources_sample(node: &str, t0: i64, k: u64) -> Write {
    let time = t0 + k as i64 * 60_000_000_000;
    let f = reachmap_collector::model::NodeFacts {
        resources: Some(reachmap_collector::model::Resources {
            sampled_unix_nanos: time,
            load1: (k % 100) as f64 / 10.0,
            cpus: 4,
            mem_total_bytes: 8 << 30,
            mem_available_bytes: (4 << 30) + (k % 1000) * 4096,
            ..Default::default()
        }),
        ..Default::default()
    };
    let data = store::facts::encode(&f, store::facts::RESOURCES);
    Write::Fact(FactWrite {
        node: node.to_string(),
        part: store::facts::RESOURCES,
        time,
        hash: store::hash(&data),
        data,
        firewall: None,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let days: i64 = args.next().map_or(Ok(7), |a| a.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(nodes, days))
}

async fn run(nodes: usize, days: i64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = Options {
        retention: Duration::from_secs(30 * 86_400),
        max_bytes: u64::MAX,
        ..Options::default()
    };
    let at = match std::env::var("STORE_URL") {
        Ok(url) => store::Location::Postgres(store::pg::Target {
            url,
            ca: std::env::var_os("STORE_CA").map(Into::into),
        }),
        Err(_) => store::Location::Dir(dir.path().to_owned()),
    };
    println!("store: {}", at.shown());
    let (store, _) = Store::open_at(&at, opts.clone())?;
    let now = state::unix_nanos(SystemTime::now());
    let t0 = now - days * DAY;
    let started = Instant::now();
    let mut rows = 0u64;
    // Every cell comes up once.
    for s in 0..nodes {
        for d in (0..nodes).filter(|d| *d != s) {
            let t = t0 + ((s * nodes + d) as i64 % 60) * 1_000_000_000;
            store
                .queue_waiting(Write::Cells(vec![change(
                    t,
                    s,
                    d,
                    CellState::Unknown,
                    CellState::Ok,
                )]))
                .await;
            rows += 1;
        }
    }
    // 1% of the cells flap ten times a day; the pair asked about (0 -> 1) is one.
    let flapping: Vec<(usize, usize)> = (0..nodes * (nodes - 1) / 100)
        .map(|k| {
            let s = (k * 7919) % nodes;
            let d = (s + 1 + (k * 104_729) % (nodes - 1)) % nodes;
            (s, d)
        })
        .chain(std::iter::once((0, 1)))
        .collect();
    for (s, d) in &flapping {
        for n in 0..days * 10 {
            let t = t0 + n * DAY / 10 + (*s as i64 % 1000) * 1_000_000;
            store
                .queue_waiting(Write::Cells(vec![change(
                    t,
                    *s,
                    *d,
                    CellState::Ok,
                    CellState::Failing,
                )]))
                .await;
            store
                .queue_waiting(Write::Cells(vec![change(
                    t + 90_000_000_000,
                    *s,
                    *d,
                    CellState::Failing,
                    CellState::Ok,
                )]))
                .await;
            rows += 2;
        }
    }
    // 200 events per node a day.
    let mut event_rows = 0u64;
    for i in 0..nodes {
        for n in 0..days * 200 {
            let t = t0 + n * DAY / 200 + i as i64 * 1_000_000;
            let event = pb::Event {
                time_unix_nanos: t,
                id: n as u64 + 1,
                received_unix_nanos: t,
                instance_id: 1,
                kind: Some(pb::event::Kind::KernelLink(pb::KernelLinkMessage {
                    interface: "eth0".into(),
                    up: n % 2 == 0,
                    message: "eth0: Link is Up 1000 Mbps Full Duplex".into(),
                })),
            };
            store
                .queue_waiting(Write::Event(EventWrite {
                    node: name(i),
                    instance: 1,
                    event,
                    done: None,
                }))
                .await;
            event_rows += 1;
        }
    }
    // Facts of the two nodes asked about: the network once, a resources sample a minute.
    let mut fact_rows = 0u64;
    for i in [0usize, 1] {
        let mut f = reachmap_collector::model::NodeFacts::default();
        f.host.hostname = name(i);
        let data = store::facts::encode(&f, store::facts::NETWORK);
        store
            .queue_waiting(Write::Fact(FactWrite {
                node: name(i),
                part: store::facts::NETWORK,
                time: t0,
                hash: store::hash(&data),
                data,
                firewall: None,
            }))
            .await;
        let mut k = 0u64;
        while t0 + k as i64 * 60_000_000_000 < now {
            store.queue_waiting(resources_sample(&name(i), t0, k)).await;
            k += 1;
            fact_rows += 1;
        }
    }
    store.flush().await;
    let fill = started.elapsed();
    let total_rows = rows + event_rows + fact_rows;
    let bytes = store.status().bytes;
    println!(
        "filled: {rows} cell changes, {event_rows} events, {fact_rows} fact changes ({nodes} nodes, {days} days) in {:.1}s = {:.0} rows/s through the writer",
        fill.as_secs_f64(),
        total_rows as f64 / fill.as_secs_f64()
    );
    let facts_bytes_per_node_day = {
        // The resources samples of one node for one day, measured alone.
        let one = tempfile::tempdir()?;
        let (s1, _) = Store::open(one.path(), opts.clone())?;
        let base = s1.status().bytes;
        for k in 0..1440u64 {
            s1.queue_waiting(resources_sample("n", t0, k)).await;
        }
        s1.flush().await;
        s1.status().bytes.saturating_sub(base)
    };
    let cells_events_per_node_day = bytes as f64 / nodes as f64 / days as f64;
    println!(
        "store: {:.1} MiB; per node per day: {:.1} KiB of cell changes and events, {:.1} KiB of resources samples (one a minute), {:.1} KiB in all",
        bytes as f64 / (1 << 20) as f64,
        cells_events_per_node_day / 1024.0,
        facts_bytes_per_node_day as f64 / 1024.0,
        (cells_events_per_node_day + facts_bytes_per_node_day as f64) / 1024.0
    );

    // The fleet, for the questions that need it (`why --at` knows its nodes).
    let registry: Vec<NodeRecord> = (0..nodes)
        .map(|i| NodeRecord {
            name: name(i),
            ..Default::default()
        })
        .collect();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (fleet, _task) = state::Fleet::start(
        store.clone(),
        registry,
        &ProbeSettings::default(),
        shutdown.clone(),
    );

    let mut times = Vec::new();
    let mut answer = None;
    for _ in 0..5 {
        let t = Instant::now();
        let h = history::history(&fleet, name(0), name(1), 7442, t0, 0)
            .await
            .map_err(|s| anyhow::anyhow!("history: {}", s.message()))?;
        times.push(t.elapsed());
        answer = Some(h);
    }
    let h = answer.unwrap_or_default();
    println!(
        "history {} -> {} over {days} days: {} intervals, {} outages, {} explained; median {:.1} ms (of 5)",
        name(0),
        name(1),
        h.intervals.len(),
        h.outages,
        h.intervals.iter().filter(|i| i.cause.is_some()).count(),
        median(times).as_secs_f64() * 1e3
    );

    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        history::why_at(&fleet, name(0), name(1), 7442, now - DAY / 3)
            .await
            .map_err(|s| anyhow::anyhow!("why --at: {}", s.message()))?;
        times.push(t.elapsed());
    }
    println!(
        "why --at: median {:.1} ms (of 5)",
        median(times).as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let at = now - DAY / 3;
        let n = store
            .read(move |c| {
                store::read::cells_at(c, at, "node-0001")
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        times.push(t.elapsed());
        let _ = n;
    }
    println!(
        "cells into and out of one node at a moment: median {:.1} ms (of 5)",
        median(times).as_secs_f64() * 1e3
    );

    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let at = now - DAY / 2;
        store
            .read(move |c| {
                store::read::matrix_at(c, at)
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        times.push(t.elapsed());
    }
    println!(
        "  of which reading the cells: median {:.0} ms (of 3)",
        median(times).as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    let mut cells = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let m = history::matrix_at(&store, now - DAY / 2)
            .await
            .map_err(|s| anyhow::anyhow!("matrix --at: {}", s.message()))?;
        times.push(t.elapsed());
        cells = m.len();
    }
    println!(
        "matrix --at (half a day ago): {cells} cells, median {:.0} ms (of 3)",
        median(times).as_secs_f64() * 1e3
    );

    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = history::events(
            &store,
            store::read::EventsQuery {
                node: Some(name(7)),
                since: now - DAY,
                until: 0,
                types: Vec::new(),
                limit: 1000,
            },
        )
        .await
        .map_err(|s| anyhow::anyhow!("events: {}", s.message()))?;
        times.push(t.elapsed());
        n = r.events.len();
    }
    println!(
        "events of one node over a day: {n} events, median {:.1} ms (of 5)",
        median(times).as_secs_f64() * 1e3
    );
    shutdown.cancel();
    Ok(())
}
