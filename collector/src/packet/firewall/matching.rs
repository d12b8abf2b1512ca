//! Rule matches compiled once per ruleset: addresses and ports as sorted
//! ranges, protocols as a bitmap, named sets resolved to their table's
//! parsed elements. A match answers yes, no or "cannot tell" (`Maybe`) for
//! the packet as it is at one point of its path.

use super::{CtState, Hook};
use crate::model::firewall::{Field, Match, Value};
use std::net::IpAddr;

/// Three-valued answer of a match or a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tri {
    Yes,
    No,
    Maybe,
}

impl Tri {
    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
        }
    }
}

/// Sorted, merged, inclusive ranges: membership by binary search.
#[derive(Clone, Debug, Default)]
pub(super) struct Ranges<T> {
    ranges: Vec<(T, T)>,
}

impl<T: Copy + Ord + Step> Ranges<T> {
    fn from_vec(mut v: Vec<(T, T)>) -> Self {
        v.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.next_or_max() => {
                    if hi > last.1 {
                        last.1 = hi;
                    }
                }
                _ => out.push((lo, hi)),
            }
        }
        Ranges { ranges: out }
    }

    fn contains(&self, x: T) -> bool {
        let i = self.ranges.partition_point(|(lo, _)| *lo <= x);
        i > 0 && self.ranges[i - 1].1 >= x
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The successor, saturating, so adjacent ranges merge.
pub(super) trait Step {
    fn next_or_max(self) -> Self;
}

impl Step for u16 {
    fn next_or_max(self) -> Self {
        self.saturating_add(1)
    }
}

impl Step for u32 {
    fn next_or_max(self) -> Self {
        self.saturating_add(1)
    }
}

impl Step for u128 {
    fn next_or_max(self) -> Self {
        self.saturating_add(1)
    }
}

/// Addresses of both families.
#[derive(Clone, Debug, Default)]
pub(super) struct AddrRanges {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl AddrRanges {
    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.contains(u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    fn has_family_of(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => !self.v4.is_empty(),
            IpAddr::V6(_) => !self.v6.is_empty(),
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[derive(Default)]
struct AddrBuilder {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl AddrBuilder {
    /// False when the value is not an address form.
    fn push(&mut self, v: &Value) -> bool {
        match v {
            Value::Prefix {
                ip: IpAddr::V4(a),
                len,
            } => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                let lo = u32::from(*a) & mask;
                self.v4.push((lo, lo | !mask));
            }
            Value::Prefix {
                ip: IpAddr::V6(a),
                len,
            } => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                let lo = u128::from(*a) & mask;
                self.v6.push((lo, lo | !mask));
            }
            Value::AddressRange {
                first: IpAddr::V4(a),
                last: IpAddr::V4(b),
            } => self.v4.push((u32::from(*a), u32::from(*b))),
            Value::AddressRange {
                first: IpAddr::V6(a),
                last: IpAddr::V6(b),
            } => self.v6.push((u128::from(*a), u128::from(*b))),
            _ => return false,
        }
        true
    }

    fn build(self) -> AddrRanges {
        AddrRanges {
            v4: Ranges::from_vec(self.v4),
            v6: Ranges::from_vec(self.v6),
        }
    }
}

/// An interface name, or a prefix (`eth+` in iptables, `eth*` in nftables).
#[derive(Clone, Debug)]
pub(super) enum IfPattern {
    Exact(String),
    Prefix(String),
}

impl IfPattern {
    fn parse(s: &str) -> IfPattern {
        match s.strip_suffix('+').or_else(|| s.strip_suffix('*')) {
            Some(p) => IfPattern::Prefix(p.to_string()),
            None => IfPattern::Exact(s.to_string()),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            IfPattern::Exact(n) => n == name,
            IfPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// A named set of a table with its elements parsed for every use.
#[derive(Clone, Debug, Default)]
pub(super) struct CompiledSet {
    addrs: AddrRanges,
    ports: Ranges<u16>,
    texts: Vec<String>,
}

impl CompiledSet {
    pub(super) fn new(set: &crate::model::firewall::Set) -> CompiledSet {
        let mut addrs = AddrBuilder::default();
        let mut ports = Vec::new();
        let mut texts = Vec::new();
        for e in &set.elements {
            if addrs.push(e) {
                continue;
            }
            match e {
                Value::Ports { first, last } => ports.push((*first, *last)),
                other => texts.push(other.to_string()),
            }
        }
        CompiledSet {
            addrs: addrs.build(),
            ports: Ranges::from_vec(ports),
            texts,
        }
    }
}

/// The packet as it is at one point of its path: NAT may have changed it.
#[derive(Clone, Debug)]
pub(super) struct State<'p> {
    pub(super) hook: Hook,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) proto: u8,
    pub(super) sport: Option<u16>,
    pub(super) dport: Option<u16>,
    pub(super) iif: Option<&'p str>,
    pub(super) oif: Option<&'p str>,
    pub(super) ct: CtState,
    pub(super) dst_local: bool,
    pub(super) icmp_type: Option<u8>,
    pub(super) dnat: bool,
    pub(super) snat: bool,
}

impl State<'_> {
    /// The interface names as the hook sees them: none on the side the
    /// packet has not got (input has no output interface, output no input).
    fn iface(&self, out: bool) -> Option<&str> {
        let has = match self.hook {
            Hook::Prerouting | Hook::Input => !out,
            Hook::Output | Hook::Postrouting => out,
            Hook::Forward => true,
        };
        if !has {
            return Some("");
        }
        if out { self.oif } else { self.iif }
    }

    fn has_ports(&self) -> bool {
        matches!(self.proto, 6 | 17 | 33 | 132 | 136)
    }
}

#[derive(Clone, Debug)]
pub(super) enum Test {
    Addr {
        dst: bool,
        ranges: AddrRanges,
        sets: Vec<usize>,
    },
    Port {
        dst: bool,
        ranges: Ranges<u16>,
        sets: Vec<usize>,
    },
    /// A bitmap of protocol numbers; `any` for `all`.
    Proto {
        any: bool,
        bits: [u64; 4],
        sets: Vec<usize>,
    },
    Iface {
        out: bool,
        pats: Vec<IfPattern>,
        sets: Vec<usize>,
    },
    /// Bits of `CtState::bit`, plus `ct_dnat`/`ct_snat` for the NAT states.
    Ct {
        mask: u8,
    },
    AddrType {
        types: Vec<String>,
    },
    Family {
        v4: bool,
        v6: bool,
    },
    Icmp {
        v6: Option<bool>,
        types: Vec<u8>,
        any: bool,
    },
    Always,
    /// Not expressed in the model: the packet might or might not match.
    Other,
}

/// One compiled match. `unknown` says why it cannot always be decided
/// (values it could not parse, sets it cannot see).
#[derive(Clone, Debug)]
pub(super) struct CompiledMatch {
    pub(super) negated: bool,
    pub(super) test: Test,
    pub(super) unknown: Option<String>,
}

pub(super) const CT_DNAT: u8 = 1 << 5;
pub(super) const CT_SNAT: u8 = 1 << 6;

fn proto_number(s: &str) -> Option<Option<u8>> {
    if let Ok(n) = s.parse::<u8>() {
        return Some(Some(n));
    }
    Some(Some(match s.to_ascii_lowercase().as_str() {
        "all" | "any" => return Some(None),
        "icmp" => 1,
        "igmp" => 2,
        "ipip" | "ipencap" => 4,
        "tcp" => 6,
        "dccp" => 33,
        "ipv6" => 41,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" | "icmp6" => 58,
        "ospf" => 89,
        "pim" => 103,
        "vrrp" => 112,
        "l2tp" => 115,
        "sctp" => 132,
        "udplite" => 136,
        "udp" => 17,
        _ => return None,
    }))
}

fn icmp_type(s: &str, v6: bool) -> Option<u8> {
    let s = s.split('/').next().unwrap_or(s);
    if let Ok(n) = s.parse::<u8>() {
        return Some(n);
    }
    Some(match (s, v6) {
        ("echo-reply", false) => 0,
        ("destination-unreachable", false) => 3,
        ("source-quench", false) => 4,
        ("redirect", false) => 5,
        ("echo-request", false) => 8,
        ("router-advertisement", false) => 9,
        ("router-solicitation", false) => 10,
        ("time-exceeded", false) => 11,
        ("parameter-problem", false) => 12,
        ("timestamp-request", false) => 13,
        ("timestamp-reply", false) => 14,
        ("destination-unreachable", true) => 1,
        ("packet-too-big", true) => 2,
        ("time-exceeded", true) => 3,
        ("parameter-problem", true) => 4,
        ("echo-request", true) => 128,
        ("echo-reply", true) => 129,
        ("nd-router-solicit", true) => 133,
        ("nd-router-advert", true) => 134,
        ("nd-neighbor-solicit", true) => 135,
        ("nd-neighbor-advert", true) => 136,
        _ => return None,
    })
}

/// Compiles one model match; `set` resolves a set name of the rule's table.
pub(super) fn compile(m: &Match, set: &dyn Fn(&str) -> Option<usize>) -> CompiledMatch {
    let mut unknown: Vec<String> = Vec::new();
    let mut sets = Vec::new();
    let mut set_ref = |name: &str, unknown: &mut Vec<String>| match set(name) {
        Some(i) => sets.push(i),
        None => unknown.push(format!("@{name} is not a set of this table (an ipset?)")),
    };
    let test = match m.field {
        Field::SourceAddress | Field::DestinationAddress => {
            let mut b = AddrBuilder::default();
            for v in &m.values {
                match v {
                    Value::SetRef(n) => set_ref(n, &mut unknown),
                    v if b.push(v) => {}
                    v => unknown.push(format!("address value {v}")),
                }
            }
            Test::Addr {
                dst: m.field == Field::DestinationAddress,
                ranges: b.build(),
                sets,
            }
        }
        Field::SourcePort | Field::DestinationPort => {
            let mut r = Vec::new();
            for v in &m.values {
                match v {
                    Value::SetRef(n) => set_ref(n, &mut unknown),
                    Value::Ports { first, last } => r.push((*first, *last)),
                    v => unknown.push(format!("port value {v}")),
                }
            }
            Test::Port {
                dst: m.field == Field::DestinationPort,
                ranges: Ranges::from_vec(r),
                sets,
            }
        }
        Field::Protocol => {
            let mut bits = [0u64; 4];
            let mut any = false;
            for v in &m.values {
                match v {
                    Value::SetRef(n) => set_ref(n, &mut unknown),
                    v => match proto_number(&v.to_string()) {
                        Some(Some(n)) => bits[usize::from(n / 64)] |= 1 << (n % 64),
                        Some(None) => any = true,
                        None => unknown.push(format!("protocol {v}")),
                    },
                }
            }
            Test::Proto { any, bits, sets }
        }
        Field::InInterface | Field::OutInterface => {
            let mut pats = Vec::new();
            for v in &m.values {
                match v {
                    Value::SetRef(n) => set_ref(n, &mut unknown),
                    v => pats.push(IfPattern::parse(&v.to_string())),
                }
            }
            Test::Iface {
                out: m.field == Field::OutInterface,
                pats,
                sets,
            }
        }
        Field::CtState => {
            let mut mask = 0u8;
            for v in &m.values {
                let s = v.to_string().to_ascii_lowercase();
                match s.as_str() {
                    "new" => mask |= CtState::New.bit(),
                    "established" => mask |= CtState::Established.bit(),
                    "related" => mask |= CtState::Related.bit(),
                    "invalid" => mask |= CtState::Invalid.bit(),
                    "untracked" => mask |= CtState::Untracked.bit(),
                    "dnat" => mask |= CT_DNAT,
                    "snat" => mask |= CT_SNAT,
                    _ => unknown.push(format!("ct state {s}")),
                }
            }
            Test::Ct { mask }
        }
        Field::DestinationAddressType => Test::AddrType {
            types: m
                .values
                .iter()
                .map(|v| v.to_string().to_ascii_lowercase())
                .collect(),
        },
        Field::AddressFamily => {
            let (mut v4, mut v6) = (false, false);
            for v in &m.values {
                match v.to_string().to_ascii_lowercase().as_str() {
                    "ipv4" | "ip" | "2" => v4 = true,
                    "ipv6" | "ip6" | "10" => v6 = true,
                    other => unknown.push(format!("address family {other}")),
                }
            }
            Test::Family { v4, v6 }
        }
        Field::IcmpType => {
            let mut types = Vec::new();
            let mut any = false;
            for v in &m.values {
                let s = v.to_string();
                if s == "any" {
                    any = true;
                } else if let Some(t) = icmp_type(&s, false) {
                    types.push(t);
                } else {
                    unknown.push(format!("icmp type {s}"));
                }
            }
            Test::Icmp {
                v6: None,
                types,
                any,
            }
        }
        Field::Other => {
            let text = m
                .values
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(c) = other_text(&text, m.negated) {
                return c;
            }
            unknown.push(format!("`{text}` is not evaluated"));
            Test::Other
        }
    };
    CompiledMatch {
        negated: m.negated,
        test,
        unknown: (!unknown.is_empty()).then(|| unknown.join("; ")),
    }
}

/// The few unnormalised matches worth understanding because they decide
/// most rules they appear in: ICMP types and the address family.
fn other_text(text: &str, negated: bool) -> Option<CompiledMatch> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (v6, rest, negated) = match words.as_slice() {
        // A comment always matches (nft's view of an iptables-nft rule).
        ["xt", "match", "comment"] => {
            return Some(CompiledMatch {
                negated,
                test: Test::Always,
                unknown: None,
            });
        }
        ["-m", "icmp", "--icmp-type", t] => (false, vec![*t], negated),
        ["-m", "icmp", "!", "--icmp-type", t] => (false, vec![*t], !negated),
        ["-m", "icmp6", "--icmpv6-type", t] => (true, vec![*t], negated),
        ["-m", "icmp6", "!", "--icmpv6-type", t] => (true, vec![*t], !negated),
        ["meta", "nfproto", f] => {
            let (v4, v6) = match *f {
                "ipv4" => (true, false),
                "ipv6" => (false, true),
                _ => return None,
            };
            return Some(CompiledMatch {
                negated,
                test: Test::Family { v4, v6 },
                unknown: None,
            });
        }
        [proto @ ("icmp" | "icmpv6"), "type", rest @ ..] => {
            let (neg, list) = match rest {
                ["!=", list @ ..] => (true, list),
                list => (false, list),
            };
            let items: Vec<&str> = list
                .iter()
                .map(|w| w.trim_matches(|c| c == '{' || c == '}' || c == ','))
                .filter(|w| !w.is_empty())
                .collect();
            (*proto == "icmpv6", items, negated ^ neg)
        }
        _ => return None,
    };
    let types = rest
        .iter()
        .map(|t| icmp_type(t, v6))
        .collect::<Option<Vec<_>>>()?;
    Some(CompiledMatch {
        negated,
        test: Test::Icmp {
            v6: Some(v6),
            types,
            any: false,
        },
        unknown: None,
    })
}

impl CompiledMatch {
    /// Whether the packet in `st` matches; `sets` are the rule's table's.
    pub(super) fn eval(&self, st: &State<'_>, sets: &[CompiledSet]) -> Tri {
        let unknown = self.unknown.is_some();
        // Without a definite hit, an unknown value leaves the answer open.
        let open = |hit: bool| {
            if hit {
                Tri::Yes
            } else if unknown {
                Tri::Maybe
            } else {
                Tri::No
            }
        };
        let raw = match &self.test {
            Test::Addr {
                dst,
                ranges,
                sets: s,
            } => {
                let ip = if *dst { st.dst } else { st.src };
                // `ip saddr != X` in an inet table never matches IPv6: the
                // match implies the family. So does an address set's type.
                let of_family =
                    ranges.has_family_of(ip) || s.iter().any(|i| sets[*i].addrs.has_family_of(ip));
                let other_family =
                    !ranges.is_empty() || s.iter().any(|i| !sets[*i].addrs.is_empty());
                if !of_family && other_family && !unknown {
                    return Tri::No;
                }
                open(ranges.contains(ip) || s.iter().any(|i| sets[*i].addrs.contains(ip)))
            }
            Test::Port {
                dst,
                ranges,
                sets: s,
            } => {
                // A port match implies a protocol with ports.
                let port = if *dst { st.dport } else { st.sport };
                let Some(port) = port else {
                    return if st.has_ports() { Tri::Maybe } else { Tri::No };
                };
                open(ranges.contains(port) || s.iter().any(|i| sets[*i].ports.contains(port)))
            }
            Test::Proto { any, bits, sets: s } => {
                let p = st.proto;
                let in_bits = bits[usize::from(p / 64)] & (1 << (p % 64)) != 0;
                let in_sets = s.iter().any(|i| {
                    sets[*i].ports.contains(u16::from(p))
                        || sets[*i]
                            .texts
                            .iter()
                            .any(|t| proto_number(t) == Some(Some(p)))
                });
                open(*any || in_bits || in_sets)
            }
            Test::Iface { out, pats, sets: s } => {
                let Some(name) = st.iface(*out) else {
                    return Tri::Maybe;
                };
                let hit = pats.iter().any(|p| p.matches(name))
                    || s.iter().any(|i| {
                        sets[*i]
                            .texts
                            .iter()
                            .any(|t| IfPattern::parse(t).matches(name))
                    });
                open(hit)
            }
            Test::Ct { mask } => {
                let mut have = st.ct.bit();
                if st.dnat {
                    have |= CT_DNAT;
                }
                if st.snat {
                    have |= CT_SNAT;
                }
                open(have & mask != 0)
            }
            Test::AddrType { types } => addr_type(types, st),
            Test::Family { v4, v6 } => open(if st.dst.is_ipv4() { *v4 } else { *v6 }),
            Test::Icmp { v6, types, any } => {
                let is_v6 = match st.proto {
                    1 => false,
                    58 => true,
                    _ => return Tri::No,
                };
                if v6.is_some_and(|v| v != is_v6) {
                    return Tri::No;
                }
                if *any {
                    Tri::Yes
                } else {
                    match st.icmp_type {
                        Some(t) => open(types.contains(&t)),
                        None => Tri::Maybe,
                    }
                }
            }
            Test::Always => Tri::Yes,
            Test::Other => Tri::Maybe,
        };
        if self.negated { raw.not() } else { raw }
    }

    /// Why this match could not be decided for a packet.
    pub(super) fn why_open(&self) -> String {
        if let Some(u) = &self.unknown {
            return u.clone();
        }
        match &self.test {
            Test::Iface { out: false, .. } => "the packet's input interface is not known".into(),
            Test::Iface { out: true, .. } => "the packet's output interface is not known".into(),
            Test::Port { dst: false, .. } => "the packet's source port is not known".into(),
            Test::Port { dst: true, .. } => "the packet's destination port is not known".into(),
            Test::Icmp { .. } => "the packet's ICMP type is not known".into(),
            Test::AddrType { types } => {
                format!(
                    "address type {} depends on the routing table",
                    types.join(",")
                )
            }
            _ => "not decidable".into(),
        }
    }
}

/// The route type of the destination as `fib daddr type` / `--dst-type`
/// see it: local addresses and multicast are known; route types that only
/// the routing table knows (blackhole, unreachable, ...) are not.
fn addr_type(types: &[String], st: &State<'_>) -> Tri {
    let actual = if st.dst_local {
        "local"
    } else if st.dst.is_multicast() {
        "multicast"
    } else if st.dst == IpAddr::from([255, 255, 255, 255]) {
        "broadcast"
    } else {
        "unicast"
    };
    if types.iter().any(|t| t == actual) {
        return Tri::Yes;
    }
    let route_only = |t: &str| {
        matches!(
            t,
            "blackhole" | "unreachable" | "prohibit" | "throw" | "anycast" | "nat" | "xresolve"
        )
    };
    let known = |t: &str| {
        matches!(
            t,
            "local" | "multicast" | "broadcast" | "unicast" | "unspec"
        )
    };
    if actual == "unicast" && types.iter().any(|t| route_only(t))
        || types.iter().any(|t| !known(t) && !route_only(t))
    {
        Tri::Maybe
    } else {
        Tri::No
    }
}
