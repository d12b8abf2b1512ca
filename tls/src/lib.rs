//! reachmap's TLS, shared by the agent, the collector and the CLI.
//!
//! - `identity`: who a certificate names — the collector (`reachmap:collector`),
//!   a node (`reachmap:node:NAME`) or a query client (`reachmap:client:NAME`
//!   with `reachmap:role:viewer|operator`) — read with x509-parser, and the
//!   CA pin (`sha256:` of a SubjectPublicKeyInfo).
//! - `client`: rustls client configurations that trust the collector by a
//!   pinned CA key or by a CA certificate, always checking the collector
//!   role, and tonic channels over them.
//! - `csr`: the key a node makes for itself and the CSR that carries its name.
//! - `pem`: PEM in and out; `file`: key and certificate files, written
//!   atomically with their mode from the start.
//!
//! Everything uses rustls with the ring provider; nothing runs OpenSSL.

pub mod client;
pub mod csr;
pub mod file;
pub mod identity;
pub mod pem;

pub use client::{
    ClientIdentity, ServerTrust, TlsError, client_config, connect, connect_at, connect_plain_at,
};
pub use identity::{
    COLLECTOR_ROLE_URI, CertInfo, Identity, Role, cert_info, check_pin, client_uri, node_uri,
    pin_of_cert, pin_of_spki, role_uri,
};

use std::sync::Arc;

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN for gRPC.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for the HTTP API and the web page.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
