//! How each of an agent's fact sources is: whether the facts it sends rest on
//! a reading, and what the node is blind to when a source is not reading.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FactSource {
    Sockets,
    Firewall,
    Network,
    KernelLog,
    Resources,
    Prober,
    Names,
}

impl FactSource {
    pub fn name(self) -> &'static str {
        match self {
            FactSource::Sockets => "sockets",
            FactSource::Firewall => "firewall",
            FactSource::Network => "network",
            FactSource::KernelLog => "kernel_log",
            FactSource::Resources => "resources",
            FactSource::Prober => "prober",
            FactSource::Names => "names",
        }
    }

    /// What a person loses sight of when it is not reading.
    pub fn facts(self) -> &'static str {
        match self {
            FactSource::Sockets => "listening sockets and their processes",
            FactSource::Firewall => "the firewall ruleset",
            FactSource::Network => "interfaces, addresses and routes",
            FactSource::KernelLog => "OOM kills, conntrack-full and SYN-flood messages",
            FactSource::Resources => "load, CPU, memory and conntrack figures",
            FactSource::Prober => "probes of its peers",
            FactSource::Names => "lookups of the fleet's names",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Starting,
    Ok,
    Degraded,
    Down,
}

impl SourceState {
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Ok => "ok",
            SourceState::Degraded => "degraded",
            SourceState::Down => "down",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    pub state: SourceState,
    /// Unix nanoseconds, by the agent's clock.
    pub since: i64,
    /// Unix nanoseconds and text.
    pub last_error: Option<(i64, String)>,
    pub errors_total: u64,
    pub restarts_total: u64,
}

impl SourceHealth {
    /// Not reading: its facts are missing or stale, and their absence
    /// proves nothing. A source that has not read yet is blind too.
    pub fn blind(&self) -> bool {
        matches!(self.state, SourceState::Down | SourceState::Starting)
    }
}

/// Every source an agent reported. Empty for an agent that reports none
/// (an older version): its sources are taken to be reading.
pub type Sources = BTreeMap<FactSource, SourceHealth>;
