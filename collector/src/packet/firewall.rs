//! A packet evaluated against a node's normalised ruleset: which verdict the
//! host's firewall gives it and which rule (or policy) decides. Pure.
//!
//! The same model holds nftables and iptables rules, so one walk serves
//! both: every base chain on a hook, across tables of the packet's family
//! (and `inet`), in priority order; a packet must be accepted by each of
//! them (an accept ends one base chain, a drop or reject ends everything);
//! jump pushes, goto replaces, return pops (in a base chain it falls to the
//! policy); user chains have no policy; no policy means accept. NAT chains
//! see only a connection's first packet; a DNAT or redirect in prerouting
//! or output rewrites the destination the later chains see.
//!
//! A match the model does not express (`Field::Other`, an ipset, an
//! unparsed value) or an action it does not know cannot be decided: the walk
//! goes on as if the rule did not match, and the rule is listed in
//! `Decision::uncertain` when matching it could have changed the verdict.
//!
//! `Compiled::new` parses a ruleset once (addresses as sorted ranges, sets
//! resolved, jumps by index, base chains per hook sorted); each evaluation
//! is then a linear walk without allocation until something matches.

mod matching;
mod types;
mod walk;

pub use types::{
    CtState, Decision, Final, Hook, IpFamily, L4, NatRewrite, Packet, PathKind, PolicyRef, RuleRef,
    Step, Uncertain,
};

use crate::model::firewall::{Field, Firewall, VerdictKind};
use matching::{CompiledMatch, CompiledSet};
use std::collections::HashMap;
use std::net::IpAddr;

/// Jumps deeper than this are a loop (the kernel refuses far less).
const MAX_DEPTH: usize = 64;
/// Rules visited in one base chain before the walk gives up.
const MAX_STEPS: usize = 1_000_000;

/// Evaluates once without keeping the compiled form.
pub fn evaluate(fw: &Firewall, packet: &Packet, path: PathKind) -> Decision {
    Compiled::new(fw).evaluate(packet, path)
}

#[derive(Clone, Debug)]
enum Action {
    Continue,
    /// `-j CT --notrack`, `NOTRACK`, nft `notrack`: the packet is untracked.
    Notrack,
    Accept,
    Drop,
    Reject(Option<String>),
    Jump(Result<usize, String>),
    Goto(Result<usize, String>),
    Return,
    Dnat {
        addr: Option<IpAddr>,
        port: Option<u16>,
    },
    Redirect(Option<u16>),
    SourceNat,
    Queue,
    Unknown(String),
}

#[derive(Clone, Debug)]
struct CompiledRule {
    handle: Option<u64>,
    position: u32,
    text: String,
    comment: Option<String>,
    matches: Vec<CompiledMatch>,
    action: Action,
    kind: VerdictKind,
    /// Flagged unsupported although no match or action says why.
    unexplained: bool,
}

#[derive(Clone, Debug)]
struct CompiledChain {
    table: usize,
    name: String,
    hook: Option<Hook>,
    nat: bool,
    priority: i32,
    policy_drop: bool,
    policy: Option<String>,
    rules: Vec<CompiledRule>,
}

#[derive(Clone, Debug)]
struct CompiledTable {
    family: String,
    name: String,
    backend: String,
    sets: Vec<CompiledSet>,
}

/// A ruleset prepared for many evaluations.
#[derive(Clone, Debug)]
pub struct Compiled {
    tables: Vec<CompiledTable>,
    chains: Vec<CompiledChain>,
    /// Base chain indices per family (v4, v6) and hook, in run order.
    hooks: [[Vec<usize>; 5]; 2],
    error: Option<String>,
}

/// iptables targets that change marks, logs or headers and go on.
const NON_TERMINAL_TARGETS: &[&str] = &[
    "LOG",
    "MARK",
    "CONNMARK",
    "TCPMSS",
    "TOS",
    "TTL",
    "HL",
    "DSCP",
    "CLASSIFY",
    "NFLOG",
    "ULOG",
    "TRACE",
    "AUDIT",
    "CHECKSUM",
    "SECMARK",
    "CONNSECMARK",
    "LED",
    "IDLETIMER",
    "RATEEST",
    "SET",
    "TEE",
    "CT",
];

fn other_action(text: &str) -> Action {
    let words: Vec<&str> = text.split_whitespace().collect();
    let target = match words.as_slice() {
        ["-j", t, ..] | ["xt", "target", t, ..] => *t,
        _ => return Action::Unknown(format!("action `{text}` is not evaluated")),
    };
    if target == "NOTRACK" || (target == "CT" && words.contains(&"--notrack")) {
        return Action::Notrack;
    }
    if NON_TERMINAL_TARGETS.contains(&target) {
        return Action::Continue;
    }
    Action::Unknown(format!("action `{text}` is not evaluated"))
}

impl Compiled {
    pub fn new(fw: &Firewall) -> Compiled {
        let mut tables = Vec::with_capacity(fw.tables.len());
        let mut chains = Vec::new();
        let mut hooks: [[Vec<usize>; 5]; 2] = Default::default();
        for (ti, t) in fw.tables.iter().enumerate() {
            let sets: Vec<CompiledSet> = t.sets.iter().map(CompiledSet::new).collect();
            let set_index: HashMap<&str, usize> = t
                .sets
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i))
                .collect();
            let base = chains.len();
            let chain_index: HashMap<&str, usize> = t
                .chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), base + i))
                .collect();
            let families: &[usize] = match t.family.as_str() {
                "ip" => &[0],
                "ip6" => &[1],
                "inet" => &[0, 1],
                _ => &[],
            };
            for c in &t.chains {
                let resolve = |name: &str| chain_index.get(name).copied();
                let rules = c
                    .rules
                    .iter()
                    .map(|r| compile_rule(r, &|n| set_index.get(n).copied(), &resolve))
                    .collect();
                let hook = c.hook.as_deref().and_then(Hook::parse);
                let id = chains.len();
                chains.push(CompiledChain {
                    table: ti,
                    name: c.name.clone(),
                    hook,
                    nat: c.chain_type.as_deref() == Some("nat"),
                    priority: c.priority.unwrap_or(0),
                    policy_drop: c.policy.as_deref() == Some("drop"),
                    policy: c.policy.clone(),
                    rules,
                });
                if let Some(h) = hook {
                    for f in families {
                        hooks[*f][h.index()].push(id);
                    }
                }
            }
            tables.push(CompiledTable {
                family: t.family.clone(),
                name: t.name.clone(),
                backend: t.backend.clone(),
                sets,
            });
        }
        for per_family in &mut hooks {
            for ids in per_family.iter_mut() {
                // Stable: equal priorities keep listing order.
                ids.sort_by_key(|i| chains[*i].priority);
            }
        }
        Compiled {
            tables,
            chains,
            hooks,
            error: fw.error.clone(),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// The packet's verdict on this host along `path`.
    pub fn evaluate(&self, packet: &Packet, path: PathKind) -> Decision {
        if let Some(e) = &self.error {
            return Decision::unknown(format!("the ruleset could not be read: {e}"));
        }
        let Some(family) = packet.family() else {
            return Decision::unknown("source and destination are of different families");
        };
        let fam = match family {
            IpFamily::V4 => 0,
            IpFamily::V6 => 1,
        };
        walk::evaluate(self, fam, packet, path)
    }
}

fn compile_rule(
    r: &crate::model::firewall::Rule,
    set: &dyn Fn(&str) -> Option<usize>,
    chain: &dyn Fn(&str) -> Option<usize>,
) -> CompiledRule {
    let target = r.verdict.target.clone();
    let resolve = |t: &Option<String>| {
        let name = t.clone().unwrap_or_default();
        chain(&name).ok_or(name)
    };
    let action = match r.verdict.kind {
        VerdictKind::Continue if r.text.split_whitespace().any(|w| w == "notrack") => {
            Action::Notrack
        }
        VerdictKind::Continue => Action::Continue,
        VerdictKind::Accept => Action::Accept,
        VerdictKind::Drop => Action::Drop,
        VerdictKind::Reject => Action::Reject(target),
        VerdictKind::Jump => Action::Jump(resolve(&r.verdict.target)),
        VerdictKind::Goto => Action::Goto(resolve(&r.verdict.target)),
        VerdictKind::Return => Action::Return,
        VerdictKind::Dnat => match target.as_deref().map(str::parse::<IpAddr>) {
            Some(Err(_)) => Action::Unknown(format!("DNAT target {target:?} is not an address")),
            addr => Action::Dnat {
                addr: addr.and_then(Result::ok),
                port: r.verdict.port,
            },
        },
        VerdictKind::Redirect => Action::Redirect(r.verdict.port),
        VerdictKind::Snat | VerdictKind::Masquerade => Action::SourceNat,
        VerdictKind::Queue => Action::Queue,
        VerdictKind::Other => other_action(target.as_deref().unwrap_or("?")),
    };
    let matches: Vec<CompiledMatch> = r
        .matches
        .iter()
        .map(|m| matching::compile(m, set))
        .collect();
    // The agent flags a rule when a match or action is not normalised;
    // those are handled above, anything else leaves the rule undecided.
    let explained = r.verdict.kind == VerdictKind::Other
        || r.matches.iter().any(|m| m.field == Field::Other)
        || matches.iter().any(|m| m.unknown.is_some());
    CompiledRule {
        handle: r.handle,
        position: r.position,
        text: r.text.clone(),
        comment: r.comment.clone(),
        matches,
        action,
        kind: r.verdict.kind,
        unexplained: r.unsupported && !explained,
    }
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
