//! The addresses a command (test-port, trace) may make this agent send to:
//! every fleet member's, kept up to date by the collector's
//! `FleetAddresses` messages (the whole set when the stream starts, then
//! what changed), and those of the current plan's targets. A plan names only
//! its own targets, so a member joining the fleet does not change every
//! agent's plan.

use std::collections::HashSet;
use std::net::IpAddr;

/// A `FleetAddresses` message, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressChange {
    pub replace: bool,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct FleetSet {
    members: HashSet<IpAddr>,
    plan: HashSet<IpAddr>,
}

impl FleetSet {
    pub fn apply(&mut self, change: &AddressChange) {
        if change.replace {
            self.members.clear();
        }
        for a in &change.removed {
            self.members.remove(a);
        }
        self.members.extend(change.added.iter().copied());
    }

    /// The current plan's target addresses.
    pub fn set_plan(&mut self, plan: &HashSet<IpAddr>) {
        self.plan.clone_from(plan);
    }

    /// Every address a command may name.
    pub fn allowed(&self) -> HashSet<IpAddr> {
        self.members.union(&self.plan).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().expect("ip")).collect()
    }

    #[test]
    fn the_whole_set_then_changes_and_the_plan_on_top() {
        let mut f = FleetSet::default();
        f.apply(&AddressChange {
            replace: true,
            added: ips(&["198.18.0.11", "198.18.0.12"]),
            removed: vec![],
        });
        f.set_plan(&ips(&["198.18.0.12"]).into_iter().collect());
        f.apply(&AddressChange {
            replace: false,
            added: ips(&["198.18.0.13"]),
            removed: ips(&["198.18.0.11"]),
        });
        let mut got: Vec<IpAddr> = f.allowed().into_iter().collect();
        got.sort();
        assert_eq!(got, ips(&["198.18.0.12", "198.18.0.13"]));
        // A new stream starts from the whole set again.
        f.apply(&AddressChange {
            replace: true,
            added: ips(&["198.18.0.14"]),
            removed: vec![],
        });
        let mut got: Vec<IpAddr> = f.allowed().into_iter().collect();
        got.sort();
        assert_eq!(got, ips(&["198.18.0.12", "198.18.0.14"]), "the plan's stay");
    }
}
