//! `reachmap test-port --udp`: the destination's agent binds a temporary UDP
//! socket that keeps what it receives; the source's agent sends it a
//! datagram with a nonce and listens for the ICMP error that may come back.
//! Nothing answers a UDP datagram by itself, so arrival is what the
//! destination saw, and a refusal is what the source was told.

use super::model::{Outcome, ProbeResult, UdpTarget};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Datagrams a temporary UDP socket keeps.
pub const MAX_KEPT: usize = 64;
/// Bytes of each datagram kept.
pub const KEPT_BYTES: usize = 64;
/// How many UDP sockets may be open at once.
pub const MAX_OPEN: usize = 16;
/// Sends of one nonce, spread over the timeout.
const SENDS: u32 = 3;

/// A datagram a temporary socket received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub source: IpAddr,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("UDP port {0} is in use")]
    PortInUse(u16),
    #[error("cannot bind UDP port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("{MAX_OPEN} temporary UDP sockets are already open")]
    TooMany,
    #[error("no temporary UDP socket on port {0}")]
    NotOpen(u16),
}

type Kept = Arc<Mutex<Vec<Received>>>;

/// The temporary UDP sockets of one agent, by port: each closes after its
/// time to live, on `close`, or at shutdown.
#[derive(Debug, Clone)]
pub struct UdpListeners {
    open: Arc<Mutex<HashMap<u16, (CancellationToken, Kept)>>>,
    shutdown: CancellationToken,
}

fn bind(port: u16) -> Result<std::net::UdpSocket, UdpError> {
    let err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            UdpError::PortInUse(port)
        } else {
            UdpError::Bind { port, source }
        }
    };
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let socket = match socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None) {
        Ok(s) => {
            s.set_only_v6(false).map_err(err)?;
            s.bind(&v6.into()).map(|()| s).map_err(err)?
        }
        // No IPv6 on this host: IPv4 only.
        Err(_) => {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .map_err(err)?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
                .map_err(err)?;
            s
        }
    };
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

/// An IPv4 peer of a dual-stack socket is `::ffff:a.b.c.d`: the IPv4 address.
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl UdpListeners {
    pub fn new(shutdown: CancellationToken) -> Self {
        UdpListeners {
            open: Arc::default(),
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, (CancellationToken, Kept)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds UDP `port` on every address for at most `ttl`, keeping what
    /// arrives.
    pub fn open(&self, port: u16, ttl: Duration) -> Result<u16, UdpError> {
        if self.lock().len() >= MAX_OPEN {
            return Err(UdpError::TooMany);
        }
        let std_socket = bind(port)?;
        let socket =
            UdpSocket::from_std(std_socket).map_err(|source| UdpError::Bind { port, source })?;
        let stop = self.shutdown.child_token();
        let kept: Kept = Arc::default();
        {
            let mut open = self.lock();
            if open.len() >= MAX_OPEN {
                return Err(UdpError::TooMany);
            }
            open.insert(port, (stop.clone(), kept.clone()));
        }
        let registry = self.open.clone();
        tokio::spawn(async move {
            tracing::info!(
                port,
                ttl_ms = ttl.as_millis() as u64,
                "temporary UDP socket open"
            );
            let _ = tokio::time::timeout(ttl, receive(&socket, &kept, &stop)).await;
            let mut open = registry.lock().unwrap_or_else(|p| p.into_inner());
            // Only our own entry: the port may have been closed and reopened.
            if open.get(&port).is_some_and(|(_, k)| Arc::ptr_eq(k, &kept)) {
                open.remove(&port);
            }
            tracing::info!(port, "temporary UDP socket closed");
        });
        Ok(port)
    }

    /// Closes the socket on `port` now; what it received.
    pub fn close(&self, port: u16) -> Result<Vec<Received>, UdpError> {
        let (stop, kept) = self.lock().remove(&port).ok_or(UdpError::NotOpen(port))?;
        stop.cancel();
        let got = kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(got)
    }
}

async fn receive(socket: &UdpSocket, kept: &Kept, stop: &CancellationToken) {
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                    if k.len() < MAX_KEPT {
                        k.push(Received {
                            source: plain(from.ip()),
                            payload: buf[..n.min(KEPT_BYTES)].to_vec(),
                        });
                    }
                }
                // An ICMP error for something this socket never sent, or
                // no memory: wait a moment and go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// What an errno from a connected UDP socket says came back.
pub fn outcome_of(e: &io::Error) -> Option<Outcome> {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Some(Outcome::Refused),
        Some(libc::EHOSTUNREACH) | Some(libc::EACCES) | Some(libc::EPERM) => {
            Some(Outcome::Unreachable)
        }
        Some(libc::ENETUNREACH) => Some(Outcome::NoRoute),
        _ => None,
    }
}

/// Sends `nonce` to `to` a few times within `timeout`: `Refused` when an
/// ICMP port unreachable came back, `Unreachable` for another ICMP
/// unreachable or the local firewall, `NoRoute`, or `Open` when nothing did.
pub async fn send(to: SocketAddr, nonce: &[u8], timeout: Duration) -> Outcome {
    let local: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return outcome_of(&e).unwrap_or(Outcome::Unreachable),
    };
    // Connected, so the kernel hands this socket the ICMP errors for it.
    if let Err(e) = socket.connect(to).await {
        return outcome_of(&e).unwrap_or(Outcome::Unreachable);
    }
    let gap = timeout / SENDS;
    let mut buf = [0u8; 64];
    for _ in 0..SENDS {
        if let Err(e) = socket.send(nonce).await
            && let Some(o) = outcome_of(&e)
        {
            return o;
        }
        // An answer (a service that echoes) or nothing in time says
        // nothing; an error is what came back.
        if let Ok(Err(e)) = tokio::time::timeout(gap, socket.recv(&mut buf)).await
            && let Some(o) = outcome_of(&e)
        {
            return o;
        }
    }
    Outcome::Open
}

/// One probe of a declared UDP service: the datagram sent a few times
/// within `timeout` on a connected socket. A reply is `Open` (with its
/// round trip), an ICMP error what it says; silence is `Timeout` for a
/// service that answers and `Open` for one that does not — where only an
/// error can show that the datagram did not get through.
pub async fn probe(to: SocketAddr, target: &UdpTarget, timeout: Duration) -> ProbeResult {
    let start = tokio::time::Instant::now();
    let local: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let failed =
        |e: &io::Error| ProbeResult::new(outcome_of(e).unwrap_or(Outcome::Unreachable), None);
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    if let Err(e) = socket.connect(to).await {
        return failed(&e);
    }
    let gap = timeout / SENDS;
    let mut buf = [0u8; 2048];
    for _ in 0..SENDS {
        if let Err(e) = socket.send(&target.payload).await
            && let Some(o) = outcome_of(&e)
        {
            return ProbeResult::new(o, Some(start.elapsed()));
        }
        match tokio::time::timeout(gap, socket.recv(&mut buf)).await {
            Ok(Ok(_)) => return ProbeResult::new(Outcome::Open, Some(start.elapsed())),
            Ok(Err(e)) => {
                if let Some(o) = outcome_of(&e) {
                    return ProbeResult::new(o, Some(start.elapsed()));
                }
            }
            Err(_elapsed) => {}
        }
    }
    ProbeResult::new(
        if target.expect_reply {
            Outcome::Timeout
        } else {
            Outcome::Open
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_socket_is_its_ipv4_address() {
        let mapped: IpAddr = "::ffff:198.18.0.11".parse().expect("ip");
        assert_eq!(plain(mapped), "198.18.0.11".parse::<IpAddr>().expect("ip"));
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(plain(v6), v6);
    }

    #[test]
    fn errnos_say_what_came_back() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(outcome_of(&e(libc::ECONNREFUSED)), Some(Outcome::Refused));
        assert_eq!(
            outcome_of(&e(libc::EHOSTUNREACH)),
            Some(Outcome::Unreachable)
        );
        assert_eq!(outcome_of(&e(libc::ENETUNREACH)), Some(Outcome::NoRoute));
        assert_eq!(outcome_of(&e(libc::EAGAIN)), None);
    }

    #[tokio::test]
    async fn a_datagram_to_an_open_socket_is_kept_and_a_closed_port_refuses() {
        let udp = UdpListeners::new(CancellationToken::new());
        // A free port: bind one, let it go, use it.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        udp.open(port, Duration::from_secs(5)).expect("open");
        let to: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        assert_eq!(
            send(to, b"nonce-1", Duration::from_millis(300)).await,
            Outcome::Open
        );
        let got = udp.close(port).expect("close");
        assert!(
            got.iter()
                .any(|r| r.payload == b"nonce-1" && r.source == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{got:?}"
        );
        assert!(matches!(udp.close(port), Err(UdpError::NotOpen(_))));
        // Nothing listens now: loopback answers with port unreachable.
        assert_eq!(
            send(to, b"nonce-2", Duration::from_millis(300)).await,
            Outcome::Refused
        );
    }

    #[tokio::test]
    async fn a_service_probe_tells_a_reply_silence_and_a_refusal_apart() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let echo_at = echo.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 600];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let silent_at = silent.local_addr().expect("addr");
        let t = |expect_reply| UdpTarget {
            payload: b"probe".to_vec(),
            expect_reply,
        };
        let timeout = Duration::from_millis(300);
        let r = probe(echo_at, &t(true), timeout).await;
        assert_eq!(r.outcome, Outcome::Open);
        assert!(r.rtt.is_some());
        assert_eq!(
            probe(silent_at, &t(true), timeout).await.outcome,
            Outcome::Timeout
        );
        let quiet = probe(silent_at, &t(false), timeout).await;
        assert_eq!((quiet.outcome, quiet.rtt), (Outcome::Open, None));
        drop(silent);
        assert_eq!(
            probe(silent_at, &t(false), timeout).await.outcome,
            Outcome::Refused
        );
    }
}
