//! Sockets: listeners with their bind scope and owning process, and
//! established-connection counts per listening port.

use serde::Serialize;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Who can reach a listener, judged from its bind address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindScope {
    /// 127.0.0.0/8, `::1` or `::ffff:127.x.y.z`: this host only.
    Loopback,
    /// `0.0.0.0` or `::`: every address of the host.
    Any,
    /// One specific address (of one interface, or not configured at all).
    Address,
}

/// A process holding a socket open.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Process {
    pub pid: u32,
    /// `/proc/PID/comm` (at most 15 bytes, as the kernel truncates it).
    pub name: String,
    /// The systemd unit (`nginx.service`, `session-3.scope`) or a container's
    /// best-effort name, from the cgroup path; `None` when there is none.
    pub unit: Option<String>,
    /// The cgroup path (v2 unified hierarchy, else systemd's v1 hierarchy).
    pub cgroup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub scope: BindScope,
    /// IPv6 sockets only: `Some(false)` on `::` also accepts IPv4.
    pub v6only: Option<bool>,
    pub inode: u64,
    pub uid: u32,
    /// TCP: connections waiting to be accepted. Always 0 for UDP.
    pub accept_queue: u32,
    /// TCP: the backlog the socket listens with (after the kernel's
    /// `somaxconn` cap). Always 0 for UDP.
    pub accept_queue_limit: u32,
    /// TCP: established connections this listener would have accepted
    /// (same port, same address or any-address listener of the family).
    /// Only `read_all` counts them; `read_listeners` leaves 0.
    pub established: u32,
    /// Sorted by pid; usually one, several for SO_REUSEPORT groups or
    /// forked workers; empty when no visible process holds it.
    pub processes: Vec<Process>,
    /// SO_BINDTODEVICE: the index of the interface the socket is bound to
    /// (`NetState::interface` names it).
    pub interface_index: Option<u32>,
}

/// Socket counts by state, over the whole namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketSummary {
    pub tcp_established: u32,
    pub tcp_time_wait: u32,
    /// Every TCP socket the kernel reports, listeners and time-wait included.
    pub tcp_total: u32,
    pub udp_total: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketFacts {
    /// Sorted by (protocol, port, address, inode).
    pub listeners: Vec<Listener>,
    pub summary: SocketSummary,
}

impl Listener {
    /// The order `SocketFacts::listeners` keeps.
    pub fn sort_key(&self) -> (Protocol, u16, IpAddr, u64) {
        (self.protocol, self.port, self.address, self.inode)
    }
}
