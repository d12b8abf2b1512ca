//! The /proc files behind the resources inspector: every parser on the same
//! input (loadavg, stat, meminfo, pressure, netstat, one-number files), and
//! the CPU usage of two readings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reachmap_agent::inspect::resources::{
    parse_loadavg, parse_meminfo, parse_netstat, parse_number, parse_pressure, parse_stat,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_loadavg(text);
    let _ = parse_meminfo(text);
    let _ = parse_pressure(text);
    let _ = parse_netstat(text);
    let _ = parse_number("n", text);
    if let Ok(now) = parse_stat(text) {
        let mut mid = text.len() / 2;
        while !text.is_char_boundary(mid) {
            mid -= 1;
        }
        let (a, b) = text.split_at(mid);
        for half in [a, b] {
            if let Ok(earlier) = parse_stat(half) {
                let _ = now.usage_since(&earlier);
            }
        }
    }
});
