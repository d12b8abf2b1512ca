//! Kernel log inspector: /dev/kmsg records.
