//! An explanation as the Query service sends it and back: the CLI rebuilds
//! the same `Explanation` the HTTP API serialises, so both print the same
//! JSON.

use super::{
    Cause, CellSummary, ChangeView, ClientAddress, Evidence, Explanation, TlsView, Verdict,
};
use crate::view::{cell_state_name, kind_name, outcome_name};
use reachmap_proto::v1 as pb;

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Reachable => "reachable",
        Verdict::Degraded => "degraded",
        Verdict::Unreachable => "unreachable",
        Verdict::Unknown => "unknown",
    }
}

fn verdict_from(s: &str) -> Verdict {
    match s {
        "reachable" => Verdict::Reachable,
        "degraded" => Verdict::Degraded,
        "unreachable" => Verdict::Unreachable,
        _ => Verdict::Unknown,
    }
}

/// The wire value of an enum from its lower-case name (`"tcp"` with
/// prefix `PROBE_KIND_`); 0 (unspecified) when there is none.
fn wire_value(prefix: &str, name: &str, from: impl Fn(&str) -> Option<i32>) -> i32 {
    from(&format!("{prefix}{}", name.to_ascii_uppercase())).unwrap_or(0)
}

fn cell_to(c: &CellSummary) -> pb::MatrixCell {
    pb::MatrixCell {
        src: c.src.clone(),
        dst: c.dst.clone(),
        port: u32::from(c.port),
        kind: wire_value("PROBE_KIND_", &c.kind, |n| {
            pb::ProbeKind::from_str_name(n).map(|k| k as i32)
        }),
        state: wire_value("CELL_STATE_", &c.state, |n| {
            pb::CellState::from_str_name(n).map(|k| k as i32)
        }),
        loss: c.loss,
        rtt_ms: c.rtt_ms,
        failure: c.failure.as_deref().map_or(0, |f| {
            wire_value("PROBE_OUTCOME_", f, |n| {
                pb::ProbeOutcome::from_str_name(n).map(|k| k as i32)
            })
        }),
        last_failure_unix_nanos: c.last_failure,
        updated_unix_nanos: c.updated,
        address: c.address.clone(),
        service: c.service.clone().unwrap_or_default(),
        http_status: c.http_status.map_or(0, u32::from),
        tls_error: c.tls_error.as_ref().map(|t| pb::TlsError {
            kind: wire_value("TLS_ERROR_KIND_", &t.kind, |n| {
                pb::TlsErrorKind::from_str_name(n).map(|k| k as i32)
            }),
            detail: t.detail.clone(),
        }),
        ..Default::default()
    }
}

fn cell_from(c: &pb::MatrixCell) -> CellSummary {
    CellSummary {
        http_status: u16::try_from(c.http_status).ok().filter(|s| *s != 0),
        tls_error: c.tls_error.as_ref().map(|t| TlsView {
            kind: pb::TlsErrorKind::try_from(t.kind)
                .map(|k| {
                    k.as_str_name()
                        .trim_start_matches("TLS_ERROR_KIND_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_else(|_| format!("kind-{}", t.kind)),
            detail: t.detail.clone(),
        }),
        service: (!c.service.is_empty()).then(|| c.service.clone()),
        src: c.src.clone(),
        dst: c.dst.clone(),
        port: u16::try_from(c.port).unwrap_or(0),
        kind: kind_name(c.kind),
        state: cell_state_name(c.state),
        loss: c.loss,
        rtt_ms: c.rtt_ms,
        failure: outcome_name(c.failure),
        last_failure: c.last_failure_unix_nanos,
        updated: c.updated_unix_nanos,
        address: c.address.clone(),
    }
}

impl From<&Cause> for pb::WhyCause {
    fn from(c: &Cause) -> Self {
        pb::WhyCause {
            code: c.code.clone(),
            node: c.node.clone(),
            detail: c.detail.clone(),
            evidence: c
                .evidence
                .iter()
                .map(|v| pb::WhyEvidence {
                    kind: v.kind.clone(),
                    node: v.node.clone(),
                    time_unix_nanos: v.time,
                    text: v.text.clone(),
                })
                .collect(),
            fix: c.fix.clone().unwrap_or_default(),
        }
    }
}

impl From<&ChangeView> for pb::WhyChange {
    fn from(c: &ChangeView) -> Self {
        pb::WhyChange {
            node: c.node.clone(),
            time_unix_nanos: c.time,
            kind: c.kind.clone(),
            detail: c.detail.clone(),
        }
    }
}

impl From<&pb::WhyCause> for Cause {
    fn from(c: &pb::WhyCause) -> Self {
        Cause {
            code: c.code.clone(),
            node: c.node.clone(),
            detail: c.detail.clone(),
            evidence: c
                .evidence
                .iter()
                .map(|v| Evidence {
                    kind: v.kind.clone(),
                    node: v.node.clone(),
                    time: v.time_unix_nanos,
                    text: v.text.clone(),
                })
                .collect(),
            fix: (!c.fix.is_empty()).then(|| c.fix.clone()),
            weight: 0,
        }
    }
}

impl From<&pb::WhyChange> for ChangeView {
    fn from(c: &pb::WhyChange) -> Self {
        ChangeView {
            node: c.node.clone(),
            time: c.time_unix_nanos,
            kind: c.kind.clone(),
            detail: c.detail.clone(),
        }
    }
}

impl From<&Explanation> for pb::WhyAnswer {
    fn from(e: &Explanation) -> Self {
        pb::WhyAnswer {
            src: e.src.clone(),
            dst: e.dst.clone(),
            port: u32::from(e.port),
            verdict: verdict_name(e.verdict).into(),
            causes: e.causes.iter().map(pb::WhyCause::from).collect(),
            checked: e.checked.clone(),
            changes: e.changes.iter().map(pb::WhyChange::from).collect(),
            probe: e.probe.as_ref().map(cell_to),
            reverse: e.reverse.as_ref().map(cell_to),
            icmp: e.icmp.as_ref().map(cell_to),
            address: e.address.clone().unwrap_or_default(),
            at_unix_nanos: e.at,
            addresses: e
                .addresses
                .iter()
                .map(|a| pb::WhyAddress {
                    address: a.address.clone(),
                    via: a.via.clone(),
                    listening: a.listening,
                })
                .collect(),
        }
    }
}

impl From<&pb::WhyAnswer> for Explanation {
    fn from(a: &pb::WhyAnswer) -> Self {
        Explanation {
            src: a.src.clone(),
            dst: a.dst.clone(),
            port: u16::try_from(a.port).unwrap_or(0),
            verdict: verdict_from(&a.verdict),
            causes: a.causes.iter().map(Cause::from).collect(),
            checked: a.checked.clone(),
            changes: a.changes.iter().map(ChangeView::from).collect(),
            probe: a.probe.as_ref().map(cell_from),
            reverse: a.reverse.as_ref().map(cell_from),
            icmp: a.icmp.as_ref().map(cell_from),
            address: (!a.address.is_empty()).then(|| a.address.clone()),
            at: a.at_unix_nanos,
            addresses: a
                .addresses
                .iter()
                .map(|x| ClientAddress {
                    address: x.address.clone(),
                    via: x.via.clone(),
                    listening: x.listening,
                })
                .collect(),
        }
    }
}
