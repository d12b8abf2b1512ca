//! Captures a raw rtnetlink dump, exactly as the kernel sends it, for the
//! parser fixtures in `tests/fixtures/rtnl/`:
//!
//!     cargo run -p reachmap-agent --example rtnl_capture -- links > links.bin
//!
//! (`links`, `addresses` or `routes`; run it inside the namespace whose state
//! you want, e.g. under `ip netns exec`.)

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let what = std::env::args().nth(1).unwrap_or_default();
    let request = match what.as_str() {
        "links" => RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "addresses" => RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "routes" => RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        _ => return Err("usage: rtnl_capture links|addresses|routes".into()),
    };
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = std::io::stdout().lock();
    let mut receive = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let chunk = &receive[..size];
        out.write_all(chunk)?;
        // Stop after the datagram that carries NLMSG_DONE.
        let mut offset = 0;
        while offset + 16 <= chunk.len() {
            let len = u32::from_ne_bytes([
                chunk[offset],
                chunk[offset + 1],
                chunk[offset + 2],
                chunk[offset + 3],
            ]) as usize;
            let kind = u16::from_ne_bytes([chunk[offset + 4], chunk[offset + 5]]);
            if kind == 3 {
                return Ok(());
            }
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}
