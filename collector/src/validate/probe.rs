//! Probe results, state changes and command results from the wire.

use super::{ProtocolError, checked, err, ip, text};
use crate::probe::{
    FailureCounts, Outcome, PlannedTarget, ProbeKind, ResolvedName, StateChange, TargetState,
    TlsKind, TlsNote, WindowInput, WindowTarget,
};
use reachmap_proto::v1 as pb;

/// Windows per batch: far above any plan the planner makes.
pub const MAX_WINDOWS: usize = 100_000;

pub fn kind(field: &str, v: i32) -> Result<ProbeKind, ProtocolError> {
    match pb::ProbeKind::try_from(v) {
        Ok(pb::ProbeKind::Tcp) => Ok(ProbeKind::Tcp),
        Ok(pb::ProbeKind::Icmp) => Ok(ProbeKind::Icmp),
        Ok(pb::ProbeKind::Http) => Ok(ProbeKind::Http),
        Ok(pb::ProbeKind::Https) => Ok(ProbeKind::Https),
        Ok(pb::ProbeKind::Udp) => Ok(ProbeKind::Udp),
        _ => Err(err(field, format!("unknown probe kind {v}"))),
    }
}

/// `None` for "unspecified".
pub fn outcome(field: &str, v: i32) -> Result<Option<Outcome>, ProtocolError> {
    use pb::ProbeOutcome as P;
    Ok(Some(match P::try_from(v) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::Open) => Outcome::Open,
        Ok(P::Refused) => Outcome::Refused,
        Ok(P::Timeout) => Outcome::Timeout,
        Ok(P::Unreachable) => Outcome::Unreachable,
        Ok(P::NoRoute) => Outcome::NoRoute,
        Ok(P::Reset) => Outcome::Reset,
        Ok(P::DnsError) => Outcome::DnsError,
        Ok(P::HttpStatus) => Outcome::HttpStatus,
        Ok(P::TlsError) => Outcome::TlsError,
        Err(_) => return Err(err(field, format!("unknown outcome {v}"))),
    }))
}

fn state(field: &str, v: i32) -> Result<TargetState, ProtocolError> {
    match pb::TargetState::try_from(v) {
        Ok(pb::TargetState::Ok) => Ok(TargetState::Ok),
        Ok(pb::TargetState::Degraded) => Ok(TargetState::Degraded),
        Ok(pb::TargetState::Failing) => Ok(TargetState::Failing),
        _ => Err(err(field, format!("unknown target state {v}"))),
    }
}

fn port(field: &str, p: u32) -> Result<u16, ProtocolError> {
    u16::try_from(p).map_err(|_| err(field, format!("port {p} is over 65535")))
}

/// Where a window or target sits in its message, spelled out only when a
/// value is wrong: a valid batch is checked without building a field name
/// (one allocation a window is left: the owned node name).
#[derive(Clone, Copy)]
struct Loc<'a> {
    base: &'a str,
    index: Option<usize>,
}

impl Loc<'_> {
    fn field(&self, leaf: &str) -> String {
        match self.index {
            Some(i) => format!("{}[{i}].{leaf}", self.base),
            None => format!("{}.{leaf}", self.base),
        }
    }

    /// Re-homes an error of a helper given the leaf's name as its field.
    fn at(&self, e: ProtocolError) -> ProtocolError {
        ProtocolError {
            field: self.field(&e.field),
            problem: e.problem,
        }
    }
}

fn optional(leaf: &str, value: &str) -> Result<Option<String>, ProtocolError> {
    let v = checked(leaf, value, 256)?;
    Ok((!v.is_empty()).then(|| v.to_string()))
}

/// The target at `loc`, in its field `prefix` ("target.").
fn target_at(
    loc: Loc,
    prefix: &str,
    t: &Option<pb::ProbeTarget>,
) -> Result<PlannedTarget, ProtocolError> {
    let leaf = |name: &str| format!("{prefix}{name}");
    let Some(t) = t else {
        return Err(loc.at(err(prefix.trim_end_matches('.'), "missing")));
    };
    let node = checked("", &t.node, 64).map_err(|e| loc.at(err(leaf("node"), e.problem)))?;
    reachmap_proto::check_node_name(node).map_err(|p| loc.at(err(leaf("node"), p)))?;
    let address = t.address.parse().map_err(|_| {
        loc.at(err(
            leaf("address"),
            format!("{:?} is not an IP address", super::truncate(&t.address)),
        ))
    })?;
    let port = port("", t.port).map_err(|e| loc.at(err(leaf("port"), e.problem)))?;
    let kind = kind("", t.kind).map_err(|e| loc.at(err(leaf("kind"), e.problem)))?;
    let mut planned = PlannedTarget::owned(node.to_string(), address, port, kind);
    planned.service =
        optional("", &t.service).map_err(|e| loc.at(err(leaf("service"), e.problem)))?;
    planned.http_path =
        optional("", &t.http_path).map_err(|e| loc.at(err(leaf("http_path"), e.problem)))?;
    planned.expect_status = match t.expect_status {
        0 => None,
        s @ 100..=599 => Some(s as u16),
        s => {
            return Err(loc.at(err(
                leaf("expect_status"),
                format!("{s} is not an HTTP status"),
            )));
        }
    };
    Ok(planned)
}

/// A window's target: by id alone (no node, no address), or whole.
fn window_target(loc: Loc, t: &Option<pb::ProbeTarget>) -> Result<WindowTarget, ProtocolError> {
    match t {
        Some(t) if t.node.is_empty() && t.address.is_empty() => match t.id {
            0 => Err(loc.at(err(
                "target",
                "names no target: neither an id nor a node and address",
            ))),
            id => Ok(WindowTarget::Id(id)),
        },
        _ => Ok(WindowTarget::Named(target_at(loc, "target.", t)?)),
    }
}

fn ms(field: &str, v: Option<f64>) -> Result<Option<f64>, ProtocolError> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => {
            Err(err(field, format!("{x} is not a duration in ms")))
        }
        other => Ok(other),
    }
}

pub fn window(field: &str, w: &pb::TargetWindow) -> Result<WindowInput, ProtocolError> {
    window_at(
        Loc {
            base: field,
            index: None,
        },
        w,
    )
}

fn window_at(loc: Loc, w: &pb::TargetWindow) -> Result<WindowInput, ProtocolError> {
    let failures = FailureCounts {
        refused: w.refused,
        timeout: w.timeout,
        unreachable: w.unreachable,
        no_route: w.no_route,
        reset: w.reset,
        dns_error: w.dns_error,
        http_status: w.http_status,
        tls_error: w.tls_error,
    };
    if u64::from(w.ok) + failures.total() > u64::from(w.sent) {
        return Err(loc.at(err(
            "sent",
            format!(
                "{} probes sent but {} results counted",
                w.sent,
                u64::from(w.ok) + failures.total()
            ),
        )));
    }
    let last_failure = outcome("last_failure", w.last_failure)
        .map_err(|e| loc.at(e))?
        .filter(|o| o.is_failure())
        .map(|o| (o, w.last_failure_unix_nanos));
    Ok(WindowInput {
        target: window_target(loc, &w.target)?,
        sent: w.sent,
        ok: w.ok,
        failures,
        rtt_p50_ms: ms("rtt_p50_ms", w.rtt_p50_ms).map_err(|e| loc.at(e))?,
        rtt_p99_ms: ms("rtt_p99_ms", w.rtt_p99_ms).map_err(|e| loc.at(e))?,
        last_outcome: outcome("last_outcome", w.last_outcome).map_err(|e| loc.at(e))?,
        last_failure,
        state: state("state", w.state).map_err(|e| loc.at(e))?,
        last_http_status: u16::try_from(w.last_http_status)
            .ok()
            .filter(|s| (100..=999).contains(s)),
        last_tls_error: match &w.last_tls_error {
            Some(t) => Some(tls_note(&loc.field("last_tls_error"), t)?),
            None => None,
        },
    })
}

fn tls_note(field: &str, t: &pb::TlsError) -> Result<TlsNote, ProtocolError> {
    use pb::TlsErrorKind as P;
    let kind = match P::try_from(t.kind) {
        Ok(P::Expired) => TlsKind::Expired,
        Ok(P::NotYetValid) => TlsKind::NotYetValid,
        Ok(P::WrongName) => TlsKind::WrongName,
        Ok(P::UnknownIssuer) => TlsKind::UnknownIssuer,
        Ok(P::Revoked) => TlsKind::Revoked,
        Ok(P::BadCertificate) => TlsKind::BadCertificate,
        Ok(P::Handshake) => TlsKind::Handshake,
        Ok(P::Unspecified) | Err(_) => {
            return Err(err(
                format!("{field}.kind"),
                format!("unknown TLS error kind {}", t.kind),
            ));
        }
    };
    Ok(TlsNote {
        kind,
        detail: text(&format!("{field}.detail"), &t.detail, 512)?.into_boxed_str(),
    })
}

pub fn results(r: &pb::ProbeResults) -> Result<Vec<WindowInput>, ProtocolError> {
    if r.windows.len() > MAX_WINDOWS {
        return Err(err(
            "probe_results.windows",
            format!("{} windows (at most {MAX_WINDOWS})", r.windows.len()),
        ));
    }
    r.windows
        .iter()
        .enumerate()
        .map(|(n, w)| {
            window_at(
                Loc {
                    base: "probe_results.windows",
                    index: Some(n),
                },
                w,
            )
        })
        .collect()
}

/// Names per batch, and addresses per name: far above what a plan asks for
/// or a resolver gives.
pub const MAX_NAMES: usize = 1_024;
pub const MAX_NAME_ADDRESSES: usize = 64;

/// A whole batch: its windows and its name lookups.
pub fn batch(r: &pb::ProbeResults) -> Result<(Vec<WindowInput>, Vec<ResolvedName>), ProtocolError> {
    Ok((results(r)?, names(r)?))
}

/// The lookups of the plan's names a batch carries.
pub fn names(r: &pb::ProbeResults) -> Result<Vec<ResolvedName>, ProtocolError> {
    if r.names.len() > MAX_NAMES {
        return Err(err(
            "probe_results.names",
            format!("{} names (at most {MAX_NAMES})", r.names.len()),
        ));
    }
    r.names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let f = format!("probe_results.names[{i}]");
            if !reachmap_proto::valid_host_name(&n.name) {
                return Err(err(
                    format!("{f}.name"),
                    format!("{:?} is not a host name", n.name),
                ));
            }
            reachmap_proto::check_node_name(&n.node).map_err(|e| err(format!("{f}.node"), e))?;
            if n.addresses.len() > MAX_NAME_ADDRESSES {
                return Err(err(
                    format!("{f}.addresses"),
                    format!(
                        "{} addresses (at most {MAX_NAME_ADDRESSES})",
                        n.addresses.len()
                    ),
                ));
            }
            let addresses = n
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| ip(&format!("{f}.addresses[{j}]"), a))
                .collect::<Result<Vec<_>, _>>()?;
            text(&format!("{f}.error"), &n.error, 1024)?;
            Ok(ResolvedName {
                name: n.name.clone(),
                node: n.node.clone(),
                addresses,
                error: (!n.error.is_empty()).then(|| n.error.clone()),
                resolved_unix_nanos: n.resolved_unix_nanos,
            })
        })
        .collect()
}

pub fn state_change(c: &pb::ProbeStateChanged) -> Result<StateChange, ProtocolError> {
    let f = "event.probe_state_changed";
    let new = state(&format!("{f}.new_state"), c.new_state)?;
    Ok(StateChange {
        target: target_at(
            Loc {
                base: f,
                index: None,
            },
            "target.",
            &c.target,
        )?,
        // Unspecified: the target's first result, it had no state before.
        old: if c.old_state == pb::TargetState::Unspecified as i32 {
            new
        } else {
            state(&format!("{f}.old_state"), c.old_state)?
        },
        new,
        outcome: outcome(&format!("{f}.outcome"), c.outcome)?,
    })
}

pub fn command_result(r: &pb::CommandResult) -> Result<(), ProtocolError> {
    text("command_result.error", &r.error, 1024)?;
    outcome("command_result.outcome", r.outcome)?;
    if r.port > 65535 {
        return Err(err(
            "command_result.port",
            format!("{} is over 65535", r.port),
        ));
    }
    ms("command_result.rtt_ms", Some(r.rtt_ms)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> pb::TargetWindow {
        pb::TargetWindow {
            target: Some(pb::ProbeTarget {
                node: "node-7".into(),
                address: "198.18.0.7".into(),
                port: 7442,
                kind: pb::ProbeKind::Tcp as i32,
                ..Default::default()
            }),
            sent: 10,
            ok: 9,
            timeout: 1,
            state: pb::TargetState::Degraded as i32,
            last_failure: pb::ProbeOutcome::Timeout as i32,
            last_failure_unix_nanos: 5,
            rtt_p50_ms: Some(0.25),
            ..Default::default()
        }
    }

    fn field_of(w: pb::TargetWindow) -> String {
        let batch = pb::ProbeResults {
            windows: vec![good(), w],
            ..Default::default()
        };
        results(&batch).expect_err("rejected").to_string()
    }

    #[test]
    fn a_valid_window_converts_whole() {
        let w = window("w", &good()).expect("valid");
        let WindowTarget::Named(t) = &w.target else {
            panic!("a named target: {:?}", w.target);
        };
        assert_eq!(t.node, "node-7");
        assert_eq!(t.port, 7442);
        assert_eq!(w.last_failure, Some((Outcome::Timeout, 5)));
        assert_eq!(w.state, TargetState::Degraded);
        assert_eq!(
            t.id,
            PlannedTarget::new("node-7", t.address, 7442, ProbeKind::Tcp).id
        );
    }

    #[test]
    fn a_window_may_name_its_target_by_id_alone() {
        let mut w = good();
        w.target = Some(pb::ProbeTarget {
            id: 42,
            ..Default::default()
        });
        let v = window("w", &w).expect("valid");
        assert_eq!(v.target, WindowTarget::Id(42));
        assert_eq!(v.state, TargetState::Degraded);
        w.target = Some(pb::ProbeTarget::default());
        assert_eq!(
            field_of(w),
            "probe_results.windows[1].target: names no target: neither an id nor a node and address"
        );
    }

    #[test]
    fn a_bad_value_names_its_window_and_field() {
        let mut w = good();
        if let Some(t) = &mut w.target {
            t.node = "bad name".into();
        }
        assert!(
            field_of(w).starts_with("probe_results.windows[1].target.node: "),
            "node"
        );
        let mut w = good();
        if let Some(t) = &mut w.target {
            t.address = "nope".into();
        }
        assert_eq!(
            field_of(w),
            "probe_results.windows[1].target.address: \"nope\" is not an IP address"
        );
        let mut w = good();
        if let Some(t) = &mut w.target {
            t.port = 70_000;
        }
        assert_eq!(
            field_of(w),
            "probe_results.windows[1].target.port: port 70000 is over 65535"
        );
        let mut w = good();
        w.target = None;
        assert_eq!(field_of(w), "probe_results.windows[1].target: missing");
        let mut w = good();
        w.rtt_p99_ms = Some(f64::NAN);
        assert_eq!(
            field_of(w),
            "probe_results.windows[1].rtt_p99_ms: NaN is not a duration in ms"
        );
        let mut w = good();
        w.ok = 10;
        assert_eq!(
            field_of(w),
            "probe_results.windows[1].sent: 10 probes sent but 11 results counted"
        );
        let mut w = good();
        w.state = 99;
        assert_eq!(
            field_of(w),
            "probe_results.windows[1].state: unknown target state 99"
        );
        let change = pb::ProbeStateChanged {
            target: None,
            new_state: pb::TargetState::Ok as i32,
            ..Default::default()
        };
        assert_eq!(
            state_change(&change).expect_err("no target").to_string(),
            "event.probe_state_changed.target: missing"
        );
    }
}
