//! Interfaces, addresses and routes from rtnetlink.
//!
//! `parse_*` are pure: they turn kernel messages (already decoded by
//! netlink-packet-route) into `facts` types and are tested on raw bytes
//! captured from a real kernel. `read_net_state` does the dumps.

use crate::facts::{IfAddr, Interface, NetState, OperState, Route, Scope};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("link {index}: no IFLA_IFNAME attribute")]
    LinkWithoutName { index: u32 },
    #[error("address on link {index}: no IFA_ADDRESS or IFA_LOCAL attribute")]
    AddressWithoutIp { index: u32 },
    #[error("rtnetlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("rtnetlink socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A link as the kernel reports it, before its addresses are attached.
pub fn parse_link(msg: &LinkMessage) -> Result<Interface, RtnlError> {
    let index = msg.header.index;
    let mut name = None;
    let mut mac = None;
    let mut mtu = 0;
    let mut oper_state = OperState::Unknown;
    let mut kind = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) if !bytes.is_empty() => mac = Some(format_mac(bytes)),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::OperState(s) => oper_state = oper_state_from(*s),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Interface {
        index,
        name: name.ok_or(RtnlError::LinkWithoutName { index })?,
        mac,
        mtu,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        oper_state,
        kind,
        addresses: Vec::new(),
    })
}

/// An address and the index of the link it is on.
pub fn parse_address(msg: &AddressMessage) -> Result<(u32, IfAddr), RtnlError> {
    let index = msg.header.index;
    // For IPv4, IFA_LOCAL is the interface's own address and IFA_ADDRESS the
    // peer on point-to-point links; for IPv6 only IFA_ADDRESS is sent.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local
        .or(address)
        .ok_or(RtnlError::AddressWithoutIp { index })?;
    Ok((
        index,
        IfAddr {
            ip,
            prefix_len: msg.header.prefix_len,
            scope: scope_from(msg.header.scope),
        },
    ))
}

/// A unicast route of the main table, or `None` for routes the agent does not
/// report (local, broadcast, multicast, other tables' housekeeping).
pub fn parse_route(msg: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut preferred_source = None;
    let mut metric = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => destination = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::PrefSource(a) => preferred_source = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let family_any = match msg.header.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0u8; 4]),
    };
    Some(Route {
        destination: destination.unwrap_or(family_any),
        prefix_len: msg.header.destination_prefix_length,
        gateway,
        interface: oif.and_then(|i| names.get(&i).cloned()),
        preferred_source,
        metric,
        table,
    })
}

/// Joins links, addresses and routes into one sorted reading.
pub fn assemble(
    mut links: Vec<Interface>,
    addresses: Vec<(u32, IfAddr)>,
    routes: Vec<RouteMessage>,
) -> NetState {
    links.sort_by_key(|l| l.index);
    for (index, addr) in addresses {
        if let Some(link) = links.iter_mut().find(|l| l.index == index) {
            link.addresses.push(addr);
        }
    }
    for link in &mut links {
        link.addresses.sort();
        link.addresses.dedup();
    }
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut routes: Vec<Route> = routes
        .iter()
        .filter_map(|r| parse_route(r, &names))
        .collect();
    routes.sort();
    routes.dedup();
    NetState {
        interfaces: links,
        routes,
    }
}

/// Dumps links, addresses and IPv4/IPv6 routes over one rtnetlink handle.
pub async fn read_net_state(handle: &rtnetlink::Handle) -> Result<NetState, RtnlError> {
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await? {
        match parse_link(&msg) {
            Ok(link) => links.push(link),
            Err(e) => tracing::warn!(error = %e, "skipping link"),
        }
    }
    let mut addresses = Vec::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await? {
        match parse_address(&msg) {
            Ok(a) => addresses.push(a),
            Err(e) => tracing::warn!(error = %e, "skipping address"),
        }
    }
    let mut routes = Vec::new();
    for request in [
        rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut stream = handle.route().get(request).execute();
        while let Some(msg) = stream.try_next().await? {
            routes.push(msg);
        }
    }
    Ok(assemble(links, addresses, routes))
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn oper_state_from(s: State) -> OperState {
    match s {
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        State::Unknown | State::Other(_) => OperState::Unknown,
        _ => OperState::Unknown,
    }
}

fn scope_from(s: AddressScope) -> Scope {
    match s {
        AddressScope::Universe => Scope::Universe,
        AddressScope::Site => Scope::Site,
        AddressScope::Link => Scope::Link,
        AddressScope::Host => Scope::Host,
        _ => Scope::Nowhere,
    }
}
