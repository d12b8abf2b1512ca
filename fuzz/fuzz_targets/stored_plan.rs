//! A plan read back from a shared store's `plans` table, written by another
//! collector: bytes that do not parse are an error, never a panic, and a
//! plan that parses goes back to the same wire message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(plan) = reachmap_collector::probe::wire::decode(data, 1) {
        let again = reachmap_collector::encode::plan(&plan, 0).encode_to_vec();
        let back = reachmap_collector::probe::wire::decode(&again, 1).expect("re-encoded plan");
        assert_eq!(back, plan);
    }
});
