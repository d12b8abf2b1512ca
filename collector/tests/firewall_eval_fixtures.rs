//! The evaluator on rulesets captured from real hosts (the agent's
//! fixtures: `nft -j list ruleset`, `iptables-save`, a Docker-style ruleset
//! with NAT and user chains), each read the production way: the agent's
//! parser, the agent's wire conversion, the collector's validation.

mod firewall_eval_support;

use firewall_eval_support::{ip, iptables_fixture, nft_fixture, tcp_in};
use reachmap_agent::facts::firewall::Backend;
use reachmap_collector::model::firewall::Firewall;
use reachmap_collector::packet::firewall::{Compiled, CtState, Final, L4, Packet, PathKind};

const ME: &str = "198.18.0.2";

fn udp_in(src: &str, port: u16) -> Packet {
    Packet {
        protocol: L4::Udp,
        ..tcp_in(src, ME, port, "eth0")
    }
}

fn echo_in(src: &str) -> Packet {
    Packet {
        protocol: L4::Icmp,
        dport: None,
        icmp_type: Some(8),
        ..tcp_in(src, ME, 0, "eth0")
    }
}

fn established(p: Packet) -> Packet {
    Packet {
        ct_state: CtState::Established,
        ..p
    }
}

fn rej(with: &str) -> Final {
    Final::Reject {
        with: Some(with.into()),
    }
}

/// One packet: its path, the expected verdict, the deciding rule as
/// `chain#position` or `policy:chain`, how many rules leave it uncertain,
/// and the NAT destination `addr:port` when one is expected.
struct Case {
    name: &'static str,
    packet: Packet,
    path: PathKind,
    verdict: Final,
    by: &'static str,
    uncertain: usize,
    nat: Option<&'static str>,
}

fn case(name: &'static str, packet: Packet, verdict: Final, by: &'static str) -> Case {
    Case {
        name,
        packet,
        path: PathKind::Receive,
        verdict,
        by,
        uncertain: 0,
        nat: None,
    }
}

impl Case {
    fn uncertain(mut self, n: usize) -> Case {
        self.uncertain = n;
        self
    }

    fn nat(mut self, to: &'static str) -> Case {
        self.nat = Some(to);
        self
    }

    fn send(mut self) -> Case {
        self.path = PathKind::Send;
        self
    }
}

fn check(fw: &Firewall, cases: Vec<Case>) {
    let compiled = Compiled::new(fw);
    let mut failures = Vec::new();
    for c in cases {
        let d = compiled.evaluate(&c.packet, c.path);
        let by = match (&d.deciding, &d.policy) {
            (Some(r), _) => format!("{}#{}", r.chain, r.position),
            (None, Some(p)) => format!("policy:{}", p.chain),
            (None, None) => String::new(),
        };
        let nat = d.nat.as_ref().map(|n| {
            format!(
                "{}:{}",
                n.dst.map(|a| a.to_string()).unwrap_or_default(),
                n.port.map(|p| p.to_string()).unwrap_or_default()
            )
        });
        if d.verdict != c.verdict
            || by != c.by
            || d.uncertain.len() != c.uncertain
            || nat.as_deref() != c.nat
        {
            failures.push(format!(
                "{}: expected {:?} by {} ({} uncertain, nat {:?}), got {:?} by {by} \
                 (uncertain {:?}, nat {nat:?})\n  deciding: {:?}\n  trace: {:?}",
                c.name,
                c.verdict,
                c.by,
                c.uncertain,
                c.nat,
                d.verdict,
                d.uncertain,
                d.deciding.map(|r| r.text),
                d.trace
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nftables_ruleset() {
    let fw = nft_fixture("nft_ruleset.json");
    let reject_admin = rej("icmpx admin-prohibited");
    check(
        &fw,
        vec![
            case(
                "ssh from an allowed prefix",
                tcp_in("198.18.0.5", ME, 22, "eth0"),
                Final::Accept,
                "input#4",
            ),
            case(
                "web port range from a single allowed address",
                tcp_in("198.18.5.7", ME, 85, "eth0"),
                Final::Accept,
                "input#4",
            ),
            // `meta mark 0x1 accept` is not evaluated: probably rejected.
            case(
                "ssh from elsewhere",
                tcp_in("198.18.7.7", ME, 22, "eth0"),
                reject_admin.clone(),
                "input#11",
            )
            .uncertain(1),
            case(
                "established",
                established(tcp_in("198.18.7.7", ME, 5000, "eth0")),
                Final::Accept,
                "input#1",
            ),
            case(
                "loopback",
                tcp_in("127.0.0.1", "127.0.0.1", 5000, "lo"),
                Final::Accept,
                "input#3",
            ),
            case(
                "jump to services, accepted there",
                tcp_in("198.18.2.9", ME, 8080, "eth1"),
                Final::Accept,
                "services#1",
            ),
            case(
                "services rejects with tcp reset",
                tcp_in("198.18.7.7", ME, 8001, "eth1"),
                rej("tcp reset"),
                "services#2",
            ),
            case(
                "DNAT on eth0 forwards to 198.18.0.10:80",
                tcp_in("198.18.7.7", ME, 8080, "eth0"),
                Final::Accept,
                "policy:postrouting",
            )
            .nat("198.18.0.10:80"),
            case(
                "redirect 2222 to 22, then accepted as ssh",
                tcp_in("198.18.0.9", ME, 2222, "eth0"),
                Final::Accept,
                "input#4",
            )
            .nat(":22"),
            case(
                "dns from outside the negated prefix",
                udp_in("198.18.8.1", 53),
                Final::Accept,
                "input#6",
            ),
            case(
                "dns from inside the negated prefix",
                udp_in("198.18.9.1", 53),
                reject_admin,
                "input#11",
            )
            .uncertain(1),
            case("ping", echo_in("198.18.9.1"), Final::Accept, "input#7"),
            case(
                "IPv6 from the blocked set",
                tcp_in("2001:db8::1", "2001:db8::2", 22, "eth0"),
                Final::Drop,
                "input#5",
            ),
            case(
                "output drop",
                Packet::tcp(ip(ME), ip("198.19.1.1"), 443),
                Final::Drop,
                "output#1",
            )
            .send(),
            case(
                "output accepted by policy",
                Packet::tcp(ip(ME), ip("198.18.1.1"), 443),
                Final::Accept,
                "policy:output",
            )
            .send()
            // `oifname "eth0" masquerade` cannot filter: not listed.
            .uncertain(0),
        ],
    );
}

#[test]
fn iptables_legacy_ruleset() {
    let fw = iptables_fixture(
        "iptables_legacy.txt",
        Some("ip6tables_legacy.txt"),
        Backend::IptablesLegacy,
    );
    let prohibited = rej("icmp-host-prohibited");
    let mut from_high_port = tcp_in("198.18.3.5", ME, 9000, "eth0");
    from_high_port.sport = Some(40000);
    check(
        &fw,
        vec![
            // The mangle table's MARK rule matches too and goes on.
            case(
                "ssh from the lab, with its comment",
                tcp_in("198.18.0.5", ME, 22, "eth0"),
                Final::Accept,
                "INPUT#4",
            ),
            case(
                "multiport into SERVICES, accepted",
                tcp_in("198.18.2.5", ME, 443, "eth0"),
                Final::Accept,
                "SERVICES#1",
            ),
            case(
                "SERVICES rejects with tcp-reset",
                tcp_in("198.18.3.5", ME, 8001, "eth0"),
                rej("tcp-reset"),
                "SERVICES#2",
            ),
            case(
                "back from SERVICES, rejected at the end of INPUT",
                tcp_in("198.18.3.5", ME, 443, "eth0"),
                prohibited.clone(),
                "INPUT#10",
            ),
            case(
                "goto SERVICES from INPUT ends at INPUT's policy",
                from_high_port,
                Final::Drop,
                "policy:INPUT",
            ),
            case(
                "the source port unknown: the goto might apply",
                tcp_in("198.18.3.5", ME, 9000, "eth0"),
                prohibited.clone(),
                "INPUT#10",
            )
            .uncertain(1),
            // raw: `-j CT --notrack` for udp 123: untracked, so NAT is
            // skipped and `--ctstate ESTABLISHED` does not match.
            case(
                "ntp is untracked",
                udp_in("198.18.8.8", 123),
                prohibited.clone(),
                "INPUT#10",
            ),
            case("ping", echo_in("198.18.8.8"), Final::Accept, "INPUT#7"),
            case(
                "DNAT to 198.18.0.10:80, forwarded by policy",
                tcp_in("198.18.2.5", ME, 8080, "eth0"),
                Final::Accept,
                "policy:FORWARD",
            )
            .nat("198.18.0.10:80"),
            case(
                "IPv6 ssh from the documentation prefix",
                tcp_in("2001:db8::5", "2001:db8::2", 22, "eth0"),
                Final::Accept,
                "INPUT#2",
            ),
            case(
                "IPv6 ssh from elsewhere",
                tcp_in("2001:db9::5", "2001:db8::2", 22, "eth0"),
                rej("icmp6-adm-prohibited"),
                "INPUT#4",
            ),
        ],
    );
}

#[test]
fn docker_ruleset_with_nat_and_user_chains() {
    let fw = iptables_fixture("docker_legacy.txt", None, Backend::IptablesLegacy);
    let to_container = |src: &str, port: u16| Packet {
        oif: Some("docker0".into()),
        ..tcp_in(src, ME, port, "eth0")
    };
    check(
        &fw,
        vec![
            case(
                "published port 8080 reaches the container",
                to_container("198.18.8.1", 8080),
                Final::Accept,
                "DOCKER#1",
            )
            .nat("172.17.0.2:80"),
            case(
                "DOCKER-USER drops the blocked prefix",
                to_container("198.18.7.1", 8080),
                Final::Drop,
                "DOCKER-USER#1",
            )
            .nat("172.17.0.2:80"),
            case(
                "published udp 5353",
                Packet {
                    protocol: L4::Udp,
                    ..to_container("198.18.8.1", 5353)
                },
                Final::Accept,
                "DOCKER#2",
            )
            .nat("172.17.0.3:53"),
            case(
                "the host itself: INPUT accepts by policy",
                tcp_in("198.18.8.1", ME, 22, "eth0"),
                Final::Accept,
                "policy:INPUT",
            ),
            // Without the route's interface, `-o docker0` cannot be decided.
            case(
                "published port, output interface unknown",
                tcp_in("198.18.8.1", ME, 8080, "eth0"),
                Final::Drop,
                "policy:FORWARD",
            )
            .uncertain(1)
            .nat("172.17.0.2:80"),
            case(
                "not DNATed when the address is not local",
                Packet {
                    dst_is_local: false,
                    ..to_container("198.18.8.1", 8080)
                },
                Final::Accept,
                "policy:INPUT",
            ),
        ],
    );
}

#[test]
fn nft_view_of_iptables_nft_rules_is_uncertain() {
    // What `nft -j` shows of iptables-nft tables: xt matches and targets
    // without options. The reader avoids it; were it all there is, the
    // answer must say it is not sure rather than guess.
    let fw = nft_fixture("nft_iptables_nft_view.json");
    let d = Compiled::new(&fw).evaluate(&tcp_in("198.18.0.5", ME, 22, "eth0"), PathKind::Receive);
    assert!(!d.is_certain(), "{d:?}");
    assert!(
        d.uncertain
            .iter()
            .any(|u| u.rule.text.contains("conntrack")),
        "{:?}",
        d.uncertain
    );
}

#[test]
fn a_rule_with_a_large_inline_set_keeps_every_element() {
    // 1,000 addresses in one rule print as over 8 KiB of text: the agent
    // shortens the text, the collector takes the ruleset (before, it refused
    // the whole snapshot), and the parsed matches still hold every address.
    let addresses: Vec<String> = (0..1000)
        .map(|i| format!("\"198.19.{}.{}\"", i / 250, i % 250 + 1))
        .collect();
    let json = format!(
        r#"{{"nftables": [
  {{"metainfo": {{"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}}},
  {{"table": {{"family": "inet", "name": "big", "handle": 1}}}},
  {{"chain": {{"family": "inet", "table": "big", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}}},
  {{"rule": {{"family": "inet", "table": "big", "chain": "input", "handle": 2, "expr": [
    {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "saddr"}}}}, "right": {{"set": [{}]}}}}}},
    {{"drop": null}}
  ]}}}}
]}}"#,
        addresses.join(", ")
    );
    let tables = reachmap_agent::inspect::firewall::parse_nft_json(&json).expect("nft JSON parses");
    let fw = firewall_eval_support::through_the_wire(tables);
    let rule = &fw.tables[0].chains[0].rules[0];
    assert!(
        rule.text.len() <= reachmap_proto::MAX_RULE_TEXT,
        "{}",
        rule.text.len()
    );
    assert!(rule.text.ends_with('…'));
    let compiled = Compiled::new(&fw);
    let last = compiled.evaluate(&tcp_in("198.19.3.250", ME, 22, "eth0"), PathKind::Receive);
    assert_eq!(last.verdict, Final::Drop, "{last:?}");
    let other = compiled.evaluate(&tcp_in("198.19.4.1", ME, 22, "eth0"), PathKind::Receive);
    assert_eq!(other.verdict, Final::Accept, "{other:?}");
}
