//! The rtnetlink parsers on raw dumps captured from a real kernel.
//!
//! The fixtures were made in a fresh namespace with:
//!
//!     ip netns add cap && ip -n cap link set lo up
//!     ip -n cap link add eth0 type veth peer name eth1
//!     ip -n cap link set eth0 address 02:00:c6:12:00:0b
//!     ip -n cap addr add 198.18.0.11/24 dev eth0
//!     ip -n cap addr add 2001:db8::11/64 dev eth0 nodad
//!     ip -n cap link set eth0 up && ip -n cap link set eth1 up
//!     ip -n cap route add default via 198.18.0.1 dev eth0
//!     ip -n cap link add br0 type bridge
//!     for w in links addresses routes; do
//!       ip netns exec cap target/debug/examples/rtnl_capture $w > tests/fixtures/rtnl/$w.bin
//!     done

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use reachmap_agent::facts::{OperState, Scope};
use reachmap_agent::inspect::rtnl::{assemble, parse_address, parse_link};

/// Splits a dump into its messages, as a netlink socket reader would.
fn messages(bytes: &[u8]) -> Result<Vec<RouteNetlinkMessage>, String> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
            .map_err(|e| e.to_string())?;
        let len = msg.header.length as usize;
        if len == 0 {
            return Err("zero-length message".into());
        }
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => out.push(m),
            NetlinkPayload::Done(_) => return Ok(out),
            _ => {}
        }
        offset += (len + 3) & !3;
    }
    Ok(out)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/rtnl/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn state() -> reachmap_agent::facts::NetState {
    let links = messages(&fixture("links"))
        .expect("links parse")
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l).expect("link")),
            _ => None,
        })
        .collect();
    let addresses = messages(&fixture("addresses"))
        .expect("addresses parse")
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(parse_address(&a).expect("address")),
            _ => None,
        })
        .collect();
    let routes = messages(&fixture("routes"))
        .expect("routes parse")
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
        .collect();
    assemble(links, addresses, routes)
}

#[test]
fn interfaces_and_addresses() {
    let s = state();
    let names: Vec<&str> = s.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth1", "eth0", "br0"]);

    let lo = &s.interfaces[0];
    assert_eq!(lo.oper_state, OperState::Unknown);
    assert!(lo.admin_up);
    let lo_addrs: Vec<String> = lo
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.ip, a.prefix_len))
        .collect();
    assert_eq!(lo_addrs, ["127.0.0.1/8", "::1/128"]);
    assert!(lo.addresses.iter().all(|a| a.scope == Scope::Host));

    let eth0 = &s.interfaces[2];
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(eth0.mac.as_deref(), Some("02:00:c6:12:00:0b"));
    assert_eq!(eth0.mtu, 1500);
    assert_eq!(eth0.oper_state, OperState::Up);
    let addrs: Vec<String> = eth0
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.ip, a.prefix_len))
        .collect();
    assert!(addrs.contains(&"198.18.0.11/24".to_string()), "{addrs:?}");
    assert!(addrs.contains(&"2001:db8::11/64".to_string()), "{addrs:?}");
    assert!(
        eth0.addresses
            .iter()
            .any(|a| a.scope == Scope::Link && a.ip.to_string().starts_with("fe80:"))
    );

    let br0 = &s.interfaces[3];
    assert_eq!(br0.kind.as_deref(), Some("bridge"));
    assert!(!br0.admin_up);
    assert_eq!(br0.oper_state, OperState::Down);
    assert!(br0.addresses.is_empty());
}

#[test]
fn main_table_unicast_routes_only() {
    let s = state();
    let routes: Vec<String> = s
        .routes
        .iter()
        .map(|r| {
            format!(
                "{} via {:?} dev {:?}",
                r.destination_cidr(),
                r.gateway,
                r.interface.as_deref()
            )
        })
        .collect();
    assert!(
        routes.contains(&"0.0.0.0/0 via Some(198.18.0.1) dev Some(\"eth0\")".to_string()),
        "{routes:?}"
    );
    assert!(
        routes.contains(&"198.18.0.0/24 via None dev Some(\"eth0\")".to_string()),
        "{routes:?}"
    );
    // Local-table routes (127.0.0.0/8, the host's own addresses) are not reported.
    assert!(!routes.iter().any(|r| r.starts_with("127.")), "{routes:?}");
    let connected = s
        .routes
        .iter()
        .find(|r| r.prefix_len == 24)
        .expect("connected route");
    assert_eq!(
        connected.preferred_source.map(|a| a.to_string()).as_deref(),
        Some("198.18.0.11")
    );
    assert!(s.routes.iter().all(|r| r.table == 254));
}

#[test]
fn truncated_and_corrupted_dumps_are_errors_not_panics() {
    for name in ["links", "addresses", "routes"] {
        let bytes = fixture(name);
        for cut in [1, 7, 16, 17, 40, bytes.len() / 2, bytes.len() - 1] {
            let _ = messages(&bytes[..cut.min(bytes.len())]);
        }
        // Flip every byte of the first message's attributes in turn.
        for i in 16..bytes.len().min(400) {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            if let Ok(msgs) = messages(&b) {
                for m in msgs {
                    match m {
                        RouteNetlinkMessage::NewLink(l) => drop(parse_link(&l)),
                        RouteNetlinkMessage::NewAddress(a) => drop(parse_address(&a)),
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(messages(&[0u8; 3]).is_err());
}
