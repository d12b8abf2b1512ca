//! `reachmap events` and `reachmap history` as a person reads them.

use super::when;
use crate::view::{EventsView, HistoryView};

pub fn events(v: &EventsView, local: bool) -> String {
    let mut out = String::new();
    if v.events.is_empty() {
        out.push_str("no events in that range\n");
    } else {
        let mut rows = Vec::new();
        for e in &v.events {
            rows.push(vec![
                when::show(e.time_unix_nanos, local),
                e.node.clone(),
                e.kind.to_string(),
                e.detail.clone(),
            ]);
        }
        out.push_str(&super::render::render(
            &["TIME", "NODE", "KIND", "WHAT"],
            &rows,
        ));
    }
    if v.truncated {
        out.push_str(
            "(more matched: only the newest are shown; narrow the range or raise --limit)\n",
        );
    }
    if let Some(r) = &v.retained_since {
        out.push_str(&format!("the store holds events from {r} on\n"));
    }
    out
}

pub fn timeline(v: &HistoryView, now: i64, local: bool) -> String {
    let mut out = format!("{} -> {}:{} ({})\n", v.src, v.dst, v.port, v.kind);
    if v.outages == 0 {
        out.push_str("no outages in this range\n");
    } else {
        let last = if v.last_outage_end_unix_nanos > 0 {
            format!(
                ", last ended {} ago",
                when::length(now - v.last_outage_end_unix_nanos)
            )
        } else {
            ", one still going on".to_string()
        };
        out.push_str(&format!(
            "{} outage{}, longest {}{last}\n",
            v.outages,
            if v.outages == 1 { "" } else { "s" },
            when::length((v.longest_outage_seconds * 1e9) as i64)
        ));
    }
    let mut rows = Vec::new();
    for i in &v.intervals {
        let to = if i.end_unix_nanos == 0 {
            "now".to_string()
        } else {
            when::show(i.end_unix_nanos, local)
        };
        let bad = i.state == "failing" || i.state == "degraded";
        rows.push(vec![
            when::show(i.start_unix_nanos, local),
            to,
            when::length((i.seconds * 1e9) as i64),
            i.state.clone(),
            i.failure
                .clone()
                .filter(|_| bad)
                .unwrap_or_else(|| "-".into()),
            if bad {
                format!("{:.0}%", i.loss * 100.0)
            } else {
                "-".into()
            },
            i.cause
                .as_ref()
                .map(|c| format!("{} on {}: {}", c.code, c.node, c.detail))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&super::render::render(
        &["FROM", "TO", "FOR", "STATE", "FAILURE", "LOSS", "CAUSE"],
        &rows,
    ));
    for i in v.intervals.iter().filter(|i| !i.changes.is_empty()) {
        out.push_str(&format!(
            "\nbefore {} ({}):\n",
            when::show(i.start_unix_nanos, local),
            i.state
        ));
        for c in &i.changes {
            out.push_str(&format!(
                "  {}  {}  {}: {}\n",
                when::show(c.time, local),
                c.node,
                c.kind,
                c.detail
            ));
        }
    }
    if let Some(r) = &v.retained_since {
        out.push_str(&format!("the store holds history from {r} on\n"));
    }
    out
}
