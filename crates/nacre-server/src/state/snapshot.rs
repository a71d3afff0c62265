//! Installing a leader's snapshot, and the node-local record of the last
//! install that lets a restart finish one a crash interrupted.

use std::ops::Bound;

use nacre_store::Durability;

use super::kv::decode_stored;
use super::leases::{check_lease_record, is_lease_key};
use super::members::{decode_member, MEMBER_PREFIX};
use super::scripts::check_script_record;
use super::sessions::{check_session_record, SESSION_PREFIX};
use super::{
    decode_applied, encode_applied, u64_le_at, Corruption, StateError, StateMachine, APPLIED_KEY,
    META_NS, SCRIPT_NS, USER_NS,
};

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

/// Checks that a pair of a leader's snapshot decodes as what its
/// namespace says, so that a snapshot holding bytes this code never
/// wrote is refused rather than installed.
pub fn check_snapshot_pair(key: &[u8], value: &[u8]) -> Result<(), Corruption> {
    match key.first() {
        Some(&USER_NS) => decode_stored(key, value).map(drop),
        Some(&SCRIPT_NS) => check_script_record(key, value),
        Some(&META_NS) if key == APPLIED_KEY => decode_applied(value).map(drop),
        Some(&META_NS) if key.starts_with(MEMBER_PREFIX) => decode_member(key, value).map(drop),
        Some(&META_NS) if key.starts_with(SESSION_PREFIX) => check_session_record(key, value),
        Some(&META_NS) if is_lease_key(key) => check_lease_record(key, value),
        Some(&META_NS) if super::etcd::is_etcd_key(key) => {
            super::etcd::check_etcd_record(key, value)
        }
        Some(&META_NS) if is_local_key(key) => Err(Corruption::new(
            key,
            "node-local record",
            "snapshots never carry one",
        )),
        Some(&META_NS) => Err(Corruption::new(
            key,
            "service key",
            "not one this node knows",
        )),
        _ => Err(Corruption::new(key, "key", "in no namespace")),
    }
}

impl StateMachine {
    /// Replaces the whole state with a leader's snapshot (all namespaces),
    /// durable when this returns. Every pair is checked first
    /// ([`check_snapshot_pair`]); one that does not decode refuses the
    /// install, and the store keeps its state.
    pub fn install_snapshot(
        &mut self,
        pairs: impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>>,
        index: u64,
        term: u64,
        conf: &raft::eraftpb::ConfState,
    ) -> Result<(), StateError> {
        let mut txn = self.store.begin_write()?;
        txn.delete_range(Bound::Unbounded, Bound::Unbounded)?;
        for kv in pairs {
            let (k, v) = kv.map_err(StateError::SnapshotRead)?;
            check_snapshot_pair(&k, &v).map_err(StateError::BadSnapshot)?;
            txn.put(&k, &v)?;
        }
        let applied = encode_applied(index, term);
        txn.put(APPLIED_KEY, &applied)?;
        let mut installed = applied.to_vec();
        // Writing a message into a vector fails only on a message
        // protobuf cannot size, which a conf state is not.
        installed.extend(protobuf::Message::write_to_bytes(conf).map_err(|e| {
            Corruption::new(INSTALLED_KEY, "conf state", format!("does not encode: {e}"))
        })?);
        txn.put(INSTALLED_KEY, &installed)?;
        txn.commit_with(Durability::Immediate)?;
        self.applied = index;
        self.applied_term = term;
        // The events of the entries the snapshot skipped are unknown: a
        // watch that needs them is told so (`Compacted`) by the hub.
        self.events.clear();
        self.reload_leases_hint()
    }

    /// The last snapshot installed from a leader, as (index, term, conf
    /// state), if any.
    pub fn installed_snapshot(
        &self,
    ) -> Result<Option<(u64, u64, raft::eraftpb::ConfState)>, StateError> {
        let Some(v) = self.store.begin_read().get(INSTALLED_KEY)? else {
            return Ok(None);
        };
        let bad =
            |detail: String| Corruption::new(INSTALLED_KEY, "installed snapshot record", detail);
        let (Some(index), Some(term)) = (u64_le_at(&v, 0), u64_le_at(&v, 8)) else {
            return Err(bad(format!("{} bytes, shorter than 16", v.len())).into());
        };
        let conf_bytes = v.get(16..).unwrap_or_default();
        let conf = <raft::eraftpb::ConfState as protobuf::Message>::parse_from_bytes(conf_bytes)
            .map_err(|e| bad(format!("its conf state: {e}")))?;
        Ok(Some((index, term, conf)))
    }
}
