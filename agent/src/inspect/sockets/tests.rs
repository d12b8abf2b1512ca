use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

#[test]
fn bind_scopes() {
    let v4 = |s: &str| IpAddr::V4(s.parse::<Ipv4Addr>().expect("address"));
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().expect("address"));
    assert_eq!(bind_scope(v4("127.0.0.1")), BindScope::Loopback);
    assert_eq!(bind_scope(v4("127.0.0.53")), BindScope::Loopback);
    assert_eq!(bind_scope(v4("0.0.0.0")), BindScope::Any);
    assert_eq!(bind_scope(v4("198.18.0.11")), BindScope::Address);
    assert_eq!(bind_scope(v6("::1")), BindScope::Loopback);
    assert_eq!(bind_scope(v6("::ffff:127.0.0.1")), BindScope::Loopback);
    assert_eq!(bind_scope(v6("::")), BindScope::Any);
    assert_eq!(bind_scope(v6("2001:db8::11")), BindScope::Address);
    assert_eq!(bind_scope(v6("fe80::1")), BindScope::Address);
}

#[test]
fn fd_links() {
    assert_eq!(parse_fd_link("socket:[12345]"), Some(12345));
    assert_eq!(
        parse_fd_link("socket:[18446744073709551615]"),
        Some(u64::MAX)
    );
    assert_eq!(parse_fd_link("socket:[]"), None);
    assert_eq!(parse_fd_link("socket:[12"), None);
    assert_eq!(parse_fd_link("socket:[-1]"), None);
    assert_eq!(parse_fd_link("socket:[99999999999999999999]"), None);
    assert_eq!(parse_fd_link("pipe:[12345]"), None);
    assert_eq!(parse_fd_link("anon_inode:[eventpoll]"), None);
    assert_eq!(parse_fd_link("/dev/null"), None);
    assert_eq!(parse_fd_link(""), None);
}

fn listener(address: &str, port: u16) -> Listener {
    let address: IpAddr = address.parse().expect("address");
    Listener {
        protocol: Protocol::Tcp,
        address,
        port,
        scope: bind_scope(address),
        v6only: None,
        inode: 1,
        uid: 0,
        accept_queue: 0,
        accept_queue_limit: 0,
        established: 0,
        processes: vec![],
        interface_index: None,
    }
}

#[test]
fn established_go_to_the_most_specific_listener() {
    let ls = [
        listener("0.0.0.0", 80),
        listener("198.18.0.1", 80),
        listener("::", 80),
        listener("198.18.0.1", 80), // SO_REUSEPORT twin
    ];
    let all = [0, 1, 2, 3];
    let mut counts = [0; 4];
    attribute(
        &ls,
        &all,
        "198.18.0.1:80".parse().expect("address"),
        &mut counts,
    );
    assert_eq!(counts, [0, 1, 0, 1]);
    attribute(
        &ls,
        &all,
        "127.0.0.1:80".parse().expect("address"),
        &mut counts,
    );
    assert_eq!(counts, [1, 1, 0, 1]);
    attribute(
        &ls,
        &all,
        "[::ffff:198.18.0.2]:80".parse().expect("address"),
        &mut counts,
    );
    attribute(&ls, &all, "[::1]:80".parse().expect("address"), &mut counts);
    assert_eq!(counts, [1, 1, 2, 1]);
    // A socket no listener could have accepted counts for none.
    let only_v6 = [2];
    attribute(
        &ls,
        &only_v6,
        "127.0.0.1:80".parse().expect("address"),
        &mut counts,
    );
    assert_eq!(counts, [1, 1, 2, 1]);
}

/// The agent moves the reader into a blocking task.
#[test]
fn reader_is_send() {
    fn send<T: Send>() {}
    send::<SocketReader>();
}
