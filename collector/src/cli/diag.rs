//! `reachmap diag NODE` and `reachmap diag --fleet`: everything the
//! collector knows about one node (or the fleet at a glance) as one
//! `.tar.gz` — each part as JSON and, where a person reads it, as text, with
//! a manifest of every file's size and SHA-256.
//!
//! Fetching (`run`) is apart from making the bundle: `node_bundle` and
//! `fleet_bundle` turn the collector's answers into files, `archive` packs
//! them, `write_private` puts the archive in place. Nothing secret goes in:
//! no token, no key, no credentials path; the agent's configuration comes
//! without its secrets and any member that looks like one is left out here
//! as well.

use super::json as pretty;
use super::{CliError, connect, history, matrix, status, table, when, why};
use crate::view::{self, CellView, EventsView, MatrixView, NodeDetailView};
use reachmap_proto::v1 as pb;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The bundle's layout; a reader checks it before anything else.
pub const FORMAT_VERSION: u32 = 1;
/// Failing or degraded cells explained at most, worst first.
pub const MAX_WHY: usize = 100;
/// Events fetched at most, the newest.
const MAX_EVENTS: u32 = 10_000;
/// Member names of the agent's configuration that are never written, in
/// case an agent sends one (a string under such a name is left out).
const SECRET_NAMES: [&str; 7] = [
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "private_key",
    "api_key",
];

/// What every bundle says about its making.
pub struct Meta {
    /// The collector's URL, as given (user information is left out).
    pub collector: String,
    pub made: SystemTime,
    pub cli_version: &'static str,
}

/// One explanation asked for, or why it could not be had.
pub struct WhyOutcome {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub answer: Result<pb::WhyAnswer, String>,
}

/// The collector's answers about one node.
pub struct NodeAnswers {
    pub detail: pb::NodeDetail,
    pub events: pb::EventsResponse,
    /// The start of the events' range, unix nanoseconds.
    pub events_since: i64,
    pub matrix: pb::Matrix,
    /// At most [`MAX_WHY`], worst first.
    pub whys: Vec<WhyOutcome>,
    /// Failing or degraded cells from or to the node a `why` can explain
    /// (all of them, also those left out by the cap).
    pub bad_cells: usize,
}

/// The collector's answers about the whole fleet.
pub struct FleetAnswers {
    pub nodes: pb::ListNodesResponse,
    pub matrix: pb::Matrix,
}

/// A bundle before packing: the top directory's name and its files (paths
/// relative to it), the manifest first.
pub struct Bundle {
    pub top: String,
    pub files: Vec<(String, Vec<u8>)>,
}

#[derive(Serialize)]
struct FileEntry {
    path: String,
    bytes: usize,
    sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// `https://user:secret@host:7440` → `https://host:7440`.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// `20261203T101500Z`, the bundle's time in names.
pub fn stamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// `reachmap-diag-NODE-TIME` (or `-fleet-`): the top directory, and with
/// `.tar.gz` the default file name.
pub fn bundle_name(what: &str, made: SystemTime) -> String {
    format!("reachmap-diag-{what}-{}", stamp(made))
}

fn nanos(t: SystemTime) -> i64 {
    crate::state::unix_nanos(t)
}

/// Leaves out every string member whose name looks like a secret, at any
/// depth; how many were left out.
fn scrub(v: &mut Value) -> usize {
    match v {
        Value::Object(map) => {
            let secret: Vec<String> = map
                .iter()
                .filter(|(k, v)| {
                    let k = k.to_ascii_lowercase();
                    v.is_string() && SECRET_NAMES.iter().any(|s| k.contains(s))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in &secret {
                map.remove(k);
            }
            secret.len() + map.values_mut().map(scrub).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(scrub).sum(),
        _ => 0,
    }
}

/// `agent-config.json`: the agent's configuration without secrets, or a
/// note saying why there is none; and a note for the manifest.
fn agent_config(text: &str) -> (Value, Option<String>) {
    if text.is_empty() {
        return (
            json!({"note": "the agent did not send its configuration (an agent older than this feature, or one never connected since the collector started)"}),
            Some("agent-config.json: the agent did not send its configuration".into()),
        );
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            let left_out = scrub(&mut v);
            let note = (left_out > 0).then(|| {
                format!("agent-config.json: {left_out} member(s) that looked secret left out")
            });
            (v, note)
        }
        Err(e) => (
            json!({"note": format!("the agent's configuration is not JSON: {e}")}),
            Some("agent-config.json: the configuration the collector holds is not JSON".into()),
        ),
    }
}

fn is_bad(c: &CellView) -> bool {
    c.state == "failing" || c.state == "degraded"
}

/// Cells per state: ok, degraded, failing, unknown.
fn counts<'a>(cells: impl Iterator<Item = &'a CellView>) -> BTreeMap<&'static str, usize> {
    let mut n: BTreeMap<&'static str, usize> = ["ok", "degraded", "failing", "unknown"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for c in cells {
        let key = match c.state.as_str() {
            "ok" => "ok",
            "degraded" => "degraded",
            "failing" => "failing",
            _ => "unknown",
        };
        *n.entry(key).or_default() += 1;
    }
    n
}

fn counts_line(n: &BTreeMap<&'static str, usize>) -> String {
    let total: usize = n.values().sum();
    let get = |k: &str| n.get(k).copied().unwrap_or(0);
    format!(
        "{total} cells: {} ok, {} degraded, {} failing, {} unknown",
        get("ok"),
        get("degraded"),
        get("failing"),
        get("unknown")
    )
}

/// The node's row and column of the matrix, sorted.
pub fn node_cells(m: &pb::Matrix, node: &str) -> Vec<CellView> {
    let mut cells: Vec<CellView> = m
        .cells
        .iter()
        .filter(|c| c.src == node || c.dst == node)
        .map(CellView::from)
        .collect();
    cells.sort_by(|a, b| (&a.src, &a.dst, a.port, &a.kind).cmp(&(&b.src, &b.dst, b.port, &b.kind)));
    cells
}

/// The failing or degraded cells from or to the node worth a `why`
/// (TCP and HTTP: ICMP has no port to explain), each (src, dst, port)
/// once, worst first, at most `max`; and how many there are in all.
pub fn cells_to_explain(
    m: &pb::Matrix,
    node: &str,
    max: usize,
) -> (Vec<(String, String, u16)>, usize) {
    let mine = MatrixView {
        nodes: m.nodes.clone(),
        cells: node_cells(m, node),
        zones: Vec::new(),
        cells_left_out: 0,
    };
    let mut asks = matrix::cells_to_explain(&mine, None, usize::MAX);
    let mut seen = std::collections::HashSet::new();
    asks.retain(|k| seen.insert(k.clone()));
    let all = asks.len();
    asks.truncate(max);
    (asks, all)
}

/// Packs the other files' entries and the manifest into a bundle.
fn finish(top: String, manifest: Value, files: Vec<(String, Vec<u8>)>) -> Bundle {
    let entries: Vec<FileEntry> = files
        .iter()
        .map(|(path, bytes)| FileEntry {
            path: path.clone(),
            bytes: bytes.len(),
            sha256: sha256_hex(bytes),
        })
        .collect();
    let mut manifest = manifest;
    manifest["files"] = serde_json::to_value(&entries).unwrap_or_default();
    let mut all = vec![("manifest.json".to_string(), pretty(&manifest).into_bytes())];
    all.extend(files);
    Bundle { top, files: all }
}

fn base_manifest(meta: &Meta, kind: &str, node: Option<&str>, top: &str) -> Value {
    json!({
        "format": FORMAT_VERSION,
        "kind": kind,
        "node": node,
        "top": top,
        "collector": without_userinfo(&meta.collector),
        "made": view::rfc3339(nanos(meta.made)),
        "cli_version": meta.cli_version,
    })
}

/// `why.json` and `why.txt`, and each explained cell's top cause.
fn why_files(
    a: &NodeAnswers,
    node: &str,
    made: SystemTime,
) -> (Value, String, BTreeMap<(String, String, u16), String>) {
    let mut list = Vec::new();
    let mut text = String::new();
    let mut top = BTreeMap::new();
    for w in &a.whys {
        match &w.answer {
            Ok(answer) => {
                let e = crate::why::Explanation::from(answer);
                if let Some(c) = e.causes.first() {
                    top.insert(
                        (w.src.clone(), w.dst.clone(), w.port),
                        format!("{} on {}: {}", c.code, c.node, c.detail),
                    );
                }
                text.push_str(&why::render(&e, made, false));
                list.push(serde_json::to_value(&e).unwrap_or_default());
            }
            Err(err) => {
                let _ = writeln!(
                    text,
                    "{} -> {} port {}: no answer: {err}",
                    w.src, w.dst, w.port
                );
                list.push(json!({"src": w.src, "dst": w.dst, "port": w.port, "error": err}));
            }
        }
        text.push('\n');
    }
    if a.whys.is_empty() {
        let _ = writeln!(text, "no failing or degraded cells from or to {node}");
    }
    let doc = json!({
        "bad_cells": a.bad_cells,
        "explained": a.whys.len(),
        "capped": a.bad_cells > a.whys.len(),
        "explanations": list,
    });
    (doc, text, top)
}

/// The failing and degraded cells of `cells`, each with its top cause.
fn bad_cells_table(cells: &[CellView], top: &BTreeMap<(String, String, u16), String>) -> String {
    let rows: Vec<Vec<String>> = cells
        .iter()
        .filter(|c| is_bad(c))
        .map(|c| {
            vec![
                c.src.clone(),
                c.dst.clone(),
                c.port.to_string(),
                c.kind.clone(),
                c.state.clone(),
                format!("{:.0}%", c.loss * 100.0),
                c.failure.clone().unwrap_or_else(|| "-".into()),
                top.get(&(c.src.clone(), c.dst.clone(), c.port))
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    super::render::render(
        &[
            "SRC",
            "DST",
            "PORT",
            "KIND",
            "STATE",
            "LOSS",
            "FAILURE",
            "TOP CAUSE",
        ],
        &rows,
    )
}

/// The heading line of a summary.
fn heading(what: &str, meta: &Meta) -> String {
    format!(
        "reachmap diag of {what}, made {} from {} (reachmap {})\n\n",
        view::rfc3339(nanos(meta.made)).unwrap_or_default(),
        without_userinfo(&meta.collector),
        meta.cli_version
    )
}

/// The bundle of one node: every file and the manifest.
pub fn node_bundle(a: &NodeAnswers, meta: &Meta) -> Bundle {
    let summary = a.detail.summary.clone().unwrap_or_default();
    let node = summary.name.clone();
    let top = bundle_name(&node, meta.made);
    let cells = node_cells(&a.matrix, &node);
    let (why_json, why_txt, top_cause) = why_files(a, &node, meta.made);
    let events = EventsView::from(&a.events);
    let (config, config_note) = agent_config(&a.detail.agent_config_json);

    let mut notes: Vec<String> = Vec::new();
    let capped = a.bad_cells > a.whys.len();
    if capped {
        notes.push(format!(
            "why.json explains {} of the {} failing or degraded cells (worst first, at most {MAX_WHY})",
            a.whys.len(),
            a.bad_cells
        ));
    }
    let failed_whys = a.whys.iter().filter(|w| w.answer.is_err()).count();
    if failed_whys > 0 {
        notes.push(format!(
            "why.json: {failed_whys} explanation(s) could not be had (their errors are in it)"
        ));
    }
    if events.truncated {
        notes.push(format!(
            "events.json: more events matched; only the newest {MAX_EVENTS} are in it"
        ));
    }
    notes.extend(config_note);

    // What `reachmap node` prints, then the node's bad cells and its clock.
    let mut text = heading(&node, meta);
    text.push_str(&table::node(&a.detail, meta.made));
    let _ = writeln!(
        text,
        "\nCELLS FROM AND TO {node}\n{}",
        counts_line(&counts(cells.iter()))
    );
    if cells.iter().any(is_bad) {
        text.push_str(&bad_cells_table(&cells, &top_cause));
        text.push_str("(each explained in why.txt)\n");
    } else {
        let _ = writeln!(text, "no failing or degraded cells from or to {node}");
    }
    let _ = writeln!(
        text,
        "\nCLOCK offset {} (rtt {}), agent {}, {} since {}",
        summary
            .clock_offset_ms
            .map_or("-".to_string(), |v| format!("{v:+.1}ms")),
        summary
            .clock_rtt_ms
            .map_or("-".to_string(), |v| format!("{v:.1}ms")),
        if summary.version.is_empty() {
            "-"
        } else {
            &summary.version
        },
        if summary.connected {
            "connected"
        } else {
            "disconnected"
        },
        view::rfc3339(summary.since_unix_nanos).unwrap_or_else(|| "-".into())
    );
    for n in &notes {
        let _ = writeln!(text, "note: {n}");
    }

    let mut events_txt = format!(
        "events of {node} since {}\n",
        when::show(a.events_since, false)
    );
    events_txt.push_str(&history::events(&events, false));
    let clock = json!({
        "node": node,
        "clock_offset_ms": summary.clock_offset_ms,
        "clock_rtt_ms": summary.clock_rtt_ms,
        "agent_version": summary.version,
        "connected": summary.connected,
        "since": view::rfc3339(summary.since_unix_nanos),
        "last_seen": view::rfc3339(summary.last_seen_unix_nanos),
        "collector_time": view::rfc3339(nanos(meta.made)),
    });
    let matrix = json!({
        "node": node,
        "states": counts(cells.iter()),
        "cells": cells,
    });
    let files = vec![
        ("summary.txt".to_string(), text.into_bytes()),
        (
            "node.json".to_string(),
            pretty(&NodeDetailView::from(&a.detail)).into_bytes(),
        ),
        ("events.json".to_string(), pretty(&events).into_bytes()),
        ("events.txt".to_string(), events_txt.into_bytes()),
        ("matrix.json".to_string(), pretty(&matrix).into_bytes()),
        ("why.json".to_string(), pretty(&why_json).into_bytes()),
        ("why.txt".to_string(), why_txt.into_bytes()),
        (
            "agent-config.json".to_string(),
            pretty(&config).into_bytes(),
        ),
        ("clock.json".to_string(), pretty(&clock).into_bytes()),
    ];
    let mut manifest = base_manifest(meta, "node", Some(&node), &top);
    manifest["events_since"] = json!(view::rfc3339(a.events_since));
    manifest["why"] = json!({
        "bad_cells": a.bad_cells,
        "explained": a.whys.len(),
        "max": MAX_WHY,
        "capped": capped,
    });
    manifest["notes"] = json!(notes);
    finish(top, manifest, files)
}

/// The bundle of the fleet: nodes, the matrix's counts and failing cells.
pub fn fleet_bundle(a: &FleetAnswers, meta: &Meta) -> Bundle {
    let top = bundle_name("fleet", meta.made);
    let m = MatrixView::from(&a.matrix);
    let states = counts(m.cells.iter());
    let pick = |state: &str| -> Vec<Value> {
        m.cells
            .iter()
            .filter(|c| c.state == state)
            .map(|c| {
                json!({
                    "src": c.src, "dst": c.dst, "port": c.port, "kind": c.kind,
                    "loss": c.loss, "failure": c.failure,
                })
            })
            .collect()
    };
    let mut text = heading("the fleet", meta);
    text.push_str(&table::nodes(&a.nodes.nodes, meta.made));
    let _ = writeln!(text, "\n{}", counts_line(&states));
    let bad: Vec<Vec<String>> = m
        .cells
        .iter()
        .filter(|c| is_bad(c))
        .map(|c| {
            vec![
                c.src.clone(),
                c.dst.clone(),
                c.port.to_string(),
                c.kind.clone(),
                c.state.clone(),
                c.failure.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if !bad.is_empty() {
        text.push_str(&super::render::render(
            &["SRC", "DST", "PORT", "KIND", "STATE", "FAILURE"],
            &bad,
        ));
    }
    let mut notes = Vec::new();
    if let Some(st) = a.nodes.store.as_ref().filter(|s| !s.writable) {
        let line = format!(
            "the collector's store takes no writes since {}: {}",
            when::show(st.failing_since_unix_nanos, false),
            st.error
        );
        let _ = writeln!(text, "\n{line}");
        notes.push(line);
    }
    let files = vec![
        ("summary.txt".to_string(), text.into_bytes()),
        (
            "nodes.json".to_string(),
            pretty(&view::nodes(&a.nodes.nodes)).into_bytes(),
        ),
        (
            "matrix-summary.json".to_string(),
            pretty(&json!({
                "nodes": m.nodes,
                "cells": m.cells.len(),
                "states": states,
                "failing": pick("failing"),
                "degraded": pick("degraded"),
            }))
            .into_bytes(),
        ),
    ];
    let mut manifest = base_manifest(meta, "fleet", None, &top);
    manifest["notes"] = json!(notes);
    finish(top, manifest, files)
}

/// The bundle as a gzipped tar: one top directory, files 0600, all with
/// the bundle's time.
pub fn archive(b: &Bundle, made: SystemTime) -> std::io::Result<Vec<u8>> {
    let mtime = made
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o700);
    dir.set_mtime(mtime);
    dir.set_size(0);
    tar.append_data(&mut dir, format!("{}/", b.top), std::io::empty())?;
    for (path, bytes) in &b.files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, format!("{}/{path}", b.top), bytes.as_slice())?;
    }
    tar.into_inner()?.finish()
}

/// Writes `bytes` to `path` through a temporary file beside it (mode 0600),
/// renamed into place: a reader never sees half a bundle.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| CliError::Query(format!("cannot write {}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{}: not a file name", path.display())))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp_name = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
    let tmp = dir.map_or_else(|| PathBuf::from(&tmp_name), |d| d.join(&tmp_name));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// Where the bundle goes: `-o FILE`, inside `-o DIR` when it is a
/// directory, else the default name in the current directory.
fn target(out: Option<PathBuf>, name: &str) -> PathBuf {
    let file = format!("{name}.tar.gz");
    match out {
        Some(p) if p.is_dir() => p.join(file),
        Some(p) => p,
        None => PathBuf::from(file),
    }
}

/// `reachmap diag`: fetches, bundles, writes; the line to print.
pub async fn run(
    client: &mut connect::Client,
    url: &str,
    node: Option<String>,
    out: Option<PathBuf>,
    since: &str,
    now: SystemTime,
) -> Result<String, CliError> {
    let meta = Meta {
        collector: url.to_string(),
        made: now,
        cli_version: env!("CARGO_PKG_VERSION"),
    };
    let bundle = match node {
        Some(name) => {
            let since = when::parse(since, now).map_err(CliError::Usage)?;
            let answers = fetch_node(client, url, name, since).await?;
            node_bundle(&answers, &meta)
        }
        None => {
            let nodes = client
                .list_nodes(pb::ListNodesRequest {})
                .await
                .map_err(|s| status(url, s))?
                .into_inner();
            let matrix = client
                .get_matrix(pb::MatrixRequest::default())
                .await
                .map_err(|s| status(url, s))?
                .into_inner();
            fleet_bundle(&FleetAnswers { nodes, matrix }, &meta)
        }
    };
    let bytes = archive(&bundle, now).map_err(|e| CliError::Query(format!("cannot pack: {e}")))?;
    let path = target(out, &bundle.top);
    write_private(&path, &bytes)?;
    Ok(format!(
        "wrote {} ({} bytes)\n",
        path.display(),
        bytes.len()
    ))
}

async fn fetch_node(
    client: &mut connect::Client,
    url: &str,
    name: String,
    since: i64,
) -> Result<NodeAnswers, CliError> {
    let detail = client
        .get_node(pb::GetNodeRequest { name: name.clone() })
        .await
        .map_err(|s| status(url, s))?
        .into_inner();
    let events = client
        .events(pb::EventsRequest {
            node: name.clone(),
            since_unix_nanos: since,
            until_unix_nanos: 0,
            types: Vec::new(),
            limit: MAX_EVENTS,
        })
        .await
        .map_err(|s| status(url, s))?
        .into_inner();
    let matrix = client
        .get_matrix(pb::MatrixRequest::default())
        .await
        .map_err(|s| status(url, s))?
        .into_inner();
    let (asks, bad_cells) = cells_to_explain(&matrix, &name, MAX_WHY);
    let whys = futures::future::join_all(asks.into_iter().map(|(src, dst, port)| {
        let mut c = client.clone();
        async move {
            let answer = c
                .why(pb::WhyRequest {
                    src: src.clone(),
                    dst: dst.clone(),
                    port: u32::from(port),
                    at_unix_nanos: 0,
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_string());
            WhyOutcome {
                src,
                dst,
                port,
                answer,
            }
        }
    }))
    .await;
    Ok(NodeAnswers {
        detail,
        events,
        events_since: since,
        matrix,
        whys,
        bad_cells,
    })
}

#[cfg(test)]
#[path = "diag_tests.rs"]
mod tests;
