//! Kernel events read from /dev/kmsg: OOM kills, conntrack table full, SYN
//! floods, link up/down.
