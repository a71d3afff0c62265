//! The replicated member table: every member's name and addresses, kept
//! in the state so that every node (and a node restored from a snapshot)
//! knows how to reach the others.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use nacre_store::Durability;

use super::{bad_meta, prefix_end, StateMachine, APPLIED_KEY};

const MEMBER_PREFIX: &[u8] = b"m/member/";

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

fn member_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl StateMachine {
    /// The member table.
    pub fn members(&self) -> nacre_store::Result<BTreeMap<u64, MemberRecord>> {
        let end = prefix_end(MEMBER_PREFIX).expect("prefix below 0xff");
        let mut out = BTreeMap::new();
        let r = self.store.begin_read();
        for kv in r.range(Bound::Included(MEMBER_PREFIX), Bound::Excluded(&end[..])) {
            let (k, v) = kv?;
            let id = u64::from_be_bytes(
                k[MEMBER_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| bad_meta("member key"))?,
            );
            out.insert(
                id,
                MemberRecord::decode(&v).ok_or_else(|| bad_meta("member record"))?,
            );
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
    ) -> nacre_store::Result<()> {
        assert!(index > self.applied, "entries applied out of order");
        let mut txn = self.store.begin_write()?;
        for (id, m) in changes {
            match m {
                Some(m) => txn.put(&member_key(*id), &m.encode())?,
                None => {
                    txn.delete(&member_key(*id))?;
                }
            }
        }
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&index.to_le_bytes());
        applied[8..].copy_from_slice(&term.to_le_bytes());
        txn.put(APPLIED_KEY, &applied)?;
        txn.commit_with(Durability::Lazy)?;
        self.applied = index;
        self.applied_term = term;
        Ok(())
    }
}
