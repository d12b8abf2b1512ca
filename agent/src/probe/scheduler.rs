//! When probes start: every target once per interval at its own random
//! phase (so probes are spread over the interval, not sent in a burst), no
//! faster than a global token bucket allows. Pure: time is passed in.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Holds 20 ms worth of tokens (at least one) and starts with one, so a
    /// new plan does not begin with a burst.
    pub fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        TokenBucket {
            rate,
            burst: (rate / 50.0).max(1.0),
            tokens: 1.0,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Which target is due next. Each target keeps its phase from one interval
/// to the next; a target more than an interval late skips the missed slots.
#[derive(Debug, Default)]
pub struct Schedule {
    interval: Duration,
    due: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Schedule {
    /// Target `i` first runs at `start + phases[i]`.
    pub fn new(
        interval: Duration,
        start: Instant,
        phases: impl IntoIterator<Item = Duration>,
    ) -> Self {
        let due = phases
            .into_iter()
            .enumerate()
            .map(|(i, phase)| Reverse((start + phase.min(interval), i)))
            .collect();
        Schedule { interval, due }
    }

    /// The earliest due time, if any target is scheduled.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the next target due at or before `now` and schedules its next
    /// run. Also returns how many of its slots were skipped for being late.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        let Reverse((at, i)) = *self.due.peek()?;
        if at > now {
            return None;
        }
        self.due.pop();
        let mut next = at + self.interval;
        let mut skipped = 0;
        while next <= now && !self.interval.is_zero() {
            next += self.interval;
            skipped += 1;
        }
        self.due.push(Reverse((next, i)));
        Some((i, skipped))
    }
}

/// Random phases in `[0, interval)`, one per target.
pub fn random_phases(count: usize, interval: Duration) -> Vec<Duration> {
    use rand::Rng;
    let nanos = interval.as_nanos().clamp(1, u128::from(u64::MAX)) as u64;
    let mut rng = rand::rng();
    (0..count)
        .map(|_| Duration::from_nanos(rng.random_range(0..nanos)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, t0);
        let mut taken = 0;
        // Ask every 100 µs for a second: 10,000 asks, ~1,000 granted.
        for step in 0..10_000u64 {
            if b.take(t0 + Duration::from_micros(step * 100)).is_ok() {
                taken += 1;
            }
        }
        assert!((995..=1_021).contains(&taken), "{taken}");
    }

    #[test]
    fn bucket_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(100));
        assert!(b.take(t0 + wait).is_ok());
    }

    #[test]
    fn bucket_burst_is_bounded() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5_000, t0);
        let later = t0 + Duration::from_secs(60);
        let burst = (0..1_000).take_while(|_| b.take(later).is_ok()).count();
        assert_eq!(burst, 100);
    }

    #[test]
    fn schedule_runs_each_target_once_per_interval_at_its_phase() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(1);
        let phases = [Duration::from_millis(700), Duration::from_millis(100)];
        let mut s = Schedule::new(interval, t0, phases);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(s.pop_due(t0), None);
        let at = t0 + Duration::from_millis(800);
        assert_eq!(s.pop_due(at), Some((1, 0)));
        assert_eq!(s.pop_due(at), Some((0, 0)));
        assert_eq!(s.pop_due(at), None);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(1_100)));
    }

    #[test]
    fn late_targets_skip_missed_slots() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(1), t0, [Duration::ZERO]);
        assert_eq!(s.pop_due(t0 + Duration::from_millis(3_500)), Some((0, 3)));
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn random_phases_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        let phases = random_phases(10_000, interval);
        assert!(phases.iter().all(|p| *p < interval));
        let mut buckets = [0u32; 10];
        for p in &phases {
            buckets[(p.as_millis() / 100) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1_200).contains(&n)),
            "{buckets:?}"
        );
    }
}
