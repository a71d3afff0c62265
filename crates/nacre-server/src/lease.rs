//! The leader lease: how long a leader may answer consistent reads without
//! asking a quorum, measured on its own monotonic clock.
//!
//! A lease is established by a round of heartbeats that a quorum of voters
//! acknowledged (a raft read-index round, with a context of ours). Its
//! start is the time the round was *sent*, read from the clock before the
//! messages left: every follower that acknowledged heard this leader after
//! that instant. Such a follower neither campaigns nor votes for anyone
//! else (check-quorum's rule) until its election timer has counted
//! `election_ticks` ticks; its loop may fire one late tick at once after a
//! stall but never runs ahead of its schedule, so that takes at least
//! `(election_ticks - 2)` tick periods of its clock. No other leader can
//! be elected without one of those followers, so none exists before the
//! lease ends if the lease is that long divided by the bound on how much
//! faster one node's clock may run than another's
//! ([`LEASE_CLOCK_RATE_BOUND`]).
//!
//! Validity is decided against the clock read when a read is served, never
//! a tick count: ticks stop while a process is stopped, real time does not,
//! and a leader resumed after a pause must see that its lease ran out.

/// How much faster than another node's clock a node's clock may run, at
/// most, for the lease to stay safe. Clock rates of real hosts differ by
/// parts per million; 2 leaves room for a VM whose clock is steered hard.
pub const LEASE_CLOCK_RATE_BOUND: u64 = 2;

/// One leader's lease. Plain state: the node asks it, with the time.
#[derive(Debug, Clone)]
pub struct Lease {
    duration_us: u64,
    /// The term of the lease and when (leader clock) its newest confirmed
    /// round was sent.
    held: Option<(u64, u64)>,
    /// A term in which this leader began handing leadership over. The
    /// transferee campaigns with a flag that makes followers vote despite
    /// having heard the leader, so no lease holds for the rest of it.
    transfer_term: Option<u64>,
}

impl Lease {
    /// The lease length for a cluster whose nodes tick every `tick_ms` and
    /// wait `election_ticks` ticks before an election (module doc).
    pub fn duration_us(election_ticks: usize, tick_ms: u64) -> u64 {
        let follower_wait_us = election_ticks.saturating_sub(2) as u64 * tick_ms * 1_000;
        follower_wait_us / LEASE_CLOCK_RATE_BOUND
    }

    pub fn new(duration_us: u64) -> Lease {
        Lease {
            duration_us,
            held: None,
            transfer_term: None,
        }
    }

    pub fn length_us(&self) -> u64 {
        self.duration_us
    }

    /// A quorum acknowledged a round sent at `sent_us` in `term`.
    pub fn confirmed(&mut self, term: u64, sent_us: u64) {
        if self.transfer_term == Some(term) {
            return;
        }
        self.held = match self.held {
            Some((t, start)) if t == term => Some((term, start.max(sent_us))),
            Some((t, _)) if t > term => self.held,
            _ => Some((term, sent_us)),
        };
    }

    /// How long the lease still runs at `now_us` for a leader in `term`
    /// (0: it does not hold).
    pub fn remaining_us(&self, term: u64, now_us: u64) -> u64 {
        match self.held {
            Some((t, start)) if t == term && self.transfer_term != Some(term) => {
                (start + self.duration_us).saturating_sub(now_us)
            }
            _ => 0,
        }
    }

    pub fn valid(&self, term: u64, now_us: u64) -> bool {
        self.remaining_us(term, now_us) > 0
    }

    /// Forgets the lease (leadership lost, or the voters changed).
    pub fn revoke(&mut self) {
        self.held = None;
    }

    /// This leader starts handing leadership over in `term`.
    pub fn transfer_started(&mut self, term: u64) {
        self.transfer_term = Some(term);
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lease_is_half_of_what_a_follower_waits() {
        // 10 ticks of 50 ms: a follower waits at least 8 tick periods.
        assert_eq!(Lease::duration_us(10, 50), 200_000);
        assert_eq!(Lease::duration_us(2, 50), 0);
    }

    #[test]
    fn a_lease_runs_from_when_its_round_was_sent() {
        let mut l = Lease::new(1_000);
        assert!(!l.valid(3, 0));
        l.confirmed(3, 10_000);
        assert!(l.valid(3, 10_999));
        assert_eq!(l.remaining_us(3, 10_400), 600);
        // Measured by the clock, however few ticks passed: a pause ends it.
        assert!(!l.valid(3, 11_000));
        assert!(!l.valid(3, 500_000));
    }

    #[test]
    fn an_older_round_never_moves_the_start_back() {
        let mut l = Lease::new(1_000);
        l.confirmed(3, 10_000);
        l.confirmed(3, 9_000);
        assert!(l.valid(3, 10_900));
        l.confirmed(3, 10_500);
        assert!(l.valid(3, 11_400));
    }

    #[test]
    fn a_lease_belongs_to_its_term() {
        let mut l = Lease::new(1_000);
        l.confirmed(3, 10_000);
        assert!(!l.valid(4, 10_100));
        // A round of an older term confirms nothing for a newer lease.
        l.confirmed(4, 10_000);
        l.confirmed(3, 10_500);
        assert!(!l.valid(4, 11_100));
        assert!(l.valid(4, 10_900));
    }

    #[test]
    fn revoking_or_transferring_ends_the_lease() {
        let mut l = Lease::new(1_000);
        l.confirmed(3, 10_000);
        l.revoke();
        assert!(!l.valid(3, 10_100));
        l.confirmed(3, 10_200);
        assert!(l.valid(3, 10_300));
        l.transfer_started(3);
        assert!(!l.valid(3, 10_300));
        // Not again in that term, even after a quorum round.
        l.confirmed(3, 10_400);
        assert!(!l.valid(3, 10_500));
        // A later term (leading again) starts clean.
        l.confirmed(5, 20_000);
        assert!(l.valid(5, 20_500));
    }
}
