//! Resources inspector: /proc figures, pressure stall info, disk use.
