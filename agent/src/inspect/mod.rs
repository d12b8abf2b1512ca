//! Inspectors: one module per source of host facts. Each is a pure parser of
//! what the kernel returns plus a thin reader that does the I/O.

pub mod firewall;
pub mod host;
pub mod kmsg;
pub mod resources;
pub mod rtnl;
pub mod sockets;
pub mod watch;
