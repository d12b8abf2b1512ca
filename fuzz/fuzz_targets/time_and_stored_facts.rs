//! What the history queries take from outside or read back from disk: a
//! time as a user types it (`--since`, `--at`, `?at=`), and the stored fact
//! parts a past snapshot is merged from (a damaged store must give an error,
//! never a panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = reachmap_collector::cli::when::parse(text, now) {
            let _ = reachmap_collector::cli::when::show(t, false);
        }
    }
    let parts: Vec<(String, Vec<u8>)> = reachmap_collector::store::facts::ALL
        .iter()
        .map(|p| (p.to_string(), data.to_vec()))
        .collect();
    if let Ok(s) = reachmap_collector::store::facts::merge(&parts) {
        let _ = reachmap_collector::validate::snapshot(&s);
    }
    let _ = reachmap_collector::store::facts::decode_names(data);
});
