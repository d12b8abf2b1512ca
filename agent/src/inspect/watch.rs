//! Keeps the host's network state current: one full rtnetlink reading at
//! start, then a fresh reading whenever the kernel announces a change on the
//! link, address or route multicast groups. Every reading that differs from
//! the last becomes a new version, published on a watch channel (for
//! snapshots) and sent as a `NetUpdate` (for deltas and events).

use crate::diff::{NetChange, diff};
use crate::facts::NetState;
use crate::inspect::rtnl::{RtnlError, read_net_state};
use futures::StreamExt;
use rtnetlink::MulticastGroup;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Notifications arrive in bursts (an address add brings a route or two);
/// wait this long after the first one so the burst becomes one reading.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A full re-reading even without notifications, in case one was lost
/// (netlink drops multicast messages when the socket buffer overflows).
const RESYNC_EVERY: Duration = Duration::from_secs(60);
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub state: NetState,
}

#[derive(Clone, Debug)]
pub struct NetUpdate {
    pub base_version: u64,
    pub version: u64,
    pub time: SystemTime,
    pub change: NetChange,
}

/// Reads the state once; used by `run` and by one-shot readers.
pub async fn read_once() -> Result<NetState, RtnlError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let state = read_net_state(&handle).await;
    task.abort();
    state
}

/// Runs until `shutdown`. A failing netlink socket is reopened after a pause;
/// the agent keeps its last good reading meanwhile.
///
/// `updates` is bounded and this task waits when it is full (Block): the
/// stream task always drains it, and a lost update would be a lost event.
pub async fn run(
    published: watch::Sender<Arc<Versioned>>,
    updates: mpsc::Sender<NetUpdate>,
    shutdown: CancellationToken,
) {
    loop {
        match watch_once(&published, &updates, &shutdown).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "network watcher failed; reopening"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

async fn watch_once(
    published: &watch::Sender<Arc<Versioned>>,
    updates: &mpsc::Sender<NetUpdate>,
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
        let current = published.borrow().clone();
        let state = read_net_state(&handle).await?;
        if current.version == 0 || state != current.state {
            let next = Arc::new(Versioned {
                version: current.version + 1,
                state,
            });
            if current.version > 0 {
                let update = NetUpdate {
                    base_version: current.version,
                    version: next.version,
                    time: SystemTime::now(),
                    change: diff(&current.state, &next.state),
                };
                tracing::debug!(
                    version = next.version,
                    events = update.change.events.len(),
                    "network state changed"
                );
                published.send_replace(next);
                if updates.send(update).await.is_err() {
                    return Ok(());
                }
            } else {
                published.send_replace(next);
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
