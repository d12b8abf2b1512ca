//! Prints `docs/causes.md`, rendered from the cause codes in
//! `collector/src/why/code.rs`:
//!
//!     cargo run -q -p reachmap-collector --example causes_doc > docs/causes.md

fn main() {
    print!("{}", reachmap_collector::why::code::markdown());
}
