//! Both ends' firewalls, evaluated for the probe's packet:
//! FIREWALL_INBOUND, FIREWALL_OUTBOUND, STALE_ALLOWLIST_ADDRESS; a port
//! forward on the way is followed and shown.

use super::blind;
use super::{cause, endpoint, event, events, fact, probe, route_to};
use crate::model::health::FactSource;
use crate::model::{NodeFacts, Protocol};
use crate::packet::firewall::L4;
use crate::packet::firewall::{
    Compiled, Decision, Final, NatRewrite, Packet, PathKind, RuleRef, evaluate,
};
use crate::state::Node;
use crate::why::code::CauseCode;
use crate::why::{Cause, Context, Evidence};
use reachmap_proto::v1 as pb;
use std::net::IpAddr;

/// The address a source sends from: its first probe-able address.
pub(crate) fn source_address(n: &Node) -> Option<IpAddr> {
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

pub(crate) fn rule_place(r: &RuleRef) -> String {
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

pub(crate) fn blocked(d: &Decision) -> Option<&'static str> {
    match d.verdict {
        Final::Drop => Some("drops"),
        Final::Reject { .. } => Some("rejects"),
        _ => None,
    }
}

pub(crate) fn decided_by(d: &Decision) -> String {
    match (&d.deciding, &d.policy) {
        (Some(r), _) => format!("rule `{}` ({})", r.text, rule_place(r)),
        (None, Some(p)) => format!(
            "the {} policy of chain {} ({} {} table)",
            p.policy, p.chain, p.family, p.table
        ),
        _ => "no rule".into(),
    }
}

/// A new TCP connection from `src` arriving at this host (`f`) for its
/// `dst:port`, on the interface that holds `dst`.
pub(crate) fn inbound_packet(f: &NodeFacts, src: IpAddr, dst: IpAddr, port: u16) -> Packet {
    let mut p = Packet::tcp(src, dst, port);
    p.iif = interface_with(f, dst);
    p.dst_is_local = true;
    p.local_addrs = f.addresses().map(|a| a.ip).collect();
    p
}

/// A new TCP connection this host (`f`) opens from `src` to `dst:port`,
/// leaving on the interface of its route to `dst`.
pub(crate) fn outbound_packet(f: &NodeFacts, src: IpAddr, dst: IpAddr, port: u16) -> Packet {
    let mut p = Packet::tcp(src, dst, port);
    p.oif = route_to(f, dst)
        .map(|r| r.interface.clone())
        .filter(|i| !i.is_empty());
    p.local_addrs = f.addresses().map(|a| a.ip).collect();
    p
}

/// The firewall of the destination's receive path and of the source's send
/// path, evaluated for the probe's packet; an inbound block is then tried
/// again with the source's former addresses (a stale allow-list).
pub(super) fn firewalls(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
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
    if blind::skipped(
        ctx.dst,
        FactSource::Firewall,
        "the inbound firewall",
        checked,
    ) {
    } else if let Some(f) = ctx.dst.facts.as_ref()
        && let Some(fw) = &f.firewall
    {
        let mut p = inbound_packet(f, src_addr, dst_addr, port);
        if ctx.protocol() == Protocol::Udp {
            p.protocol = L4::Udp;
        }
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
                        CauseCode::StaleAllowlistAddress,
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
                CauseCode::FirewallInbound,
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
    if blind::skipped(
        ctx.src,
        FactSource::Firewall,
        "the outbound firewall",
        checked,
    ) {
    } else if let Some(f) = ctx.src.facts.as_ref()
        && let Some(fw) = &f.firewall
    {
        let mut p = outbound_packet(f, src_addr, dst_addr, port);
        if ctx.protocol() == Protocol::Udp {
            p.protocol = L4::Udp;
        }
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
                CauseCode::FirewallOutbound,
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
    code: CauseCode,
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
            time: r.updated,
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
