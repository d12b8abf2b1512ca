//! Probe plans from the collector into the prober's types, and the prober's
//! windows, state changes and command answers back into protocol messages.

use crate::probe::fleet::AddressChange;
use crate::probe::tls::{TlsErrorKind, TlsFailure, TlsTarget, Trust};
use crate::probe::{
    FleetName, NameResolution, Outcome, Plan, ProbeKind, StateChange, Target, TargetState,
    UdpTarget, WindowSummary, valid_host_name,
};
use reachmap_proto::v1 as pb;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("probe plan: {0}")]
pub struct PlanError(String);

fn kind_from(v: i32) -> Option<ProbeKind> {
    match pb::ProbeKind::try_from(v).ok()? {
        pb::ProbeKind::Tcp => Some(ProbeKind::Tcp),
        pb::ProbeKind::Icmp => Some(ProbeKind::Icmp),
        pb::ProbeKind::Http => Some(ProbeKind::Http),
        pb::ProbeKind::Https => Some(ProbeKind::Https),
        pb::ProbeKind::Udp => Some(ProbeKind::Udp),
        pb::ProbeKind::Unspecified => None,
    }
}

fn kind_to(k: ProbeKind) -> i32 {
    (match k {
        ProbeKind::Tcp => pb::ProbeKind::Tcp,
        ProbeKind::Icmp => pb::ProbeKind::Icmp,
        ProbeKind::Http => pb::ProbeKind::Http,
        ProbeKind::Https => pb::ProbeKind::Https,
        ProbeKind::Udp => pb::ProbeKind::Udp,
    }) as i32
}

pub fn outcome(o: Outcome) -> i32 {
    (match o {
        Outcome::Open => pb::ProbeOutcome::Open,
        Outcome::Refused => pb::ProbeOutcome::Refused,
        Outcome::Timeout => pb::ProbeOutcome::Timeout,
        Outcome::Unreachable => pb::ProbeOutcome::Unreachable,
        Outcome::NoRoute => pb::ProbeOutcome::NoRoute,
        Outcome::Reset => pb::ProbeOutcome::Reset,
        Outcome::DnsError => pb::ProbeOutcome::DnsError,
        Outcome::HttpStatus => pb::ProbeOutcome::HttpStatus,
        Outcome::TlsError => pb::ProbeOutcome::TlsError,
    }) as i32
}

fn state(s: TargetState) -> i32 {
    (match s {
        TargetState::Ok => pb::TargetState::Ok,
        TargetState::Degraded => pb::TargetState::Degraded,
        TargetState::Failing => pb::TargetState::Failing,
    }) as i32
}

/// A target as the collector sent it; `Err` with the reason when it is not
/// one this agent can probe. `trusts` are the plan's CA bundles, read.
pub fn target(t: &pb::ProbeTarget, trusts: &[Result<Trust, String>]) -> Result<Target, String> {
    let address: IpAddr = t
        .address
        .parse()
        .map_err(|_| format!("{:?} is not an IP address", t.address))?;
    let kind = kind_from(t.kind).ok_or_else(|| format!("unknown probe kind {}", t.kind))?;
    let port = u16::try_from(t.port).map_err(|_| format!("port {} is over 65535", t.port))?;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let tls = match kind {
        ProbeKind::Https => {
            let trust = match t.tls_ca {
                0 => Trust::system()?,
                n => usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| trusts.get(i))
                    .ok_or_else(|| format!("TLS CA bundle {n} is not in the plan"))?
                    .clone()?,
            };
            Some(TlsTarget::new(some(&t.tls_server_name), &trust)?)
        }
        _ => None,
    };
    Ok(Target {
        id: t.id,
        node: t.node.clone(),
        address,
        port,
        kind,
        service: some(&t.service),
        http_path: some(&t.http_path),
        expect_status: u16::try_from(t.expect_status).ok().filter(|s| *s != 0),
        tls,
        udp: (kind == ProbeKind::Udp).then(|| UdpTarget {
            payload: t.udp_payload.clone(),
            expect_reply: t.udp_expect_reply,
        }),
    })
}

pub fn target_to(t: &Target) -> pb::ProbeTarget {
    pb::ProbeTarget {
        id: t.id,
        node: t.node.clone(),
        address: t.address.to_string(),
        port: u32::from(t.port),
        kind: kind_to(t.kind),
        service: t.service.clone().unwrap_or_default(),
        http_path: t.http_path.clone().unwrap_or_default(),
        expect_status: t.expect_status.map(u32::from).unwrap_or(0),
        tls_server_name: t
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_default(),
        // Echoed back in windows, where the bundle and the datagram are
        // not needed.
        tls_ca: 0,
        udp_payload: Vec::new(),
        udp_expect_reply: t.udp.as_ref().is_some_and(|u| u.expect_reply),
    }
}

/// A `FleetAddresses` message; what does not read as an address is named
/// in the second value and left out.
pub fn fleet_addresses(f: &pb::FleetAddresses) -> (AddressChange, Vec<String>) {
    let mut bad = Vec::new();
    let mut read = |list: &[String]| -> Vec<IpAddr> {
        list.iter()
            .filter_map(|a| match a.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    bad.push(format!("fleet address {a:?} is not an IP address"));
                    None
                }
            })
            .collect()
    };
    let change = AddressChange {
        replace: f.replace,
        added: read(&f.added),
        removed: read(&f.removed),
    };
    (change, bad)
}

/// The plan, with every target this agent cannot read dropped and named in
/// the second value (the prober's own `check_plan` then refuses anything
/// outside the fleet).
pub fn plan(p: &pb::ProbePlan) -> Result<(Plan, Vec<String>), PlanError> {
    if p.interval_ms == 0 {
        return Err(PlanError("interval_ms is 0".into()));
    }
    let mut fleet_addresses = HashSet::new();
    for a in &p.fleet_addresses {
        let ip: IpAddr = a
            .parse()
            .map_err(|_| PlanError(format!("fleet address {a:?} is not an IP address")))?;
        fleet_addresses.insert(ip);
    }
    let mut targets = Vec::with_capacity(p.targets.len());
    let mut unreadable = Vec::new();
    let trusts: Vec<Result<Trust, String>> = p
        .tls_cas
        .iter()
        .enumerate()
        .map(|(i, pem)| Trust::bundle(pem).map_err(|e| format!("TLS CA bundle {}: {e}", i + 1)))
        .collect();
    for t in &p.targets {
        match target(t, &trusts) {
            Ok(t) => targets.push(t),
            Err(e) => unreadable.push(format!("{} {}:{}: {e}", t.node, t.address, t.port)),
        }
    }
    let mut names = Vec::with_capacity(p.names.len());
    for n in &p.names {
        if valid_host_name(&n.name) {
            names.push(FleetName {
                name: n.name.clone(),
                node: n.node.clone(),
            });
        } else {
            unreadable.push(format!("name {:?} for {}: not a host name", n.name, n.node));
        }
    }
    Ok((
        Plan {
            version: p.version,
            interval: Duration::from_millis(u64::from(p.interval_ms)),
            timeout: Duration::from_millis(u64::from(p.timeout_ms)),
            max_probes_per_second: p.max_probes_per_second,
            window: usize::try_from(p.window).unwrap_or(0),
            targets,
            fleet_addresses,
            names,
            results_by_id: p.results_by_id,
        },
        unreadable,
    ))
}

/// A window as the wire carries it: naming its target by `id` alone when
/// the collector reads results that way (`by_id`), else the whole target.
pub fn window(w: &WindowSummary, by_id: bool) -> pb::TargetWindow {
    let target = if by_id {
        pb::ProbeTarget {
            id: w.target.id,
            ..Default::default()
        }
    } else {
        target_to(&w.target)
    };
    pb::TargetWindow {
        target: Some(target),
        sent: w.sent,
        ok: w.ok,
        refused: w.refused,
        timeout: w.timeout,
        unreachable: w.unreachable,
        no_route: w.no_route,
        reset: w.reset,
        dns_error: w.dns_error,
        http_status: w.http_status,
        rtt_p50_ms: w.rtt_p50_ms,
        rtt_p99_ms: w.rtt_p99_ms,
        last_outcome: outcome(w.last_outcome),
        last_failure: w.last_failure.map(|(o, _)| outcome(o)).unwrap_or(0),
        last_failure_unix_nanos: w
            .last_failure
            .map(|(_, t)| super::unix_nanos(t))
            .unwrap_or(0),
        last_http_status: w.last_http_status.map(u32::from).unwrap_or(0),
        state: state(w.state),
        last_probe_unix_nanos: super::unix_nanos(w.last_probe),
        tls_error: w.tls_error,
        last_tls_error: w.last_tls_error.as_ref().map(tls_error),
    }
}

pub fn tls_error(f: &TlsFailure) -> pb::TlsError {
    use pb::TlsErrorKind as P;
    pb::TlsError {
        kind: (match f.kind {
            TlsErrorKind::Expired => P::Expired,
            TlsErrorKind::NotYetValid => P::NotYetValid,
            TlsErrorKind::WrongName => P::WrongName,
            TlsErrorKind::UnknownIssuer => P::UnknownIssuer,
            TlsErrorKind::Revoked => P::Revoked,
            TlsErrorKind::BadCertificate => P::BadCertificate,
            TlsErrorKind::Handshake => P::Handshake,
        }) as i32,
        detail: f.detail.clone(),
    }
}

pub fn resolution(r: &NameResolution) -> pb::NameResolution {
    pb::NameResolution {
        name: r.name.name.clone(),
        node: r.name.node.clone(),
        addresses: r.addresses.iter().map(ToString::to_string).collect(),
        error: r.error.clone().unwrap_or_default(),
        resolved_unix_nanos: super::unix_nanos(r.at),
    }
}

pub fn results(
    plan_version: u64,
    by_id: bool,
    windows: &[WindowSummary],
    names: &[NameResolution],
) -> pb::ProbeResults {
    pb::ProbeResults {
        plan_version,
        windows: windows.iter().map(|w| window(w, by_id)).collect(),
        names: names.iter().map(resolution).collect(),
    }
}

pub fn state_change(c: &StateChange) -> pb::ProbeStateChanged {
    pb::ProbeStateChanged {
        target: Some(target_to(&c.target)),
        old_state: c.old.map(state).unwrap_or(0),
        new_state: state(c.new),
        outcome: outcome(c.outcome),
    }
}

/// One hop of a trace.
pub fn trace_hop(h: &crate::probe::trace::Hop) -> pb::TraceHop {
    use crate::probe::trace::HopKind;
    pb::TraceHop {
        ttl: u32::from(h.ttl),
        address: h.from.map(|a| a.to_string()).unwrap_or_default(),
        kind: h.kind.as_str().to_string(),
        code: match h.kind {
            HopKind::Unreachable(c) => u32::from(c),
            _ => 0,
        },
        rtt_ms: h.rtt.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn https(id: u64, tls_ca: u32) -> pb::ProbeTarget {
        pb::ProbeTarget {
            id,
            node: "web-1".into(),
            address: "198.18.0.12".into(),
            port: 8443,
            kind: pb::ProbeKind::Https as i32,
            http_path: "/livez".into(),
            tls_server_name: "web-1.fleet.test".into(),
            tls_ca,
            ..Default::default()
        }
    }

    #[test]
    fn https_targets_take_their_trust_from_the_plan() {
        let p = pb::ProbePlan {
            version: 3,
            interval_ms: 1_000,
            targets: vec![https(1, 0), https(2, 1), https(3, 2)],
            fleet_addresses: vec!["198.18.0.12".into()],
            tls_cas: vec!["not a PEM bundle".into()],
            ..Default::default()
        };
        let (plan, unreadable) = plan(&p).expect("plan");
        // System roots: kept, with the name to check.
        assert_eq!(plan.targets.len(), 1, "{unreadable:?}");
        let t = &plan.targets[0];
        assert_eq!(t.kind, ProbeKind::Https);
        let tls = t.tls.as_ref().expect("tls");
        assert_eq!(tls.server_name.as_deref(), Some("web-1.fleet.test"));
        assert!(tls.ca_pem.is_none());
        // A bundle that does not read, and one the plan does not hold.
        assert_eq!(unreadable.len(), 2, "{unreadable:?}");
        assert!(unreadable[0].contains("TLS CA bundle 1"), "{unreadable:?}");
        assert!(
            unreadable[1].contains("TLS CA bundle 2 is not in the plan"),
            "{unreadable:?}"
        );
        // The name goes back in windows; the bundle does not.
        let back = target_to(t);
        assert_eq!(back.tls_server_name, "web-1.fleet.test");
        assert_eq!(back.kind, pb::ProbeKind::Https as i32);
    }
    #[test]
    fn windows_name_their_target_by_id_alone_when_the_plan_says_so() {
        let p = pb::ProbePlan {
            version: 4,
            interval_ms: 1_000,
            targets: vec![https(7, 0)],
            fleet_addresses: vec!["198.18.0.12".into()],
            results_by_id: true,
            ..Default::default()
        };
        let (plan, _) = plan(&p).expect("plan");
        assert!(plan.results_by_id);
        let w = WindowSummary {
            target: plan.targets[0].clone(),
            sent: 10,
            ok: 10,
            refused: 0,
            timeout: 0,
            unreachable: 0,
            no_route: 0,
            reset: 0,
            dns_error: 0,
            http_status: 0,
            tls_error: 0,
            rtt_p50_ms: Some(0.4),
            rtt_p99_ms: Some(0.9),
            last_outcome: Outcome::Open,
            last_failure: None,
            last_http_status: Some(200),
            last_tls_error: None,
            state: TargetState::Ok,
            last_probe: std::time::SystemTime::UNIX_EPOCH,
        };
        let by_id = window(&w, true);
        assert_eq!(
            by_id.target,
            Some(pb::ProbeTarget {
                id: 7,
                ..Default::default()
            })
        );
        assert_eq!((by_id.sent, by_id.ok), (10, 10));
        let named = window(&w, false).target.expect("target");
        assert_eq!((named.id, named.node.as_str()), (7, "web-1"));
        assert_eq!(named.address, "198.18.0.12");
    }
}
