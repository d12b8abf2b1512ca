//! Keeps the host's network state current: one full rtnetlink reading at
//! start, then a fresh reading whenever the kernel announces a change on the
//! link, address or route multicast groups. Every reading that differs from
//! the last goes to the hub, which versions it and works out the events.

use crate::facts::NetState;
use crate::hub::Reading;
use crate::inspect::rtnl::{RtnlError, read_net_state};
use futures::StreamExt;
use rtnetlink::MulticastGroup;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Notifications arrive in bursts (an address add brings a route or two);
/// wait this long after the first one so the burst becomes one reading.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A full re-reading even without notifications, in case one was lost
/// (netlink drops multicast messages when the socket buffer overflows).
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// Reads the state once; used by `run` and by one-shot readers.
pub async fn read_once() -> Result<NetState, RtnlError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let state = read_net_state(&handle).await;
    task.abort();
    state
}

/// Runs until `shutdown` (`Ok`) or until the netlink socket fails (`Err`;
/// the agent's supervisor opens a new one after a pause, and the hub keeps
/// the last good reading meanwhile). `read` is called after every reading.
pub async fn run(
    readings: mpsc::Sender<Reading>,
    read: impl Fn(),
    shutdown: CancellationToken,
) -> Result<(), RtnlError> {
    let mut last: Option<NetState> = None;
    watch_once(&readings, &mut last, &read, &shutdown).await
}

async fn watch_once(
    readings: &mpsc::Sender<Reading>,
    last: &mut Option<NetState>,
    read: &impl Fn(),
    shutdown: &CancellationToken,
) -> Result<(), RtnlError> {
    let (conn, handle, mut notifications) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])?;
    let conn_task = tokio::spawn(conn);
    let _abort = AbortOnDrop(conn_task);
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.tick().await;
    loop {
        let state = read_net_state(&handle).await?;
        read();
        if last.as_ref() != Some(&state) {
            *last = Some(state.clone());
            if readings.send(Reading::Net(state)).await.is_err() {
                return Ok(());
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = resync.tick() => {}
            n = notifications.next() => {
                if n.is_none() {
                    return Err(RtnlError::Io(std::io::Error::other("multicast socket closed")));
                }
                tokio::time::sleep(DEBOUNCE).await;
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, notifications.next()).await {}
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
