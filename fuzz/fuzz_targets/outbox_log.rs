//! The agent's event outbox log as it is read back at start: arbitrary
//! bytes through the record parser, which must skip what is corrupt or torn
//! without panicking and account for every byte; what it keeps is written
//! again and must read back whole and the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::outbox::{encode_record, parse_records};

fuzz_target!(|data: &[u8]| {
    let (records, stats) = parse_records(data);
    assert_eq!(records.len(), stats.records);
    assert_eq!(
        stats.record_bytes + stats.corrupt_bytes + stats.torn_bytes,
        data.len()
    );
    let again: Vec<u8> = records
        .iter()
        .flat_map(|r| encode_record(r).expect("a record read fits"))
        .collect();
    let (reread, restats) = parse_records(&again);
    assert!(restats.clean(), "{restats:?}");
    assert_eq!(reread.len(), records.len());
    let twice: Vec<u8> = reread
        .iter()
        .flat_map(|r| encode_record(r).expect("a record read fits"))
        .collect();
    assert_eq!(twice, again);
});
