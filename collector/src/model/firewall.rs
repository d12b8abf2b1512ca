//! A node's firewall ruleset as the collector keeps it: the agent's
//! normalised model (nftables or iptables alike) with every match value
//! parsed, ready for a packet to be evaluated against it.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Firewall {
    /// "nftables", "iptables-legacy", "iptables-nft" or "none".
    pub backend: String,
    pub generation: Option<u32>,
    pub hash: u64,
    pub tables: Vec<Table>,
    /// Why the agent could not read the ruleset.
    pub error: Option<String>,
}

impl Firewall {
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }
}

/// A table's identity within a ruleset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableKey {
    pub family: String,
    pub name: String,
}

/// A validated chain-level change: the tables after it, in order, and what
/// changed in them (see `FirewallPatch` in the protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallPatch {
    pub base_hash: u64,
    pub backend: String,
    pub generation: Option<u32>,
    pub hash: u64,
    pub tables: Vec<TableKey>,
    pub patches: Vec<TablePatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePatch {
    pub table: TableKey,
    pub backend: String,
    /// New or changed chains, whole.
    pub chains: Vec<Chain>,
    /// Every chain of the table in order, when chains were added, removed
    /// or moved.
    pub chain_order: Option<Vec<String>>,
    /// The table's sets, when they changed.
    pub sets: Option<Vec<Set>>,
}

impl Firewall {
    /// Why `patch` cannot be applied to this ruleset, if it cannot: it was
    /// made on another one, names a table or chain this one does not hold,
    /// or would grow past `max_rules`. Checked before anything changes, so
    /// a refused patch leaves the ruleset as it was.
    pub fn check_patch(&self, patch: &FirewallPatch, max_rules: usize) -> Result<(), String> {
        if self.error.is_some() || self.hash != patch.base_hash {
            return Err(format!(
                "firewall patch on ruleset {:016x}, but the collector has {:016x}",
                patch.base_hash, self.hash
            ));
        }
        let mut rules = 0usize;
        for key in &patch.tables {
            let old = self.table(key);
            let p = patch.patches.iter().find(|p| p.table == *key);
            rules += match (old, p) {
                (None, None) => {
                    return Err(format!(
                        "firewall patch keeps table {} {}, which the collector does not have",
                        key.family, key.name
                    ));
                }
                (Some(t), None) => t.rules(),
                (old, Some(p)) => {
                    let mut sizes: HashMap<&str, usize> = old
                        .iter()
                        .flat_map(|t| &t.chains)
                        .map(|c| (c.name.as_str(), c.rules.len()))
                        .collect();
                    sizes.extend(p.chains.iter().map(|c| (c.name.as_str(), c.rules.len())));
                    let mut n = 0;
                    for name in p.order(old) {
                        let Some(size) = sizes.get(name.as_str()) else {
                            return Err(format!(
                                "firewall patch keeps chain {name} of table {} {}, which the collector does not have",
                                key.family, key.name
                            ));
                        };
                        n += size;
                    }
                    n
                }
            };
        }
        if rules > max_rules {
            return Err(format!("firewall patch makes more than {max_rules} rules"));
        }
        Ok(())
    }

    /// Applies a patch `check_patch` accepted.
    pub fn apply_patch(&mut self, patch: FirewallPatch) {
        let mut old: HashMap<TableKey, Table> = std::mem::take(&mut self.tables)
            .into_iter()
            .map(|t| (t.key(), t))
            .collect();
        let mut patches: HashMap<TableKey, TablePatch> = patch
            .patches
            .into_iter()
            .map(|p| (p.table.clone(), p))
            .collect();
        for key in patch.tables {
            let before = old.remove(&key);
            let table = match (before, patches.remove(&key)) {
                (Some(t), None) => t,
                (before, Some(p)) => p.apply(key, before),
                (None, None) => continue,
            };
            self.tables.push(table);
        }
        self.backend = patch.backend;
        self.generation = patch.generation;
        self.hash = patch.hash;
    }

    fn table(&self, key: &TableKey) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.family == key.family && t.name == key.name)
    }
}

impl TablePatch {
    /// The table's chain names after the patch.
    fn order(&self, old: Option<&Table>) -> Vec<String> {
        match (&self.chain_order, old) {
            (Some(order), _) => order.clone(),
            (None, Some(t)) => t.chains.iter().map(|c| c.name.clone()).collect(),
            (None, None) => self.chains.iter().map(|c| c.name.clone()).collect(),
        }
    }

    fn apply(self, key: TableKey, old: Option<Table>) -> Table {
        let order = self.order(old.as_ref());
        let (mut old_chains, sets) = match old {
            Some(t) => (
                t.chains
                    .into_iter()
                    .map(|c| (c.name.clone(), c))
                    .collect::<HashMap<_, _>>(),
                t.sets,
            ),
            None => (HashMap::new(), Vec::new()),
        };
        let mut fresh: HashMap<String, Chain> = self
            .chains
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let chains = order
            .iter()
            .filter_map(|name| fresh.remove(name).or_else(|| old_chains.remove(name)))
            .collect();
        Table {
            family: key.family,
            name: key.name,
            backend: self.backend,
            chains,
            sets: self.sets.unwrap_or(sets),
        }
    }
}

impl Table {
    pub fn key(&self) -> TableKey {
        TableKey {
            family: self.family.clone(),
            name: self.name.clone(),
        }
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn rules(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    pub family: String,
    pub name: String,
    pub backend: String,
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub name: String,
    /// `None` for a user chain.
    pub hook: Option<String>,
    pub chain_type: Option<String>,
    pub priority: Option<i32>,
    /// "accept" or "drop", base chains only.
    pub policy: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Set {
    pub name: String,
    pub set_type: String,
    pub elements: Vec<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    SourceAddress,
    DestinationAddress,
    Protocol,
    SourcePort,
    DestinationPort,
    InInterface,
    OutInterface,
    CtState,
    AddressFamily,
    IcmpType,
    DestinationAddressType,
    Other,
}

impl Field {
    pub fn is_address(self) -> bool {
        matches!(self, Field::SourceAddress | Field::DestinationAddress)
    }

    pub fn is_port(self) -> bool {
        matches!(self, Field::SourcePort | Field::DestinationPort)
    }
}

/// One value a match accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Value {
    /// An address prefix (a single address has the full length).
    Prefix { ip: IpAddr, len: u8 },
    /// An inclusive address range.
    AddressRange { first: IpAddr, last: IpAddr },
    /// An inclusive port range (a single port has first == last).
    Ports { first: u16, last: u16 },
    /// A named set of the same table.
    SetRef(String),
    /// Anything else: a protocol, an interface name or pattern, a ct state.
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Prefix { ip, len } if (ip.is_ipv4() && *len == 32) || *len == 128 => {
                write!(f, "{ip}")
            }
            Value::Prefix { ip, len } => write!(f, "{ip}/{len}"),
            Value::AddressRange { first, last } => write!(f, "{first}-{last}"),
            Value::Ports { first, last } if first == last => write!(f, "{first}"),
            Value::Ports { first, last } => write!(f, "{first}-{last}"),
            Value::SetRef(name) => write!(f, "@{name}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Match {
    pub field: Field,
    pub negated: bool,
    pub values: Vec<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Continue,
    Accept,
    Drop,
    Reject,
    Jump,
    Goto,
    Return,
    Dnat,
    Snat,
    Masquerade,
    Redirect,
    Queue,
    /// An action not normalised; `Verdict::target` holds its text.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// Jump/goto chain, reject reply, or NAT target address.
    pub target: Option<String>,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub handle: Option<u64>,
    pub position: u32,
    pub matches: Vec<Match>,
    pub verdict: Verdict,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    pub comment: Option<String>,
    pub text: String,
    /// Some match or action was not normalised.
    pub unsupported: bool,
}
