//! The dashboard's ring buffer of samples (docs/operations.md,
//! "Dashboard"): once a second, what this node did in that second.
//!
//! - [`Latency`]: a cheap accumulator of request latencies (a sum, a count
//!   and a fixed-bucket histogram, all atomics), fed by one line in the
//!   client listener's request dispatch (`server::execute`).
//! - [`Samples`]: the last [`SAMPLES_MAX`] samples (requests/s, applied
//!   entries/s, mean/p50/p99 latency, role, leader, term) and the last
//!   [`LEADER_CHANGES_MAX`] leader changes this node saw.
//! - [`run`]: the sampling task, started with the admin listener.
//!
//! Everything here is this node's own view: a follower counts the
//! requests it served and the entries it applied.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::server::Shared;

/// One sample a second, for ten minutes.
pub(crate) const SAMPLE_INTERVAL_MS: u64 = 1_000;
/// Samples kept: ten minutes at one a second.
pub(crate) const SAMPLES_MAX: usize = 600;
/// Leader changes kept (each is a (time, leader, term)); older ones fall
/// off. A change is kept longer than the samples: the timeline outlives
/// the charts' ten minutes.
pub(crate) const LEADER_CHANGES_MAX: usize = 100;

/// Histogram buckets: bucket `i` holds latencies in
/// `[2^(i/2), 2^((i+1)/2))` microseconds (half powers of two, so a
/// percentile is known within a factor of about 1.41); the last bucket
/// holds everything from about 2^(47/2) µs (about 12 s) up.
const LATENCY_BUCKETS: usize = 48;

/// Request latencies since the node started: cumulative, so the sampler
/// takes differences and a reader never resets what a writer adds to.
pub(crate) struct Latency {
    count: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Latency {
    fn default() -> Latency {
        Latency {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket of a latency of `us` microseconds.
fn bucket_of(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    let k = 63 - us.leading_zeros() as usize; // 2^k <= us < 2^(k+1)
                                              // The upper half of [2^k, 2^(k+1)) starts at 2^k·√2: us² >= 2^(2k+1).
    let upper = u128::from(us) * u128::from(us) >= 1u128 << (2 * k + 1);
    (2 * k + usize::from(upper)).min(LATENCY_BUCKETS - 1)
}

/// The upper bound of bucket `i`, in microseconds: 2^((i+1)/2).
fn bucket_upper_us(i: usize) -> f64 {
    2f64.powf((i as f64 + 1.0) / 2.0)
}

impl Latency {
    /// Records one request that took `took` (the same measurement the
    /// request histograms of `/metrics` get: one clock read per request).
    pub(crate) fn record(&self, took: Duration) {
        self.record_us(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn record_us(&self, us: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// The cumulative figures at one moment.
#[derive(Clone)]
struct LatencySnapshot {
    count: u64,
    sum_us: u64,
    buckets: [u64; LATENCY_BUCKETS],
}

/// Mean, p50 and p99 of the requests between two snapshots (`None`: no
/// request in between). Percentiles are a bucket's upper bound.
fn interval_latency(
    before: &LatencySnapshot,
    now: &LatencySnapshot,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let count = now.count.saturating_sub(before.count);
    if count == 0 {
        return (None, None, None);
    }
    let mean = now.sum_us.saturating_sub(before.sum_us) as f64 / count as f64;
    let deltas: Vec<u64> = (0..LATENCY_BUCKETS)
        .map(|i| now.buckets[i].saturating_sub(before.buckets[i]))
        .collect();
    let in_buckets: u64 = deltas.iter().sum();
    let pct = |p: f64| {
        // The rank of the p-th percentile, 1-based, at least 1.
        let rank = ((in_buckets as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in deltas.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper_us(i) / 1_000.0);
            }
        }
        None
    };
    (Some(mean / 1_000.0), pct(0.50), pct(0.99))
}

/// What this node did in one second, and who led.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Wall-clock time of the sample, ms since the Unix epoch.
    pub at_ms: u64,
    /// Client requests served per second (native protocol).
    pub requests_per_s: f64,
    /// Raft entries applied per second (writes, and the few no-op and
    /// membership entries).
    pub applied_per_s: f64,
    pub latency_mean_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub role: &'static str,
    pub term: u64,
    /// 0: no leader known.
    pub leader_id: u64,
    pub leader: Option<String>,
    pub applied_index: u64,
}

/// One change of leader (or of term) this node saw.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct LeaderChange {
    pub at_ms: u64,
    pub term: u64,
    /// 0: no leader known (an election is under way).
    pub leader_id: u64,
    pub leader: Option<String>,
}

/// The ring buffer and the leader-change list.
#[derive(Default)]
pub(crate) struct Samples {
    inner: Mutex<Rings>,
}

#[derive(Default)]
struct Rings {
    samples: VecDeque<Sample>,
    changes: VecDeque<LeaderChange>,
}

/// What `/api/samples` answers.
#[derive(Debug, Serialize)]
pub(crate) struct SamplesView {
    pub interval_ms: u64,
    pub samples_max: usize,
    pub samples: Vec<Sample>,
    pub leader_changes: Vec<LeaderChange>,
}

impl Samples {
    fn push(&self, s: Sample) {
        let mut r = self.inner.lock();
        let changed = r
            .changes
            .back()
            .is_none_or(|c| (c.leader_id, c.term) != (s.leader_id, s.term));
        if changed {
            if r.changes.len() == LEADER_CHANGES_MAX {
                r.changes.pop_front();
            }
            r.changes.push_back(LeaderChange {
                at_ms: s.at_ms,
                term: s.term,
                leader_id: s.leader_id,
                leader: s.leader.clone(),
            });
        }
        if r.samples.len() == SAMPLES_MAX {
            r.samples.pop_front();
        }
        r.samples.push_back(s);
        assert!(r.samples.len() <= SAMPLES_MAX && r.changes.len() <= LEADER_CHANGES_MAX);
    }

    pub(crate) fn view(&self) -> SamplesView {
        let r = self.inner.lock();
        SamplesView {
            interval_ms: SAMPLE_INTERVAL_MS,
            samples_max: SAMPLES_MAX,
            samples: r.samples.iter().cloned().collect(),
            leader_changes: r.changes.iter().cloned().collect(),
        }
    }
}

/// The figures one sample is the difference of.
struct Mark {
    at: Instant,
    requests: u64,
    applied: u64,
    latency: LatencySnapshot,
}

fn mark(shared: &Shared) -> Mark {
    Mark {
        at: Instant::now(),
        requests: shared.counters.requests.load(Ordering::Relaxed),
        applied: shared.node.status.applied.load(Ordering::Relaxed),
        latency: shared.counters.latency.snapshot(),
    }
}

fn sample(shared: &Shared, before: &Mark, now: &Mark) -> Sample {
    let s = &shared.node.status;
    // The tick may come late (a busy machine): rates are per real second.
    let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let (mean, p50, p99) = interval_latency(&before.latency, &now.latency);
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Sample {
        at_ms,
        requests_per_s: rate(before.requests, now.requests),
        applied_per_s: rate(before.applied, now.applied),
        latency_mean_ms: mean,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        role: s.role().name(),
        term: s.term.load(Ordering::Relaxed),
        leader_id: s.leader_id.load(Ordering::Relaxed),
        leader: s.leader_name(),
        applied_index: now.applied,
    }
}

/// Samples once every [`SAMPLE_INTERVAL_MS`] until `stop` turns true.
pub(crate) async fn run(
    shared: Arc<Shared>,
    samples: Arc<Samples>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(SAMPLE_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is at once
    let mut before = mark(&shared);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = mark(&shared);
        samples.push(sample(&shared, &before, &now));
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_half_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 3); // 3 >= 2·√2
        assert_eq!(bucket_of(4), 4);
        assert_eq!(bucket_of(5), 4); // 5 < 4·√2
        assert_eq!(bucket_of(6), 5);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        for us in [1u64, 7, 100, 999, 12_345, 1_000_000] {
            let i = bucket_of(us);
            assert!(us as f64 <= bucket_upper_us(i), "{us} in bucket {i}");
        }
    }

    #[test]
    fn percentiles_come_from_the_interval_only() {
        let l = Latency::default();
        for _ in 0..1_000 {
            l.record_us(10_000); // 10 ms, before the interval
        }
        let before = l.snapshot();
        for _ in 0..99 {
            l.record_us(100);
        }
        l.record_us(50_000);
        let (mean, p50, p99) = interval_latency(&before, &l.snapshot());
        let (mean, p50, p99) = (mean.unwrap(), p50.unwrap(), p99.unwrap());
        assert!((mean - (99.0 * 0.1 + 50.0) / 100.0).abs() < 1e-9, "{mean}");
        assert!((0.1..0.15).contains(&p50), "{p50}");
        assert!((0.1..0.15).contains(&p99), "{p99}");
        let (none, _, _) = interval_latency(&l.snapshot(), &l.snapshot());
        assert!(none.is_none());
    }

    fn at(leader_id: u64, term: u64, at_ms: u64) -> Sample {
        Sample {
            at_ms,
            requests_per_s: 0.0,
            applied_per_s: 0.0,
            latency_mean_ms: None,
            latency_p50_ms: None,
            latency_p99_ms: None,
            role: "follower",
            term,
            leader_id,
            leader: Some(format!("n{leader_id}")),
            applied_index: 0,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_and_each_leader_change() {
        let s = Samples::default();
        for i in 0..(SAMPLES_MAX as u64 + 10) {
            let (leader, term) = if i < 5 { (1, 2) } else { (3, 4) };
            s.push(at(leader, term, i));
        }
        let v = s.view();
        assert_eq!(v.samples.len(), SAMPLES_MAX);
        assert_eq!(v.samples[0].at_ms, 10);
        assert_eq!(v.samples.last().unwrap().at_ms, SAMPLES_MAX as u64 + 9);
        let changes: Vec<(u64, u64, u64)> = v
            .leader_changes
            .iter()
            .map(|c| (c.at_ms, c.leader_id, c.term))
            .collect();
        assert_eq!(changes, vec![(0, 1, 2), (5, 3, 4)]);
        for i in 0..(LEADER_CHANGES_MAX as u64 + 5) {
            s.push(at(1, 10 + i, 1_000 + i));
        }
        assert_eq!(s.view().leader_changes.len(), LEADER_CHANGES_MAX);
    }
}
