//! The one allocator setting the agent makes, and the crate's only `unsafe`.
//!
//! glibc's malloc serves a block of 128 KiB or more from its own mapping,
//! given back to the kernel when freed, but it raises that threshold to the
//! size of each such block freed, up to 32 MiB. On a host with 20,000
//! firewall rules the first reading frees the tools' 4 MiB of output, and
//! from then on the 3.4 MB an encoded snapshot takes is served from an arena
//! and stays resident after it is sent (measured: 30.5 MiB RSS against 26.5
//! with the threshold fixed, `deploy/bench.sh firewall`). A fixed threshold
//! keeps large, short-lived buffers out of the arenas; an explicit setting
//! also turns the raising off.

/// Blocks at least this large get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Fixes the threshold; call first thing in `main`, before other threads
/// start. False when the allocator is not glibc's or refused the setting.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_large_blocks() -> bool {
    // SAFETY: mallopt takes no pointers and only changes malloc's
    // parameters; glibc takes its own locks for it.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_blocks() -> bool {
    false
}
