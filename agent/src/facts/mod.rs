//! The agent's own model of its host. Inspectors produce it, `diff` compares
//! two readings, and `wire` turns it into protocol messages; nothing here
//! knows about netlink or protobuf.

pub mod firewall;
pub mod kernel;
pub mod resources;
pub mod sockets;

use serde::Serialize;
use std::net::IpAddr;

/// Operational state of a link (RFC 2863, as the kernel reports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Universe,
    Site,
    Link,
    Host,
    Nowhere,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IfAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub scope: Scope,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// Lower-case hex with colons; `None` for links without one (loopback has zeros).
    pub mac: Option<String>,
    pub mtu: u32,
    pub admin_up: bool,
    pub oper_state: OperState,
    /// IFLA_INFO_KIND (`veth`, `bridge`, ...); `None` for physical devices.
    pub kind: Option<String>,
    /// Sorted, so two readings of the same host compare equal.
    pub addresses: Vec<IfAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub interface: Option<String>,
    pub preferred_source: Option<IpAddr>,
    pub metric: u32,
    pub table: u32,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    pub fn destination_cidr(&self) -> String {
        format!("{}/{}", self.destination, self.prefix_len)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub os: String,
    pub uptime_seconds: u64,
    pub boot_time_unix_seconds: i64,
}

/// Everything one reading of the host's network state found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetState {
    /// Sorted by index.
    pub interfaces: Vec<Interface>,
    /// Sorted.
    pub routes: Vec<Route>,
}

impl NetState {
    pub fn interface(&self, index: u32) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.index == index)
    }
}
