//! /dev/kmsg records as a reader gets them: the record parser, then the
//! classifier (fed every record of the input, so OOM pairing and conntrack
//! coalescing run too), then the resume-state parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::inspect::kmsg::{Classifier, parse_record, parse_state, split_records};

fuzz_target!(|data: &[u8]| {
    let mut classifier = Classifier::new(Some(1_700_000_000_000_000));
    for record in split_records(data) {
        if let Ok(r) = parse_record(record) {
            let _ = classifier.feed(&r);
        }
    }
    let _ = classifier.tick();
    let _ = classifier.finish();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_state(text);
    }
});
