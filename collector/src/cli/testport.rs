//! `reachmap test-port` as a person reads it: one port's sentence, or with
//! `--ports` each port's result under what they say together.

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
