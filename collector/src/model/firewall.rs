//! A node's firewall ruleset as the collector keeps it: the agent's
//! normalised model (nftables or iptables alike) with every match value
//! parsed, ready for a packet to be evaluated against it.

use serde::Serialize;
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
