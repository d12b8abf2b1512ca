//! One function per cause, grouped by family: `listening` (is anything
//! listening, where, and can it keep up), `firewall` (both ends' rulesets),
//! `addresses` (addresses, routes, interfaces and names), `kernel` (the
//! kernel and the host's resources), `path` (agents, probes and the network
//! between the nodes). Each check looks at the facts and events of the two
//! ends and returns a cause only when they support it, with the evidence; it
//! also says what it checked, so an answer without causes still shows the
//! work. This module has the helpers they share and runs them in order.

mod addresses;
mod blind;
pub(crate) mod firewall;
mod flapping;
mod kernel;
mod listening;
mod path;
mod service;

pub(super) use listening::served_clients;

use super::code::CauseCode;
use super::{Cause, CellSummary, Context, Evidence, Verdict};
use crate::model::{Listener, NodeFacts, Protocol};
use crate::state::Node;
use crate::view::describe;
use reachmap_proto::v1 as pb;
use std::net::IpAddr;

/// A fact of `node` as the collector holds it. The agent sends every change
/// as it happens, so the facts are the node's as of the last message from
/// it: that is when they were last read.
fn fact(node: &Node, text: String) -> Evidence {
    fact_at(node, crate::state::unix_nanos(node.last_seen), text)
}

/// A fact that carries its own reading time (a resource sample, a name
/// lookup); the node's last message when it has none.
fn fact_at(node: &Node, read: i64, text: String) -> Evidence {
    Evidence {
        kind: "fact".into(),
        node: node.name.clone(),
        time: if read > 0 {
            read
        } else {
            crate::state::unix_nanos(node.last_seen)
        },
        text,
    }
}

/// A resource fact: read when the node sampled its resources.
fn sampled(node: &Node, r: &crate::model::Resources, text: String) -> Evidence {
    fact_at(node, r.sampled_unix_nanos, text)
}

/// When a cell's figures are from: its last failure when it had one in the
/// window, else its last report.
fn cell_time(c: &CellSummary) -> i64 {
    if c.last_failure > 0 {
        c.last_failure
    } else {
        c.updated
    }
}

fn event(node: &Node, e: &pb::Event) -> Evidence {
    let (kind, detail) = describe(e);
    Evidence {
        kind: "event".into(),
        node: node.name.clone(),
        time: e.time_unix_nanos,
        text: format!("{kind}: {detail}"),
    }
}

fn probe(ctx: &Context) -> Option<Evidence> {
    let c = ctx.probe.as_ref()?;
    Some(Evidence {
        kind: "probe".into(),
        node: ctx.src.name.clone(),
        time: cell_time(c),
        text: format!(
            "{} -> {} {}/{} at {}: {}{}, loss {:.0}%",
            c.src,
            c.dst,
            c.kind,
            c.port,
            c.address,
            c.state,
            c.failure
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            c.loss * 100.0
        ),
    })
}

fn cause(code: CauseCode, node: &Node, weight: u32, detail: String) -> Cause {
    Cause {
        code: code.as_str().to_string(),
        node: node.name.clone(),
        detail,
        evidence: Vec::new(),
        fix: None,
        weight,
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    if ip.is_ipv6() {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn listener_text(l: &Listener) -> String {
    let who = l
        .processes
        .first()
        .map(|p| {
            let unit = p
                .unit
                .as_deref()
                .map(|u| format!(", {u}"))
                .unwrap_or_default();
            format!(" by {} (pid {}{unit})", p.name, p.pid)
        })
        .unwrap_or_default();
    format!("{} {}{who}", l.protocol.name(), endpoint(l.address, l.port))
}

/// Listeners of `protocol` on the port, on the destination.
fn listeners(f: &NodeFacts, port: u16, protocol: Protocol) -> Vec<&Listener> {
    f.listeners
        .values()
        .filter(|l| l.protocol == protocol && l.port == port)
        .collect()
}

/// Events of `node` of one kind, newest first.
fn events<'a>(
    node: &'a Node,
    pick: impl Fn(&pb::event::Kind) -> bool + 'a,
) -> impl Iterator<Item = &'a pb::Event> + 'a {
    node.events
        .iter()
        .rev()
        .map(|e| &e.event)
        .filter(move |e| e.kind.as_ref().is_some_and(&pick))
}

pub fn run(ctx: &Context, verdict: Verdict, checked: &mut Vec<String>) -> Vec<Cause> {
    let mut out = Vec::new();
    path::agents(ctx, checked, &mut out);
    blind::report(ctx, checked, &mut out);
    if verdict == Verdict::Reachable {
        checked.push(format!(
            "{} reaches {} on port {}: nothing to explain",
            ctx.src.name, ctx.dst.name, ctx.port
        ));
        // Worth saying even when the port works: ping will say it does not,
        // clients that use a name reach what the name says, and clients that
        // use the node's own address may find nothing listening there.
        listening::client_addresses(ctx, checked, &mut out);
        listening::held_by_other(ctx, checked, &mut out);
        flapping::flapping(ctx, checked, &mut out);
        path::icmp_only(ctx, checked, &mut out);
        addresses::names(ctx, checked, &mut out);
        kernel::clock(ctx, checked, &mut out);
        return out;
    }
    listening::listening(ctx, checked, &mut out);
    listening::held_by_other(ctx, checked, &mut out);
    service::http_status(ctx, checked, &mut out);
    service::tls_error(ctx, &mut out);
    firewall::firewalls(ctx, checked, &mut out);
    addresses::interfaces_and_routes(ctx, checked, &mut out);
    kernel::conntrack(ctx, checked, &mut out);
    listening::listen_queue(ctx, checked, &mut out);
    // Load and memory explain slow or timed-out probes, not refusals.
    let slow_or_lost = ctx
        .probe
        .as_ref()
        .is_some_and(|p| p.state == "degraded" || p.failure.as_deref() == Some("timeout"));
    if slow_or_lost {
        kernel::resources(ctx, checked, &mut out);
    } else {
        checked.push("load, CPU steal and memory: not relevant without slow or lost probes".into());
    }
    path::icmp_only(ctx, checked, &mut out);
    addresses::names(ctx, checked, &mut out);
    path::loss(ctx, checked, &mut out);
    flapping::flapping(ctx, checked, &mut out);
    kernel::clock(ctx, checked, &mut out);
    kernel::reboot(ctx, checked, &mut out);
    path::network_path(ctx, checked, &mut out);
    out
}

/// Longest-prefix match over the main table.
fn route_to(f: &NodeFacts, dst: IpAddr) -> Option<&crate::model::Route> {
    f.routes
        .iter()
        .filter(|r| r.destination.is_ipv4() == dst.is_ipv4())
        .filter(|r| prefix_contains(r.destination, r.prefix_len, dst))
        .max_by_key(|r| (r.prefix_len, std::cmp::Reverse(r.metric)))
}

pub fn prefix_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}
