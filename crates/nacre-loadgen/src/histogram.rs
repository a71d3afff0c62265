//! Latencies in an HDR histogram (microseconds, 3 significant digits).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency kept exactly; longer ones are recorded as this.
const MAX_US: u64 = 60_000_000;

/// One client's (or a merged run's) latencies.
#[derive(Debug, Clone)]
pub struct Latencies {
    h: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

/// Percentiles of a run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            h: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(MAX_US)) as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        self.h.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.h.add(&other.h).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The latency at quantile `q` (0..=1).
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.value_at_quantile(q)
        }
    }

    pub fn summary(&self) -> Summary {
        if self.h.is_empty() {
            return Summary {
                count: 0,
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Summary {
            count: self.h.len(),
            min: self.h.min(),
            mean: self.h.mean(),
            p50: self.quantile_us(0.50),
            p90: self.quantile_us(0.90),
            p99: self.quantile_us(0.99),
            p999: self.quantile_us(0.999),
            max: self.h.max(),
        }
    }

    /// (latency µs, cumulative fraction) at each distinct recorded value,
    /// at most `points` of them, for plotting the distribution.
    pub fn cdf(&self, points: usize) -> Vec<(u64, f64)> {
        let total = self.h.len();
        if total == 0 || points == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for v in self.h.iter_recorded() {
            out.push((
                self.h.highest_equivalent(v.value_iterated_to()),
                v.quantile_iterated_to(),
            ));
        }
        if out.len() > points {
            let step = out.len() as f64 / points as f64;
            let last = *out.last().expect("non-empty");
            out = (0..points)
                .map(|i| out[(i as f64 * step) as usize])
                .collect();
            if out.last() != Some(&last) {
                out.push(last);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut l = Latencies::new();
        for us in 1..=10_000 {
            l.record_us(us);
        }
        let s = l.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1);
        // Three significant digits: within 0.1% of the exact figure.
        let near = |got: u64, want: u64| got.abs_diff(want) <= want / 1000 + 1;
        assert!(near(s.p50, 5_000), "{s:?}");
        assert!(near(s.p90, 9_000), "{s:?}");
        assert!(near(s.p99, 9_900), "{s:?}");
        assert!(near(s.p999, 9_990), "{s:?}");
        assert!(near(s.max, 10_000), "{s:?}");
        assert!((s.mean - 5_000.5).abs() < 10.0, "{s:?}");
    }

    #[test]
    fn a_tail_shows_in_p99_but_not_p50() {
        let mut l = Latencies::new();
        for _ in 0..980 {
            l.record(Duration::from_micros(100));
        }
        for _ in 0..20 {
            l.record(Duration::from_millis(50));
        }
        let s = l.summary();
        assert_eq!(s.p50, 100);
        assert!(s.p99.abs_diff(50_000) <= 50, "{s:?}");
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for _ in 0..100 {
            a.record_us(10);
            b.record_us(1_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 200);
        assert_eq!(a.summary().min, 10);
        assert!(a.summary().max.abs_diff(1_000) <= 1);
        // Half at 10 µs, half at 1 ms: the median is 10 µs.
        assert_eq!(a.quantile_us(0.5), 10);
        assert!(a.quantile_us(0.51).abs_diff(1_000) <= 1);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_empty_is_zero() {
        let mut l = Latencies::new();
        assert_eq!(l.summary().p99, 0);
        assert!(l.cdf(10).is_empty());
        l.record_us(0);
        l.record(Duration::from_secs(3600));
        let s = l.summary();
        assert_eq!(s.min, 1);
        assert!(s.max >= MAX_US);
    }

    #[test]
    fn cdf_is_monotonic_and_ends_at_one() {
        let mut l = Latencies::new();
        for us in 1..=5_000 {
            l.record_us(us * 3);
        }
        let c = l.cdf(50);
        assert!(c.len() <= 51 && c.len() >= 10);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((c.last().unwrap().1 - 1.0).abs() < 1e-9);
    }
}
