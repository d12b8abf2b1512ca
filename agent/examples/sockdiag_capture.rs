//! Captures a raw sock_diag dump, exactly as the kernel sends it, for the
//! parser fixtures in `tests/fixtures/sockets/`:
//!
//!     cargo run -p reachmap-agent --example sockdiag_capture -- tcp6 listen > tcp6_listen.bin
//!
//! (`tcp4`, `tcp6`, `udp4` or `udp6`, then `listen` (TCP LISTEN, UDP
//! unconnected) or `all`; run it inside the namespace whose sockets you want,
//! e.g. under `ip netns exec`.) The datagrams are written back to back, up
//! to and including the one that carries NLMSG_DONE.

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use reachmap_agent::inspect::sockets::{
    AF_INET, AF_INET6, ALL_STATES, DumpStatus, IPPROTO_TCP, IPPROTO_UDP, TCP_CLOSE, TCP_LISTEN,
    dump_request, parse_inet_diag,
};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: sockdiag_capture tcp4|tcp6|udp4|udp6 listen|all";
    let mut args = std::env::args().skip(1);
    let (family, protocol) = match args.next().as_deref() {
        Some("tcp4") => (AF_INET, IPPROTO_TCP),
        Some("tcp6") => (AF_INET6, IPPROTO_TCP),
        Some("udp4") => (AF_INET, IPPROTO_UDP),
        Some("udp6") => (AF_INET6, IPPROTO_UDP),
        _ => return Err(usage.into()),
    };
    let states = match (args.next().as_deref(), protocol) {
        (Some("listen"), IPPROTO_TCP) => 1 << TCP_LISTEN,
        (Some("listen"), _) => 1 << TCP_CLOSE,
        (Some("all"), _) => ALL_STATES,
        _ => return Err(usage.into()),
    };
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&dump_request(family, protocol, states, 1), 0)?;

    let mut out = std::io::stdout().lock();
    let mut receive = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let chunk = &receive[..size];
        out.write_all(chunk)?;
        if parse_inet_diag(chunk, |_| {})? == DumpStatus::Done {
            return Ok(());
        }
    }
}
