//! The collector's own model of a node's facts, validated from the wire.

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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeFacts {
    pub version: u64,
    pub host: HostInfo,
    /// By interface index.
    pub interfaces: BTreeMap<u32, Interface>,
    pub routes: Vec<Route>,
}

impl NodeFacts {
    pub fn addresses(&self) -> impl Iterator<Item = &Addr> {
        self.interfaces.values().flat_map(|i| i.addresses.iter())
    }
}

/// A validated Delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactsDelta {
    pub base_version: u64,
    pub version: u64,
    pub upserted: Vec<Interface>,
    pub removed: Vec<u32>,
    pub routes: Option<Vec<Route>>,
    pub host: Option<HostInfo>,
}

impl NodeFacts {
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
}
