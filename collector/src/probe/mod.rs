//! Probing at the collector: the planner decides what every agent probes, the
//! matrix keeps what they report. Both are pure (no I/O, no clock): the state
//! task owns them and feeds them the fleet, the results and the time.

pub mod incremental;
pub mod matrix;
pub mod planner;
pub mod tls;
pub mod wire;

/// What a name resolved to on one agent's host, as it reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedName {
    pub name: String,
    /// The node the config gives the name to.
    pub node: String,
    pub addresses: Vec<std::net::IpAddr>,
    /// Why the lookup failed, if it did.
    pub error: Option<String>,
    pub resolved_unix_nanos: i64,
}

pub use incremental::{Planner, Update};
pub use matrix::{
    ApplyStats, Cell, CellChange, CellRef, CellState, FailureCounts, JsonDetail, Matrix, Outcome,
    RestoredCell, Restorer, StateChange, TargetState, WindowInput, WindowTarget,
};
pub use planner::{
    FleetName, NodeInput, NodePlan, PlannedTarget, PlannerConfig, ProbeKind, Service, ServiceKind,
    ServiceTls, plan,
};
pub use tls::{TlsKind, TlsNote};

/// A 64-bit hash whose value is fixed by this file, not by the standard
/// library's hasher (whose algorithm may change between Rust releases): target
/// ids and rendezvous choices must stay the same across collector restarts and
/// upgrades, or every agent would reset its windows. FNV-1a over the bytes,
/// then the splitmix64 finaliser so that nearby inputs spread over the range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StableHash(u64);

impl StableHash {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> StableHash {
        StableHash(Self::OFFSET)
    }

    pub(crate) fn bytes(mut self, bytes: &[u8]) -> StableHash {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        self
    }

    /// A string followed by a terminator, so ("ab", "c") and ("a", "bc")
    /// differ.
    pub(crate) fn str(self, s: &str) -> StableHash {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }

    pub(crate) fn u64(self, v: u64) -> StableHash {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn ip(self, ip: std::net::IpAddr) -> StableHash {
        match ip {
            std::net::IpAddr::V4(a) => self.bytes(&[4]).bytes(&a.octets()),
            std::net::IpAddr::V6(a) => self.bytes(&[6]).bytes(&a.octets()),
        }
    }

    pub(crate) fn finish(self) -> u64 {
        mix(self.0)
    }
}

/// splitmix64's finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned: a change here changes every target id in every deployed plan.
        assert_eq!(
            StableHash::new().str("a").finish(),
            StableHash::new().str("a").finish()
        );
        assert_ne!(
            StableHash::new().str("ab").str("c").finish(),
            StableHash::new().str("a").str("bc").finish()
        );
        assert_eq!(StableHash::new().finish(), mix(0xcbf2_9ce4_8422_2325));
        let id = planner::target_id(
            "node-1",
            std::net::IpAddr::from([198, 18, 0, 1]),
            7442,
            ProbeKind::Tcp,
        );
        assert_eq!(id, 0xa720_d2c6_d627_22a5, "{id:#x}");
    }
}
