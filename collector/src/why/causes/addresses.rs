//! Addresses, routes, interfaces and names: NO_ROUTE, INTERFACE_DOWN,
//! PEER_ADDRESS_CHANGED, STALE_DNS.

use super::blind;
use super::{cause, event, events, fact, fact_at, probe, route_to};
use crate::model::health::FactSource;
use crate::state::Node;
use crate::why::code::CauseCode;
use crate::why::{Cause, Context};
use reachmap_proto::v1 as pb;
use std::net::IpAddr;

pub(super) fn interfaces_and_routes(
    ctx: &Context,
    checked: &mut Vec<String>,
    out: &mut Vec<Cause>,
) {
    let Some(addr) = ctx.address else {
        checked.push(format!("{} has no address to probe", ctx.dst.name));
        return;
    };
    // The source: a route to the destination, over an interface that is up.
    if let Some(f) = ctx.src.facts.as_ref()
        && !blind::skipped(
            ctx.src,
            FactSource::Network,
            "routes and interfaces",
            checked,
        )
    {
        match route_to(f, addr) {
            None => {
                checked.push(format!("{}'s route to {addr}: none", ctx.src.name));
                let mut c = cause(
                    CauseCode::NoRoute,
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
    if let Some(f) = ctx.dst.facts.as_ref()
        && !blind::skipped(
            ctx.dst,
            FactSource::Network,
            "addresses and interfaces",
            checked,
        )
    {
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
                    CauseCode::PeerAddressChanged,
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
        CauseCode::InterfaceDown,
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

/// STALE_DNS: a name the config gives the destination resolves, on the
/// source, to none of the destination's addresses — typically its old one
/// after the cloud gave it a new one. Probes go to the addresses the
/// destination reports, so the path can be fine while every client that uses
/// the name fails.
pub(super) fn names(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let (src, dst) = (&ctx.src.name, &ctx.dst.name);
    let lookups: Vec<_> = ctx.src.names.iter().filter(|r| r.node == *dst).collect();
    if lookups.is_empty() {
        return;
    }
    if blind::skipped(
        ctx.src,
        FactSource::Names,
        &format!("lookups of {dst}'s names"),
        checked,
    ) || blind::skipped(
        ctx.dst,
        FactSource::Network,
        &format!("the addresses {dst}'s names should resolve to"),
        checked,
    ) {
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
        let mut c = cause(CauseCode::StaleDns, ctx.src, 80, detail);
        c.evidence.push(fact_at(
            ctx.src,
            r.resolved_unix_nanos,
            format!("{} resolves to {}", r.name, listed(&r.addresses)),
        ));
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
