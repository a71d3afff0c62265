//! `/status`: what `nacre statistics` and `cluster status` tell, as one
//! JSON document with numbers as numbers: the node (role, term, indexes),
//! its health, the members with their replication lag (known on the
//! leader), and the store's figures.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::Admin;
use crate::health::Health;
use crate::server::{off_the_workers, Shared};
use crate::state::Reader;

/// The `/status` document.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStatus {
    pub node: String,
    pub node_id: u64,
    pub cluster_id: String,
    pub version: &'static str,
    pub role: &'static str,
    pub term: u64,
    pub leader_id: u64,
    /// The leader's name, if known.
    pub leader: Option<String>,
    pub applied_index: u64,
    pub commit_index: u64,
    pub tlog_first_index: u64,
    pub tlog_last_index: u64,
    pub uptime_s: u64,
    pub health: Health,
    pub members: Vec<MemberStatus>,
    pub store: StoreStatus,
}

/// One member, as this node knows it.
#[derive(Debug, Serialize)]
pub(crate) struct MemberStatus {
    pub id: u64,
    pub name: String,
    pub client: String,
    pub peer: String,
    pub voter: bool,
    pub leader: bool,
    /// The highest index known replicated to it (`None` unless this node
    /// leads: only the leader tracks it).
    pub match_index: Option<u64>,
    /// Entries of the leader's log it has yet to receive (leader only).
    pub lag_entries: Option<u64>,
}

/// The store's figures.
#[derive(Debug, Serialize)]
pub(crate) struct StoreStatus {
    /// User keys (`None` if counting them failed: `error` says why).
    pub user_keys: Option<u64>,
    pub bytes_on_disk: u64,
    pub live_bytes: u64,
    pub segments: usize,
    pub snapshots: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cleaned_segments: u64,
    pub relocated_bytes: u64,
    pub error: Option<String>,
    pub poisoned: Option<String>,
    pub cleaner_error: Option<String>,
}

pub(super) async fn status(
    State(admin): State<Admin>,
) -> Result<Json<NodeStatus>, (StatusCode, String)> {
    let shared = admin.shared.clone();
    // Counting keys reads pages: off the async workers.
    let user_keys = off_the_workers(&admin.shared, move || {
        Ok(Reader::new(&shared.store).key_count())
    })
    .await
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.message))?;
    let user_keys = user_keys.map_err(|e| e.to_string());
    Ok(Json(node_status(&admin.shared, user_keys)))
}

/// The document, with the user key count (or why it is missing).
pub(crate) fn node_status(shared: &Shared, user_keys: Result<u64, String>) -> NodeStatus {
    let s = &shared.node.status;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let leader_id = n(&s.leader_id);
    let last_index = n(&s.last_index);
    let is_leader = s.is_leader.load(Ordering::Acquire);
    let members = s
        .progress
        .lock()
        .iter()
        .map(|m| MemberStatus {
            id: m.id,
            name: m.name.clone(),
            client: m.client.clone(),
            peer: m.peer.clone(),
            voter: m.voter,
            leader: m.leader,
            match_index: is_leader.then_some(m.match_index),
            lag_entries: is_leader.then(|| last_index.saturating_sub(m.match_index)),
        })
        .collect();
    NodeStatus {
        node: shared.config.node_name.clone(),
        node_id: n(&s.id),
        cluster_id: shared.config.cluster_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        role: s.role().name(),
        term: n(&s.term),
        leader_id,
        leader: s.leader_name(),
        applied_index: n(&s.applied),
        commit_index: n(&s.commit),
        tlog_first_index: n(&s.first_index),
        tlog_last_index: last_index,
        uptime_s: shared.started.elapsed().as_secs(),
        health: Health::of(&shared.node, &shared.config),
        members,
        store: store_status(shared, user_keys),
    }
}

fn store_status(shared: &Shared, user_keys: Result<u64, String>) -> StoreStatus {
    let st = shared.store.stats();
    StoreStatus {
        error: user_keys.as_ref().err().cloned(),
        user_keys: user_keys.ok(),
        bytes_on_disk: st.bytes_on_disk,
        live_bytes: st.live_bytes,
        segments: st.segments,
        snapshots: st.snapshots,
        cache_hits: st.cache_hits,
        cache_misses: st.cache_misses,
        cleaned_segments: st.cleaned_segments,
        relocated_bytes: st.relocated_bytes,
        poisoned: st.poisoned,
        cleaner_error: st.cleaner_error,
    }
}
