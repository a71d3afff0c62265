//! What `/metrics` exports (docs/operations.md, "Metrics"), in the
//! Prometheus text format.
//!
//! Figures the node already keeps as atomics (its [`Status`], the client
//! listener's counters, the watch hub's, the store's statistics) are read
//! when a scrape comes, not counted twice. What only metrics need lives in
//! [`NodeMetrics`], inside the node's `Status`, so that the raft loop and
//! the request layer record into it whether or not an HTTP listener
//! exists (the simulator runs nodes without one).
//!
//! | module | one job |
//! |---|---|
//! | `catalogue.rs` | every family: name, type, unit, labels, help |
//! | `histogram.rs` | a latency histogram in atomics: no lock per observation |
//! | `requests.rs` | request latency by op and outcome, in a fixed array |
//! | `etcd.rs` | the etcd API's calls by method and gRPC code, in a fixed array |
//! | `collect.rs` | a scrape: read every figure and encode it |
//!
//! [`Status`]: crate::node::Status

pub mod catalogue;
mod collect;
pub mod etcd;
pub mod histogram;
pub mod requests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(crate) use collect::{render, CONTENT_TYPE};
pub use histogram::Histogram;
pub use requests::{Op, RequestMetrics};

/// The figures kept for metrics alone, recorded by the raft loop, the
/// request layer and the script runner.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Client requests, by op and outcome.
    pub requests: RequestMetrics,
    /// Calls of the etcd v3 API, by method and gRPC code.
    pub etcd_calls: etcd::EtcdCallMetrics,
    /// One append of a Ready's entries to the tlog.
    pub tlog_append: Histogram,
    /// One fsync of the tlog.
    pub tlog_fsync: Histogram,
    /// One batch of committed entries applied.
    pub apply: Histogram,
    /// Normal entries applied.
    pub applied_entries: AtomicU64,
    /// Terms in which a leader became known ([`NodeMetrics::leader_seen`]).
    pub leader_changes: AtomicU64,
    /// The last term counted in `leader_changes`.
    leader_term: AtomicU64,
    /// Client requests queued for the raft loop and not yet taken.
    pub raft_queued: AtomicU64,
    /// Runs of script functions, and their time in the sandbox.
    pub script_runs: AtomicU64,
    pub script_run: Histogram,
    pub script_budget_exceeded: AtomicU64,
    pub script_conflicts: AtomicU64,
}

impl NodeMetrics {
    /// Counts a leader change when `leader` (0: none) is the first leader
    /// seen in `term`: at most one leader per term, so this counts the
    /// elections this node learnt of, a re-elected leader included.
    /// Called by the raft loop only.
    pub fn leader_seen(&self, term: u64, leader: u64) {
        if leader != 0 && term > self.leader_term.load(Ordering::Relaxed) {
            self.leader_term.store(term, Ordering::Relaxed);
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A client request was queued for the raft loop.
    pub fn queued(&self) {
        self.raft_queued.fetch_add(1, Ordering::Relaxed);
    }

    /// The raft loop took a client request off its queue.
    pub fn dequeued(&self) {
        // Never below zero, even if a message were taken that was not
        // counted in: the figure is a gauge for people, not an invariant.
        let _ = self
            .raft_queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Times `work` into `h`.
pub fn timed<T>(h: &Histogram, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = work();
    h.observe(started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_change_is_counted_once_per_term() {
        let m = NodeMetrics::default();
        m.leader_seen(1, 0); // an election under way: no leader yet
        m.leader_seen(2, 7);
        m.leader_seen(2, 7); // the same leader, published again
        m.leader_seen(3, 0);
        m.leader_seen(3, 7); // re-elected in a new term
        m.leader_seen(4, 9);
        assert_eq!(m.leader_changes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_queue_gauge_never_goes_below_zero() {
        let m = NodeMetrics::default();
        m.queued();
        m.dequeued();
        m.dequeued();
        assert_eq!(m.raft_queued.load(Ordering::Relaxed), 0);
    }
}
