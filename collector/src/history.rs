//! Questions about the past, answered from the store: a node's events in a
//! range, the matrix and `why` as of a moment, and a pair's timeline with
//! the cause of each bad interval.
//!
//! `why --at` runs the same correlator as the live `why` on the fleet as it
//! was: both nodes' facts rebuilt from the stored fact parts, their events
//! up to the moment, their name lookups, whether their agents were
//! connected, and the matrix cells of the moment.

use crate::probe::{CellChange, CellState, Matrix, ProbeKind};
use crate::state::{Fleet, Node, StoredEvent, unix_nanos};
use crate::store::{Store, read};
use crate::why::{Evidence, Explanation};
use reachmap_proto::v1 as pb;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Status;

/// Events before the moment that `why --at` takes into account.
const WHY_EVENTS_BEFORE: i64 = 2 * 3600 * 1_000_000_000;
const WHY_EVENTS_MAX: usize = 5000;
/// Bad intervals of one timeline that get their cause explained.
const EXPLAINED_INTERVALS: usize = 20;

fn at_time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("store: {e}"))
}

/// Refuses a moment in the future or before what the store still holds.
pub fn check_moment(store: &Store, at: i64) -> Result<(), Status> {
    let now = unix_nanos(SystemTime::now());
    if at > now + 1_000_000_000 {
        return Err(Status::invalid_argument(format!(
            "{} is in the future",
            crate::view::rfc3339(at).unwrap_or_default()
        )));
    }
    let oldest = store.status().oldest;
    if at < oldest {
        return Err(Status::out_of_range(format!(
            "{} is before what the store keeps (retention): it holds from {} on",
            crate::view::rfc3339(at).unwrap_or_default(),
            crate::view::rfc3339(oldest).unwrap_or_default()
        )));
    }
    Ok(())
}

pub async fn events(store: &Store, q: read::EventsQuery) -> Result<pb::EventsResponse, Status> {
    let retained = store.status().oldest;
    let (list, truncated) = store
        .read(move |c| read::events(c, &q).map_err(|e| e.to_string()))
        .await
        .map_err(internal)?;
    Ok(pb::EventsResponse {
        events: list
            .into_iter()
            .map(|(node, event)| pb::NodeEvent {
                node,
                event: Some(event),
            })
            .collect(),
        truncated,
        retained_since_unix_nanos: retained,
    })
}

/// The matrix as it was at `at`.
pub async fn matrix_at(store: &Store, at: i64) -> Result<Matrix, Status> {
    check_moment(store, at)?;
    let max = store
        .read(|c| read::max_name_id(c).map_err(|e| e.to_string()))
        .await
        .map_err(internal)?;
    // Two halves of the sources, read side by side.
    let mid = max / 2 + 1;
    let (low, high) = tokio::join!(
        store
            .read(move |c| read::cells_of_sources(c, at, i64::MIN, mid).map_err(|e| e.to_string())),
        store
            .read(move |c| read::cells_of_sources(c, at, mid, i64::MAX).map_err(|e| e.to_string())),
    );
    let parts = vec![low.map_err(internal)?, high.map_err(internal)?];
    store
        .read(move |c| read::matrix_of(c, parts).map_err(|e| e.to_string()))
        .await
        .map_err(internal)
}

fn rebuild(cells: &[CellChange]) -> Matrix {
    let mut m = Matrix::new(Duration::from_secs(10));
    m.restore(cells);
    m
}

/// One node as the store remembers it at `at`.
struct Past {
    facts: Option<pb::Snapshot>,
    names: Vec<crate::probe::ResolvedName>,
    events: Vec<(String, pb::Event)>,
}

fn past(c: &crate::store::sql::Db, node: &str, at: i64) -> Result<Past, String> {
    let (events, _) = read::events(
        c,
        &read::EventsQuery {
            node: Some(node.to_string()),
            since: at.saturating_sub(WHY_EVENTS_BEFORE),
            until: at,
            types: Vec::new(),
            limit: WHY_EVENTS_MAX,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Past {
        facts: read::facts_at(c, node, at)?,
        names: read::names_at(c, node, at)?,
        events,
    })
}

/// Whether `node`'s agent was connected at `at`, from the collector's own
/// stream events.
fn connected_at(c: &crate::store::sql::Db, node: &str, at: i64) -> Result<bool, String> {
    let (last, _) = read::events(
        c,
        &read::EventsQuery {
            node: Some(node.to_string()),
            since: 0,
            until: at,
            types: vec!["agent_connected".into(), "agent_disconnected".into()],
            limit: 1,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(matches!(
        last.last().and_then(|(_, e)| e.kind.as_ref()),
        Some(pb::event::Kind::StreamChanged(s)) if s.connected
    ))
}

fn historic_node(name: &str, connected: bool, p: Past, at: i64) -> Result<Node, String> {
    let facts = match &p.facts {
        Some(s) => Some(
            crate::validate::snapshot(s)
                .map_err(|e| format!("stored facts of {name} do not validate: {e}"))?,
        ),
        None => None,
    };
    let events = p
        .events
        .into_iter()
        .map(|(_, event)| StoredEvent {
            received: at_time(event.received_unix_nanos),
            event,
        })
        .collect();
    Ok(Node::historic(
        name,
        connected,
        facts,
        events,
        p.names,
        at_time(at),
    ))
}

/// `why SRC DST:PORT` as of `at`.
pub async fn why_at(
    fleet: &Fleet,
    src: String,
    dst: String,
    port: u16,
    at: i64,
) -> Result<Explanation, Status> {
    why_at_scoped(fleet, src, dst, port, at, Scope::Column).await
}

/// Which cells a past explanation reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every cell into and out of the destination (what the live `why`
    /// sees: how many other nodes reach it, too).
    Column,
    /// Only the pair's own cells, both ways and ICMP: for the cause of each
    /// bad interval of a timeline, where the other sources are not asked.
    Pair,
}

async fn why_at_scoped(
    fleet: &Fleet,
    src: String,
    dst: String,
    port: u16,
    at: i64,
    scope: Scope,
) -> Result<Explanation, Status> {
    let store = fleet.store().clone();
    check_moment(&store, at)?;
    let mut known = fleet
        .read(|nodes| nodes.keys().cloned().collect::<Vec<_>>())
        .await
        .unwrap_or_default();
    // On a shared store, the nodes other collectors wrote too.
    known.extend(fleet.remote_nodes().iter().map(|n| n.name.clone()));
    for n in [&src, &dst] {
        if !known.contains(n) {
            return Err(Status::not_found(format!("no node named {n:?}")));
        }
    }
    let (s, d) = (src.clone(), dst.clone());
    let (matrix, nodes, later) = store
        .read(move |c| {
            let cells = match scope {
                Scope::Column => read::cells_at(c, at, &d),
                Scope::Pair => read::pair_at(c, at, &s, &d, port),
            }
            .map_err(|e| e.to_string())?;
            let mut nodes = BTreeMap::new();
            for name in [&s, &d] {
                let node = historic_node(name, connected_at(c, name, at)?, past(c, name, at)?, at)?;
                nodes.insert(name.clone(), node);
            }
            for cell in &cells {
                for name in [&cell.src, &cell.dst] {
                    if !nodes.contains_key(name) {
                        let n =
                            Node::historic(name, true, None, Vec::new(), Vec::new(), at_time(at));
                        nodes.insert(name.clone(), n);
                    }
                }
            }
            let mut later = BTreeMap::new();
            for name in [&s, &d] {
                if let Some(t) =
                    read::firewall_changed_after(c, name, at).map_err(|e| e.to_string())?
                {
                    later.insert(name.clone(), t);
                }
            }
            Ok((rebuild(&cells), nodes, later))
        })
        .await
        .map_err(internal)?;
    let owners = fleet.owners();
    let mut e = crate::why::explain(&matrix, &nodes, &owners, &src, &dst, port, at_time(at))
        .map_err(|e| Status::not_found(e.to_string()))?;
    e.at = at;
    // A rule that decided then may be gone now: say when the ruleset changed.
    for cause in &mut e.causes {
        if !cause.code.starts_with("FIREWALL") {
            continue;
        }
        if let Some(t) = later.get(&cause.node) {
            cause.evidence.push(Evidence {
                kind: "fact".into(),
                node: cause.node.clone(),
                time: *t,
                text: format!(
                    "{}'s ruleset changed after this moment (at {}); this rule may be gone since",
                    cause.node,
                    crate::view::rfc3339(*t).unwrap_or_default()
                ),
            });
        }
    }
    Ok(e)
}

/// One pair's timeline in [since, until].
pub async fn history(
    fleet: &Fleet,
    src: String,
    dst: String,
    port: u16,
    since: i64,
    until: i64,
) -> Result<pb::HistoryResponse, Status> {
    let store = fleet.store().clone();
    let retained = store.status().oldest;
    let now = unix_nanos(SystemTime::now());
    let until = if until == 0 { now } else { until.min(now) };
    let since = since.max(retained);
    let (s, d) = (src.clone(), dst.clone());
    let (kind, rows) = store
        .read(move |c| {
            let kinds: &[ProbeKind] = if port == 0 {
                &[ProbeKind::Icmp]
            } else {
                &[ProbeKind::Tcp, ProbeKind::Http, ProbeKind::Https]
            };
            for k in kinds {
                let rows = read::cell_history(c, &s, &d, port, *k, since, until)
                    .map_err(|e| e.to_string())?;
                if !rows.is_empty() {
                    return Ok((*k, rows));
                }
            }
            Ok((kinds[0], Vec::new()))
        })
        .await
        .map_err(internal)?;
    let mut intervals = timeline(&rows, since);
    let mut outages = 0u32;
    let mut longest = 0i64;
    let mut last_end = 0i64;
    for i in &intervals {
        if i.state == pb::CellState::Failing as i32 {
            outages += 1;
            let end = if i.end_unix_nanos == 0 {
                until
            } else {
                i.end_unix_nanos
            };
            longest = longest.max(end - i.start_unix_nanos);
            if i.end_unix_nanos != 0 {
                last_end = last_end.max(i.end_unix_nanos);
            }
        }
    }
    let bad: Vec<usize> = intervals
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.state == pb::CellState::Failing as i32 || i.state == pb::CellState::Degraded as i32
        })
        .map(|(n, _)| n)
        .collect();
    let probe_port = if port == 0 {
        reachmap_proto::DEFAULT_PROBE_PORT
    } else {
        port
    };
    // The newest bad intervals' causes, explained side by side.
    let asks = bad.iter().rev().take(EXPLAINED_INTERVALS).map(|n| {
        let i = &intervals[*n];
        // The facts a moment after the cell turned bad.
        let end = if i.end_unix_nanos == 0 {
            until
        } else {
            i.end_unix_nanos
        };
        let at = (i.start_unix_nanos + 1_000_000_000).min(end);
        let (s, d, n) = (src.clone(), dst.clone(), *n);
        async move {
            (
                n,
                why_at_scoped(fleet, s, d, probe_port, at, Scope::Pair).await,
            )
        }
    });
    for (n, answer) in futures::future::join_all(asks).await {
        if let Ok(e) = answer {
            intervals[n].cause = e.causes.first().map(pb::WhyCause::from);
            intervals[n].changes = e.changes.iter().take(5).map(pb::WhyChange::from).collect();
        }
    }
    Ok(pb::HistoryResponse {
        src,
        dst,
        port: u32::from(port),
        kind: crate::encode::probe_kind(kind),
        intervals,
        outages,
        longest_outage_nanos: longest,
        last_outage_end_unix_nanos: last_end,
        retained_since_unix_nanos: retained,
    })
}

/// Stored changes → intervals of one state from `since` on; the time
/// before the first change is unknown.
pub fn timeline(rows: &[CellChange], since: i64) -> Vec<pb::HistoryInterval> {
    let mut out: Vec<pb::HistoryInterval> = Vec::new();
    let state = |s: CellState| crate::encode::cell_state(s);
    for r in rows {
        let start = r.time.max(since);
        if let Some(last) = out.last_mut() {
            if last.state == state(r.new) {
                if r.new == CellState::Failing || r.new == CellState::Degraded {
                    last.loss = last.loss.max(r.loss());
                    if r.failure.is_some() {
                        last.failure = crate::encode::outcome(r.failure);
                    }
                }
                continue;
            }
            last.end_unix_nanos = start;
        } else if start > since {
            out.push(pb::HistoryInterval {
                start_unix_nanos: since,
                end_unix_nanos: start,
                state: state(CellState::Unknown),
                ..Default::default()
            });
        }
        out.push(pb::HistoryInterval {
            start_unix_nanos: start,
            end_unix_nanos: 0,
            state: state(r.new),
            failure: crate::encode::outcome(r.failure),
            loss: r.loss(),
            ..Default::default()
        });
    }
    if out.is_empty() {
        out.push(pb::HistoryInterval {
            start_unix_nanos: since,
            end_unix_nanos: 0,
            state: state(CellState::Unknown),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Outcome;

    fn change(time: i64, new: CellState, failure: Option<Outcome>) -> CellChange {
        CellChange {
            time,
            src: "a".into(),
            dst: "b".into(),
            port: 7442,
            kind: ProbeKind::Tcp,
            service: None,
            old: CellState::Unknown,
            new,
            failure,
            sent: 10,
            ok: if new == CellState::Ok { 10 } else { 2 },
            rtt_ms: None,
            address: "198.18.0.2".parse().expect("ip"),
            last_failure_at: 0,
            gone: false,
        }
    }

    #[test]
    fn changes_become_intervals_with_unknown_before_the_first() {
        let rows = vec![
            change(100, CellState::Ok, None),
            change(200, CellState::Failing, Some(Outcome::Timeout)),
            change(250, CellState::Failing, Some(Outcome::Refused)),
            change(300, CellState::Ok, None),
        ];
        let t = timeline(&rows, 50);
        let states: Vec<(i64, i64, i32)> = t
            .iter()
            .map(|i| (i.start_unix_nanos, i.end_unix_nanos, i.state))
            .collect();
        assert_eq!(
            states,
            vec![
                (50, 100, pb::CellState::Unknown as i32),
                (100, 200, pb::CellState::Ok as i32),
                (200, 300, pb::CellState::Failing as i32),
                (300, 0, pb::CellState::Ok as i32),
            ]
        );
        assert_eq!(t[2].failure, pb::ProbeOutcome::Refused as i32);
        assert!((t[2].loss - 0.8).abs() < 1e-9);
    }

    #[test]
    fn a_change_before_the_range_starts_it() {
        let rows = vec![change(10, CellState::Failing, Some(Outcome::Timeout))];
        let t = timeline(&rows, 50);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].start_unix_nanos, 50);
        assert_eq!(t[0].state, pb::CellState::Failing as i32);
    }

    #[test]
    fn no_changes_is_one_unknown_interval() {
        let t = timeline(&[], 50);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].state, pb::CellState::Unknown as i32);
    }
}
