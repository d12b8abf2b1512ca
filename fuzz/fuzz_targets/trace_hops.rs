//! A trace's ICMP answers as the kernel reports them (`sock_extended_err`'s
//! origin, type and code, and the offender's address), hop by hop: the
//! classifier, then the agent's and the collector's reading of the hops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::probe::trace::{Hop, HopKind, classify, conclude};
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    let mut hops = Vec::new();
    for (i, c) in data.chunks(8).enumerate() {
        let [origin, icmp_type, code, a, b, c2, d, silent] = match <[u8; 8]>::try_from(c) {
            Ok(x) => x,
            Err(_) => break,
        };
        let ttl = u8::try_from(i + 1).unwrap_or(u8::MAX);
        let kind = if silent & 1 == 1 {
            HopKind::Silent
        } else {
            classify(origin, icmp_type, code).unwrap_or(if silent & 2 == 2 {
                HopKind::Refused
            } else {
                HopKind::Reached
            })
        };
        hops.push(Hop {
            ttl,
            from: (kind != HopKind::Silent).then(|| IpAddr::V4(Ipv4Addr::new(a, b, c2, d))),
            kind,
            rtt: None,
        });
    }
    let c = conclude(&hops);
    if let Some((ttl, _)) = c.last_answer {
        assert!(usize::from(ttl) <= hops.len());
    }
    let wire: Vec<_> = hops.iter().map(reachmap_agent::wire::probe::trace_hop).collect();
    let (reached, last, text) = reachmap_collector::trace::conclude(&wire, "a", "b");
    assert_eq!(reached, c.reached);
    assert_eq!(last.map(|l| l.0), c.last_answer.map(|l| u32::from(l.0)));
    assert!(!text.is_empty());
});
