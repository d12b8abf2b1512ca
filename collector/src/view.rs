//! JSON views of query answers, shared by the CLI (`--format json`) and the
//! HTTP API, so scripts see the same shape from both.

use crate::{model, validate};
use reachmap_proto::v1 as pb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Serialize, Debug)]
pub struct NodeView {
    pub name: String,
    pub connected: bool,
    /// Every address of the node, without prefix length.
    pub addresses: Vec<String>,
    pub version: String,
    pub machine_id: String,
    pub boot_id: String,
    /// RFC 3339: when the current stream started, or the last one ended.
    pub since: Option<String>,
    pub last_seen: Option<String>,
    /// Agent clock minus collector clock.
    pub clock_offset_ms: Option<f64>,
    pub clock_rtt_ms: Option<f64>,
    pub labels: BTreeMap<String, String>,
    pub dropped_events_total: u64,
    /// Fact sources that are not reading (down, or not read yet): what this
    /// node's facts cannot show.
    pub blind: Vec<String>,
    /// Every source that is not ok, with its last error.
    pub unhealthy_sources: Vec<SourceView>,
    /// The collector its agent streams to, when another one on the shared
    /// store.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub collector: String,
}

/// One fact source's health, as the agent last reported it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct SourceView {
    pub source: String,
    /// "starting", "ok", "degraded" or "down".
    pub state: String,
    /// RFC 3339, by the agent's clock: when it entered this state.
    pub since: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub errors_total: u64,
    pub restarts_total: u64,
}

pub fn source_name(v: i32) -> String {
    pb::FactSource::try_from(v)
        .map(|s| enum_name(s.as_str_name(), "FACT_SOURCE_"))
        .unwrap_or_else(|_| format!("source {v}"))
}

pub fn source_state_name(v: i32) -> String {
    pb::SourceState::try_from(v)
        .map(|s| enum_name(s.as_str_name(), "SOURCE_STATE_"))
        .unwrap_or_else(|_| format!("state {v}"))
}

/// Down, or not read yet.
pub fn source_blind(h: &pb::SourceHealth) -> bool {
    matches!(
        pb::SourceState::try_from(h.state),
        Ok(pb::SourceState::Down | pb::SourceState::Starting)
    )
}

impl From<&pb::SourceHealth> for SourceView {
    fn from(h: &pb::SourceHealth) -> Self {
        SourceView {
            source: source_name(h.source),
            state: source_state_name(h.state),
            since: rfc3339(h.since_unix_nanos),
            last_error: (!h.last_error.is_empty()).then(|| h.last_error.clone()),
            last_error_at: rfc3339(h.last_error_unix_nanos),
            errors_total: h.errors_total,
            restarts_total: h.restarts_total,
        }
    }
}

pub fn rfc3339(unix_nanos: i64) -> Option<String> {
    let nanos = u64::try_from(unix_nanos).ok().filter(|n| *n > 0)?;
    let t = UNIX_EPOCH + Duration::from_nanos(nanos);
    Some(humantime::format_rfc3339_millis(t).to_string())
}

impl From<&pb::NodeSummary> for NodeView {
    fn from(n: &pb::NodeSummary) -> Self {
        NodeView {
            name: n.name.clone(),
            connected: n.connected,
            addresses: n.addresses.clone(),
            version: n.version.clone(),
            machine_id: n.machine_id.clone(),
            boot_id: n.boot_id.clone(),
            since: rfc3339(n.since_unix_nanos),
            last_seen: rfc3339(n.last_seen_unix_nanos),
            clock_offset_ms: n.clock_offset_ms,
            clock_rtt_ms: n.clock_rtt_ms,
            labels: n.labels.clone().into_iter().collect(),
            dropped_events_total: n.dropped_events_total,
            blind: n
                .unhealthy_sources
                .iter()
                .filter(|h| source_blind(h))
                .map(|h| source_name(h.source))
                .collect(),
            unhealthy_sources: n.unhealthy_sources.iter().map(SourceView::from).collect(),
            collector: n.collector.clone(),
        }
    }
}

pub fn nodes(list: &[pb::NodeSummary]) -> Vec<NodeView> {
    list.iter().map(NodeView::from).collect()
}

#[derive(Serialize, Debug)]
pub struct InterfaceView {
    pub name: String,
    pub index: u32,
    pub state: String,
    pub admin_up: bool,
    pub mac: String,
    pub mtu: u32,
    pub kind: String,
    /// CIDR form, e.g. 198.18.0.11/24.
    pub addresses: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct RouteView {
    pub destination: String,
    pub gateway: String,
    pub interface: String,
    pub preferred_source: String,
    pub metric: u32,
}

#[derive(Serialize, Debug)]
pub struct EventView {
    /// When it happened, by the agent's clock.
    pub time: Option<String>,
    /// When the collector received it, by the collector's clock.
    pub received: Option<String>,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Serialize, Debug)]
pub struct NodeDetailView {
    pub node: Option<NodeView>,
    pub host: Option<HostView>,
    pub interfaces: Vec<InterfaceView>,
    pub routes: Vec<RouteView>,
    /// Sorted by protocol, port, address.
    pub listeners: Vec<model::Listener>,
    pub sockets: model::SocketSummary,
    pub firewall: Option<model::Firewall>,
    pub resources: Option<model::Resources>,
    /// Newest first.
    pub events: Vec<EventView>,
    /// The fleet's names as this node resolves them.
    pub names: Vec<NameView>,
    /// Every fact source of the agent and how it is.
    pub sources: Vec<SourceView>,
}

#[derive(Serialize, Debug)]
pub struct NameView {
    pub name: String,
    /// The node the config gives the name to.
    pub node: String,
    pub addresses: Vec<String>,
    pub error: Option<String>,
    /// When it was looked up, RFC 3339.
    pub resolved: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct HostView {
    pub hostname: String,
    pub kernel: String,
    pub os: String,
    pub uptime_seconds: u64,
}

pub fn oper_state_name(v: i32) -> String {
    pb::OperState::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("OPER_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("state-{v}"))
}

fn addr(a: &Option<pb::Address>) -> String {
    a.as_ref()
        .map(|a| format!("{}/{}", a.ip, a.prefix_len))
        .unwrap_or_default()
}

fn route_text(r: &Option<pb::Route>) -> String {
    match r {
        Some(r) if r.gateway.is_empty() => format!("{} dev {}", r.destination, r.interface),
        Some(r) => format!("{} via {} dev {}", r.destination, r.gateway, r.interface),
        None => String::new(),
    }
}

fn protocol_name(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Udp) => "udp",
        _ => "tcp",
    }
}

fn host_port(address: &str, port: u32) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn key_text(k: &pb::ListenerKey) -> String {
    format!(
        "{} {}",
        protocol_name(k.protocol),
        host_port(&k.address, k.port)
    )
}

fn listener_text(l: &pb::Listener) -> String {
    let process = l
        .processes
        .first()
        .map(|p| format!(" ({} pid {})", p.name, p.pid))
        .unwrap_or_default();
    format!(
        "{} {}{process}",
        protocol_name(l.protocol),
        host_port(&l.address, l.port)
    )
}

/// A short kind and a one-line description a person can read.
pub fn describe(e: &pb::Event) -> (&'static str, String) {
    use pb::event::Kind;
    let updown = |up: bool| if up { "up" } else { "down" };
    match &e.kind {
        Some(Kind::AddressChanged(a)) => match (&a.added, &a.removed) {
            (Some(_), None) => (
                "address_added",
                format!("{} added on {}", addr(&a.added), a.interface),
            ),
            (None, Some(_)) => (
                "address_removed",
                format!("{} removed from {}", addr(&a.removed), a.interface),
            ),
            _ => (
                "address_changed",
                format!(
                    "{} replaced by {} on {}",
                    addr(&a.removed),
                    addr(&a.added),
                    a.interface
                ),
            ),
        },
        Some(Kind::LinkChanged(l)) if l.added => (
            "link_added",
            format!(
                "{} appeared ({})",
                l.interface,
                oper_state_name(l.new_state)
            ),
        ),
        Some(Kind::LinkChanged(l)) if l.removed => {
            ("link_removed", format!("{} disappeared", l.interface))
        }
        Some(Kind::LinkChanged(l)) => (
            "link_changed",
            format!(
                "{}: admin {} -> {}, state {} -> {}",
                l.interface,
                updown(l.old_admin_up),
                updown(l.new_admin_up),
                oper_state_name(l.old_state),
                oper_state_name(l.new_state)
            ),
        ),
        Some(Kind::RouteChanged(r)) => match (&r.added, &r.removed) {
            (Some(_), None) => (
                "route_added",
                format!("default route {} added", route_text(&r.added)),
            ),
            (None, Some(_)) => (
                "route_removed",
                format!("default route {} removed", route_text(&r.removed)),
            ),
            _ => (
                "route_changed",
                format!(
                    "{} replaced by {}",
                    route_text(&r.removed),
                    route_text(&r.added)
                ),
            ),
        },
        Some(Kind::EventsDropped(d)) => (
            "events_dropped",
            format!(
                "agent dropped {} events while the collector was unreachable",
                d.count
            ),
        ),
        Some(Kind::ListenerChanged(l)) => {
            let what = l.listener.as_ref().map(listener_text).unwrap_or_default();
            if l.appeared {
                ("listener_appeared", format!("now listening on {what}"))
            } else {
                ("listener_gone", format!("no longer listening on {what}"))
            }
        }
        Some(Kind::FirewallChanged(f)) => {
            let who = match (f.pid, f.command.as_str()) {
                (Some(pid), "") => format!(" by pid {pid}"),
                (Some(pid), c) => format!(" by {c} (pid {pid})"),
                (None, "") => String::new(),
                (None, c) => format!(" by {c}"),
            };
            let generation = f
                .generation
                .map(|g| format!(", generation {g}"))
                .unwrap_or_default();
            (
                "firewall_changed",
                format!(
                    "{} ruleset changed{who}: {} -> {} rules{generation}",
                    f.backend, f.old_rules, f.new_rules
                ),
            )
        }
        Some(Kind::OomKill(o)) => {
            let unit = if o.unit.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.unit)
            };
            let ports = if o.listeners.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = o.listeners.iter().map(key_text).collect();
                format!("; it listened on {}", list.join(", "))
            };
            (
                "oom_kill",
                format!(
                    "OOM killer killed {} (pid {}){unit}, anon-rss {} kB{ports}",
                    o.process, o.pid, o.anon_rss_kb
                ),
            )
        }
        Some(Kind::ConntrackFull(c)) => (
            "conntrack_full",
            format!(
                "conntrack table full, dropping packets ({} messages)",
                c.count
            ),
        ),
        Some(Kind::SynFlood(f)) => (
            "syn_flood",
            if f.address.is_empty() {
                format!("possible SYN flooding on port {}", f.port)
            } else {
                format!("possible SYN flooding on {}:{}", f.address, f.port)
            },
        ),
        Some(Kind::KernelLink(k)) => (
            if k.up {
                "kernel_link_up"
            } else {
                "kernel_link_down"
            },
            format!("{}: {}", k.interface, k.message),
        ),
        Some(Kind::KernelLogLost(l)) => (
            "kernel_log_lost",
            format!(
                "{} kernel log records were overwritten before they were read",
                l.count
            ),
        ),
        Some(Kind::ProbeStateChanged(c)) => {
            let target = c
                .target
                .as_ref()
                .map(|t| {
                    format!(
                        "{} {} ({})",
                        kind_name(t.kind),
                        host_port(&t.address, t.port),
                        t.node
                    )
                })
                .unwrap_or_default();
            (
                "probe_state_changed",
                format!(
                    "{target}: {} -> {} ({})",
                    target_state_name(c.old_state),
                    target_state_name(c.new_state),
                    outcome_name(c.outcome).unwrap_or_else(|| "unspecified".into())
                ),
            )
        }
        Some(Kind::StreamChanged(s)) if s.connected => (
            "agent_connected",
            format!("agent {} connected", s.agent_version),
        ),
        Some(Kind::StreamChanged(s)) => (
            "agent_disconnected",
            format!("agent disconnected: {}", s.reason),
        ),
        Some(Kind::NodeRebooted(r)) => (
            "node_rebooted",
            format!(
                "boot id changed from {} to {}",
                r.old_boot_id, r.new_boot_id
            ),
        ),
        None => ("unknown", String::new()),
    }
}

impl From<&pb::NodeDetail> for NodeDetailView {
    fn from(d: &pb::NodeDetail) -> Self {
        let facts = d.facts.as_ref();
        // The collector sent what it validated; reading it back into the
        // model gives parsed addresses and rules to show.
        let model_facts = facts.and_then(|f| validate::snapshot(f).ok());
        NodeDetailView {
            node: d.summary.as_ref().map(NodeView::from),
            host: facts.and_then(|f| f.host.as_ref()).map(|h| HostView {
                hostname: h.hostname.clone(),
                kernel: h.kernel.clone(),
                os: h.os.clone(),
                uptime_seconds: h.uptime_seconds,
            }),
            interfaces: facts
                .map(|f| {
                    f.interfaces
                        .iter()
                        .map(|i| InterfaceView {
                            name: i.name.clone(),
                            index: i.index,
                            state: oper_state_name(i.oper_state),
                            admin_up: i.admin_up,
                            mac: i.mac.clone(),
                            mtu: i.mtu,
                            kind: i.kind.clone(),
                            addresses: i
                                .addresses
                                .iter()
                                .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                                .collect(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            routes: facts
                .map(|f| {
                    f.routes
                        .iter()
                        .map(|r| RouteView {
                            destination: r.destination.clone(),
                            gateway: r.gateway.clone(),
                            interface: r.interface.clone(),
                            preferred_source: r.preferred_source.clone(),
                            metric: r.metric,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            listeners: model_facts
                .as_ref()
                .map(|f| f.listeners.values().cloned().collect())
                .unwrap_or_default(),
            sockets: model_facts
                .as_ref()
                .map(|f| f.socket_summary.clone())
                .unwrap_or_default(),
            firewall: model_facts.as_ref().and_then(|f| f.firewall.clone()),
            resources: model_facts.as_ref().and_then(|f| f.resources.clone()),
            events: d
                .recent_events
                .iter()
                .map(|e| {
                    let (kind, detail) = describe(e);
                    EventView {
                        time: rfc3339(e.time_unix_nanos),
                        received: rfc3339(e.received_unix_nanos),
                        kind,
                        detail,
                    }
                })
                .collect(),
            names: d
                .names
                .iter()
                .map(|n| NameView {
                    name: n.name.clone(),
                    node: n.node.clone(),
                    addresses: n.addresses.clone(),
                    error: (!n.error.is_empty()).then(|| n.error.clone()),
                    resolved: rfc3339(n.resolved_unix_nanos),
                })
                .collect(),
            sources: facts
                .map(|f| f.sources.iter().map(SourceView::from).collect())
                .unwrap_or_default(),
        }
    }
}

fn enum_name(full: &str, prefix: &str) -> String {
    full.trim_start_matches(prefix).to_ascii_lowercase()
}

pub fn kind_name(v: i32) -> String {
    pb::ProbeKind::try_from(v)
        .map(|k| enum_name(k.as_str_name(), "PROBE_KIND_"))
        .unwrap_or_else(|_| format!("kind-{v}"))
}

pub fn outcome_name(v: i32) -> Option<String> {
    match pb::ProbeOutcome::try_from(v) {
        Ok(pb::ProbeOutcome::Unspecified) => None,
        Ok(o) => Some(enum_name(o.as_str_name(), "PROBE_OUTCOME_")),
        Err(_) => Some(format!("outcome-{v}")),
    }
}

pub fn target_state_name(v: i32) -> String {
    pb::TargetState::try_from(v)
        .map(|s| enum_name(s.as_str_name(), "TARGET_STATE_"))
        .unwrap_or_else(|_| format!("state-{v}"))
}

pub fn cell_state_name(v: i32) -> String {
    match pb::CellState::try_from(v) {
        Ok(pb::CellState::Unspecified) | Err(_) => "unknown".into(),
        Ok(s) => enum_name(s.as_str_name(), "CELL_STATE_"),
    }
}

#[path = "view_matrix.rs"]
mod matrix;
pub use matrix::{CellSummaryView, CellView, MatrixSummaryView, MatrixView};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TestPortView {
    pub src: String,
    pub dst: String,
    pub address: String,
    pub port: u32,
    pub open: bool,
    pub outcome: Option<String>,
    pub rtt_ms: Option<f64>,
    pub detail: String,
    /// "tcp" or "udp".
    pub protocol: String,
    /// UDP: the ICMP error that came back to SRC ("port_unreachable",
    /// "unreachable"), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<String>,
    /// With `--ports`: what the ports say together, and each port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortTestView>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PortTestView {
    pub port: u32,
    pub open: bool,
    /// "open", a probe outcome, or "not tested".
    pub result: String,
    pub rtt_ms: Option<f64>,
    /// The host firewall rule that blocks it, when one on either end does.
    pub host_firewall: Option<String>,
    /// Why it could not be tested.
    pub error: Option<String>,
}

impl From<&pb::TestPortResult> for TestPortView {
    fn from(r: &pb::TestPortResult) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        TestPortView {
            src: r.src.clone(),
            dst: r.dst.clone(),
            address: r.address.clone(),
            port: r.port,
            open: r.open,
            outcome: outcome_name(r.outcome),
            rtt_ms: (r.open).then_some(r.rtt_ms),
            detail: r.detail.clone(),
            protocol: if r.protocol.is_empty() {
                "tcp".into()
            } else {
                r.protocol.clone()
            },
            icmp: some(&r.icmp),
            verdict: some(&r.verdict),
            ports: r
                .each
                .iter()
                .map(|t| PortTestView {
                    port: t.port,
                    open: t.open,
                    result: crate::testport::outcome_word(t),
                    rtt_ms: t.open.then_some(t.rtt_ms),
                    host_firewall: some(&t.host_firewall),
                    error: some(&t.error),
                })
                .collect(),
        }
    }
}

/// A token as `reachmap token list --format json` shows it (never its secret).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TokenView {
    pub id: String,
    pub kind: String,
    pub created: String,
    pub expires: String,
    pub uses_left: Option<u32>,
    pub node: Option<String>,
    pub description: String,
    pub revoked: bool,
}

impl From<&pb::TokenInfo> for TokenView {
    fn from(t: &pb::TokenInfo) -> Self {
        TokenView {
            id: t.id.clone(),
            kind: t.kind.clone(),
            created: rfc3339(t.created_unix.saturating_mul(1_000_000_000)).unwrap_or_default(),
            expires: rfc3339(t.expires_unix.saturating_mul(1_000_000_000)).unwrap_or_default(),
            uses_left: (t.kind == "enroll").then_some(t.uses_left),
            node: (!t.node.is_empty()).then(|| t.node.clone()),
            description: t.description.clone(),
            revoked: t.revoked,
        }
    }
}

/// A query client's certificate, as `reachmap client list --format json`
/// shows it.
#[derive(Debug, Serialize)]
pub struct ClientCertView {
    pub name: String,
    pub role: String,
    pub serial: String,
    pub issued: String,
    pub expires: String,
    pub revoked: Option<String>,
}

impl From<&pb::ClientCertInfo> for ClientCertView {
    fn from(c: &pb::ClientCertInfo) -> Self {
        let at = |unix: i64| rfc3339(unix.saturating_mul(1_000_000_000)).unwrap_or_default();
        ClientCertView {
            name: c.name.clone(),
            role: c.role.clone(),
            serial: c.serial.clone(),
            issued: at(c.issued_unix),
            expires: at(c.not_after_unix),
            revoked: (c.revoked_unix != 0).then(|| at(c.revoked_unix)),
        }
    }
}

/// A collector sharing the store, as `reachmap collectors --format json`
/// and `/api/v1/collectors` show it.
#[derive(Debug, Serialize)]
pub struct CollectorView {
    pub name: String,
    pub grpc: String,
    pub http: String,
    pub version: String,
    pub started: Option<String>,
    /// Its last heartbeat.
    pub seen: Option<String>,
    /// Seconds since its last heartbeat.
    pub lag_seconds: Option<f64>,
    pub alive: bool,
    pub agents: u32,
    pub leader: bool,
    pub store_writable: bool,
    pub store_queue: u64,
}

impl CollectorView {
    pub fn of(c: &pb::CollectorInfo, now: i64) -> CollectorView {
        let at = |t: i64| (t != 0).then(|| rfc3339(t).unwrap_or_default());
        CollectorView {
            name: c.name.clone(),
            grpc: c.grpc.clone(),
            http: c.http.clone(),
            version: c.version.clone(),
            started: at(c.started_unix_nanos),
            seen: at(c.seen_unix_nanos),
            lag_seconds: (c.seen_unix_nanos != 0)
                .then(|| now.saturating_sub(c.seen_unix_nanos).max(0) as f64 / 1e9),
            alive: c.alive,
            agents: c.agents,
            leader: c.leader,
            store_writable: c.store_writable,
            store_queue: c.store_queue,
        }
    }
}

#[path = "view_history.rs"]
mod history;
pub use history::{EventsView, HistoryView, IntervalView, NodeEventView};
