//! The reachmap wire protocol (`reachmap.v1`).
//!
//! The Rust code in `src/generated/` is produced from `proto/reachmap/v1/*.proto`
//! and checked in, so building needs no `protoc`. The test
//! `tests/generated_is_current.rs` regenerates it with a pure-Rust protobuf
//! compiler and fails (after rewriting the file) when the two differ.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!("generated/reachmap.v1.rs");
}

/// Largest message either side accepts on the agent stream. A snapshot of a
/// host with tens of thousands of sockets and rules fits comfortably.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Longest firewall rule text or comment the collector takes, in bytes. A
/// rule with a large inline set prints longer; the agent shortens the text
/// (its parsed matches keep every element).
pub const MAX_RULE_TEXT: usize = 8_192;

/// `s` cut to at most `max` bytes on a character boundary, ending in "…"
/// when cut.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    const MORE: &str = "…";
    let mut end = max.saturating_sub(MORE.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &s[..end]).into()
}

/// Default ports (DESIGN.md): collector gRPC, collector HTTP, agent probe listener.
pub const DEFAULT_GRPC_PORT: u16 = 7440;
pub const DEFAULT_HTTP_PORT: u16 = 7441;
pub const DEFAULT_PROBE_PORT: u16 = 7442;

/// A host name as DNS and /etc/hosts take it: 1-253 characters, dot-separated
/// labels of 1-63 letters, digits, '-' or '_', none starting or ending with
/// '-'. Anything else never reaches the resolver.
pub fn valid_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Node names are DNS-label-like: 1 to 253 characters of ASCII letters,
/// digits, `.`, `-` and `_`. Both ends enforce this; the error says why.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("node name is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "node name is {} characters long (at most 253)",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "node name {name:?} contains {c:?} (allowed: letters, digits, '.', '-', '_')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_node_name, clip};

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short", 8), "short");
        assert_eq!(clip("exactly8", 8), "exactly8");
        assert_eq!(clip("abcdefghij", 8), "abcde…");
        // "é" is two bytes: never cut in half.
        let cut = clip("ééééé", 6);
        assert_eq!(cut, "é…");
        assert!(cut.len() <= 6);
        let long = "x".repeat(20_000);
        assert_eq!(clip(&long, 8_192).len(), 8_192);
    }

    #[test]
    fn node_names() {
        assert!(check_node_name("node-0").is_ok());
        assert!(check_node_name("web01.eu-west_1").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a b").is_err());
        assert!(check_node_name("nöde").is_err());
        assert!(check_node_name(&"a".repeat(254)).is_err());
        assert!(check_node_name(&"a".repeat(253)).is_ok());
    }
}
