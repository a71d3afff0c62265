//! Every metric family `/metrics` exports: its name, type, unit, labels
//! and help, in one list. The collector writes each of them on every
//! scrape (a family whose labels have no values yet still gets its HELP
//! and TYPE lines), the tests check their names against Prometheus'
//! conventions, and docs/operations.md lists the same names (a test
//! compares them).

/// What Prometheus is told a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    /// The full name as scraped (counters with their `_total`).
    pub name: &'static str,
    pub kind: Kind,
    /// The unit the name ends with (before `_total`), or "" for a count.
    pub unit: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

impl Family {
    /// The name without `_total`: `prometheus-client`'s encoder appends it
    /// to counters itself.
    pub fn stem(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Gauge | Kind::Histogram => self.name,
        }
    }
}

macro_rules! families {
    ($($id:ident: $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal;)*) => {
        $(pub const $id: Family = Family {
            name: $name,
            kind: Kind::$kind,
            unit: $unit,
            labels: &[$($label),*],
            help: $help,
        };)*
        /// Every family, in the order a scrape writes them.
        pub const ALL: &[&Family] = &[$(&$id),*];
    };
}

families! {
    BUILD_INFO: "nacre_build_info", Gauge, "", ["version"],
        "Always 1: the node's version is in the label";
    UPTIME: "nacre_uptime_seconds", Gauge, "seconds", [],
        "Time since the node started serving";
    HEALTHY: "nacre_healthy", Gauge, "", [],
        "1 when /health answers 200 (a leader heard from, bounded apply lag), else 0";

    REQUEST_DURATION: "nacre_request_duration_seconds", Histogram, "seconds", ["op", "outcome"],
        "Client requests of the native protocol, from decoded to answered, by op and outcome (ok or the error code)";
    ETCD_REQUEST_DURATION: "nacre_etcd_request_duration_seconds", Histogram, "seconds", ["method", "code"],
        "Calls of the etcd v3 API by method and gRPC code, to the response's headers (a stream: to its start)";
    CONNECTIONS: "nacre_connections", Gauge, "", [],
        "Client connections open (past their handshake)";
    CONNECTIONS_LIMIT: "nacre_connections_limit", Gauge, "", [],
        "connections_max: connections past it are refused busy";
    CONNECTIONS_ACCEPTED: "nacre_connections_accepted_total", Counter, "", [],
        "Client connections that completed their handshake";
    CONNECTIONS_REFUSED: "nacre_connections_refused_total", Counter, "", [],
        "Client connections refused for being over connections_max";
    BLOCKING_TASKS: "nacre_blocking_tasks", Gauge, "", [],
        "Reads of many pages and script runs on the blocking pool now";
    BLOCKING_TASKS_LIMIT: "nacre_blocking_tasks_limit", Gauge, "", [],
        "blocking_tasks_max: more wait for a permit";

    RAFT_TERM: "nacre_raft_term", Gauge, "", [],
        "The node's raft term";
    RAFT_IS_LEADER: "nacre_raft_is_leader", Gauge, "", [],
        "1 while this node leads, else 0";
    RAFT_LEADER_CHANGES: "nacre_raft_leader_changes_total", Counter, "", [],
        "Terms in which this node learnt of a leader (itself or another)";
    RAFT_COMMIT_INDEX: "nacre_raft_commit_index", Gauge, "", [],
        "The highest log index known committed";
    RAFT_APPLIED_INDEX: "nacre_raft_applied_index", Gauge, "", [],
        "The highest log index applied to the state machine";
    RAFT_APPLY_LAG: "nacre_raft_apply_lag_entries", Gauge, "entries", [],
        "Commit index minus applied index: entries committed but not yet applied";
    TLOG_FIRST_INDEX: "nacre_tlog_first_index", Gauge, "", [],
        "The first index the tlog still holds (older ones are in the store's checkpoint)";
    TLOG_LAST_INDEX: "nacre_tlog_last_index", Gauge, "", [],
        "The last index in the tlog";
    RAFT_PROPOSALS: "nacre_raft_proposals_total", Counter, "", [],
        "Writes this node proposed as leader";
    RAFT_QUEUED: "nacre_raft_queued_requests", Gauge, "", [],
        "Client requests queued for the raft loop, not yet taken";
    RAFT_QUEUED_LIMIT: "nacre_raft_queued_requests_limit", Gauge, "", [],
        "proposals_pending_max: the queue's bound (shared with peer messages); past it requests are refused busy";
    TLOG_APPEND: "nacre_tlog_append_duration_seconds", Histogram, "seconds", [],
        "Appending one Ready's entries to the tlog (before the fsync)";
    TLOG_FSYNC: "nacre_tlog_fsync_duration_seconds", Histogram, "seconds", [],
        "One fsync of the tlog (one per Ready that wrote, shared by every write in it)";
    RAFT_APPLY: "nacre_raft_apply_duration_seconds", Histogram, "seconds", [],
        "Applying one batch of committed entries to the state machine";
    RAFT_APPLIED_ENTRIES: "nacre_raft_applied_entries_total", Counter, "entries", [],
        "Normal entries applied (the apply histogram counts batches)";
    REPLICATION_LAG: "nacre_raft_replication_lag_entries", Gauge, "entries", ["peer"],
        "Entries of the leader's log a member has yet to receive; exported by the leader only";
    READ_ROUNDS: "nacre_raft_read_rounds_total", Counter, "", ["by"],
        "Consistent-read rounds, confirmed by the leader lease or by a quorum round";
    SNAPSHOTS_SENT: "nacre_raft_snapshots_sent_total", Counter, "", [],
        "Snapshots this node sent to a member, acknowledged";
    SNAPSHOTS_INSTALLED: "nacre_raft_snapshots_installed_total", Counter, "", [],
        "Snapshots this node received and installed";
    CHECKPOINTS: "nacre_checkpoints_total", Counter, "", [],
        "Checkpoints: the store made durable and the tlog trimmed behind it";

    STORE_DISK: "nacre_store_disk_bytes", Gauge, "bytes", [],
        "Bytes in all of the store's segment files";
    STORE_LIVE: "nacre_store_live_bytes", Gauge, "bytes", [],
        "Bytes reachable from the store's current root (the rest is for the cleaner)";
    STORE_SEGMENTS: "nacre_store_segments", Gauge, "", [],
        "Segment files of the store";
    STORE_SNAPSHOTS: "nacre_store_snapshots", Gauge, "", [],
        "Named snapshots the store keeps";
    STORE_KEYS: "nacre_store_keys", Gauge, "", [],
        "Keys in the store, the node's own records included";
    STORE_CACHE: "nacre_store_cache_bytes", Gauge, "bytes", [],
        "Bytes of pages in the store's cache";
    STORE_CACHE_HITS: "nacre_store_cache_hits_total", Counter, "", [],
        "Page reads served from the cache";
    STORE_CACHE_MISSES: "nacre_store_cache_misses_total", Counter, "", [],
        "Page reads that went to disk";
    STORE_COMMITS: "nacre_store_commits_total", Counter, "", [],
        "Write transactions committed to the store";
    STORE_FSYNCS: "nacre_store_fsyncs_total", Counter, "", [],
        "fsyncs of the store's segment files";
    STORE_CLEANED: "nacre_store_cleaned_segments_total", Counter, "", [],
        "Segments the cleaner emptied and removed";
    STORE_RELOCATED: "nacre_store_relocated_bytes_total", Counter, "bytes", [],
        "Live bytes the cleaner copied out of segments it cleaned";
    STORE_STALLS: "nacre_store_cleaner_stalls_total", Counter, "", [],
        "Write transactions that waited for the cleaner";
    STORE_STALLED: "nacre_store_cleaner_stalled_seconds_total", Counter, "seconds", [],
        "Time write transactions spent waiting for the cleaner";
    STORE_POISONED: "nacre_store_poisoned", Gauge, "", [],
        "1 once an I/O failure stopped the store's writes until a restart";
    STORE_CLEANER_FAILED: "nacre_store_cleaner_failed", Gauge, "", [],
        "1 when the cleaner's last run failed (its error is in /status)";

    WATCHES: "nacre_watches", Gauge, "", [],
        "Watches open on this node (native and etcd API)";
    WATCHES_LIMIT: "nacre_watches_limit", Gauge, "", [],
        "watches_max: more are refused busy";
    WATCH_EVENTS: "nacre_watch_events_sent_total", Counter, "", [],
        "Change events delivered to watches";
    WATCHES_ENDED_SLOW: "nacre_watches_ended_slow_total", Counter, "", [],
        "Watches ended because their consumer fell too far behind";

    LEASES: "nacre_leases", Gauge, "", [],
        "Leases whose deadlines this node keeps (non-zero on the leader only)";
    LEASES_LIMIT: "nacre_leases_limit", Gauge, "", [],
        "leases_max: grants past it are refused busy";
    LEASES_EXPIRED: "nacre_leases_expired_total", Counter, "", [],
        "Revokes this node proposed for leases past their deadline";
    LEASE_KEEP_ALIVES: "nacre_lease_keep_alives_total", Counter, "", [],
        "Lease keep-alive requests this node answered as leader";

    SCRIPT_RUNS: "nacre_script_runs_total", Counter, "", [],
        "Runs of script functions (a call that lost a race runs again)";
    SCRIPT_RUN_DURATION: "nacre_script_run_duration_seconds", Histogram, "seconds", [],
        "One run of a script function in the sandbox (without its proposal)";
    SCRIPT_BUDGET_EXCEEDED: "nacre_script_budget_exceeded_total", Counter, "", [],
        "Script runs stopped for going over their instruction or memory budget";
    SCRIPT_CONFLICTS: "nacre_script_conflicts_total", Counter, "", [],
        "Script runs whose writes were refused because a concurrent write changed what they read (the call runs again, up to 64 runs)";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units that may appear in a name; a name with one of them must
    /// declare it, so no unit hides in a name without the rule seeing it.
    const UNITS: [&str; 3] = ["seconds", "bytes", "entries"];

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut names: Vec<&str> = ALL.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is used twice");
        for f in ALL {
            let n = f.name;
            assert!(n.starts_with("nacre_"), "{n}: no nacre_ prefix");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}: not snake case"
            );
            assert_eq!(
                f.kind == Kind::Counter,
                n.ends_with("_total"),
                "{n}: counters, and only counters, end in _total"
            );
            if f.kind == Kind::Histogram {
                assert_eq!(f.unit, "seconds", "{n}: histograms here measure time");
            }
            let stem = n.strip_suffix("_total").unwrap_or(n);
            if !f.unit.is_empty() {
                assert!(UNITS.contains(&f.unit), "{n}: unit {}", f.unit);
                assert!(stem.ends_with(&format!("_{}", f.unit)), "{n}: unit last");
            }
            for u in UNITS {
                if stem.split('_').any(|w| w == u) {
                    assert_eq!(f.unit, u, "{n} names a unit it does not declare");
                }
            }
            assert!(!f.labels.contains(&"le"), "{n}: le is the bucket label");
            assert!(!f.help.is_empty() && !f.help.ends_with('.'), "{n}: help");
        }
    }

    #[test]
    fn the_stem_drops_only_a_counters_total() {
        assert_eq!(RAFT_PROPOSALS.stem(), "nacre_raft_proposals");
        assert_eq!(RAFT_TERM.stem(), "nacre_raft_term");
    }
}
