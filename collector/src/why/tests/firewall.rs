//! Firewalls: the rule that drops a probe, through a port forward.

use super::*;

#[test]
fn a_port_forward_is_followed_to_the_rule_that_drops_it() {
    use crate::model::firewall::{
        Chain, Field, Firewall, Match, Rule, Table, Value, Verdict as V, VerdictKind,
    };
    let rule = |position: u32, port: u16, verdict: V, text: &str| Rule {
        handle: Some(u64::from(position) + 10),
        position,
        matches: vec![
            Match {
                field: Field::Protocol,
                negated: false,
                values: vec![Value::Text("tcp".into())],
            },
            Match {
                field: Field::DestinationPort,
                negated: false,
                values: vec![Value::Ports {
                    first: port,
                    last: port,
                }],
            },
        ],
        verdict,
        packets: None,
        bytes: None,
        comment: None,
        text: text.into(),
        unsupported: false,
    };
    let base = |name: &str, hook: &str, kind: &str, priority: i32, rules: Vec<Rule>| Chain {
        name: name.into(),
        hook: Some(hook.into()),
        chain_type: Some(kind.into()),
        priority: Some(priority),
        policy: Some("accept".into()),
        rules,
    };
    let fw = Firewall {
        backend: "nftables".into(),
        generation: Some(3),
        hash: 1,
        error: None,
        tables: vec![Table {
            family: "inet".into(),
            name: "edge".into(),
            backend: "nftables".into(),
            sets: vec![],
            chains: vec![
                base(
                    "pre",
                    "prerouting",
                    "nat",
                    -100,
                    vec![rule(
                        1,
                        7442,
                        V {
                            kind: VerdictKind::Redirect,
                            target: None,
                            port: Some(9000),
                        },
                        "tcp dport 7442 redirect to :9000",
                    )],
                ),
                base(
                    "input",
                    "input",
                    "filter",
                    0,
                    vec![rule(
                        1,
                        9000,
                        V {
                            kind: VerdictKind::Drop,
                            target: None,
                            port: None,
                        },
                        "tcp dport 9000 drop",
                    )],
                ),
            ],
        }],
    };
    let mut w = world();
    w.b().facts_mut().firewall = Some(fw);
    w.probe(7442, TargetState::Failing, 1.0, Some(Outcome::Timeout));
    let e = w.why(7442);
    let top = &e.causes[0];
    assert_eq!(
        (top.code.as_str(), top.node.as_str()),
        ("FIREWALL_INBOUND", "b"),
        "{:?}",
        codes(&e)
    );
    assert!(top.detail.contains("tcp dport 9000 drop"), "{}", top.detail);
    assert!(
        top.evidence
            .iter()
            .any(|v| v.text.contains("redirect") && v.text.contains("9000")),
        "the port forward is in the evidence: {:?}",
        top.evidence
    );
    assert!(
        e.checked.iter().any(|c| c.contains("rewrites")),
        "{:?}",
        e.checked
    );
}
