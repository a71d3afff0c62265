//! Whether a node is healthy: the one judgement behind the admin
//! listener's `/health` and `/ready` and the native protocol's `ping`
//! (docs/operations.md), so that a load balancer, Prometheus and an
//! operator at the CLI never disagree about a node.
//!
//! A node is healthy when it knows a leader, has heard from it within one
//! election timeout (a leader counts as hearing from itself: with
//! check-quorum it steps down within an election timeout of losing its
//! quorum), and its applied index lags its commit index by at most
//! `health_apply_lag_max_entries`. It is ready when it is healthy and
//! neither creating its cluster nor stopped: it would serve a client's
//! request now.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::node::NodeHandle;
use crate::ServerConfig;

/// Why a node is not healthy, as `/health` reports it in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unhealthy {
    /// The raft loop has ended: the node is shutting down or failed.
    Stopped,
    /// The node waits for the other initial members to create the cluster.
    Creating,
    /// No leader is known in the current term.
    NoLeader,
    /// The leader was last heard from longer ago than an election timeout.
    LeaderSilent,
    /// The applied index lags the commit index by more than the bound.
    ApplyLag,
}

impl Unhealthy {
    pub fn name(self) -> &'static str {
        match self {
            Unhealthy::Stopped => "stopped",
            Unhealthy::Creating => "creating",
            Unhealthy::NoLeader => "no_leader",
            Unhealthy::LeaderSilent => "leader_silent",
            Unhealthy::ApplyLag => "apply_lag",
        }
    }
}

/// A node's health at one moment, with the figures it was judged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `None` when healthy.
    pub reason: Option<Unhealthy>,
    /// The reason in words, for people.
    pub message: String,
    pub role: &'static str,
    pub term: u64,
    /// The leader's raft id (0: none known).
    pub leader_id: u64,
    /// How long ago the leader was last heard from (`None`: never).
    pub leader_contact_ago_ms: Option<u64>,
    pub election_timeout_ms: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub apply_lag_max_entries: u64,
}

impl Health {
    /// Judges `node` now.
    pub fn of(node: &NodeHandle, config: &ServerConfig) -> Health {
        let s = &node.status;
        let contact_us = s.leader_contact_us.load(Ordering::Relaxed);
        let now_us = node.clock.now_us();
        let mut h = Health {
            reason: None,
            message: String::new(),
            role: s.role().name(),
            term: s.term.load(Ordering::Relaxed),
            leader_id: s.leader_id.load(Ordering::Relaxed),
            leader_contact_ago_ms: (contact_us != 0)
                .then(|| now_us.saturating_sub(contact_us) / 1_000),
            election_timeout_ms: config.tick_ms * config.election_ticks as u64,
            commit_index: s.commit.load(Ordering::Relaxed),
            applied_index: s.applied.load(Ordering::Relaxed),
            apply_lag_max_entries: config.health_apply_lag_max_entries,
        };
        let stopped = s.stopped.load(Ordering::Acquire);
        let creating = s.creating.load(Ordering::Acquire);
        (h.reason, h.message) = h.judge(stopped, creating);
        h
    }

    /// The first thing wrong, in the order an operator should look.
    fn judge(&self, stopped: bool, creating: bool) -> (Option<Unhealthy>, String) {
        let lag = self.commit_index.saturating_sub(self.applied_index);
        let (reason, message) = if stopped {
            (Unhealthy::Stopped, "the node has stopped".to_string())
        } else if creating {
            let m = "the node waits for the other initial members to create the cluster";
            (Unhealthy::Creating, m.to_string())
        } else if self.leader_id == 0 {
            let m = format!("no leader is known in term {}", self.term);
            (Unhealthy::NoLeader, m)
        } else if self
            .leader_contact_ago_ms
            .is_none_or(|ago| ago > self.election_timeout_ms)
        {
            let ago = self
                .leader_contact_ago_ms
                .map_or_else(|| "never".to_string(), |ms| format!("{ms} ms ago"));
            let m = format!(
                "the leader was last heard from {ago}, over an election timeout ({} ms)",
                self.election_timeout_ms
            );
            (Unhealthy::LeaderSilent, m)
        } else if lag > self.apply_lag_max_entries {
            let m = format!(
                "applied index {} lags commit index {} by {lag} entries (at most {})",
                self.applied_index, self.commit_index, self.apply_lag_max_entries
            );
            (Unhealthy::ApplyLag, m)
        } else {
            return (None, "ok".to_string());
        };
        (Some(reason), message)
    }

    pub fn is_healthy(&self) -> bool {
        self.reason.is_none()
    }

    /// The one line `ping` answers with: the version, then `healthy` or
    /// `unhealthy (<reason>): <message>`, then the role and indexes.
    pub fn ping_line(&self) -> String {
        let state = match self.reason {
            None => "healthy".to_string(),
            Some(r) => format!("unhealthy ({}): {}", r.name(), self.message),
        };
        format!(
            "nacre {} {state}; role {}, term {}, leader {}, applied {} of {}",
            env!("CARGO_PKG_VERSION"),
            self.role,
            self.term,
            self.leader_id,
            self.applied_index,
            self.commit_index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(leader_id: u64, ago_ms: Option<u64>, commit: u64, applied: u64) -> Health {
        Health {
            reason: None,
            message: String::new(),
            role: "follower",
            term: 3,
            leader_id,
            leader_contact_ago_ms: ago_ms,
            election_timeout_ms: 500,
            commit_index: commit,
            applied_index: applied,
            apply_lag_max_entries: 100,
        }
    }

    #[test]
    fn a_node_with_a_recent_leader_and_little_lag_is_healthy() {
        let h = health(2, Some(10), 1_000, 950);
        assert_eq!(h.judge(false, false), (None, "ok".to_string()));
    }

    #[test]
    fn each_fault_is_named() {
        let h = health(2, Some(10), 1_000, 950);
        assert_eq!(h.judge(true, false).0, Some(Unhealthy::Stopped));
        assert_eq!(h.judge(false, true).0, Some(Unhealthy::Creating));
        let no_leader = health(0, Some(10), 1_000, 1_000);
        assert_eq!(no_leader.judge(false, false).0, Some(Unhealthy::NoLeader));
        let silent = health(2, Some(501), 1_000, 1_000);
        assert_eq!(silent.judge(false, false).0, Some(Unhealthy::LeaderSilent));
        let never = health(2, None, 1_000, 1_000);
        assert_eq!(never.judge(false, false).0, Some(Unhealthy::LeaderSilent));
        let lagging = health(2, Some(10), 1_000, 899);
        let (reason, message) = lagging.judge(false, false);
        assert_eq!(reason, Some(Unhealthy::ApplyLag));
        assert!(message.contains("by 101 entries"), "{message}");
    }

    #[test]
    fn the_bounds_are_inclusive() {
        assert_eq!(health(2, Some(500), 1_000, 900).judge(false, false).0, None);
    }

    #[test]
    fn the_ping_line_says_healthy_or_why_not() {
        let mut h = health(2, Some(10), 7, 7);
        assert!(
            h.ping_line().contains(" healthy; role follower"),
            "{}",
            h.ping_line()
        );
        (h.reason, h.message) = health(0, None, 7, 7).judge(false, false);
        let line = h.ping_line();
        assert!(line.contains("unhealthy (no_leader): no leader"), "{line}");
    }
}
