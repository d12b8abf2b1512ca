//! The matrix JSON as served, checked against what the agents sent.

use super::sim;
use serde::Deserialize;

#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(borrow)]
    nodes: Vec<&'a str>,
    #[serde(borrow)]
    cells: Vec<Cell<'a>>,
}

#[derive(Deserialize)]
struct Cell<'a> {
    src: &'a str,
    dst: &'a str,
    port: u32,
    kind: &'a str,
    state: &'a str,
    loss: f64,
    sent: u32,
    updated: i64,
    failure: Option<&'a str>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub nodes: usize,
    pub cells: usize,
    pub tcp_cells: usize,
    pub icmp_cells: usize,
    pub min_row: usize,
    pub max_row: usize,
    pub never_reported: usize,
    pub unknown: usize,
    pub states: [usize; 3],
    pub wrong: usize,
    pub first_wrong: Option<String>,
    pub sent_total: u64,
    /// Cells showing their agent's latest batch, the one before, older.
    pub latest: usize,
    pub previous: usize,
    pub older: usize,
    /// Batch handed to the stream → applied in the matrix (`updated`), ms.
    pub lag_ms: Vec<f64>,
}

/// `sends(src)`: the unix nanos the agent handed its recent batches to
/// the stream, oldest first; `None` for a source that is not one of this
/// run's agents (another collector's, on a shared store): its cells are
/// not checked.
pub fn check(body: &[u8], sends: impl Fn(&str) -> Option<Vec<i64>>) -> anyhow::Result<Report> {
    let doc: Doc = serde_json::from_slice(body)?;
    let mut r = Report {
        nodes: doc.nodes.len(),
        min_row: usize::MAX,
        ..Report::default()
    };
    let mut row = (None::<&str>, 0usize, None::<Vec<i64>>);
    let finish_row = |r: &mut Report, n: usize| {
        r.min_row = r.min_row.min(n);
        r.max_row = r.max_row.max(n);
    };
    for c in &doc.cells {
        if row.0 != Some(c.src) {
            if row.0.is_some() && row.2.is_some() {
                finish_row(&mut r, row.1);
            }
            row = (Some(c.src), 0, sends(c.src));
        }
        if row.2.is_none() {
            continue;
        }
        r.cells += 1;
        row.1 += 1;
        match c.kind {
            "tcp" => r.tcp_cells += 1,
            "icmp" => r.icmp_cells += 1,
            _ => {}
        }
        r.sent_total += u64::from(c.sent);
        if c.updated == 0 {
            r.never_reported += 1;
        }
        let (class, _) = sim::class(c.src, c.dst, c.port, c.kind);
        let expected_failure = sim::failure(class, c.kind).map(|o| match o {
            super::pb::ProbeOutcome::Refused => "refused",
            _ => "timeout",
        });
        match c.state {
            "unknown" => r.unknown += 1,
            s => {
                let i = ["ok", "degraded", "failing"].iter().position(|x| *x == s);
                if let Some(i) = i {
                    r.states[i] += 1;
                }
                let loss = match class {
                    sim::Class::Ok => 0.0,
                    sim::Class::Degraded => 0.2,
                    sim::Class::Failing => 1.0,
                };
                if s != class.state()
                    || c.failure != expected_failure
                    || (c.loss - loss).abs() > 1e-6
                {
                    r.wrong += 1;
                    r.first_wrong.get_or_insert_with(|| {
                        format!(
                            "{}→{}:{} {}: {s} loss {} failure {:?}, expected {} loss {loss} failure {expected_failure:?}",
                            c.src, c.dst, c.port, c.kind, c.loss, c.failure, class.state()
                        )
                    });
                }
            }
        }
        // Which batch the cell shows: the newest send at or before it.
        let s = row.2.as_deref().unwrap_or_default();
        match s.iter().rposition(|t| *t <= c.updated) {
            Some(i) => {
                r.lag_ms.push((c.updated - s[i]) as f64 / 1e6);
                match s.len() - 1 - i {
                    0 => r.latest += 1,
                    1 => r.previous += 1,
                    _ => r.older += 1,
                }
            }
            None => r.older += 1,
        }
    }
    if row.0.is_some() && row.2.is_some() {
        finish_row(&mut r, row.1);
    }
    if r.min_row == usize::MAX {
        r.min_row = 0;
    }
    r.lag_ms.sort_by(f64::total_cmp);
    Ok(r)
}
