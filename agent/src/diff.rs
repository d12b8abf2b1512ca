//! What changed between two readings of the host's network state.

use crate::events::EventKind;
use crate::facts::{Interface, NetState, Route};
use std::collections::BTreeSet;

/// The difference between two readings: what to send as a Delta, and the
/// events a person would want to see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetChange {
    pub upserted: Vec<Interface>,
    pub removed: Vec<u32>,
    /// `Some` when the routing table differs: the whole new table.
    pub routes: Option<Vec<Route>>,
    pub events: Vec<EventKind>,
}

impl NetChange {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty() && self.routes.is_none()
    }
}

pub fn diff(old: &NetState, new: &NetState) -> NetChange {
    let mut change = NetChange::default();
    for new_if in &new.interfaces {
        match old.interface(new_if.index) {
            None => {
                change.events.push(EventKind::LinkAdded {
                    interface: new_if.name.clone(),
                    admin_up: new_if.admin_up,
                    oper_state: new_if.oper_state,
                });
                for a in &new_if.addresses {
                    change.events.push(EventKind::AddressAdded {
                        interface: new_if.name.clone(),
                        address: a.clone(),
                    });
                }
                change.upserted.push(new_if.clone());
            }
            Some(old_if) if old_if != new_if => {
                if old_if.admin_up != new_if.admin_up || old_if.oper_state != new_if.oper_state {
                    change.events.push(EventKind::LinkChanged {
                        interface: new_if.name.clone(),
                        old_admin_up: old_if.admin_up,
                        new_admin_up: new_if.admin_up,
                        old_state: old_if.oper_state,
                        new_state: new_if.oper_state,
                    });
                }
                address_events(old_if, new_if, &mut change.events);
                change.upserted.push(new_if.clone());
            }
            Some(_) => {}
        }
    }
    for old_if in &old.interfaces {
        if new.interface(old_if.index).is_none() {
            for a in &old_if.addresses {
                change.events.push(EventKind::AddressRemoved {
                    interface: old_if.name.clone(),
                    address: a.clone(),
                });
            }
            change.events.push(EventKind::LinkRemoved {
                interface: old_if.name.clone(),
                admin_up: old_if.admin_up,
                oper_state: old_if.oper_state,
            });
            change.removed.push(old_if.index);
        }
    }
    if old.routes != new.routes {
        let old_defaults: BTreeSet<&Route> = old.routes.iter().filter(|r| r.is_default()).collect();
        let new_defaults: BTreeSet<&Route> = new.routes.iter().filter(|r| r.is_default()).collect();
        for r in old_defaults.difference(&new_defaults) {
            change
                .events
                .push(EventKind::DefaultRouteRemoved((*r).clone()));
        }
        for r in new_defaults.difference(&old_defaults) {
            change
                .events
                .push(EventKind::DefaultRouteAdded((*r).clone()));
        }
        change.routes = Some(new.routes.clone());
    }
    change
}

fn address_events(old_if: &Interface, new_if: &Interface, events: &mut Vec<EventKind>) {
    for a in &old_if.addresses {
        if !new_if.addresses.contains(a) {
            events.push(EventKind::AddressRemoved {
                interface: new_if.name.clone(),
                address: a.clone(),
            });
        }
    }
    for a in &new_if.addresses {
        if !old_if.addresses.contains(a) {
            events.push(EventKind::AddressAdded {
                interface: new_if.name.clone(),
                address: a.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{IfAddr, OperState, Scope};

    fn iface(index: u32, name: &str, addrs: &[&str]) -> Interface {
        Interface {
            index,
            name: name.into(),
            mac: None,
            mtu: 1500,
            admin_up: true,
            oper_state: OperState::Up,
            kind: None,
            addresses: addrs
                .iter()
                .map(|a| IfAddr {
                    ip: a.parse().expect("ip"),
                    prefix_len: 24,
                    scope: Scope::Universe,
                })
                .collect(),
        }
    }

    fn default_via(gw: &str) -> Route {
        Route {
            destination: "0.0.0.0".parse().expect("ip"),
            prefix_len: 0,
            gateway: Some(gw.parse().expect("ip")),
            interface: Some("eth0".into()),
            preferred_source: None,
            metric: 0,
            table: 254,
        }
    }

    #[test]
    fn same_state_is_no_change() {
        let s = NetState {
            interfaces: vec![iface(1, "lo", &["127.0.0.1"])],
            routes: vec![default_via("198.18.0.1")],
        };
        let c = diff(&s, &s.clone());
        assert!(c.is_empty());
        assert!(c.events.is_empty());
    }

    #[test]
    fn address_replaced_on_an_interface() {
        let old = NetState {
            interfaces: vec![iface(2, "eth0", &["198.18.0.11"])],
            routes: vec![],
        };
        let new = NetState {
            interfaces: vec![iface(2, "eth0", &["198.18.0.12"])],
            routes: vec![],
        };
        let c = diff(&old, &new);
        assert_eq!(c.upserted.len(), 1);
        assert!(c.removed.is_empty());
        assert!(
            matches!(&c.events[0], EventKind::AddressRemoved { address, .. } if address.ip.to_string() == "198.18.0.11")
        );
        assert!(
            matches!(&c.events[1], EventKind::AddressAdded { address, .. } if address.ip.to_string() == "198.18.0.12")
        );
    }

    #[test]
    fn link_down_and_link_removed() {
        let mut down = iface(2, "eth0", &[]);
        down.oper_state = OperState::Down;
        down.admin_up = false;
        let old = NetState {
            interfaces: vec![iface(2, "eth0", &[]), iface(3, "eth1", &["198.18.1.1"])],
            routes: vec![],
        };
        let new = NetState {
            interfaces: vec![down],
            routes: vec![],
        };
        let c = diff(&old, &new);
        assert_eq!(c.removed, vec![3]);
        assert!(c.events.iter().any(|e| matches!(
            e,
            EventKind::LinkChanged {
                old_state: OperState::Up,
                new_state: OperState::Down,
                new_admin_up: false,
                ..
            }
        )));
        assert!(
            c.events.iter().any(
                |e| matches!(e, EventKind::LinkRemoved { interface, .. } if interface == "eth1")
            )
        );
        assert!(c.events.iter().any(
            |e| matches!(e, EventKind::AddressRemoved { interface, .. } if interface == "eth1")
        ));
    }

    #[test]
    fn default_route_change_is_an_event_other_routes_are_not() {
        let mut subnet = default_via("198.18.0.1");
        subnet.prefix_len = 24;
        subnet.destination = "198.18.0.0".parse().expect("ip");
        subnet.gateway = None;
        let old = NetState {
            interfaces: vec![],
            routes: vec![default_via("198.18.0.1")],
        };
        let new = NetState {
            interfaces: vec![],
            routes: vec![default_via("198.18.0.254"), subnet],
        };
        let c = diff(&old, &new);
        assert_eq!(c.routes.as_ref().map(Vec::len), Some(2));
        assert_eq!(c.events.len(), 2);
        assert!(
            matches!(&c.events[0], EventKind::DefaultRouteRemoved(r) if r.gateway == Some("198.18.0.1".parse().expect("ip")))
        );
        assert!(
            matches!(&c.events[1], EventKind::DefaultRouteAdded(r) if r.gateway == Some("198.18.0.254".parse().expect("ip")))
        );
    }
}
