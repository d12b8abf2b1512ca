//! Reads the live ruleset by running the tools the host's firewall is
//! managed with, and merges them into one `Ruleset`.
//!
//! - `nft -j list tables` names every nftables table.
//! - Tables that iptables-nft manages (`filter`, `nat`, ... of family ip/ip6)
//!   are read with `iptables-nft-save -c`: nft's JSON shows their xt
//!   matches and targets (conntrack, multiport, REJECT, DNAT, ...) without
//!   options, while the iptables text has them all.
//! - Every other table is read with `nft -j list table FAMILY NAME`.
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
    // `read_tables` always answers, so the reading is always there.
    at_one_generation(opts, || read_tables(opts).map(Some)).map(Option::unwrap_or_default)
}

/// `read` between two equal generation answers (no transaction committed
/// while the tools ran), tried three times; then once without the check.
/// `None` when `read` says it cannot answer.
fn at_one_generation(
    opts: &ReadOptions,
    mut read: impl FnMut() -> Result<Option<Vec<Table>>, FirewallError>,
) -> Result<Option<Ruleset>, FirewallError> {
    let generation = || {
        opts.generation
            .then(notify::current_generation)
            .and_then(Result::ok)
    };
    let ruleset = |tables, generation| {
        let mut rs = Ruleset {
            tables,
            generation,
            ..Ruleset::default()
        };
        rs.finish();
        rs
    };
    for _ in 0..3 {
        let before = generation();
        let Some(tables) = read()? else {
            return Ok(None);
        };
        let after = generation();
        if before == after {
            return Ok(Some(ruleset(tables, after)));
        }
        // A transaction committed while the tools ran: read again.
    }
    Ok(read()?.map(|tables| ruleset(tables, None)))
}

fn read_tables(opts: &ReadOptions) -> Result<Vec<Table>, FirewallError> {
    // The list of tables first: nft's JSON of the tables iptables-nft
    // manages is never needed (their own tool shows them whole), and on a
    // kube-proxy node it is megabytes to parse and throw away.
    let listed = match run(&opts.nft, &["-j", "list", "tables"])? {
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
    let mut xt = Vec::new();
    for (family, tool) in [(Family::Ip, "iptables"), (Family::Ip6, "ip6tables")] {
        let managed = listed
            .iter()
            .any(|t| t.family == family && XTABLES.contains(&t.name.as_str()));
        if managed {
            xt.extend(xt_save(opts, family, tool));
        }
    }
    let native: Vec<&Table> = listed
        .iter()
        .filter(|t| !xt.iter().any(|x| x.family == t.family && x.name == t.name))
        .collect();
    let mut tables = nft_tables(opts, &native, &xt)?;
    tables.extend(xt);
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

/// The tables iptables-nft manages, from `iptables-nft-save -c`: nothing
/// when the tool is missing or fails (nft's view of them is then read),
/// and never a table holding native nft chains, which the tool prints as
/// an empty stub after a warning comment.
fn xt_save(opts: &ReadOptions, family: Family, tool: &str) -> Vec<Table> {
    let program = format!("{}{tool}-nft-save", opts.iptables_prefix);
    let text = match run(&program, &["-c"]) {
        Ok(Some(text)) => text,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "reading nft's view of iptables-nft tables instead");
            return Vec::new();
        }
    };
    let incompatible = incompatible_tables(&text);
    match parse_iptables_save(&text, family, Backend::IptablesNft) {
        Ok(mut xt) => {
            xt.retain(|t| !incompatible.contains(&t.name.as_str()));
            xt
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading nft's view of iptables-nft tables instead");
            Vec::new()
        }
    }
}

/// `wanted` as nft shows them, one `nft -j list table` each. When one
/// cannot be listed (deleted since the table list was read), the whole
/// ruleset is listed instead, without the tables `xt` already holds.
fn nft_tables(
    opts: &ReadOptions,
    wanted: &[&Table],
    xt: &[Table],
) -> Result<Vec<Table>, FirewallError> {
    let mut out = Vec::with_capacity(wanted.len());
    for t in wanted {
        let listed = run(
            &opts.nft,
            &["-j", "list", "table", t.family.nft_name(), &t.name],
        );
        match listed {
            Ok(Some(json)) => out.extend(parse_nft_json(&json)?),
            _ => {
                let json = run(&opts.nft, &["-j", "list", "ruleset"])?.unwrap_or_default();
                let mut all = if json.trim().is_empty() {
                    Vec::new()
                } else {
                    parse_nft_json(&json)?
                };
                all.retain(|t| !xt.iter().any(|x| x.family == t.family && x.name == t.name));
                return Ok(all);
            }
        }
    }
    Ok(out)
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

/// Reads again only what `touched` names, on top of `base` (the last full
/// or partial reading): a chain of an iptables-nft table with
/// `iptables-nft -t TABLE -S CHAIN -v`, a native nftables table whole with
/// `nft -j list table`. What it cannot place — a new or deleted table, a
/// table-wide change to an iptables-nft table, lost notifications — is a
/// full `read_ruleset`. On a host where kube-proxy rewrites a few of 20,000
/// rules every second, this reads a few chains instead of everything.
pub fn read_touched(
    opts: &ReadOptions,
    base: &Ruleset,
    touched: &notify::Touched,
) -> Result<Ruleset, FirewallError> {
    let notify::Touched::Parts(parts) = touched else {
        return read_ruleset(opts);
    };
    if parts.is_empty() {
        return read_ruleset(opts);
    }
    match at_one_generation(opts, || apply_parts(opts, base, parts))? {
        Some(rs) => Ok(rs),
        None => read_ruleset(opts),
    }
}

/// `nfgenmsg.nfgen_family` (NFPROTO_*) as a table family.
fn nfproto_family(f: u8) -> Option<Family> {
    match f {
        1 => Some(Family::Inet),
        2 => Some(Family::Ip),
        3 => Some(Family::Arp),
        5 => Some(Family::Netdev),
        7 => Some(Family::Bridge),
        10 => Some(Family::Ip6),
        _ => None,
    }
}

/// `base`'s tables with the touched parts read again; `None` when a part
/// needs a full read.
fn apply_parts(
    opts: &ReadOptions,
    base: &Ruleset,
    parts: &std::collections::BTreeSet<notify::Part>,
) -> Result<Option<Vec<Table>>, FirewallError> {
    let mut tables = base.tables.clone();
    let mut relisted: Vec<(Family, String)> = Vec::new();
    for part in parts {
        let (family, table, chain) = match part {
            notify::Part::Chain {
                family,
                table,
                chain,
            } => (*family, table, Some(chain)),
            notify::Part::Table { family, table } => (*family, table, None),
        };
        let Some(family) = nfproto_family(family) else {
            return Ok(None);
        };
        let Some(i) = tables.iter().position(|t| {
            t.family == family && t.name == *table && t.backend != Backend::IptablesLegacy
        }) else {
            return Ok(None);
        };
        match (tables[i].backend, chain) {
            (Backend::IptablesNft, Some(chain)) => {
                if !reread_xt_chain(opts, &mut tables[i], chain)? {
                    return Ok(None);
                }
            }
            (Backend::Nftables, _) => {
                if relisted.contains(&(family, table.clone())) {
                    continue;
                }
                let fam = family.nft_name();
                let json = match run(&opts.nft, &["-j", "list", "table", fam, table]) {
                    Ok(Some(json)) => json,
                    // Gone, or not readable on its own: read everything.
                    _ => return Ok(None),
                };
                let mut fresh = parse_nft_json(&json)?;
                // A native table that iptables-nft took over is a full read.
                if fresh.len() != 1 || XTABLES.contains(&table.as_str()) {
                    return Ok(None);
                }
                tables[i] = fresh.remove(0);
                relisted.push((family, table.clone()));
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(tables))
}

/// Reads one chain of an iptables-nft table again into `table`: replaced,
/// added, or removed when the tool says it no longer exists. False when
/// the answer cannot be placed (a full read is needed).
fn reread_xt_chain(
    opts: &ReadOptions,
    table: &mut Table,
    chain: &str,
) -> Result<bool, FirewallError> {
    let tool = match table.family {
        Family::Ip => "iptables-nft",
        Family::Ip6 => "ip6tables-nft",
        _ => return Ok(false),
    };
    let program = format!("{}{tool}", opts.iptables_prefix);
    let name = table.name.clone();
    let text = match run(&program, &["-t", &name, "-S", chain, "-v"]) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(false),
        Err(FirewallError::Command { reason, .. })
            if reason.contains("No chain/target/match by that name") =>
        {
            table.chains.retain(|c| c.name != chain);
            return Ok(true);
        }
        Err(_) => return Ok(false),
    };
    let Some(save) = chain_listing_as_save(&name, &text) else {
        return Ok(false);
    };
    let mut parsed = parse_iptables_save(&save, table.family, Backend::IptablesNft)?;
    let Some(fresh) = parsed
        .pop()
        .and_then(|mut t| t.chains.drain(..).find(|c| c.name == chain))
    else {
        return Ok(false);
    };
    match table.chains.iter_mut().find(|c| c.name == chain) {
        Some(old) => *old = fresh,
        None => table.chains.push(fresh),
    }
    Ok(true)
}

/// `iptables -S CHAIN -v` output (`-N X` / `-P X POLICY -c P B` and `-A`
/// lines with `-c P B` among their options) as `iptables-save -c` text of
/// one table, so one parser reads both and a rule's text is the same
/// whichever way it was read. `None` when a line is of neither kind.
pub fn chain_listing_as_save(table: &str, listing: &str) -> Option<String> {
    let mut out = format!("*{table}\n");
    let mut rules = String::new();
    for line in listing.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("-N ") {
            out.push_str(&format!(":{} - [0:0]\n", name.trim()));
        } else if let Some(rest) = line.strip_prefix("-P ") {
            let (head, counter) = take_counter(rest);
            let mut it = head.split_whitespace();
            let (name, policy) = (it.next()?, it.next()?);
            let (p, b) = counter.unwrap_or((0, 0));
            out.push_str(&format!(":{name} {policy} [{p}:{b}]\n"));
        } else if line.starts_with("-A ") {
            let (rule, counter) = take_counter(line);
            match counter {
                Some((p, b)) => rules.push_str(&format!("[{p}:{b}] {rule}\n")),
                None => rules.push_str(&format!("{rule}\n")),
            }
        } else {
            return None;
        }
    }
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    Some(out)
}

/// Removes a top-level ` -c P B` (outside quotes) from a listed line.
fn take_counter(line: &str) -> (String, Option<(u64, u64)>) {
    let bytes = line.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'-' if !quoted && (i == 0 || bytes[i - 1] == b' ') && line[i..].starts_with("-c ") => {
                let mut words = line[i + 3..].splitn(3, ' ');
                let p = words.next().and_then(|w| w.parse().ok());
                let b = words.next().and_then(|w| w.parse().ok());
                if let (Some(p), Some(b)) = (p, b) {
                    let rest = words.next().unwrap_or("");
                    let head = line[..i].trim_end();
                    let joined = if rest.is_empty() {
                        head.to_string()
                    } else {
                        format!("{head} {rest}")
                    };
                    return (joined, Some((p, b)));
                }
            }
            _ => {}
        }
        i += 1;
    }
    (line.to_string(), None)
}

#[cfg(test)]
mod touched_tests {
    use super::*;

    #[test]
    fn a_listed_chain_reads_as_save_text_with_counters_in_front() {
        let listing = "-N KUBE-SVC-1\n\
            -A KUBE-SVC-1 -m comment --comment \"ns/svc -c 1 2 -> ep0\" -m statistic --mode random --probability 0.33332999982 -c 5 300 -j KUBE-SEP-1\n\
            -A KUBE-SVC-1 -c 0 0 -j KUBE-SEP-2\n";
        let save = chain_listing_as_save("nat", listing).expect("converted");
        assert_eq!(
            save,
            "*nat\n:KUBE-SVC-1 - [0:0]\n\
             [5:300] -A KUBE-SVC-1 -m comment --comment \"ns/svc -c 1 2 -> ep0\" -m statistic --mode random --probability 0.33332999982 -j KUBE-SEP-1\n\
             [0:0] -A KUBE-SVC-1 -j KUBE-SEP-2\nCOMMIT\n"
        );
        let tables = parse_iptables_save(&save, Family::Ip, Backend::IptablesNft).expect("parses");
        let chain = &tables[0].chains[0];
        assert_eq!(chain.rules.len(), 2);
        assert_eq!(chain.rules[0].counter.map(|c| c.packets), Some(5));
        // The same text a full iptables-save -c reading gives the rule.
        let full = "*nat\n:KUBE-SVC-1 - [0:0]\n[5:300] -A KUBE-SVC-1 -m comment --comment \"ns/svc -c 1 2 -> ep0\" -m statistic --mode random --probability 0.33332999982 -j KUBE-SEP-1\n[0:0] -A KUBE-SVC-1 -j KUBE-SEP-2\nCOMMIT\n";
        let from_save =
            parse_iptables_save(full, Family::Ip, Backend::IptablesNft).expect("parses");
        assert_eq!(from_save[0].chains[0].rules[0].text, chain.rules[0].text);
    }

    #[test]
    fn a_builtin_chain_keeps_its_policy_and_counters() {
        let save = chain_listing_as_save(
            "filter",
            "-P INPUT DROP -c 7 420\n-A INPUT -i lo -c 1 60 -j ACCEPT\n",
        )
        .expect("converted");
        assert_eq!(
            save,
            "*filter\n:INPUT DROP [7:420]\n[1:60] -A INPUT -i lo -j ACCEPT\nCOMMIT\n"
        );
        assert_eq!(chain_listing_as_save("filter", "garbage line\n"), None);
        assert_eq!(chain_listing_as_save("filter", "-P INPUT\n"), None);
    }
}
