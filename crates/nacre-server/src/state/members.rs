//! The replicated member table: every member's name and addresses, kept
//! in the state so that every node (and a node restored from a snapshot)
//! knows how to reach the others.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use nacre_store::Durability;

use super::{encode_applied, prefix_end, Corruption, StateError, StateMachine, APPLIED_KEY};

pub(super) const MEMBER_PREFIX: &[u8] = b"m/member/";

/// A member's addresses, kept in the replicated state so that every node
/// (and a node restored from a snapshot) knows how to reach the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub name: String,
    pub client: String,
    pub peer: String,
}

impl MemberRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = nacre_proto::wire::Writer::new();
        w.str(&self.name);
        w.str(&self.client);
        w.str(&self.peer);
        w.into_inner()
    }

    pub fn decode(b: &[u8]) -> Option<MemberRecord> {
        let mut r = nacre_proto::wire::Reader::new(Bytes::copy_from_slice(b));
        let m = MemberRecord {
            name: r.string("name").ok()?,
            client: r.string("client").ok()?,
            peer: r.string("peer").ok()?,
        };
        r.finish("member").ok()?;
        Some(m)
    }
}

/// Whether a stored key is a member record (a restore replaces the
/// backup's members with the new cluster's).
pub fn is_member_key(key: &[u8]) -> bool {
    key.starts_with(MEMBER_PREFIX)
}

/// A member record as a stored pair.
pub fn member_pair(id: u64, m: &MemberRecord) -> (Vec<u8>, Vec<u8>) {
    (member_key(id), m.encode())
}

fn member_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A member's id and record from its stored key and value.
pub(super) fn decode_member(key: &[u8], value: &[u8]) -> Result<(u64, MemberRecord), Corruption> {
    let id = key
        .strip_prefix(MEMBER_PREFIX)
        .and_then(|id| <[u8; 8]>::try_from(id).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Corruption::new(key, "member key", "not the prefix and an 8-byte id"))?;
    let record = MemberRecord::decode(value)
        .ok_or_else(|| Corruption::new(key, "member record", "does not decode"))?;
    Ok((id, record))
}

impl StateMachine {
    /// The member table.
    pub fn members(&self) -> Result<BTreeMap<u64, MemberRecord>, StateError> {
        let end = prefix_end(MEMBER_PREFIX).unwrap_or_default();
        let mut out = BTreeMap::new();
        let r = self.store.begin_read();
        for kv in r.range(Bound::Included(MEMBER_PREFIX), Bound::Excluded(&end[..])) {
            let (k, v) = kv?;
            let (id, record) = decode_member(&k, &v)?;
            out.insert(id, record);
        }
        Ok(out)
    }

    /// Records membership changes (`None` removes) at `index`, which is a
    /// conf-change entry: the applied index moves with them.
    pub fn apply_members(
        &mut self,
        index: u64,
        term: u64,
        changes: &[(u64, Option<MemberRecord>)],
    ) -> Result<(), StateError> {
        if index <= self.applied {
            return Err(StateError::OutOfOrder {
                index,
                applied: self.applied,
            });
        }
        let mut txn = self.store.begin_write()?;
        for (id, m) in changes {
            match m {
                Some(m) => txn.put(&member_key(*id), &m.encode())?,
                None => {
                    txn.delete(&member_key(*id))?;
                }
            }
        }
        txn.put(APPLIED_KEY, &encode_applied(index, term))?;
        txn.commit_with(Durability::Lazy)?;
        self.applied = index;
        self.applied_term = term;
        Ok(())
    }
}
