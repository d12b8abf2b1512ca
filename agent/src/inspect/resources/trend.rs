//! Leak or spike? The memory in use over a window of samples.
//!
//! A leak climbs: a straight line fits well (R² > 0.8), the slope is real
//! (> 1 MiB/min), it rose in most intervals (≥ 70 %) and the total rise is
//! significant (≥ 32 MiB). A spike is one interval carrying most (≥ 60 %) of a
//! significant range, whatever comes after it. Anything else is steady. At
//! least 5 samples over at least a minute are needed to say anything.

use crate::facts::resources::MemoryTrend;

pub const MIN_SAMPLES: usize = 5;
pub const MIN_SPAN_SECS: f64 = 60.0;
pub const MIN_SLOPE_MIB_PER_MIN: f64 = 1.0;
pub const MIN_R2: f64 = 0.8;
pub const MIN_RISING_SHARE: f64 = 0.7;
pub const MIN_CHANGE_BYTES: u64 = 32 << 20;
pub const SPIKE_SHARE: f64 = 0.6;

/// `samples`: (seconds, bytes in use), oldest first.
pub fn memory_trend(samples: &[(f64, u64)]) -> MemoryTrend {
    let n = samples.len();
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return MemoryTrend::Unknown;
    };
    let span = last.0 - first.0;
    if n < MIN_SAMPLES || !span.is_finite() || span < MIN_SPAN_SECS {
        return MemoryTrend::Unknown;
    }
    let (min, max) = samples
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    let range = max - min;
    let steps: Vec<i128> = samples
        .windows(2)
        .map(|w| i128::from(w[1].1) - i128::from(w[0].1))
        .collect();
    let rising = steps.iter().filter(|d| **d > 0).count() as f64 / steps.len() as f64;
    let biggest_jump = steps.iter().map(|d| d.unsigned_abs()).max().unwrap_or(0);
    let rise = last.1.saturating_sub(first.1);

    if let Some((slope, r2)) = fit(samples) {
        let mib_per_min = slope * 60.0 / (1u64 << 20) as f64;
        if mib_per_min > MIN_SLOPE_MIB_PER_MIN
            && r2 > MIN_R2
            && rising >= MIN_RISING_SHARE
            && rise >= MIN_CHANGE_BYTES
        {
            return MemoryTrend::Growing {
                mib_per_min: (mib_per_min * 100.0).round() / 100.0,
            };
        }
    }
    if range >= MIN_CHANGE_BYTES && biggest_jump as f64 >= SPIKE_SHARE * range as f64 {
        return MemoryTrend::Spike;
    }
    MemoryTrend::Steady
}

/// Least-squares slope (bytes per second) and R² of bytes over time.
fn fit(samples: &[(f64, u64)]) -> Option<(f64, f64)> {
    let n = samples.len() as f64;
    let t0 = samples.first()?.0;
    let mean_x = samples.iter().map(|s| s.0 - t0).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for s in samples {
        let dx = s.0 - t0 - mean_x;
        let dy = s.1 as f64 - mean_y;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = sxy * sxy / (sxx * syy);
    (slope.is_finite() && r2.is_finite()).then_some((slope, r2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn series(values_mib: &[u64]) -> Vec<(f64, u64)> {
        values_mib
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * 60.0, v * MIB))
            .collect()
    }

    #[test]
    fn leak_is_growing() {
        // +20 MiB a minute with a little noise, one interval flat.
        let s = series(&[1000, 1021, 1039, 1060, 1060, 1101, 1119, 1142, 1160, 1181]);
        match memory_trend(&s) {
            MemoryTrend::Growing { mib_per_min } => assert!((18.0..22.0).contains(&mib_per_min)),
            other => panic!("expected growing, got {other:?}"),
        }
    }

    #[test]
    fn jump_then_flat_is_a_spike() {
        let s = series(&[1000, 1002, 999, 1001, 1800, 1801, 1799, 1800, 1802, 1800]);
        assert_eq!(memory_trend(&s), MemoryTrend::Spike);
    }

    #[test]
    fn jump_then_back_is_a_spike() {
        let s = series(&[1000, 1001, 1000, 1900, 1000, 1001, 1000]);
        assert_eq!(memory_trend(&s), MemoryTrend::Spike);
    }

    #[test]
    fn noise_is_steady() {
        let s = series(&[1000, 1010, 995, 1005, 1000, 1008, 992, 1003]);
        assert_eq!(memory_trend(&s), MemoryTrend::Steady);
    }

    #[test]
    fn slow_creep_below_threshold_is_steady() {
        let s = series(&[1000, 1000, 1001, 1001, 1002, 1002, 1003]);
        assert_eq!(memory_trend(&s), MemoryTrend::Steady);
    }

    #[test]
    fn too_few_or_too_short_is_unknown() {
        assert_eq!(memory_trend(&[]), MemoryTrend::Unknown);
        assert_eq!(memory_trend(&series(&[1, 2, 3, 4])), MemoryTrend::Unknown);
        let short: Vec<(f64, u64)> = (0..10).map(|i| (i as f64, i * 100 * MIB)).collect();
        assert_eq!(memory_trend(&short), MemoryTrend::Unknown);
    }

    #[test]
    fn flat_is_steady_not_nan() {
        assert_eq!(memory_trend(&series(&[500; 8])), MemoryTrend::Steady);
    }
}
