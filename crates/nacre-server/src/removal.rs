//! How a member learns that the cluster removed it when it never applied
//! its removal. The leader stops replicating to a member as soon as it has
//! applied the change that removes it, so the member often never hears
//! that the change committed (it was down, cut off, or the last messages
//! to it were dropped with its connection). Raft then leaves it alone with
//! its old configuration, campaigning in vain and answering every client
//! `not_master` with no leader, forever.
//!
//! So a member that has known no leader for a while asks the others, over
//! the client protocol, who leads and whether that leader still lists it.
//! Only a leader's answer counts, and only if the leader has applied at
//! least as much of the log as this node: this node was a member at its
//! own applied index, so a leader further along that does not list it
//! applied its removal. Two such answers in a row, a check apart, are
//! needed: one could come from a leader between applying an entry and
//! publishing the members it leaves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use nacre_client::{Client, ClientOptions};

use crate::node::NodeHandle;
use crate::ServerConfig;

/// One question to one member, connection included.
const ASK_TIMEOUT_MS: u64 = 2_000;

/// Starts watching, for a node of a cluster with other members; the task
/// ends when the node stops.
pub(crate) fn spawn(config: &ServerConfig, node: &NodeHandle) {
    // A node of its own cluster has no one to be removed by.
    if config.nodes.len() <= 1 && !config.joins_existing() {
        return;
    }
    // Longer than an election can take (a randomized timeout of one to
    // two election timeouts, then a round trip), so that a cluster that is
    // merely electing is left alone.
    let election_timeout_ms = config.tick_ms * config.election_ticks as u64;
    let check_every = Duration::from_millis((2 * election_timeout_ms).max(500));
    let watcher = Watcher {
        node: node.clone(),
        cluster_id: config.cluster_id.clone(),
        check_every,
    };
    tokio::spawn(watcher.run());
}

struct Watcher {
    node: NodeHandle,
    cluster_id: String,
    check_every: Duration,
}

impl Watcher {
    async fn run(self) {
        let status = self.node.status.clone();
        // Checks in a row that found no leader, and that found a leader
        // that does not list this node.
        let (mut leaderless, mut unlisted) = (0u32, 0u32);
        loop {
            tokio::time::sleep(self.check_every).await;
            if status.stopped.load(Ordering::Acquire) {
                return;
            }
            // Without the cluster's state the node was never a member
            // (discovery.rs deals with it), and with a leader it hears
            // the log, its removal included.
            if status.applied.load(Ordering::Acquire) == 0
                || status.leader_id.load(Ordering::Acquire) != 0
            {
                (leaderless, unlisted) = (0, 0);
                continue;
            }
            leaderless += 1;
            if leaderless < 2 {
                continue;
            }
            match self.find_leader_without_me().await {
                Some(leader) => {
                    unlisted += 1;
                    if unlisted >= 2 {
                        self.node.removed_by(leader);
                    }
                }
                None => unlisted = 0,
            }
        }
    }

    /// The name of a leader that has applied at least as much as this node
    /// and does not list it among the members, if one answers.
    async fn find_leader_without_me(&self) -> Option<String> {
        let status = &self.node.status;
        let me = status.id.load(Ordering::Relaxed);
        let others: Vec<String> = status
            .members
            .read()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, m)| m.client.clone())
            .collect();
        for addr in others {
            let applied = status.applied.load(Ordering::Acquire);
            if let Some(leader) = self.ask(&addr, me, applied).await {
                return Some(leader);
            }
        }
        None
    }

    /// Asks the member at `addr`: if it leads, has applied `applied` or
    /// more, and does not list `me`, its name.
    async fn ask(&self, addr: &str, me: u64, applied: u64) -> Option<String> {
        let mut o = ClientOptions::new(vec![addr.to_string()]);
        o.cluster_id = self.cluster_id.clone();
        o.connect_timeout_ms = ASK_TIMEOUT_MS;
        o.request_timeout_ms = ASK_TIMEOUT_MS;
        o.retries_max = 0;
        let client = Client::connect(o).await.ok()?;
        let stats = client.statistics().await.ok()?;
        let get = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let leads = get("role") == Some("leader");
        let its_applied = get("applied_index").and_then(|v| v.parse::<u64>().ok());
        if !leads || its_applied.is_none_or(|a| a < applied) {
            return None;
        }
        let members = client.cluster_status().await.ok()?;
        if members.iter().any(|m| m.id == me) {
            return None;
        }
        Some(get("node").unwrap_or(addr).to_string())
    }
}
