//! Raft snapshots are store snapshots: taking one for a lagging follower,
//! installing one a leader streamed, and the checkpoints that let the tlog
//! be compacted.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use raft::eraftpb::{ConfState, Snapshot};

use super::Node;
use crate::state::is_local_key;
use crate::transport::{read_snapshot_file, SnapshotPairs, SnapshotSource};
use crate::ServerError;

/// Names of the store snapshots that back raft snapshots.
const SNAPSHOT_NAME_PREFIX: &str = "raft-";

/// What a raft snapshot taken by this node describes.
#[derive(Default)]
pub(super) struct SnapState {
    pub(super) applied: u64,
    pub(super) term: u64,
    pub(super) conf: ConfState,
}

/// Takes (or reuses) a store snapshot of the applied state for raft to
/// ship to a lagging or new follower; its data names the store snapshot.
pub(super) fn take_snapshot(
    store: &nacre_store::Store,
    state: &Mutex<SnapState>,
) -> nacre_store::Result<Snapshot> {
    let st = state.lock();
    let name = format!("{SNAPSHOT_NAME_PREFIX}{:020}", st.applied);
    let existing = store.list_snapshots();
    if !existing.iter().any(|s| s.name == name) {
        store.create_snapshot(&name)?;
        // Keep the newest two: one may still be streaming.
        let mut ours: Vec<String> = existing
            .into_iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with(SNAPSHOT_NAME_PREFIX))
            .collect();
        ours.sort();
        while ours.len() > 1 {
            let old = ours.remove(0);
            let _ = store.drop_snapshot(&old);
        }
    }
    let mut snap = Snapshot {
        data: name.into_bytes().into(),
        ..Default::default()
    };
    let meta = snap.mut_metadata();
    meta.index = st.applied;
    meta.term = st.term;
    meta.set_conf_state(st.conf.clone());
    Ok(snap)
}

/// What the peer transport streams to a follower that needs a snapshot:
/// the pairs of the store snapshot the raft snapshot names, without the
/// node-local records.
pub(super) fn snapshot_source(store: nacre_store::Store) -> SnapshotSource {
    Arc::new(move |snap: &Snapshot| {
        let name = String::from_utf8(snap.data.to_vec())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let txn = store.snapshot(&name).map_err(io::Error::other)?;
        let iter = txn
            .iter()
            .filter(|kv| !kv.as_ref().is_ok_and(|(k, _)| is_local_key(k)))
            .map(|kv| kv.map_err(io::Error::other));
        Ok(Box::new(iter) as SnapshotPairs)
    })
}

impl Node {
    /// Replaces the state with a snapshot that raft accepted: the store
    /// from the streamed file, then the tlog starts after it.
    pub(super) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), ServerError> {
        let meta = snap.get_metadata().clone();
        let Some(path) = self.snapshots_in.remove(&meta.index) else {
            return Err(ServerError::SnapshotMissing { index: meta.index });
        };
        let pairs = read_snapshot_file(&path).map_err(ServerError::SnapshotRead)?;
        self.sm
            .install_snapshot(pairs, meta.index, meta.term, meta.get_conf_state())?;
        let _ = std::fs::remove_file(&path);
        self.tlog.write().apply_snapshot(&meta)?;
        self.snapshots_in.retain(|i, _| *i > meta.index);
        *self.status.members.write() = self.sm.members()?;
        {
            let mut st = self.snap_state.lock();
            st.applied = meta.index;
            st.term = meta.term;
            st.conf = meta.get_conf_state().clone();
        }
        self.checkpointed = meta.index;
        self.applied_bytes_since_checkpoint = 0;
        self.status.applied.store(meta.index, Ordering::Release);
        // The changes between the old state and the snapshot are unknown:
        // watches that still need them end `Compacted`.
        self.opts.watches.reset(meta.index);
        self.status
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = %self.name_of(self.opts.id), term = self.raw.raft.term,
            index = meta.index, "installed a snapshot from the leader");
        self.sync_transport()
    }

    /// A checkpoint every `checkpoint_entries` entries or
    /// `checkpoint_bytes` bytes of them, whichever comes first: counted in
    /// entries alone, a few large values kept the whole tlog on disk.
    pub(super) fn maybe_checkpoint(&mut self) -> Result<(), ServerError> {
        let (applied, _) = self.sm.applied();
        if applied >= self.checkpointed + self.opts.checkpoint_entries
            || self.applied_bytes_since_checkpoint >= self.opts.checkpoint_bytes
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Makes the store durable up to the applied index, then drops tlog
    /// entries the store now covers, keeping a tail for lagging peers of at
    /// most `tlog_tail_entries` entries and `tlog_tail_bytes` bytes.
    pub(super) fn checkpoint(&mut self) -> Result<(), ServerError> {
        let covered = self.sm.checkpoint()?;
        let mut log = self.tlog.write();
        let compact_to = covered
            .saturating_sub(self.opts.tlog_tail_entries)
            .max(log.tail_start(covered, self.opts.tlog_tail_bytes));
        // Make sure the persisted commit index is not behind what the store
        // now durably holds.
        log.sync()?;
        if compact_to > log.first_index() {
            log.compact(compact_to)?;
        }
        self.checkpointed = covered;
        self.applied_bytes_since_checkpoint = 0;
        self.status.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
