//! Shared by the evaluator's integration tests: a ruleset goes the way it
//! goes in production — the agent's parser, the agent's wire conversion,
//! the collector's validation — before it is evaluated.

#![allow(dead_code)]

use reachmap_agent::facts::firewall::{Backend, Family, Ruleset, Table};
use reachmap_agent::inspect::firewall::{parse_iptables_save, parse_nft_json};
use reachmap_collector::model::firewall::Firewall;
use reachmap_collector::packet::firewall::Packet;
use std::net::IpAddr;

/// The collector's model of the agent's tables.
pub fn through_the_wire(tables: Vec<Table>) -> Firewall {
    let mut rs = Ruleset {
        tables,
        ..Ruleset::default()
    };
    rs.finish();
    from_ruleset(&rs)
}

pub fn from_ruleset(rs: &Ruleset) -> Firewall {
    let pb = reachmap_agent::wire::firewall::firewall(rs);
    reachmap_collector::validate::firewall::firewall("snapshot.firewall", &pb)
        .expect("the agent's ruleset validates")
}

pub fn agent_fixture(name: &str) -> String {
    let path = format!(
        "{}/../agent/tests/fixtures/firewall/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn nft_fixture(name: &str) -> Firewall {
    through_the_wire(parse_nft_json(&agent_fixture(name)).expect("nft JSON parses"))
}

/// iptables-save and ip6tables-save texts of one host, merged.
pub fn iptables_fixture(v4: &str, v6: Option<&str>, backend: Backend) -> Firewall {
    let mut tables =
        parse_iptables_save(&agent_fixture(v4), Family::Ip, backend).expect("iptables-save");
    if let Some(v6) = v6 {
        tables.extend(
            parse_iptables_save(&agent_fixture(v6), Family::Ip6, backend).expect("ip6tables-save"),
        );
    }
    through_the_wire(tables)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A new TCP connection arriving on `iif` for this host's `dst:port`.
pub fn tcp_in(src: &str, dst: &str, port: u16, iif: &str) -> Packet {
    Packet {
        iif: Some(iif.into()),
        dst_is_local: true,
        ..Packet::tcp(ip(src), ip(dst), port)
    }
}
