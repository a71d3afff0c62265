//! [`raft::Storage`] over a shared [`Tlog`].

use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use raft::eraftpb::{Entry, Snapshot};
use raft::{Error as RaftError, GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::TlogError;
use crate::tlog::Tlog;

/// Builds the snapshot raft asks for, given the index it needs at least.
pub type SnapshotProvider = Box<dyn Fn(u64) -> Result<Snapshot, RaftError> + Send + Sync>;

impl From<TlogError> for RaftError {
    fn from(e: TlogError) -> RaftError {
        match e {
            TlogError::Compacted => RaftError::Store(StorageError::Compacted),
            TlogError::Unavailable => RaftError::Store(StorageError::Unavailable),
            other => RaftError::Store(StorageError::Other(Box::new(other))),
        }
    }
}

/// A [`Tlog`] shared between the raft node (which reads it through
/// [`Storage`]) and the loop that persists each `Ready` (which writes it).
/// Clones share one tlog and one snapshot provider.
#[derive(Clone)]
pub struct TlogStorage {
    tlog: Arc<RwLock<Tlog>>,
    provider: Arc<RwLock<Option<SnapshotProvider>>>,
}

impl TlogStorage {
    pub fn new(tlog: Tlog) -> TlogStorage {
        TlogStorage {
            tlog: Arc::new(RwLock::new(tlog)),
            provider: Arc::new(RwLock::new(None)),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Tlog> {
        self.tlog.read()
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Tlog> {
        self.tlog.write()
    }

    /// Set what [`Storage::snapshot`] calls; without one it answers
    /// `SnapshotTemporarilyUnavailable`.
    pub fn set_snapshot_provider(&self, provider: SnapshotProvider) {
        *self.provider.write() = Some(provider);
    }
}

impl Storage for TlogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let tlog = self.read();
        Ok(RaftState::new(tlog.hard_state(), tlog.conf_state()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        Ok(self.read().entries(low, high, max_size.into())?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        Ok(self.read().term(idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let provider = self.provider.read();
        let Some(provider) = provider.as_ref() else {
            return Err(RaftError::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let snap = provider(request_index)?;
        // raft requires a snapshot at or past the index it asked for.
        if snap.get_metadata().index < request_index {
            return Err(RaftError::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap)
    }
}
