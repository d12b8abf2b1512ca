//! The JSON views of the past: `reachmap events` / `/api/v1/events` and
//! `reachmap history` / `/api/v1/history`.

use super::{cell_state_name, describe, kind_name, outcome_name, rfc3339};
use reachmap_proto::v1 as pb;
use serde::Serialize;

/// One stored event of `reachmap events` and `/api/v1/events`.
#[derive(Serialize, Debug, Clone)]
pub struct NodeEventView {
    pub node: String,
    /// The agent instance that made it (a string: it is a 64-bit number;
    /// "0" for the collector's own events) and its id there: together with
    /// the node they name the event.
    pub instance: String,
    pub id: u64,
    pub time: Option<String>,
    pub received: Option<String>,
    pub kind: &'static str,
    pub detail: String,
    #[serde(skip)]
    pub time_unix_nanos: i64,
}

#[derive(Serialize, Debug, Clone)]
pub struct EventsView {
    pub events: Vec<NodeEventView>,
    /// More matched than the limit; the oldest were left out.
    pub truncated: bool,
    /// The oldest moment the store still holds (null: nothing pruned yet).
    pub retained_since: Option<String>,
}

impl From<&pb::EventsResponse> for EventsView {
    fn from(r: &pb::EventsResponse) -> Self {
        EventsView {
            events: r
                .events
                .iter()
                .filter_map(|ne| {
                    let e = ne.event.as_ref()?;
                    let (kind, detail) = describe(e);
                    Some(NodeEventView {
                        node: ne.node.clone(),
                        instance: e.instance_id.to_string(),
                        id: e.id,
                        time: rfc3339(e.time_unix_nanos),
                        received: rfc3339(e.received_unix_nanos),
                        kind,
                        detail,
                        time_unix_nanos: e.time_unix_nanos,
                    })
                })
                .collect(),
            truncated: r.truncated,
            retained_since: rfc3339(r.retained_since_unix_nanos),
        }
    }
}

/// One interval of a pair's timeline.
#[derive(Serialize, Debug, Clone)]
pub struct IntervalView {
    pub start: Option<String>,
    /// Null while it goes on.
    pub end: Option<String>,
    pub seconds: f64,
    pub state: String,
    pub failure: Option<String>,
    pub loss: f64,
    /// For a bad interval: its top cause then, and what changed before it.
    pub cause: Option<crate::why::Cause>,
    pub changes: Vec<crate::why::ChangeView>,
    #[serde(skip)]
    pub start_unix_nanos: i64,
    #[serde(skip)]
    pub end_unix_nanos: i64,
}

#[derive(Serialize, Debug, Clone)]
pub struct HistoryView {
    pub src: String,
    pub dst: String,
    pub port: u32,
    pub kind: String,
    pub intervals: Vec<IntervalView>,
    pub outages: u32,
    pub longest_outage_seconds: f64,
    pub last_outage_end: Option<String>,
    pub retained_since: Option<String>,
    #[serde(skip)]
    pub last_outage_end_unix_nanos: i64,
}

impl HistoryView {
    pub fn new(r: &pb::HistoryResponse, now_unix_nanos: i64) -> Self {
        HistoryView {
            src: r.src.clone(),
            dst: r.dst.clone(),
            port: r.port,
            kind: kind_name(r.kind),
            intervals: r
                .intervals
                .iter()
                .map(|i| {
                    let end = if i.end_unix_nanos == 0 {
                        now_unix_nanos
                    } else {
                        i.end_unix_nanos
                    };
                    IntervalView {
                        start: rfc3339(i.start_unix_nanos),
                        end: rfc3339(i.end_unix_nanos),
                        seconds: (end - i.start_unix_nanos).max(0) as f64 / 1e9,
                        state: cell_state_name(i.state),
                        failure: outcome_name(i.failure),
                        loss: i.loss,
                        cause: i.cause.as_ref().map(crate::why::Cause::from),
                        changes: i.changes.iter().map(crate::why::ChangeView::from).collect(),
                        start_unix_nanos: i.start_unix_nanos,
                        end_unix_nanos: i.end_unix_nanos,
                    }
                })
                .collect(),
            outages: r.outages,
            longest_outage_seconds: r.longest_outage_nanos as f64 / 1e9,
            last_outage_end: rfc3339(r.last_outage_end_unix_nanos),
            retained_since: rfc3339(r.retained_since_unix_nanos),
            last_outage_end_unix_nanos: r.last_outage_end_unix_nanos,
        }
    }
}
