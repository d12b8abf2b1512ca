//! What the evaluator takes and answers: the packet, the path, the
//! decision with its deciding rule or policy, NAT followed, and the trace.

use crate::model::firewall::VerdictKind;
use serde::Serialize;
use std::net::IpAddr;

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
    pub(super) fn bit(self) -> u8 {
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
    pub(super) fn parse(s: &str) -> Option<Hook> {
        Some(match s {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            _ => return None,
        })
    }

    pub(super) fn index(self) -> usize {
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
    pub(super) fn unknown(reason: impl Into<String>) -> Decision {
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
