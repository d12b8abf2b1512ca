//! Clock offset of an agent, NTP-style: the collector sends its time t0, the
//! agent answers at once with its time t1, the answer arrives at t2. Then
//! offset = t1 - (t0 + t2) / 2, with an error bound of half the round trip.
//! Of the last few samples the one with the shortest round trip wins: it had
//! the least queueing to distort it.

use std::collections::VecDeque;

const SAMPLES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub offset_nanos: i64,
    pub rtt_nanos: i64,
}

#[derive(Debug, Default)]
pub struct ClockEstimator {
    samples: VecDeque<Sample>,
}

impl ClockEstimator {
    /// Adds one exchange; returns `None` (and keeps nothing) when the times
    /// are impossible: the answer arrived before the question was sent.
    pub fn add(&mut self, t0: i64, t1: i64, t2: i64) -> Option<Sample> {
        if t2 < t0 || t0 <= 0 {
            return None;
        }
        let rtt = t2 - t0;
        let midpoint = t0 + rtt / 2;
        let sample = Sample {
            offset_nanos: t1.saturating_sub(midpoint),
            rtt_nanos: rtt,
        };
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        Some(sample)
    }

    pub fn estimate(&self) -> Option<Sample> {
        self.samples.iter().copied().min_by_key(|s| s.rtt_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn symmetric_exchange_gives_the_exact_offset() {
        let mut c = ClockEstimator::default();
        // Agent is 250 ms ahead; one-way delay 2 ms.
        let t0 = 1_000 * MS;
        let s = c
            .add(t0, t0 + 2 * MS + 250 * MS, t0 + 4 * MS)
            .expect("valid");
        assert_eq!(s.offset_nanos, 250 * MS);
        assert_eq!(s.rtt_nanos, 4 * MS);
    }

    #[test]
    fn the_shortest_round_trip_wins() {
        let mut c = ClockEstimator::default();
        let t0 = 1_000 * MS;
        // A delayed answer (queueing on the way back) skews its sample.
        c.add(t0, t0 + MS - 30 * MS, t0 + 80 * MS);
        c.add(t0 + 1000 * MS, t0 + 1001 * MS - 30 * MS, t0 + 1002 * MS);
        assert_eq!(c.estimate().map(|s| s.offset_nanos), Some(-30 * MS));
    }

    #[test]
    fn impossible_times_are_ignored() {
        let mut c = ClockEstimator::default();
        assert!(c.add(10 * MS, 0, 5 * MS).is_none());
        assert!(c.add(0, 0, 5 * MS).is_none());
        assert!(c.estimate().is_none());
    }

    #[test]
    fn keeps_only_recent_samples() {
        let mut c = ClockEstimator::default();
        c.add(MS, MS, MS); // perfect, but old
        for n in 1..=SAMPLES as i64 {
            let t0 = n * 1000 * MS;
            c.add(t0, t0 + 5 * MS, t0 + 2 * MS);
        }
        assert_eq!(c.estimate().map(|s| s.offset_nanos), Some(4 * MS));
    }
}
