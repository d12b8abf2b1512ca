//! What nftables tells the agent: `nft -j list ruleset` JSON, and (when the
//! first byte is 0) the netlink notifications of the NFNLGRP_NFTABLES group.
//! The ruleset is also hashed, as the reader does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::facts::firewall::Ruleset;
use reachmap_agent::inspect::firewall::{parse_nft_json, parse_nft_notification};

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => drop(parse_nft_notification(rest)),
        _ => {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            if let Ok(tables) = parse_nft_json(text) {
                let mut rs = Ruleset {
                    tables,
                    ..Ruleset::default()
                };
                rs.finish();
            }
        }
    }
});
