//! Probe planning at fleet scale: NODES nodes in ZONES zones (sparse plans:
//! a mesh inside each zone up to `full_mesh_max` peers, `representatives`
//! nodes of every other zone). Measures the time of a whole planning pass,
//! of the pass after one node joins (churn), the plans' size (targets per
//! node, the memory they hold) and coverage — how many sources probe each
//! node.
//!
//!     cargo run --release -p reachmap-collector --example plan_bench [NODES] [ZONES]

use reachmap_collector::probe::{NodeInput, PlannerConfig, plan};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn node(i: usize, zones: usize) -> NodeInput {
    NodeInput {
        name: format!("node-{i:05}"),
        zone: Some(format!("zone-{:02}", i % zones)),
        connected: true,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(
            198,
            18 + (i / 65536) as u8,
            (i / 256 % 256) as u8,
            (i % 256) as u8,
        ))],
        listeners: Vec::new(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let zones: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let fleet: Vec<NodeInput> = (0..n).map(|i| node(i, zones)).collect();
    let cfg = PlannerConfig::default();

    let before = rss_kib();
    let start = Instant::now();
    let plans = plan(&fleet, &cfg);
    let first = start.elapsed();
    let held_kib = rss_kib().saturating_sub(before);

    let sizes: Vec<usize> = plans.values().map(|p| p.targets.len()).collect();
    let total: usize = sizes.iter().sum();
    let mut probers: HashMap<&str, usize> = fleet.iter().map(|f| (f.name.as_str(), 0)).collect();
    for p in plans.values() {
        let mut seen: Vec<&str> = p.targets.iter().map(|t| t.node.as_str()).collect();
        seen.dedup();
        for d in seen {
            *probers.entry(d).or_default() += 1;
        }
    }
    let min_cov = probers.values().min().copied().unwrap_or(0);
    let mean_cov = probers.values().sum::<usize>() as f64 / n.max(1) as f64;

    // One node joins: the planner runs again over the whole fleet.
    let mut grown = fleet.clone();
    grown.push(node(n, zones));
    let start = Instant::now();
    let replanned = plan(&grown, &cfg);
    let churn = start.elapsed();
    let changed = replanned
        .iter()
        .filter(|(k, p)| plans.get(*k).is_none_or(|old| old.digest != p.digest))
        .count();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "plan_bench: {n} nodes in {zones} zones, full_mesh_max {}, representatives {}",
        cfg.full_mesh_max, cfg.representatives
    );
    println!("  planning pass        {:>10.1} ms", ms(first));
    println!(
        "  after one node joins {:>10.1} ms ({changed} of {} plans changed)",
        ms(churn),
        replanned.len()
    );
    println!(
        "  targets per plan     min {} / mean {:.0} / max {} (cap {}); {total} in all",
        sizes.iter().min().copied().unwrap_or(0),
        total as f64 / sizes.len().max(1) as f64,
        sizes.iter().max().copied().unwrap_or(0),
        cfg.max_targets_per_node
    );
    println!(
        "  memory held by plans {:>10.1} MiB ({:.0} bytes a target)",
        held_kib as f64 / 1024.0,
        held_kib as f64 * 1024.0 / total.max(1) as f64
    );
    println!("  probers per node     min {min_cov} / mean {mean_cov:.0}");
}
