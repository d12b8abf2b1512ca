//! The agent on a Kubernetes-like node: 20,000 iptables-nft rules (a
//! kube-proxy `nat` table: services, their endpoint chains, DNAT rules)
//! while a script replaces a few rules every second with
//! `iptables-restore --noflush`, as kube-proxy does on every sync. Measured
//! side by side with the same host idle: the agent's CPU (its children —
//! the nft and iptables tools it runs — included) and RSS, and how far the
//! collector's view of the ruleset is behind each change (the time from the
//! change's commit to the collector receiving its `firewall_changed`).
//!
//! Run: `sudo deploy/bench.sh firewall` (release binaries). Knobs:
//! BENCH_FW_RULES (20000), BENCH_FW_SECS (30 per phase), BENCH_FW_CHAINS
//! (chains rewritten per change, 2).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reachmap_fleet_tests::procstat::{cpu_ticks, pid_in_netns, status_kib};
use reachmap_fleet_tests::{Fleet, binary, eventually};
use serde_json::Value;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Endpoint chains per service, DNAT rules per endpoint chain.
const EPS: usize = 3;
const DNATS: usize = 5;
/// Rules per service: one in KUBE-SERVICES, EPS in its service chain, a
/// masquerade mark and DNATS in its endpoint chain.
const PER_SERVICE: usize = 1 + EPS + 1 + DNATS;

fn sep_rules(s: usize, generation: u64) -> Vec<String> {
    let ep = format!("198.18.{}.{}", 100 + s / 250, s % 250 + 1);
    let mut r = vec![format!(
        "-A KUBE-SEP-{s:06} -s {ep}/32 -m comment --comment \"ns/svc-{s} sync {generation}\" -j KUBE-MARK-MASQ"
    )];
    for k in 0..DNATS {
        r.push(format!(
            "-A KUBE-SEP-{s:06} -p tcp -m tcp -j DNAT --to-destination {ep}:{}",
            8000 + k
        ));
    }
    r
}

fn kube_proxy_nat(services: usize) -> String {
    let mut out = vec![
        "*nat".to_string(),
        ":KUBE-SERVICES - [0:0]".into(),
        ":KUBE-MARK-MASQ - [0:0]".into(),
    ];
    for s in 0..services {
        out.push(format!(":KUBE-SVC-{s:06} - [0:0]"));
        out.push(format!(":KUBE-SEP-{s:06} - [0:0]"));
    }
    out.push("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".into());
    for s in 0..services {
        let vip = format!("198.19.{}.{}", s / 250, s % 250 + 1);
        out.push(format!(
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"ns/svc-{s}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{s:06}"
        ));
        for k in 0..EPS {
            out.push(format!(
                "-A KUBE-SVC-{s:06} -m comment --comment \"ns/svc-{s}:http -> ep{k}\" -m statistic --mode random --probability 0.33333 -j KUBE-SEP-{s:06}"
            ));
        }
        out.extend(sep_rules(s, 0));
    }
    out.push("COMMIT".into());
    out.join("\n") + "\n"
}

/// One kube-proxy-style sync: the chains named are declared (which flushes
/// them under --noflush) and written again, with a new comment.
fn sync_input(services: &[usize], generation: u64) -> String {
    let mut out = vec!["*nat".to_string()];
    for s in services {
        out.push(format!(":KUBE-SEP-{s:06} - [0:0]"));
    }
    for s in services {
        out.extend(sep_rules(*s, generation));
    }
    out.push("COMMIT".into());
    out.join("\n") + "\n"
}

fn restore(ns: &str, input: &str, noflush: bool) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "iptables-nft-restore"]);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-nft-restore runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write rules");
    }
    let status = child.wait().expect("iptables-nft-restore exits");
    assert!(status.success(), "iptables-nft-restore failed");
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// When the collector received each `firewall_changed` of node-0 (unix ns).
fn firewall_events(fleet: &Fleet) -> Vec<i64> {
    let out = fleet.cli(&[
        "events",
        "node-0",
        "--type",
        "firewall_changed",
        "--since",
        "1h",
        "--limit",
        "100000",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "reachmap events failed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("events JSON");
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["events"].as_array().cloned())
        .unwrap_or_default();
    let mut received: Vec<i64> = list
        .iter()
        .filter_map(|e| humantime::parse_rfc3339(e["received"].as_str()?).ok())
        .map(unix_nanos)
        .collect();
    received.sort_unstable();
    received
}

struct Phase {
    cpu_pct: f64,
    /// Of which the tools the agent ran.
    children_pct: f64,
    rss_kib: u64,
}

fn measure(pid: u32, secs: u64, during: impl FnOnce(Instant)) -> Phase {
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    during(start + Duration::from_secs(secs));
    let left = (start + Duration::from_secs(secs)).saturating_duration_since(Instant::now());
    std::thread::sleep(left);
    let t1 = cpu_ticks(pid);
    let pct = |ticks: u64| ticks as f64 / 100.0 / start.elapsed().as_secs_f64() * 100.0;
    Phase {
        cpu_pct: pct(t1.0 + t1.1 - t0.0 - t0.1),
        children_pct: pct(t1.1 - t0.1),
        rss_kib: status_kib(pid, "VmRSS:"),
    }
}

fn main() {
    let rules = env_usize("BENCH_FW_RULES", 20_000);
    let secs = env_usize("BENCH_FW_SECS", 30) as u64;
    let per_change = env_usize("BENCH_FW_CHAINS", 2);
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces: run it as root"
    );
    println!("agent binary: {}", binary("reachmap-agent").display());
    let services = rules.div_ceil(PER_SERVICE);
    let mut fleet = Fleet::new("bench_fw", 1);
    let ns = fleet.node(0).netns.clone();
    let t = Instant::now();
    restore(&ns, &kube_proxy_nat(services), false);
    println!(
        "host: {} iptables-nft rules in table nat ({services} services), loaded in {:.2}s",
        services * PER_SERVICE + 1,
        t.elapsed().as_secs_f64()
    );
    fleet.start_collector();
    fleet.start_agent_with(0, &["--poll-interval", "10s"]);
    eventually(Duration::from_secs(120), "node-0 reported", || {
        let nodes = fleet.try_nodes_json()?;
        let connected = nodes
            .as_array()
            .and_then(|l| l.iter().find(|n| n["name"] == "node-0"))
            .is_some_and(|n| n["connected"] == true);
        if connected {
            Ok(())
        } else {
            Err(nodes.to_string())
        }
    });
    // Past the first readings.
    std::thread::sleep(Duration::from_secs(10));
    let pid = pid_in_netns(&ns, "reachmap-agent").expect("the agent runs in the node");

    let idle = measure(pid, secs, |_| {});
    let before = firewall_events(&fleet).len();

    let mut changes: Vec<i64> = Vec::new();
    let mut generation = 0u64;
    let churn = measure(pid, secs, |until| {
        while Instant::now() + Duration::from_secs(1) <= until {
            let next = Instant::now() + Duration::from_secs(1);
            generation += 1;
            let chosen: Vec<usize> = (0..per_change)
                .map(|k| (generation as usize * 7919 + k * 104_729) % services)
                .collect();
            restore(&ns, &sync_input(&chosen, generation), true);
            changes.push(unix_nanos(SystemTime::now()));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let events = firewall_events(&fleet);
    // How long after each change the collector first heard of the ruleset
    // changing: the staleness of its view. A change read together with the
    // next one counts until that reading arrived.
    let mut lags: Vec<f64> = Vec::new();
    for t in &changes {
        if let Some(r) = events.iter().find(|r| **r >= *t) {
            lags.push((*r - *t) as f64 / 1e6);
        }
    }
    let unseen = changes.len() - lags.len();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("\nagent, {secs}s each (CPU of the agent and the tools it runs, % of one core)");
    println!(
        "   idle:  CPU {:.2}% ({:.2}% in the tools it ran)  RSS {} KiB",
        idle.cpu_pct, idle.children_pct, idle.rss_kib
    );
    println!(
        "   churn: CPU {:.2}% ({:.2}% in the tools it ran)  RSS {} KiB  (peak {} KiB); {} changes of {per_change} chains ({} rules) a second",
        churn.cpu_pct,
        churn.children_pct,
        churn.rss_kib,
        status_kib(pid, "VmHWM:"),
        changes.len(),
        per_change * (1 + DNATS)
    );
    println!(
        "   collector behind each change (commit → firewall_changed received): median {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} changes ({unseen} never seen); {} firewall_changed events while churning",
        pct(0.5),
        pct(0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        lags.len(),
        events.len().saturating_sub(before)
    );
}
