//! A target's rolling window of results and the state it implies. Pure.
//!
//! State rule:
//! - `Failing` when the last two probes failed (the last one when the window
//!   holds one result), or when every probe so far failed — a target that
//!   has never answered has shown no sign of working;
//! - `Degraded` when any probe in the window failed, or the successful
//!   probes' RTT p99 is over [`SLOW_RTT`] (a SYN lost once and retransmitted
//!   after a second shows as slow, not as a failure);
//! - `Ok` otherwise.

use super::model::{Outcome, ProbeResult, Target, TargetState, WindowSummary};
use super::tls::TlsFailure;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// Successful probes slower than this (at p99) make a target degraded.
pub const SLOW_RTT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct Sample {
    outcome: Outcome,
    rtt: Option<Duration>,
    http_status: Option<u16>,
    at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    samples: VecDeque<Sample>,
    /// The latest TLS failure; reported while a `TlsError` sample is in
    /// the window.
    last_tls: Option<TlsFailure>,
}

impl Window {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Window {
            capacity,
            samples: VecDeque::with_capacity(capacity),
            last_tls: None,
        }
    }

    /// Keeps the newest `capacity` results.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds a result and returns the state after it.
    pub fn push(&mut self, result: ProbeResult, at: SystemTime) -> TargetState {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            outcome: result.outcome,
            rtt: result.rtt,
            http_status: result.http_status,
            at,
        });
        if result.tls.is_some() {
            self.last_tls = result.tls;
        }
        // Not empty: a sample was just pushed.
        self.state().unwrap_or(TargetState::Failing)
    }

    /// `None` before the first result.
    pub fn state(&self) -> Option<TargetState> {
        let last = self.samples.back()?;
        let failed_recently = if self.capacity == 1 || self.samples.len() == 1 {
            !last.outcome.is_ok()
        } else {
            self.samples
                .iter()
                .rev()
                .take(2)
                .all(|s| !s.outcome.is_ok())
        };
        if failed_recently {
            return Some(TargetState::Failing);
        }
        let any_failed = self.samples.iter().any(|s| !s.outcome.is_ok());
        let slow = self.rtt_percentile(0.99).is_some_and(|p99| p99 > SLOW_RTT);
        Some(if any_failed || slow {
            TargetState::Degraded
        } else {
            TargetState::Ok
        })
    }

    /// Nearest-rank percentile of the successful probes' RTTs.
    fn rtt_percentile(&self, q: f64) -> Option<Duration> {
        let mut rtts: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.outcome.is_ok())
            .filter_map(|s| s.rtt)
            .collect();
        percentile(&mut rtts, q)
    }

    /// `None` before the first result.
    pub fn summary(&self, target: &Target) -> Option<WindowSummary> {
        let last = self.samples.back()?;
        let state = self.state()?;
        let mut w = WindowSummary {
            target: target.clone(),
            sent: 0,
            ok: 0,
            refused: 0,
            timeout: 0,
            unreachable: 0,
            no_route: 0,
            reset: 0,
            dns_error: 0,
            http_status: 0,
            tls_error: 0,
            rtt_p50_ms: None,
            rtt_p99_ms: None,
            last_outcome: last.outcome,
            last_failure: None,
            last_http_status: None,
            last_tls_error: None,
            state,
            last_probe: last.at,
        };
        let mut rtts = Vec::with_capacity(self.samples.len());
        for s in &self.samples {
            w.sent += 1;
            let counter = match s.outcome {
                Outcome::Open => &mut w.ok,
                Outcome::Refused => &mut w.refused,
                Outcome::Timeout => &mut w.timeout,
                Outcome::Unreachable => &mut w.unreachable,
                Outcome::NoRoute => &mut w.no_route,
                Outcome::Reset => &mut w.reset,
                Outcome::DnsError => &mut w.dns_error,
                Outcome::HttpStatus => &mut w.http_status,
                Outcome::TlsError => &mut w.tls_error,
            };
            *counter += 1;
            if s.outcome.is_ok() {
                rtts.extend(s.rtt);
            } else {
                w.last_failure = Some((s.outcome, s.at));
            }
            if s.http_status.is_some() {
                w.last_http_status = s.http_status;
            }
        }
        if w.tls_error > 0 {
            w.last_tls_error.clone_from(&self.last_tls);
        }
        let ms = |d: Duration| d.as_nanos() as f64 / 1e6;
        w.rtt_p50_ms = percentile(&mut rtts, 0.50).map(ms);
        w.rtt_p99_ms = percentile(&mut rtts, 0.99).map(ms);
        Some(w)
    }
}

/// Nearest-rank percentile; sorts `values`.
fn percentile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::model::ProbeKind;

    fn ok(ms: u64) -> ProbeResult {
        ProbeResult::new(Outcome::Open, Some(Duration::from_millis(ms)))
    }

    fn fail(outcome: Outcome) -> ProbeResult {
        ProbeResult::new(outcome, None)
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn target() -> Target {
        Target {
            id: 7,
            node: "b".into(),
            address: "198.18.0.2".parse().expect("address"),
            port: 7442,
            kind: ProbeKind::Tcp,
            service: None,
            http_path: None,
            expect_status: None,
            tls: None,
            udp: None,
        }
    }

    #[test]
    fn empty_window_has_no_state() {
        let w = Window::new(5);
        assert_eq!(w.state(), None);
        assert!(w.summary(&target()).is_none());
    }

    #[test]
    fn one_loss_degrades_two_fail_and_recovery_waits_for_the_window() {
        let mut w = Window::new(4);
        assert_eq!(w.push(ok(1), t(1)), TargetState::Ok);
        assert_eq!(w.push(fail(Outcome::Timeout), t(2)), TargetState::Degraded);
        assert_eq!(w.push(ok(1), t(3)), TargetState::Degraded);
        assert_eq!(w.push(fail(Outcome::Refused), t(4)), TargetState::Degraded);
        assert_eq!(w.push(fail(Outcome::Refused), t(5)), TargetState::Failing);
        assert_eq!(w.push(ok(1), t(6)), TargetState::Degraded);
        assert_eq!(w.push(ok(1), t(7)), TargetState::Degraded);
        assert_eq!(w.push(ok(1), t(8)), TargetState::Degraded);
        // The last failure (t5) leaves the 4-result window.
        assert_eq!(w.push(ok(1), t(9)), TargetState::Ok);
    }

    #[test]
    fn a_target_that_never_answered_is_failing() {
        let mut w = Window::new(10);
        assert_eq!(w.push(fail(Outcome::Timeout), t(1)), TargetState::Failing);
        assert_eq!(w.push(ok(2), t(2)), TargetState::Degraded);
    }

    #[test]
    fn window_of_one_follows_the_last_probe() {
        let mut w = Window::new(1);
        assert_eq!(w.push(ok(1), t(1)), TargetState::Ok);
        assert_eq!(w.push(fail(Outcome::Timeout), t(2)), TargetState::Failing);
        assert_eq!(w.push(ok(1), t(3)), TargetState::Ok);
    }

    #[test]
    fn slow_answers_degrade() {
        let mut w = Window::new(5);
        w.push(ok(2), t(1));
        assert_eq!(w.push(ok(1_005), t(2)), TargetState::Degraded);
        let s = w.summary(&target()).expect("summary");
        assert_eq!(s.rtt_p50_ms, Some(2.0));
        assert_eq!(s.rtt_p99_ms, Some(1_005.0));
    }

    #[test]
    fn summary_counts_each_outcome() {
        let mut w = Window::new(6);
        w.push(ok(10), t(1));
        w.push(fail(Outcome::Timeout), t(2));
        w.push(ok(30), t(3));
        w.push(fail(Outcome::Unreachable), t(4));
        w.push(ok(20), t(5));
        let mut http = fail(Outcome::HttpStatus);
        http.http_status = Some(503);
        w.push(http, t(6));
        // Capacity 6: one more evicts the first (ok 10 ms).
        w.push(fail(Outcome::NoRoute), t(7));
        let s = w.summary(&target()).expect("summary");
        assert_eq!(
            (
                s.sent,
                s.ok,
                s.timeout,
                s.unreachable,
                s.http_status,
                s.no_route
            ),
            (6, 2, 1, 1, 1, 1)
        );
        assert_eq!(s.rtt_p50_ms, Some(20.0));
        assert_eq!(s.rtt_p99_ms, Some(30.0));
        assert_eq!(s.last_outcome, Outcome::NoRoute);
        assert_eq!(s.last_failure, Some((Outcome::NoRoute, t(7))));
        assert_eq!(s.last_http_status, Some(503));
        assert_eq!(s.last_probe, t(7));
        assert_eq!(s.state, TargetState::Failing);
    }

    #[test]
    fn resize_keeps_the_newest() {
        let mut w = Window::new(5);
        w.push(fail(Outcome::Timeout), t(1));
        w.push(ok(1), t(2));
        w.push(ok(1), t(3));
        w.resize(2);
        assert_eq!(w.state(), Some(TargetState::Ok));
        assert_eq!(w.summary(&target()).map(|s| s.sent), Some(2));
    }
}
