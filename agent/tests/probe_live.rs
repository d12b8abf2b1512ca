//! The prober against a real kernel: each test runs in a network namespace of
//! its own (loopback only, plus nft rules made for the test), so every
//! outcome is made for real — a listener, no listener, a DROP, a REJECT, no
//! route. Only 127.0.0.1, ::1 and 198.18.0.0/15 are ever probed.

mod support;

use reachmap_agent::probe::{
    self, Outcome, Plan, ProbeKind, Prober, ProberOutput, StateChange, TargetState, TempListeners,
    probe_once,
};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{in_new_netns, require_root, sh};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_millis(300);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn target(id: u64, addr: &str, port: u16, kind: ProbeKind) -> probe::Target {
    probe::Target {
        id,
        node: format!("node{id}"),
        address: addr.parse().expect("address"),
        port,
        kind,
        service: None,
        http_path: None,
        expect_status: None,
        tls: None,
        udp: None,
    }
}

async fn outcome(addr: &str, port: u16, kind: ProbeKind) -> Outcome {
    probe_once(&target(1, addr, port, kind), TIMEOUT)
        .await
        .outcome
}

/// A listening port on 127.0.0.1 the kernel picked.
fn free_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

fn input_rule(family: &str, rule: &str) {
    sh(&format!(
        "nft add table {family} t && nft add chain {family} t in '{{ type filter hook input priority 0; }}' && nft add rule {family} t in {rule}"
    ));
}

#[test]
fn tcp_open_and_refused() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        rt().block_on(async {
            let stop = CancellationToken::new();
            let addr: SocketAddr = "127.0.0.1:7442".parse().expect("addr");
            let server = tokio::spawn(probe::serve_probe_port(addr, stop.clone()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let r = probe_once(&target(1, "127.0.0.1", 7442, ProbeKind::Tcp), TIMEOUT).await;
            assert_eq!(r.outcome, Outcome::Open);
            assert!(r.rtt.is_some_and(|d| d < TIMEOUT));
            assert_eq!(
                outcome("127.0.0.1", 7443, ProbeKind::Tcp).await,
                Outcome::Refused
            );
            assert_eq!(outcome("::1", 7443, ProbeKind::Tcp).await, Outcome::Refused);
            stop.cancel();
            server.await.expect("join").expect("served");
            assert_eq!(
                outcome("127.0.0.1", 7442, ProbeKind::Tcp).await,
                Outcome::Refused
            );
        });
    });
}

#[test]
fn tcp_timeout_on_drop() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let (_l, port) = free_listener();
        input_rule("inet", &format!("tcp dport {port} drop"));
        rt().block_on(async {
            let start = Instant::now();
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Timeout
            );
            assert!(start.elapsed() >= TIMEOUT);
        });
    });
}

#[test]
fn tcp_reject_with_reset_is_refused() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let (_l, port) = free_listener();
        input_rule("inet", &format!("tcp dport {port} reject with tcp reset"));
        rt().block_on(async {
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Refused
            );
        });
    });
}

#[test]
fn tcp_reject_admin_prohibited_is_unreachable() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let (_l, port) = free_listener();
        input_rule(
            "ip",
            &format!("tcp dport {port} reject with icmp type admin-prohibited"),
        );
        rt().block_on(async {
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Unreachable
            );
        });
    });
}

#[test]
fn no_route_inside_the_test_range() {
    if !require_root() {
        return;
    }
    // The namespace has only lo: no route to 198.19.0.0/16.
    in_new_netns(|| {
        rt().block_on(async {
            assert_eq!(
                outcome("198.19.0.1", 80, ProbeKind::Tcp).await,
                Outcome::NoRoute
            );
            assert_eq!(
                outcome("198.19.0.1", 0, ProbeKind::Icmp).await,
                Outcome::NoRoute
            );
        });
    });
}

#[test]
fn icmp_echo_and_dropped_echo() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        rt().block_on(async {
            let r = probe_once(&target(1, "127.0.0.1", 0, ProbeKind::Icmp), TIMEOUT).await;
            assert_eq!(r.outcome, Outcome::Open);
            assert!(r.rtt.is_some());
            assert_eq!(outcome("::1", 0, ProbeKind::Icmp).await, Outcome::Open);
        });
        input_rule("ip", "icmp type echo-request drop");
        rt().block_on(async {
            assert_eq!(
                outcome("127.0.0.1", 0, ProbeKind::Icmp).await,
                Outcome::Timeout
            );
            // IPv6 is not affected by the IPv4 rule.
            assert_eq!(outcome("::1", 0, ProbeKind::Icmp).await, Outcome::Open);
        });
    });
}

#[test]
fn icmp_admin_prohibited_is_unreachable() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        input_rule(
            "ip",
            "icmp type echo-request reject with icmp type admin-prohibited",
        );
        rt().block_on(async {
            assert_eq!(
                outcome("127.0.0.1", 0, ProbeKind::Icmp).await,
                Outcome::Unreachable
            );
        });
    });
}

/// Answers every connection with `response` (after reading the request).
fn http_server(response: &'static str) -> u16 {
    let (l, port) = free_listener();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(response.as_bytes());
        }
    });
    port
}

#[test]
fn http_expected_and_unexpected_status() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let ok = http_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let unavailable = http_server("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let not_http = http_server("SSH-2.0-OpenSSH_9.6\r\n");
        rt().block_on(async {
            let mut t = target(1, "127.0.0.1", ok, ProbeKind::Http);
            t.http_path = Some("/healthz".into());
            let r = probe_once(&t, TIMEOUT).await;
            assert_eq!((r.outcome, r.http_status), (Outcome::Open, Some(200)));

            t.port = unavailable;
            let r = probe_once(&t, TIMEOUT).await;
            assert_eq!((r.outcome, r.http_status), (Outcome::HttpStatus, Some(503)));
            t.expect_status = Some(503);
            assert_eq!(probe_once(&t, TIMEOUT).await.outcome, Outcome::Open);

            t.port = not_http;
            let r = probe_once(&t, TIMEOUT).await;
            assert_eq!((r.outcome, r.http_status), (Outcome::HttpStatus, None));

            let (_l, silent) = free_listener();
            t.port = silent;
            assert_eq!(probe_once(&t, TIMEOUT).await.outcome, Outcome::Timeout);
            drop(_l);
            assert_eq!(probe_once(&t, TIMEOUT).await.outcome, Outcome::Refused);
        });
    });
}

fn plan(version: u64, targets: Vec<probe::Target>, interval: Duration, rate: u32) -> Plan {
    let fleet: HashSet<IpAddr> = targets.iter().map(|t| t.address).collect();
    Plan {
        version,
        interval,
        timeout: TIMEOUT,
        max_probes_per_second: rate,
        window: 5,
        targets,
        fleet_addresses: fleet,
        names: Vec::new(),
        results_by_id: false,
    }
}

/// Probes started per 100 ms slice over `slices` slices.
async fn started_per_slice(stats: &probe::ProberStats, slices: usize) -> Vec<u64> {
    let mut counts = Vec::with_capacity(slices);
    let mut last = stats.probes_started.load(Ordering::Relaxed);
    for _ in 0..slices {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stats.probes_started.load(Ordering::Relaxed);
        counts.push(now - last);
        last = now;
    }
    counts
}

#[test]
fn probes_are_spread_over_the_interval_and_rate_limited() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        rt().block_on(async {
            // 200 refused targets (no listener) every second: ~20 per 100 ms.
            let targets = (0..200)
                .map(|i| target(i, "127.0.0.1", 20_000 + i as u16, ProbeKind::Tcp))
                .collect();
            let (plan_tx, plan_rx) = watch::channel(Some(Arc::new(plan(
                1,
                targets,
                Duration::from_secs(1),
                10_000,
            ))));
            let (out_tx, mut out_rx) = mpsc::channel(64);
            let drain = tokio::spawn(async move { while out_rx.recv().await.is_some() {} });
            let stop = CancellationToken::new();
            let prober = Prober::new();
            let stats = prober.stats();
            let task = tokio::spawn(prober.run(plan_rx, out_tx, stop.clone()));
            let counts = started_per_slice(&stats, 20).await;
            let total: u64 = counts.iter().sum();
            assert!((360..=440).contains(&total), "{total} in 2 s: {counts:?}");
            assert!(counts.iter().all(|&n| n <= 50), "bursty: {counts:?}");

            // The same targets at most 50 a second.
            let targets = (0..200)
                .map(|i| target(i, "127.0.0.1", 20_000 + i as u16, ProbeKind::Tcp))
                .collect();
            plan_tx.send_replace(Some(Arc::new(plan(2, targets, Duration::from_secs(1), 50))));
            tokio::time::sleep(Duration::from_millis(200)).await;
            let counts = started_per_slice(&stats, 20).await;
            let total: u64 = counts.iter().sum();
            assert!((90..=110).contains(&total), "{total} in 2 s: {counts:?}");
            assert!(
                stats.probes_skipped.load(Ordering::Relaxed) > 0,
                "rate-limited targets skip slots"
            );
            stop.cancel();
            task.await.expect("prober");
            drain.await.expect("drain");
        });
    });
}

/// The next `Changed` output, skipping batches.
async fn next_change(rx: &mut mpsc::Receiver<ProberOutput>) -> StateChange {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(ProberOutput::Changed(c)) => return c,
                Some(ProberOutput::Batch { .. }) => {}
                None => panic!("prober stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a state change within 5 s")
}

type Batch = (u64, Vec<probe::WindowSummary>, Vec<probe::NameResolution>);

async fn next_batch(rx: &mut mpsc::Receiver<ProberOutput>) -> Batch {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(ProberOutput::Batch {
                    plan_version,
                    windows,
                    names,
                    ..
                }) => return (plan_version, windows, names),
                Some(ProberOutput::Changed(_)) => {}
                None => panic!("prober stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a batch within 5 s")
}

#[test]
fn prober_reports_windows_and_state_changes() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let (listener, open_port) = free_listener();
        // Accept and close, like a probe port.
        std::thread::spawn(move || for _ in listener.incoming() {});
        rt().block_on(async {
            let interval = Duration::from_millis(200);
            let open = target(1, "127.0.0.1", open_port, ProbeKind::Tcp);
            let closed = target(2, "127.0.0.1", 9, ProbeKind::Tcp);
            let mut outsider = target(3, "198.18.99.99", 80, ProbeKind::Tcp);
            let mut p = plan(1, vec![open.clone(), closed.clone()], interval, 100);
            // A name is looked up through the host's resolver, never probed.
            let localhost = probe::FleetName {
                name: "localhost".into(),
                node: "n1".into(),
            };
            p.names = vec![localhost.clone()];
            outsider.node = "not-a-member".into();
            p.targets.push(outsider);
            let (plan_tx, plan_rx) = watch::channel(Some(Arc::new(p)));
            let (out_tx, mut out_rx) = mpsc::channel(16);
            let stop = CancellationToken::new();
            let prober = Prober::new();
            let stats = prober.stats();
            let task = tokio::spawn(prober.run(plan_rx, out_tx, stop.clone()));

            // A new failing target is news at once; a new healthy one is not.
            let c = next_change(&mut out_rx).await;
            assert_eq!((c.target.id, c.old, c.new), (2, None, TargetState::Failing));
            assert_eq!(c.outcome, Outcome::Refused);
            let (version, windows, mut names) = next_batch(&mut out_rx).await;
            assert_eq!(version, 1);
            while names.is_empty() {
                names = next_batch(&mut out_rx).await.2;
            }
            assert_eq!(names.len(), 1, "{names:?}");
            assert_eq!(names[0].name, localhost);
            assert!(
                names[0].error.is_none() && names[0].addresses.iter().all(IpAddr::is_loopback),
                "{names:?}"
            );
            let ids: Vec<u64> = windows.iter().map(|w| w.target.id).collect();
            assert_eq!(ids, vec![1, 2], "the outsider is never probed");
            assert_eq!(stats.targets_refused.load(Ordering::Relaxed), 1);
            assert_eq!(windows[0].state, TargetState::Ok);
            assert!(windows[0].rtt_p50_ms.is_some());
            assert_eq!(windows[1].refused, windows[1].sent);

            // Break the open path: degraded at the first timeout, failing
            // at the second.
            input_rule("inet", &format!("tcp dport {open_port} drop"));
            let c = next_change(&mut out_rx).await;
            assert_eq!(
                (c.target.id, c.old, c.new, c.outcome),
                (
                    1,
                    Some(TargetState::Ok),
                    TargetState::Degraded,
                    Outcome::Timeout
                )
            );
            let c = next_change(&mut out_rx).await;
            assert_eq!((c.target.id, c.new), (1, TargetState::Failing));
            sh("nft delete table inet t");
            let c = next_change(&mut out_rx).await;
            assert_eq!((c.target.id, c.new), (1, TargetState::Degraded));

            // A new plan version keeps the window of a target that stays
            // (even under a new id) and drops the others.
            let mut kept = open.clone();
            kept.id = 10;
            plan_tx.send_replace(Some(Arc::new(plan(2, vec![kept], interval, 100))));
            let (version, windows) = loop {
                let (v, w, _) = next_batch(&mut out_rx).await;
                if v == 2 && !w.is_empty() {
                    break (v, w);
                }
            };
            assert_eq!(version, 2);
            assert_eq!(windows.len(), 1);
            assert_eq!(windows[0].target.id, 10);
            assert!(windows[0].timeout >= 1, "window kept: {:?}", windows[0]);

            stop.cancel();
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .expect("stops on shutdown")
                .expect("prober");
        });
    });
}

#[test]
fn full_output_drops_batches_but_not_changes() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        rt().block_on(async {
            let interval = Duration::from_millis(100);
            let p = plan(
                1,
                vec![target(1, "127.0.0.1", 9, ProbeKind::Tcp)],
                interval,
                100,
            );
            let (_plan_tx, plan_rx) = watch::channel(Some(Arc::new(p)));
            let (out_tx, mut out_rx) = mpsc::channel(1);
            let stop = CancellationToken::new();
            let prober = Prober::new();
            let stats = prober.stats();
            let task = tokio::spawn(prober.run(plan_rx, out_tx, stop.clone()));
            // Nobody reads: after the change fills the channel, every batch
            // (one per 100 ms) is dropped. Waited for, not timed: a busy
            // machine may run the prober late.
            let dropped = tokio::time::timeout(Duration::from_secs(30), async {
                while stats.batches_dropped.load(Ordering::Relaxed) < 3 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert!(
                dropped.is_ok(),
                "batches dropped: {}",
                stats.batches_dropped.load(Ordering::Relaxed)
            );
            // The change was waiting for room, not dropped.
            let c = next_change(&mut out_rx).await;
            assert_eq!(c.new, TargetState::Failing);
            stop.cancel();
            task.await.expect("prober");
        });
    });
}

#[test]
fn temporary_listeners() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        rt().block_on(async {
            let stop = CancellationToken::new();
            let temp = TempListeners::new(stop.clone());
            let port = temp.open(0, Duration::from_secs(30)).await.expect("open");
            assert_ne!(port, 0);
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Open
            );
            assert_eq!(outcome("::1", port, ProbeKind::Tcp).await, Outcome::Open);
            assert_eq!(temp.ports(), vec![port]);

            // A port in use is refused, whoever holds it.
            let e = temp
                .open(port, Duration::from_secs(30))
                .await
                .expect_err("in use");
            assert_eq!(e.to_string(), format!("port {port} is in use"));
            let (_held, held_port) = free_listener();
            let e = temp
                .open(held_port, Duration::from_secs(30))
                .await
                .expect_err("in use");
            assert!(matches!(e, probe::ProbeError::PortInUse(p) if p == held_port));

            temp.close(port).await.expect("close");
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Refused
            );
            assert!(temp.close(port).await.is_err());

            // Closes by itself after its time to live.
            let port = temp
                .open(0, Duration::from_millis(200))
                .await
                .expect("open");
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Open
            );
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(
                outcome("127.0.0.1", port, ProbeKind::Tcp).await,
                Outcome::Refused
            );
            assert!(temp.ports().is_empty());
        });
    });
}

#[test]
fn icmp_over_unprivileged_ping_sockets() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        // Allow ping sockets for root's group in this namespace only.
        sh("sysctl -qw net.ipv4.ping_group_range='0 0'");
        rt().block_on(async {
            assert_eq!(
                outcome("127.0.0.1", 0, ProbeKind::Icmp).await,
                Outcome::Open
            );
            assert_eq!(outcome("::1", 0, ProbeKind::Icmp).await, Outcome::Open);
            assert_eq!(
                outcome("198.19.0.1", 0, ProbeKind::Icmp).await,
                Outcome::NoRoute
            );
        });
        input_rule(
            "ip",
            "icmp type echo-request reject with icmp type admin-prohibited",
        );
        rt().block_on(async {
            assert_eq!(
                outcome("127.0.0.1", 0, ProbeKind::Icmp).await,
                Outcome::Unreachable
            );
        });
    });
}
