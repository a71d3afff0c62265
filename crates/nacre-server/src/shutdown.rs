//! A clean stop, in the order that loses nothing: stop accepting, let the
//! open connections drain (requests taken are answered, later ones get
//! `GoingDown`), hand leadership to the most caught-up voter, then stop
//! the raft loop (which checkpoints the store).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::node::{Membership, NodeHandle};

/// How often the leadership hand-over is checked on.
const HANDOVER_POLL_MS: u64 = 10;

/// Waits until every client connection has closed (each gives back its
/// permit of `connections`), at most `wait`: each request in flight ends
/// within `request_timeout_ms`, which is what the caller passes.
pub(crate) async fn drain_connections(
    connections: &Semaphore,
    connections_max: usize,
    wait: Duration,
) {
    let all = u32::try_from(connections_max).unwrap_or(u32::MAX);
    let busy = connections_max.saturating_sub(connections.available_permits());
    if busy == 0 {
        return;
    }
    tracing::info!(connections = busy, "draining client connections");
    match tokio::time::timeout(wait, connections.acquire_many(all)).await {
        Ok(_all_closed) => tracing::info!("client connections drained"),
        Err(_) => {
            let left = connections_max.saturating_sub(connections.available_permits());
            tracing::warn!(
                connections = left,
                wait_ms = wait.as_millis() as u64,
                "client connections still busy; closing them"
            );
        }
    }
}

/// If this node leads a cluster with another voter, hands leadership to
/// the voter whose log is most up to date, and waits (at most `wait`)
/// until another node leads: the cluster then goes on without waiting an
/// election timeout for this node to be missed.
pub(crate) async fn hand_over_leadership(node: &NodeHandle, wait: Duration) {
    let s = &node.status;
    if !s.is_leader.load(Ordering::Acquire) || s.stopped.load(Ordering::Acquire) {
        return;
    }
    let me = s.id.load(Ordering::Relaxed);
    let best = s
        .progress
        .lock()
        .iter()
        .filter(|m| m.voter && m.id != me)
        .max_by_key(|m| m.match_index)
        .map(|m| (m.id, m.name.clone()));
    let Some((to, name)) = best else {
        return;
    };
    tracing::info!(to = %name, "handing leadership over before stopping");
    if let Err(e) = node.membership(Membership::TransferLeader(to)).await {
        tracing::warn!(to = %name, error = %e.message, "could not hand leadership over");
        return;
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let leader = s.leader_id.load(Ordering::Acquire);
        if !s.is_leader.load(Ordering::Acquire) && leader != 0 && leader != me {
            let leader = s.leader_name().unwrap_or_default();
            tracing::info!(%leader, "leadership handed over");
            return;
        }
        tokio::time::sleep(Duration::from_millis(HANDOVER_POLL_MS)).await;
    }
    tracing::warn!(
        to = %name,
        wait_ms = wait.as_millis() as u64,
        "leadership was not handed over in time; stopping anyway"
    );
}

/// What [`crate::RunningServer::shutdown`] needs to drain and hand over.
pub(crate) struct Plan {
    pub connections: Arc<Semaphore>,
    pub connections_max: usize,
    /// `request_timeout_ms`: every request in flight has ended by then.
    pub drain_wait: Duration,
    /// Two election timeouts: a transfer raft-rs has not finished by one
    /// is abandoned.
    pub handover_wait: Duration,
}
