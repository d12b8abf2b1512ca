//! Where in the path a TCP connection stops, like tcptraceroute: SYNs to the
//! destination port with TTL 1, 2, 3…, each on its own socket with
//! IP_RECVERR, so the ICMP error a router sends back for it (time exceeded,
//! unreachable, administratively prohibited) is queued on that socket with
//! the router's address. No raw socket: the kernel matches the ICMP error
//! to the socket whose SYN it quotes. IPv4.
//!
//! `classify` and `conclude` are pure (and fuzzed); `trace` does the I/O.

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Most hops a trace goes.
pub const MAX_HOPS: u8 = 30;
/// Silent hops in a row after which a trace stops: nothing further will
/// answer once a hop drops the probe.
pub const SILENT_STOP: usize = 3;

/// `sock_extended_err.ee_origin` for an ICMP error.
const SO_EE_ORIGIN_ICMP: u8 = 2;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// What one hop did with the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// A router on the way: its TTL ran out there.
    TimeExceeded,
    /// An ICMP destination unreachable, with its code (1 host, 3 port,
    /// 9/10/13 administratively prohibited…).
    Unreachable(u8),
    /// The destination answered: the connection opened.
    Reached,
    /// The destination answered with a reset.
    Refused,
    /// Nothing came back in time.
    Silent,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::TimeExceeded => "time_exceeded",
            HopKind::Unreachable(_) => "unreachable",
            HopKind::Reached => "reached",
            HopKind::Refused => "refused",
            HopKind::Silent => "silent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub ttl: u8,
    /// Who answered: a router, or the destination.
    pub from: Option<IpAddr>,
    pub kind: HopKind,
    pub rtt: Option<Duration>,
}

/// What an ICMP error the kernel queued for a probe says, from the
/// `sock_extended_err` fields: `None` for anything but ICMP time exceeded
/// or destination unreachable.
pub fn classify(origin: u8, icmp_type: u8, code: u8) -> Option<HopKind> {
    if origin != SO_EE_ORIGIN_ICMP {
        return None;
    }
    match icmp_type {
        ICMP_TIME_EXCEEDED => Some(HopKind::TimeExceeded),
        ICMP_DEST_UNREACH => Some(HopKind::Unreachable(code)),
        _ => None,
    }
}

/// A trace's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conclusion {
    /// The destination answered (opened or reset).
    pub reached: bool,
    /// The last router that answered before the probe stopped: (ttl, address).
    pub last_answer: Option<(u8, IpAddr)>,
    /// A hop that sent an unreachable back: (ttl, address, code).
    pub rejected_by: Option<(u8, Option<IpAddr>, u8)>,
    /// The first hop from which nothing answered, when the trace ended silent.
    pub silent_from: Option<u8>,
}

/// Reads the hops, in TTL order, into where the probe stopped.
pub fn conclude(hops: &[Hop]) -> Conclusion {
    let mut c = Conclusion {
        reached: false,
        last_answer: None,
        rejected_by: None,
        silent_from: None,
    };
    for h in hops {
        match h.kind {
            HopKind::TimeExceeded => {
                if let Some(ip) = h.from {
                    c.last_answer = Some((h.ttl, ip));
                }
                c.silent_from = None;
            }
            HopKind::Reached | HopKind::Refused => {
                c.reached = true;
                c.silent_from = None;
                return c;
            }
            HopKind::Unreachable(code) => {
                c.rejected_by = Some((h.ttl, h.from, code));
                c.silent_from = None;
                return c;
            }
            HopKind::Silent => {
                c.silent_from.get_or_insert(h.ttl);
            }
        }
    }
    c
}

/// One probe with `ttl`: how it ended.
async fn hop(dst: SocketAddrV4, ttl: u8, timeout: Duration) -> std::io::Result<Hop> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    socket2::SockRef::from(&sock).set_ttl_v4(u32::from(ttl))?;
    setsockopt(&sock, sockopt::Ipv4RecvErr, &true)?;
    // The same socket, to read its error queue once `connect` has failed
    // (and consumed the socket).
    let errors = sock.as_fd().try_clone_to_owned()?;
    let started = Instant::now();
    let done = |kind, from| Hop {
        ttl,
        from,
        kind,
        rtt: Some(started.elapsed()),
    };
    let dst_ip = Some(IpAddr::V4(*dst.ip()));
    match tokio::time::timeout(timeout, sock.connect(SocketAddr::V4(dst))).await {
        Err(_) => Ok(Hop {
            ttl,
            from: None,
            kind: HopKind::Silent,
            rtt: None,
        }),
        Ok(Ok(_stream)) => Ok(done(HopKind::Reached, dst_ip)),
        Ok(Err(e)) => {
            // An ICMP error for the SYN is on the error queue, with who
            // sent it.
            if let Some((kind, from)) = queued_error(&errors) {
                return Ok(done(kind, from));
            }
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                return Ok(done(HopKind::Refused, dst_ip));
            }
            Err(e)
        }
    }
}

/// The ICMP error queued on the socket, if any: what it says and who sent it.
fn queued_error(fd: &OwnedFd) -> Option<(HopKind, Option<IpAddr>)> {
    let mut data = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
    let msg = recvmsg::<SockaddrIn>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::Ipv4RecvErr(ee, offender) = cmsg {
            let kind = classify(ee.ee_origin, ee.ee_type, ee.ee_code)?;
            let from =
                offender.map(|a| IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
            return Some((kind, from));
        }
    }
    None
}

/// Traces the TCP path to `dst`, `timeout` per hop, up to `max_hops`,
/// stopping at the destination, at an unreachable, or after `SILENT_STOP`
/// silent hops in a row.
pub async fn trace(dst: SocketAddr, max_hops: u8, timeout: Duration) -> Result<Vec<Hop>, String> {
    let SocketAddr::V4(dst) = dst else {
        return Err("trace is IPv4 only".into());
    };
    let mut hops = Vec::new();
    for ttl in 1..=max_hops.clamp(1, MAX_HOPS) {
        let h = hop(dst, ttl, timeout)
            .await
            .map_err(|e| format!("probe with TTL {ttl}: {e}"))?;
        let stop = matches!(
            h.kind,
            HopKind::Reached | HopKind::Refused | HopKind::Unreachable(_)
        );
        hops.push(h);
        let silent = hops
            .iter()
            .rev()
            .take_while(|h| h.kind == HopKind::Silent)
            .count();
        if stop || silent >= SILENT_STOP {
            break;
        }
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ttl: u8, kind: HopKind, from: &str) -> Hop {
        Hop {
            ttl,
            from: from.parse().ok(),
            kind,
            rtt: None,
        }
    }

    #[test]
    fn only_icmp_time_exceeded_and_unreachable_are_hops() {
        assert_eq!(classify(2, 11, 0), Some(HopKind::TimeExceeded));
        assert_eq!(classify(2, 3, 13), Some(HopKind::Unreachable(13)));
        assert_eq!(classify(2, 0, 0), None, "an echo reply");
        assert_eq!(classify(1, 11, 0), None, "a local error");
    }

    #[test]
    fn the_last_router_before_silence_is_where_it_stops() {
        let hops = [
            h(1, HopKind::TimeExceeded, "198.18.0.1"),
            h(2, HopKind::TimeExceeded, "198.18.9.1"),
            h(3, HopKind::Silent, ""),
            h(4, HopKind::Silent, ""),
        ];
        let c = conclude(&hops);
        assert!(!c.reached);
        assert_eq!(c.last_answer, Some((2, "198.18.9.1".parse().expect("ip"))));
        assert_eq!(c.silent_from, Some(3));
        assert_eq!(c.rejected_by, None);
    }

    #[test]
    fn a_silent_router_in_the_middle_is_not_the_end() {
        let hops = [
            h(1, HopKind::Silent, ""),
            h(2, HopKind::TimeExceeded, "198.18.9.1"),
            h(3, HopKind::Refused, "198.18.1.12"),
        ];
        let c = conclude(&hops);
        assert!(c.reached);
        assert_eq!(c.silent_from, None);
    }

    #[test]
    fn an_unreachable_names_who_rejected() {
        let hops = [
            h(1, HopKind::TimeExceeded, "198.18.0.1"),
            h(2, HopKind::Unreachable(13), "198.18.0.1"),
        ];
        let c = conclude(&hops);
        assert_eq!(c.rejected_by, Some((2, "198.18.0.1".parse().ok(), 13)));
    }

    #[tokio::test]
    async fn loopback_is_reached_at_the_first_hop() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let hops = trace(addr, 5, Duration::from_secs(1)).await.expect("trace");
        assert_eq!(hops.len(), 1, "{hops:?}");
        assert_eq!(hops[0].kind, HopKind::Reached);
        drop(l);
        let hops = trace(addr, 5, Duration::from_secs(1)).await.expect("trace");
        assert_eq!(hops[0].kind, HopKind::Refused, "{hops:?}");
    }
}
