//! Bugs planted on purpose, for the simulator (crates/nacre-sim) to show
//! that its checks fail when the code is wrong. They exist only with the
//! crate's `sim` feature, which the `nacre` binary never turns on; without
//! it the helpers below answer "off" and the loop's code paths read as if
//! there were no bugs to plant.

#[cfg(feature = "sim")]
use std::collections::HashMap;

use super::Node;

/// Bugs the simulator can switch on in one node. Per node rather than a
/// global, so simulations of the correct build can run alongside in one
/// test process. Everything is off by default.
#[cfg(feature = "sim")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// A follower answers a consistent read at once with its own applied
    /// index, skipping the leadership check.
    pub follower_reads: bool,
    /// The tlog is never fsynced after an append: writes are acknowledged
    /// (and acknowledged to the leader) before they are durable.
    pub ack_before_fsync: bool,
    /// The lease as it was before it had a clock: counted in ticks from
    /// when a quorum's replies arrived. Ticks stop while the process is
    /// stopped, so a leader resumed after a pause still believes it.
    pub tick_lease: bool,
    /// The peer transport as it was until 2026-12: its receiver
    /// acknowledged nothing, so a connection that a partition dropping
    /// packets had stalled was not noticed, and carried messages again
    /// only when TCP retransmitted ([`stalled_link_back_at_us`]). The node
    /// does not read this: the simulator, which has no sockets, asks its
    /// network model to bring links back this way.
    pub stalled_links: bool,
    /// A node that finds its data directory empty bootstraps a new
    /// cluster from its initial members at once, as before it asked them
    /// first: one that lost its data comes back as a voter with an empty
    /// log, and can elect a leader that misses committed writes.
    pub bootstrap_anyway: bool,
    /// Lease deadlines fall an election timeout short of the TTL (as if
    /// the leader took the fail-over allowance off the TTL instead of
    /// adding it): a lease ends before its TTL has run since its last
    /// renewal.
    pub lease_short_ttl: bool,
}

/// With [`Planted::stalled_links`]: when a connection that first lost a
/// packet to a partition at `stalled_at_us` carries messages again, the
/// partition having healed at `healed_at_us`. TCP retransmits the oldest
/// unacknowledged packet 200 ms after it was sent (Linux's minimum
/// retransmission timeout), then after twice as long each time, and the
/// connection delivers again at the first retransmission after the heal.
/// (Where a partition closed connections instead, the old transport
/// redialled after a backoff of up to 2 s, which this does not model.)
#[cfg(feature = "sim")]
pub fn stalled_link_back_at_us(stalled_at_us: u64, healed_at_us: u64) -> u64 {
    let mut rto_us = 200_000u64;
    let mut at = stalled_at_us + rto_us;
    while at < healed_at_us {
        rto_us = rto_us.saturating_mul(2);
        at = at.saturating_add(rto_us);
    }
    at
}

/// What the planted bugs track while the node runs; nothing without the
/// `sim` feature.
#[derive(Default)]
pub(super) struct PlantedState {
    /// When (in ticks) each peer was last heard from, for the tick-counted
    /// lease.
    #[cfg(feature = "sim")]
    last_heard: HashMap<u64, u64>,
}

#[cfg(feature = "sim")]
impl Node {
    pub(super) fn planted_follower_reads(&self) -> bool {
        self.opts.planted.follower_reads
    }

    pub(super) fn planted_ack_before_fsync(&self) -> bool {
        self.opts.planted.ack_before_fsync
    }

    pub(super) fn planted_lease_short_ttl(&self) -> bool {
        self.opts.planted.lease_short_ttl
    }

    /// With `Planted::tick_lease`, whether the planted lease holds.
    pub(super) fn planted_lease_valid(&self) -> Option<bool> {
        self.opts
            .planted
            .tick_lease
            .then(|| self.tick_lease_valid())
    }

    pub(super) fn planted_heard_from(&mut self, peer: u64) {
        self.planted.last_heard.insert(peer, self.ticks);
    }

    /// The planted bug (`Planted::tick_lease`): the lease as it was, a
    /// quorum of voters heard from within E/2 - 1 ticks, counted from when
    /// their replies arrived.
    fn tick_lease_valid(&self) -> bool {
        let lease_ticks = (self.opts.election_ticks as u64 / 2)
            .saturating_sub(1)
            .max(1);
        let voters = self.raw.raft.prs().conf().voters().ids();
        let quorum = voters.len() / 2 + 1;
        let fresh = voters
            .iter()
            .filter(|id| {
                *id == self.opts.id
                    || self
                        .planted
                        .last_heard
                        .get(id)
                        .is_some_and(|t| self.ticks - t < lease_ticks)
            })
            .count();
        fresh >= quorum
    }
}

#[cfg(not(feature = "sim"))]
impl Node {
    pub(super) fn planted_follower_reads(&self) -> bool {
        false
    }

    pub(super) fn planted_ack_before_fsync(&self) -> bool {
        false
    }

    pub(super) fn planted_lease_short_ttl(&self) -> bool {
        false
    }

    pub(super) fn planted_lease_valid(&self) -> Option<bool> {
        None
    }

    pub(super) fn planted_heard_from(&mut self, _peer: u64) {}
}
