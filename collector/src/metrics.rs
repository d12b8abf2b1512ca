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

    w.family(
        "reachmap_matrix_heap_bytes",
        "gauge",
        "Bytes the matrix holds on the heap (its tables at capacity; allocator overhead not counted).",
    );
    w.sample(
        "reachmap_matrix_heap_bytes",
        &[],
        matrix.heap_bytes() as f64,
    );
    w.family(
        "reachmap_store_owed_cells",
        "gauge",
        "Cells whose changes the store's queue had no room for, kept in the matrix until written as one change each.",
    );
    w.sample("reachmap_store_owed_cells", &[], matrix.owed() as f64);
    w.family(
        "reachmap_store_deferred_cell_changes_total",
        "counter",
        "Cell changes not written as they happened because the store's queue was full; each cell's latest is written later.",
    );
    w.sample(
        "reachmap_store_deferred_cell_changes_total",
        &[],
        matrix.deferred_total() as f64,
    );

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
    let gauges: [(&str, &str, f64); 4] = [
        (
            "reachmap_collector_leader",
            "1 while this collector holds the store's fleet lock and does the fleet-wide work (pruning); always 1 on the embedded store.",
            bool_value(s.leader),
        ),
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
#[path = "metrics_tests.rs"]
mod tests;
