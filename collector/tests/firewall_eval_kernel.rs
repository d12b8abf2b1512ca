//! The evaluator against the kernel: random small nftables rulesets are
//! loaded into a real network namespace, read back the way the agent reads
//! them, and random TCP connections are tried for real. The evaluator's
//! verdict on the receive path must agree with what the kernel did:
//! accept = the connection opens, reject = refused at once, drop = timeout.
//!
//! Two namespaces joined by a veth pair: the sender has 198.18.250.1/30 and
//! a few more /32 source addresses in 198.18.250.0/24, the receiver
//! 198.18.250.2/30 with listeners on every port tried, so a refusal can only
//! come from a reject rule. Needs root; `RMTE_SEED` replays a run.

mod firewall_eval_support;

use firewall_eval_support::from_ruleset;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reachmap_agent::inspect::firewall::{ReadOptions, read_ruleset};
use reachmap_collector::packet::firewall::{Compiled, Final, Packet, PathKind};
use socket2::{Domain, Socket, Type};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CASES: usize = 50;
const PACKETS_PER_CASE: usize = 8;
const PORTS: [u16; 4] = [22, 80, 443, 8080];
/// 198.18.250.1 and the extra source addresses of the sender.
const SOURCES: [&str; 5] = [
    "198.18.250.1",
    "198.18.250.5",
    "198.18.250.66",
    "198.18.250.130",
    "198.18.250.200",
];
const RECEIVER: &str = "198.18.250.2";
/// A SYN-ACK over a veth takes microseconds; a dropped SYN is retried
/// after a second.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let ci = std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false);
    assert!(
        !ci,
        "this test needs root; CI must run it (run `sudo deploy/test.sh`)"
    );
    eprintln!("SKIPPED: this test needs root to create network namespaces");
    false
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it opens
/// belong to that namespace, and so do the processes it starts.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Removes namespaces a crashed run of this test left behind.
fn sweep_leftovers() {
    let list = run(&["ip", "netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("rmte-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// The sender and receiver namespaces, deleted on drop (even on panic).
struct Pair {
    sender: String,
    receiver: String,
    receiver_if: String,
    stop: Arc<AtomicBool>,
    acceptors: Vec<JoinHandle<()>>,
}

impl Pair {
    fn new() -> Pair {
        let pid = std::process::id();
        let mut pair = Pair {
            sender: format!("rmte-{pid}-0"),
            receiver: format!("rmte-{pid}-1"),
            receiver_if: format!("rmte{pid}b"),
            stop: Arc::new(AtomicBool::new(false)),
            acceptors: Vec::new(),
        };
        let (a, b) = (pair.sender.clone(), pair.receiver.clone());
        let (va, vb) = (format!("rmte{pid}a"), pair.receiver_if.clone());
        must(&["ip", "netns", "add", &a]);
        must(&["ip", "netns", "add", &b]);
        must(&[
            "ip", "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
        ]);
        must(&["ip", "-n", &a, "addr", "add", "198.18.250.1/30", "dev", &va]);
        for src in &SOURCES[1..] {
            must(&[
                "ip",
                "-n",
                &a,
                "addr",
                "add",
                &format!("{src}/32"),
                "dev",
                &va,
            ]);
        }
        must(&["ip", "-n", &b, "addr", "add", "198.18.250.2/30", "dev", &vb]);
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        must(&[
            "ip",
            "-n",
            &b,
            "route",
            "add",
            "198.18.250.0/24",
            "dev",
            &vb,
        ]);
        // The kernel sends one ICMP error per second and destination by
        // default: concurrent tries would see a reject as a timeout.
        must(&[
            "ip",
            "netns",
            "exec",
            &b,
            "sysctl",
            "-qw",
            "net.ipv4.icmp_ratelimit=0",
        ]);
        for port in PORTS {
            let stop = pair.stop.clone();
            pair.acceptors.push(in_netns(&b, move || {
                let l = TcpListener::bind((RECEIVER, port)).expect("listen");
                l.set_nonblocking(true).expect("nonblocking");
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        pair
    }

    /// Loads `ruleset` in place of the receiver's and reads it back the
    /// way the agent does.
    fn load(&self, ruleset: &str) -> Result<reachmap_collector::model::firewall::Firewall, String> {
        let path = std::env::temp_dir().join(format!("{}.nft", self.receiver));
        std::fs::write(&path, format!("flush ruleset\n{ruleset}"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded = run(&[
            "ip",
            "netns",
            "exec",
            &self.receiver,
            "nft",
            "-f",
            &path.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&path);
        loaded?;
        let rs = in_netns(&self.receiver, || {
            read_ruleset(&ReadOptions {
                procfs: "/proc/thread-self".into(),
                ..ReadOptions::default()
            })
        })
        .join()
        .map_err(|_| "the reader thread panicked".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(from_ruleset(&rs))
    }

    /// What the kernel does with a connection from `src` to the receiver.
    fn try_connect(&self, src: &'static str, port: u16) -> JoinHandle<Outcome> {
        in_netns(&self.sender, move || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            let from: SocketAddr = (ip(src), 0).into();
            s.bind(&from.into()).expect("bind the source address");
            let to: SocketAddr = (ip(RECEIVER), port).into();
            let started = Instant::now();
            match s.connect_timeout(&to.into(), CONNECT_TIMEOUT) {
                Ok(()) => Outcome::Open,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::Timeout,
                Err(e) if started.elapsed() < CONNECT_TIMEOUT => Outcome::Refused(e.to_string()),
                Err(e) => panic!("connect {src} -> {port}: {e}"),
            }
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
        for ns in [&self.sender, &self.receiver] {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("teardown: {e}");
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Open,
    Refused(String),
    Timeout,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn agrees(verdict: &Final, outcome: &Outcome) -> bool {
    matches!(
        (verdict, outcome),
        (Final::Accept, Outcome::Open)
            | (Final::Drop, Outcome::Timeout)
            | (Final::Reject { .. }, Outcome::Refused(_))
    )
}

/// A random prefix inside 198.18.250.0/24, written as nft accepts it.
fn prefix(rng: &mut StdRng) -> String {
    let len = *[24u8, 25, 26, 27, 28, 30, 32].choose(rng).expect("lengths");
    let host: u8 = rng.random();
    let mask = u8::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let base = if len <= 24 { 0 } else { host & mask };
    if len == 32 {
        format!("198.18.250.{host}")
    } else {
        format!("198.18.250.{base}/{len}")
    }
}

fn dport(rng: &mut StdRng) -> String {
    let neg = if rng.random_bool(0.15) { "!= " } else { "" };
    let v = match rng.random_range(0..4) {
        0 | 1 => PORTS.choose(rng).expect("ports").to_string(),
        2 => {
            let a = PORTS.choose(rng).expect("ports");
            let b = PORTS.choose(rng).expect("ports");
            if a == b {
                format!("{{ {a} }}")
            } else {
                format!("{{ {a}, {b} }}")
            }
        }
        _ => ["80-443", "400-9000", "1-79", "81-8079"]
            .choose(rng)
            .expect("ranges")
            .to_string(),
    };
    format!("tcp dport {neg}{v}")
}

fn matches(rng: &mut StdRng, has_set: bool, iface: &str) -> (String, bool) {
    let mut m = Vec::new();
    if rng.random_bool(0.6) {
        let neg = if rng.random_bool(0.15) { "!= " } else { "" };
        if has_set && rng.random_bool(0.3) {
            m.push(format!("ip saddr {neg}@allowed"));
        } else {
            m.push(format!("ip saddr {neg}{}", prefix(rng)));
        }
    }
    let tcp = rng.random_bool(0.6);
    if tcp {
        m.push(dport(rng));
    }
    if rng.random_bool(0.1) {
        m.push("ct state new".into());
    }
    if rng.random_bool(0.1) {
        let name = ["rmte*".to_string(), iface.to_string(), "eth0".into()];
        let neg = if rng.random_bool(0.3) { "!= " } else { "" };
        m.push(format!(
            "iifname {neg}\"{}\"",
            name.choose(rng).expect("names")
        ));
    }
    (m.join(" "), tcp)
}

/// `inet`: the table is of family inet, where `icmpx` is the ICMP reply
/// type that fits both families.
fn final_verdict(rng: &mut StdRng, tcp: bool, inet: bool) -> String {
    match rng.random_range(0..7) {
        0 | 1 => "accept".into(),
        2 | 3 => "drop".into(),
        4 => "reject".into(),
        5 if tcp => "reject with tcp reset".into(),
        5 if inet => "reject with icmpx type admin-prohibited".into(),
        5 => "reject with icmp type admin-prohibited".into(),
        _ => "counter".into(),
    }
}

/// One random ruleset in nft syntax.
fn ruleset(rng: &mut StdRng, iface: &str) -> String {
    let has_set = rng.random_bool(0.4);
    let has_sub = rng.random_bool(0.6);
    let mut out = String::from("table inet rmte {\n");
    if has_set {
        let elems: Vec<String> = (0..rng.random_range(1..4)).map(|_| prefix(rng)).collect();
        let _ = writeln!(
            out,
            "  set allowed {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}",
            elems.join(", ")
        );
    }
    let policy = if rng.random_bool(0.5) {
        "accept"
    } else {
        "drop"
    };
    let _ = writeln!(
        out,
        "  chain input {{\n    type filter hook input priority 0; policy {policy};"
    );
    if rng.random_bool(0.3) {
        out.push_str("    ct state established,related accept\n");
    }
    for _ in 0..rng.random_range(1..5) {
        let (m, tcp) = matches(rng, has_set, iface);
        let v = if has_sub && rng.random_bool(0.3) {
            "jump sub".to_string()
        } else {
            final_verdict(rng, tcp, true)
        };
        let _ = writeln!(out, "    {m} {v}");
    }
    out.push_str("  }\n");
    if has_sub {
        out.push_str("  chain sub {\n");
        for _ in 0..rng.random_range(1..4) {
            let (m, tcp) = matches(rng, has_set, iface);
            let v = if rng.random_bool(0.3) {
                "return".to_string()
            } else {
                final_verdict(rng, tcp, true)
            };
            let _ = writeln!(out, "    {m} {v}");
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    if rng.random_bool(0.3) {
        let prio = if rng.random_bool(0.5) { -10 } else { 10 };
        let (m, tcp) = matches(rng, false, iface);
        let v = final_verdict(rng, tcp, false);
        let _ = writeln!(
            out,
            "table ip rmte2 {{\n  chain input2 {{\n    type filter hook input priority {prio}; policy accept;\n    {m} {v}\n  }}\n}}"
        );
    }
    out
}

#[test]
fn random_rulesets_agree_with_the_kernel() {
    if !require_root() {
        return;
    }
    sweep_leftovers();
    let seed = std::env::var("RMTE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    eprintln!("seed {seed} (RMTE_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let pair = Pair::new();
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut tried, mut seen) = (0, [0usize; 3]);
    for case in 0..CASES {
        let text = ruleset(&mut rng, &pair.receiver_if);
        let fw = match pair.load(&text) {
            Ok(fw) => fw,
            Err(e) => panic!("case {case}: the generated ruleset does not load: {e}\n{text}"),
        };
        let compiled = Compiled::new(&fw);
        let mut packets: Vec<(&'static str, u16)> = (0..PACKETS_PER_CASE)
            .map(|_| {
                (
                    *SOURCES.choose(&mut rng).expect("sources"),
                    *PORTS.choose(&mut rng).expect("ports"),
                )
            })
            .collect();
        packets.sort_unstable();
        packets.dedup();
        let tries: Vec<_> = packets
            .iter()
            .map(|(src, port)| pair.try_connect(src, *port))
            .collect();
        for ((src, port), t) in packets.iter().zip(tries) {
            let outcome = t.join().expect("connect thread");
            let packet = Packet {
                iif: Some(pair.receiver_if.clone()),
                dst_is_local: true,
                ..Packet::tcp(ip(src), ip(RECEIVER), *port)
            };
            let d = compiled.evaluate(&packet, PathKind::Receive);
            tried += 1;
            seen[match outcome {
                Outcome::Open => 0,
                Outcome::Refused(_) => 1,
                Outcome::Timeout => 2,
            }] += 1;
            if !agrees(&d.verdict, &outcome) || !d.is_certain() {
                failures.push(format!(
                    "case {case}: tcp {src} -> {RECEIVER}:{port}: kernel {outcome:?}, evaluator {:?} \
                     by {:?} / policy {:?}, uncertain {:?}\nruleset:\n{text}trace: {:?}\n",
                    d.verdict,
                    d.deciding.as_ref().map(|r| &r.text),
                    d.policy.as_ref().map(|p| &p.chain),
                    d.uncertain,
                    d.trace
                ));
            }
        }
    }
    eprintln!(
        "{tried} connections over {CASES} rulesets in {:?}: {} open, {} refused, {} timed out",
        started.elapsed(),
        seen[0],
        seen[1],
        seen[2]
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The generator must exercise every outcome, or the test proves little.
    assert!(seen.iter().all(|n| *n > 0), "outcomes seen: {seen:?}");
}
