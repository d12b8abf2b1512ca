//! The probe port every agent listens on, and the short-lived listeners of
//! `reachmap test-port`. Both accept and close at once: a completed
//! handshake is all a prober needs.

use socket2::{Domain, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a test-port listener may live, whatever is asked.
pub const MAX_TTL: Duration = Duration::from_secs(600);
/// How many test-port listeners may be open at once.
pub const MAX_TEMP_LISTENERS: usize = 64;
/// Pause after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("port {0} is in use")]
    PortInUse(u16),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("{MAX_TEMP_LISTENERS} temporary listeners are already open")]
    TooManyListeners,
    #[error("no temporary listener on port {0}")]
    NotOpen(u16),
}

/// Listens on `addr` until `shutdown`, closing every connection as soon as it
/// is accepted. Fails only when it cannot listen.
pub async fn serve_probe_port(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ProbeError> {
    serve_probe_port_reporting(addr, shutdown, || {}).await
}

/// [`serve_probe_port`], calling `listening` once the port is bound.
pub async fn serve_probe_port_reporting(
    addr: SocketAddr,
    shutdown: CancellationToken,
    listening: impl FnOnce(),
) -> Result<(), ProbeError> {
    let listener = listen(addr)?;
    tracing::info!(%addr, "probe port listening");
    listening();
    accept_and_close(listener, shutdown).await;
    Ok(())
}

async fn accept_and_close(listener: TcpListener, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => drop(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
}

/// A listening socket on `addr`. `[::]` listens for IPv4 too. SO_REUSEADDR
/// lets a port in TIME_WAIT be reused, never one that is listening.
fn listen(addr: SocketAddr) -> Result<TcpListener, ProbeError> {
    let err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ProbeError::PortInUse(addr.port())
        } else {
            ProbeError::Listen { addr, source }
        }
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1_024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// The listeners `reachmap test-port` opens on a destination: each closes
/// after its time to live, on `close`, or when the handle's shutdown token
/// fires.
#[derive(Debug, Clone)]
pub struct TempListeners {
    open: Arc<Mutex<Registry>>,
    shutdown: CancellationToken,
    /// `test-port --udp`'s sockets.
    pub udp: super::udp::UdpListeners,
}

/// Open listeners by port, each with a number telling reopenings apart.
#[derive(Debug, Default)]
struct Registry {
    next: u64,
    by_port: HashMap<u16, (u64, CancellationToken)>,
}

impl TempListeners {
    pub fn new(shutdown: CancellationToken) -> Self {
        TempListeners {
            open: Arc::default(),
            udp: super::udp::UdpListeners::new(shutdown.clone()),
            shutdown,
        }
    }

    /// Listens on `port` (0: a free one) on every address, IPv4 and IPv6
    /// where the host has it, for at most `ttl`. Returns the port. Refuses a
    /// port something already listens on.
    pub async fn open(&self, port: u16, ttl: Duration) -> Result<u16, ProbeError> {
        if self.lock().by_port.len() >= MAX_TEMP_LISTENERS {
            return Err(ProbeError::TooManyListeners);
        }
        let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        let listener = match listen(any6) {
            Ok(l) => l,
            // No IPv6 on this host: IPv4 only.
            Err(ProbeError::Listen { source, .. })
                if source.raw_os_error() == Some(libc::EAFNOSUPPORT)
                    || source.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?
            }
            Err(e) => return Err(e),
        };
        let port = listener
            .local_addr()
            .map_err(|source| ProbeError::Listen { addr: any6, source })?
            .port();
        let stop = self.shutdown.child_token();
        let generation = {
            let mut open = self.lock();
            if open.by_port.len() >= MAX_TEMP_LISTENERS {
                return Err(ProbeError::TooManyListeners);
            }
            open.next += 1;
            let generation = open.next;
            open.by_port.insert(port, (generation, stop.clone()));
            generation
        };
        let ttl = ttl.min(MAX_TTL);
        let registry = self.open.clone();
        tokio::spawn(async move {
            tracing::info!(
                port,
                ttl_ms = ttl.as_millis() as u64,
                "temporary listener open"
            );
            let _ = tokio::time::timeout(ttl, accept_and_close(listener, stop)).await;
            let mut open = registry.lock().unwrap_or_else(|p| p.into_inner());
            // Only our own entry: the port may have been closed and reopened.
            if open
                .by_port
                .get(&port)
                .is_some_and(|(g, _)| *g == generation)
            {
                open.by_port.remove(&port);
            }
            tracing::info!(port, "temporary listener closed");
        });
        Ok(port)
    }

    /// Closes the listener on `port` now.
    pub async fn close(&self, port: u16) -> Result<(), ProbeError> {
        let (_, stop) = self
            .lock()
            .by_port
            .remove(&port)
            .ok_or(ProbeError::NotOpen(port))?;
        stop.cancel();
        Ok(())
    }

    /// Ports with a temporary listener open.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.lock().by_port.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
