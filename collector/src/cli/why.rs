//! `reachmap why`: the verdict, then each cause with its evidence and fix,
//! then what changed and what was checked.

use crate::why::{Explanation, Verdict};
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ago(nanos: i64, now: SystemTime) -> String {
    let Ok(n) = u64::try_from(nanos) else {
        return "-".into();
    };
    if n == 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_nanos(n);
    match now.duration_since(t) {
        Ok(d) if d.as_secs() < 120 => format!("{}s ago", d.as_secs()),
        Ok(d) if d.as_secs() < 7200 => format!("{}m ago", d.as_secs() / 60),
        Ok(d) => format!("{}h ago", d.as_secs() / 3600),
        Err(_) => "now".into(),
    }
}

pub fn render(e: &Explanation, now: SystemTime, color: bool) -> String {
    let mut out = String::new();
    let (word, paint) = match e.verdict {
        Verdict::Reachable => ("REACHABLE", "\x1b[32m"),
        Verdict::Degraded => ("DEGRADED", "\x1b[33m"),
        Verdict::Unreachable => ("UNREACHABLE", "\x1b[1;31m"),
        Verdict::Unknown => ("UNKNOWN", "\x1b[90m"),
    };
    let verdict = if color {
        format!("{paint}{word}\x1b[0m")
    } else {
        word.to_string()
    };
    let _ = writeln!(out, "{} -> {} port {}: {verdict}", e.src, e.dst, e.port);
    if let Some(p) = &e.probe {
        let _ = writeln!(
            out,
            "  probes {}/{} to {}: {}{}, loss {:.0}%{}",
            p.kind,
            p.port,
            p.address,
            p.state,
            p.failure
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            p.loss * 100.0,
            p.rtt_ms
                .map(|r| format!(", rtt {r:.1}ms"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = &e.reverse {
        let _ = writeln!(out, "  the other way ({} -> {}): {}", r.src, r.dst, r.state);
    }
    for a in &e.addresses {
        let state = match a.listening {
            Some(true) => "listening",
            Some(false) => "nothing listens there",
            None => "-",
        };
        let verdict = if e.address.as_deref() == Some(a.address.as_str()) {
            "  <- the verdict's address"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  clients reach {} at {} ({}): {state}{verdict}",
            e.dst, a.address, a.via
        );
    }
    if e.causes.is_empty() {
        if e.verdict != Verdict::Reachable {
            out.push_str("\nno cause found in the facts: UNKNOWN. What was checked:\n");
            for c in &e.checked {
                let _ = writeln!(out, "  - {c}");
            }
        }
    } else {
        out.push('\n');
        for (i, c) in e.causes.iter().enumerate() {
            let _ = writeln!(out, "{}. {} on {}: {}", i + 1, c.code, c.node, c.detail);
            for v in &c.evidence {
                let _ = writeln!(
                    out,
                    "     {} [{} {}] {}",
                    v.kind,
                    v.node,
                    ago(v.time, now),
                    v.text
                );
            }
            if let Some(f) = &c.fix {
                let _ = writeln!(out, "     fix: {f}");
            }
        }
    }
    if !e.changes.is_empty() {
        out.push_str("\nwhat changed (newest first):\n");
        for c in &e.changes {
            let _ = writeln!(
                out,
                "  {:<8} {:<8} {:<20} {}",
                ago(c.time, now),
                c.node,
                c.kind,
                c.detail
            );
        }
    }
    out
}
