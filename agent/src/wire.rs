//! The one place where the agent's own types become protocol messages.

use crate::diff::NetChange;
use crate::events::{EventKind, HostEvent};
use crate::facts::{HostInfo, IfAddr, Interface, NetState, OperState, Route, Scope};
use reachmap_proto::v1 as pb;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub fn host(h: &HostInfo) -> pb::HostInfo {
    pb::HostInfo {
        hostname: h.hostname.clone(),
        kernel: h.kernel.clone(),
        os: h.os.clone(),
        uptime_seconds: h.uptime_seconds,
        boot_time_unix_seconds: h.boot_time_unix_seconds,
    }
}

pub fn snapshot(version: u64, host_info: &HostInfo, net: &NetState) -> pb::Snapshot {
    pb::Snapshot {
        version,
        host: Some(host(host_info)),
        interfaces: net.interfaces.iter().map(interface).collect(),
        routes: net.routes.iter().map(route).collect(),
        ..Default::default()
    }
}

pub fn delta(base_version: u64, version: u64, change: &NetChange) -> pb::Delta {
    pb::Delta {
        base_version,
        version,
        interfaces_upserted: change.upserted.iter().map(interface).collect(),
        interfaces_removed: change.removed.clone(),
        routes_replaced: change.routes.is_some(),
        routes: change.routes.iter().flatten().map(route).collect(),
        host: None,
        ..Default::default()
    }
}

pub fn interface(i: &Interface) -> pb::Interface {
    pb::Interface {
        index: i.index,
        name: i.name.clone(),
        mac: i.mac.clone().unwrap_or_default(),
        mtu: i.mtu,
        admin_up: i.admin_up,
        oper_state: oper_state(i.oper_state) as i32,
        kind: i.kind.clone().unwrap_or_default(),
        addresses: i.addresses.iter().map(address).collect(),
    }
}

pub fn address(a: &IfAddr) -> pb::Address {
    let scope = match a.scope {
        Scope::Universe => pb::AddressScope::Universe,
        Scope::Site => pb::AddressScope::Site,
        Scope::Link => pb::AddressScope::Link,
        Scope::Host => pb::AddressScope::Host,
        Scope::Nowhere => pb::AddressScope::Unspecified,
    };
    pb::Address {
        ip: a.ip.to_string(),
        prefix_len: u32::from(a.prefix_len),
        scope: scope as i32,
    }
}

pub fn route(r: &Route) -> pb::Route {
    pb::Route {
        destination: r.destination_cidr(),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
        interface: r.interface.clone().unwrap_or_default(),
        preferred_source: r
            .preferred_source
            .map(|g| g.to_string())
            .unwrap_or_default(),
        metric: r.metric,
        table: r.table,
    }
}

pub fn oper_state(s: OperState) -> pb::OperState {
    match s {
        OperState::Unknown => pb::OperState::Unknown,
        OperState::NotPresent => pb::OperState::NotPresent,
        OperState::Down => pb::OperState::Down,
        OperState::LowerLayerDown => pb::OperState::LowerLayerDown,
        OperState::Testing => pb::OperState::Testing,
        OperState::Dormant => pb::OperState::Dormant,
        OperState::Up => pb::OperState::Up,
    }
}

pub fn event(id: u64, e: &HostEvent) -> pb::Event {
    use pb::event::Kind;
    let kind = match &e.kind {
        EventKind::AddressAdded {
            interface,
            address: a,
        } => Kind::AddressChanged(pb::AddressChanged {
            interface: interface.clone(),
            removed: None,
            added: Some(address(a)),
        }),
        EventKind::AddressRemoved {
            interface,
            address: a,
        } => Kind::AddressChanged(pb::AddressChanged {
            interface: interface.clone(),
            removed: Some(address(a)),
            added: None,
        }),
        EventKind::LinkAdded {
            interface,
            admin_up,
            oper_state: s,
        } => Kind::LinkChanged(pb::LinkChanged {
            interface: interface.clone(),
            added: true,
            new_state: oper_state(*s) as i32,
            new_admin_up: *admin_up,
            ..Default::default()
        }),
        EventKind::LinkRemoved {
            interface,
            admin_up,
            oper_state: s,
        } => Kind::LinkChanged(pb::LinkChanged {
            interface: interface.clone(),
            removed: true,
            old_state: oper_state(*s) as i32,
            old_admin_up: *admin_up,
            ..Default::default()
        }),
        EventKind::LinkChanged {
            interface,
            old_admin_up,
            new_admin_up,
            old_state,
            new_state,
        } => Kind::LinkChanged(pb::LinkChanged {
            interface: interface.clone(),
            old_state: oper_state(*old_state) as i32,
            new_state: oper_state(*new_state) as i32,
            old_admin_up: *old_admin_up,
            new_admin_up: *new_admin_up,
            added: false,
            removed: false,
        }),
        EventKind::DefaultRouteAdded(r) => Kind::RouteChanged(pb::RouteChanged {
            removed: None,
            added: Some(route(r)),
        }),
        EventKind::DefaultRouteRemoved(r) => Kind::RouteChanged(pb::RouteChanged {
            removed: Some(route(r)),
            added: None,
        }),
        EventKind::Dropped { count, first, last } => Kind::EventsDropped(pb::EventsDropped {
            count: *count,
            first_dropped_unix_nanos: unix_nanos(*first),
            last_dropped_unix_nanos: unix_nanos(*last),
        }),
    };
    pb::Event {
        time_unix_nanos: unix_nanos(e.time),
        id,
        received_unix_nanos: 0,
        kind: Some(kind),
    }
}
