//! sock_diag dumps as the kernel sends them (netlink framing, inet_diag_msg,
//! attributes), and the /proc text the sockets inspector reads (fd links,
//! cgroup files).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::inspect::sockets::{
    cgroup_path, parse_fd_link, parse_inet_diag, unit_from_cgroup,
};

fuzz_target!(|data: &[u8]| {
    let mut n = 0usize;
    let _ = parse_inet_diag(data, |_| n += 1);
    // Every socket takes a 16-byte header and a 72-byte inet_diag_msg.
    assert!(n * 88 <= data.len());
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_fd_link(text);
        let _ = unit_from_cgroup(text);
        if let Some(path) = cgroup_path(text) {
            let _ = unit_from_cgroup(path);
        }
    }
});
