//! What a run counts, for its report and the soak summaries.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub nodes: usize,
    pub reads_by_lease: bool,
    pub writes_acked: u64,
    pub writes_open: u64,
    pub writes_refused: u64,
    pub reads_consistent: u64,
    pub reads_stale: u64,
    pub reads_refused: u64,
    pub crashes: u64,
    pub power_losses: u64,
    pub disk_errors: u64,
    pub partitions: u64,
    pub messages: u64,
    pub messages_dropped: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub final_index: u64,
    /// [`Scenario::SlowLeaderCutOff`]: when the cut began (0: never).
    pub cutoff_at_ms: u64,
    /// Writes other nodes acknowledged during the cut.
    pub cutoff_writes_acked: u64,
    /// Consistent reads the cut-off leader answered during the cut.
    pub cutoff_reads_answered: u64,
    /// Of those, the ones answered after another node had acknowledged a
    /// write during the cut: each misses that write.
    pub cutoff_reads_after_new_write: u64,
    /// Process pauses (random faults and [`Scenario::LeaderPause`]).
    pub pauses: u64,
    /// [`Scenario::LeaderPause`]: pauses during which another node
    /// acknowledged a write.
    pub pauses_with_new_write: u64,
    /// Consistent reads sent to a paused leader after such a write, and
    /// of those the ones it answered (rather than refused) on resuming.
    pub pause_reads_sent: u64,
    pub pause_reads_answered: u64,
    /// [`Scenario::FollowerCuts`]: followers cut off, one at a time.
    pub follower_cuts: u64,
    /// Links that lost messages to a cut and came back after the heal, once
    /// their sender dialled again (`Scenario::FollowerCuts`).
    pub links_stalled: u64,
    /// [`Scenario::FollowerCuts`]: the longest stretch with no write
    /// acknowledged, from the first cut to the end of the workload.
    pub longest_write_gap_ms: u64,
    /// [`Scenario::FollowerCuts`]: times the leader, which kept a quorum
    /// throughout, was seen not leading in its term.
    pub leader_step_downs: u64,
    /// Writes sent again with their session stamp after a refusal or an
    /// unknown outcome.
    pub writes_resent: u64,
    /// Requests sent through a node's request layer (`SimServer`), and of
    /// those the ones answered before the client gave up.
    pub requests_via_server: u64,
    pub answers_via_server: u64,
    /// Requests left by their clients that ran to their end.
    pub orphans_ended: u64,
    /// Membership changes among the random faults (`sim/membership.rs`):
    /// members removed, added back as learners, promoted; and changes
    /// changes sent again (no leader, no answer, a learner behind).
    pub members_removed: u64,
    pub learners_added: u64,
    pub learners_promoted: u64,
    pub membership_retried: u64,
    /// [`Scenario::WipeWithLaggingVoter`]: disks wiped, and writes
    /// acknowledged by the bare quorum while the lagging voters were cut
    /// off (each one is lost if the wiped node votes with an empty log).
    pub wipes: u64,
    pub lagging_writes_acked: u64,
    /// Fenced writes acknowledged as applied, refused as `Fenced`, and
    /// times every lock key was deleted (the lock expired).
    pub fenced_writes_acked: u64,
    pub fenced_writes_refused: u64,
    pub lock_expiries: u64,
    /// Watchers (`sim/watchers.rs`): watches registered, resumed after
    /// their node went down, ended `Compacted` or `SlowConsumer`, and the
    /// events received.
    pub watches_started: u64,
    pub watches_resumed: u64,
    pub watches_compacted: u64,
    pub watches_slow: u64,
    pub watch_events: u64,
    /// With leases (`sim/leases.rs`): requests the holders sent, leases
    /// granted to them, keep-alives acknowledged, keys attached; leases
    /// ended by the leader's expiry and by a holder's revoke.
    pub lease_requests: u64,
    pub leases_granted: u64,
    pub lease_keep_alives_acked: u64,
    pub lease_keys_attached: u64,
    pub leases_expired: u64,
    pub leases_revoked: u64,
}
