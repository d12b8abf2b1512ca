//! `reachmap findings` and `reachmap what-if`: the fleet's findings as a
//! list a person reads, and a change checked before it is made — the
//! proposed ruleset read here with the agent's own parsers.

use super::CliError;
use crate::findings::Report;
use reachmap_agent::facts::firewall::{Backend, Family, Ruleset};
use reachmap_agent::inspect::firewall::{parse_iptables_save, parse_nft_json};
use reachmap_proto::v1 as pb;
use std::fmt::Write as _;
use std::path::Path;

/// A ruleset file larger than this is refused.
const MAX_RULESET_BYTES: u64 = 64 * 1024 * 1024;

pub fn render_findings(r: &Report) -> String {
    let mut out = String::new();
    let as_of = if r.as_of > 0 {
        chrono::DateTime::from_timestamp_nanos(r.as_of)
            .format(", as of %H:%M:%S UTC")
            .to_string()
    } else {
        String::new()
    };
    if r.findings.is_empty() {
        let _ = writeln!(
            out,
            "no findings: {} cells, {} failing or degraded{as_of}",
            r.cells, r.bad_cells
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} finding(s) over {} cells ({} failing or degraded, {} not covered by a finding){as_of}\n",
        r.findings.len(),
        r.cells,
        r.bad_cells,
        r.uncovered_cells
    );
    for (i, f) in r.findings.iter().enumerate() {
        let _ = writeln!(out, "{}. [{}] {}", i + 1, f.kind.as_str(), f.title);
        if f.cell_count > 0 {
            let mut line = format!("   {} cell(s)", f.cell_count);
            if let Some(k) = f.cells.first() {
                let _ = write!(line, ", e.g. {} -> {}:{}", k.src, k.dst, k.port);
            }
            let _ = writeln!(out, "{line}");
        }
        for g in &f.groups {
            let _ = writeln!(out, "   {}: {}", g.name, g.nodes.join(", "));
        }
        if !f.detail.is_empty() {
            let _ = writeln!(out, "   {}", f.detail);
        }
        for e in f.evidence.iter().take(5) {
            let _ = writeln!(out, "   - {e}");
        }
        if f.evidence.len() > 5 {
            let _ = writeln!(out, "   - … and {} more", f.evidence.len() - 5);
        }
        if !f.fix.is_empty() {
            let _ = writeln!(out, "   fix: {}", f.fix);
        }
        out.push('\n');
    }
    out
}

/// `--address OLD=NEW`.
pub fn address_change(text: &str) -> Result<pb::AddressChange, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--address {text:?}: expected OLD=NEW, two IP addresses"
        ))
    };
    let (old, new) = text.split_once('=').ok_or_else(bad)?;
    let (old, new) = (old.trim(), new.trim());
    let (o, n) = (
        old.parse::<std::net::IpAddr>().map_err(|_| bad())?,
        new.parse::<std::net::IpAddr>().map_err(|_| bad())?,
    );
    if o == n {
        return Err(CliError::Usage(format!(
            "--address {text:?}: the old and new address are the same"
        )));
    }
    Ok(pb::AddressChange {
        old: o.to_string(),
        new: n.to_string(),
    })
}

/// What a ruleset file holds.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    NftJson,
    IptablesSave,
    NftText,
}

fn kind_of(text: &str) -> Kind {
    let t = text.trim_start();
    if t.starts_with('{') {
        return Kind::NftJson;
    }
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    if lines.next().is_some_and(|l| l.starts_with('*')) {
        Kind::IptablesSave
    } else {
        Kind::NftText
    }
}

/// The tables of a ruleset file: nft JSON (`nft -j list ruleset`),
/// iptables-save or ip6tables-save text, or nft syntax (loaded with `nft
/// -f` in a private network namespace and listed back as JSON, so the
/// host's own ruleset is never touched). `-` is standard input.
pub fn read_ruleset(path: &str, ip6: bool) -> Result<pb::Firewall, CliError> {
    let (text, shown) = if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), MAX_RULESET_BYTES),
            &mut s,
        )
        .map_err(|e| CliError::Usage(format!("standard input: {e}")))?;
        (s, "standard input".to_string())
    } else {
        let p = Path::new(path);
        let len = std::fs::metadata(p)
            .map_err(|e| CliError::Usage(format!("{path}: {e}")))?
            .len();
        if len > MAX_RULESET_BYTES {
            return Err(CliError::Usage(format!(
                "{path}: {len} bytes, more than a ruleset file may be ({MAX_RULESET_BYTES})"
            )));
        }
        (
            std::fs::read_to_string(p).map_err(|e| CliError::Usage(format!("{path}: {e}")))?,
            path.to_string(),
        )
    };
    let bad = |e: &dyn std::fmt::Display| CliError::Usage(format!("{shown}: {e}"));
    let tables = match kind_of(&text) {
        Kind::NftJson => parse_nft_json(&text).map_err(|e| bad(&e))?,
        Kind::IptablesSave => {
            let family = if ip6 { Family::Ip6 } else { Family::Ip };
            parse_iptables_save(&text, family, Backend::IptablesNft).map_err(|e| bad(&e))?
        }
        Kind::NftText => parse_nft_json(&nft_text_as_json(&text, &shown)?).map_err(|e| bad(&e))?,
    };
    if tables.is_empty() {
        return Err(CliError::Usage(format!(
            "{shown}: no tables in it (give the node's whole proposed ruleset)"
        )));
    }
    let mut rs = Ruleset {
        tables,
        ..Ruleset::default()
    };
    rs.finish();
    Ok(reachmap_agent::wire::firewall::firewall(&rs))
}

/// nft syntax, loaded into a fresh network namespace of its own and listed
/// back as JSON.
fn nft_text_as_json(text: &str, shown: &str) -> Result<String, CliError> {
    let dir = tempfile::tempdir().map_err(|e| CliError::Usage(format!("temp dir: {e}")))?;
    let file = dir.path().join("ruleset.nft");
    std::fs::write(&file, text).map_err(|e| CliError::Usage(format!("temp file: {e}")))?;
    let out = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "nft -f \"$1\" && nft -j list ruleset", "sh"])
        .arg(&file)
        .output()
        .map_err(|e| {
            CliError::Usage(format!(
                "{shown} is in nft syntax, which is read by loading it with nft in a private network namespace (unshare): {e}; or give `nft -j list ruleset` JSON"
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("nft failed");
        return Err(CliError::Usage(format!(
            "{shown}: nft cannot load it: {}",
            first.replace(&file.display().to_string(), shown)
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| CliError::Usage(format!("{shown}: nft's JSON is not UTF-8")))
}

fn cell_line(c: &pb::WhatIfCell) -> String {
    format!(
        "  {} -> {}:{}  {}, {} now; {} -> {} by {}\n      {}\n",
        c.src,
        c.dst,
        c.port,
        c.direction,
        c.state,
        c.verdict_now,
        c.verdict_then,
        c.decided_by,
        c.detail
    )
}

pub fn render_what_if(r: &pb::WhatIfResponse, change: &str) -> String {
    let mut out = format!(
        "what-if {} with {change}: {} cell(s) would break, {} would be fixed, {} stay broken; {} reference(s) would go stale ({} cells checked)\n",
        r.node,
        r.breaks.len(),
        r.fixes.len(),
        r.still_broken.len(),
        r.stale.len(),
        r.cells_checked
    );
    for (title, cells) in [
        ("WOULD BREAK", &r.breaks),
        ("WOULD BE FIXED", &r.fixes),
        ("STAYS BROKEN", &r.still_broken),
    ] {
        if cells.is_empty() {
            continue;
        }
        let _ = write!(out, "\n{title}\n");
        for c in cells {
            out.push_str(&cell_line(c));
        }
    }
    if !r.stale.is_empty() {
        out.push_str("\nWOULD GO STALE\n");
        for s in &r.stale {
            let _ = write!(
                out,
                "  {} on {}: {}\n      fix: {}\n",
                s.kind, s.node, s.detail, s.fix
            );
        }
    }
    if !r.notes.is_empty() {
        out.push_str("\nNOTES\n");
        for n in &r.notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

/// `what-if --format json`.
pub fn what_if_json(r: &pb::WhatIfResponse) -> serde_json::Value {
    let cell = |c: &pb::WhatIfCell| {
        serde_json::json!({
            "src": c.src, "dst": c.dst, "port": c.port, "state": c.state,
            "direction": c.direction, "verdict_now": c.verdict_now,
            "verdict_then": c.verdict_then, "decided_by": c.decided_by, "detail": c.detail,
        })
    };
    serde_json::json!({
        "node": r.node,
        "breaks": r.breaks.iter().map(cell).collect::<Vec<_>>(),
        "fixes": r.fixes.iter().map(cell).collect::<Vec<_>>(),
        "still_broken": r.still_broken.iter().map(cell).collect::<Vec<_>>(),
        "stale": r.stale.iter().map(|s| serde_json::json!({
            "kind": s.kind, "node": s.node, "detail": s.detail, "fix": s.fix,
        })).collect::<Vec<_>>(),
        "cells_checked": r.cells_checked,
        "notes": r.notes,
        "would_break": !r.breaks.is_empty() || !r.stale.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_files_are_told_apart() {
        assert_eq!(kind_of("  {\"nftables\": []}"), Kind::NftJson);
        assert_eq!(
            kind_of("# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
            Kind::IptablesSave
        );
        assert_eq!(
            kind_of(
                "table inet filter {\n chain input { type filter hook input priority 0; }\n}\n"
            ),
            Kind::NftText
        );
    }

    #[test]
    fn iptables_save_text_goes_through_the_agents_parser() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("rules");
        std::fs::write(
            &f,
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 8080 -j DROP\nCOMMIT\n",
        )
        .expect("write");
        let fw = read_ruleset(f.to_str().expect("utf-8"), false).expect("parses");
        let chains: usize = fw.tables.iter().map(|t| t.chains.len()).sum();
        assert!(chains >= 1, "{fw:?}");
        // Truncated: no COMMIT. The parser's line number is in the error.
        std::fs::write(&f, "*filter\n:INPUT ACCEPT [0:0]\n").expect("write");
        let e = read_ruleset(f.to_str().expect("utf-8"), false).expect_err("refused");
        assert!(e.to_string().contains("rules"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn address_changes_are_checked() {
        let a = address_change("198.18.0.12=198.18.0.99").expect("ok");
        assert_eq!(
            (a.old.as_str(), a.new.as_str()),
            ("198.18.0.12", "198.18.0.99")
        );
        for bad in ["198.18.0.12", "x=198.18.0.1", "198.18.0.1=198.18.0.1"] {
            let e = address_change(bad).expect_err(bad);
            assert!(e.to_string().contains("--address"), "{e}");
        }
    }
}
