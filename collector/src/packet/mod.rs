//! A packet evaluated against a node's normalised firewall ruleset: the
//! verdict, the rule or policy that decides it, NAT on the way. `why` asks
//! it about the packet of a failing probe.

pub mod firewall;
