//! FLAPPING: the pair's probes failed and recovered repeatedly in the last
//! hour. Read from the source's probe state-change events, so it works the
//! same live and for `why --at` (whose events come from the store).

use super::{CauseCode, cause};
use crate::state::Node;
use crate::why::{Cause, Context, Evidence};
use reachmap_proto::v1 as pb;

const WINDOW_NANOS: i64 = 3600 * 1_000_000_000;
/// Outages in the window that make a pair flapping.
const MIN_OUTAGES: usize = 2;
/// How long before an outage a change on either node counts as "just before".
const BEFORE_NANOS: i64 = 120 * 1_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Outage {
    pub start: i64,
    /// `None` while it goes on.
    pub end: Option<i64>,
    pub failure: Option<String>,
}

/// The outages of `src`'s probes of `dst:port` that ended in, or reach
/// into, (now − 1 h, now], oldest first.
pub fn outages(src: &Node, dst: &str, port: u16, now: i64) -> Vec<Outage> {
    let mut changes: Vec<(i64, i32, i32)> = src
        .events
        .iter()
        .filter_map(|e| match &e.event.kind {
            Some(pb::event::Kind::ProbeStateChanged(c))
                if c.target
                    .as_ref()
                    .is_some_and(|t| t.node == dst && t.port == u32::from(port))
                    && e.event.time_unix_nanos <= now =>
            {
                Some((e.event.time_unix_nanos, c.new_state, c.outcome))
            }
            _ => None,
        })
        .collect();
    changes.sort_by_key(|c| c.0);
    let failing = pb::TargetState::Failing as i32;
    let mut out: Vec<Outage> = Vec::new();
    let mut open: Option<Outage> = None;
    for (t, state, outcome) in changes {
        if state == failing {
            if open.is_none() {
                open = Some(Outage {
                    start: t,
                    end: None,
                    failure: crate::view::outcome_name(outcome),
                });
            }
        } else if let Some(mut o) = open.take() {
            o.end = Some(t);
            out.push(o);
        }
    }
    out.extend(open);
    out.retain(|o| o.end.is_none_or(|e| e > now - WINDOW_NANOS));
    out
}

fn length(nanos: i64) -> String {
    let secs = u64::try_from(nanos.max(0) / 1_000_000_000).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// The change on either node that came last before `t`, within two minutes.
fn change_before(ctx: &Context, t: i64) -> Option<String> {
    [ctx.src, ctx.dst]
        .into_iter()
        .flat_map(|n| n.events.iter().map(move |e| (n, e)))
        .filter(|(_, e)| {
            super::super::is_change(e)
                && !matches!(e.event.kind, Some(pb::event::Kind::StreamChanged(_)))
                && e.event.time_unix_nanos <= t
                && e.event.time_unix_nanos >= t - BEFORE_NANOS
        })
        .max_by_key(|(_, e)| e.event.time_unix_nanos)
        .map(|(n, e)| {
            let (kind, detail) = crate::view::describe(&e.event);
            format!("{kind} on {}: {detail}", n.name)
        })
}

pub(super) fn flapping(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let list = outages(ctx.src, &ctx.dst.name, ctx.port, ctx.now);
    checked.push(format!(
        "outages of {} -> {} port {} in the last hour: {}",
        ctx.src.name,
        ctx.dst.name,
        ctx.port,
        list.len()
    ));
    if list.len() < MIN_OUTAGES {
        return;
    }
    let longest = list
        .iter()
        .map(|o| o.end.unwrap_or(ctx.now) - o.start)
        .max()
        .unwrap_or(0);
    let last_end = list.iter().filter_map(|o| o.end).max();
    let ongoing = list.iter().any(|o| o.end.is_none());
    let tail = match (ongoing, last_end) {
        (true, _) => ", one still going on".to_string(),
        (false, Some(e)) => format!(", last ended {} ago", length(ctx.now - e)),
        (false, None) => String::new(),
    };
    let mut c = cause(
        CauseCode::Flapping,
        ctx.src,
        60,
        format!(
            "{} outages in the last hour, longest {}{tail}",
            list.len(),
            length(longest)
        ),
    );
    for (i, o) in list.iter().enumerate() {
        let span = match o.end {
            Some(e) => format!("lasted {}", length(e - o.start)),
            None => "still going on".to_string(),
        };
        let before = change_before(ctx, o.start)
            .map(|c| format!("; just before: {c}"))
            .unwrap_or_default();
        c.evidence.push(Evidence {
            kind: "probe".into(),
            node: ctx.src.name.clone(),
            time: o.start,
            text: format!(
                "outage {}: {span}{}{before}",
                i + 1,
                o.failure
                    .as_deref()
                    .map(|f| format!(", {f}"))
                    .unwrap_or_default()
            ),
        });
    }
    c.fix = Some(CauseCode::Flapping.fix().to_string());
    out.push(c);
}
