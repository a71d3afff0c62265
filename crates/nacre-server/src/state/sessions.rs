//! Client sessions: the outcome of every applied session-stamped write,
//! so that a retry is answered with it instead of applying again.

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::ErrorCode;
use nacre_store::WriteTxn;

use super::{Outcome, StateMachine};

pub(super) const SESSION_PREFIX: &[u8] = b"m/session/";

/// Session records live in epochs of `session_retention_entries` log
/// entries: a lookup checks the current epoch and the one before, and
/// forgetting old records is one range delete of whole epochs (dropped
/// subtree by subtree, never read), not a scan. A record is kept for one
/// to two windows.
fn session_epoch_key(epoch: u64) -> Vec<u8> {
    let mut k = SESSION_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

pub(super) fn session_key(epoch: u64, client_id: u64, seq: u64) -> Vec<u8> {
    let mut k = session_epoch_key(epoch);
    k.extend_from_slice(&client_id.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn encode_outcome(index: u64, o: &Outcome) -> Vec<u8> {
    let mut w = nacre_proto::wire::Writer::new();
    w.u64(index);
    match o {
        Outcome::Applied { prev, count } => {
            w.u8(0);
            w.opt_bytes(prev.as_deref());
            w.u64(*count);
        }
        Outcome::Failed {
            code,
            key,
            current,
            message,
        } => {
            w.u8(1);
            w.u16(code.to_u16());
            w.bytes(key);
            w.opt_bytes(current.as_deref());
            w.str(message);
        }
    }
    w.into_inner()
}

pub(super) fn decode_outcome(b: &[u8]) -> Option<(u64, Outcome)> {
    let mut r = nacre_proto::wire::Reader::new(Bytes::copy_from_slice(b));
    let index = r.u64("index").ok()?;
    let o = match r.u8("outcome").ok()? {
        0 => Outcome::Applied {
            prev: r.opt_bytes("prev").ok()?,
            count: r.u64("count").ok()?,
        },
        1 => Outcome::Failed {
            code: ErrorCode::from_u16(r.u16("code").ok()?),
            key: r.bytes("key").ok()?,
            current: r.opt_bytes("current").ok()?,
            message: r.string("message").ok()?,
        },
        _ => return None,
    };
    Some((index, o))
}

impl StateMachine {
    /// Forgets the session epochs before the previous one.
    pub(super) fn prune_sessions(
        &self,
        txn: &mut WriteTxn<'_>,
        index: u64,
    ) -> nacre_store::Result<()> {
        let epoch = index / self.session_retention_entries;
        if epoch < 2 {
            return Ok(());
        }
        let end = session_epoch_key(epoch - 1);
        txn.delete_range(Bound::Included(SESSION_PREFIX), Bound::Excluded(&end[..]))?;
        Ok(())
    }
}
