//! The bad cells findings are made of, read from the matrix once and
//! referred to by index, and the time findings may spend asking `why`.

use super::{Finding, Key, MAX_CELLS_LISTED, since_text};
use crate::probe::{CellState, Matrix};
use crate::state::Node;
use crate::why::Explanation;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// Cells sampled for when a group of cells turned bad.
const SINCE_SAMPLE: usize = 50;

/// How long one `findings` may spend in `why` altogether, so a fleet of
/// many different causes still gets its answer promptly. Cells left
/// unexplained are counted.
pub const EXPLAIN_BUDGET: Duration = Duration::from_millis(50);

/// The failing and degraded cells, in (src, dst, port) order, and which of
/// them a finding covers.
pub struct Bad<'a> {
    pub cells: Vec<(&'a str, &'a str, u16)>,
    pub covered: Vec<bool>,
}

impl<'a> Bad<'a> {
    pub fn new(m: &'a Matrix) -> Bad<'a> {
        let mut cells: Vec<(&str, &str, u16)> = Vec::new();
        m.for_each_in_order(|c| {
            if matches!(c.cell.state(), CellState::Failing | CellState::Degraded) {
                cells.push((c.src, c.dst, c.cell.port()));
            }
        });
        Bad {
            covered: vec![false; cells.len()],
            cells,
        }
    }

    /// The cells between the nodes `keep` picks, not yet covered.
    pub fn select(&self, mut keep: impl FnMut(&str, &str) -> bool) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|i| !self.covered[*i])
            .filter(|i| keep(self.cells[*i].0, self.cells[*i].1))
            .collect()
    }

    /// The index of a cell, by its (src, dst, port).
    pub fn find(&self, cell: (&str, &str, u16)) -> Option<usize> {
        self.cells.binary_search(&cell).ok()
    }

    pub fn uncovered(&self) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|i| !self.covered[*i])
            .collect()
    }

    pub fn key(&self, i: usize) -> Key {
        let (s, d, p) = self.cells[i];
        Key {
            src: s.to_string(),
            dst: d.to_string(),
            port: p,
        }
    }

    /// Gives `f` the cells `idx` (sorted), marks them covered, and dates it.
    pub fn assign(
        &mut self,
        mut f: Finding,
        idx: &[usize],
        nodes: &BTreeMap<String, Node>,
    ) -> Finding {
        let step = (idx.len() / SINCE_SAMPLE).max(1);
        f.since = idx
            .iter()
            .step_by(step)
            .filter_map(|i| {
                let (s, d, p) = self.cells[*i];
                crate::why::bad_since(nodes.get(s)?, d, p)
            })
            .min()
            .unwrap_or(0);
        f.title.push_str(&since_text(f.since));
        for i in idx {
            self.covered[*i] = true;
        }
        f.cell_count = u32::try_from(idx.len()).unwrap_or(u32::MAX);
        f.cells = idx
            .iter()
            .take(MAX_CELLS_LISTED)
            .map(|i| self.key(*i))
            .collect();
        f
    }
}

/// `why`, until the budget is spent.
pub struct Explainer<'a> {
    deadline: Instant,
    owners: &'a [crate::why::Declared],
    pub asked: usize,
    pub refused: usize,
}

impl<'a> Explainer<'a> {
    pub fn new(budget: Duration, owners: &'a [crate::why::Declared]) -> Explainer<'a> {
        Explainer {
            deadline: Instant::now() + budget,
            owners,
            asked: 0,
            refused: 0,
        }
    }

    pub fn explain(
        &mut self,
        m: &Matrix,
        nodes: &BTreeMap<String, Node>,
        (src, dst, port): (&str, &str, u16),
        now: SystemTime,
    ) -> Option<Explanation> {
        if Instant::now() >= self.deadline {
            self.refused += 1;
            return None;
        }
        self.asked += 1;
        crate::why::explain(m, nodes, self.owners, src, dst, port, now).ok()
    }
}
