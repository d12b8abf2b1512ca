//! Is anything listening on the port, on an address the source can reach,
//! is it what should, and can it keep up: NOT_LISTENING, PORT_HELD_BY_OTHER,
//! LOOPBACK_ONLY, BOUND_OTHER_ADDRESS, LISTEN_QUEUE_OVERFLOW. A listener that went with an OOM kill is
//! PROCESS_OOM_KILLED, built in `kernel`.

use super::blind;
use super::{cause, endpoint, event, events, fact, listener_text, listeners, probe};
use crate::model::health::FactSource;
use crate::model::{BindScope, Listener};
use crate::why::code::CauseCode;
use crate::why::{Cause, Context};
use reachmap_proto::v1 as pb;
use std::net::IpAddr;

pub(super) fn listening(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let port = ctx.port;
    let proto = ctx.protocol().name().to_ascii_uppercase();
    if port == 0 || port == reachmap_proto::DEFAULT_PROBE_PORT {
        // The probe port is the agent's own listener.
        return;
    }
    let Some(f) = ctx.dst.facts.as_ref() else {
        checked.push(format!("{}'s sockets: not reported yet", ctx.dst.name));
        return;
    };
    if blind::skipped(
        ctx.dst,
        FactSource::Sockets,
        &format!("{proto} listeners on port {port}"),
        checked,
    ) {
        return;
    }
    let found = listeners(f, port, ctx.protocol());
    checked.push(format!(
        "{proto} listeners on port {port} on {}: {}",
        ctx.dst.name,
        if found.is_empty() {
            "none".to_string()
        } else {
            found
                .iter()
                .map(|l| listener_text(l))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    if found.is_empty() {
        let oom = events(ctx.dst, |k| {
            matches!(k, pb::event::Kind::OomKill(o)
                if o.listeners.iter().any(|l| l.port == u32::from(port)))
        })
        .next();
        let gone = events(ctx.dst, |k| {
            matches!(k, pb::event::Kind::ListenerChanged(l)
                if !l.appeared && l.listener.as_ref().is_some_and(|x| x.port == u32::from(port)))
        })
        .next();
        if let Some(kill) = oom
            && let Some(pb::event::Kind::OomKill(o)) = &kill.kind
        {
            out.push(super::kernel::oom_killed(ctx, kill, o, gone));
        } else if !blind::skipped(
            ctx.dst,
            FactSource::KernelLog,
            &format!("an OOM kill of what listened on port {port}"),
            checked,
        ) {
            checked.push(format!(
                "an OOM kill of what listened on port {port} on {}: none in its kernel log",
                ctx.dst.name
            ));
        }
        let mut c = cause(
            CauseCode::NotListening,
            ctx.dst,
            if oom.is_some() { 80 } else { 90 },
            format!("nothing listens on {proto} port {port} on {}", ctx.dst.name),
        );
        c.evidence.push(fact(
            ctx.dst,
            format!(
                "no {proto} socket {} port {port}",
                if ctx.protocol() == crate::model::Protocol::Udp {
                    "bound to"
                } else {
                    "in LISTEN on"
                }
            ),
        ));
        if let Some(g) = gone {
            c.evidence.push(event(ctx.dst, g));
        }
        if let Some(p) = probe(ctx) {
            c.evidence.push(p);
        }
        c.fix = Some(format!(
            "start the service that should listen on port {port} on {}",
            ctx.dst.name
        ));
        out.push(c);
        return;
    }
    bound_elsewhere(ctx, &found, checked, out);
}

/// A declared service's port held by a process that is not the one the
/// declaration names: the service could not bind it.
pub(super) fn held_by_other(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let (Some(owner), Some(f)) = (ctx.owner, ctx.dst.facts.as_ref()) else {
        return;
    };
    if !owner.names_owner() {
        return;
    }
    let port = ctx.port;
    if blind::skipped(
        ctx.dst,
        FactSource::Sockets,
        &format!("who holds port {port}"),
        checked,
    ) {
        return;
    }
    let found = listeners(f, port, ctx.protocol());
    if found.is_empty() {
        return;
    }
    let holders: Vec<&crate::model::Process> =
        found.iter().flat_map(|l| l.processes.iter()).collect();
    if holders.iter().any(|p| owner.is(p)) {
        checked.push(format!(
            "port {port} on {}: held by {owner}, as service {:?} declares",
            ctx.dst.name, owner.service
        ));
        return;
    }
    let Some(first) = holders.first() else {
        checked.push(format!(
            "port {port} on {}: which process holds it is not known",
            ctx.dst.name
        ));
        return;
    };
    let listed = found
        .iter()
        .map(|l| listener_text(l))
        .collect::<Vec<_>>()
        .join(", ");
    let failing = ctx.probe.as_ref().is_some_and(|p| p.state != "ok");
    let mut c = cause(
        CauseCode::PortHeldByOther,
        ctx.dst,
        if failing { 85 } else { 50 },
        format!(
            "port {port} on {} is held by {listed}, not by {owner} (service {:?}): it could not bind its port, and clients reach the other process",
            ctx.dst.name, owner.service
        ),
    );
    c.evidence.push(fact(
        ctx.dst,
        format!(
            "service {:?} declares port {port} for {owner}",
            owner.service
        ),
    ));
    for l in &found {
        c.evidence
            .push(fact(ctx.dst, format!("listening: {}", listener_text(l))));
    }
    if let Some(p) = probe(ctx) {
        c.evidence.push(p);
    }
    let unit = first
        .unit
        .as_deref()
        .map(|u| format!(", {u}"))
        .unwrap_or_default();
    c.fix = Some(format!(
        "stop {} (pid {}{unit}) on {} or move it off port {port}, then start {owner}",
        first.name, first.pid, ctx.dst.name
    ));
    out.push(c);
}

/// Whether the listener takes connections to `a`.
fn serves(l: &Listener, a: IpAddr) -> bool {
    match l.scope {
        BindScope::Any if l.address.is_ipv4() => a.is_ipv4(),
        // `[::]` takes IPv4 too unless it is IPV6_V6ONLY.
        BindScope::Any => a.is_ipv6() || l.v6only != Some(true),
        BindScope::Loopback => a.is_loopback() && l.address == a,
        BindScope::Address => l.address == a,
    }
}

/// The client addresses a listener on the port takes connections to;
/// `None` when that is not known (no service port, no sockets read).
pub(in crate::why) fn served_clients(ctx: &Context) -> Option<Vec<IpAddr>> {
    if ctx.port == 0 || ctx.port == reachmap_proto::DEFAULT_PROBE_PORT {
        return None;
    }
    let f = ctx.dst.facts.as_ref()?;
    if f.blind(FactSource::Sockets).is_some() {
        return None;
    }
    let found = listeners(f, ctx.port, ctx.protocol());
    Some(
        ctx.clients
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| found.iter().any(|l| serves(l, *a)))
            .collect(),
    )
}

/// Also asked when the probe works: the probe goes where the listener is
/// bound, clients go to the node's own address or name.
pub(super) fn client_addresses(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let port = ctx.port;
    if port == 0 || port == reachmap_proto::DEFAULT_PROBE_PORT {
        return;
    }
    let Some(f) = ctx.dst.facts.as_ref() else {
        return;
    };
    if f.blind(FactSource::Sockets).is_some() {
        return;
    }
    let found = listeners(f, port, ctx.protocol());
    if !found.is_empty() {
        bound_elsewhere(ctx, &found, checked, out);
    }
}

/// Something listens: on the addresses clients use?
fn bound_elsewhere(
    ctx: &Context,
    found: &[&Listener],
    checked: &mut Vec<String>,
    out: &mut Vec<Cause>,
) {
    let port = ctx.port;
    let clients = &ctx.clients;
    let unserved: Vec<&(IpAddr, String)> = clients
        .iter()
        .filter(|(a, _)| !found.iter().any(|l| serves(l, *a)))
        .collect();
    checked.push(format!(
        "clients reach {} at {}: {}",
        ctx.dst.name,
        clients
            .iter()
            .map(|(a, via)| format!("{a} ({via})"))
            .collect::<Vec<_>>()
            .join(", "),
        if unserved.is_empty() {
            "something listens on each".to_string()
        } else {
            format!(
                "nothing listens on port {port} at {}",
                unserved
                    .iter()
                    .map(|(a, _)| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    let Some((addr, via)) = unserved.first().map(|(a, v)| (*a, v.as_str())) else {
        return;
    };
    let all_loopback = found.iter().all(|l| l.scope == BindScope::Loopback);
    // The listener that works somewhere else: bound to one address.
    let l = found
        .iter()
        .find(|l| l.scope == BindScope::Address)
        .copied()
        .unwrap_or(found[0]);
    let mut c = if all_loopback {
        cause(
            CauseCode::LoopbackOnly,
            ctx.dst,
            92,
            format!(
                "{} listens on {} only: reachable from {} itself, not from {}",
                listener_text(l).split(" by ").next().unwrap_or_default(),
                l.address,
                ctx.dst.name,
                ctx.src.name
            ),
        )
    } else {
        cause(
            CauseCode::BoundOtherAddress,
            ctx.dst,
            88,
            format!(
                "the service on {} is bound to {}, but {} connects to {addr} ({via}): connections there are refused",
                ctx.dst.name, l.address, ctx.src.name
            ),
        )
    };
    c.evidence
        .push(fact(ctx.dst, format!("listening: {}", listener_text(l))));
    if let Some(p) = probe(ctx) {
        c.evidence.push(p);
    }
    let works = (!all_loopback).then(|| endpoint(l.address, port));
    if let (Some(works), Some(p)) = (&works, &ctx.probe)
        && p.state == "ok"
        && p.address == l.address.to_string()
    {
        checked.push(format!(
            "the probe to {works}, where the service listens, succeeds: the verdict is for {addr}, the address clients use"
        ));
    }
    c.fix = Some(match works {
        Some(works) => format!(
            "bind the service to 0.0.0.0:{port} (every address) instead of {works}, or point clients at {works}"
        ),
        None => format!(
            "bind the service to 0.0.0.0:{port} (or {addr}:{port}) instead of {}",
            endpoint(l.address, port)
        ),
    });
    out.push(c);
}

pub(super) fn listen_queue(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    if ctx.port != 0
        && !blind::skipped(
            ctx.dst,
            FactSource::Sockets,
            &format!("the listen queue of port {}", ctx.port),
            checked,
        )
    {
        let flood = events(
            ctx.dst,
            |k| matches!(k, pb::event::Kind::SynFlood(f) if f.port == u32::from(ctx.port)),
        )
        .next();
        let full_queue = ctx.dst.facts.as_ref().and_then(|f| {
            listeners(f, ctx.port, ctx.protocol())
                .into_iter()
                .find(|l| l.accept_queue_limit > 0 && l.accept_queue >= l.accept_queue_limit)
        });
        checked.push(format!(
            "listen queue on {} port {}: {}",
            ctx.dst.name,
            ctx.port,
            match full_queue {
                Some(l) => format!("{} of {}", l.accept_queue, l.accept_queue_limit),
                None => "not full".into(),
            }
        ));
        if flood.is_some() || full_queue.is_some() {
            let mut c = cause(
                CauseCode::ListenQueueOverflow,
                ctx.dst,
                80,
                format!(
                    "the listener on port {} on {} cannot accept connections fast enough: its queue is full",
                    ctx.port, ctx.dst.name
                ),
            );
            if let Some(l) = full_queue {
                c.evidence.push(fact(
                    ctx.dst,
                    format!(
                        "accept queue {} of {} on {}",
                        l.accept_queue,
                        l.accept_queue_limit,
                        listener_text(l)
                    ),
                ));
            }
            if let Some(e) = flood {
                c.evidence.push(event(ctx.dst, e));
            }
            c.fix = Some("make the service accept faster (more workers) or raise its listen backlog and net.core.somaxconn".into());
            out.push(c);
        }
    }
}
