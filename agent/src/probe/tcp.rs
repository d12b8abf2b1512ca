//! TCP connect probes: open means the three-way handshake completed. The
//! connection is closed at once with a normal FIN (nothing unread, no
//! linger), so the peer never sees a reset.

use super::model::{Outcome, ProbeResult};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One connect, classified. A connection the peer closes right away is still
/// open: the path and the listener are there.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    match connect(addr, timeout).await {
        Ok(stream) => {
            let rtt = start.elapsed();
            drop(stream);
            ProbeResult::new(Outcome::Open, Some(rtt))
        }
        Err(outcome) => ProbeResult::new(outcome, answered(outcome).then(|| start.elapsed())),
    }
}

/// Connects within `timeout`, or says how it failed.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Outcome> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_elapsed) => Err(Outcome::Timeout),
    }
}

/// Failures that came back from the path (an RST or an ICMP error), so their
/// time is a round trip worth reporting.
fn answered(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Refused | Outcome::Unreachable | Outcome::Reset
    )
}

/// Maps a connect (or read/write) error to an outcome. ICMP errors reach the
/// socket as errnos: port unreachable as ECONNREFUSED, host and
/// admin-prohibited (filtered) as EHOSTUNREACH, net unreachable as
/// ENETUNREACH. A local firewall dropping the SYN shows as EPERM.
pub fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => return Outcome::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => return Outcome::Reset,
        io::ErrorKind::TimedOut => return Outcome::Timeout,
        _ => {}
    }
    match e.raw_os_error() {
        Some(libc::ENETUNREACH | libc::ENETDOWN | libc::EADDRNOTAVAIL) => Outcome::NoRoute,
        Some(libc::ETIMEDOUT) => Outcome::Timeout,
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::ECONNRESET | libc::EPIPE) => Outcome::Reset,
        _ => Outcome::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> Outcome {
        classify(&io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn errnos_map_to_outcomes() {
        assert_eq!(os(libc::ECONNREFUSED), Outcome::Refused);
        assert_eq!(os(libc::ETIMEDOUT), Outcome::Timeout);
        assert_eq!(os(libc::EHOSTUNREACH), Outcome::Unreachable);
        assert_eq!(os(libc::EHOSTDOWN), Outcome::Unreachable);
        assert_eq!(os(libc::EACCES), Outcome::Unreachable);
        assert_eq!(os(libc::EPERM), Outcome::Unreachable);
        assert_eq!(os(libc::ENETUNREACH), Outcome::NoRoute);
        assert_eq!(os(libc::ECONNRESET), Outcome::Reset);
    }
}
