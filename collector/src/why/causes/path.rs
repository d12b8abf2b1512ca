//! Agents, probes and the network between the nodes: AGENT_DOWN,
//! ICMP_ONLY_BLOCKED, INTERMITTENT_LOSS, NETWORK_PATH.

use super::blind;
use super::{cause, cell_time, event, events, fact, probe};
use crate::model::health::FactSource;
use crate::view::rfc3339;
use crate::why::code::CauseCode;
use crate::why::{Cause, Context, Evidence};
use reachmap_proto::v1 as pb;

pub(super) fn agents(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
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
            CauseCode::AgentDown,
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

pub(super) fn icmp_only(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let (Some(icmp), Some(tcp)) = (&ctx.icmp, &ctx.probe) else {
        return;
    };
    checked.push(format!(
        "ICMP echo {} -> {}: {}",
        ctx.src.name, ctx.dst.name, icmp.state
    ));
    if icmp.state == "failing" && tcp.kind != "icmp" && tcp.state != "failing" {
        let mut c = cause(
            CauseCode::IcmpOnlyBlocked,
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
            time: cell_time(icmp),
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

pub(super) fn loss(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
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
            CauseCode::IntermittentLoss,
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

/// Both ends' facts allow the traffic, yet probes time out: something
/// between them drops it.
pub(super) fn network_path(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let timeouts = ctx
        .probe
        .as_ref()
        .is_some_and(|p| p.state == "failing" && p.failure.as_deref() == Some("timeout"));
    let explained = out.iter().any(|c| c.weight >= 75);
    // "Both ends allow it" rests on both firewalls and the listener list.
    let unseen = [
        (ctx.dst, FactSource::Firewall),
        (ctx.src, FactSource::Firewall),
        (ctx.dst, FactSource::Sockets),
    ]
    .iter()
    .filter(|(n, s)| blind::blind(n, *s).is_some())
    .map(|(n, s)| format!("{}'s {}", n.name, s.name()))
    .collect::<Vec<_>>();
    if timeouts && !explained && !unseen.is_empty() {
        checked.push(format!(
            "a block in the network path: not concluded, {} not reading",
            unseen.join(" and ")
        ));
        return;
    }
    checked.push(format!(
        "both ends allow it yet probes time out: {}",
        timeouts && !explained && ctx.src.connected() && ctx.dst.connected()
    ));
    if !timeouts || explained || !ctx.src.connected() || !ctx.dst.connected() {
        return;
    }
    let mut c = cause(
        CauseCode::NetworkPath,
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
            time: cell_time(r),
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
            time: ctx
                .others_to_dst
                .iter()
                .filter(|c| c.state == "ok")
                .map(|c| c.updated)
                .max()
                .unwrap_or(0),
            text: format!(
                "{others_ok} other nodes reach {} on this port",
                ctx.dst.name
            ),
        });
    }
    c.fix = Some("check the cloud firewall / security group rules, NAT and load balancers between the two nodes".into());
    out.push(c);
}
