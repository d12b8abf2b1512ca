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

use crate::model::firewall::{Field, Firewall, VerdictKind};
use matching::{CompiledMatch, CompiledSet, State, Tri};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// Jumps deeper than this are a loop (the kernel refuses far less).
const MAX_DEPTH: usize = 64;
/// Rules visited in one base chain before the walk gives up.
const MAX_STEPS: usize = 1_000_000;

/// Layer-4 protocol of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Other(u8),
}

/// Connection-tracking state of the packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    #[default]
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl CtState {
    fn bit(self) -> u8 {
        match self {
            CtState::New => 1,
            CtState::Established => 2,
            CtState::Related => 4,
            CtState::Invalid => 8,
            CtState::Untracked => 16,
        }
    }
}

impl L4 {
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
            L4::Icmp => 1,
            L4::Icmpv6 => 58,
            L4::Other(n) => n,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpFamily {
    V4,
    V6,
}

/// The packet to evaluate, as it leaves its sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: L4,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// Input interface on the receiving host; `None` when not known
    /// (interface matches then cannot be decided).
    pub iif: Option<String>,
    /// Output interface on the sending host, or on the receiving host the
    /// interface towards a DNAT target that is forwarded.
    pub oif: Option<String>,
    pub ct_state: CtState,
    /// Whether `dst` is one of the evaluating host's addresses
    /// (`-m addrtype --dst-type LOCAL`, `fib daddr type local`).
    pub dst_is_local: bool,
    /// ICMP type of an ICMP packet, e.g. 8 for an echo request.
    pub icmp_type: Option<u8>,
    /// The evaluating host's other addresses: a DNAT to one of them stays
    /// on the host (input), to anything else is forwarded.
    pub local_addrs: Vec<IpAddr>,
}

impl Packet {
    /// A new TCP connection's first packet; the source port is unknown.
    pub fn tcp(src: IpAddr, dst: IpAddr, dport: u16) -> Packet {
        Packet {
            src,
            dst,
            protocol: L4::Tcp,
            sport: None,
            dport: Some(dport),
            iif: None,
            oif: None,
            ct_state: CtState::New,
            dst_is_local: false,
            icmp_type: None,
            local_addrs: Vec::new(),
        }
    }

    /// `None` when source and destination are of different families.
    pub fn family(&self) -> Option<IpFamily> {
        match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Some(IpFamily::V4),
            (IpAddr::V6(_), IpAddr::V6(_)) => Some(IpFamily::V6),
            _ => None,
        }
    }
}

/// A netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    fn parse(s: &str) -> Option<Hook> {
        Some(match s {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which hooks one host runs the packet through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// The destination host: prerouting, then input (or forward and
    /// postrouting when a DNAT sends the packet elsewhere).
    Receive,
    /// The source host: output, then postrouting.
    Send,
    /// A router between them: prerouting, forward, postrouting.
    Forward,
}

/// What the host does with the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Final {
    Accept,
    Drop,
    /// `with` is the reply as the tool names it (`tcp reset`,
    /// `icmp-host-prohibited`); `None` is the default (port unreachable).
    Reject {
        with: Option<String>,
    },
    Unknown {
        reason: String,
    },
}

/// A rule, named the way an operator finds it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub family: String,
    pub table: String,
    pub backend: String,
    pub chain: String,
    pub handle: Option<u64>,
    /// 1-based, as `iptables -L --line-numbers`.
    pub position: u32,
    pub text: String,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub family: String,
    pub table: String,
    pub backend: String,
    pub chain: String,
    pub hook: Hook,
    /// "accept" or "drop"; "accept" also when the chain names none.
    pub policy: String,
}

/// A destination rewrite the packet underwent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NatRewrite {
    /// "dnat" or "redirect".
    pub kind: String,
    pub original_dst: IpAddr,
    pub original_port: Option<u16>,
    /// `None` for a redirect (the host's own address of the input interface).
    pub dst: Option<IpAddr>,
    pub port: Option<u16>,
    /// The new destination is not this host: the packet is forwarded.
    pub forwarded: bool,
    pub rule: RuleRef,
}

/// A rule whose match could not be decided, or whose action is not known,
/// and which could have changed the verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Uncertain {
    pub rule: RuleRef,
    pub reason: String,
}

/// One step of the walk, for evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// A base chain begins.
    BaseChain {
        family: String,
        table: String,
        chain: String,
        hook: Hook,
        priority: i32,
    },
    /// A NAT chain a packet of an existing connection does not traverse.
    Skipped {
        table: String,
        chain: String,
        reason: String,
    },
    /// A rule matched; `action` is its verdict kind.
    Matched {
        rule: RuleRef,
        action: VerdictKind,
    },
    /// A user chain entered by jump or goto.
    Entered {
        chain: String,
        goto: bool,
    },
    /// Back from a user chain (its end or a return).
    Returned {
        to: String,
    },
    /// A base chain's end or a return in it: the policy applies.
    Policy(PolicyRef),
    Nat(NatRewrite),
}

/// The evaluator's answer for one packet on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Final,
    /// The rule that decided; for an accept, the last rule that accepted.
    /// `None` when a chain policy decided.
    pub deciding: Option<RuleRef>,
    /// The policy that decided, when no rule did.
    pub policy: Option<PolicyRef>,
    pub trace: Vec<Step>,
    pub nat: Option<NatRewrite>,
    /// Rules that might have decided otherwise ("unless rule X ...").
    pub uncertain: Vec<Uncertain>,
}

impl Decision {
    fn unknown(reason: impl Into<String>) -> Decision {
        Decision {
            verdict: Final::Unknown {
                reason: reason.into(),
            },
            deciding: None,
            policy: None,
            trace: Vec::new(),
            nat: None,
            uncertain: Vec::new(),
        }
    }

    /// True when no undecidable rule could have changed the verdict.
    pub fn is_certain(&self) -> bool {
        self.uncertain.is_empty() && !matches!(self.verdict, Final::Unknown { .. })
    }
}

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
        let mut walk = Walk {
            c: self,
            fam: match family {
                IpFamily::V4 => 0,
                IpFamily::V6 => 1,
            },
            st: State {
                hook: Hook::Prerouting,
                src: packet.src,
                dst: packet.dst,
                proto: packet.protocol.number(),
                sport: packet.sport,
                dport: packet.dport,
                iif: packet.iif.as_deref(),
                oif: packet.oif.as_deref(),
                ct: packet.ct_state,
                dst_local: packet.dst_is_local,
                icmp_type: packet.icmp_type,
                dnat: false,
                snat: false,
            },
            packet,
            trace: Vec::new(),
            nat: None,
            candidates: Vec::new(),
            last_accept: None,
            last_policy: None,
        };
        let result = walk.run(path);
        walk.finish(result)
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

/// How an undecided rule could have changed the outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Could {
    /// Accept in a filter chain: changes nothing when the packet is accepted.
    Accept,
    Drop,
    Reject(Option<String>),
    Anything,
}

fn policy_rank(ch: &CompiledChain) -> (bool, bool) {
    (
        matches!(ch.hook, Some(Hook::Input | Hook::Forward | Hook::Output)),
        !ch.nat,
    )
}

/// How one base chain ended.
enum ChainEnd {
    Accepted,
    Final(Final, Option<RuleRef>, Option<PolicyRef>),
}

struct Walk<'a, 'p> {
    c: &'a Compiled,
    fam: usize,
    st: State<'p>,
    packet: &'p Packet,
    trace: Vec<Step>,
    nat: Option<NatRewrite>,
    candidates: Vec<(Uncertain, Could)>,
    last_accept: Option<RuleRef>,
    last_policy: Option<((bool, bool), PolicyRef)>,
}

impl Walk<'_, '_> {
    fn rule_ref(&self, chain: usize, rule: usize) -> RuleRef {
        let ch = &self.c.chains[chain];
        let t = &self.c.tables[ch.table];
        let r = &ch.rules[rule];
        RuleRef {
            family: t.family.clone(),
            table: t.name.clone(),
            backend: t.backend.clone(),
            chain: ch.name.clone(),
            handle: r.handle,
            position: r.position,
            text: r.text.clone(),
            comment: r.comment.clone(),
        }
    }

    fn policy_ref(&self, chain: usize) -> PolicyRef {
        let ch = &self.c.chains[chain];
        let t = &self.c.tables[ch.table];
        PolicyRef {
            family: t.family.clone(),
            table: t.name.clone(),
            backend: t.backend.clone(),
            chain: ch.name.clone(),
            hook: ch.hook.unwrap_or(self.st.hook),
            policy: ch.policy.clone().unwrap_or_else(|| "accept".into()),
        }
    }

    fn run(&mut self, path: PathKind) -> ChainEnd {
        let first: &[Hook] = match path {
            PathKind::Receive | PathKind::Forward => &[Hook::Prerouting],
            PathKind::Send => &[Hook::Output, Hook::Postrouting],
        };
        for h in first {
            if let ChainEnd::Final(f, r, p) = self.hook(*h) {
                return ChainEnd::Final(f, r, p);
            }
        }
        let rest: &[Hook] = match path {
            PathKind::Send => &[],
            PathKind::Receive if !self.nat.as_ref().is_some_and(|n| n.forwarded) => &[Hook::Input],
            _ => &[Hook::Forward, Hook::Postrouting],
        };
        for h in rest {
            if let ChainEnd::Final(f, r, p) = self.hook(*h) {
                return ChainEnd::Final(f, r, p);
            }
        }
        ChainEnd::Accepted
    }

    fn hook(&mut self, hook: Hook) -> ChainEnd {
        self.st.hook = hook;
        let c = self.c;
        for &id in &c.hooks[self.fam][hook.index()] {
            let ch = &c.chains[id];
            let t = &c.tables[ch.table];
            if ch.nat && self.st.ct != CtState::New {
                self.trace.push(Step::Skipped {
                    table: t.name.clone(),
                    chain: ch.name.clone(),
                    reason: "NAT chains see only a connection's first packet".into(),
                });
                continue;
            }
            self.trace.push(Step::BaseChain {
                family: t.family.clone(),
                table: t.name.clone(),
                chain: ch.name.clone(),
                hook,
                priority: ch.priority,
            });
            if let ChainEnd::Final(f, r, p) = self.base_chain(id) {
                return ChainEnd::Final(f, r, p);
            }
        }
        ChainEnd::Accepted
    }

    fn policy(&mut self, base: usize) -> ChainEnd {
        let p = self.policy_ref(base);
        self.trace.push(Step::Policy(p.clone()));
        let ch = &self.c.chains[base];
        if ch.policy_drop {
            ChainEnd::Final(Final::Drop, None, Some(p))
        } else {
            // The policy that names an accept best is the last one of a
            // filtering hook (input, forward, output), not of a NAT chain.
            let rank = policy_rank(ch);
            if self.last_policy.as_ref().is_none_or(|(r, _)| rank >= *r) {
                self.last_policy = Some((rank, p));
            }
            ChainEnd::Accepted
        }
    }

    fn base_chain(&mut self, base: usize) -> ChainEnd {
        let c = self.c;
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let (mut chain, mut i) = (base, 0usize);
        for _ in 0..MAX_STEPS {
            let ch = &c.chains[chain];
            let Some(rule) = ch.rules.get(i) else {
                match stack.pop() {
                    Some((back, at)) => {
                        self.trace.push(Step::Returned {
                            to: c.chains[back].name.clone(),
                        });
                        (chain, i) = (back, at);
                        continue;
                    }
                    None => return self.policy(base),
                }
            };
            let here = i;
            i += 1;
            let sets = &c.tables[ch.table].sets;
            let mut answer = Tri::Yes;
            for m in &rule.matches {
                match m.eval(&self.st, sets) {
                    Tri::No => {
                        answer = Tri::No;
                        break;
                    }
                    Tri::Maybe => answer = Tri::Maybe,
                    Tri::Yes => {}
                }
            }
            if answer == Tri::Yes && rule.unexplained {
                answer = Tri::Maybe;
            }
            match answer {
                Tri::No => continue,
                Tri::Maybe => {
                    self.undecided(chain, here);
                    continue;
                }
                Tri::Yes => {}
            }
            let rref = self.rule_ref(chain, here);
            self.trace.push(Step::Matched {
                rule: rref.clone(),
                action: rule.kind,
            });
            match &rule.action {
                Action::Continue => {}
                Action::Notrack => self.st.ct = CtState::Untracked,
                Action::Accept | Action::SourceNat => {
                    if rule.kind == VerdictKind::Snat || rule.kind == VerdictKind::Masquerade {
                        self.st.snat = true;
                    }
                    if !ch.nat {
                        self.last_accept = Some(rref);
                    }
                    return ChainEnd::Accepted;
                }
                Action::Drop => return ChainEnd::Final(Final::Drop, Some(rref), None),
                Action::Reject(with) => {
                    return ChainEnd::Final(Final::Reject { with: with.clone() }, Some(rref), None);
                }
                Action::Jump(Ok(to)) | Action::Goto(Ok(to)) => {
                    let goto = matches!(rule.action, Action::Goto(_));
                    if !goto {
                        if stack.len() >= MAX_DEPTH {
                            return self.stuck("jumps nest too deep (a loop?)", rref);
                        }
                        stack.push((chain, i));
                    }
                    self.trace.push(Step::Entered {
                        chain: c.chains[*to].name.clone(),
                        goto,
                    });
                    (chain, i) = (*to, 0);
                }
                Action::Jump(Err(name)) | Action::Goto(Err(name)) => {
                    let why = format!("jump to chain {name:?}, which the ruleset does not have");
                    return self.stuck(&why, rref);
                }
                Action::Return => match stack.pop() {
                    Some((back, at)) => {
                        self.trace.push(Step::Returned {
                            to: c.chains[back].name.clone(),
                        });
                        (chain, i) = (back, at);
                    }
                    None => return self.policy(base),
                },
                Action::Dnat { addr, port } => {
                    self.rewrite("dnat", *addr, *port, rref);
                    return ChainEnd::Accepted;
                }
                Action::Redirect(port) => {
                    self.rewrite("redirect", None, *port, rref);
                    return ChainEnd::Accepted;
                }
                Action::Queue => {
                    return self.stuck("queued to a userspace program (NFQUEUE)", rref);
                }
                Action::Unknown(why) => {
                    let why = why.clone();
                    self.candidates.push((
                        Uncertain {
                            rule: rref,
                            reason: why,
                        },
                        Could::Anything,
                    ));
                }
            }
        }
        ChainEnd::Final(
            Final::Unknown {
                reason: format!("more than {MAX_STEPS} rules visited in one chain"),
            },
            None,
            None,
        )
    }

    fn stuck(&self, reason: &str, rule: RuleRef) -> ChainEnd {
        ChainEnd::Final(
            Final::Unknown {
                reason: reason.to_string(),
            },
            Some(rule),
            None,
        )
    }

    /// A rule the packet might match: keep it if matching could matter.
    fn undecided(&mut self, chain: usize, rule: usize) {
        let ch = &self.c.chains[chain];
        let r = &ch.rules[rule];
        // Source NAT, or an accept that only skips it, never filters.
        let source_nat = ch.nat && matches!(self.st.hook, Hook::Input | Hook::Postrouting);
        let could = match &r.action {
            Action::Continue | Action::SourceNat => return,
            Action::Accept if source_nat => return,
            Action::Accept if !ch.nat => Could::Accept,
            Action::Drop => Could::Drop,
            Action::Reject(w) => Could::Reject(w.clone()),
            _ => Could::Anything,
        };
        let sets = &self.c.tables[ch.table].sets;
        let mut reasons: Vec<String> = r
            .matches
            .iter()
            .filter(|m| m.eval(&self.st, sets) == Tri::Maybe)
            .map(CompiledMatch::why_open)
            .collect();
        if let Action::Unknown(why) = &r.action {
            reasons.push(why.clone());
        }
        if r.unexplained {
            reasons.push("the agent could not normalise this rule".into());
        }
        let rref = self.rule_ref(chain, rule);
        self.candidates.push((
            Uncertain {
                rule: rref,
                reason: reasons.join("; "),
            },
            could,
        ));
    }

    fn rewrite(&mut self, kind: &str, addr: Option<IpAddr>, port: Option<u16>, rule: RuleRef) {
        if !matches!(self.st.hook, Hook::Prerouting | Hook::Output) {
            return;
        }
        let (original_dst, original_port) = (self.st.dst, self.st.dport);
        let mut forwarded = false;
        if let Some(a) = addr {
            if a != self.st.dst {
                self.st.dst_local = a.is_loopback() || self.packet.local_addrs.contains(&a);
                forwarded = !self.st.dst_local && self.st.hook == Hook::Prerouting;
            }
            self.st.dst = a;
        } else if kind == "redirect" {
            self.st.dst_local = true;
        }
        if let Some(p) = port {
            self.st.dport = Some(p);
        }
        self.st.dnat = true;
        let n = NatRewrite {
            kind: kind.to_string(),
            original_dst,
            original_port,
            dst: addr,
            port: port.or(original_port),
            forwarded,
            rule,
        };
        self.trace.push(Step::Nat(n.clone()));
        self.nat = Some(n);
    }

    fn finish(self, end: ChainEnd) -> Decision {
        let (verdict, deciding, policy) = match end {
            ChainEnd::Final(f, r, p) => (f, r, p),
            ChainEnd::Accepted => match self.last_accept {
                Some(r) => (Final::Accept, Some(r), None),
                None => (Final::Accept, None, self.last_policy.map(|(_, p)| p)),
            },
        };
        let uncertain = self
            .candidates
            .into_iter()
            .filter(|(_, could)| match (&verdict, could) {
                (Final::Accept, Could::Accept) | (Final::Drop, Could::Drop) => false,
                (Final::Reject { with }, Could::Reject(w)) => w != with,
                _ => true,
            })
            .map(|(u, _)| u)
            .collect();
        Decision {
            verdict,
            deciding,
            policy,
            trace: self.trace,
            nat: self.nat,
            uncertain,
        }
    }
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
