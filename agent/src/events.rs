//! Things that happened on the host, as the agent reports them.

use crate::facts::kernel::KernelEvent;
use crate::facts::sockets::{Listener, Protocol};
use crate::facts::{IfAddr, OperState, Route};
use std::net::IpAddr;
use std::time::SystemTime;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    AddressAdded {
        interface: String,
        address: IfAddr,
    },
    AddressRemoved {
        interface: String,
        address: IfAddr,
    },
    LinkAdded {
        interface: String,
        admin_up: bool,
        oper_state: OperState,
    },
    LinkRemoved {
        interface: String,
        admin_up: bool,
        oper_state: OperState,
    },
    LinkChanged {
        interface: String,
        old_admin_up: bool,
        new_admin_up: bool,
        old_state: OperState,
        new_state: OperState,
    },
    /// Only default routes: other route churn follows address changes and
    /// would drown the events that matter.
    DefaultRouteAdded(Route),
    DefaultRouteRemoved(Route),
    ListenerAppeared(Listener),
    ListenerGone(Listener),
    FirewallChanged(FirewallChange),
    /// Something the kernel logged; an OOM kill names the listeners the
    /// victim held at the last socket reading.
    Kernel {
        event: KernelEvent,
        listeners: Vec<ListenerKey>,
    },
    /// Kernel log records overwritten before the agent read them.
    KernelLogLost(u64),
    /// A probe target changed state (ok, degraded, failing).
    ProbeState(crate::probe::StateChange),
    /// The unacked buffer overflowed; `count` events were lost.
    Dropped {
        count: u64,
        first: SystemTime,
        last: SystemTime,
    },
}

/// What identifies a listener across readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
}

impl ListenerKey {
    pub fn of(l: &Listener) -> Self {
        ListenerKey {
            protocol: l.protocol,
            port: l.port,
            address: l.address,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallChange {
    /// Backends with tables, joined by `+`.
    pub backends: String,
    pub generation: Option<u32>,
    /// The process that committed it, when the kernel said (nftables).
    pub pid: Option<u32>,
    pub command: Option<String>,
    pub old_hash: u64,
    pub new_hash: u64,
    pub old_rules: u32,
    pub new_rules: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEvent {
    pub time: SystemTime,
    pub kind: EventKind,
}
