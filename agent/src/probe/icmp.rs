//! ICMP echo probes. An unprivileged ping socket (`SOCK_DGRAM`,
//! `IPPROTO_ICMP`) is used where `net.ipv4.ping_group_range` allows it; else
//! a raw socket (needs CAP_NET_RAW). Replies are matched by identifier and
//! sequence number (the kernel does it for ping sockets); an ICMP error
//! naming our echo (destination unreachable, time exceeded) is
//! `Unreachable`; no answer in time is `Timeout`.

use super::model::{Outcome, ProbeResult};
use super::tcp;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use tokio::io::Interest;
use tokio::time::Instant;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const UNREACHABLE_V4: u8 = 3;
const TIME_EXCEEDED_V4: u8 = 11;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const UNREACHABLE_V6: u8 = 1;
const TIME_EXCEEDED_V6: u8 = 3;
const PAYLOAD: &[u8; 8] = b"reachmap";

static SEQUENCE: AtomicU16 = AtomicU16::new(1);

/// What came back for our echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Echo,
    /// An ICMP error about our echo, with its type and code.
    Error {
        kind: u8,
        code: u8,
    },
}

/// How the packets the socket reads start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Ping socket (v4 or v6) or raw ICMPv6 socket: the ICMP header first.
    Icmp { v6: bool },
    /// Raw ICMPv4 socket: the IPv4 header first.
    Ipv4Header,
}

pub async fn probe(addr: IpAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    match tokio::time::timeout(timeout, echo(addr)).await {
        Err(_elapsed) => ProbeResult::new(Outcome::Timeout, None),
        Ok(Ok(Reply::Echo)) => ProbeResult::new(Outcome::Open, Some(start.elapsed())),
        Ok(Ok(Reply::Error { .. })) => {
            ProbeResult::new(Outcome::Unreachable, Some(start.elapsed()))
        }
        Ok(Err(e)) => ProbeResult::new(tcp::classify(&e), None),
    }
}

async fn echo(addr: IpAddr) -> io::Result<Reply> {
    let v6 = addr.is_ipv6();
    let (socket, framing) = open(v6)?;
    socket.set_nonblocking(true)?;
    let target = SockAddr::from(SocketAddr::new(addr, 0));
    let ping_socket = socket.r#type()? == Type::DGRAM;
    if ping_socket {
        // Connected, so the kernel passes only this peer's replies, and with
        // IP(V6)_RECVERR its ICMP errors come back as the socket's error.
        socket.connect(&target)?;
        if v6 {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6RecvErr, &true)?;
        } else {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4RecvErr, &true)?;
        }
    }
    let id: u16 = rand::random();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let packet = echo_request(v6, id, seq);
    // A datagram socket as far as tokio is concerned: send and receive
    // whole packets, readiness from the reactor.
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
    socket.send_to(&packet, SocketAddr::new(addr, 0)).await?;
    let mut buf = [0u8; 1_500];
    // A ping socket's identifier is its local port, rewritten by the kernel:
    // match the sequence only (the socket sees only its own replies).
    let want_id = (!ping_socket).then_some(id);
    let interest = Interest::READABLE | Interest::ERROR;
    loop {
        let ready = socket.ready(interest).await?;
        // `try_io` needs the one interest that fired: with both it sees no
        // readiness and would not even try.
        let fired = if ready.is_readable() {
            Interest::READABLE
        } else {
            Interest::ERROR
        };
        let fd = socket.as_raw_fd();
        let read = socket.try_io(fired, || {
            nix::sys::socket::recv(fd, &mut buf, nix::sys::socket::MsgFlags::empty())
                .map_err(io::Error::from)
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if let Some(reply) = parse_reply(&buf[..n], framing, addr, want_id, seq) {
            return Ok(reply);
        }
    }
}

/// A ping socket when the kernel allows it, else a raw socket.
fn open(v6: bool) -> io::Result<(Socket, Framing)> {
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => Ok((s, Framing::Icmp { v6 })),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(protocol)) {
            Ok(s) => Ok((
                s,
                if v6 {
                    Framing::Icmp { v6 }
                } else {
                    Framing::Ipv4Header
                },
            )),
            Err(raw) => Err(io::Error::new(
                raw.kind(),
                format!("no ICMP socket: ping socket: {dgram}; raw socket: {raw}"),
            )),
        },
    }
}

/// An echo request with the checksum filled in (the kernel recomputes it
/// for ping sockets and ICMPv6).
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + PAYLOAD.len());
    p.push(if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 });
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if !v6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` answers our echo (`id` when the socket does not filter
/// by it, and `seq`) to `peer`. Anything else on the socket is `None`.
pub fn parse_reply(
    packet: &[u8],
    framing: Framing,
    peer: IpAddr,
    id: Option<u16>,
    seq: u16,
) -> Option<Reply> {
    let (icmp, v6) = match framing {
        Framing::Icmp { v6 } => (packet, v6),
        Framing::Ipv4Header => {
            let (header_len, source) = ipv4_header(packet)?;
            let icmp = packet.get(header_len..)?;
            // An echo reply must come from the peer; errors come from any hop.
            if icmp.first() == Some(&ECHO_REPLY_V4) && IpAddr::from(source) != peer {
                return None;
            }
            (icmp, false)
        }
    };
    let (&kind, rest) = icmp.split_first()?;
    let &code = rest.first()?;
    let (reply, error, exceeded) = if v6 {
        (ECHO_REPLY_V6, UNREACHABLE_V6, TIME_EXCEEDED_V6)
    } else {
        (ECHO_REPLY_V4, UNREACHABLE_V4, TIME_EXCEEDED_V4)
    };
    let matches = |echo: &[u8]| {
        let got_id = u16::from_be_bytes([*echo.get(4)?, *echo.get(5)?]);
        let got_seq = u16::from_be_bytes([*echo.get(6)?, *echo.get(7)?]);
        Some(id.is_none_or(|id| id == got_id) && got_seq == seq)
    };
    if kind == reply {
        return matches(icmp)?.then_some(Reply::Echo);
    }
    if kind == error || kind == exceeded {
        // The error quotes our datagram: its IP header, then our echo.
        let quoted = icmp.get(8..)?;
        let inner = if v6 {
            quoted.get(40..)?
        } else {
            let (header_len, _) = ipv4_header(quoted)?;
            quoted.get(header_len..)?
        };
        let request = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
        if inner.first() == Some(&request) && matches(inner)? {
            return Some(Reply::Error { kind, code });
        }
    }
    None
}

/// An IPv4 header's length and source address.
fn ipv4_header(packet: &[u8]) -> Option<(usize, [u8; 4])> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let len = usize::from(first & 0x0f) * 4;
    if len < 20 || packet.len() < len {
        return None;
    }
    let source: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    Some((len, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[198, 18, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    fn reply_to(request: &[u8], v6: bool) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
        r
    }

    #[test]
    fn checksum_verifies() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(checksum(&[0x45, 0x00, 0x00]), !0x4500u16);
    }

    #[test]
    fn raw_v4_reply_matches_id_seq_and_source() {
        let peer: IpAddr = "198.18.0.2".parse().expect("addr");
        let reply = reply_to(&echo_request(false, 9, 5), false);
        let framing = Framing::Ipv4Header;
        let pkt = ipv4([198, 18, 0, 2], &reply);
        assert_eq!(
            parse_reply(&pkt, framing, peer, Some(9), 5),
            Some(Reply::Echo)
        );
        assert_eq!(parse_reply(&pkt, framing, peer, Some(8), 5), None);
        assert_eq!(parse_reply(&pkt, framing, peer, Some(9), 6), None);
        let other = ipv4([198, 18, 0, 3], &reply);
        assert_eq!(parse_reply(&other, framing, peer, Some(9), 5), None);
        // Our own request, seen on a raw socket over loopback.
        let own = ipv4([198, 18, 0, 2], &echo_request(false, 9, 5));
        assert_eq!(parse_reply(&own, framing, peer, Some(9), 5), None);
    }

    #[test]
    fn raw_v4_unreachable_quoting_our_echo() {
        let peer: IpAddr = "198.18.0.2".parse().expect("addr");
        let quoted = ipv4([198, 18, 0, 1], &echo_request(false, 9, 5));
        let mut icmp = vec![UNREACHABLE_V4, 13, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let pkt = ipv4([198, 18, 0, 254], &icmp);
        assert_eq!(
            parse_reply(&pkt, Framing::Ipv4Header, peer, Some(9), 5),
            Some(Reply::Error { kind: 3, code: 13 })
        );
        assert_eq!(
            parse_reply(&pkt, Framing::Ipv4Header, peer, Some(1), 5),
            None
        );
    }

    #[test]
    fn ping_socket_and_v6_framing() {
        let peer: IpAddr = "::1".parse().expect("addr");
        let reply = reply_to(&echo_request(true, 3, 4), true);
        let framing = Framing::Icmp { v6: true };
        assert_eq!(
            parse_reply(&reply, framing, peer, None, 4),
            Some(Reply::Echo)
        );
        assert_eq!(parse_reply(&reply, framing, peer, None, 5), None);
        let mut err = vec![UNREACHABLE_V6, 1, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&[0x60; 40]);
        err.extend_from_slice(&echo_request(true, 3, 4));
        assert_eq!(
            parse_reply(&err, framing, peer, Some(3), 4),
            Some(Reply::Error { kind: 1, code: 1 })
        );
    }

    #[test]
    fn truncated_packets_are_ignored() {
        let peer: IpAddr = "198.18.0.2".parse().expect("addr");
        for len in 0..30 {
            let pkt = ipv4(
                [198, 18, 0, 2],
                &reply_to(&echo_request(false, 9, 5), false),
            );
            let _ = parse_reply(
                &pkt[..len.min(pkt.len())],
                Framing::Ipv4Header,
                peer,
                Some(9),
                5,
            );
            let _ = parse_reply(
                &pkt[..len.min(pkt.len())],
                Framing::Icmp { v6: false },
                peer,
                None,
                5,
            );
        }
    }
}
