//! The planted bugs the simulator can switch on, and their names on the
//! command line (docs/testing.md, "Planted bugs").

/// A deliberate bug to switch on in every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Followers answer consistent reads from their own state.
    FollowerReads,
    /// Writes are acknowledged (to clients and to the leader) before the
    /// tlog is fsynced.
    AckBeforeFsync,
    /// The state machine ignores batch guards.
    SkipGuard,
    /// A session-stamped write resent by its client applies again instead
    /// of being answered with its first outcome.
    SkipSessions,
    /// The leader lease is counted in ticks, which stop while a process
    /// is paused (`Planted::tick_lease`).
    TickLease,
    /// The peer transport as it was: a connection a partition stalled is
    /// not noticed and comes back only when TCP retransmits
    /// (`Planted::stalled_links`; only `Scenario::FollowerCuts` models
    /// connections).
    StalledLinks,
    /// The request layer serves consistent reads from the node's own
    /// state, skipping the read barrier (`SimServer::new`'s
    /// `skip_read_barrier`; only requests through the layer meet it).
    LayerSkipsBarrier,
    /// A node with an empty data directory bootstraps a new cluster from
    /// its config at once, without asking the others whether the cluster
    /// exists (`Planted::bootstrap_anyway`).
    BootstrapAnyway,
    /// The state machine ignores `LockHeld` guards: a stalled former lock
    /// holder's fenced writes apply (`StateMachine::plant_skip_fence`).
    SkipFence,
    /// A watch that resumes from a revision (after its node went away,
    /// or it moved) never gets that revision's changes
    /// (`WatchHub::plant_skip_resumed`).
    WatchSkipsEvent,
    /// A watch that resumes from a revision gets the revision before it
    /// (which it had) again (`WatchHub::plant_repeat_resumed`).
    WatchRepeatsRevision,
    /// Lease deadlines fall an election timeout short of the TTL
    /// (`Planted::lease_short_ttl`; only runs with leases meet it).
    LeaseShortTtl,
}

impl std::str::FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Bug, String> {
        match s {
            "follower-reads" => Ok(Bug::FollowerReads),
            "ack-before-fsync" => Ok(Bug::AckBeforeFsync),
            "skip-guard" => Ok(Bug::SkipGuard),
            "skip-sessions" => Ok(Bug::SkipSessions),
            "tick-lease" => Ok(Bug::TickLease),
            "stalled-links" => Ok(Bug::StalledLinks),
            "layer-skips-barrier" => Ok(Bug::LayerSkipsBarrier),
            "bootstrap-anyway" => Ok(Bug::BootstrapAnyway),
            "skip-fence" => Ok(Bug::SkipFence),
            "watch-skips-event" => Ok(Bug::WatchSkipsEvent),
            "watch-repeats-revision" => Ok(Bug::WatchRepeatsRevision),
            "lease-short-ttl" => Ok(Bug::LeaseShortTtl),
            _ => Err(format!(
                "unknown bug {s:?} (follower-reads, ack-before-fsync, skip-guard, skip-sessions, \
                 tick-lease, stalled-links, layer-skips-barrier, bootstrap-anyway, skip-fence, \
                 watch-skips-event, watch-repeats-revision, lease-short-ttl)"
            )),
        }
    }
}
