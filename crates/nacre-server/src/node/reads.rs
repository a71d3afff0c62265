//! Consistent reads: every read of one loop turn shares one read index,
//! answered from the leader lease (`crate::lease`, on `crate::clock`) or
//! by a read-index round to a quorum, and is released once applied.

use std::sync::atomic::Ordering;

use raft::StateRole;
use tokio::sync::oneshot;

use super::{Node, ReadReply};

/// A read-index round in flight: raft answers it with a read state once a
/// quorum acknowledged the heartbeats carrying its context.
pub(super) struct ReadRound {
    /// The tick count when asked (raft drops a round silently on a leader
    /// change, so an old one is asked again).
    asked_tick: u64,
    /// The clock when asked, before its heartbeats left: where a lease
    /// confirmed by this round starts.
    sent_us: u64,
    term: u64,
    /// Empty for a round that only renews the lease.
    pub(super) waiters: Vec<oneshot::Sender<ReadReply>>,
}

impl Node {
    /// Every read that arrived since the last call is served by the lease
    /// at once, or shares one read-index round.
    pub(super) fn ask_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        if self.raw.raft.state != StateRole::Leader {
            let planted_applied = self.planted_follower_reads().then(|| self.sm.applied().0);
            for r in std::mem::take(&mut self.reads_new) {
                let _ = r.send(match planted_applied {
                    Some(applied) => Ok(applied),
                    None => Err(self.leader_hint()),
                });
            }
            return;
        }
        // A new leader knows the commit index only once an entry of its own
        // term commits; raft drops read-index requests until then, so they
        // wait here.
        if !self.raw.raft.commit_to_current_term() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_new);
        // The clock is read now, after these reads were taken off the
        // queue: a lease that held then held when each of them began.
        if self.opts.reads_by_lease && self.lease_valid() {
            self.status
                .read_rounds_by_lease
                .fetch_add(1, Ordering::Relaxed);
            let index = self.raw.raft.raft_log.committed;
            self.reads_ready
                .extend(reads.into_iter().map(|r| (index, r)));
            return;
        }
        // Without a lease the round goes to a quorum, which a deposed or
        // cut-off leader cannot get; its answer also renews the lease.
        self.status
            .read_rounds_by_quorum
            .fetch_add(1, Ordering::Relaxed);
        self.ask_round(reads);
    }

    /// Sends a read-index round (heartbeats carrying a fresh context).
    pub(super) fn ask_round(&mut self, waiters: Vec<oneshot::Sender<ReadReply>>) -> u64 {
        let ctx = self.read_ctx_next;
        self.read_ctx_next += 1;
        let round = ReadRound {
            asked_tick: self.ticks,
            sent_us: self.opts.clock.now_us(),
            term: self.raw.raft.term,
            waiters,
        };
        self.reads_asked.insert(ctx, round);
        self.raw.read_index(ctx.to_le_bytes().to_vec());
        ctx
    }

    /// Whether this leader may answer reads from its lease now.
    pub(super) fn lease_valid(&self) -> bool {
        if let Some(valid) = self.planted_lease_valid() {
            return valid;
        }
        let term = self.raw.raft.term;
        self.lease.valid(term, self.opts.clock.now_us())
    }

    /// Keeps the lease from running out while this node leads: once less
    /// than half of it is left, one round (at most one in flight) renews
    /// it. A round costs a heartbeat to each peer, every half lease.
    pub(super) fn renew_lease(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        if !self.opts.reads_by_lease || !leader || self.renewal.is_some() {
            return;
        }
        if !self.raw.raft.commit_to_current_term() {
            return;
        }
        let left_us = self
            .lease
            .remaining_us(self.raw.raft.term, self.opts.clock.now_us());
        if left_us < self.lease.length_us() / 2 {
            self.renewal = Some(self.ask_round(Vec::new()));
        }
    }

    /// A read state came back: the round's reads may proceed at `index`,
    /// and a quorum heard this leader after the round was sent.
    pub(super) fn round_answered(&mut self, ctx: u64, index: u64) {
        let Some(round) = self.reads_asked.remove(&ctx) else {
            return;
        };
        if self.renewal == Some(ctx) {
            self.renewal = None;
        }
        if self.raw.raft.state == StateRole::Leader && round.term == self.raw.raft.term {
            self.lease.confirmed(round.term, round.sent_us);
        }
        self.reads_ready
            .extend(round.waiters.into_iter().map(|w| (index, w)));
    }

    /// Rounds that got no answer within an election timeout are given up:
    /// their reads go back in the queue (and fail there if this node is no
    /// longer the leader), a renewal is asked again.
    pub(super) fn retry_stale_reads(&mut self) {
        let limit = self.opts.election_ticks as u64;
        let ticks = self.ticks;
        let stale: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, r)| ticks - r.asked_tick > limit)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if self.renewal == Some(ctx) {
                self.renewal = None;
            }
            if let Some(round) = self.reads_asked.remove(&ctx) {
                self.reads_new.extend(round.waiters);
            }
        }
    }
}
