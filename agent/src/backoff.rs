//! Reconnect delays: exponential, capped, with jitter so a fleet of agents
//! does not reconnect in lock-step after a collector restart.

use rand::Rng;
use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// `initial` is raised to 1 ms and `max` to `initial`, so the delay is
    /// never zero and never shrinks as it grows.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay, between half and all of the current step ("equal
    /// jitter"): never below half the step, never above `max`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        let half = step / 2;
        let jitter_nanos = rng.random_range(0..=(step - half).as_nanos() as u64);
        half + Duration::from_nanos(jitter_nanos)
    }

    /// After a connection that worked, start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn grows_doubling_and_stays_under_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let steps = [100u64, 200, 400, 800, 1600, 2000, 2000, 2000];
        for step in steps {
            for _ in 0..1 {
                let d = b.next_delay(&mut rng);
                let step = Duration::from_millis(step);
                assert!(d >= step / 2, "{d:?} below half of {step:?}");
                assert!(d <= step, "{d:?} above {step:?}");
            }
        }
    }

    #[test]
    fn never_exceeds_max_over_many_attempts() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        for _ in 0..10_000 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_agents_apart() {
        let mut rng = StdRng::seed_from_u64(42);
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay(&mut rng)
            })
            .collect();
        assert!(delays.len() > 40, "delays should differ: {delays:?}");
    }

    #[test]
    fn degenerate_settings_are_made_sane() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        let d = b.next_delay(&mut rng);
        assert!(d <= Duration::from_millis(1));
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(2));
    }
}
