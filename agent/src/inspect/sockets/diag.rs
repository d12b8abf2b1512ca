//! sock_diag: the dump request, the pure parser of the kernel's answer, and
//! the synchronous netlink socket that carries both.
//!
//! The parser reads `inet_diag_msg` records straight from the datagram into a
//! `Copy` struct and hands each to a callback: a dump of 20,000 established
//! sockets allocates nothing per socket.

use super::SocketError;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_TIME_WAIT: u8 = 6;
/// For UDP: an unconnected socket.
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

/// Every state bit the kernel knows (`TCP_MAX_STATES` is 13).
pub const ALL_STATES: u32 = (1 << 13) - 1;

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_SKV6ONLY: u16 = 11;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Size of the receive buffer: the kernel fills dump datagrams up to 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// One socket as `inet_diag_msg` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetSocket {
    /// `TCP_*` state; UDP uses `TCP_CLOSE` (unconnected) and `TCP_ESTABLISHED`.
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `sk_bound_dev_if`: 0 when not bound to an interface.
    pub interface: u32,
    /// Listening TCP: accept queue length. Otherwise: bytes in the receive queue.
    pub rqueue: u32,
    /// Listening TCP: backlog limit. Otherwise: bytes in the send queue.
    pub wqueue: u32,
    pub uid: u32,
    /// 0 for time-wait and request sockets.
    pub inode: u32,
    /// `INET_DIAG_SKV6ONLY`, sent for IPv6 sockets in LISTEN or CLOSE.
    pub v6only: Option<bool>,
}

/// Whether a dump continues in another datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpStatus {
    More,
    Done,
}

/// Parses one datagram of a sock_diag dump, calling `on_socket` for each
/// socket in it. `Done` once the datagram carried NLMSG_DONE; a kernel error
/// (NLMSG_ERROR, or a negative code in NLMSG_DONE) is returned as an error.
pub fn parse_inet_diag(
    datagram: &[u8],
    mut on_socket: impl FnMut(&InetSocket),
) -> Result<DumpStatus, SocketError> {
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDR_LEN {
            return Err(truncated("netlink header", NLMSG_HDR_LEN, rest.len()));
        }
        let len = u32_at(rest, 0) as usize;
        let kind = u16_at(rest, 4);
        if len < NLMSG_HDR_LEN {
            return Err(SocketError::BadMessageLength { len });
        }
        if len > rest.len() {
            return Err(truncated("netlink message", len, rest.len()));
        }
        let payload = &rest[NLMSG_HDR_LEN..len];
        match kind {
            SOCK_DIAG_BY_FAMILY => on_socket(&parse_inet_diag_msg(payload)?),
            NLMSG_DONE => {
                // A dump that fails part-way ends with a negative errno here.
                if payload.len() >= 4 {
                    let code = i32_at(payload, 0);
                    if code < 0 {
                        return Err(SocketError::Kernel {
                            errno: code.saturating_neg(),
                        });
                    }
                }
                return Ok(DumpStatus::Done);
            }
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(truncated("netlink error", 4, payload.len()));
                }
                let code = i32_at(payload, 0);
                // Code 0 is an acknowledgement, which a dump does not expect
                // but does no harm.
                if code != 0 {
                    return Err(SocketError::Kernel {
                        errno: code.saturating_neg(),
                    });
                }
            }
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => return Err(SocketError::Overrun),
            other => return Err(SocketError::UnexpectedMessage { kind: other }),
        }
        let aligned = align4(len).min(rest.len());
        rest = &rest[aligned..];
    }
    Ok(DumpStatus::More)
}

/// Parses the payload of one SOCK_DIAG_BY_FAMILY message.
pub fn parse_inet_diag_msg(payload: &[u8]) -> Result<InetSocket, SocketError> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(truncated("inet_diag_msg", INET_DIAG_MSG_LEN, payload.len()));
    }
    let family = payload[0];
    let sport = u16::from_be_bytes([payload[4], payload[5]]);
    let dport = u16::from_be_bytes([payload[6], payload[7]]);
    let (src, dst) = match family {
        AF_INET => (
            IpAddr::V4(ipv4_at(payload, 8)),
            IpAddr::V4(ipv4_at(payload, 24)),
        ),
        AF_INET6 => (
            IpAddr::V6(ipv6_at(payload, 8)),
            IpAddr::V6(ipv6_at(payload, 24)),
        ),
        other => return Err(SocketError::BadFamily { family: other }),
    };
    let mut socket = InetSocket {
        state: payload[1],
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        interface: u32_at(payload, 40),
        rqueue: u32_at(payload, 56),
        wqueue: u32_at(payload, 60),
        uid: u32_at(payload, 64),
        inode: u32_at(payload, 68),
        v6only: None,
    };
    let mut attrs = &payload[INET_DIAG_MSG_LEN..];
    while !attrs.is_empty() {
        if attrs.len() < 4 {
            return Err(truncated("netlink attribute", 4, attrs.len()));
        }
        let len = usize::from(u16_at(attrs, 0));
        let kind = u16_at(attrs, 2) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return Err(SocketError::BadAttribute { kind, len });
        }
        if kind == INET_DIAG_SKV6ONLY {
            if len < 5 {
                return Err(SocketError::BadAttribute { kind, len });
            }
            socket.v6only = Some(attrs[4] != 0);
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Ok(socket)
}

/// The bytes of a dump request for one family and protocol, restricted to
/// the sockets whose state bit is set in `states` (the kernel filters, so a
/// LISTEN-only dump never walks the established table).
pub fn dump_request(family: u8, protocol: u8, states: u32, sequence: u32) -> Vec<u8> {
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::from_bits_retain(states),
        socket_id,
    });
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), request.into());
    packet.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    packet.header.sequence_number = sequence;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// A NETLINK_SOCK_DIAG socket, bound to the network namespace of the thread
/// that opened it, with its receive buffer.
pub struct DiagSocket {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

impl DiagSocket {
    pub fn open() -> Result<Self, SocketError> {
        let io = |context| move |source| SocketError::Io { context, source };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io("open"))?;
        socket.bind_auto().map_err(io("bind"))?;
        socket.connect(&NlAddr::new(0, 0)).map_err(io("connect"))?;
        Ok(Self {
            socket,
            buffer: vec![0; RECV_BUFFER],
            sequence: 0,
        })
    }

    /// Dumps the sockets of one family and protocol in `states`.
    pub fn dump(
        &mut self,
        family: u8,
        protocol: u8,
        states: u32,
        mut on_socket: impl FnMut(&InetSocket),
    ) -> Result<(), SocketError> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = dump_request(family, protocol, states, self.sequence);
        self.socket
            .send(&request, 0)
            .map_err(|source| SocketError::Io {
                context: "send",
                source,
            })?;
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buffer[..], libc::MSG_TRUNC)
                .map_err(|source| SocketError::Io {
                    context: "recv",
                    source,
                })?;
            if size > self.buffer.len() {
                return Err(SocketError::DatagramTooLarge { size });
            }
            let datagram = self.buffer.get(..size).unwrap_or_default();
            if parse_inet_diag(datagram, &mut on_socket)? == DumpStatus::Done {
                return Ok(());
            }
        }
    }
}

fn truncated(what: &'static str, need: usize, have: usize) -> SocketError {
    SocketError::Truncated { what, need, have }
}

fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

// Callers check lengths first; out-of-range reads yield 0 rather than panic.
fn bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(bytes(buf, at))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes(buf, at))
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(bytes(buf, at))
}

fn ipv4_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(bytes::<4>(buf, at))
}

fn ipv6_at(buf: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(bytes::<16>(buf, at))
}
