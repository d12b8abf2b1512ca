//! Reads the live ruleset by running the tools the host's firewall is
//! managed with, and merges them into one `Ruleset`.
//!
//! - `nft -j list ruleset` gives every nftables table.
//! - Tables that iptables-nft manages (`filter`, `nat`, ... of family ip/ip6)
//!   are re-read with `iptables-nft-save -c`: nft's JSON shows their xt
//!   matches and targets (conntrack, multiport, REJECT, DNAT, ...) without
//!   options, while the iptables text has them all.
//! - iptables-legacy (x_tables) is read with `iptables-legacy-save -c`, but
//!   only when `<procfs>/net/ip_tables_names` lists tables: running the tool
//!   on a host without x_tables would load the kernel modules.

use super::{FirewallError, iptables::parse_iptables_save, nft::parse_nft_json, notify};
use crate::facts::firewall::{Backend, Family, Fnv64, Ruleset, Table};
use std::path::PathBuf;
use std::process::Command;

const XTABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Where `net/ip_tables_names` is read (the agent's `--procfs`).
    pub procfs: PathBuf,
    /// Where `module/nf_tables` tells whether the kernel has nftables (the
    /// agent's `--sysfs`).
    pub sysfs: PathBuf,
    pub nft: String,
    /// Program prefix for the iptables-nft tools: `<prefix>` + `iptables-nft-save`.
    pub iptables_prefix: String,
    /// Ask the kernel for the generation around the read (needs CAP_NET_ADMIN).
    pub generation: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            nft: "nft".into(),
            iptables_prefix: String::new(),
            generation: true,
        }
    }
}

/// One consistent reading of every backend's rules. A tool that is not
/// installed contributes nothing; a tool that fails is an error.
pub fn read_ruleset(opts: &ReadOptions) -> Result<Ruleset, FirewallError> {
    for _ in 0..3 {
        let before = opts
            .generation
            .then(notify::current_generation)
            .and_then(Result::ok);
        let tables = read_tables(opts)?;
        let after = opts
            .generation
            .then(notify::current_generation)
            .and_then(Result::ok);
        if before == after {
            let mut rs = Ruleset {
                tables,
                generation: after,
                ..Ruleset::default()
            };
            rs.finish();
            return Ok(rs);
        }
        // A transaction committed while the tools ran: read again.
    }
    let mut rs = Ruleset {
        tables: read_tables(opts)?,
        ..Ruleset::default()
    };
    rs.finish();
    Ok(rs)
}

fn read_tables(opts: &ReadOptions) -> Result<Vec<Table>, FirewallError> {
    let mut tables = match run(&opts.nft, &["-j", "list", "ruleset"])? {
        Some(json) if !json.trim().is_empty() => parse_nft_json(&json)?,
        Some(_) => Vec::new(),
        // Without nf_tables in the kernel there is nothing nft could show;
        // with it, a missing nft means rules nobody can read, not no rules.
        None if nf_tables_present(opts) => {
            return Err(FirewallError::Command {
                program: opts.nft.clone(),
                reason: "not found on PATH, but the kernel has nf_tables: its rules cannot be read"
                    .into(),
            });
        }
        None => Vec::new(),
    };
    for (family, tool) in [(Family::Ip, "iptables"), (Family::Ip6, "ip6tables")] {
        let managed = tables
            .iter()
            .any(|t| t.family == family && XTABLES.contains(&t.name.as_str()));
        if !managed {
            continue;
        }
        let program = format!("{}{tool}-nft-save", opts.iptables_prefix);
        // The nft view of these tables is complete but for xt options, so a
        // failing refinement keeps it rather than failing the whole read.
        let text = match run(&program, &["-c"]) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "keeping nft's view of iptables-nft tables");
                continue;
            }
        };
        // A table holding native nft chains is printed as an empty stub
        // after a warning comment; the nft view is the right one for it.
        let incompatible = incompatible_tables(&text);
        let mut xt = match parse_iptables_save(&text, family, Backend::IptablesNft) {
            Ok(xt) => xt,
            Err(e) => {
                tracing::warn!(error = %e, "keeping nft's view of iptables-nft tables");
                continue;
            }
        };
        xt.retain(|t| !incompatible.contains(&t.name.as_str()));
        tables.retain(|t| !(t.family == family && xt.iter().any(|x| x.name == t.name)));
        tables.extend(xt);
    }
    for (family, tool, names) in [
        (Family::Ip, "iptables", "ip_tables_names"),
        (Family::Ip6, "ip6tables", "ip6_tables_names"),
    ] {
        if let Some(text) = legacy_save(opts, tool, names)? {
            tables.extend(parse_iptables_save(&text, family, Backend::IptablesLegacy)?);
        }
    }
    Ok(tables)
}

/// Whether the kernel has nftables: a module directory for it, or an
/// answer to a generation request (nf_tables built in).
fn nf_tables_present(opts: &ReadOptions) -> bool {
    opts.sysfs.join("module/nf_tables").exists() || notify::current_generation().is_ok()
}

/// Names from iptables-nft-save's "# Table `filter' contains incompatible
/// base-chains, use 'nft' tool to list them." comments.
fn incompatible_tables(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with('#') && l.contains("incompatible"))
        .filter_map(|l| l.split_once('`')?.1.split_once('\'').map(|(name, _)| name))
        .collect()
}

/// `iptables-legacy-save -c`, or `None` when x_tables holds no table.
fn legacy_save(
    opts: &ReadOptions,
    tool: &str,
    names_file: &str,
) -> Result<Option<String>, FirewallError> {
    let names =
        std::fs::read_to_string(opts.procfs.join("net").join(names_file)).unwrap_or_default();
    if names.trim().is_empty() {
        return Ok(None);
    }
    let program = format!("{}{tool}-legacy-save", opts.iptables_prefix);
    if let Some(text) = run(&program, &["-c"])? {
        return Ok(Some(text));
    }
    // Older distributions ship only the legacy tool, under the plain name.
    let program = format!("{}{tool}-save", opts.iptables_prefix);
    match run(&program, &["-c"])? {
        Some(text) if !text.contains("(nf_tables)") => Ok(Some(text)),
        _ => Ok(None),
    }
}

/// Runs a tool; `None` when it is not installed.
fn run(program: &str, args: &[&str]) -> Result<Option<String>, FirewallError> {
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FirewallError::Command {
                program: program.into(),
                reason: e.to_string(),
            });
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(FirewallError::Command {
            program: program.into(),
            reason: format!("{}: {first}", out.status),
        });
    }
    String::from_utf8(out.stdout)
        .map(Some)
        .map_err(|_| FirewallError::Command {
            program: program.into(),
            reason: "output is not UTF-8".into(),
        })
}

/// Hash of `*tables-save` output that ignores what changes without a rule
/// changing: comment lines (they carry timestamps) and packet/byte counters.
pub fn content_hash(text: &str) -> u64 {
    let mut h = Fnv64::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix('[') {
            Some(rest) if line.contains("] -A") => rest.split_once("] ").map_or(line, |r| r.1),
            _ => line,
        };
        let line = if line.starts_with(':') {
            line.rsplit_once(" [").map_or(line, |(head, _)| head)
        } else {
            line
        };
        h.write(line.as_bytes());
        h.write(b"\n");
    }
    h.finish()
}

/// Change detection for iptables-legacy, which sends no notification:
/// `poll` re-runs `iptables-legacy-save` and `ip6tables-legacy-save` and
/// compares their content hash with the previous poll's.
#[derive(Debug)]
pub struct LegacyPoller {
    opts: ReadOptions,
    last: Option<u64>,
}

impl LegacyPoller {
    pub fn new(opts: ReadOptions) -> Self {
        LegacyPoller { opts, last: None }
    }

    /// True when the legacy rules differ from the previous poll. The first
    /// poll only records the state and returns false.
    pub fn poll(&mut self) -> Result<bool, FirewallError> {
        let mut text = String::new();
        for (tool, names) in [
            ("iptables", "ip_tables_names"),
            ("ip6tables", "ip6_tables_names"),
        ] {
            if let Some(t) = legacy_save(&self.opts, tool, names)? {
                text.push_str(&t);
            }
        }
        let hash = content_hash(&text);
        let changed = self.last.is_some_and(|h| h != hash);
        self.last = Some(hash);
        Ok(changed)
    }
}
