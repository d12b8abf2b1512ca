//! Test harness for running a real reachmap fleet on one machine.
//!
//! A [`Fleet`] is a hub network namespace holding a Linux bridge plus one
//! namespace per node, each joined to the bridge by a veth pair. Every node is a
//! real host as far as the agent is concerned: its own interfaces, addresses,
//! routes, sockets and firewall. Fleets are fully isolated from each other, so
//! every fleet uses the same subnet (198.18.0.0/24) and tests run in parallel.
//!
//! Everything a fleet creates is torn down in `Drop`, including when the test
//! panics; namespaces left behind by a crashed run are swept by the next
//! [`Fleet::new`].

mod bins;
pub mod browser;
pub mod cgroup;
mod control;
mod fleet;
pub mod netns;
mod nodes;
pub mod postgres;
mod process;
pub mod procstat;
mod router;

use std::fmt::{Debug, Display};
use std::time::{Duration, Instant};

pub use bins::{bin_dir, binary};
pub use control::FleetTrust;
pub use fleet::{
    COLLECTOR_GRPC_PORT, COLLECTOR_HTTP_PORT, COLLECTOR_HTTP_URL, COLLECTOR_URL, Fleet, HUB_ADDR,
    Node, node_addr,
};
pub use nodes::{NodeView, firewall_rule_count, node_view, node_views};
pub use router::{ROUTER_FAR, ROUTER_LAN, far_addr};

/// Returns true when the tests may create namespaces (running as root).
///
/// Not root and `CI=true`: panics, because CI must run these tests rather than
/// skip them. Not root otherwise: prints a skip line and returns false, and the
/// caller returns early.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!("these tests need root; CI must run them (run `sudo deploy/test.sh`)");
    }
    eprintln!(
        "SKIPPED: this test needs root to create network namespaces (try `sudo deploy/test.sh`)"
    );
    false
}

/// True when the environment variable `CI` says this is a CI run.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// The patience factor from `REACHMAP_TEST_PATIENCE` (default 1.0): every
/// timeout in the harness is multiplied by it, for slow or loaded machines.
pub fn patience() -> f64 {
    match std::env::var("REACHMAP_TEST_PATIENCE") {
        Err(_) => 1.0,
        Ok(raw) => match raw.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => f,
            _ => panic!("REACHMAP_TEST_PATIENCE must be a positive number, got {raw:?}"),
        },
    }
}

/// `d` scaled by [`patience`].
pub fn patient(d: Duration) -> Duration {
    d.mul_f64(patience())
}

/// Polls `check` every 100 ms until it returns `Ok`, and returns that value.
///
/// `check` returns `Err(observed)` while the condition does not hold yet, with
/// `observed` describing what it saw. After `timeout` (scaled by [`patience`])
/// this panics with `message` and the last observed value.
pub fn eventually<T, E: Display>(
    timeout: Duration,
    message: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let timeout = patient(timeout);
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {:.1}s: {message}\nlast observed:\n{last}",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Turns a condition into the `Result` that [`eventually`] expects: `Ok(())`
/// when `cond` holds, otherwise `Err` with `observed` pretty-printed, so that a
/// timeout can show it.
pub fn ensure<O: Debug>(cond: bool, observed: O) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("{observed:#?}"))
    }
}

/// `assert_eventually!(timeout, || check, "message {}", args...)`: polls
/// `check` (returning `Result<T, observed>`) until `Ok`, see [`eventually`].
/// Evaluates to the `Ok` value.
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $check:expr, $($msg:tt)+) => {
        $crate::eventually($timeout, &::std::format!($($msg)+), $check)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_returns_first_ok() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "counts to 3", || {
            n += 1;
            ensure(n >= 3, n).map(|()| n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "never true")]
    fn eventually_panics_with_message() {
        eventually(Duration::from_millis(250), "never true", || {
            ensure(false, "x")
        });
    }

    #[test]
    fn macro_formats_message() {
        let v = assert_eventually!(
            Duration::from_secs(1),
            || ensure(true, 0).map(|()| 7),
            "x={}",
            1
        );
        assert_eq!(v, 7);
    }
}
