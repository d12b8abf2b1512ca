//! Findings to and from the protocol: the collector answers `Findings` with
//! a report, the CLI turns the answer back into one for `--format json`, so
//! the CLI and `/api/v1/findings` print the same JSON.

use super::{Finding, Group, Key, Kind, Report};
use reachmap_proto::v1 as pb;

pub fn report(r: &Report) -> pb::FindingsResponse {
    pb::FindingsResponse {
        findings: r.findings.iter().map(finding).collect(),
        cells: r.cells,
        bad_cells: r.bad_cells,
        uncovered_cells: r.uncovered_cells,
        as_of_unix_nanos: r.as_of,
        compute_micros: r.compute_micros,
    }
}

fn finding(f: &Finding) -> pb::Finding {
    pb::Finding {
        kind: f.kind.as_str().to_string(),
        severity: f.severity,
        title: f.title.clone(),
        detail: f.detail.clone(),
        groups: f
            .groups
            .iter()
            .map(|g| pb::FindingGroup {
                name: g.name.clone(),
                nodes: g.nodes.clone(),
            })
            .collect(),
        cells: f
            .cells
            .iter()
            .map(|k| pb::CellKey {
                src: k.src.clone(),
                dst: k.dst.clone(),
                port: u32::from(k.port),
            })
            .collect(),
        cell_count: f.cell_count,
        evidence: f.evidence.clone(),
        fix: f.fix.clone(),
        since_unix_nanos: f.since,
        code: f.code.clone(),
        node: f.node.clone(),
    }
}

/// The answer as a report again; a kind this build does not know is
/// skipped, a port out of range is dropped.
pub fn from_pb(r: &pb::FindingsResponse) -> Report {
    let findings = r
        .findings
        .iter()
        .filter_map(|f| {
            let kind = Kind::parse(&f.kind)?;
            Some(Finding {
                kind,
                severity: f.severity,
                title: f.title.clone(),
                detail: f.detail.clone(),
                groups: f
                    .groups
                    .iter()
                    .map(|g| Group {
                        name: g.name.clone(),
                        nodes: g.nodes.clone(),
                    })
                    .collect(),
                cells: f
                    .cells
                    .iter()
                    .filter_map(|k| {
                        Some(Key {
                            src: k.src.clone(),
                            dst: k.dst.clone(),
                            port: u16::try_from(k.port).ok()?,
                        })
                    })
                    .collect(),
                cell_count: f.cell_count,
                evidence: f.evidence.clone(),
                fix: f.fix.clone(),
                since: f.since_unix_nanos,
                code: f.code.clone(),
                node: f.node.clone(),
            })
        })
        .collect();
    Report {
        findings,
        cells: r.cells,
        bad_cells: r.bad_cells,
        uncovered_cells: r.uncovered_cells,
        as_of: r.as_of_unix_nanos,
        compute_micros: r.compute_micros,
    }
}
