//! What a collector on a shared store learns from it each heartbeat
//! (`members.rs` calls `follow`): the agents streaming to the other live
//! collectors, which its own agents probe and, when it leads, it plans for;
//! and, when it does not lead, the plans the leader wrote for its agents
//! (`store/plans.rs`). Planning is fleet-wide work: one collector computes
//! every plan, so a fleet split over collectors is one mesh, not one per
//! collector. Until the leader has planned an agent (it joined a moment
//! ago), or while no collector leads, a collector plans its agents itself,
//! over the same fleet.

use crate::members::{Record, load};
use crate::probe::{Matrix, NodeInput, NodePlan};
use crate::select::Zones;
use crate::state::{Fleet, Node, remote_input, unix_nanos};
use crate::store::sql::Db;
use crate::store::{Store, plans, read, registry};
use std::time::SystemTime;

/// Which leader's plans this collector has read, up to when.
#[derive(Clone, Debug, Default)]
pub struct Follow {
    leader: String,
    since: i64,
    started: bool,
}

struct Learned {
    remote: Vec<NodeInput>,
    /// Not leading: what the leader wrote.
    plans: Option<FromLeader>,
}

struct FromLeader {
    leader: String,
    /// The plans replace all held (the leader changed, or this is the first
    /// read).
    whole: bool,
    plans: Vec<(String, NodePlan)>,
    /// The newest row's time.
    newest: i64,
}

/// One round: reads the store and hands the state task what it learned.
pub async fn follow(
    store: &Store,
    fleet: &Fleet,
    me: &str,
    leading: bool,
    follow: &mut Follow,
) -> Result<(), String> {
    let me_owned = me.to_string();
    let from = (!leading).then(|| follow.clone());
    let learned = store.read(move |db| learn(db, &me_owned, from)).await?;
    fleet.remote(learned.remote).await;
    if let Some(FromLeader {
        leader,
        whole,
        plans: got,
        newest,
    }) = learned.plans
    {
        // Rows are read after `since`, so the newest is never older.
        follow.since = newest;
        follow.leader = leader.clone();
        follow.started = true;
        fleet.leader_plans(leader, whole, got).await;
    } else {
        // Leading: when it stops, the next round reads the new leader whole.
        *follow = Follow::default();
    }
    Ok(())
}

fn learn(db: &Db, me: &str, from: Option<Follow>) -> Result<Learned, String> {
    let members = load(db)?;
    let now = unix_nanos(SystemTime::now());
    let records = registry::load(db).map_err(|e| e.to_string())?;
    let remote = remote_nodes(&records, &members, me, now);
    let Some(from) = from else {
        return Ok(Learned {
            remote,
            plans: None,
        });
    };
    let leader = members
        .iter()
        .find(|m| m.leader && m.name != me && m.alive(now))
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let whole = !from.started || leader != from.leader;
    let since = if whole { 0 } else { from.since };
    let rows = if leader.is_empty() {
        Vec::new()
    } else {
        plans::since(db, &leader, since).map_err(|e| e.to_string())?
    };
    let newest = rows
        .iter()
        .map(|r| r.written_unix_nanos)
        .max()
        .unwrap_or(since);
    let got = rows
        .into_iter()
        .filter_map(
            |r| match crate::probe::wire::decode(&r.plan, r.digest) {
                Ok(p) => Some((r.source, p)),
                Err(e) => {
                    tracing::warn!(source = %r.source, leader = %r.collector, error = %e, "skipping a stored plan that does not parse");
                    None
                }
            },
        )
        .collect();
    Ok(Learned {
        remote,
        plans: Some(FromLeader {
            leader,
            whole,
            plans: got,
            newest,
        }),
    })
}

/// The nodes another collector wrote last, as the planner sees them:
/// connected while their agent streams to a collector that is alive, and
/// probed as targets either way (the host may be up while its agent or its
/// collector is not).
pub fn remote_nodes(
    records: &[registry::NodeRecord],
    members: &[Record],
    me: &str,
    now: i64,
) -> Vec<NodeInput> {
    let alive = |c: &str| members.iter().any(|m| m.name == c && m.alive(now));
    records
        .iter()
        .filter(|r| !r.collector.is_empty() && r.collector != me)
        .filter_map(|r| {
            let mut n = remote_input(r)?;
            n.connected = r.connected && alive(&r.collector);
            Some(n)
        })
        .collect()
}

/// The live matrix as this collector holds it, its rows of the agents that
/// stream to other collectors read from the shared store instead (each cell
/// as of its last change), and the zones of the whole fleet. The store out
/// of reach, the rows are this collector's own, with a warning.
pub async fn whole_matrix(fleet: &Fleet) -> Option<(Matrix, Zones)> {
    let remote = fleet.remote_nodes();
    let (copy, zones, sources) = fleet
        .read_matrix(move |m, nodes| {
            let mut zones = Zones::of_nodes(nodes);
            for n in remote.iter() {
                zones.add(&n.name, n.zone.as_deref());
            }
            (m.clone(), zones, streaming_elsewhere(&remote, nodes))
        })
        .await?;
    match rows_of(fleet, copy, sources).await {
        Ok(m) => Some((m, zones)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the other collectors' rows of the matrix; showing this collector's own");
            fleet
                .read_matrix(|m, nodes| (m.clone(), Zones::of_nodes(nodes)))
                .await
        }
    }
}

/// `copy` of this collector's matrix with the rows of the agents streaming
/// to other collectors read from the shared store, for an answer over the
/// whole fleet made from a copy of it (findings); `nodes` are the copy's.
/// The copy comes back unchanged on the embedded store, and with an error
/// when the store is out of reach.
pub async fn with_others_rows(
    fleet: &Fleet,
    copy: Matrix,
    nodes: &std::collections::BTreeMap<String, Node>,
) -> Result<Matrix, String> {
    let sources = streaming_elsewhere(&fleet.remote_nodes(), nodes);
    rows_of(fleet, copy, sources).await
}

/// The nodes of other live collectors not streaming here too.
fn streaming_elsewhere(
    remote: &[NodeInput],
    nodes: &std::collections::BTreeMap<String, Node>,
) -> Vec<String> {
    remote
        .iter()
        .filter(|n| n.connected && !nodes.get(&n.name).is_some_and(Node::connected))
        .map(|n| n.name.clone())
        .collect()
}

async fn rows_of(fleet: &Fleet, copy: Matrix, sources: Vec<String>) -> Result<Matrix, String> {
    if sources.is_empty() {
        return Ok(copy);
    }
    let now = unix_nanos(SystemTime::now());
    fleet
        .store()
        .read(move |db| {
            let mut m = copy;
            read::rows_into(db, &mut m, now, &sources).map_err(|e| e.to_string())?;
            Ok(m)
        })
        .await
}

/// Whether `why src dst` is answered from the shared store: an end's agent
/// streams to another live collector, so its facts and probe results reach
/// this one only through the store.
pub async fn from_store(fleet: &Fleet, src: &str, dst: &str) -> bool {
    let remote = fleet.remote_nodes();
    let elsewhere: Vec<String> = [src, dst]
        .into_iter()
        .filter(|end| remote.iter().any(|n| n.name == *end && n.connected))
        .map(str::to_string)
        .collect();
    if elsewhere.is_empty() {
        return false;
    }
    fleet
        .read(move |nodes| {
            elsewhere
                .iter()
                .any(|end| !nodes.get(end).is_some_and(Node::connected))
        })
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::registry::{NodeRecord, ProbeInput, ProbeListener};

    #[test]
    fn other_collectors_nodes_are_remote_and_connected_while_their_collector_lives() {
        let now = 1_000_000_000_000;
        let members = crate::members::b_alive_and_dead(now);
        let probe = ProbeInput {
            addresses: vec![
                "198.18.0.20".parse().expect("ip"),
                "fe80::1".parse().expect("ip"),
            ],
            listeners: vec![ProbeListener {
                address: "0.0.0.0".parse().expect("ip"),
                port: 80,
                any: true,
            }],
        };
        let rec =
            |name: &str, collector: &str, connected: bool, probe: Option<ProbeInput>| NodeRecord {
                name: name.into(),
                collector: collector.into(),
                connected,
                probe,
                labels: [("zone".to_string(), "z1".to_string())].into(),
                ..Default::default()
            };
        let records = [
            rec("mine", "a", true, Some(probe.clone())),
            rec("on-b", "b", true, Some(probe.clone())),
            rec("left-b", "b", false, Some(probe.clone())),
            rec("on-dead", "dead", true, Some(probe.clone())),
            rec("no-facts-yet", "b", true, None),
        ];
        let got = remote_nodes(&records, &members, "a", now);
        let rows: Vec<(&str, bool)> = got.iter().map(|n| (n.name.as_str(), n.connected)).collect();
        assert_eq!(
            rows,
            [("on-b", true), ("left-b", false), ("on-dead", false)],
            "this collector's own and those without facts are not remote"
        );
        let n = &got[0];
        assert!(n.connected);
        assert_eq!(n.zone.as_deref(), Some("z1"));
        // Link-local addresses are never probe addresses.
        assert_eq!(
            n.addresses,
            ["198.18.0.20".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(n.listeners.len(), 1);
        assert_eq!(n.listeners[0].3, crate::model::BindScope::Any);
    }
}
