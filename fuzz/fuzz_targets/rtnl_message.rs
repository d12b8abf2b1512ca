//! Route-netlink messages as the kernel sends them: netlink framing, the
//! attribute decoder, then the agent's link/address/route parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use reachmap_agent::inspect::rtnl::{parse_address, parse_link, parse_route};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else {
        return;
    };
    if let NetlinkPayload::InnerMessage(m) = msg.payload {
        match m {
            RouteNetlinkMessage::NewLink(l) => drop(parse_link(&l)),
            RouteNetlinkMessage::NewAddress(a) => drop(parse_address(&a)),
            RouteNetlinkMessage::NewRoute(r) => drop(parse_route(&r, &Default::default())),
            _ => {}
        }
    }
});
