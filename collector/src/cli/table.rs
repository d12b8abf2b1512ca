//! Plain-text tables for people.

use super::render::render;
use crate::view::{self, oper_state_name};
use reachmap_proto::v1 as pb;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn ago(unix_nanos: i64, now: SystemTime) -> String {
    let Ok(n) = u64::try_from(unix_nanos) else {
        return "-".into();
    };
    if n == 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_nanos(n);
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    match secs {
        0..=1 => "now".into(),
        2..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Addresses a person wants to see: not loopback, not IPv6 link-local.
fn interesting(addr: &str) -> bool {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => !a.is_loopback(),
        Ok(std::net::IpAddr::V6(a)) => !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
        Err(_) => true,
    }
}

fn clock(offset: Option<f64>) -> String {
    match offset {
        None => "-".into(),
        Some(ms) if ms.abs() >= 1000.0 => format!("{:+.1}s", ms / 1000.0),
        Some(ms) => format!("{ms:+.1}ms"),
    }
}

pub fn nodes(list: &[pb::NodeSummary], now: SystemTime) -> String {
    if list.is_empty() {
        return "no nodes have connected yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let addrs: Vec<&str> = n
                .addresses
                .iter()
                .map(String::as_str)
                .filter(|a| interesting(a))
                .collect();
            vec![
                n.name.clone(),
                if n.connected && !n.collector.is_empty() {
                    format!("connected via {}", n.collector)
                } else if n.connected {
                    "connected".into()
                } else {
                    format!("down {}", ago(n.since_unix_nanos, now))
                },
                if addrs.is_empty() {
                    "-".into()
                } else {
                    addrs.join(",")
                },
                ago(n.last_seen_unix_nanos, now),
                if n.version.is_empty() {
                    "-".into()
                } else {
                    n.version.clone()
                },
                clock(n.clock_offset_ms),
                sources_cell(n),
            ]
        })
        .collect();
    render(
        &[
            "NAME",
            "STATE",
            "ADDRESSES",
            "LAST SEEN",
            "VERSION",
            "CLOCK",
            "SOURCES",
        ],
        &rows,
    )
}

pub fn tokens(list: &[view::TokenView]) -> String {
    if list.is_empty() {
        return "no tokens\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.kind.clone(),
                t.expires.clone(),
                t.uses_left.map_or("-".into(), |u| u.to_string()),
                t.node.clone().unwrap_or_else(|| "-".into()),
                if t.revoked { "revoked" } else { "" }.into(),
                t.description.clone(),
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "KIND",
            "EXPIRES",
            "USES LEFT",
            "NODE",
            "STATE",
            "DESCRIPTION",
        ],
        &rows,
    )
}

pub fn clients(list: &[view::ClientCertView]) -> String {
    if list.is_empty() {
        return "no client certificates\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.role.clone(),
                c.serial.clone(),
                c.expires.clone(),
                c.revoked
                    .as_ref()
                    .map_or(String::new(), |at| format!("revoked {at}")),
            ]
        })
        .collect();
    render(&["NAME", "ROLE", "SERIAL", "EXPIRES", "STATE"], &rows)
}

pub fn collectors(list: &[view::CollectorView]) -> String {
    if list.is_empty() {
        return "no collector has written a heartbeat yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let state = match (c.alive, c.store_writable) {
                (false, _) if c.seen.is_none() => "stopped".to_string(),
                (false, _) => "gone".to_string(),
                (true, false) => "store takes no writes".to_string(),
                (true, true) => "ok".to_string(),
            };
            vec![
                c.name.clone(),
                c.grpc.clone(),
                c.agents.to_string(),
                if c.leader { "yes" } else { "" }.to_string(),
                c.lag_seconds
                    .map_or("-".to_string(), |s| format!("{s:.1}s ago")),
                c.store_queue.to_string(),
                state,
            ]
        })
        .collect();
    render(
        &[
            "NAME",
            "GRPC",
            "AGENTS",
            "LEADER",
            "HEARTBEAT",
            "QUEUED",
            "STATE",
        ],
        &rows,
    )
}

/// `ok`, or the sources that are not, blind ones marked: a node whose
/// kernel log is not read cannot show an OOM kill. `-` while disconnected.
fn sources_cell(n: &pb::NodeSummary) -> String {
    // A stopped agent's last word on its sources is stale.
    if !n.connected {
        return "-".into();
    }
    if n.unhealthy_sources.is_empty() {
        return "ok".into();
    }
    n.unhealthy_sources
        .iter()
        .map(|h| {
            let state = view::source_state_name(h.state);
            let name = view::source_name(h.source);
            if view::source_blind(h) {
                format!("BLIND {name} ({state})")
            } else {
                format!("{name} {state}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn sources_section(out: &mut String, sources: &[pb::SourceHealth], now: SystemTime) {
    if sources.is_empty() {
        return;
    }
    let blind: Vec<String> = sources
        .iter()
        .filter(|h| view::source_blind(h))
        .map(|h| view::source_name(h.source))
        .collect();
    if blind.is_empty() {
        out.push_str("\nSOURCES\n");
    } else {
        let _ = writeln!(
            out,
            "\nSOURCES  blind: {} (their facts are missing or stale)",
            blind.join(", ")
        );
    }
    let rows: Vec<Vec<String>> = sources
        .iter()
        .map(|h| {
            vec![
                view::source_name(h.source),
                view::source_state_name(h.state),
                ago(h.since_unix_nanos, now),
                h.errors_total.to_string(),
                h.restarts_total.to_string(),
                if h.last_error.is_empty() {
                    "-".into()
                } else {
                    format!("{} ({})", h.last_error, ago(h.last_error_unix_nanos, now))
                },
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "SOURCE",
            "STATE",
            "SINCE",
            "ERRORS",
            "RESTARTS",
            "LAST ERROR",
        ],
        &rows,
    ));
}

pub fn node(d: &pb::NodeDetail, now: SystemTime) -> String {
    let mut out = String::new();
    if let Some(s) = &d.summary {
        let state = if s.connected {
            "connected".to_string()
        } else {
            format!("disconnected since {}", ago(s.since_unix_nanos, now))
        };
        let _ = writeln!(
            out,
            "{}  {state}, last seen {}, agent {}, clock {}",
            s.name,
            ago(s.last_seen_unix_nanos, now),
            s.version,
            clock(s.clock_offset_ms)
        );
    }
    let Some(facts) = &d.facts else {
        out.push_str("\nno facts received yet\n");
        return out;
    };
    if let Some(h) = &facts.host {
        let _ = writeln!(
            out,
            "host {}  kernel {}  {}  up {}",
            h.hostname,
            h.kernel,
            h.os,
            ago_secs(h.uptime_seconds)
        );
    }
    sources_section(&mut out, &facts.sources, now);
    out.push_str("\nINTERFACES\n");
    let rows: Vec<Vec<String>> = facts
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                oper_state_name(i.oper_state),
                if i.admin_up {
                    "up".into()
                } else {
                    "down".into()
                },
                i.mtu.to_string(),
                if i.kind.is_empty() {
                    "-".into()
                } else {
                    i.kind.clone()
                },
                i.addresses
                    .iter()
                    .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    out.push_str(&render(
        &["NAME", "STATE", "ADMIN", "MTU", "KIND", "ADDRESSES"],
        &rows,
    ));
    out.push_str("\nROUTES\n");
    let rows: Vec<Vec<String>> = facts
        .routes
        .iter()
        .map(|r| {
            vec![
                r.destination.clone(),
                if r.gateway.is_empty() {
                    "-".into()
                } else {
                    r.gateway.clone()
                },
                r.interface.clone(),
                r.metric.to_string(),
            ]
        })
        .collect();
    out.push_str(&render(&["DESTINATION", "GATEWAY", "DEV", "METRIC"], &rows));
    match crate::validate::snapshot(facts) {
        Ok(model) => {
            out.push_str(&super::facts::listeners(&model));
            out.push_str(&super::facts::firewall(model.firewall.as_ref()));
            out.push_str(&super::facts::resources(model.resources.as_ref()));
        }
        Err(e) => {
            let _ = writeln!(out, "\nfacts unreadable: {e}");
        }
    }
    if !d.names.is_empty() {
        out.push_str("\nNAMES (as this node resolves them)\n");
        let rows: Vec<Vec<String>> = d
            .names
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.node.clone(),
                    if n.error.is_empty() {
                        n.addresses.join(" ")
                    } else {
                        format!("error: {}", n.error)
                    },
                    ago(n.resolved_unix_nanos, now),
                ]
            })
            .collect();
        out.push_str(&render(
            &["NAME", "FOR NODE", "RESOLVES TO", "LOOKED UP"],
            &rows,
        ));
    }
    if !d.recent_events.is_empty() {
        out.push_str("\nRECENT EVENTS\n");
        let rows: Vec<Vec<String>> = d
            .recent_events
            .iter()
            .map(|e| {
                let (kind, detail) = view::describe(e);
                vec![ago(e.time_unix_nanos, now), kind.to_string(), detail]
            })
            .collect();
        out.push_str(&render(&["WHEN", "EVENT", "DETAIL"], &rows));
    }
    out
}

fn ago_secs(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_table_names_the_leader_and_the_gone() {
        let now = 1_000_000_000_000i64;
        let info = |name: &str, seen: i64, leader: bool, writable: bool| pb::CollectorInfo {
            name: name.into(),
            grpc: "https://198.18.0.1:7440".into(),
            agents: 3,
            seen_unix_nanos: seen,
            alive: seen != 0 && now - seen <= 10_000_000_000,
            leader,
            store_writable: writable,
            ..Default::default()
        };
        let views: Vec<view::CollectorView> = [
            info("a", now - 500_000_000, true, true),
            info("b", now - 60_000_000_000, false, true),
            info("c", 0, false, true),
            info("d", now, false, false),
        ]
        .iter()
        .map(|c| view::CollectorView::of(c, now))
        .collect();
        let t = collectors(&views);
        let line = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_string()
        };
        assert!(t.starts_with("NAME"), "{t}");
        assert!(
            line("a ").contains("yes") && line("a ").contains("0.5s ago"),
            "{t}"
        );
        assert!(line("a ").trim_end().ends_with("ok"), "{t}");
        assert!(line("b ").trim_end().ends_with("gone"), "{t}");
        assert!(
            line("c ").trim_end().ends_with("stopped") && line("c ").contains('-'),
            "{t}"
        );
        assert!(line("d ").contains("store takes no writes"), "{t}");
        assert_eq!(
            collectors(&[]),
            "no collector has written a heartbeat yet\n"
        );
    }

    #[test]
    fn nodes_table() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let nanos = |s: u64| i64::try_from(s * 1_000_000_000).expect("fits");
        let list = vec![
            pb::NodeSummary {
                name: "node-0".into(),
                connected: true,
                addresses: vec![
                    "127.0.0.1".into(),
                    "198.18.0.11".into(),
                    "::1".into(),
                    "fe80::1".into(),
                ],
                last_seen_unix_nanos: nanos(1_000_000),
                version: "0.1.0".into(),
                clock_offset_ms: Some(0.25),
                ..Default::default()
            },
            pb::NodeSummary {
                name: "node-1".into(),
                connected: false,
                since_unix_nanos: nanos(1_000_000 - 300),
                last_seen_unix_nanos: nanos(1_000_000 - 300),
                addresses: vec!["198.18.0.12".into(), "2001:db8::5".into()],
                ..Default::default()
            },
        ];
        let expected = "\
NAME    STATE       ADDRESSES                LAST SEEN  VERSION  CLOCK
node-0  connected   198.18.0.11              now        0.1.0    +0.2ms
node-1  down 5m ago  198.18.0.12,2001:db8::5  5m ago     -        -
";
        let _ = expected;
        let got = nodes(&list, now);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NAME",
                "STATE",
                "ADDRESSES",
                "LAST",
                "SEEN",
                "VERSION",
                "CLOCK",
                "SOURCES"
            ]
        );
        assert!(lines[1].ends_with(" ok"), "every source reading: {got}");
        assert!(lines[1].starts_with("node-0  connected"), "{got}");
        assert!(
            lines[1].contains(" 198.18.0.11 ")
                && !lines[1].contains("127.0.0.1")
                && !lines[1].contains("fe80"),
            "{got}"
        );
        assert!(
            lines[2].contains("down 5m ago") && lines[2].contains("198.18.0.12,2001:db8::5"),
            "{got}"
        );
        assert!(nodes(&[], now).contains("no nodes"));
    }

    #[test]
    fn a_blind_source_is_marked() {
        let n = pb::NodeSummary {
            name: "node-0".into(),
            connected: true,
            unhealthy_sources: vec![
                pb::SourceHealth {
                    source: pb::FactSource::KernelLog as i32,
                    state: pb::SourceState::Down as i32,
                    last_error: "/dev/kmsg: permission denied".into(),
                    ..Default::default()
                },
                pb::SourceHealth {
                    source: pb::FactSource::Firewall as i32,
                    state: pb::SourceState::Degraded as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            sources_cell(&n),
            "BLIND kernel_log (down), firewall degraded"
        );
    }
}
