//! The Prometheus text: families, labels, escaping, the per-pair cap.

use super::*;
use crate::probe::{FailureCounts, Outcome, PlannedTarget, ProbeKind, TargetState, WindowInput};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

type Labels = BTreeMap<String, String>;
type Sample = (String, Labels, f64);

/// A strict reader of the text format: every line is a HELP, a TYPE or a
/// sample; HELP then TYPE once per family, before its samples, and a
/// family's samples are contiguous. Returns the samples and the types.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut current = String::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP name text");
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["gauge", "counter"].contains(&kind), "{kind}");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            let new = types.insert(name.to_string(), kind.to_string());
            assert!(new.is_none(), "TYPE twice for {name}");
            current = name.to_string();
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line}");
        let split = line.find(['{', ' ']).expect("name");
        let (name, mut rest) = line.split_at(split);
        assert_eq!(name, current, "sample outside its family: {line}");
        let mut labels = Labels::new();
        if rest.starts_with('{') {
            let b: Vec<char> = rest.chars().collect();
            let mut i = 1;
            loop {
                let mut key = String::new();
                while b[i] != '=' {
                    assert!(b[i].is_ascii_alphanumeric() || b[i] == '_', "{line}");
                    key.push(b[i]);
                    i += 1;
                }
                assert_eq!(b[i + 1], '"', "{line}");
                i += 2;
                let mut value = String::new();
                while b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                        value.push(match b[i] {
                            'n' => '\n',
                            c @ ('\\' | '"') => c,
                            c => panic!("bad escape \\{c} in {line}"),
                        });
                    } else {
                        assert_ne!(b[i], '\n');
                        value.push(b[i]);
                    }
                    i += 1;
                }
                labels.insert(key, value);
                i += 1;
                match b[i] {
                    ',' => i += 1,
                    '}' => break,
                    c => panic!("{c} after a label in {line}"),
                }
            }
            let consumed: usize = b[..=i].iter().map(|c| c.len_utf8()).sum();
            rest = &rest[consumed..];
        }
        let value = rest.strip_prefix(' ').expect("space before value");
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect("number"),
        };
        samples.push((name.to_string(), labels, value));
    }
    (samples, types)
}

fn get(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|s| s.2)
}

fn window(node: &str, ok: u32) -> WindowInput {
    WindowInput {
        target: PlannedTarget::new(
            node,
            "198.18.0.1".parse().expect("ip"),
            7442,
            ProbeKind::Tcp,
        )
        .into(),
        sent: 10,
        ok,
        failures: FailureCounts {
            refused: 10 - ok,
            ..FailureCounts::default()
        },
        rtt_p50_ms: (ok > 0).then_some(2.0),
        rtt_p99_ms: (ok > 0).then_some(4.0),
        last_outcome: Some(Outcome::Open),
        last_failure: None,
        state: if ok == 10 {
            TargetState::Ok
        } else {
            TargetState::Failing
        },
        last_http_status: None,
        last_tls_error: None,
    }
}

fn fleet(names: &[&str]) -> (Vec<NodeMetrics>, Matrix) {
    let mut m = Matrix::new(Duration::from_secs(1));
    for n in names {
        m.add_node(n);
    }
    for src in names {
        let targets: Vec<PlannedTarget> = names
            .iter()
            .filter(|d| *d != src)
            .map(|d| PlannedTarget::new(d, "198.18.0.1".parse().expect("ip"), 7442, ProbeKind::Tcp))
            .collect();
        m.set_plan(src, &targets);
    }
    let nodes = names
        .iter()
        .enumerate()
        .map(|(i, n)| NodeMetrics {
            name: n.to_string(),
            connected: i != 1,
            clock_offset_seconds: (i == 0).then_some(-0.25),
            events_total: 7,
            dropped_events_total: i as u64,
            sources: vec![SourceMetrics {
                source: "kernel_log",
                state: if i == 2 { "down" } else { "ok" },
                errors_total: 3 * i as u64,
                restarts_total: i as u64,
            }],
        })
        .collect();
    (nodes, m)
}

#[test]
fn source_health_series() {
    let (nodes, m) = fleet(&["a", "b", "c"]);
    let text = render(&MetricsInput {
        nodes: &nodes,
        matrix: &m,
        pair_cap: DEFAULT_PAIR_CAP,
        store: None,
    });
    let (s, types) = parse(&text);
    let state = |node, st| {
        get(
            &s,
            "reachmap_node_source_state",
            &[("node", node), ("source", "kernel_log"), ("state", st)],
        )
    };
    assert_eq!(state("c", "down"), Some(1.0));
    assert_eq!(state("c", "ok"), Some(0.0));
    assert_eq!(state("a", "ok"), Some(1.0));
    assert_eq!(
        get(
            &s,
            "reachmap_node_source_errors_total",
            &[("node", "c"), ("source", "kernel_log")]
        ),
        Some(6.0)
    );
    assert_eq!(types["reachmap_node_source_restarts_total"], "counter");
}

#[test]
fn fleet_and_matrix_series() {
    let (nodes, mut m) = fleet(&["a", "b", "c"]);
    m.apply("a", vec![window("b", 10), window("c", 5)], 1);
    let text = render(&MetricsInput {
        nodes: &nodes,
        matrix: &m,
        pair_cap: DEFAULT_PAIR_CAP,
        store: None,
    });
    let (s, types) = parse(&text);
    assert_eq!(
        get(&s, "reachmap_nodes", &[("state", "connected")]),
        Some(2.0)
    );
    assert_eq!(
        get(&s, "reachmap_nodes", &[("state", "disconnected")]),
        Some(1.0)
    );
    assert_eq!(get(&s, "reachmap_node_up", &[("node", "b")]), Some(0.0));
    assert_eq!(
        get(&s, "reachmap_node_clock_offset_seconds", &[("node", "a")]),
        Some(-0.25)
    );
    assert_eq!(
        get(&s, "reachmap_node_clock_offset_seconds", &[("node", "b")]),
        None
    );
    assert_eq!(
        get(&s, "reachmap_node_dropped_events_total", &[("node", "c")]),
        Some(2.0)
    );
    assert_eq!(types["reachmap_node_events_total"], "counter");
    assert_eq!(
        get(&s, "reachmap_matrix_cells", &[("state", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        get(&s, "reachmap_matrix_cells", &[("state", "failing")]),
        Some(1.0)
    );
    assert_eq!(
        get(&s, "reachmap_matrix_cells", &[("state", "unknown")]),
        Some(4.0)
    );
    // Six cells of 64 bytes at least, and far from a megabyte.
    let heap = get(&s, "reachmap_matrix_heap_bytes", &[]).expect("heap bytes");
    assert!((6.0 * 64.0..1e6).contains(&heap), "{heap}");
    let out = |n, st| {
        get(
            &s,
            "reachmap_node_outbound_cells",
            &[("node", n), ("state", st)],
        )
    };
    assert_eq!(out("a", "ok"), Some(1.0));
    assert_eq!(out("a", "failing"), Some(1.0));
    assert_eq!(out("b", "unknown"), Some(2.0));
    let inb = |n, st| {
        get(
            &s,
            "reachmap_node_inbound_cells",
            &[("node", n), ("state", st)],
        )
    };
    assert_eq!(inb("c", "failing"), Some(1.0));
    assert_eq!(inb("c", "unknown"), Some(1.0));
    assert_eq!(
        get(&s, "reachmap_node_outbound_loss_ratio", &[("node", "a")]),
        Some(0.25)
    );
    assert_eq!(
        get(&s, "reachmap_node_outbound_loss_ratio", &[("node", "b")]),
        None
    );
    assert_eq!(get(&s, "reachmap_pair_series_capped", &[]), Some(0.0));
    let pair = [
        ("src", "a"),
        ("dst", "c"),
        ("port", "7442"),
        ("kind", "tcp"),
    ];
    assert_eq!(get(&s, "reachmap_pair_loss_ratio", &pair), Some(0.5));
    assert_eq!(get(&s, "reachmap_pair_rtt_seconds", &pair), Some(0.002));
    assert_eq!(
        s.iter()
            .filter(|x| x.0 == "reachmap_pair_loss_ratio")
            .count(),
        6
    );
    // Labels never carry addresses or failure text.
    let keys: BTreeSet<&str> = s
        .iter()
        .flat_map(|x| x.1.keys().map(String::as_str))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["dst", "kind", "node", "port", "source", "src", "state"])
    );
}

#[test]
fn pair_series_stop_at_the_cap() {
    let (nodes, m) = fleet(&["a", "b", "c"]);
    let text = render(&MetricsInput {
        nodes: &nodes,
        matrix: &m,
        pair_cap: 5,
        store: None,
    });
    let (s, types) = parse(&text);
    assert_eq!(get(&s, "reachmap_pair_series_capped", &[]), Some(1.0));
    assert!(
        s.iter()
            .all(|x| !x.0.starts_with("reachmap_pair_") || x.0 == "reachmap_pair_series_capped")
    );
    assert!(!types.contains_key("reachmap_pair_loss_ratio"));
    assert!(!types.contains_key("reachmap_pair_rtt_seconds"));
    // At the cap exactly, they are written.
    let text = render(&MetricsInput {
        nodes: &nodes,
        matrix: &m,
        pair_cap: 6,
        store: None,
    });
    let (s, _) = parse(&text);
    assert_eq!(
        s.iter()
            .filter(|x| x.0 == "reachmap_pair_loss_ratio")
            .count(),
        6
    );
}

#[test]
fn label_values_are_escaped() {
    let odd = "we\"ird\\no\nde";
    let (nodes, m) = fleet(&[odd, "b"]);
    let text = render(&MetricsInput {
        nodes: &nodes,
        matrix: &m,
        pair_cap: 10,
        store: None,
    });
    assert!(text.contains(r#"node="we\"ird\\no\nde""#), "{text}");
    let (s, _) = parse(&text);
    assert_eq!(get(&s, "reachmap_node_up", &[("node", odd)]), Some(1.0));
    let pair = [
        ("src", odd),
        ("dst", "b"),
        ("port", "7442"),
        ("kind", "tcp"),
    ];
    assert_eq!(get(&s, "reachmap_pair_loss_ratio", &pair), Some(0.0));
    assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    let mut v = String::new();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-7, 3.0] {
        push_value(&mut v, x);
        v.push(' ');
    }
    assert_eq!(v, "NaN +Inf -Inf 0.0000001 3 ");
}

#[test]
fn empty_fleet() {
    let m = Matrix::new(Duration::from_secs(1));
    let text = render(&MetricsInput {
        nodes: &[],
        matrix: &m,
        pair_cap: 0,
        store: None,
    });
    let (s, _) = parse(&text);
    assert_eq!(
        get(&s, "reachmap_nodes", &[("state", "connected")]),
        Some(0.0)
    );
    assert_eq!(get(&s, "reachmap_pair_series_capped", &[]), Some(0.0));
}
