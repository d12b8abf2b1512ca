//! The host's firewall ruleset, normalised into one model whether it comes
//! from nftables or iptables.
//!
//! The model is what a packet evaluator walks: base chains ordered by hook
//! and priority, rules in order with their matches and verdict, jumps by
//! chain name, named sets by name. Anything the parsers could not normalise
//! stays visible as `Match::Other` / `RuleVerdict::Other` with the rule's
//! `unsupported` flag set, so an evaluator can answer "unknown" instead of
//! guessing.

use serde::Serialize;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// Which kernel interface and tool the rules came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Native nftables tables, read with `nft -j list table`.
    Nftables,
    /// x_tables, read with `iptables-legacy-save`; no change notifications.
    IptablesLegacy,
    /// iptables rules stored in nftables (`iptables-nft`), read with
    /// `iptables-nft-save` because nft's own JSON hides their xt options.
    IptablesNft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    /// The family as nft names it (`ip`, `ip6`, `inet`, ...).
    pub fn nft_name(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Ingress,
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

/// A base chain's policy: what happens to a packet no rule decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// One reading of the whole ruleset.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ruleset {
    /// Every backend that contributed a table, sorted. A host can run
    /// several at once (e.g. firewalld on nftables, Docker on iptables-legacy).
    pub backends: Vec<Backend>,
    pub tables: Vec<Table>,
    /// The nftables generation this reading belongs to, when known.
    pub generation: Option<u32>,
    /// Hash of everything but the counters: equal hashes, equal rules.
    pub hash: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub backend: Backend,
    /// In the order the tool listed them. Shared: a reading that re-reads
    /// two chains of 4,000 keeps the other 3,998 of the last one as they are.
    pub chains: Vec<Arc<Chain>>,
    /// Named sets (nftables only; ipset sets are not read).
    pub sets: Vec<Set>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chain {
    pub name: String,
    /// `None` for a regular chain, reached only by jump/goto.
    pub hook: Option<Hook>,
    pub chain_type: Option<ChainType>,
    /// Lower runs first among base chains of the same hook.
    pub priority: Option<i32>,
    pub policy: Option<Policy>,
    /// The device a netdev-family chain is bound to.
    pub device: Option<String>,
    pub handle: Option<u64>,
    /// Packets that fell through to the policy (iptables only).
    pub policy_counter: Option<Counter>,
    pub rules: Vec<Rule>,
    #[serde(skip)]
    pub hash: HashCache,
}

/// A chain's content hash, worked out the first time it is asked for: a
/// chain kept from one reading to the next is hashed once. A clone starts
/// empty, so a chain copied to be changed is hashed again.
#[derive(Debug, Default)]
pub struct HashCache(OnceLock<u64>);

impl Clone for HashCache {
    fn clone(&self) -> Self {
        HashCache::default()
    }
}

/// The cache is not content: chains are equal whatever it holds.
impl PartialEq for HashCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Chain {
    /// Hash of the chain's definition and its rules' text (counters
    /// excluded): equal hashes, equal chains.
    pub fn content_hash(&self) -> u64 {
        *self.hash.0.get_or_init(|| {
            let mut h = Fnv64::new();
            h.write(
                format!(
                    "chain {} {:?} {:?} {:?} {:?} {:?}\n",
                    self.name, self.hook, self.chain_type, self.priority, self.policy, self.device
                )
                .as_bytes(),
            );
            for r in &self.rules {
                h.write(r.text.as_bytes());
                h.write(b"\n");
            }
            h.finish()
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// The nftables handle (`nft -a`); `None` for iptables.
    pub handle: Option<u64>,
    /// 1-based index within its chain, as `iptables -L --line-numbers`.
    pub position: u32,
    /// All must hold for the rule to apply.
    pub matches: Vec<Match>,
    /// `None` when the rule only counts or logs.
    pub verdict: Option<RuleVerdict>,
    pub counter: Option<Counter>,
    pub comment: Option<String>,
    /// The rule as its tool would print it, without counters.
    pub text: String,
    /// Some match or action could not be normalised.
    pub unsupported: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    SourceAddr {
        negated: bool,
        set: AddrSet,
    },
    DestAddr {
        negated: bool,
        set: AddrSet,
    },
    /// Layer-4 protocol names: `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, or a number.
    Protocol {
        negated: bool,
        protos: Vec<String>,
    },
    SourcePort {
        negated: bool,
        ports: PortSet,
    },
    DestPort {
        negated: bool,
        ports: PortSet,
    },
    /// Interface names; a trailing `+` (iptables) or `*` (nftables) is a prefix wildcard.
    InInterface {
        negated: bool,
        names: Vec<String>,
    },
    OutInterface {
        negated: bool,
        names: Vec<String>,
    },
    CtState {
        negated: bool,
        states: Vec<CtState>,
    },
    /// The kernel's classification of an address (`-m addrtype`, `fib ... type`):
    /// `local`, `unicast`, `broadcast`, ... lower case.
    AddrType {
        destination: bool,
        negated: bool,
        types: Vec<String>,
    },
    /// Something this model does not express, in the tool's own words.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrSet {
    Literal(Vec<AddrItem>),
    /// A named set: `Table::set(name)` in nftables, an ipset with `-m set`.
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrItem {
    /// A single address is a prefix of full length.
    Prefix {
        addr: IpAddr,
        len: u8,
    },
    Range {
        from: IpAddr,
        to: IpAddr,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSet {
    Literal(Vec<PortRange>),
    Named(String),
}

/// Inclusive; a single port has `from == to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
    Snat,
    Dnat,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleVerdict {
    Accept,
    Drop,
    /// `with` is the tool's name for the reply, e.g. `icmpx admin-prohibited`,
    /// `tcp reset`, `icmp-host-prohibited`.
    Reject {
        with: Option<String>,
    },
    Return,
    Continue,
    Jump {
        chain: String,
    },
    Goto {
        chain: String,
    },
    /// Port-forward: the packet's destination becomes `addr`:`port`.
    Dnat {
        addr: Option<IpAddr>,
        port: Option<PortRange>,
    },
    Snat {
        addr: Option<IpAddr>,
        port: Option<PortRange>,
    },
    Masquerade,
    /// To the host itself, on `port`.
    Redirect {
        port: Option<PortRange>,
    },
    /// Non-terminating.
    Log {
        prefix: Option<String>,
    },
    Queue,
    /// An action the model does not express (MARK, CT, vmap, ...), as text.
    Other(String),
}

impl RuleVerdict {
    /// Whether evaluation of the chain stops here for a matching packet.
    /// `Other` is unknown and reported as not terminal.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            RuleVerdict::Continue | RuleVerdict::Log { .. } | RuleVerdict::Other(_)
        )
    }
}

/// A named nftables set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Set {
    pub name: String,
    /// The key type, e.g. `["ipv4_addr"]`; concatenations have several.
    pub key_type: Vec<String>,
    pub flags: Vec<String>,
    pub elements: Vec<SetElement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetElement {
    Addr(AddrItem),
    Ports(PortRange),
    Other(String),
}

impl Ruleset {
    /// Base chains on `hook` that see packets of `family` (`Ip`/`Ip6`), in
    /// the order the kernel runs them: by priority; ties keep listing order.
    pub fn base_chains(&self, hook: Hook, family: Family) -> Vec<(&Table, &Chain)> {
        let mut out: Vec<(&Table, &Chain)> = self
            .tables
            .iter()
            .filter(|t| t.family == family || t.family == Family::Inet)
            .flat_map(|t| t.chains.iter().map(move |c| (t, c.as_ref())))
            .filter(|(_, c)| c.hook == Some(hook))
            .collect();
        out.sort_by_key(|(_, c)| c.priority.unwrap_or(0));
        out
    }

    pub fn table(&self, family: Family, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.family == family && t.name == name)
    }

    /// Sets `hash` from the tables (counters excluded) and `backends`.
    pub fn finish(&mut self) {
        let mut backends: Vec<Backend> = self.tables.iter().map(|t| t.backend).collect();
        backends.sort();
        backends.dedup();
        self.backends = backends;
        let mut h = Fnv64::new();
        for t in &self.tables {
            h.write(format!("table {:?} {} {:?}\n", t.family, t.name, t.backend).as_bytes());
            for s in &t.sets {
                h.write(
                    format!(
                        "set {} {:?} {:?} {:?}\n",
                        s.name, s.key_type, s.flags, s.elements
                    )
                    .as_bytes(),
                );
            }
            for c in &t.chains {
                h.write(&c.content_hash().to_le_bytes());
            }
        }
        self.hash = h.finish();
    }
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name).map(Arc::as_ref)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// FNV-1a, 64 bit: stable across Rust versions and runs, unlike `DefaultHasher`,
/// so hashes can be compared between agent restarts.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Fnv64 {
    pub fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}
