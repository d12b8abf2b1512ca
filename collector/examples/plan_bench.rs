//! Probe planning at fleet scale: NODES nodes in ZONES zones (sparse plans:
//! a mesh inside each zone up to `full_mesh_max` peers, `representatives`
//! nodes of every other zone). Measures the time of a whole planning pass,
//! of the pass after one node joins (churn), the plans' size (targets per
//! node, the memory they hold) and coverage — how many sources probe each
//! node. Churn goes through the incremental `Planner`, as in the state task.
//!
//!     cargo run --release -p reachmap-collector --example plan_bench [NODES] [ZONES]

use reachmap_collector::probe::{NodeInput, Planner, PlannerConfig};
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
    let mut fleet: Vec<NodeInput> = (0..n).map(|i| node(i, zones)).collect();
    let cfg = PlannerConfig::default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    // The whole pass: every plan computed (a collector's start).
    let before = rss_kib();
    let mut planner = Planner::default();
    let start = Instant::now();
    let first = planner.update(&fleet, &cfg);
    let whole = start.elapsed();
    let sizes: Vec<usize> = first.changed.iter().map(|(_, p)| p.targets.len()).collect();
    let total: usize = sizes.iter().sum();
    let mut probers: HashMap<&str, usize> = fleet.iter().map(|f| (f.name.as_str(), 0)).collect();
    for (_, p) in &first.changed {
        let mut seen: Vec<&str> = p.targets.iter().map(|t| t.node.as_str()).collect();
        seen.dedup();
        for d in seen {
            *probers.entry(d).or_default() += 1;
        }
    }
    let min_cov = probers.values().min().copied().unwrap_or(0);
    let mean_cov = probers.values().sum::<usize>() as f64 / n.max(1) as f64;
    let with_plans = rss_kib().saturating_sub(before);
    let plans = first.changed.len();
    drop(first);
    let held_kib = rss_kib().saturating_sub(before);

    println!(
        "plan_bench: {n} nodes in {zones} zones, full_mesh_max {}, representatives {}, min_probers {}",
        cfg.full_mesh_max, cfg.representatives, cfg.min_probers
    );
    println!(
        "  whole pass           {:>10.1} ms ({plans} plans)",
        ms(whole)
    );
    // Churn: each change planned incrementally, as the state task does.
    let mut step = |label: &str, fleet: &[NodeInput]| {
        let start = Instant::now();
        let u = planner.update(fleet, &cfg);
        let t = start.elapsed();
        println!(
            "  {label:<20} {:>10.2} ms ({} plans computed, {} changed{})",
            ms(t),
            u.computed,
            u.changed.len(),
            if u.whole { ", whole pass" } else { "" }
        );
    };
    fleet.push(node(n, zones));
    step("one node joins", &fleet);
    fleet[n / 2].connected = false;
    step("an agent disconnects", &fleet);
    fleet[n / 2].connected = true;
    step("and reconnects", &fleet);
    fleet[n / 3].addresses = vec![IpAddr::V4(Ipv4Addr::new(198, 19, 255, 1))];
    step("a node's address moves", &fleet);
    fleet[n / 4].zone = Some("zone-moved".into());
    step("a node changes zone", &fleet);
    fleet.remove(n / 5);
    step("a node leaves", &fleet);

    println!(
        "  targets per plan     min {} / mean {:.0} / max {} (cap {}); {total} in all",
        sizes.iter().min().copied().unwrap_or(0),
        total as f64 / sizes.len().max(1) as f64,
        sizes.iter().max().copied().unwrap_or(0),
        cfg.max_targets_per_node
    );
    println!(
        "  memory: {:.1} MiB while every plan is built ({:.0} bytes a target), {:.1} MiB kept by the planner between passes",
        with_plans as f64 / 1024.0,
        with_plans as f64 * 1024.0 / total.max(1) as f64,
        held_kib as f64 / 1024.0,
    );
    println!("  probers per node     min {min_cov} / mean {mean_cov:.0}");
}
