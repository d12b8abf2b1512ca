//! The collector's model of sockets, firewall and resources back into
//! protocol messages, for query answers. The inverse of `validate`: a
//! round trip through both gives the same model (tested below).

use crate::model::firewall::{Field, Firewall, Rule, VerdictKind};
use crate::model::{
    BindScope, Listener, ListenerKey, MemoryTrend, PressureFigures, Protocol, Resources,
    SocketSummary,
};
use crate::probe::{
    CellRef, CellState, Matrix, NodePlan, Outcome, PlannedTarget, ProbeKind, ResolvedName,
};
use reachmap_proto::v1 as pb;

pub fn protocol(p: Protocol) -> i32 {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp as i32,
        Protocol::Udp => pb::Protocol::Udp as i32,
    }
}

pub fn listener_key(k: &ListenerKey) -> pb::ListenerKey {
    pb::ListenerKey {
        protocol: protocol(k.protocol),
        address: k.address.to_string(),
        port: u32::from(k.port),
    }
}

pub fn listener(l: &Listener) -> pb::Listener {
    pb::Listener {
        protocol: protocol(l.protocol),
        address: l.address.to_string(),
        port: u32::from(l.port),
        scope: match l.scope {
            BindScope::Loopback => pb::BindScope::Loopback,
            BindScope::Any => pb::BindScope::Any,
            BindScope::Address => pb::BindScope::Address,
        } as i32,
        v6only: l.v6only,
        accept_queue: l.accept_queue,
        accept_queue_limit: l.accept_queue_limit,
        established: l.established,
        processes: l
            .processes
            .iter()
            .map(|p| pb::Process {
                pid: p.pid,
                name: p.name.clone(),
                unit: p.unit.clone().unwrap_or_default(),
                cgroup: p.cgroup.clone().unwrap_or_default(),
            })
            .collect(),
        interface: l.interface.clone().unwrap_or_default(),
        uid: l.uid,
        inode: l.inode,
    }
}

pub fn sockets<'a>(
    listeners: impl Iterator<Item = &'a Listener>,
    s: &SocketSummary,
) -> pb::SocketFacts {
    pb::SocketFacts {
        listeners: listeners.map(listener).collect(),
        summary: Some(pb::SocketSummary {
            tcp_total: s.tcp_total,
            tcp_established: s.tcp_established,
            tcp_time_wait: s.tcp_time_wait,
            udp_total: s.udp_total,
        }),
    }
}

fn field(f: Field) -> pb::MatchField {
    use pb::MatchField as M;
    match f {
        Field::SourceAddress => M::SourceAddress,
        Field::DestinationAddress => M::DestinationAddress,
        Field::Protocol => M::Protocol,
        Field::SourcePort => M::SourcePort,
        Field::DestinationPort => M::DestinationPort,
        Field::InInterface => M::InInterface,
        Field::OutInterface => M::OutInterface,
        Field::CtState => M::CtState,
        Field::AddressFamily => M::AddressFamily,
        Field::IcmpType => M::IcmpType,
        Field::DestinationAddressType => M::DestinationAddressType,
        Field::Other => M::Other,
    }
}

fn verdict(k: VerdictKind) -> pb::VerdictKind {
    use pb::VerdictKind as V;
    match k {
        VerdictKind::Continue => V::Continue,
        VerdictKind::Accept => V::Accept,
        VerdictKind::Drop => V::Drop,
        VerdictKind::Reject => V::Reject,
        VerdictKind::Jump => V::Jump,
        VerdictKind::Goto => V::Goto,
        VerdictKind::Return => V::Return,
        VerdictKind::Dnat => V::Dnat,
        VerdictKind::Snat => V::Snat,
        VerdictKind::Masquerade => V::Masquerade,
        VerdictKind::Redirect => V::Redirect,
        VerdictKind::Queue => V::Queue,
        VerdictKind::Other => V::Other,
    }
}

fn rule(r: &Rule) -> pb::FirewallRule {
    pb::FirewallRule {
        handle: r.handle.unwrap_or(0),
        position: r.position,
        matches: r
            .matches
            .iter()
            .map(|m| pb::RuleMatch {
                field: field(m.field) as i32,
                negated: m.negated,
                values: m.values.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        verdict: Some(pb::RuleVerdict {
            kind: verdict(r.verdict.kind) as i32,
            target: r.verdict.target.clone().unwrap_or_default(),
            port: r.verdict.port.map(u32::from).unwrap_or(0),
        }),
        packets: r.packets,
        bytes: r.bytes,
        comment: r.comment.clone().unwrap_or_default(),
        text: r.text.clone(),
        unsupported: r.unsupported,
    }
}

pub fn firewall(f: &Firewall) -> pb::Firewall {
    pb::Firewall {
        backend: f.backend.clone(),
        generation: f.generation,
        hash: f.hash,
        error: f.error.clone().unwrap_or_default(),
        tables: f
            .tables
            .iter()
            .map(|t| pb::FirewallTable {
                family: t.family.clone(),
                name: t.name.clone(),
                backend: t.backend.clone(),
                chains: t
                    .chains
                    .iter()
                    .map(|c| pb::FirewallChain {
                        name: c.name.clone(),
                        hook: c.hook.clone().unwrap_or_default(),
                        r#type: c.chain_type.clone().unwrap_or_default(),
                        priority: c.priority,
                        policy: c.policy.clone().unwrap_or_default(),
                        rules: c.rules.iter().map(rule).collect(),
                    })
                    .collect(),
                sets: t
                    .sets
                    .iter()
                    .map(|s| pb::FirewallSet {
                        name: s.name.clone(),
                        r#type: s.set_type.clone(),
                        elements: s.elements.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn figures(p: &PressureFigures) -> Option<pb::PressureFigures> {
    Some(pb::PressureFigures {
        avg10: p.avg10,
        avg60: p.avg60,
        avg300: p.avg300,
    })
}

pub fn resources(r: &Resources) -> pb::Resources {
    pb::Resources {
        sampled_unix_nanos: r.sampled_unix_nanos,
        load1: r.load1,
        load5: r.load5,
        load15: r.load15,
        cpus: r.cpus,
        cpu_busy_pct: r.cpu_busy_pct,
        cpu_steal_pct: r.cpu_steal_pct,
        mem_total_bytes: r.mem_total_bytes,
        mem_available_bytes: r.mem_available_bytes,
        swap_total_bytes: r.swap_total_bytes,
        swap_free_bytes: r.swap_free_bytes,
        pressure: r.pressure.as_ref().map(|p| pb::Pressure {
            cpu_some: figures(&p.cpu_some),
            memory_some: figures(&p.memory_some),
            memory_full: figures(&p.memory_full),
            io_some: figures(&p.io_some),
            io_full: figures(&p.io_full),
        }),
        conntrack_count: r.conntrack_count,
        conntrack_max: r.conntrack_max,
        listen_overflows: r.listen_overflows,
        listen_drops: r.listen_drops,
        disk_root_total_bytes: r.disk_root_total_bytes,
        disk_root_used_bytes: r.disk_root_used_bytes,
        memory_trend: match r.memory_trend {
            MemoryTrend::Unknown => pb::MemoryTrend::Unknown,
            MemoryTrend::Steady => pb::MemoryTrend::Steady,
            MemoryTrend::Growing => pb::MemoryTrend::Growing,
            MemoryTrend::Spike => pb::MemoryTrend::Spike,
        } as i32,
        memory_growth_mib_per_min: r.memory_growth_mib_per_min,
    }
}

pub fn probe_kind(k: ProbeKind) -> i32 {
    match k {
        ProbeKind::Tcp => pb::ProbeKind::Tcp as i32,
        ProbeKind::Icmp => pb::ProbeKind::Icmp as i32,
        ProbeKind::Http => pb::ProbeKind::Http as i32,
        ProbeKind::Https => pb::ProbeKind::Https as i32,
        ProbeKind::Udp => pb::ProbeKind::Udp as i32,
    }
}

pub fn outcome(o: Option<Outcome>) -> i32 {
    use pb::ProbeOutcome as P;
    (match o {
        None => P::Unspecified,
        Some(Outcome::Open) => P::Open,
        Some(Outcome::Refused) => P::Refused,
        Some(Outcome::Timeout) => P::Timeout,
        Some(Outcome::Unreachable) => P::Unreachable,
        Some(Outcome::NoRoute) => P::NoRoute,
        Some(Outcome::Reset) => P::Reset,
        Some(Outcome::DnsError) => P::DnsError,
        Some(Outcome::HttpStatus) => P::HttpStatus,
        Some(Outcome::TlsError) => P::TlsError,
    }) as i32
}

pub fn probe_target(t: &PlannedTarget) -> pb::ProbeTarget {
    pb::ProbeTarget {
        id: t.id,
        node: t.node.clone(),
        address: t.address.to_string(),
        port: u32::from(t.port),
        kind: probe_kind(t.kind),
        service: t.service.clone().unwrap_or_default(),
        http_path: t.http_path.clone().unwrap_or_default(),
        expect_status: t.expect_status.map(u32::from).unwrap_or(0),
        tls_server_name: t.tls_server_name.clone().unwrap_or_default(),
        tls_ca: t.tls_ca,
        udp_payload: t.udp_payload.clone(),
        udp_expect_reply: t.udp_expect_reply,
    }
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

pub fn plan(p: &NodePlan, version: u64) -> pb::ProbePlan {
    pb::ProbePlan {
        version,
        interval_ms: millis(p.interval),
        targets: p.targets.iter().map(probe_target).collect(),
        timeout_ms: millis(p.timeout),
        max_probes_per_second: p.max_probes_per_second,
        window: u32::try_from(p.window).unwrap_or(u32::MAX),
        fleet_addresses: p.fleet_addresses.iter().map(ToString::to_string).collect(),
        names: p
            .names
            .iter()
            .map(|n| pb::FleetName {
                name: n.name.clone(),
                node: n.node.clone(),
            })
            .collect(),
        tls_cas: p.tls_cas.iter().map(|c| c.to_string()).collect(),
        results_by_id: true,
    }
}

pub fn resolved_name(r: &ResolvedName) -> pb::NameResolution {
    pb::NameResolution {
        name: r.name.clone(),
        node: r.node.clone(),
        addresses: r.addresses.iter().map(ToString::to_string).collect(),
        error: r.error.clone().unwrap_or_default(),
        resolved_unix_nanos: r.resolved_unix_nanos,
    }
}

pub fn cell_state(s: CellState) -> i32 {
    (match s {
        CellState::Ok => pb::CellState::Ok,
        CellState::Degraded => pb::CellState::Degraded,
        CellState::Failing => pb::CellState::Failing,
        CellState::Unknown => pb::CellState::Unknown,
    }) as i32
}

pub fn cell(c: &CellRef) -> pb::MatrixCell {
    let cell = c.cell;
    pb::MatrixCell {
        src: c.src.to_string(),
        dst: c.dst.to_string(),
        port: u32::from(cell.port()),
        kind: probe_kind(cell.kind()),
        service: c.service.unwrap_or_default().to_string(),
        state: cell_state(cell.state()),
        loss: cell.loss(),
        rtt_ms: cell.rtt_ms(),
        rtt_p99_ms: cell.rtt_p99_ms(),
        failure: outcome(cell.failure()),
        updated_unix_nanos: cell.updated(),
        last_failure_unix_nanos: cell.last_failure_at().unwrap_or(0),
        sent: cell.sent(),
        address: c.address.to_string(),
        http_status: cell.http_status().map_or(0, u32::from),
        tls_error: cell.tls().map(tls_error),
    }
}

pub fn tls_error(t: &crate::probe::TlsNote) -> pb::TlsError {
    use crate::probe::TlsKind as K;
    use pb::TlsErrorKind as P;
    pb::TlsError {
        kind: (match t.kind {
            K::Expired => P::Expired,
            K::NotYetValid => P::NotYetValid,
            K::WrongName => P::WrongName,
            K::UnknownIssuer => P::UnknownIssuer,
            K::Revoked => P::Revoked,
            K::BadCertificate => P::BadCertificate,
            K::Handshake => P::Handshake,
        }) as i32,
        detail: t.detail.to_string(),
    }
}

pub fn matrix(m: &Matrix, port: Option<u16>, now: i64) -> pb::Matrix {
    pb::Matrix {
        nodes: m.nodes(),
        cells: m.cells(port).iter().map(cell).collect(),
        generated_unix_nanos: now,
        zones: Vec::new(),
        cells_left_out: 0,
    }
}

/// The cells `sel` keeps; `by_zone`: the zone grid, and only the kept cells
/// that are not ok. A narrowed matrix names only the nodes of its cells.
pub fn matrix_selected(
    m: &Matrix,
    sel: &crate::select::Selection,
    zones: &crate::select::Zones,
    by_zone: bool,
    now: i64,
) -> pb::Matrix {
    let (grid, cells, left_out) = if by_zone {
        crate::select::by_zone(m, sel, zones)
    } else {
        (Vec::new(), sel.cells(m, zones), 0)
    };
    let nodes = if sel.is_narrowed() {
        let mut names: Vec<String> = cells
            .iter()
            .flat_map(|c| [c.src, c.dst])
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    } else {
        m.nodes()
    };
    pb::Matrix {
        nodes,
        cells: cells.iter().map(cell).collect(),
        generated_unix_nanos: now,
        zones: grid
            .iter()
            .map(|z| pb::ZoneCell {
                src_zone: z.src_zone.clone(),
                dst_zone: z.dst_zone.clone(),
                worst: cell_state(z.worst()),
                ok: z.counts[CellState::Ok.index()],
                degraded: z.counts[CellState::Degraded.index()],
                failing: z.counts[CellState::Failing.index()],
                unknown: z.counts[CellState::Unknown.index()],
            })
            .collect(),
        cells_left_out: u32::try_from(left_out).unwrap_or(u32::MAX),
    }
}

/// Fact-source health back into its message.
pub fn source_health(
    source: crate::model::health::FactSource,
    h: &crate::model::health::SourceHealth,
) -> pb::SourceHealth {
    use crate::model::health::{FactSource as F, SourceState as S};
    let source = match source {
        F::Sockets => pb::FactSource::Sockets,
        F::Firewall => pb::FactSource::Firewall,
        F::Network => pb::FactSource::Network,
        F::KernelLog => pb::FactSource::KernelLog,
        F::Resources => pb::FactSource::Resources,
        F::Prober => pb::FactSource::Prober,
        F::Names => pb::FactSource::Names,
    };
    let state = match h.state {
        S::Starting => pb::SourceState::Starting,
        S::Ok => pb::SourceState::Ok,
        S::Degraded => pb::SourceState::Degraded,
        S::Down => pb::SourceState::Down,
    };
    pb::SourceHealth {
        source: source as i32,
        state: state as i32,
        since_unix_nanos: h.since,
        last_error: h
            .last_error
            .as_ref()
            .map(|(_, e)| e.clone())
            .unwrap_or_default(),
        last_error_unix_nanos: h.last_error.as_ref().map_or(0, |(t, _)| *t),
        errors_total: h.errors_total,
        restarts_total: h.restarts_total,
    }
}

pub fn sources(s: &crate::model::health::Sources) -> Vec<pb::SourceHealth> {
    s.iter().map(|(k, h)| source_health(*k, h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{FailureCounts, JsonDetail, TargetState, WindowInput};
    use crate::view::MatrixView;
    use std::time::Duration;

    /// `/api/v1/matrix` (written straight from the matrix) and `reachmap
    /// matrix --format json` (through the Query service) give the same JSON.
    #[test]
    fn http_and_cli_matrix_json_agree() {
        let mut m = Matrix::new(Duration::from_secs(10));
        let ip = |s: &str| s.parse().expect("ip");
        let to_b = PlannedTarget::new("b", ip("198.18.0.12"), 7442, ProbeKind::Tcp);
        let icmp_b = PlannedTarget::new("b", ip("198.18.0.12"), 0, ProbeKind::Icmp);
        let to_a = PlannedTarget::new("a", ip("198.18.0.11"), 7442, ProbeKind::Tcp);
        m.set_plan("a", &[to_b.clone(), icmp_b]);
        m.set_plan("b", &[to_a]);
        m.apply(
            "a",
            vec![WindowInput {
                target: to_b.into(),
                sent: 10,
                ok: 7,
                failures: FailureCounts {
                    timeout: 3,
                    ..FailureCounts::default()
                },
                rtt_p50_ms: Some(0.25),
                rtt_p99_ms: Some(1.5),
                last_outcome: Some(Outcome::Open),
                last_failure: Some((Outcome::Timeout, 5)),
                state: TargetState::Degraded,
                last_http_status: None,
                last_tls_error: None,
            }],
            1_000,
        );
        let view = MatrixView::from(&matrix(&m, None, 2_000));
        for (detail, cli) in [
            (JsonDetail::Summary, serde_json::to_value(view.summary())),
            (JsonDetail::Full, serde_json::to_value(&view)),
        ] {
            let mut http = Vec::new();
            m.write_json(None, detail, &mut http).expect("write");
            let http: serde_json::Value = serde_json::from_slice(&http).expect("json");
            same_json(&http, &cli.expect("json"));
        }
    }

    fn same_json(http: &serde_json::Value, cli: &serde_json::Value) {
        assert_eq!(http["nodes"], cli["nodes"]);
        let (h, c) = (
            http["cells"].as_array().expect("cells"),
            cli["cells"].as_array().expect("cells"),
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h.len(), c.len());
        for (h, c) in h.iter().zip(c) {
            let (h, c) = (h.as_object().expect("obj"), c.as_object().expect("obj"));
            assert_eq!(
                h.keys().collect::<Vec<_>>(),
                c.keys().collect::<Vec<_>>(),
                "same fields"
            );
            for (k, hv) in h {
                match (hv.as_f64(), c[k].as_f64()) {
                    (Some(x), Some(y)) => assert!((x - y).abs() < 1e-3, "{k}: {x} vs {y}"),
                    _ => assert_eq!(hv, &c[k], "{k}"),
                }
            }
        }
    }
}
