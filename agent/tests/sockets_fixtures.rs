//! The sock_diag parser on raw dumps captured from a real kernel, and on
//! truncated and corrupted copies of them.
//!
//! The fixtures were made in a fresh namespace (as root, from `agent/`):
//!
//!     ip netns add cap && ip -n cap link set lo up
//!     ip -n cap link add d0 type veth peer name d1      # d0 is index 3
//!     ip -n cap addr add 198.18.0.11/24 dev d0
//!     ip -n cap link set d0 up && ip -n cap link set d1 up
//!     ip netns exec cap python3 tests/fixtures/sockets/make_sockets.py /tmp/pid &
//!     for p in tcp4 tcp6 udp4 udp6; do for w in listen all; do
//!       ip netns exec cap ../target/debug/examples/sockdiag_capture $p $w \
//!         > tests/fixtures/sockets/${p}_$w.bin
//!     done; done
//!     ip netns exec cap ss -tuanpe > tests/fixtures/sockets/ss.txt
//!
//! `ss.txt` is what `ss` saw at the same moment, for the reader of these tests.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use reachmap_agent::inspect::sockets::{
    DumpStatus, InetSocket, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_TIME_WAIT, is_udp_listener,
    parse_inet_diag,
};
use std::net::SocketAddr;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/sockets/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

const FIXTURES: [&str; 8] = [
    "tcp4_listen",
    "tcp4_all",
    "tcp6_listen",
    "tcp6_all",
    "udp4_listen",
    "udp4_all",
    "udp6_listen",
    "udp6_all",
];

/// Parses a captured dump (one or more datagrams back to back; each fixture
/// here fits one) to the end.
fn sockets(bytes: &[u8]) -> Vec<InetSocket> {
    let mut out = Vec::new();
    let status = parse_inet_diag(bytes, |s| out.push(*s)).expect("parse");
    assert_eq!(status, DumpStatus::Done);
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn find(all: &[InetSocket], local: &str) -> InetSocket {
    let local = addr(local);
    *all.iter()
        .find(|s| s.local == local && s.state != TCP_ESTABLISHED)
        .unwrap_or_else(|| panic!("no socket on {local}"))
}

#[test]
fn tcp4_listeners() {
    let all = sockets(&fixture("tcp4_listen"));
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|s| s.state == TCP_LISTEN));

    let web = find(&all, "127.0.0.1:8080");
    assert_eq!((web.rqueue, web.wqueue), (3, 16), "accept queue 3 of 16");
    assert_eq!(web.remote, addr("0.0.0.0:0"));
    assert_eq!(web.inode, 221002);
    assert_eq!(web.uid, 0);
    assert_eq!(web.interface, 0);
    assert_eq!(web.v6only, None);

    let ssh = find(&all, "0.0.0.0:22");
    assert_eq!((ssh.rqueue, ssh.wqueue), (0, 128));

    let bound = find(&all, "198.18.0.11:7442");
    assert_eq!(bound.interface, 3, "SO_BINDTODEVICE d0");
}

#[test]
fn tcp6_listeners_report_v6only() {
    let all = sockets(&fixture("tcp6_listen"));
    assert_eq!(all.len(), 3);
    assert_eq!(find(&all, "[::]:80").v6only, Some(false));
    assert_eq!(find(&all, "[::]:9090").v6only, Some(true));
    assert_eq!(find(&all, "[::1]:8443").v6only, Some(true));
    assert_eq!(sockets(&fixture("tcp6_all")), all);
}

#[test]
fn tcp4_all_states() {
    let all = sockets(&fixture("tcp4_all"));
    let count = |state| all.iter().filter(|s| s.state == state).count();
    assert_eq!(count(TCP_LISTEN), 3);
    assert_eq!(count(TCP_ESTABLISHED), 8);
    assert_eq!(count(TCP_TIME_WAIT), 1);
    assert_eq!(all.len(), 12);
    // Server side of the accepted connection plus the three waiting ones.
    let to_web = all
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED && s.local == addr("127.0.0.1:8080"))
        .count();
    assert_eq!(to_web, 4);
    // Sockets still in the accept queue belong to no file yet: inode 0.
    let unaccepted = all
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED && s.local.port() == 8080 && s.inode == 0)
        .count();
    assert_eq!(unaccepted, 3);
    let tw = all.iter().find(|s| s.state == TCP_TIME_WAIT).expect("tw");
    assert_eq!((tw.inode, tw.remote.port()), (0, 8080));
}

#[test]
fn udp_sockets() {
    let v4 = sockets(&fixture("udp4_all"));
    assert_eq!(v4.len(), 2);
    let unconnected = find(&v4, "0.0.0.0:5353");
    assert!(is_udp_listener(&unconnected));
    let connected = v4
        .iter()
        .find(|s| s.local == addr("127.0.0.1:1234"))
        .expect("connected");
    assert_eq!(connected.state, TCP_ESTABLISHED);
    assert_eq!(connected.remote, addr("127.0.0.1:5353"));
    assert!(!is_udp_listener(connected));

    // The kernel's state filter leaves only the unconnected one.
    let listen = sockets(&fixture("udp4_listen"));
    assert_eq!(listen, vec![unconnected]);
    assert_eq!(listen[0].state, TCP_CLOSE);

    let v6 = sockets(&fixture("udp6_listen"));
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].local, addr("[::]:5353"));
    assert_eq!(v6[0].v6only, Some(true));
}

/// Our parser and netlink-packet-sock-diag's agree on every message.
#[test]
fn agrees_with_netlink_packet_sock_diag() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let ours = sockets(&bytes);
        let mut theirs = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let msg =
                NetlinkMessage::<SockDiagMessage>::deserialize(&bytes[offset..]).expect("decode");
            offset += (msg.header.length as usize + 3) & !3;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => theirs.push(r),
                NetlinkPayload::Done(_) => break,
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(&theirs) {
            let h = &b.header;
            assert_eq!(a.state, h.state, "{name}");
            assert_eq!(a.local.ip(), h.socket_id.source_address, "{name}");
            assert_eq!(a.local.port(), h.socket_id.source_port, "{name}");
            assert_eq!(a.remote.ip(), h.socket_id.destination_address, "{name}");
            assert_eq!(a.remote.port(), h.socket_id.destination_port, "{name}");
            assert_eq!(a.interface, h.socket_id.interface_id, "{name}");
            assert_eq!(
                (a.rqueue, a.wqueue, a.uid, a.inode),
                (h.recv_queue, h.send_queue, h.uid, h.inode),
                "{name}"
            );
        }
    }
}

/// Every prefix of every dump: an error or fewer sockets, never a panic and
/// never a `Done` the prefix does not contain.
#[test]
fn truncated_dumps_are_errors() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let total = sockets(&bytes).len();
        for cut in 0..bytes.len() {
            let mut n = 0;
            match parse_inet_diag(&bytes[..cut], |_| n += 1) {
                Ok(DumpStatus::More) => assert!(n <= total, "{name}[..{cut}]"),
                Ok(DumpStatus::Done) => panic!("{name}[..{cut}]: Done without NLMSG_DONE"),
                Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            }
        }
        // Cutting inside the first message's body is an error naming it.
        let err = parse_inet_diag(&bytes[..40], |_| {}).expect_err("cut");
        assert!(err.to_string().contains("netlink message needs"), "{err}");
    }
}

/// Every byte flipped to every interesting value: no panic, no hang.
#[test]
fn corrupted_dumps_do_not_panic() {
    for name in FIXTURES {
        let bytes = fixture(name);
        for i in 0..bytes.len() {
            for v in [0x00, 0x01, 0x03, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = parse_inet_diag(&b, |_| {});
            }
        }
    }
}

fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(payload);
    m
}

#[test]
fn malformed_messages_are_one_line_errors() {
    let first = {
        let b = fixture("tcp6_listen");
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        b[..len].to_vec()
    };
    let mut zero_len = first.clone();
    zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
    let mut bad_family = first.clone();
    bad_family[16] = 99;
    let mut bad_attr = first.clone();
    // The first attribute's length, right after the 72-byte inet_diag_msg.
    bad_attr[16 + 72..16 + 74].copy_from_slice(&2u16.to_ne_bytes());
    let mut long_attr = first.clone();
    long_attr[16 + 72..16 + 74].copy_from_slice(&500u16.to_ne_bytes());

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero length", zero_len, "shorter than its header"),
        ("family", bad_family, "address family 99"),
        ("attribute len 2", bad_attr, "invalid length 2"),
        ("attribute too long", long_attr, "invalid length 500"),
        (
            "short diag msg",
            message(20, &[10, 10, 0, 0]),
            "inet_diag_msg needs 72 bytes, 4 left",
        ),
        (
            "EPERM",
            message(2, &(-1i32).to_ne_bytes()),
            "refused the dump",
        ),
        (
            "error no code",
            message(2, &[1]),
            "netlink error needs 4 bytes",
        ),
        (
            "done with error",
            message(3, &(-22i32).to_ne_bytes()),
            "refused the dump",
        ),
        ("overrun", message(4, &[]), "overrun"),
        ("unknown type", message(77, &[]), "message type 77"),
        (
            "short header",
            vec![20, 0, 0],
            "netlink header needs 16 bytes, 3 left",
        ),
    ];
    for (what, bytes, want) in cases {
        let err =
            parse_inet_diag(&bytes, |_| panic!("{what}: no socket expected")).expect_err(what);
        let text = err.to_string();
        assert!(text.contains(want), "{what}: {text}");
        assert!(!text.contains('\n'), "{what}: {text}");
    }

    // An acknowledgement and a NOOP are skipped; an empty DONE ends the dump.
    let mut ok = message(2, &0i32.to_ne_bytes());
    ok.extend(message(1, &[]));
    ok.extend(message(3, &[]));
    assert_eq!(parse_inet_diag(&ok, |_| {}).expect("ok"), DumpStatus::Done);
    assert_eq!(
        parse_inet_diag(&[], |_| {}).expect("empty"),
        DumpStatus::More
    );
}
