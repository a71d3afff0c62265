//! Installing a leader's snapshot, and the node-local record of the last
//! install that lets a restart finish one a crash interrupted.

use std::ops::Bound;

use nacre_store::Durability;

use super::{StateMachine, APPLIED_KEY};

/// The last snapshot installed from a leader: index, term and raft conf
/// state, written in the same commit as its data, so that a node that
/// crashed before its tlog recorded the snapshot can finish the install
/// when it restarts.
const INSTALLED_KEY: &[u8] = b"m/local/installed";
/// Keys under this prefix describe this node, not the replicated state:
/// snapshots do not carry them, and replicas need not agree on them.
const LOCAL_PREFIX: &[u8] = b"m/local/";

/// Whether a stored key is this node's own (see `LOCAL_PREFIX`).
pub fn is_local_key(key: &[u8]) -> bool {
    key.starts_with(LOCAL_PREFIX)
}

impl StateMachine {
    /// Replaces the whole state with a leader's snapshot (all namespaces),
    /// durable when this returns.
    pub fn install_snapshot(
        &mut self,
        pairs: impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>>,
        index: u64,
        term: u64,
        conf: &raft::eraftpb::ConfState,
    ) -> nacre_store::Result<()> {
        let mut txn = self.store.begin_write()?;
        txn.delete_range(Bound::Unbounded, Bound::Unbounded)?;
        for kv in pairs {
            let (k, v) = kv.map_err(|source| nacre_store::Error::Io {
                op: "read snapshot file",
                source,
            })?;
            txn.put(&k, &v)?;
        }
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&index.to_le_bytes());
        applied[8..].copy_from_slice(&term.to_le_bytes());
        txn.put(APPLIED_KEY, &applied)?;
        let mut installed = applied.to_vec();
        installed.extend(protobuf::Message::write_to_bytes(conf).map_err(|e| {
            nacre_store::Error::Corruption {
                position: 0,
                what: format!("cannot encode a conf state: {e}"),
            }
        })?);
        txn.put(INSTALLED_KEY, &installed)?;
        txn.commit_with(Durability::Immediate)?;
        self.applied = index;
        self.applied_term = term;
        Ok(())
    }

    /// The last snapshot installed from a leader, as (index, term, conf
    /// state), if any.
    pub fn installed_snapshot(
        &self,
    ) -> nacre_store::Result<Option<(u64, u64, raft::eraftpb::ConfState)>> {
        let Some(v) = self.store.begin_read().get(INSTALLED_KEY)? else {
            return Ok(None);
        };
        let bad = |what: String| nacre_store::Error::Corruption { position: 0, what };
        if v.len() < 16 {
            return Err(bad("installed snapshot record is too short".into()));
        }
        let index = u64::from_le_bytes(v[0..8].try_into().expect("8 bytes"));
        let term = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
        let conf = <raft::eraftpb::ConfState as protobuf::Message>::parse_from_bytes(&v[16..])
            .map_err(|e| bad(format!("installed snapshot's conf state: {e}")))?;
        Ok(Some((index, term, conf)))
    }
}
