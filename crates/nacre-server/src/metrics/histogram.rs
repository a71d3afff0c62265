//! A latency histogram of fixed buckets kept in atomics: an observation
//! is two relaxed `fetch_add`s and a search of sixteen bounds, with no
//! lock and no allocation, so it can sit on every request and every fsync.
//! (`prometheus-client`'s own `Histogram` takes a mutex per observation.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in µs: from 25 µs (a cached get) to 5 s
/// (a request near its timeout), about three per decade.
pub const BOUNDS_US: [u64; 16] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Observations past the last bound land in the `+Inf` bucket.
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Counts per bucket (not cumulative) and the sum of the observations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A histogram as read at one moment: what the encoder writes.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, count in that bucket alone); the last
    /// bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bound at or over the value: buckets are `le` (≤).
        let i = BOUNDS_US.partition_point(|&b| b.saturating_mul(1_000) < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The buckets, the count and the sum. The count is the buckets' total,
    /// so `_count` always equals the `+Inf` bucket even while observations
    /// race the scrape (the sum may then be off by one observation).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A fixed table of histograms, one per (row, column): the latencies of
/// a family with two labels (op and outcome; method and code), allocated
/// once so that an observation never allocates.
pub struct HistogramGrid {
    /// `row * columns + column`.
    cells: Box<[Histogram]>,
    columns: usize,
}

impl HistogramGrid {
    pub fn new(rows: usize, columns: usize) -> HistogramGrid {
        HistogramGrid {
            cells: (0..rows * columns).map(|_| Histogram::default()).collect(),
            columns,
        }
    }

    pub fn observe(&self, row: usize, column: usize, d: Duration) {
        assert!(column < self.columns, "column {column} of {}", self.columns);
        self.cells[row * self.columns + column].observe(d);
    }

    /// Every (row, column, histogram) that has seen an observation: the
    /// others are left out of a scrape (most would be empty).
    pub fn used(&self) -> impl Iterator<Item = (usize, usize, &Histogram)> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, h)| h.count() > 0)
            .map(|(i, h)| (i / self.columns, i % self.columns, h))
    }
}

impl std::fmt::Debug for HistogramGrid {
    /// The observations counted, not a thousand histograms.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count: u64 = self.cells.iter().map(Histogram::count).sum();
        f.debug_struct("HistogramGrid")
            .field("observations", &count)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_lands_in_the_first_bucket_at_or_over_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(25)); // on a bound: that bucket
        h.observe(Duration::from_nanos(25_001)); // just over: the next
        h.observe(Duration::from_secs(60)); // past the last: +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (25e-6, 1));
        assert_eq!(s.buckets[1], (50e-6, 1));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(s.buckets.len(), BOUNDS_US.len() + 1);
        let expected = 25e-6 + 25_001e-9 + 60.0;
        assert!((s.sum_seconds - expected).abs() < 1e-9, "{}", s.sum_seconds);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn the_bounds_rise() {
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }
}
