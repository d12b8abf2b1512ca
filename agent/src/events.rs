//! Things that happened on the host, as the agent reports them.

use crate::facts::{IfAddr, OperState, Route};
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
    /// The unacked buffer overflowed; `count` events were lost.
    Dropped {
        count: u64,
        first: SystemTime,
        last: SystemTime,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEvent {
    pub time: SystemTime,
    pub kind: EventKind,
}
