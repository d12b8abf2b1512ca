//! `iptables-save -c` text as the agent reads it, plus its content hash,
//! and the same bytes as an `iptables -S CHAIN -v` listing turned into save
//! text (which must parse, or fail, without a panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::facts::firewall::{Backend, Family};
use reachmap_agent::inspect::firewall::reader::chain_listing_as_save;
use reachmap_agent::inspect::firewall::{content_hash, parse_iptables_save};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_iptables_save(text, Family::Ip, Backend::IptablesLegacy);
    let _ = content_hash(text);
    if let Some(save) = chain_listing_as_save("nat", text) {
        let _ = parse_iptables_save(&save, Family::Ip, Backend::IptablesNft);
    }
});
