//! What an HTTP probe reads back from a target: the status line parser, fed
//! as the probe feeds it (growing prefixes until it stops asking for more),
//! and the ICMP reply parser on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::probe::http::{StatusLineError, parse_status_line};
use reachmap_agent::probe::icmp::{Framing, parse_reply};
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    for end in 0..=data.len() {
        match parse_status_line(&data[..end]) {
            Err(StatusLineError::Incomplete) => continue,
            Ok(code) => assert!((100..=999).contains(&code)),
            Err(_) => {}
        }
        break;
    }
    let peer = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    for framing in [
        Framing::Ipv4Header,
        Framing::Icmp { v6: false },
        Framing::Icmp { v6: true },
    ] {
        let _ = parse_reply(data, framing, peer, Some(1), 1);
        let _ = parse_reply(data, framing, peer, None, 1);
    }
});
