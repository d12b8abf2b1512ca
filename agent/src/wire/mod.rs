//! The one place where the agent's own types become protocol messages.

pub mod firewall;
pub mod outbound;
pub mod probe;
pub mod resources;

use crate::events::{EventKind, HostEvent, ListenerKey};
use crate::facts::firewall::Ruleset;
use crate::facts::kernel::{KernelEvent, KernelEventKind};
use crate::facts::sockets::{BindScope, Listener, Protocol, SocketSummary};
use crate::facts::{HostInfo, IfAddr, Interface, NetState, OperState, Route, Scope};
use crate::health::{HealthMap, Source, State};
use crate::hub::{Change, HostFacts};
use outbound::Outbound;
use reachmap_proto::v1 as pb;
use reachmap_proto::v1::agent_message::Body;
use std::sync::Arc;
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

/// A reading of the firewall as it travels whole: a ruleset goes by
/// reference, for the encoder to write chain by chain; an error as its message.
fn firewall_of(f: &Result<Arc<Ruleset>, String>) -> (Option<pb::Firewall>, Option<Arc<Ruleset>>) {
    match f {
        Ok(r) => (None, Some(r.clone())),
        Err(e) => (Some(firewall::unreadable(e)), None),
    }
}

pub fn snapshot(version: u64, host_info: &HostInfo, facts: &HostFacts) -> Outbound {
    let (unreadable, ruleset) = facts.firewall.as_ref().map(firewall_of).unwrap_or_default();
    let net = &facts.net;
    let snapshot = pb::Snapshot {
        version,
        host: Some(host(host_info)),
        interfaces: net.interfaces.iter().map(interface).collect(),
        routes: net.routes.iter().map(route).collect(),
        sockets: Some(pb::SocketFacts {
            listeners: facts
                .listeners
                .values()
                .map(|l| listener_on(l, net))
                .collect(),
            summary: Some(socket_summary(&facts.socket_summary)),
        }),
        firewall: unreadable,
        resources: facts
            .resources
            .as_ref()
            .map(|(t, r)| resources::resources(r, *t)),
        sources: health(&facts.health),
    };
    Outbound {
        body: Body::Snapshot(snapshot),
        firewall: ruleset,
    }
}

/// Every source's health, in the order of `Source::ALL`.
pub fn health(map: &HealthMap) -> Vec<pb::SourceHealth> {
    map.iter()
        .map(|(source, h)| pb::SourceHealth {
            source: fact_source(*source) as i32,
            state: source_state(h.state) as i32,
            since_unix_nanos: unix_nanos(h.since),
            last_error: h
                .last_error
                .as_ref()
                .map(|(_, e)| one_line(e, MAX_ERROR_TEXT))
                .unwrap_or_default(),
            last_error_unix_nanos: h.last_error.as_ref().map_or(0, |(t, _)| unix_nanos(*t)),
            errors_total: h.errors_total,
            restarts_total: h.restarts_total,
        })
        .collect()
}

/// The longest error text the collector takes.
const MAX_ERROR_TEXT: usize = 1024;

/// An error as one line of at most `max` bytes: a tool's stderr may hold
/// newlines and tabs, which the collector refuses in text fields.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn fact_source(s: Source) -> pb::FactSource {
    match s {
        Source::Sockets => pb::FactSource::Sockets,
        Source::Firewall => pb::FactSource::Firewall,
        Source::Network => pb::FactSource::Network,
        Source::KernelLog => pb::FactSource::KernelLog,
        Source::Resources => pb::FactSource::Resources,
        Source::Prober => pb::FactSource::Prober,
        Source::Names => pb::FactSource::Names,
    }
}

fn source_state(s: State) -> pb::SourceState {
    match s {
        State::Starting => pb::SourceState::Starting,
        State::Ok => pb::SourceState::Ok,
        State::Degraded => pb::SourceState::Degraded,
        State::Down => pb::SourceState::Down,
    }
}

/// `net` names the interfaces listeners are bound to.
pub fn delta(base_version: u64, version: u64, change: &Change, net: &NetState) -> Outbound {
    let n = &change.net;
    let (whole, ruleset) = match (&change.firewall, &change.firewall_base) {
        (Some(Ok(_)), Some(_)) | (None, _) => (None, None),
        (Some(f), _) => firewall_of(f),
    };
    let delta = pb::Delta {
        base_version,
        version,
        interfaces_upserted: n.upserted.iter().map(interface).collect(),
        interfaces_removed: n.removed.clone(),
        routes_replaced: n.routes.is_some(),
        routes: n.routes.iter().flatten().map(route).collect(),
        host: None,
        listeners_upserted: change
            .listeners_upserted
            .iter()
            .map(|l| listener_on(l, net))
            .collect(),
        listeners_removed: change.listeners_removed.iter().map(listener_key).collect(),
        socket_summary: change.socket_summary.as_ref().map(socket_summary),
        firewall: whole,
        firewall_patch: match (&change.firewall, &change.firewall_base) {
            (Some(Ok(new)), Some(old)) => Some(firewall::patch(old, new)),
            _ => None,
        },
        resources: change
            .resources
            .as_ref()
            .map(|(t, r)| resources::resources(r, *t)),
        sources: change.health.as_ref().map(health).unwrap_or_default(),
    };
    Outbound {
        body: Body::Delta(delta),
        firewall: ruleset,
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

/// `instance_id` is the agent instance that made the event (never 0): events
/// kept on disk are resent after a restart with the instance and id they
/// were made with.
pub fn event(id: u64, instance_id: u64, e: &HostEvent) -> pb::Event {
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
        EventKind::ListenerAppeared(l) => Kind::ListenerChanged(pb::ListenerChanged {
            listener: Some(listener(l)),
            appeared: true,
        }),
        EventKind::ListenerGone(l) => Kind::ListenerChanged(pb::ListenerChanged {
            listener: Some(listener(l)),
            appeared: false,
        }),
        EventKind::FirewallChanged(f) => Kind::FirewallChanged(pb::FirewallChanged {
            backend: f.backends.clone(),
            generation: f.generation,
            pid: f.pid,
            command: f.command.clone().unwrap_or_default(),
            old_hash: f.old_hash,
            new_hash: f.new_hash,
            old_rules: f.old_rules,
            new_rules: f.new_rules,
        }),
        EventKind::Kernel { event, listeners } => kernel_event(event, listeners),
        EventKind::KernelLogLost(count) => Kind::KernelLogLost(pb::KernelLogLost { count: *count }),
        EventKind::ProbeState(c) => Kind::ProbeStateChanged(probe::state_change(c)),
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
        instance_id,
        kind: Some(kind),
    }
}

fn kernel_event(e: &KernelEvent, listeners: &[ListenerKey]) -> pb::event::Kind {
    use pb::event::Kind;
    match &e.kind {
        KernelEventKind::OomKill(o) => Kind::OomKill(pb::OomKill {
            pid: o.pid,
            process: o.process.clone(),
            cgroup: o.cgroup.clone().unwrap_or_default(),
            unit: o.systemd_unit.clone().unwrap_or_default(),
            constraint: o.constraint.clone().unwrap_or_default(),
            total_vm_kb: o.total_vm_kb.unwrap_or(0),
            anon_rss_kb: o.anon_rss_kb.unwrap_or(0),
            file_rss_kb: o.file_rss_kb.unwrap_or(0),
            shmem_rss_kb: o.shmem_rss_kb.unwrap_or(0),
            oom_score_adj: o.oom_score_adj.unwrap_or(0),
            listeners: listeners.iter().map(listener_key).collect(),
            uid: o.uid.unwrap_or(0),
        }),
        KernelEventKind::ConntrackFull { count } => {
            Kind::ConntrackFull(pb::ConntrackFull { count: *count })
        }
        KernelEventKind::SynFlood { address, port } => Kind::SynFlood(pb::SynFlood {
            address: address.map(|a| a.to_string()).unwrap_or_default(),
            port: u32::from(*port),
        }),
        KernelEventKind::LinkState {
            interface,
            up,
            message,
        } => Kind::KernelLink(pb::KernelLinkMessage {
            interface: interface.clone(),
            up: *up,
            message: message.clone(),
        }),
    }
}

fn protocol(p: Protocol) -> i32 {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp as i32,
        Protocol::Udp => pb::Protocol::Udp as i32,
    }
}

pub fn listener_key(k: &ListenerKey) -> pb::ListenerKey {
    pb::ListenerKey {
        protocol: protocol(k.protocol),
        address: k.address.to_string(),
        port: u32::from(k.port),
    }
}

/// `interfaces` names a listener's SO_BINDTODEVICE index.
pub fn listener_on(l: &Listener, interfaces: &NetState) -> pb::Listener {
    let mut out = listener(l);
    if let Some(i) = l.interface_index.and_then(|i| interfaces.interface(i)) {
        out.interface = i.name.clone();
    }
    out
}

pub fn listener(l: &Listener) -> pb::Listener {
    pb::Listener {
        protocol: protocol(l.protocol),
        address: l.address.to_string(),
        port: u32::from(l.port),
        scope: match l.scope {
            BindScope::Loopback => pb::BindScope::Loopback,
            BindScope::Any => pb::BindScope::Any,
            BindScope::Address => pb::BindScope::Address,
        } as i32,
        v6only: l.v6only,
        accept_queue: l.accept_queue,
        accept_queue_limit: l.accept_queue_limit,
        established: l.established,
        processes: l
            .processes
            .iter()
            .map(|p| pb::Process {
                pid: p.pid,
                name: p.name.clone(),
                unit: p.unit.clone().unwrap_or_default(),
                cgroup: p.cgroup.clone().unwrap_or_default(),
            })
            .collect(),
        interface: l
            .interface_index
            .map(|i| format!("if{i}"))
            .unwrap_or_default(),
        uid: l.uid,
        inode: l.inode,
    }
}

pub fn socket_summary(s: &SocketSummary) -> pb::SocketSummary {
    pb::SocketSummary {
        tcp_total: s.tcp_total,
        tcp_established: s.tcp_established,
        tcp_time_wait: s.tcp_time_wait,
        udp_total: s.udp_total,
    }
}
