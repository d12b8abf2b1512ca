//! The firewall reader and monitor against the real kernel and tools, each
//! test in a network namespace of its own.
//!
//! `<procfs>/net` must be the test thread's namespace: /proc/net follows the
//! process's main thread, /proc/thread-self/net the calling thread.

mod support;

use reachmap_agent::facts::firewall::{
    Backend, CtState, Family, Hook, Match, Policy, PortRange, PortSet, RuleVerdict,
};
use reachmap_agent::inspect::firewall::{
    LegacyPoller, NftMonitor, Notification, Part, ReadOptions, RulesetChange, Touched,
    read_ruleset, read_touched,
};
use std::process::Command;
use std::time::Duration;
use support::{in_new_netns, require_root, sh};

fn options() -> ReadOptions {
    ReadOptions {
        procfs: "/proc/thread-self".into(),
        ..ReadOptions::default()
    }
}

fn fixture_path(name: &str) -> String {
    format!(
        "{}/tests/fixtures/firewall/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs `f` on a runtime of the calling thread (the test's namespace).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Runs `nft` with `args` and returns its pid.
fn nft(args: &[&str]) -> u32 {
    let mut child = Command::new("nft").args(args).spawn().expect("spawn nft");
    let pid = child.id();
    let status = child.wait().expect("wait nft");
    assert!(status.success(), "nft {args:?}");
    pid
}

#[test]
fn monitor_names_generation_and_process_then_reader_shows_the_rule() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        block_on(async {
            let mut monitor = NftMonitor::open().expect("open monitor");
            let pids = [
                nft(&["add", "table", "inet", "t"]),
                nft(&[
                    "add",
                    "chain",
                    "inet",
                    "t",
                    "input",
                    "{ type filter hook input priority 0; policy drop; }",
                ]),
                nft(&[
                    "add", "rule", "inet", "t", "input", "tcp", "dport", "22", "accept",
                ]),
            ];
            let capture = std::env::var("REACHMAP_CAPTURE_NFT_NOTIFY").ok();
            let mut changes: Vec<RulesetChange> = Vec::new();
            let mut datagrams = 0;
            while changes.len() < pids.len() {
                let raw = tokio::time::timeout(Duration::from_secs(5), monitor.recv_raw())
                    .await
                    .expect("a notification within 5 s")
                    .expect("recv");
                if let Some(dir) = &capture {
                    datagrams += 1;
                    std::fs::write(format!("{dir}/nft_notify_{datagrams}.bin"), &raw)
                        .expect("write capture");
                }
                let parsed = reachmap_agent::inspect::firewall::parse_nft_notification(&raw)
                    .expect("parse notification");
                for n in parsed {
                    if let Notification::NewGeneration(c) = n {
                        changes.push(c);
                    }
                }
            }
            for (change, pid) in changes.iter().zip(pids) {
                assert_eq!(change.pid, Some(pid), "{change:?}");
                assert_eq!(change.command.as_deref(), Some("nft"), "{change:?}");
            }
            assert!(
                changes
                    .windows(2)
                    .all(|w| w[1].generation > w[0].generation)
            );

            let rs = read_ruleset(&options()).expect("read ruleset");
            assert_eq!(rs.backends, [Backend::Nftables]);
            assert_eq!(rs.generation, changes.last().map(|c| c.generation));
            let table = rs.table(Family::Inet, "t").expect("table t");
            let input = table.chain("input").expect("chain input");
            assert_eq!(input.hook, Some(Hook::Input));
            assert_eq!(input.policy, Some(Policy::Drop));
            assert_eq!(input.rules.len(), 1);
            let rule = &input.rules[0];
            assert_eq!(rule.verdict, Some(RuleVerdict::Accept));
            assert!(rule.matches.contains(&Match::DestPort {
                negated: false,
                ports: PortSet::Literal(vec![PortRange { from: 22, to: 22 }])
            }));
            assert!(rule.handle.is_some());

            // A deletion is a change too, and the next reading differs.
            let handle = rule.handle.expect("handle").to_string();
            nft(&["delete", "rule", "inet", "t", "input", "handle", &handle]);
            let next = tokio::time::timeout(Duration::from_secs(5), monitor.next_change())
                .await
                .expect("change within 5 s")
                .expect("next change");
            assert_eq!(next.change.command.as_deref(), Some("nft"));
            // The deletion names its chain (NFPROTO_INET is 1).
            assert_eq!(
                next.touched,
                Touched::Parts(
                    [Part::Chain {
                        family: 1,
                        table: "t".into(),
                        chain: "input".into()
                    }]
                    .into()
                )
            );
            let after = read_ruleset(&options()).expect("re-read");
            assert_ne!(after.hash, rs.hash);
            assert_eq!(after.generation, Some(next.change.generation));
            // Reading only the touched part on top of the last reading
            // gives the same ruleset.
            let partial = read_touched(&options(), &rs, &next.touched).expect("partial read");
            assert_eq!(partial.hash, after.hash);
            assert_eq!(partial.tables, after.tables);
        });
    });
}

#[test]
fn reader_prefers_iptables_save_for_iptables_nft_tables() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        sh(&format!(
            "iptables-nft-restore < {}",
            fixture_path("iptables.rules")
        ));
        sh("nft add table inet native; nft add chain inet native c");
        // A native table under an iptables name, with rules iptables cannot show.
        sh("nft add table ip6 filter; \
            nft add chain ip6 filter input '{ type filter hook input priority 0; }'; \
            nft add rule ip6 filter input meta l4proto tcp numgen random mod 10 '<' 3 drop");
        let rs = read_ruleset(&options()).expect("read ruleset");
        assert_eq!(rs.backends, [Backend::Nftables, Backend::IptablesNft]);
        let filter = rs.table(Family::Ip, "filter").expect("filter");
        assert_eq!(filter.backend, Backend::IptablesNft);
        // nft's JSON would show this as an opaque xt match; iptables-save has it.
        let input = filter.chain("INPUT").expect("INPUT");
        assert_eq!(
            input.rules[1].matches,
            [Match::CtState {
                negated: false,
                states: vec![CtState::Related, CtState::Established]
            }]
        );
        assert_eq!(
            rs.tables
                .iter()
                .filter(|t| t.family == Family::Ip && t.name == "filter")
                .count(),
            1
        );
        assert_eq!(
            rs.table(Family::Inet, "native").map(|t| t.backend),
            Some(Backend::Nftables)
        );
        let native6 = rs.table(Family::Ip6, "filter").expect("ip6 filter");
        assert_eq!(native6.backend, Backend::Nftables);
        assert_eq!(native6.chain("input").map(|c| c.rules.len()), Some(1));
    });
}

#[test]
fn legacy_rules_are_read_and_polled() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let mut poller = LegacyPoller::new(options());
        assert!(!poller.poll().expect("first poll"));
        sh(&format!(
            "iptables-legacy-restore < {}",
            fixture_path("docker.rules")
        ));
        assert!(poller.poll().expect("poll after restore"));
        assert!(!poller.poll().expect("poll unchanged"));

        let rs = read_ruleset(&options()).expect("read ruleset");
        assert_eq!(rs.backends, [Backend::IptablesLegacy]);
        let nat = rs.table(Family::Ip, "nat").expect("nat");
        let docker = nat.chain("DOCKER").expect("DOCKER");
        assert!(matches!(
            docker.rules[1].verdict,
            Some(RuleVerdict::Dnat { .. })
        ));

        // Traffic moves counters, not the hash.
        sh("ping -c 1 -W 1 127.0.0.1 >/dev/null || true");
        assert!(!poller.poll().expect("poll after traffic"));
        sh("iptables-legacy -A DOCKER-USER -s 198.18.8.0/24 -j DROP");
        assert!(poller.poll().expect("poll after a new rule"));
    });
}

#[test]
fn two_thousand_rules_read_quickly() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let mut script = String::from(
            "table inet big {\n chain input {\n  type filter hook input priority 0; policy drop;\n",
        );
        for i in 0..2000u32 {
            script.push_str(&format!(
                "  ip saddr 198.18.{}.{}/32 tcp dport {} counter accept\n",
                i / 250,
                i % 250,
                1000 + i
            ));
        }
        script.push_str(" }\n}\n");
        let path = std::env::temp_dir().join(format!("reachmap-fw-big-{}.nft", std::process::id()));
        std::fs::write(&path, script).expect("write script");
        sh(&format!("nft -f {}", path.display()));
        let _ = std::fs::remove_file(&path);
        let started = std::time::Instant::now();
        let rs = read_ruleset(&options()).expect("read ruleset");
        let took = started.elapsed();
        eprintln!("read 2000 nft rules in {took:?}");
        let input = rs.table(Family::Inet, "big").and_then(|t| t.chain("input"));
        assert_eq!(input.map(|c| c.rules.len()), Some(2000));
        assert!(input.is_some_and(|c| c.rules.iter().all(|r| !r.unsupported)));
        // Generous for an unoptimised build on a loaded machine.
        assert!(took < Duration::from_secs(3), "{took:?}");
    });
}

/// A kube-proxy-style sync (`iptables-restore --noflush` declaring and
/// rewriting some chains, adding one, deleting another) names those chains,
/// and reading only them on top of the last reading gives exactly what a
/// full reading gives.
#[test]
fn touched_iptables_nft_chains_read_alone_equal_a_full_reading() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        sh(&format!(
            "iptables-nft-restore < {}",
            fixture_path("iptables.rules")
        ));
        sh(
            "printf '*nat\\n:KUBE-SVC-A - [0:0]\\n:KUBE-SVC-B - [0:0]\\n-A PREROUTING -j KUBE-SVC-A\\n-A KUBE-SVC-A -p tcp -m comment --comment \"sync 0\" -j DNAT --to-destination 198.18.0.9:80\\n-A KUBE-SVC-B -j RETURN\\nCOMMIT\\n' | iptables-nft-restore --noflush",
        );
        sh("nft add table inet native; nft add chain inet native c");
        block_on(async {
            let base = read_ruleset(&options()).expect("first reading");
            let mut monitor = NftMonitor::open().expect("open monitor");
            sh(
                "printf '*nat\\n:KUBE-SVC-A - [0:0]\\n:KUBE-SVC-B - [0:0]\\n:KUBE-SVC-C - [0:0]\\n-A KUBE-SVC-A -p tcp -m comment --comment \"sync 1\" -j DNAT --to-destination 198.18.0.10:80\\n-A KUBE-SVC-C -j RETURN\\n-X KUBE-SVC-B\\nCOMMIT\\n' | iptables-nft-restore --noflush",
            );
            let t = tokio::time::timeout(Duration::from_secs(5), monitor.next_change())
                .await
                .expect("a change within 5 s")
                .expect("change");
            let Touched::Parts(parts) = &t.touched else {
                panic!("parts unknown: {t:?}");
            };
            let chains: Vec<&str> = parts
                .iter()
                .filter_map(|p| match p {
                    Part::Chain {
                        family: 2,
                        table,
                        chain,
                    } if table == "nat" => Some(chain.as_str()),
                    _ => None,
                })
                .collect();
            for c in ["KUBE-SVC-A", "KUBE-SVC-B", "KUBE-SVC-C"] {
                assert!(chains.contains(&c), "{c} not in {parts:?}");
            }
            let partial = read_touched(&options(), &base, &t.touched).expect("partial read");
            let full = read_ruleset(&options()).expect("full reading");
            assert_ne!(full.hash, base.hash);
            assert_eq!(partial.hash, full.hash);
            let nat = |rs: &reachmap_agent::facts::firewall::Ruleset| {
                let mut t = rs.table(Family::Ip, "nat").expect("nat").clone();
                t.chains.sort_by(|a, b| a.name.cmp(&b.name));
                t
            };
            assert_eq!(nat(&partial), nat(&full));
            let nat_full = nat(&full);
            assert!(nat_full.chain("KUBE-SVC-B").is_none());
            let a = nat_full.chain("KUBE-SVC-A").expect("A");
            assert!(a.rules[0].text.contains("sync 1"), "{:?}", a.rules[0].text);
            assert!(nat_full.chain("KUBE-SVC-C").is_some());
        });
    });
}
