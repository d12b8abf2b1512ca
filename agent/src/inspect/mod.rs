//! Inspectors: one module per source of host facts. Each is a pure parser of
//! what the kernel returns plus a thin reader that does the I/O.

pub mod host;
pub mod rtnl;
pub mod watch;
