//! Shared by the agent's live tests: run a closure on a thread of its own
//! inside a fresh, empty network namespace. The namespace belongs to that
//! thread only, so tests run in parallel without seeing each other's sockets,
//! rules or links, and it disappears when the thread ends — even on panic.
//!
//! Child processes started from the closure (`ip`, `nft`, `iptables`) inherit
//! the thread's namespace.

#![allow(dead_code)]

use std::process::Command;

/// True when this process may create namespaces. Outside CI a test without
/// root skips with a message; under `CI=true` it must run, so this panics.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let ci = std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false);
    if ci {
        panic!("this test needs root; CI must run it (run `sudo deploy/test.sh`)");
    }
    eprintln!("SKIPPED: this test needs root to create a network namespace");
    false
}

/// Runs `f` in a new network namespace with `lo` up, on its own thread, and
/// returns its result; a panic in `f` is re-raised in the caller.
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        sh("ip link set lo up");
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a shell command line (inside the calling thread's namespace) and
/// returns its stdout; panics with its stderr when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
