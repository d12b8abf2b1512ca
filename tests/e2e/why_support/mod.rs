//! Shared by the end-to-end tests of `reachmap why`: a running fleet, the
//! answer as JSON, waiting for a cause, and reading a cause's parts.

#![allow(dead_code)]

use reachmap_fleet_tests::{Fleet, assert_eventually};
use serde_json::Value;
use std::time::{Duration, SystemTime};

pub fn running_fleet(test: &str, n: usize) -> Fleet {
    let mut fleet = Fleet::new(test, n);
    fleet.start_collector();
    fleet.start_agents();
    fleet
}

pub fn why(fleet: &Fleet, src: &str, dst: &str) -> Result<Value, String> {
    cli_json(fleet, &["why", src, dst, "--format", "json"])
}

/// `reachmap ARGS` (which must ask for `--format json`), parsed.
pub fn cli_json(fleet: &Fleet, args: &[&str]) -> Result<Value, String> {
    let out = fleet.cli(args);
    if !out.status.success() {
        return Err(format!(
            "reachmap {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
}

/// Waits until `why SRC DST` gives `verdict` with `code` on `node` first;
/// returns the answer.
pub fn wait_cause(
    fleet: &Fleet,
    src: &str,
    dst: &str,
    verdict: &str,
    code: &str,
    node: &str,
) -> Value {
    assert_eventually!(
        Duration::from_secs(40),
        || {
            let w = why(fleet, src, dst)?;
            let top = &w["causes"][0];
            if w["verdict"] == verdict && top["code"] == code && top["node"] == node {
                Ok(w)
            } else {
                Err(serde_json::to_string_pretty(&w).unwrap_or_default())
            }
        },
        "why {src} {dst}: {verdict} because of {code} on {node}"
    )
}

/// Waits until the probe mesh between the nodes is all ok.
pub fn wait_mesh(fleet: &Fleet, n: usize) {
    assert_eventually!(
        Duration::from_secs(30),
        || {
            let out = fleet.cli(&["matrix", "--port", "7442", "--format", "json"]);
            let m: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let cells = m["cells"].as_array().cloned().unwrap_or_default();
            let ok = cells.iter().filter(|c| c["state"] == "ok").count();
            if ok == n * (n - 1) {
                Ok(())
            } else {
                Err(format!("{ok} ok cells: {m}"))
            }
        },
        "the probe mesh is all ok"
    );
}

/// The causes of an answer with this code.
pub fn causes<'a>(w: &'a Value, code: &str) -> Vec<&'a Value> {
    w["causes"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["code"] == code).collect())
        .unwrap_or_default()
}

/// A cause's evidence texts, one a line.
pub fn evidence(cause: &Value) -> String {
    cause["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

pub fn text<'a>(cause: &'a Value, field: &str) -> &'a str {
    cause[field].as_str().unwrap_or_default()
}

/// The top cause's evidence texts, one a line.
pub fn evidence_text(w: &Value) -> String {
    evidence(&w["causes"][0])
}

/// A sample of the collector's `/metrics`: the value of the series `name`
/// (without labels).
pub fn metric(fleet: &Fleet, name: &str) -> Result<f64, String> {
    let out = fleet.try_http_get("/metrics", &["-f"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {name} in /metrics"))
}

/// `t` as RFC 3339 in UTC, for `--at`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    // Civil date from days since the epoch (no date crate in the tests).
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
