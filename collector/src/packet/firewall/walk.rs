//! The walk of one packet through the hooks of one host's compiled ruleset.

use super::matching::{CompiledMatch, State, Tri};
use super::{
    Action, Compiled, CompiledChain, CtState, Decision, Final, Hook, MAX_DEPTH, MAX_STEPS,
    NatRewrite, Packet, PathKind, PolicyRef, RuleRef, Step, Uncertain,
};
use crate::model::firewall::VerdictKind;
use std::net::IpAddr;

/// Walks `packet` along `path`; `fam` is 0 for IPv4, 1 for IPv6.
pub(super) fn evaluate(c: &Compiled, fam: usize, packet: &Packet, path: PathKind) -> Decision {
    let mut walk = Walk {
        c,
        fam,
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
    /// The verdict, the rule and the policy that gave it.
    Final(Box<(Final, Option<RuleRef>, Option<PolicyRef>)>),
}

impl ChainEnd {
    fn end(verdict: Final, rule: Option<RuleRef>, policy: Option<PolicyRef>) -> ChainEnd {
        ChainEnd::Final(Box::new((verdict, rule, policy)))
    }
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
            if let end @ ChainEnd::Final(_) = self.hook(*h) {
                return end;
            }
        }
        let rest: &[Hook] = match path {
            PathKind::Send => &[],
            PathKind::Receive if !self.nat.as_ref().is_some_and(|n| n.forwarded) => &[Hook::Input],
            _ => &[Hook::Forward, Hook::Postrouting],
        };
        for h in rest {
            if let end @ ChainEnd::Final(_) = self.hook(*h) {
                return end;
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
            if let end @ ChainEnd::Final(_) = self.base_chain(id) {
                return end;
            }
        }
        ChainEnd::Accepted
    }

    fn policy(&mut self, base: usize) -> ChainEnd {
        let p = self.policy_ref(base);
        self.trace.push(Step::Policy(p.clone()));
        let ch = &self.c.chains[base];
        if ch.policy_drop {
            ChainEnd::end(Final::Drop, None, Some(p))
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
                Action::Drop => return ChainEnd::end(Final::Drop, Some(rref), None),
                Action::Reject(with) => {
                    return ChainEnd::end(Final::Reject { with: with.clone() }, Some(rref), None);
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
        ChainEnd::end(
            Final::Unknown {
                reason: format!("more than {MAX_STEPS} rules visited in one chain"),
            },
            None,
            None,
        )
    }

    fn stuck(&self, reason: &str, rule: RuleRef) -> ChainEnd {
        ChainEnd::end(
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
            ChainEnd::Final(e) => (e.0, e.1, e.2),
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
