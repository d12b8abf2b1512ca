//! The packet evaluator (`packet::firewall`) on any ruleset the collector
//! accepts and any packet: compiling the ruleset and walking a packet
//! through it on every path must never panic.
//!
//! Layout of the input: one byte picks where the ruleset comes from, the
//! next `PACKET_BYTES` describe the packet, the rest is the ruleset:
//! - `0`: a protobuf `Firewall`, as any agent (or anything pretending to
//!   be one) may send it;
//! - `1`/`2`: `iptables-save` / `ip6tables-save` text through the agent's
//!   parser and wire conversion;
//! - anything else: `nft -j list ruleset` JSON through the agent's parser
//!   and wire conversion;
//!
//! then the collector's validation, as in production.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reachmap_agent::facts::firewall::{Backend, Family, Ruleset, Table};
use reachmap_agent::inspect::firewall::{parse_iptables_save, parse_nft_json};
use reachmap_collector::packet::firewall::{Compiled, CtState, L4, Packet, PathKind};
use reachmap_proto::v1 as pb;

/// flags, protocol, ct state, sport (2), dport (2), icmp type, iif, oif,
/// local address count, src (16), dst (16).
const PACKET_BYTES: usize = 43;

/// Interface names the packet may carry; rulesets name interfaces with
/// wildcards (`eth+`, `veth*`) that these exercise.
const INTERFACES: [&str; 8] = [
    "eth0", "eth1", "lo", "docker0", "veth1a2b", "br-x", "wg0", "",
];

fn ip(bytes: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

fn packet(b: &[u8; PACKET_BYTES]) -> Packet {
    let flags = b[0];
    let v6 = flags & 1 != 0;
    let src: [u8; 16] = b[11..27].try_into().expect("16 bytes");
    let dst: [u8; 16] = b[27..43].try_into().expect("16 bytes");
    let src = ip(&src, v6);
    // Bit 7: the destination of the other family (the evaluator refuses
    // such a packet, it must not choke on it).
    let dst = ip(&dst, v6 != (flags & 0x80 != 0));
    let interface = |i: u8| INTERFACES[usize::from(i) % INTERFACES.len()].to_string();
    let local_addrs = (0..b[10] % 4)
        .map(|n| match dst {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(u32::from(n)))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(u128::from(n)))),
        })
        .collect();
    Packet {
        src,
        dst,
        protocol: match b[1] {
            0..=99 => L4::Tcp,
            100..=149 => L4::Udp,
            150..=179 => L4::Icmp,
            180..=199 => L4::Icmpv6,
            n => L4::Other(n),
        },
        sport: (flags & 2 != 0).then(|| u16::from_be_bytes([b[3], b[4]])),
        dport: (flags & 4 != 0).then(|| u16::from_be_bytes([b[5], b[6]])),
        iif: (flags & 8 != 0).then(|| interface(b[8])),
        oif: (flags & 16 != 0).then(|| interface(b[9])),
        ct_state: match b[2] % 5 {
            0 => CtState::New,
            1 => CtState::Established,
            2 => CtState::Related,
            3 => CtState::Invalid,
            _ => CtState::Untracked,
        },
        dst_is_local: flags & 32 != 0,
        icmp_type: (flags & 64 != 0).then_some(b[7]),
        local_addrs,
    }
}

/// The agent's tables as the collector receives them.
fn wire(tables: Vec<Table>) -> pb::Firewall {
    let mut rs = Ruleset {
        tables,
        ..Ruleset::default()
    };
    rs.finish();
    reachmap_agent::wire::firewall::firewall(&rs)
}

fn ruleset(source: u8, bytes: &[u8]) -> Option<pb::Firewall> {
    if source == 0 {
        return pb::Firewall::decode(bytes).ok();
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let tables = match source {
        1 => parse_iptables_save(text, Family::Ip, Backend::IptablesLegacy).ok()?,
        2 => parse_iptables_save(text, Family::Ip6, Backend::IptablesNft).ok()?,
        _ => parse_nft_json(text).ok()?,
    };
    Some(wire(tables))
}

fuzz_target!(|data: &[u8]| {
    let Some((&source, rest)) = data.split_first() else {
        return;
    };
    let Some((head, rules)) = rest.split_first_chunk::<PACKET_BYTES>() else {
        return;
    };
    let Some(fw) = ruleset(source, rules) else {
        return;
    };
    let Ok(fw) = reachmap_collector::validate::firewall::firewall("firewall", &fw) else {
        return;
    };
    let compiled = Compiled::new(&fw);
    let p = packet(head);
    for path in [PathKind::Receive, PathKind::Send, PathKind::Forward] {
        let d = compiled.evaluate(&p, path);
        // The answer is what `reachmap why` prints: it must be printable.
        let _ = format!("{d:?}");
    }
});
