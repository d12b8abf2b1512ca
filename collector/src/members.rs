//! The collectors that share one store. Each writes a heartbeat row to the
//! store's `collectors` table every `HEARTBEAT` — its name, addresses,
//! agents, store state — and any of them lists them all
//! (`reachmap collectors`). Fleet-wide work (pruning the shared store by
//! retention and size) runs on one: the holder of a PostgreSQL advisory
//! lock, taken on a connection of its own. When the holder dies its
//! connection closes, the server lets the lock go, and the next collector to
//! try takes it within one heartbeat. A collector cut off from the
//! database loses its connection, and with it the lock, within the
//! connection's TCP user timeout. The embedded SQLite store has one
//! collector: it always leads.

use crate::state::{Fleet, unix_nanos};
use crate::store::pg::Target;
use crate::store::sql::{Db, args};
use crate::store::{Location, Store, Write};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A collector whose heartbeat is older than this is listed as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(10);
/// The advisory lock of fleet-wide work (`RMAP` and 2).
const FLEET_LOCK: i64 = 0x524D_4150_0002;

/// Who this collector is, as the others list it.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    /// The gRPC and HTTP addresses agents and clients use.
    pub grpc: String,
    pub http: String,
}

/// One collector's heartbeat row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub grpc: String,
    pub http: String,
    pub version: String,
    pub started_unix_nanos: i64,
    pub seen_unix_nanos: i64,
    /// Agents streaming to it.
    pub agents: u32,
    /// It holds the fleet-wide lock.
    pub leader: bool,
    pub store_writable: bool,
    /// Rows waiting for its store writer: writes queued, each cell change
    /// counted, and the cells its matrix owes the store past the queue.
    pub store_queue: u64,
}

impl Record {
    /// Heard from within `GONE_AFTER` of `now`.
    pub fn alive(&self, now: i64) -> bool {
        now.saturating_sub(self.seen_unix_nanos) <= GONE_AFTER.as_nanos() as i64
    }
}

/// The heartbeat row as the store keeps it.
pub fn row(r: &Record) -> (String, String, i64) {
    (
        r.name.clone(),
        serde_json::to_string(r).unwrap_or_default(),
        r.seen_unix_nanos,
    )
}

/// Every collector that ever wrote a heartbeat, by name.
pub fn load(db: &Db) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    db.each(
        "SELECT name, record FROM collectors ORDER BY name",
        args![],
        |r| {
            let (name, text) = (r.text(0)?, r.text(1)?);
            match serde_json::from_str::<Record>(&text) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!(%name, error = %e, "skipping an unreadable collector row"),
            }
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The fleet-wide lock: held on a connection of its own while it lives.
enum Lock {
    /// The embedded store: one collector, always the leader.
    Alone,
    Shared {
        target: Target,
        conn: Option<Box<Db>>,
    },
}

impl Lock {
    /// Whether the lock is held now: kept while its connection answers,
    /// tried for when not held.
    fn hold(&mut self, held: bool) -> Result<bool, String> {
        let Lock::Shared { target, conn } = self else {
            return Ok(true);
        };
        if held {
            let alive = conn
                .as_ref()
                .is_some_and(|c| c.first("SELECT 1", args![], |r| r.int(0)).is_ok());
            if alive {
                return Ok(true);
            }
            // Its session is gone, and the lock with it.
            *conn = None;
            return Err("the lock's connection to the store was lost".to_string());
        }
        if conn.is_none() {
            *conn = Some(Box::new(Db::Postgres(
                crate::store::pg::Pg::connect(target).map_err(|e| e.to_string())?,
            )));
        }
        let got = conn
            .as_ref()
            .map(|c| {
                c.first(
                    "SELECT CASE WHEN pg_try_advisory_lock(?1) THEN 1 ELSE 0 END",
                    args![FLEET_LOCK],
                    |r| r.int(0),
                )
            })
            .transpose()
            .map_err(|e| {
                *conn = None;
                e.to_string()
            })?
            .flatten();
        Ok(got == Some(1))
    }
}

/// Writes this collector's heartbeat every `HEARTBEAT` and holds or tries
/// for the fleet-wide lock, until `shutdown`.
pub fn spawn(
    store: Store,
    fleet: Fleet,
    me: Identity,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    store.set_member_name(&me.name);
    tokio::spawn(async move {
        let mut lock = match store.location() {
            Location::Dir(_) => Lock::Alone,
            Location::Postgres(t) => Lock::Shared {
                target: t.clone(),
                conn: None,
            },
        };
        let mut record = Record {
            name: me.name,
            grpc: me.grpc,
            http: me.http,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_nanos: unix_nanos(SystemTime::now()),
            ..Record::default()
        };
        let shared = matches!(store.location(), Location::Postgres(_));
        let mut follow = crate::sharing::Follow::default();
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let held = record.leader;
            let (back, result) = tokio::task::spawn_blocking(move || {
                let r = lock.hold(held);
                (lock, r)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the fleet lock's task failed");
                (Lock::Alone, Ok(false))
            });
            lock = back;
            let leader = match result {
                Ok(l) => l,
                Err(e) => {
                    if held {
                        tracing::warn!(error = %e, "no longer the leader of fleet-wide work");
                    } else {
                        tracing::debug!(error = %e, "cannot try for the fleet lock");
                    }
                    false
                }
            };
            if leader && !held {
                tracing::info!(collector = %record.name, "leading fleet-wide work (holds the store's fleet lock)");
            }
            record.leader = leader;
            store.set_leader(leader);
            record.agents = fleet.read(count_connected).await.unwrap_or(0);
            let status = store.status();
            record.store_writable = status.writable;
            record.store_queue = store.queued();
            record.seen_unix_nanos = unix_nanos(SystemTime::now());
            store.queue(Write::Member(record.clone()));
            if shared
                && let Err(e) =
                    crate::sharing::follow(&store, &fleet, &record.name, leader, &mut follow).await
            {
                tracing::warn!(error = %e, "cannot read the other collectors' agents and plans from the store");
            }
        }
        // A clean stop says so at once: the next heartbeat list shows it gone.
        record.seen_unix_nanos = 0;
        record.leader = false;
        store.set_leader(false);
        store.queue(Write::Member(record));
    })
}

fn count_connected(nodes: &std::collections::BTreeMap<String, crate::state::Node>) -> u32 {
    nodes.values().filter(|n| n.connected()).count() as u32
}

/// Every collector on the store, oldest name first.
pub async fn list(store: &Store) -> Result<Vec<Record>, String> {
    store.read(load).await
}

/// `live` (this collector's nodes) with what the shared store says of the
/// nodes streaming to another collector that is alive: those it does not
/// know are added, those it knows only as disconnected are shown connected
/// there.
pub fn with_others(
    mut live: Vec<reachmap_proto::v1::NodeSummary>,
    records: Vec<crate::store::NodeRecord>,
    members: &[Record],
    me: &str,
) -> Vec<reachmap_proto::v1::NodeSummary> {
    let now = unix_nanos(SystemTime::now());
    let alive = |name: &str| members.iter().any(|m| m.name == name && m.alive(now));
    for r in records {
        if r.collector.is_empty() || r.collector == me || !r.connected || !alive(&r.collector) {
            if !live.iter().any(|n| n.name == r.name) && r.collector != me {
                live.push(remote(r, false));
            }
            continue;
        }
        match live.iter_mut().find(|n| n.name == r.name) {
            Some(n) if n.connected => {}
            Some(n) => *n = remote(r, true),
            None => live.push(remote(r, true)),
        }
    }
    live.sort_by(|a, b| a.name.cmp(&b.name));
    live
}

fn remote(r: crate::store::NodeRecord, connected: bool) -> reachmap_proto::v1::NodeSummary {
    reachmap_proto::v1::NodeSummary {
        name: r.name,
        machine_id: r.machine_id,
        boot_id: r.boot_id,
        version: r.version,
        connected,
        last_seen_unix_nanos: r.last_seen_unix_nanos,
        since_unix_nanos: r.last_seen_unix_nanos,
        addresses: r.addresses,
        labels: r.labels.into_iter().collect(),
        collector: r.collector,
        ..Default::default()
    }
}

/// Two heartbeat rows as of `now`: collector `b`, alive, and `dead`, gone a
/// minute ago.
#[cfg(test)]
pub(crate) fn b_alive_and_dead(now: i64) -> [Record; 2] {
    [
        Record {
            name: "b".into(),
            seen_unix_nanos: now,
            ..Record::default()
        },
        Record {
            name: "dead".into(),
            seen_unix_nanos: now - 60_000_000_000,
            ..Record::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_older_than_gone_after_is_gone() {
        let r = Record {
            seen_unix_nanos: 1_000_000_000_000,
            ..Record::default()
        };
        assert!(r.alive(r.seen_unix_nanos + GONE_AFTER.as_nanos() as i64));
        assert!(!r.alive(r.seen_unix_nanos + GONE_AFTER.as_nanos() as i64 + 1));
    }

    #[test]
    fn other_collectors_nodes_join_the_list_when_their_collector_is_alive() {
        use reachmap_proto::v1::NodeSummary;
        let now = unix_nanos(SystemTime::now());
        let members = b_alive_and_dead(now);
        let rec = |name: &str, collector: &str, connected: bool| crate::store::NodeRecord {
            name: name.into(),
            collector: collector.into(),
            connected,
            addresses: vec!["198.18.0.20".into()],
            ..Default::default()
        };
        let live = vec![
            NodeSummary {
                name: "mine".into(),
                connected: true,
                ..Default::default()
            },
            NodeSummary {
                name: "moved".into(),
                connected: false,
                ..Default::default()
            },
        ];
        let got = with_others(
            live,
            vec![
                rec("mine", "a", true),
                rec("moved", "b", true),
                rec("only-b", "b", true),
                rec("on-dead", "dead", true),
                rec("gone-from-b", "b", false),
            ],
            &members,
            "a",
        );
        let rows: Vec<(&str, bool, &str)> = got
            .iter()
            .map(|n| (n.name.as_str(), n.connected, n.collector.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("gone-from-b", false, "b"),
                ("mine", true, ""),
                ("moved", true, "b"),
                ("on-dead", false, "dead"),
                ("only-b", true, "b"),
            ]
        );
    }

    #[tokio::test]
    async fn the_embedded_store_keeps_each_heartbeat_once_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = Store::open(dir.path(), Default::default()).expect("open");
        for (name, agents) in [("a", 1), ("b", 2), ("a", 3)] {
            store.queue(Write::Member(Record {
                name: name.into(),
                agents,
                seen_unix_nanos: 5,
                ..Record::default()
            }));
        }
        store.flush().await;
        let got = list(&store).await.expect("list");
        let rows: Vec<(&str, u32)> = got.iter().map(|r| (r.name.as_str(), r.agents)).collect();
        assert_eq!(rows, [("a", 3), ("b", 2)]);
        assert!(store.is_leader(), "the embedded store has one collector");
    }
}
