//! The collector's own model of a node's facts, validated from the wire.

pub mod firewall;
pub mod health;

pub use firewall::{Firewall, FirewallPatch};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Addr {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub scope: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub admin_up: bool,
    pub oper_state: String,
    pub kind: String,
    pub addresses: Vec<Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub interface: String,
    pub preferred_source: Option<IpAddr>,
    pub metric: u32,
    pub table: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub os: String,
    pub uptime_seconds: u64,
    pub boot_time_unix_seconds: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindScope {
    Loopback,
    Any,
    Address,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ListenerKey {
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    pub unit: Option<String>,
    pub cgroup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub scope: BindScope,
    pub v6only: Option<bool>,
    pub accept_queue: u32,
    pub accept_queue_limit: u32,
    pub established: u32,
    pub processes: Vec<Process>,
    pub interface: Option<String>,
    pub uid: u32,
    pub inode: u64,
}

impl Listener {
    pub fn key(&self) -> ListenerKey {
        ListenerKey {
            protocol: self.protocol,
            port: self.port,
            address: self.address,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketSummary {
    pub tcp_total: u32,
    pub tcp_established: u32,
    pub tcp_time_wait: u32,
    pub udp_total: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PressureFigures {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu_some: PressureFigures,
    pub memory_some: PressureFigures,
    pub memory_full: PressureFigures,
    pub io_some: PressureFigures,
    pub io_full: PressureFigures,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryTrend {
    #[default]
    Unknown,
    Steady,
    Growing,
    Spike,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    pub sampled_unix_nanos: i64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub cpus: u32,
    pub cpu_busy_pct: Option<f64>,
    pub cpu_steal_pct: Option<f64>,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub pressure: Option<Pressure>,
    pub conntrack_count: Option<u64>,
    pub conntrack_max: Option<u64>,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub disk_root_total_bytes: Option<u64>,
    pub disk_root_used_bytes: Option<u64>,
    pub memory_trend: MemoryTrend,
    pub memory_growth_mib_per_min: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeFacts {
    pub version: u64,
    pub host: HostInfo,
    /// By interface index.
    pub interfaces: BTreeMap<u32, Interface>,
    pub routes: Vec<Route>,
    pub listeners: BTreeMap<ListenerKey, Listener>,
    pub socket_summary: SocketSummary,
    pub firewall: Option<Firewall>,
    pub resources: Option<Resources>,
    /// How each of the agent's fact sources is.
    pub sources: health::Sources,
}

impl NodeFacts {
    /// The source's health when it is not reading (down, or not read yet).
    pub fn blind(&self, source: health::FactSource) -> Option<&health::SourceHealth> {
        self.sources.get(&source).filter(|h| h.blind())
    }

    pub fn addresses(&self) -> impl Iterator<Item = &Addr> {
        self.interfaces.values().flat_map(|i| i.addresses.iter())
    }
}

/// A validated Delta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FactsDelta {
    pub base_version: u64,
    pub version: u64,
    pub upserted: Vec<Interface>,
    pub removed: Vec<u32>,
    pub routes: Option<Vec<Route>>,
    pub host: Option<HostInfo>,
    pub listeners_upserted: Vec<Listener>,
    pub listeners_removed: Vec<ListenerKey>,
    pub socket_summary: Option<SocketSummary>,
    pub firewall: Option<Firewall>,
    /// The chains of the ruleset that changed, on top of the current one.
    pub firewall_patch: Option<FirewallPatch>,
    pub resources: Option<Resources>,
    /// Present when a source's health changed: every source, whole.
    pub sources: Option<health::Sources>,
}

impl NodeFacts {
    /// Why `d` cannot be applied to these facts, if it cannot. A delta
    /// from another version, or a firewall patch made on another ruleset,
    /// needs a snapshot instead.
    pub fn check(&self, d: &FactsDelta) -> Result<(), String> {
        if self.version != d.base_version {
            return Err(format!(
                "delta from version {} but the collector has {}",
                d.base_version, self.version
            ));
        }
        match (&d.firewall_patch, &self.firewall) {
            (None, _) => Ok(()),
            (Some(p), Some(f)) => f.check_patch(p, crate::validate::firewall::MAX_RULES),
            (Some(_), None) => Err("firewall patch, but the collector has no ruleset".into()),
        }
    }

    /// Applies a delta `check` accepted.
    pub fn apply(&mut self, d: FactsDelta) {
        for i in d.upserted {
            self.interfaces.insert(i.index, i);
        }
        for idx in d.removed {
            self.interfaces.remove(&idx);
        }
        if let Some(r) = d.routes {
            self.routes = r;
        }
        if let Some(h) = d.host {
            self.host = h;
        }
        for l in d.listeners_upserted {
            self.listeners.insert(l.key(), l);
        }
        for k in d.listeners_removed {
            self.listeners.remove(&k);
        }
        if let Some(s) = d.socket_summary {
            self.socket_summary = s;
        }
        if let Some(f) = d.firewall {
            self.firewall = Some(f);
        }
        if let (Some(p), Some(f)) = (d.firewall_patch, &mut self.firewall) {
            f.apply_patch(p);
        }
        if let Some(r) = d.resources {
            self.resources = Some(r);
        }
        if let Some(s) = d.sources {
            self.sources = s;
        }
        self.version = d.version;
    }
}

/// A validated Hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub node: String,
    pub machine_id: String,
    pub boot_id: String,
    pub version: String,
    pub instance_id: u64,
    pub heartbeat_interval_ms: u32,
    pub labels: BTreeMap<String, String>,
    /// The agent's effective configuration as JSON (no secrets), when it
    /// sent one that passed [`crate::validate::agent_config`].
    pub config_json: Option<String>,
}
