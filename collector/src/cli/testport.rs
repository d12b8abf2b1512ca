//! `reachmap test-port` as a person reads it: one port's sentence, or with
//! `--ports` each port's result under what they say together; and
//! `reachmap trace`: where it stops, then each hop.

use crate::testport::outcome_word;
use reachmap_proto::v1 as pb;

pub fn render(r: &pb::TestPortResult) -> String {
    if r.each.is_empty() {
        return format!("{}\n", r.detail);
    }
    let rows: Vec<Vec<String>> = r
        .each
        .iter()
        .map(|t| {
            let note = if !t.error.is_empty() {
                t.error.clone()
            } else if !t.host_firewall.is_empty() {
                t.host_firewall.clone()
            } else {
                String::new()
            };
            vec![
                t.port.to_string(),
                outcome_word(t),
                if t.open {
                    format!("{:.1}", t.rtt_ms)
                } else {
                    String::new()
                },
                note,
            ]
        })
        .collect();
    format!(
        "{}\n\n{}",
        r.detail,
        super::render::render(&["PORT", "RESULT", "RTT_MS", "NOTE"], &rows)
    )
}

pub fn render_trace(r: &pb::TraceResult) -> String {
    let rows: Vec<Vec<String>> = r
        .hops
        .iter()
        .map(|h| {
            vec![
                h.ttl.to_string(),
                if h.address.is_empty() {
                    "*".into()
                } else {
                    h.address.clone()
                },
                h.kind.clone(),
                if h.kind == "silent" {
                    String::new()
                } else {
                    format!("{:.1}", h.rtt_ms)
                },
            ]
        })
        .collect();
    format!(
        "{} -> {} ({}) port {}: {}\n\n{}",
        r.src,
        r.dst,
        r.address,
        r.port,
        r.detail,
        super::render::render(&["HOP", "ADDRESS", "ANSWER", "RTT_MS"], &rows)
    )
}

pub fn trace_json(r: &pb::TraceResult) -> serde_json::Value {
    serde_json::json!({
        "src": r.src,
        "dst": r.dst,
        "address": r.address,
        "port": r.port,
        "reached": r.reached,
        "last_hop": if r.last_hop_address.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({"ttl": r.last_hop_ttl, "address": r.last_hop_address})
        },
        "detail": r.detail,
        "traced": crate::view::rfc3339(r.traced_unix_nanos),
        "hops": r.hops.iter().map(|h| serde_json::json!({
            "ttl": h.ttl,
            "address": if h.address.is_empty() { None } else { Some(&h.address) },
            "answer": h.kind,
            "code": if h.kind == "unreachable" { Some(h.code) } else { None },
            "rtt_ms": if h.kind == "silent" { None } else { Some(h.rtt_ms) },
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_is_a_row_under_the_summary() {
        let r = pb::TestPortResult {
            detail: "PATH FILTER: a -> b (198.18.0.2): only 80 passes".into(),
            each: vec![
                pb::PortTest {
                    port: 80,
                    open: true,
                    outcome: pb::ProbeOutcome::Open as i32,
                    rtt_ms: 0.4,
                    ..Default::default()
                },
                pb::PortTest {
                    port: 22,
                    outcome: pb::ProbeOutcome::Timeout as i32,
                    host_firewall: "b's firewall: rule 3".into(),
                    ..Default::default()
                },
                pb::PortTest {
                    port: 25,
                    error: "in use on b by exim (pid 9)".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PATH FILTER: a -> b (198.18.0.2): only 80 passes");
        assert!(lines[2].starts_with("PORT"), "{text}");
        assert!(lines[3].contains("80") && lines[3].contains("open") && lines[3].contains("0.4"));
        assert!(
            lines[4].contains("timeout") && lines[4].contains("rule 3"),
            "{text}"
        );
        assert!(
            lines[5].contains("not tested") && lines[5].contains("exim"),
            "{text}"
        );
    }
}
