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

/// Default ports (DESIGN.md): collector gRPC, collector HTTP, agent probe listener.
pub const DEFAULT_GRPC_PORT: u16 = 7440;
pub const DEFAULT_HTTP_PORT: u16 = 7441;
pub const DEFAULT_PROBE_PORT: u16 = 7442;
