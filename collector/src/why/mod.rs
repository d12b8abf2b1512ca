//! Explaining a failing cell: why SRC cannot reach DST:PORT.

pub mod firewall;
