//! `/metrics`: the fleet and the matrix in the Prometheus text exposition
//! format 0.0.4.
//!
//! Label sets are bounded by the fleet: per node, per state, never per
//! address or failure text. Per-pair series (`reachmap_pair_*`) are what made
//! other mesh probers unusable at scale — N² series — so they are written
//! only while the matrix has at most `pair_cap` cells; beyond,
//! `reachmap_pair_series_capped` is 1 and none are written (the per-node
//! aggregates and `/api/v1/matrix` still tell the whole story).

use crate::probe::{CellState, Matrix};
use std::collections::HashMap;
use std::fmt::Write;

pub const DEFAULT_PAIR_CAP: usize = 1000;

/// One node's figures from the fleet state.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeMetrics {
    pub name: String,
    pub connected: bool,
    /// Agent clock minus collector clock, when measured.
    pub clock_offset_seconds: Option<f64>,
    pub events_total: u64,
    pub dropped_events_total: u64,
    /// Each fact source the agent reported: (name, state name, errors
    /// total, restarts total).
    pub sources: Vec<SourceMetrics>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceMetrics {
    pub source: &'static str,
    pub state: &'static str,
    pub errors_total: u64,
    pub restarts_total: u64,
}

const SOURCE_STATES: [&str; 4] = ["starting", "ok", "degraded", "down"];

pub struct MetricsInput<'a> {
    pub nodes: &'a [NodeMetrics],
    pub matrix: &'a Matrix,
    pub pair_cap: usize,
    pub store: Option<&'a crate::store::Status>,
}

pub fn render(input: &MetricsInput) -> String {
    let mut w = Exposition::default();
    let nodes = input.nodes;

    w.family("reachmap_nodes", "gauge", "Fleet members by stream state.");
    let connected = nodes.iter().filter(|n| n.connected).count();
    w.sample(
        "reachmap_nodes",
        &[("state", "connected")],
        connected as f64,
    );
    w.sample(
        "reachmap_nodes",
        &[("state", "disconnected")],
        (nodes.len() - connected) as f64,
    );

    w.family(
        "reachmap_node_up",
        "gauge",
        "1 while the node's agent is connected.",
    );
    for n in nodes {
        w.sample(
            "reachmap_node_up",
            &[("node", &n.name)],
            bool_value(n.connected),
        );
    }
    w.family(
        "reachmap_node_clock_offset_seconds",
        "gauge",
        "Agent clock minus collector clock, where measured.",
    );
    for n in nodes {
        if let Some(offset) = n.clock_offset_seconds {
            w.sample(
                "reachmap_node_clock_offset_seconds",
                &[("node", &n.name)],
                offset,
            );
        }
    }
    w.family(
        "reachmap_node_events_total",
        "counter",
        "Events received from the node.",
    );
    for n in nodes {
        w.sample(
            "reachmap_node_events_total",
            &[("node", &n.name)],
            n.events_total as f64,
        );
    }
    w.family(
        "reachmap_node_dropped_events_total",
        "counter",
        "Events the node's agent dropped before the collector stored them.",
    );
    for n in nodes {
        w.sample(
            "reachmap_node_dropped_events_total",
            &[("node", &n.name)],
            n.dropped_events_total as f64,
        );
    }

    source_families(&mut w, nodes);
    if let Some(st) = input.store {
        store_families(&mut w, st);
    }
    matrix_families(&mut w, input.matrix);
    pair_families(&mut w, input.matrix, input.pair_cap);
    w.out
}

/// Fact-source health: one state series per source (as Kubernetes does for
/// pod phases), so an alert on `state="down"` needs no label matching.
fn source_families(w: &mut Exposition, nodes: &[NodeMetrics]) {
    w.family(
        "reachmap_node_source_state",
        "gauge",
        "1 for the state each fact source of the node's agent is in (starting, ok, degraded, down).",
    );
    for n in nodes {
        for s in &n.sources {
            for state in SOURCE_STATES {
                w.sample(
                    "reachmap_node_source_state",
                    &[("node", &n.name), ("source", s.source), ("state", state)],
                    bool_value(s.state == state),
                );
            }
        }
    }
    w.family(
        "reachmap_node_source_errors_total",
        "counter",
        "Errors a fact source of the node's agent met, as the agent counts them.",
    );
    for n in nodes {
        for s in &n.sources {
            w.sample(
                "reachmap_node_source_errors_total",
                &[("node", &n.name), ("source", s.source)],
                s.errors_total as f64,
            );
        }
    }
    w.family(
        "reachmap_node_source_restarts_total",
        "counter",
        "Times the node's agent restarted a fact source after it failed.",
    );
    for n in nodes {
        for s in &n.sources {
            w.sample(
                "reachmap_node_source_restarts_total",
                &[("node", &n.name), ("source", s.source)],
                s.restarts_total as f64,
            );
        }
    }
}

#[derive(Default)]
struct NodeCells {
    outbound: [u64; 4],
    inbound: [u64; 4],
    loss_sum: f64,
    loss_cells: u64,
}

fn matrix_families(w: &mut Exposition, matrix: &Matrix) {
    let mut totals = [0u64; 4];
    let mut per_node: HashMap<&str, NodeCells> = HashMap::new();
    for c in matrix.iter() {
        let state = c.cell.state().index();
        totals[state] += 1;
        let src = per_node.entry(c.src).or_default();
        src.outbound[state] += 1;
        if c.cell.sent() > 0 {
            src.loss_sum += c.cell.loss();
            src.loss_cells += 1;
        }
        per_node.entry(c.dst).or_default().inbound[state] += 1;
    }
    let names = matrix.nodes();
    let empty = NodeCells::default();

    w.family("reachmap_matrix_cells", "gauge", "Matrix cells by state.");
    for s in CellState::ALL {
        w.sample(
            "reachmap_matrix_cells",
            &[("state", s.as_str())],
            totals[s.index()] as f64,
        );
    }
    for (name, help, inbound) in [
        (
            "reachmap_node_outbound_cells",
            "Matrix cells probed from the node, by state.",
            false,
        ),
        (
            "reachmap_node_inbound_cells",
            "Matrix cells probing the node, by state.",
            true,
        ),
    ] {
        w.family(name, "gauge", help);
        for n in &names {
            let counts = per_node.get(n.as_str()).unwrap_or(&empty);
            let counts = if inbound {
                &counts.inbound
            } else {
                &counts.outbound
            };
            for s in CellState::ALL {
                w.sample(
                    name,
                    &[("node", n), ("state", s.as_str())],
                    counts[s.index()] as f64,
                );
            }
        }
    }
    w.family(
        "reachmap_node_outbound_loss_ratio",
        "gauge",
        "Mean loss over the node's outbound cells with results, 0..1.",
    );
    for n in &names {
        if let Some(c) = per_node.get(n.as_str()).filter(|c| c.loss_cells > 0) {
            w.sample(
                "reachmap_node_outbound_loss_ratio",
                &[("node", n)],
                c.loss_sum / c.loss_cells as f64,
            );
        }
    }
}

fn pair_families(w: &mut Exposition, matrix: &Matrix, cap: usize) {
    let capped = matrix.len() > cap;
    w.family(
        "reachmap_pair_series_capped",
        "gauge",
        "1 when the matrix has more cells than the per-pair series cap, and no reachmap_pair_* series are written.",
    );
    w.sample("reachmap_pair_series_capped", &[], bool_value(capped));
    if capped {
        return;
    }
    let cells = matrix.cells(None);
    let labels = |c: &crate::probe::CellRef<'_>, port: &str| {
        [
            ("src", c.src.to_string()),
            ("dst", c.dst.to_string()),
            ("port", port.to_string()),
            ("kind", c.cell.kind().as_str().to_string()),
        ]
    };
    w.family(
        "reachmap_pair_loss_ratio",
        "gauge",
        "Loss of one matrix cell over its window, 0..1.",
    );
    for c in &cells {
        let l = labels(c, &c.cell.port().to_string());
        w.sample_owned("reachmap_pair_loss_ratio", &l, c.cell.loss());
    }
    w.family(
        "reachmap_pair_rtt_seconds",
        "gauge",
        "Median round trip of one matrix cell's successful probes.",
    );
    for c in &cells {
        if let Some(ms) = c.cell.rtt_ms() {
            let l = labels(c, &c.cell.port().to_string());
            w.sample_owned("reachmap_pair_rtt_seconds", &l, ms / 1000.0);
        }
    }
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

#[derive(Default)]
struct Exposition {
    out: String,
}

fn store_families(w: &mut Exposition, s: &crate::store::Status) {
    let gauges: [(&str, &str, f64); 3] = [
        (
            "reachmap_store_writable",
            "1 while the store commits; 0 while it fails (events are then not acked).",
            bool_value(s.writable),
        ),
        (
            "reachmap_store_bytes",
            "Size of the store file and its WAL.",
            s.bytes as f64,
        ),
        (
            "reachmap_store_last_prune_seconds",
            "How long the last prune round took.",
            s.last_prune_seconds,
        ),
    ];
    for (name, help, v) in gauges {
        w.family(name, "gauge", help);
        w.sample(name, &[], v);
    }
    w.family("reachmap_store_rows", "gauge", "Rows held, by table.");
    for (table, n) in [
        ("events", s.events),
        ("cell_changes", s.cell_changes),
        ("fact_changes", s.fact_changes),
    ] {
        w.sample("reachmap_store_rows", &[("table", table)], n as f64);
    }
    let counters: [(&str, &str, u64); 5] = [
        (
            "reachmap_store_commits_total",
            "Batches committed.",
            s.commits_total,
        ),
        (
            "reachmap_store_commit_failures_total",
            "Batches that failed to commit (a full disk, say).",
            s.commit_failures_total,
        ),
        (
            "reachmap_store_dropped_writes_total",
            "Cell and fact changes dropped because the writer was behind or failing.",
            s.dropped_writes_total,
        ),
        (
            "reachmap_store_prunes_total",
            "Prune rounds run.",
            s.prunes_total,
        ),
        (
            "reachmap_store_pruned_rows_total",
            "Rows deleted by retention and the size limit.",
            s.pruned_rows_total,
        ),
    ];
    for (name, help, v) in counters {
        w.family(name, "counter", help);
        w.sample(name, &[], v as f64);
    }
    w.family(
        "reachmap_store_oldest_timestamp_seconds",
        "gauge",
        "The oldest moment the store still holds (0: nothing pruned yet).",
    );
    w.sample(
        "reachmap_store_oldest_timestamp_seconds",
        &[],
        s.oldest as f64 / 1e9,
    );
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    fn sample_owned(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sample(name, &borrowed, value);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_into(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{
        FailureCounts, Outcome, PlannedTarget, ProbeKind, TargetState, WindowInput,
    };
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
            ),
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
                .map(|d| {
                    PlannedTarget::new(d, "198.18.0.1".parse().expect("ip"), 7442, ProbeKind::Tcp)
                })
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
        assert!(s.iter().all(|x| !x.0.starts_with("reachmap_pair_") || x.0 == "reachmap_pair_series_capped"));
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
}
