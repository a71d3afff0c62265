//! What a node whose data directory is empty learns from the rest of the
//! cluster over the client protocol, until it has the cluster's state:
//!
//! - while it waits to create a new cluster, each other initial member's
//!   term and last log index (`statistics`), which the raft loop needs to
//!   decide whether the cluster exists already (node/bootstrap.rs);
//! - while it waits to join, the members and their peer addresses
//!   (`cluster status`), so that it can answer the leader; and whether it
//!   has been added yet, which it logs with the command that adds it.
//!
//! The loop makes the decisions; this task only asks and reports.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nacre_client::{Client, ClientOptions};

use crate::node::NodeHandle;
use crate::state::MemberRecord;
use crate::ServerConfig;

/// How often the other initial members are asked while the node waits to
/// create the cluster: often, since they may create it without this node
/// meanwhile, which then has to be sent a snapshot.
const CREATE_POLL_EVERY: Duration = Duration::from_millis(100);
/// How often a joining node asks for the members.
const JOIN_POLL_EVERY: Duration = Duration::from_millis(500);
/// How often a node that has not been added says so.
const HINT_EVERY: Duration = Duration::from_secs(5);
/// One question to one member, connection included.
const ASK_TIMEOUT_MS: u64 = 2_000;

/// Starts asking, if this node has no state of its own; the task ends once
/// it has (or the node stops).
pub(crate) fn spawn(config: &ServerConfig, node: &NodeHandle) {
    if node.status.applied.load(Ordering::Acquire) > 0 {
        return;
    }
    let asker = Asker::new(config, node.clone());
    tokio::spawn(asker.run());
}

struct Asker {
    node: NodeHandle,
    cluster_id: String,
    /// The other initial members: raft id and client address.
    initial: Vec<(u64, String)>,
    /// Whom to ask for the members.
    endpoints: Vec<String>,
    /// `nacre cluster add-learner ...` for this node, for the log.
    add_command: String,
}

impl Asker {
    fn new(config: &ServerConfig, node: NodeHandle) -> Asker {
        let me = node.status.id.load(Ordering::Relaxed);
        let initial: Vec<(u64, String)> = config
            .initial_members()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, n)| (id, n.client))
            .collect();
        let endpoints = config.endpoints_to_join();
        // The addresses others reach this node at: its [[nodes]] entry if
        // it has one (it may listen elsewhere, behind a proxy), else its
        // own listening addresses.
        let own = config.nodes.iter().find(|n| n.name == config.node_name);
        let client = own.map_or(&config.listen, |n| &n.client);
        let peer = own.map_or(&config.peer_listen, |n| &n.peer);
        let add_command = format!(
            "nacre --endpoints {} cluster add-learner {} --client {client} --peer {peer}",
            endpoints.join(","),
            config.node_name
        );
        Asker {
            node,
            cluster_id: config.cluster_id.clone(),
            initial,
            endpoints,
            add_command,
        }
    }

    async fn run(self) {
        let status = self.node.status.clone();
        let mut hinted: Option<Instant> = None;
        let mut added = false;
        loop {
            if status.applied.load(Ordering::Acquire) > 0 || status.stopped.load(Ordering::Acquire)
            {
                return;
            }
            if status.creating.load(Ordering::Acquire) {
                self.ask_initial_members().await;
                tokio::time::sleep(CREATE_POLL_EVERY).await;
                continue;
            }
            if let Some(members) = self.ask_members().await {
                let me = status.id.load(Ordering::Relaxed);
                let member = members.iter().any(|(id, _)| *id == me);
                self.node.learn_members(members);
                if member && !added {
                    tracing::info!(
                        "this node is a member of the cluster; waiting for the leader to send \
                         its state"
                    );
                } else if !member && hinted.is_none_or(|t| t.elapsed() >= HINT_EVERY) {
                    tracing::warn!(
                        "waiting to be added: ask the cluster with `{}`",
                        self.add_command
                    );
                    hinted = Some(Instant::now());
                }
                added = member;
            }
            tokio::time::sleep(JOIN_POLL_EVERY).await;
        }
    }

    /// Asks every other initial member for its term and last log index,
    /// and hands each answer to the loop.
    async fn ask_initial_members(&self) {
        for (id, addr) in &self.initial {
            let Some(stats) = self.statistics(addr).await else {
                continue;
            };
            let get = |k: &str| {
                stats
                    .iter()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
            };
            // Whoever answers at that address must be that member.
            if get("node_id") != Some(*id) {
                tracing::debug!(%addr, "another node answers at this member's address");
                continue;
            }
            if let (Some(term), Some(last)) = (get("term"), get("tlog_last_index")) {
                self.node.peer_state(*id, term, last);
            }
        }
    }

    async fn statistics(&self, addr: &str) -> Option<Vec<(String, String)>> {
        let client = Client::connect(self.options(vec![addr.to_string()]))
            .await
            .ok()?;
        client.statistics().await.ok()
    }

    /// The members and their addresses, from whichever endpoint answers.
    async fn ask_members(&self) -> Option<Vec<(u64, MemberRecord)>> {
        let client = Client::connect(self.options(self.endpoints.clone()))
            .await
            .ok()?;
        let members = client.cluster_status().await.ok()?;
        Some(
            members
                .into_iter()
                .filter(|m| !m.peer.is_empty())
                .map(|m| {
                    (
                        m.id,
                        MemberRecord {
                            name: m.name,
                            client: m.client,
                            peer: m.peer,
                        },
                    )
                })
                .collect(),
        )
    }

    fn options(&self, endpoints: Vec<String>) -> ClientOptions {
        let mut o = ClientOptions::new(endpoints);
        o.cluster_id = self.cluster_id.clone();
        o.connect_timeout_ms = ASK_TIMEOUT_MS;
        o.request_timeout_ms = ASK_TIMEOUT_MS;
        o.retries_max = 0;
        o
    }
}
