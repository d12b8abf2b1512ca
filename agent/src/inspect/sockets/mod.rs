//! Sockets inspector: netlink sock_diag dumps plus /proc fd inode maps.
//!
//! `diag` parses what the kernel sends (pure, fuzzed, tested on captured
//! bytes) and runs the dumps; `procfd` finds the processes holding a socket
//! and caches them. `SocketReader` joins the two:
//!
//! - `read_listeners` asks the kernel for LISTEN (TCP) and unconnected (UDP)
//!   sockets only: the kernel filters by state and never walks the
//!   established table, so it stays cheap on a busy host and can run every
//!   few hundred milliseconds.
//! - `read_all` also walks every other TCP and UDP socket, counting them
//!   without keeping them.

mod diag;
mod procfd;

pub use diag::{
    AF_INET, AF_INET6, ALL_STATES, DumpStatus, IPPROTO_TCP, IPPROTO_UDP, InetSocket, TCP_CLOSE,
    TCP_ESTABLISHED, TCP_LISTEN, TCP_TIME_WAIT, dump_request, parse_inet_diag, parse_inet_diag_msg,
};
pub use procfd::{cgroup_path, parse_fd_link, unit_from_cgroup};

use crate::facts::sockets::{BindScope, Listener, Protocol, SocketFacts, SocketSummary};
use diag::DiagSocket;
use procfd::Owners;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("sock_diag: {what} needs {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("sock_diag: netlink message length {len} is shorter than its header")]
    BadMessageLength { len: usize },
    #[error("sock_diag: attribute {kind} has invalid length {len}")]
    BadAttribute { kind: u16, len: usize },
    #[error("sock_diag: unexpected address family {family}")]
    BadFamily { family: u8 },
    #[error("sock_diag: unexpected netlink message type {kind}")]
    UnexpectedMessage { kind: u16 },
    #[error("sock_diag: the kernel reported overrun; the dump lost messages")]
    Overrun,
    #[error("sock_diag: the kernel refused the dump: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error("sock_diag: a {size}-byte datagram does not fit the receive buffer")]
    DatagramTooLarge { size: usize },
    #[error("sock_diag socket: {context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// 127.0.0.0/8 and `::1` (and their v4-mapped forms) are loopback-only;
/// `0.0.0.0` and `::` accept on every address; anything else is one address.
pub fn bind_scope(ip: IpAddr) -> BindScope {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        BindScope::Loopback
    } else if ip.is_unspecified() {
        BindScope::Any
    } else {
        BindScope::Address
    }
}

/// Whether a UDP socket is a "listener": unconnected, no remote peer.
pub fn is_udp_listener(socket: &InetSocket) -> bool {
    socket.state == TCP_CLOSE && socket.remote.port() == 0
}

/// Reads the host's sockets. Keeps the netlink socket (bound to the network
/// namespace of the thread of the first read) and the owner caches between
/// reads.
pub struct SocketReader {
    owners: Owners,
    diag: Option<DiagSocket>,
    /// Established counts of the last `read_all`, by listener inode.
    established: HashMap<u64, u32>,
}

impl SocketReader {
    pub fn new(procfs: impl Into<PathBuf>) -> Self {
        Self {
            owners: Owners::new(procfs.into()),
            diag: None,
            established: HashMap::new(),
        }
    }

    /// How many times the reader has scanned /proc for socket owners (it
    /// does only when a listener appears that it has not seen before).
    pub fn proc_scans(&self) -> u64 {
        self.owners.scans()
    }

    /// TCP and UDP listeners, IPv4 and IPv6. `established` is the count of
    /// the last `read_all` (0 before the first).
    pub fn read_listeners(&mut self) -> Result<Vec<Listener>, SocketError> {
        let mut raw = Vec::new();
        self.with_diag(|diag| {
            for family in [AF_INET, AF_INET6] {
                diag.dump(family, IPPROTO_TCP, 1 << TCP_LISTEN, |s| {
                    raw.push((Protocol::Tcp, *s));
                })?;
                diag.dump(family, IPPROTO_UDP, 1 << TCP_CLOSE, |s| {
                    if is_udp_listener(s) {
                        raw.push((Protocol::Udp, *s));
                    }
                })?;
            }
            Ok(())
        })?;
        let mut listeners = self.listeners_from(raw)?;
        for l in &mut listeners {
            l.established = self.established.get(&l.inode).copied().unwrap_or(0);
        }
        Ok(listeners)
    }

    /// Listeners with their established counts, and counts by state.
    pub fn read_all(&mut self) -> Result<SocketFacts, SocketError> {
        let mut raw = Vec::new();
        let mut summary = SocketSummary::default();
        self.with_diag(|diag| {
            for family in [AF_INET, AF_INET6] {
                diag.dump(family, IPPROTO_TCP, 1 << TCP_LISTEN, |s| {
                    raw.push((Protocol::Tcp, *s));
                })?;
                diag.dump(family, IPPROTO_UDP, ALL_STATES, |s| {
                    summary.udp_total += 1;
                    if is_udp_listener(s) {
                        raw.push((Protocol::Udp, *s));
                    }
                })?;
            }
            Ok(())
        })?;
        self.owners.revalidate();
        let mut listeners = self.listeners_from(raw)?;
        summary.tcp_total = listeners
            .iter()
            .filter(|l| l.protocol == Protocol::Tcp)
            .count()
            .try_into()
            .unwrap_or(u32::MAX);

        // TCP listeners by port, to attribute established sockets to them.
        let mut by_port: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, l) in listeners.iter().enumerate() {
            if l.protocol == Protocol::Tcp {
                by_port.entry(l.port).or_default().push(i);
            }
        }
        let mut counts = vec![0u32; listeners.len()];
        self.with_diag(|diag| {
            for family in [AF_INET, AF_INET6] {
                diag.dump(family, IPPROTO_TCP, ALL_STATES & !(1 << TCP_LISTEN), |s| {
                    summary.tcp_total += 1;
                    match s.state {
                        TCP_ESTABLISHED => {
                            summary.tcp_established += 1;
                            if let Some(candidates) = by_port.get(&s.local.port()) {
                                attribute(&listeners, candidates, s.local, &mut counts);
                            }
                        }
                        TCP_TIME_WAIT => summary.tcp_time_wait += 1,
                        _ => {}
                    }
                })?;
            }
            Ok(())
        })?;
        self.established.clear();
        for (l, count) in listeners.iter_mut().zip(counts) {
            l.established = count;
            if l.protocol == Protocol::Tcp {
                self.established.insert(l.inode, count);
            }
        }
        Ok(SocketFacts { listeners, summary })
    }

    /// Runs dumps on the netlink socket, opening it first if needed. After
    /// an error the socket is dropped (it may hold the rest of a dump) and
    /// the next read opens a fresh one.
    fn with_diag(
        &mut self,
        f: impl FnOnce(&mut DiagSocket) -> Result<(), SocketError>,
    ) -> Result<(), SocketError> {
        let diag = match &mut self.diag {
            Some(d) => d,
            None => self.diag.insert(DiagSocket::open()?),
        };
        let result = f(diag);
        if result.is_err() {
            self.diag = None;
        }
        result
    }

    /// Listeners with their owners, sorted; evicts owners of sockets gone.
    fn listeners_from(
        &mut self,
        raw: Vec<(Protocol, InetSocket)>,
    ) -> Result<Vec<Listener>, SocketError> {
        let inodes: Vec<u64> = raw
            .iter()
            .map(|(_, s)| u64::from(s.inode))
            .filter(|&i| i != 0)
            .collect();
        self.owners.resolve(&inodes)?;
        self.owners
            .retain(&inodes.iter().copied().collect::<HashSet<_>>());
        let mut listeners: Vec<Listener> = raw
            .into_iter()
            .map(|(protocol, s)| {
                let tcp = protocol == Protocol::Tcp;
                Listener {
                    protocol,
                    address: s.local.ip(),
                    port: s.local.port(),
                    scope: bind_scope(s.local.ip()),
                    v6only: s.v6only,
                    inode: u64::from(s.inode),
                    uid: s.uid,
                    accept_queue: if tcp { s.rqueue } else { 0 },
                    accept_queue_limit: if tcp { s.wqueue } else { 0 },
                    established: 0,
                    processes: self.owners.processes_of(u64::from(s.inode)),
                    interface_index: (s.interface != 0).then_some(s.interface),
                }
            })
            .collect();
        listeners.sort_by_key(Listener::sort_key);
        Ok(listeners)
    }
}

/// Counts an established socket for the listeners that accepted it: those
/// bound to its exact local address if any, else the any-address listeners
/// of its family (an IPv4 peer of a dual-stack `::` listener shows up as an
/// IPv6 socket with a v4-mapped address). An SO_REUSEPORT group shares the
/// count: the kernel does not say which member accepted.
fn attribute(listeners: &[Listener], candidates: &[usize], local: SocketAddr, counts: &mut [u32]) {
    let exact = |l: &Listener| l.address == local.ip();
    let any = |l: &Listener| l.address.is_unspecified() && l.address.is_ipv4() == local.is_ipv4();
    let has_exact = candidates
        .iter()
        .any(|&i| listeners.get(i).is_some_and(exact));
    for &i in candidates {
        let chosen = listeners
            .get(i)
            .is_some_and(|l| if has_exact { exact(l) } else { any(l) });
        if chosen && let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
}

#[cfg(test)]
mod tests;
