//! The matrix as the JSON answers and `reachmap matrix --format json` show
//! it: every field (`MatrixView`) or the summary a script needs.

use super::{cell_state_name, kind_name, outcome_name};
use reachmap_proto::v1 as pb;
use serde::Serialize;

/// One cell of the matrix, as `/api/v1/matrix?detail=full` and `reachmap
/// matrix --format json --detail` show it; `summary` gives the default,
/// shorter form.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CellView {
    pub src: String,
    pub dst: String,
    pub port: u16,
    /// "tcp", "icmp", "http" or "https".
    pub kind: String,
    /// "ok", "degraded", "failing" or "unknown".
    pub state: String,
    /// Share of failed probes in the window, 0..1.
    pub loss: f64,
    pub rtt_ms: Option<f64>,
    /// The last failure's outcome ("timeout", "refused", ...), if any.
    pub failure: Option<String>,
    pub service: Option<String>,
    pub rtt_p99_ms: Option<f64>,
    pub sent: u32,
    pub address: String,
    /// When the cell last changed, in unix nanoseconds; 0 before any result.
    pub updated: i64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct MatrixView {
    pub nodes: Vec<String>,
    pub cells: Vec<CellView>,
    /// The zone grid, when asked for (`--zones`, `view=zones`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<crate::select::ZoneView>,
    /// The zone view: cells not ok beyond those listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub cells_left_out: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A cell in the default JSON: the fields a script or dashboard needs.
#[derive(Serialize, Debug)]
pub struct CellSummaryView<'a> {
    pub src: &'a str,
    pub dst: &'a str,
    pub port: u16,
    pub kind: &'a str,
    pub state: &'a str,
    pub loss: f64,
    pub rtt_ms: Option<f64>,
    pub failure: Option<&'a str>,
}

#[derive(Serialize, Debug)]
pub struct MatrixSummaryView<'a> {
    pub nodes: &'a [String],
    pub cells: Vec<CellSummaryView<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub zones: &'a [crate::select::ZoneView],
    #[serde(skip_serializing_if = "is_zero")]
    pub cells_left_out: u32,
}

impl MatrixView {
    /// The default JSON (`/api/v1/matrix`, `reachmap matrix --format json`).
    pub fn summary(&self) -> MatrixSummaryView<'_> {
        MatrixSummaryView {
            nodes: &self.nodes,
            zones: &self.zones,
            cells_left_out: self.cells_left_out,
            cells: self
                .cells
                .iter()
                .map(|c| CellSummaryView {
                    src: &c.src,
                    dst: &c.dst,
                    port: c.port,
                    kind: &c.kind,
                    state: &c.state,
                    loss: c.loss,
                    rtt_ms: c.rtt_ms,
                    failure: c.failure.as_deref(),
                })
                .collect(),
        }
    }
}

impl From<&pb::MatrixCell> for CellView {
    fn from(c: &pb::MatrixCell) -> Self {
        CellView {
            src: c.src.clone(),
            dst: c.dst.clone(),
            port: u16::try_from(c.port).unwrap_or(0),
            kind: kind_name(c.kind),
            state: cell_state_name(c.state),
            loss: c.loss,
            rtt_ms: c.rtt_ms,
            failure: outcome_name(c.failure),
            service: (!c.service.is_empty()).then(|| c.service.clone()),
            rtt_p99_ms: c.rtt_p99_ms,
            sent: c.sent,
            address: c.address.clone(),
            updated: c.updated_unix_nanos,
        }
    }
}

impl From<&pb::Matrix> for MatrixView {
    fn from(m: &pb::Matrix) -> Self {
        MatrixView {
            nodes: m.nodes.clone(),
            cells: m.cells.iter().map(CellView::from).collect(),
            zones: m.zones.iter().map(crate::select::ZoneView::from).collect(),
            cells_left_out: m.cells_left_out,
        }
    }
}
