//! The correlator: `reachmap why SRC DST[:PORT]`. It reads the facts and
//! events of both ends and the matrix cells between them, runs every cause
//! check, and returns a verdict with the causes that facts support, most
//! likely first — never a cause without evidence. Pure: it is given the
//! fleet state and the time; the state task runs it.

pub(crate) mod causes;
pub mod code;
#[cfg(test)]
pub(crate) mod tests;
mod wire;

use crate::probe::{CellState, Matrix, ProbeKind};
use crate::state::{Node, StoredEvent, unix_nanos};
use crate::view::{describe, rfc3339};
use code::CauseCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

/// How far back "what changed" looks before the cell turned bad.
pub const CHANGE_WINDOW_NANOS: i64 = 30 * 60 * 1_000_000_000;
const MAX_CHANGES: usize = 20;

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Reachable,
    Degraded,
    Unreachable,
    Unknown,
}

/// Unix nanoseconds as RFC 3339 in JSON (null for 0).
pub(crate) fn time_json<S: serde::Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    match rfc3339(*t) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_none(),
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Evidence {
    /// "fact", "event" or "probe".
    pub kind: String,
    pub node: String,
    /// When the fact was read or the event happened, unix nanoseconds.
    #[serde(serialize_with = "time_json")]
    pub time: i64,
    pub text: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Cause {
    /// Stable, part of the public interface: a `CauseCode`'s string. A
    /// string rather than the enum so an answer from a newer collector
    /// keeps codes this build does not know.
    pub code: String,
    /// The node the cause is on.
    pub node: String,
    pub detail: String,
    pub evidence: Vec<Evidence>,
    pub fix: Option<String>,
    /// How strongly the facts point at this cause; causes are sorted by it.
    #[serde(skip)]
    pub weight: u32,
}

/// The probe results between the two nodes on the asked port.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CellSummary {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub kind: String,
    pub state: String,
    pub loss: f64,
    pub rtt_ms: Option<f64>,
    pub failure: Option<String>,
    #[serde(serialize_with = "time_json")]
    pub last_failure: i64,
    /// When the source last reported the cell.
    #[serde(serialize_with = "time_json")]
    pub updated: i64,
    pub address: String,
    /// The last HTTP status seen (HTTP probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why the last TLS handshake failed (HTTPS probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_error: Option<TlsView>,
    /// The declared service the probe is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// A failed TLS handshake: `kind` is one of `expired`, `not_yet_valid`,
/// `wrong_name`, `unknown_issuer`, `revoked`, `bad_certificate`,
/// `handshake`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TlsView {
    pub kind: String,
    pub detail: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ChangeView {
    pub node: String,
    #[serde(serialize_with = "time_json")]
    pub time: i64,
    pub kind: String,
    pub detail: String,
}

/// One address clients reach the destination at.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ClientAddress {
    pub address: String,
    /// How clients come to use it: the node's primary address, or a name.
    pub via: String,
    /// Whether a listener on the port takes connections there; `None` when
    /// not known.
    pub listening: Option<bool>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Explanation {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub verdict: Verdict,
    /// Most likely first.
    pub causes: Vec<Cause>,
    /// Every check that ran, with what it found.
    pub checked: Vec<String>,
    /// What changed on both nodes before the cell turned bad, newest first.
    pub changes: Vec<ChangeView>,
    pub probe: Option<CellSummary>,
    /// The same port the other way (B to A), when probed: direction evidence.
    pub reverse: Option<CellSummary>,
    pub icmp: Option<CellSummary>,
    /// The address of the destination the verdict holds for: where clients
    /// connect, which may not be where the probe went.
    pub address: Option<String>,
    /// How clients reach the destination, and whether each address works.
    pub addresses: Vec<ClientAddress>,
    /// The past moment the answer is for (`why --at`); 0 (null in JSON): now.
    #[serde(serialize_with = "time_json")]
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhyError {
    #[error("no node named {0:?}")]
    NoSuchNode(String),
    #[error("source and destination are the same node")]
    SameNode,
}

/// Everything a cause check may look at.
/// What a declared service (`[[services]]`) says about its port: who
/// should hold it (`unit` or `process`), and the services behind it
/// (`upstreams`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub service: String,
    pub port: u16,
    pub unit: Option<String>,
    pub process: Option<String>,
    /// (node name or name prefix, port): a node is one when its name is
    /// the name, or starts with it and a dash ("app" is app-1, app-2).
    pub upstreams: Vec<(String, u16)>,
}

impl Declared {
    /// The declared services that name an owner or upstreams.
    pub fn from_config(services: &[crate::config::ServiceConfig]) -> Vec<Declared> {
        services
            .iter()
            .filter(|s| s.unit.is_some() || s.process.is_some() || !s.upstreams.is_empty())
            .map(|s| Declared {
                service: s.name.clone(),
                port: s.port,
                unit: s.unit.clone(),
                process: s.process.clone(),
                upstreams: s
                    .upstreams
                    .iter()
                    .filter_map(|u| {
                        let (name, port) = u.rsplit_once(':')?;
                        Some((name.to_string(), port.parse().ok()?))
                    })
                    .collect(),
            })
            .collect()
    }

    /// Whether it names who should hold the port.
    pub fn names_owner(&self) -> bool {
        self.unit.is_some() || self.process.is_some()
    }

    /// Whether `node` is one the upstream `name` means.
    pub fn upstream_is(name: &str, node: &str) -> bool {
        node == name
            || node
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
    }

    /// Whether `p` is the declared owner: its unit, or its process name.
    pub fn is(&self, p: &crate::model::Process) -> bool {
        match (&self.unit, &self.process) {
            (Some(u), _) if p.unit.as_deref() == Some(u.as_str()) => true,
            (_, Some(name)) => p.name == *name,
            _ => false,
        }
    }
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.unit, &self.process) {
            (Some(u), _) => write!(f, "{u}"),
            (None, Some(p)) => write!(f, "process {p}"),
            (None, None) => write!(f, "nothing declared"),
        }
    }
}

pub struct Context<'a> {
    pub src: &'a Node,
    pub dst: &'a Node,
    pub port: u16,
    /// What a declared service says about the port.
    pub owner: Option<&'a Declared>,
    /// With a declared service's upstreams and an HTTP probe failing on its
    /// status: the destination's cells to them, each failing one with its
    /// top cause.
    pub upstreams: Vec<(CellSummary, Option<Cause>)>,
    /// The address the source probes the destination at.
    pub address: Option<IpAddr>,
    /// The addresses clients use to reach the destination: its primary
    /// address (the one peers probe) first, then what the destination's
    /// configured names resolve to on the source, where that is one of the
    /// destination's addresses; each with how clients come to use it.
    pub clients: Vec<(IpAddr, String)>,
    pub probe: Option<CellSummary>,
    pub reverse: Option<CellSummary>,
    pub icmp: Option<CellSummary>,
    /// Other sources' cells to the same destination and port.
    pub others_to_dst: Vec<CellSummary>,
    pub now: i64,
    /// When the cell turned bad (from the source's state-change events).
    pub bad_since: Option<i64>,
}

impl Context<'_> {
    /// The transport the probe (and so the explanation) is for.
    pub fn protocol(&self) -> crate::model::Protocol {
        if self.probe.as_ref().is_some_and(|p| p.kind == "udp") {
            crate::model::Protocol::Udp
        } else {
            crate::model::Protocol::Tcp
        }
    }

    pub fn failure(&self) -> Option<&str> {
        self.probe.as_ref().and_then(|c| c.failure.as_deref())
    }
}

fn state_name(s: CellState) -> &'static str {
    s.as_str()
}

fn summary(m: &Matrix, src: &str, dst: &str, port: u16, kind: ProbeKind) -> Option<CellSummary> {
    let c = m.cell(src, dst, port, kind)?;
    Some(CellSummary {
        src: src.to_string(),
        dst: dst.to_string(),
        port,
        kind: kind.as_str().to_string(),
        state: state_name(c.cell.state()).to_string(),
        loss: c.cell.loss(),
        rtt_ms: c.cell.rtt_ms(),
        failure: c.cell.failure().map(|o| o.as_str().to_string()),
        last_failure: c.cell.last_failure_at().unwrap_or(0),
        updated: c.cell.updated(),
        address: c.address.to_string(),
        http_status: c.cell.http_status(),
        tls_error: c.cell.tls().map(|t| TlsView {
            kind: t.kind.as_str().to_string(),
            detail: t.detail.to_string(),
        }),
        service: c.service.map(str::to_string),
    })
}

/// The cells from `node` to the upstreams `d` names, each failing one with
/// its top cause (explained without declarations, so the chain is one link).
fn upstream_cells(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    d: &Declared,
    node: &str,
    now: SystemTime,
) -> Vec<(CellSummary, Option<Cause>)> {
    let mut out = Vec::new();
    for (name, port) in &d.upstreams {
        for up in nodes
            .keys()
            .filter(|n| Declared::upstream_is(name, n) && n.as_str() != node)
        {
            let Some(cell) = summary(m, node, up, *port, ProbeKind::Tcp)
                .or_else(|| summary(m, node, up, *port, ProbeKind::Http))
                .or_else(|| summary(m, node, up, *port, ProbeKind::Https))
            else {
                continue;
            };
            let top = (cell.state != "ok")
                .then(|| explain(m, nodes, &[], node, up, *port, now).ok())
                .flatten()
                .and_then(|e| e.causes.into_iter().next());
            out.push((cell, top));
        }
    }
    out
}

/// When the source's probes of `dst:port` last turned bad, from its events.
pub(crate) fn bad_since(src: &Node, dst: &str, port: u16) -> Option<i64> {
    src.events.iter().rev().find_map(|e| match &e.event.kind {
        Some(reachmap_proto::v1::event::Kind::ProbeStateChanged(c))
            if c.target
                .as_ref()
                .is_some_and(|t| t.node == dst && t.port == u32::from(port))
                && c.new_state != reachmap_proto::v1::TargetState::Ok as i32 =>
        {
            Some(e.event.time_unix_nanos)
        }
        _ => None,
    })
}

/// Events worth showing as "what changed".
pub(crate) fn is_change(e: &StoredEvent) -> bool {
    use reachmap_proto::v1::event::Kind;
    matches!(
        e.event.kind,
        Some(
            Kind::AddressChanged(_)
                | Kind::LinkChanged(_)
                | Kind::RouteChanged(_)
                | Kind::NodeRebooted(_)
                | Kind::ListenerChanged(_)
                | Kind::FirewallChanged(_)
                | Kind::OomKill(_)
                | Kind::ConntrackFull(_)
                | Kind::SynFlood(_)
                | Kind::KernelLink(_)
                | Kind::StreamChanged(_)
        )
    )
}

/// A kernel link message names an interface; one this node does not have
/// is about another namespace on the same kernel.
fn about_node(n: &Node, e: &StoredEvent) -> bool {
    match &e.event.kind {
        Some(reachmap_proto::v1::event::Kind::KernelLink(k)) => n
            .facts
            .as_ref()
            .is_some_and(|f| f.interfaces.values().any(|i| i.name == k.interface)),
        _ => true,
    }
}

fn changes(ctx: &Context) -> Vec<ChangeView> {
    let until = ctx.now;
    let from = ctx.bad_since.unwrap_or(ctx.now) - CHANGE_WINDOW_NANOS;
    let mut out: Vec<(i64, ChangeView)> = Vec::new();
    for n in [ctx.src, ctx.dst] {
        for e in n.events.iter().filter(|e| is_change(e) && about_node(n, e)) {
            let t = e.event.time_unix_nanos;
            if t < from || t > until {
                continue;
            }
            let (kind, detail) = describe(&e.event);
            out.push((
                t,
                ChangeView {
                    node: n.name.clone(),
                    time: t,
                    kind: kind.to_string(),
                    detail,
                },
            ));
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    out.into_iter().take(MAX_CHANGES).map(|(_, c)| c).collect()
}

pub fn explain(
    m: &Matrix,
    nodes: &BTreeMap<String, Node>,
    owners: &[Declared],
    src: &str,
    dst: &str,
    port: u16,
    now: SystemTime,
) -> Result<Explanation, WhyError> {
    if src == dst {
        return Err(WhyError::SameNode);
    }
    let s = nodes
        .get(src)
        .ok_or_else(|| WhyError::NoSuchNode(src.to_string()))?;
    let d = nodes
        .get(dst)
        .ok_or_else(|| WhyError::NoSuchNode(dst.to_string()))?;
    // A port probed only as a declared UDP service is explained for UDP.
    let kind = if port == 0 {
        ProbeKind::Icmp
    } else if m.cell(src, dst, port, ProbeKind::Tcp).is_none()
        && m.cell(src, dst, port, ProbeKind::Udp).is_some()
    {
        ProbeKind::Udp
    } else {
        ProbeKind::Tcp
    };
    // A declared HTTP(S) service on the port is probed both ways: the HTTP
    // probe is the stronger check (the application answered, and how), so
    // it is the one explained.
    let probe = (port != 0)
        .then(|| {
            summary(m, src, dst, port, ProbeKind::Https)
                .or_else(|| summary(m, src, dst, port, ProbeKind::Http))
        })
        .flatten()
        .or_else(|| summary(m, src, dst, port, kind));
    let others_to_dst = nodes
        .keys()
        .filter(|n| n.as_str() != src && n.as_str() != dst)
        .filter_map(|n| summary(m, n, dst, port, kind))
        .collect();
    let address = probe
        .as_ref()
        .and_then(|c| c.address.parse().ok())
        .or_else(|| crate::state::probe_addresses(d).into_iter().next());
    let owner = owners.iter().find(|o| o.port == port && port != 0);
    let status_failing = probe
        .as_ref()
        .is_some_and(|p| p.failure.as_deref() == Some("http_status"));
    let upstreams = match owner {
        Some(o) if status_failing => upstream_cells(m, nodes, o, dst, now),
        _ => Vec::new(),
    };
    let ctx = Context {
        src: s,
        dst: d,
        port,
        owner,
        upstreams,
        address,
        clients: client_addresses(s, d, address),
        reverse: summary(m, dst, src, port, kind),
        icmp: summary(m, src, dst, 0, ProbeKind::Icmp),
        probe,
        others_to_dst,
        now: unix_nanos(now),
        bad_since: bad_since(s, dst, port),
    };
    let verdict = match (
        ctx.src.connected(),
        ctx.probe.as_ref().map(|c| c.state.as_str()),
    ) {
        (false, _) => Verdict::Unknown,
        (true, Some("ok")) => Verdict::Reachable,
        (true, Some("degraded")) => Verdict::Degraded,
        (true, Some("failing")) => Verdict::Unreachable,
        _ => Verdict::Unknown,
    };
    let mut checked = Vec::new();
    let mut causes = causes::run(&ctx, verdict, &mut checked);
    causes.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| a.code.cmp(&b.code)));
    // A listener bound away from the addresses clients use refuses them
    // even while a probe to where it is bound succeeds: the verdict is the
    // clients'.
    let served = causes::served_clients(&ctx);
    let unserved: Vec<IpAddr> = match &served {
        Some(served) => ctx
            .clients
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| !served.contains(a))
            .collect(),
        None => Vec::new(),
    };
    let verdict = if verdict == Verdict::Reachable
        && !unserved.is_empty()
        && causes.iter().any(|c| {
            c.code == CauseCode::BoundOtherAddress.as_str()
                || c.code == CauseCode::LoopbackOnly.as_str()
        }) {
        Verdict::Unreachable
    } else {
        verdict
    };
    let verdict_address = unserved
        .first()
        .copied()
        .or(ctx.address)
        .map(|a| a.to_string());
    let addresses = ctx
        .clients
        .iter()
        .map(|(a, via)| ClientAddress {
            address: a.to_string(),
            via: via.clone(),
            listening: served.as_ref().map(|s| s.contains(a)),
        })
        .collect();
    // No probes of this port (a service nobody probes yet), but facts that
    // block it for certain: the answer is still clear.
    let verdict = if verdict == Verdict::Unknown
        && ctx.src.connected()
        && ctx.probe.is_none()
        && causes
            .iter()
            .any(|c| CauseCode::parse(&c.code).is_some_and(CauseCode::blocks))
    {
        Verdict::Unreachable
    } else {
        verdict
    };
    Ok(Explanation {
        src: src.to_string(),
        dst: dst.to_string(),
        port,
        verdict,
        causes,
        checked,
        changes: changes(&ctx),
        probe: ctx.probe.clone(),
        reverse: ctx.reverse.clone(),
        icmp: ctx.icmp.clone(),
        address: verdict_address,
        addresses,
        at: 0,
    })
}

/// How clients reach `dst` from `src`: its primary address first (else
/// the address probed), then the addresses `dst`'s configured names
/// resolve to on `src` that are `dst`'s (a name resolving elsewhere is
/// STALE_DNS's business).
fn client_addresses(src: &Node, dst: &Node, probed: Option<IpAddr>) -> Vec<(IpAddr, String)> {
    let own = crate::state::probe_addresses(dst);
    let mut out: Vec<(IpAddr, String)> = Vec::new();
    match (own.first(), probed) {
        (Some(primary), _) => out.push((*primary, format!("{}'s primary address", dst.name))),
        (None, Some(a)) => out.push((a, "the address probed".to_string())),
        (None, None) => {}
    }
    for r in src.names.iter().filter(|r| r.node == dst.name) {
        for a in &r.addresses {
            if !own.contains(a) {
                continue;
            }
            let via = format!("{} resolves to it on {}", r.name, src.name);
            match out.iter_mut().find(|(x, _)| x == a) {
                Some((_, v)) => {
                    v.push_str(", ");
                    v.push_str(&via);
                }
                None => out.push((*a, via)),
            }
        }
    }
    out
}
