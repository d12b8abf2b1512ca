//! One function per cause. Each looks at the facts and events of the two
//! ends and returns a cause only when they support it, with the evidence; it
//! also says what it checked, so an answer without causes still shows the
//! work.

use super::{Cause, Context, Evidence, Verdict};
use crate::model::{BindScope, Listener, NodeFacts, Protocol};
use crate::state::Node;
use crate::view::{describe, rfc3339};
use crate::packet::firewall::{
    Compiled, Decision, Final, NatRewrite, Packet, PathKind, RuleRef, evaluate,
};
use reachmap_proto::v1 as pb;
use std::net::IpAddr;

fn fact(node: &Node, text: String) -> Evidence {
    Evidence {
        kind: "fact".into(),
        node: node.name.clone(),
        time: crate::state::unix_nanos(node.last_seen),
        text,
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
        time: c.last_failure,
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

fn cause(code: &str, node: &Node, weight: u32, detail: String) -> Cause {
    Cause {
        code: code.to_string(),
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

/// TCP listeners on the port, on the destination.
fn listeners(f: &NodeFacts, port: u16) -> Vec<&Listener> {
    f.listeners
        .values()
        .filter(|l| l.protocol == Protocol::Tcp && l.port == port)
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
    agents(ctx, checked, &mut out);
    if verdict == Verdict::Reachable {
        checked.push(format!(
            "{} reaches {} on port {}: nothing to explain",
            ctx.src.name, ctx.dst.name, ctx.port
        ));
        // Worth saying even when the port works: ping will say it does not,
        // and clients that use a name reach what the name says.
        icmp_only(ctx, checked, &mut out);
        names(ctx, checked, &mut out);
        clock(ctx, checked, &mut out);
        return out;
    }
    listening(ctx, checked, &mut out);
    firewalls(ctx, checked, &mut out);
    interfaces_and_routes(ctx, checked, &mut out);
    kernel(ctx, checked, &mut out);
    // Load and memory explain slow or timed-out probes, not refusals.
    let slow_or_lost = ctx
        .probe
        .as_ref()
        .is_some_and(|p| p.state == "degraded" || p.failure.as_deref() == Some("timeout"));
    if slow_or_lost {
        resources(ctx, checked, &mut out);
    } else {
        checked.push("load, CPU steal and memory: not relevant without slow or lost probes".into());
    }
    icmp_only(ctx, checked, &mut out);
    names(ctx, checked, &mut out);
    loss(ctx, checked, &mut out);
    clock(ctx, checked, &mut out);
    reboot(ctx, checked, &mut out);
    network_path(ctx, checked, &mut out);
    out
}

fn agents(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for (n, role) in [(ctx.src, "source"), (ctx.dst, "destination")] {
        checked.push(format!("{}'s agent connected: {}", n.name, n.connected()));
        if n.connected() {
            continue;
        }
        // The destination's host may still answer: its probe port is
        // closed with its agent, but ICMP and other ports tell.
        let host_answers = role == "destination"
            && ctx
                .icmp
                .as_ref()
                .is_some_and(|c| c.state == "ok" || c.state == "degraded");
        let detail = if role == "source" {
            format!(
                "{}'s agent is down: nothing is probed from it, so the path is unknown",
                n.name
            )
        } else if host_answers {
            format!(
                "{}'s agent is down while the host still answers ICMP",
                n.name
            )
        } else {
            format!(
                "{}'s agent is down and the host does not answer: the host may be down",
                n.name
            )
        };
        let mut c = cause(
            "AGENT_DOWN",
            n,
            if role == "source" { 100 } else { 70 },
            detail,
        );
        c.evidence.push(fact(
            n,
            format!(
                "last seen {}",
                rfc3339(crate::state::unix_nanos(n.last_seen)).unwrap_or_default()
            ),
        ));
        if let Some(e) = events(
            n,
            |k| matches!(k, pb::event::Kind::StreamChanged(s) if !s.connected),
        )
        .next()
        {
            c.evidence.push(event(n, e));
        }
        c.fix = Some(format!(
            "check the host {} and `systemctl status reachmap-agent` on it",
            n.name
        ));
        out.push(c);
    }
}

fn listening(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let port = ctx.port;
    if port == 0 || port == reachmap_proto::DEFAULT_PROBE_PORT {
        // The probe port is the agent's own listener.
        return;
    }
    let Some(f) = ctx.dst.facts.as_ref() else {
        checked.push(format!("{}'s sockets: not reported yet", ctx.dst.name));
        return;
    };
    let found = listeners(f, port);
    checked.push(format!(
        "TCP listeners on port {port} on {}: {}",
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
            let mut c = cause(
                "PROCESS_OOM_KILLED",
                ctx.dst,
                95,
                format!(
                    "the OOM killer killed {} (pid {}) which listened on port {port}; nothing listens there now",
                    o.process, o.pid
                ),
            );
            c.evidence.push(event(ctx.dst, kill));
            if let Some(g) = gone {
                c.evidence.push(event(ctx.dst, g));
            }
            c.fix = Some(if o.unit.is_empty() {
                format!(
                    "restart {} and give it more memory (its cgroup {} hit its limit)",
                    o.process, o.cgroup
                )
            } else {
                format!(
                    "`systemctl restart {}` and raise its MemoryMax, or fix its memory use",
                    o.unit
                )
            });
            out.push(c);
        }
        let mut c = cause(
            "NOT_LISTENING",
            ctx.dst,
            if oom.is_some() { 80 } else { 90 },
            format!("nothing listens on TCP port {port} on {}", ctx.dst.name),
        );
        c.evidence.push(fact(
            ctx.dst,
            format!("no TCP socket in LISTEN on port {port}"),
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
    // Something listens: on an address the source can reach?
    let reachable = |l: &&Listener| match l.scope {
        BindScope::Any => true,
        BindScope::Loopback => false,
        BindScope::Address => ctx.address.is_none_or(|a| a == l.address),
    };
    if found.iter().any(reachable) {
        return;
    }
    let all_loopback = found.iter().all(|l| l.scope == BindScope::Loopback);
    let l = found[0];
    let addr = ctx
        .address
        .map(|a| a.to_string())
        .unwrap_or_else(|| "its address".into());
    let mut c = if all_loopback {
        cause(
            "LOOPBACK_ONLY",
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
            "BOUND_OTHER_ADDRESS",
            ctx.dst,
            88,
            format!(
                "the service on {} is bound to {}, but {} connects to {addr}",
                ctx.dst.name, l.address, ctx.src.name
            ),
        )
    };
    c.evidence
        .push(fact(ctx.dst, format!("listening: {}", listener_text(l))));
    if let Some(p) = probe(ctx) {
        c.evidence.push(p);
    }
    c.fix = Some(format!(
        "bind the service to 0.0.0.0:{port} (or {addr}:{port}) instead of {}",
        endpoint(l.address, port)
    ));
    out.push(c);
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

fn interfaces_and_routes(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let Some(addr) = ctx.address else {
        checked.push(format!("{} has no address to probe", ctx.dst.name));
        return;
    };
    // The source: a route to the destination, over an interface that is up.
    if let Some(f) = ctx.src.facts.as_ref() {
        match route_to(f, addr) {
            None => {
                checked.push(format!("{}'s route to {addr}: none", ctx.src.name));
                let mut c = cause(
                    "NO_ROUTE",
                    ctx.src,
                    if ctx.failure() == Some("no_route") {
                        90
                    } else {
                        75
                    },
                    format!("{} has no route to {addr} ({})", ctx.src.name, ctx.dst.name),
                );
                c.evidence.push(fact(
                    ctx.src,
                    format!(
                        "main routing table: {} routes, none covers {addr}",
                        f.routes.len()
                    ),
                ));
                if let Some(e) = events(
                    ctx.src,
                    |k| matches!(k, pb::event::Kind::RouteChanged(r) if r.removed.is_some()),
                )
                .next()
                {
                    c.evidence.push(event(ctx.src, e));
                }
                if let Some(p) = probe(ctx) {
                    c.evidence.push(p);
                }
                c.fix = Some(format!(
                    "add a route to {addr} on {} (or restore its default route)",
                    ctx.src.name
                ));
                out.push(c);
            }
            Some(r) => {
                checked.push(format!(
                    "{}'s route to {addr}: {}/{} dev {}",
                    ctx.src.name, r.destination, r.prefix_len, r.interface
                ));
                if let Some(i) = f.interfaces.values().find(|i| i.name == r.interface)
                    && (!i.admin_up || i.oper_state == "down" || i.oper_state == "lower_layer_down")
                {
                    out.push(interface_down(ctx, ctx.src, i));
                }
            }
        }
    }
    // The destination: the interface holding the address is up.
    if let Some(f) = ctx.dst.facts.as_ref() {
        let holder = f
            .interfaces
            .values()
            .find(|i| i.addresses.iter().any(|a| a.ip == addr));
        match holder {
            None => {
                checked.push(format!("{} holds {addr}: no", ctx.dst.name));
                let changed = events(ctx.dst, |k| {
                    matches!(k, pb::event::Kind::AddressChanged(a) if a.removed.as_ref().is_some_and(|r| r.ip == addr.to_string()))
                })
                .next();
                let mut c = cause(
                    "PEER_ADDRESS_CHANGED",
                    ctx.dst,
                    85,
                    format!(
                        "{} no longer has the address {addr} that {} uses for it",
                        ctx.dst.name, ctx.src.name
                    ),
                );
                if let Some(e) = changed {
                    c.evidence.push(event(ctx.dst, e));
                }
                let now: Vec<String> = f
                    .addresses()
                    .filter(|a| a.scope == "universe")
                    .map(|a| a.ip.to_string())
                    .collect();
                c.evidence
                    .push(fact(ctx.dst, format!("addresses now: {}", now.join(", "))));
                c.fix = Some(format!(
                    "point {} (its configuration, DNS record or allow-list) at {}'s new address",
                    ctx.src.name, ctx.dst.name
                ));
                out.push(c);
            }
            Some(i) => {
                checked.push(format!(
                    "{} holds {addr} on {} ({}, admin {})",
                    ctx.dst.name,
                    i.name,
                    i.oper_state,
                    if i.admin_up { "up" } else { "down" }
                ));
                if !i.admin_up || i.oper_state == "down" || i.oper_state == "lower_layer_down" {
                    out.push(interface_down(ctx, ctx.dst, i));
                }
            }
        }
    }
}

fn interface_down(ctx: &Context, node: &Node, i: &crate::model::Interface) -> Cause {
    let mut c = cause(
        "INTERFACE_DOWN",
        node,
        88,
        format!(
            "{} on {} is down (admin {}, state {})",
            i.name,
            node.name,
            if i.admin_up { "up" } else { "down" },
            i.oper_state
        ),
    );
    c.evidence
        .push(fact(node, format!("{} state {}", i.name, i.oper_state)));
    if let Some(e) = events(
        node,
        |k| matches!(k, pb::event::Kind::LinkChanged(l) if l.interface == i.name),
    )
    .next()
    {
        c.evidence.push(event(node, e));
    }
    if let Some(p) = probe(ctx) {
        c.evidence.push(p);
    }
    c.fix = Some(format!(
        "`ip link set {} up` on {} (and check its cable or virtual link)",
        i.name, node.name
    ));
    c
}

fn kernel(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for n in [ctx.dst, ctx.src] {
        let full = events(n, |k| matches!(k, pb::event::Kind::ConntrackFull(_))).next();
        let at_max = n
            .facts
            .as_ref()
            .and_then(|f| f.resources.as_ref())
            .and_then(|r| Some((r.conntrack_count?, r.conntrack_max?)))
            .filter(|(c, m)| *m > 0 && *c * 100 >= *m * 95);
        checked.push(format!(
            "conntrack on {}: {}",
            n.name,
            match at_max {
                Some((c, m)) => format!("{c} of {m}"),
                None => "not full".into(),
            }
        ));
        if full.is_some() || at_max.is_some() {
            let mut c = cause(
                "CONNTRACK_FULL",
                n,
                78,
                format!(
                    "{}'s connection tracking table is full: new connections are dropped",
                    n.name
                ),
            );
            if let Some(e) = full {
                c.evidence.push(event(n, e));
            }
            if let Some((cnt, max)) = at_max {
                c.evidence.push(fact(
                    n,
                    format!("nf_conntrack_count {cnt} of nf_conntrack_max {max}"),
                ));
            }
            c.fix = Some(format!(
                "raise net.netfilter.nf_conntrack_max on {} or find what opens so many connections",
                n.name
            ));
            out.push(c);
        }
    }
    if ctx.port != 0 {
        let flood = events(
            ctx.dst,
            |k| matches!(k, pb::event::Kind::SynFlood(f) if f.port == u32::from(ctx.port)),
        )
        .next();
        let full_queue = ctx.dst.facts.as_ref().and_then(|f| {
            listeners(f, ctx.port)
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
                "LISTEN_QUEUE_OVERFLOW",
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

fn resources(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for n in [ctx.dst, ctx.src] {
        let Some(r) = n.facts.as_ref().and_then(|f| f.resources.as_ref()) else {
            checked.push(format!("resources of {}: not reported", n.name));
            continue;
        };
        let cpus = f64::from(r.cpus.max(1));
        checked.push(format!(
            "resources of {}: load {:.1} on {} cpus, steal {}, memory pressure {}",
            n.name,
            r.load1,
            r.cpus,
            r.cpu_steal_pct
                .map(|s| format!("{s:.0}%"))
                .unwrap_or_else(|| "-".into()),
            r.pressure
                .as_ref()
                .map(|p| format!("{:.0}%", p.memory_some.avg10))
                .unwrap_or_else(|| "-".into())
        ));
        if r.load1 / cpus >= 2.0 || r.cpu_busy_pct.is_some_and(|b| b >= 95.0) {
            let mut c = cause(
                "HOST_OVERLOADED",
                n,
                45,
                format!(
                    "{} is overloaded: load {:.1} on {} cpus",
                    n.name, r.load1, r.cpus
                ),
            );
            c.evidence.push(fact(
                n,
                format!(
                    "load {:.2} {:.2} {:.2}, cpu busy {}",
                    r.load1,
                    r.load5,
                    r.load15,
                    r.cpu_busy_pct
                        .map(|b| format!("{b:.0}%"))
                        .unwrap_or_else(|| "-".into())
                ),
            ));
            c.fix = Some(format!(
                "find what keeps {} busy, or give it more CPU",
                n.name
            ));
            out.push(c);
        }
        if let Some(steal) = r.cpu_steal_pct.filter(|s| *s >= 10.0) {
            let mut c = cause(
                "CPU_STEAL",
                n,
                45,
                format!(
                    "{} loses {steal:.0}% of its CPU time to other guests of its hypervisor",
                    n.name
                ),
            );
            c.evidence.push(fact(n, format!("cpu steal {steal:.1}%")));
            c.fix = Some(format!(
                "move {} to another host or a bigger instance type",
                n.name
            ));
            out.push(c);
        }
        let psi = r
            .pressure
            .as_ref()
            .map(|p| p.memory_some.avg10)
            .unwrap_or(0.0);
        let swap_used = r.swap_total_bytes.saturating_sub(r.swap_free_bytes);
        let low_mem = r.mem_total_bytes > 0 && r.mem_available_bytes * 20 < r.mem_total_bytes;
        if psi >= 10.0 || low_mem || r.memory_trend == crate::model::MemoryTrend::Growing {
            let mut c = cause(
                "MEMORY_PRESSURE",
                n,
                45,
                format!(
                    "{} is short of memory{}",
                    n.name,
                    if r.memory_trend == crate::model::MemoryTrend::Growing {
                        format!(
                            " and used memory grows steadily ({:.1} MiB/min, a leak?)",
                            r.memory_growth_mib_per_min
                        )
                    } else {
                        String::new()
                    }
                ),
            );
            c.evidence.push(fact(n, format!(
                "memory available {} MiB of {} MiB, swap used {} MiB, memory pressure {psi:.1}%",
                r.mem_available_bytes >> 20, r.mem_total_bytes >> 20, swap_used >> 20
            )));
            c.fix = Some(format!(
                "find what uses the memory on {} (a leak grows steadily), or add memory",
                n.name
            ));
            out.push(c);
        }
    }
}

fn icmp_only(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let (Some(icmp), Some(tcp)) = (&ctx.icmp, &ctx.probe) else {
        return;
    };
    checked.push(format!(
        "ICMP echo {} -> {}: {}",
        ctx.src.name, ctx.dst.name, icmp.state
    ));
    if icmp.state == "failing" && tcp.kind != "icmp" && tcp.state != "failing" {
        let mut c = cause(
            "ICMP_ONLY_BLOCKED",
            ctx.dst,
            35,
            format!(
                "ICMP echo from {} to {} is blocked while TCP works: ping says down, the service is fine",
                ctx.src.name, ctx.dst.name
            ),
        );
        c.evidence.push(Evidence {
            kind: "probe".into(),
            node: ctx.src.name.clone(),
            time: icmp.last_failure,
            text: format!(
                "icmp {} ({}), tcp/{} {}",
                icmp.state,
                icmp.failure.as_deref().unwrap_or("-"),
                tcp.port,
                tcp.state
            ),
        });
        c.fix = Some("allow ICMP echo-request if ping should work; nothing else needs it".into());
        out.push(c);
    }
}

fn loss(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let Some(p) = &ctx.probe else {
        checked.push(format!(
            "probes {} -> {} port {}: none yet",
            ctx.src.name, ctx.dst.name, ctx.port
        ));
        return;
    };
    checked.push(format!(
        "probes {} -> {} port {}: {}, loss {:.0}%",
        ctx.src.name,
        ctx.dst.name,
        ctx.port,
        p.state,
        p.loss * 100.0
    ));
    if p.state == "degraded" && p.loss > 0.0 && p.loss < 1.0 {
        let mut c = cause(
            "INTERMITTENT_LOSS",
            ctx.dst,
            50,
            format!(
                "{:.0}% of the probes from {} to {} fail ({}), the others get through",
                p.loss * 100.0,
                ctx.src.name,
                ctx.dst.name,
                p.failure.as_deref().unwrap_or("failures")
            ),
        );
        if let Some(e) = probe(ctx) {
            c.evidence.push(e);
        }
        c.fix =
            Some("look for a lossy link, an overloaded device or a rate limit between them".into());
        out.push(c);
    }
}

fn clock(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let offset = |n: &Node| n.clock.map(|c| c.offset_nanos as f64 / 1e9);
    let (a, b) = (offset(ctx.src), offset(ctx.dst));
    checked.push(format!(
        "clock offsets: {} {}, {} {}",
        ctx.src.name,
        a.map(|o| format!("{o:+.3}s")).unwrap_or_else(|| "-".into()),
        ctx.dst.name,
        b.map(|o| format!("{o:+.3}s")).unwrap_or_else(|| "-".into())
    ));
    if let (Some(a), Some(b)) = (a, b)
        && (a - b).abs() >= 1.0
    {
        let worse = if a.abs() > b.abs() { ctx.src } else { ctx.dst };
        let mut c = cause(
            "CLOCK_SKEW",
            worse,
            20,
            format!(
                "the clocks of {} and {} differ by {:.1}s: TLS, tokens and logs break",
                ctx.src.name,
                ctx.dst.name,
                (a - b).abs()
            ),
        );
        c.evidence.push(fact(
            worse,
            format!(
                "clock offset to the collector {:+.3}s",
                if worse.name == ctx.src.name { a } else { b }
            ),
        ));
        c.fix = Some(format!(
            "check time synchronisation (chrony/systemd-timesyncd) on {}",
            worse.name
        ));
        out.push(c);
    }
}

fn reboot(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    for n in [ctx.dst, ctx.src] {
        let from = ctx.bad_since.unwrap_or(ctx.now) - super::CHANGE_WINDOW_NANOS;
        let e = events(n, |k| matches!(k, pb::event::Kind::NodeRebooted(_)))
            .find(|e| e.time_unix_nanos >= from);
        checked.push(format!("{} rebooted recently: {}", n.name, e.is_some()));
        if let Some(e) = e {
            let mut c = cause(
                "NODE_REBOOTED",
                n,
                40,
                format!("{} rebooted shortly before the failure", n.name),
            );
            c.evidence.push(event(n, e));
            c.fix = Some(format!(
                "check that everything {} needs starts at boot (enabled units, addresses, firewall)",
                n.name
            ));
            out.push(c);
        }
    }
}

/// The address a source sends from: its first probe-able address.
/// STALE_DNS: a name the config gives the destination resolves, on the
/// source, to none of the destination's addresses — typically its old one
/// after the cloud gave it a new one. Probes go to the addresses the
/// destination reports, so the path can be fine while every client that uses
/// the name fails.
fn names(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let (src, dst) = (&ctx.src.name, &ctx.dst.name);
    let lookups: Vec<_> = ctx.src.names.iter().filter(|r| r.node == *dst).collect();
    if lookups.is_empty() {
        return;
    }
    let Some(f) = &ctx.dst.facts else {
        checked.push(format!("names of {dst}: its addresses are not known"));
        return;
    };
    let now: Vec<IpAddr> = f.addresses().map(|a| a.ip).collect();
    let listed = |v: &[IpAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in lookups {
        if let Some(e) = &r.error {
            checked.push(format!("{src} cannot look up {}: {e}", r.name));
            continue;
        }
        if r.addresses.iter().any(|a| now.contains(a)) {
            checked.push(format!(
                "{src} resolves {} to {}, {dst}'s",
                r.name,
                listed(&r.addresses)
            ));
            continue;
        }
        // The address the destination had and dropped, when its events say.
        let dropped = events(ctx.dst, |k| {
            matches!(k, pb::event::Kind::AddressChanged(a)
                if a.removed.as_ref().is_some_and(|x| r.addresses.iter().any(|ip| ip.to_string() == x.ip)))
        })
        .next();
        let detail = if dropped.is_some() {
            format!(
                "{} resolves on {src} to {}, an address {dst} no longer has: clients that use the name cannot reach it",
                r.name,
                listed(&r.addresses)
            )
        } else {
            format!(
                "{} resolves on {src} to {}, none of them {dst}'s: clients that use the name reach something else",
                r.name,
                listed(&r.addresses)
            )
        };
        let mut c = cause("STALE_DNS", ctx.src, 80, detail);
        c.evidence.push(Evidence {
            kind: "fact".into(),
            node: src.clone(),
            time: r.resolved_unix_nanos,
            text: format!("{} resolves to {}", r.name, listed(&r.addresses)),
        });
        if let Some(e) = dropped {
            c.evidence.push(event(ctx.dst, e));
        }
        c.evidence
            .push(fact(ctx.dst, format!("addresses now: {}", listed(&now))));
        let new = ctx
            .address
            .filter(|a| now.contains(a))
            .or_else(|| crate::state::probe_addresses(ctx.dst).into_iter().next());
        c.fix = Some(match new {
            Some(a) => format!(
                "point {} at {a} in the resolver {src} uses (its DNS record, or /etc/hosts on {src})",
                r.name
            ),
            None => format!(
                "point {} at {dst}'s current address in the resolver {src} uses",
                r.name
            ),
        });
        out.push(c);
    }
}

fn source_address(n: &Node) -> Option<IpAddr> {
    crate::state::probe_addresses(n).into_iter().next()
}

fn interface_with(f: &NodeFacts, addr: IpAddr) -> Option<String> {
    f.interfaces
        .values()
        .find(|i| i.addresses.iter().any(|a| a.ip == addr))
        .map(|i| i.name.clone())
}

/// A port forward the packet went through, as a person reads it.
fn nat_text(n: &NatRewrite) -> String {
    let to = match (n.dst, n.port) {
        (Some(a), Some(p)) => endpoint(a, p),
        (Some(a), None) => a.to_string(),
        (None, Some(p)) => format!("this host's port {p}"),
        (None, None) => "this host".into(),
    };
    format!(
        "{} rewrites {} to {to}{} by rule `{}` ({})",
        n.kind,
        n.original_port
            .map(|p| endpoint(n.original_dst, p))
            .unwrap_or_else(|| n.original_dst.to_string()),
        if n.forwarded {
            ", forwarded to another host"
        } else {
            ""
        },
        n.rule.text,
        rule_place(&n.rule)
    )
}

fn rule_place(r: &RuleRef) -> String {
    let at = match r.handle {
        Some(h) => format!("handle {h}"),
        None => format!("rule {}", r.position),
    };
    format!("{} {} table, chain {}, {at}", r.family, r.table, r.chain)
}

/// The command that removes a rule, in the tool that manages it.
fn delete_command(r: &RuleRef) -> String {
    if r.backend == "nftables"
        && let Some(h) = r.handle
    {
        return format!(
            "nft delete rule {} {} {} handle {h}",
            r.family, r.table, r.chain
        );
    }
    let tool = if r.family == "ip6" {
        "ip6tables"
    } else {
        "iptables"
    };
    format!("{tool} -t {} -D {} {}", r.table, r.chain, r.position)
}

fn last_change(node: &Node) -> Option<&pb::Event> {
    events(node, |k| matches!(k, pb::event::Kind::FirewallChanged(_))).next()
}

fn blocked(d: &Decision) -> Option<&'static str> {
    match d.verdict {
        Final::Drop => Some("drops"),
        Final::Reject { .. } => Some("rejects"),
        _ => None,
    }
}

fn decided_by(d: &Decision) -> String {
    match (&d.deciding, &d.policy) {
        (Some(r), _) => format!("rule `{}` ({})", r.text, rule_place(r)),
        (None, Some(p)) => format!(
            "the {} policy of chain {} ({} {} table)",
            p.policy, p.chain, p.family, p.table
        ),
        _ => "no rule".into(),
    }
}

/// The firewall of the destination's receive path and of the source's send
/// path, evaluated for the probe's packet; an inbound block is then tried
/// again with the source's former addresses (a stale allow-list).
pub fn firewalls(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let (Some(src_addr), Some(dst_addr)) = (source_address(ctx.src), ctx.address) else {
        checked.push("firewalls: the nodes' addresses are not known".into());
        return;
    };
    let port = if ctx.port == 0 {
        reachmap_proto::DEFAULT_PROBE_PORT
    } else {
        ctx.port
    };
    let outcome = ctx.failure();
    if let Some(f) = ctx.dst.facts.as_ref()
        && let Some(fw) = &f.firewall
    {
        let mut p = Packet::tcp(src_addr, dst_addr, port);
        p.iif = interface_with(f, dst_addr);
        p.dst_is_local = true;
        p.local_addrs = f.addresses().map(|a| a.ip).collect();
        let compiled = Compiled::new(fw);
        let d = compiled.evaluate(&p, PathKind::Receive);
        checked.push(format!(
            "{}'s firewall ({}) for {src_addr} -> {dst_addr}:{port} inbound: {:?} by {}",
            ctx.dst.name,
            fw.backend,
            d.verdict,
            decided_by(&d)
        ));
        if let Some(n) = &d.nat {
            checked.push(format!("{}: {}", ctx.dst.name, nat_text(n)));
        }
        if let Some(action) = blocked(&d) {
            // Would the source's former address have been let in?
            let former: Vec<IpAddr> = events(
                ctx.src,
                |k| matches!(k, pb::event::Kind::AddressChanged(a) if a.removed.is_some()),
            )
            .filter_map(|e| match &e.kind {
                Some(pb::event::Kind::AddressChanged(a)) => a.removed.as_ref()?.ip.parse().ok(),
                _ => None,
            })
            .filter(|ip: &IpAddr| *ip != src_addr && ip.is_ipv4() == src_addr.is_ipv4())
            .collect();
            for old in former {
                let mut q = p.clone();
                q.src = old;
                let before = compiled.evaluate(&q, PathKind::Receive);
                if before.verdict == Final::Accept {
                    let mut c = cause(
                        "STALE_ALLOWLIST_ADDRESS",
                        ctx.dst,
                        96,
                        format!(
                            "{}'s firewall lets in {}'s old address {old} but not its new address {src_addr}: the allow-list was not updated when {} changed address",
                            ctx.dst.name, ctx.src.name, ctx.src.name
                        ),
                    );
                    if let Some(e) = events(ctx.src, |k| {
                        matches!(k, pb::event::Kind::AddressChanged(a)
                            if a.removed.as_ref().is_some_and(|r| r.ip == old.to_string()))
                    })
                    .next()
                    {
                        c.evidence.push(event(ctx.src, e));
                    }
                    if let Some(r) = &before.deciding {
                        c.evidence.push(fact(
                            ctx.dst,
                            format!("allows {old}: `{}` ({})", r.text, rule_place(r)),
                        ));
                    }
                    c.evidence.push(fact(
                        ctx.dst,
                        format!("{action} {src_addr}: {}", decided_by(&d)),
                    ));
                    c.fix = Some(format!(
                        "replace {old} with {src_addr} in {}'s allow-list{}",
                        ctx.dst.name,
                        before
                            .deciding
                            .as_ref()
                            .map(|r| format!(" (rule `{}`, {})", r.text, rule_place(r)))
                            .unwrap_or_default()
                    ));
                    out.push(c);
                    break;
                }
            }
            out.push(firewall_cause(
                ctx,
                ctx.dst,
                "FIREWALL_INBOUND",
                &d,
                action,
                outcome,
                format!(
                    "{}'s firewall {action} TCP from {} ({src_addr}) to port {port}",
                    ctx.dst.name, ctx.src.name
                ),
            ));
        }
    } else {
        checked.push(format!("{}'s firewall: not reported", ctx.dst.name));
    }
    if let Some(f) = ctx.src.facts.as_ref()
        && let Some(fw) = &f.firewall
    {
        let mut p = Packet::tcp(src_addr, dst_addr, port);
        p.oif = route_to(f, dst_addr)
            .map(|r| r.interface.clone())
            .filter(|i| !i.is_empty());
        p.local_addrs = f.addresses().map(|a| a.ip).collect();
        let d = evaluate(fw, &p, PathKind::Send);
        checked.push(format!(
            "{}'s firewall ({}) for {src_addr} -> {dst_addr}:{port} outbound: {:?} by {}",
            ctx.src.name,
            fw.backend,
            d.verdict,
            decided_by(&d)
        ));
        if let Some(action) = blocked(&d) {
            out.push(firewall_cause(
                ctx,
                ctx.src,
                "FIREWALL_OUTBOUND",
                &d,
                action,
                outcome,
                format!(
                    "{}'s firewall {action} TCP to {} ({dst_addr}) port {port} on the way out",
                    ctx.src.name, ctx.dst.name
                ),
            ));
        }
    } else {
        checked.push(format!("{}'s firewall: not reported", ctx.src.name));
    }
}

fn firewall_cause(
    ctx: &Context,
    node: &Node,
    code: &str,
    d: &Decision,
    action: &str,
    outcome: Option<&str>,
    detail: String,
) -> Cause {
    // A drop shows as a timeout, a reject as a refusal or unreachable: when
    // the probes agree, the rule is certainly the one.
    let agrees = match (action, outcome) {
        ("drops", Some("timeout")) => true,
        ("rejects", Some("refused" | "unreachable" | "reset")) => true,
        (_, None) => ctx.probe.is_none(),
        _ => false,
    };
    let weight = if !d.is_certain() {
        70
    } else if agrees {
        93
    } else {
        84
    };
    let mut c = cause(code, node, weight, format!("{detail}: {}", decided_by(d)));
    if let Some(r) = &d.deciding {
        c.evidence.push(fact(
            node,
            format!(
                "rule `{}` in {}{}",
                r.text,
                rule_place(r),
                r.comment
                    .as_deref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            ),
        ));
        c.fix = Some(format!(
            "if this traffic should pass: `{}` on {} (or add an accept rule before it)",
            delete_command(r),
            node.name
        ));
    } else if let Some(p) = &d.policy {
        c.evidence.push(fact(
            node,
            format!(
                "chain {} of the {} {} table has policy {} and no rule accepts this packet",
                p.chain, p.family, p.table, p.policy
            ),
        ));
        c.fix = Some(format!(
            "add an accept rule for this traffic to chain {} of the {} {} table on {}",
            p.chain, p.family, p.table, node.name
        ));
    }
    if let Some(e) = last_change(node) {
        c.evidence.push(event(node, e));
    }
    // Direction: the other way working points at filtering on one side.
    if let Some(r) = ctx.reverse.as_ref().filter(|r| r.state == "ok") {
        c.evidence.push(Evidence {
            kind: "probe".into(),
            node: r.src.clone(),
            time: 0,
            text: format!(
                "the other way works: {} -> {} port {} is ok",
                r.src, r.dst, r.port
            ),
        });
    }
    if let Some(n) = &d.nat {
        c.evidence.push(fact(node, nat_text(n)));
    }
    for u in &d.uncertain {
        c.evidence.push(fact(
            node,
            format!(
                "unless rule `{}` ({}) does otherwise: {}",
                u.rule.text,
                rule_place(&u.rule),
                u.reason
            ),
        ));
    }
    if let Some(p) = probe(ctx) {
        c.evidence.push(p);
    }
    c
}

/// Both ends' facts allow the traffic, yet probes time out: something
/// between them drops it.
pub fn network_path(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let timeouts = ctx
        .probe
        .as_ref()
        .is_some_and(|p| p.state == "failing" && p.failure.as_deref() == Some("timeout"));
    let explained = out.iter().any(|c| c.weight >= 75);
    checked.push(format!(
        "both ends allow it yet probes time out: {}",
        timeouts && !explained && ctx.src.connected() && ctx.dst.connected()
    ));
    if !timeouts || explained || !ctx.src.connected() || !ctx.dst.connected() {
        return;
    }
    let mut c = cause(
        "NETWORK_PATH",
        ctx.dst,
        65,
        format!(
            "both {} and {} allow this traffic and {} is listening, yet probes time out: something in the network path between them drops it (a cloud firewall or security group, a NAT, a load balancer)",
            ctx.src.name, ctx.dst.name, ctx.dst.name
        ),
    );
    if let Some(p) = probe(ctx) {
        c.evidence.push(p);
    }
    if let Some(r) = &ctx.reverse {
        c.evidence.push(Evidence {
            kind: "probe".into(),
            node: ctx.dst.name.clone(),
            time: r.last_failure,
            text: format!(
                "the other way, {} -> {} port {}: {}",
                r.src, r.dst, r.port, r.state
            ),
        });
    }
    let others_ok = ctx.others_to_dst.iter().filter(|c| c.state == "ok").count();
    if others_ok > 0 {
        c.evidence.push(Evidence {
            kind: "probe".into(),
            node: ctx.dst.name.clone(),
            time: 0,
            text: format!(
                "{others_ok} other nodes reach {} on this port",
                ctx.dst.name
            ),
        });
    }
    c.fix = Some("check the cloud firewall / security group rules, NAT and load balancers between the two nodes".into());
    out.push(c);
}
