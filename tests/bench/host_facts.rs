//! Benchmark of the agent's host facts on a loaded host, side by side with
//! what a person would run by hand. Run it with `deploy/bench.sh host-facts`
//! (root; it builds release binaries first).
//!
//! The host: one namespace node holding 20,000 established TCP sockets (and
//! their listener) and a 2,000-rule nftables ruleset.
//!
//! 1. One-shot snapshot, whole processes: `reachmap-agent snapshot --format
//!    json` against `ss -tanp; nft -j list ruleset; ip -j addr; ip -j route`.
//! 2. The agent as a daemon on that host: resident memory and idle CPU.
//! 3. Event latency: an address change, a link going down, a ruleset change
//!    and a listener going away, from the command that makes it to the
//!    collector receiving the event (the collector's receive time).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use reachmap_fleet_tests::procstat::{cpu_ticks, pid_in_netns, status_kib};
use reachmap_fleet_tests::{Fleet, binary, eventually, firewall_rule_count};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ns_run(ns: &str, shell: &str) -> Duration {
    let start = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", shell])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    let took = start.elapsed();
    assert!(status.success(), "{shell} failed");
    took
}

struct Stats {
    min: f64,
    median: f64,
    mean: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let pick = |q: f64| ms[((q * (n as f64 - 1.0)).round() as usize).min(n - 1)];
    Stats {
        min: ms[0],
        median: pick(0.5),
        mean: ms.iter().sum::<f64>() / n as f64,
        p99: pick(0.99),
        max: ms[n - 1],
        n,
    }
}

fn established(ns: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/sockstat"])
        .output()
        .expect("sockstat");
    // "TCP: inuse 20003 orphan 0 tw 0 alloc 20003 mem 1"
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("TCP: inuse "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn ruleset_file(rules: usize) -> String {
    let mut s = String::from(
        "table inet bench {\n chain input {\n  type filter hook input priority 0; policy accept;\n",
    );
    for i in 0..rules {
        s.push_str(&format!(
            "  ip saddr 198.19.{}.{} tcp dport {} counter accept\n",
            i / 250,
            i % 250 + 1,
            10_000 + i
        ));
    }
    s.push_str(" }\n}\n");
    s
}

fn node_events(fleet: &Fleet) -> Vec<Value> {
    let out = fleet.cli(&["node", "node-0", "--format", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default()
}

fn received(e: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(e["received"].as_str()?).ok()
}

/// Runs `change` and returns the time until the collector received an
/// event of `kind` whose detail contains `needle`.
fn latency(fleet: &Fleet, kind: &str, needle: &str, change: impl FnOnce()) -> f64 {
    let t0 = SystemTime::now();
    change();
    let got = eventually(Duration::from_secs(10), "the event", || {
        node_events(fleet)
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains(needle)))
            .filter_map(received)
            .find(|r| *r + Duration::from_millis(1) >= t0)
            .ok_or(format!("no {kind} event with {needle:?} yet"))
    });
    got.duration_since(t0)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
        * 1000.0
}

fn main() {
    let pairs = env_usize("BENCH_SOCKET_PAIRS", 10_000);
    let rules = env_usize("BENCH_RULES", 2_000);
    let runs = env_usize("BENCH_RUNS", 15);
    let events = env_usize("BENCH_EVENTS", 40);
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces: run it as root"
    );
    let agent = binary("reachmap-agent");
    println!("agent binary: {}", agent.display());
    let mut fleet = Fleet::new("bench_host", 1);
    let ns = fleet.node(0).netns.clone();

    // The loaded host.
    // Several holders: a process may be limited to 20,000 open files.
    let per_holder = 4_000;
    for (k, start) in (0..pairs).step_by(per_holder).enumerate() {
        let n = per_holder.min(pairs - start).to_string();
        let port = (9000 + k).to_string();
        fleet.spawn(0, "hold", &[TOOL, "hold", &n, &port]);
    }
    eventually(Duration::from_secs(120), "sockets held", || {
        let n = established(&ns);
        if n > 2 * pairs {
            Ok(n)
        } else {
            Err(format!("{n} TCP sockets so far"))
        }
    });
    let file = fleet.dir().join("bench.nft");
    std::fs::write(&file, ruleset_file(rules)).expect("write ruleset");
    fleet.exec(0, &["nft", "-f", file.to_str().expect("utf-8")]);
    println!(
        "host: {} TCP sockets in use, {} nftables rules",
        established(&ns),
        rules
    );

    // 1. One-shot snapshot against the shell pipeline.
    let ours = format!("{} snapshot --format json", agent.display());
    let theirs = "ss -tanp; nft -j list ruleset; ip -j addr; ip -j route";
    let out_ours = Command::new("ip")
        .args(["netns", "exec", &ns, "sh", "-c", &ours])
        .output()
        .expect("snapshot");
    let snap: Value = serde_json::from_slice(&out_ours.stdout).expect("snapshot JSON");
    let listeners = snap["sockets"]["listeners"].as_array().map_or(0, Vec::len);
    let tcp_total = snap["sockets"]["summary"]["tcp_total"]
        .as_u64()
        .unwrap_or(0);
    let fw_rules = firewall_rule_count(&snap["firewall"]);
    println!(
        "snapshot sees {listeners} listeners, {tcp_total} TCP sockets, {fw_rules} rules; {} bytes of JSON",
        out_ours.stdout.len()
    );
    for _ in 0..2 {
        ns_run(&ns, &ours);
        ns_run(&ns, theirs);
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(ns_run(&ns, &ours).as_secs_f64() * 1000.0);
        b.push(ns_run(&ns, theirs).as_secs_f64() * 1000.0);
    }
    let (a, b) = (stats(a), stats(b));
    println!(
        "\n1. full snapshot, whole processes, {} runs each (ms)",
        a.n
    );
    println!("   {:<58} {:>8} {:>8} {:>8}", "", "min", "median", "mean");
    println!(
        "   {:<58} {:>8.1} {:>8.1} {:>8.1}",
        "reachmap-agent snapshot --format json", a.min, a.median, a.mean
    );
    println!(
        "   {:<58} {:>8.1} {:>8.1} {:>8.1}",
        theirs, b.min, b.median, b.mean
    );
    println!(
        "   speed-up (median): {:.1}x",
        b.median / a.median.max(f64::EPSILON)
    );

    // 2. The daemon on the loaded host, default intervals.
    fleet.start_collector();
    fleet.start_agent_with(
        0,
        &["--poll-interval", "10s", "--socket-poll-interval", "30s"],
    );
    std::thread::sleep(Duration::from_secs(20));
    let pid = pid_in_netns(&ns, "reachmap-agent").expect("the agent runs in the node");
    let window = Duration::from_secs(env_usize("BENCH_IDLE_SECS", 30) as u64);
    let t0 = cpu_ticks(pid).0;
    std::thread::sleep(window);
    let ticks = cpu_ticks(pid).0 - t0;
    let hz = 100.0;
    let cpu_pct = ticks as f64 / hz / window.as_secs_f64() * 100.0;
    println!(
        "\n2. agent daemon on that host (defaults: listeners 250ms, connection counts 30s, resources 10s)"
    );
    println!(
        "   resident memory {} KiB (peak {} KiB); CPU {:.2}% of one core over {}s idle",
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "VmHWM:"),
        cpu_pct,
        window.as_secs()
    );

    // 3. Event latency.
    fleet.exec(
        0,
        &[
            "ip", "link", "add", "rmb0", "type", "veth", "peer", "name", "rmb1",
        ],
    );
    fleet.exec(0, &["ip", "link", "set", "rmb1", "up"]);
    let mut results: Vec<(&str, Stats)> = Vec::new();
    let mut addr = Vec::new();
    for i in 0..events {
        let ip = format!("198.18.7.{}", i + 1);
        addr.push(latency(
            &fleet,
            "address_added",
            &format!("{ip}/32"),
            || {
                fleet.exec(
                    0,
                    &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
                );
            },
        ));
    }
    results.push(("address added", stats(addr)));
    // Each transition is awaited before the next: flaps closer together
    // than the watcher's 20 ms debounce are one reading.
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..events {
        up.push(latency(
            &fleet,
            "link_changed",
            "rmb0: admin down -> up",
            || {
                fleet.exec(0, &["ip", "link", "set", "rmb0", "up"]);
            },
        ));
        down.push(latency(
            &fleet,
            "link_changed",
            "rmb0: admin up -> down",
            || {
                fleet.exec(0, &["ip", "link", "set", "rmb0", "down"]);
            },
        ));
    }
    results.push(("link up", stats(up)));
    results.push(("link down", stats(down)));
    let mut fw = Vec::new();
    for i in 0..events {
        let port = (20_000 + i).to_string();
        fw.push(latency(&fleet, "firewall_changed", "by nft", || {
            fleet.exec(
                0,
                &[
                    "nft", "add", "rule", "inet", "bench", "input", "tcp", "dport", &port, "accept",
                ],
            );
        }));
    }
    results.push(("ruleset changed", stats(fw)));
    let mut gone = Vec::new();
    for i in 0..events {
        let port = 30_000 + i;
        let listen = format!("127.0.0.1:{port}");
        let pid = fleet.spawn(0, "listen", &[TOOL, "listen", &listen]);
        eventually(Duration::from_secs(10), "listener seen", || {
            node_events(&fleet)
                .iter()
                .any(|e| {
                    e["kind"] == "listener_appeared"
                        && e["detail"].as_str().is_some_and(|d| d.contains(&listen))
                })
                .then_some(())
                .ok_or("not yet")
        });
        gone.push(latency(&fleet, "listener_gone", &listen, || {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }));
    }
    results.push(("listener gone", stats(gone)));
    println!("\n3. event latency, change made -> event received by the collector (ms)");
    println!(
        "   {:<18} {:>5} {:>8} {:>8} {:>8}",
        "", "n", "median", "p99", "max"
    );
    for (name, s) in &results {
        println!(
            "   {:<18} {:>5} {:>8.1} {:>8.1} {:>8.1}",
            name, s.n, s.median, s.p99, s.max
        );
    }
    println!(
        "\nresident memory after the event run: {} KiB",
        status_kib(pid, "VmRSS:")
    );
}
