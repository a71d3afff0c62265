//! Client sessions: the outcome of every applied session-stamped write,
//! so that a retry is answered with it instead of applying again.

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, Session};
use nacre_store::WriteTxn;

use super::kv::{apply_batch, Effects};
use super::{Corruption, Outcome, StateError, StateMachine};

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

fn session_key(epoch: u64, client_id: u64, seq: u64) -> Vec<u8> {
    let mut k = session_epoch_key(epoch);
    k.extend_from_slice(&client_id.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode_outcome(index: u64, o: &Outcome) -> Vec<u8> {
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
        Outcome::Etcd { revision, response } => {
            w.u8(2);
            w.u64(*revision);
            w.bytes(response);
        }
    }
    w.into_inner()
}

fn decode_outcome(b: &[u8]) -> Option<(u64, Outcome)> {
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
        2 => Outcome::Etcd {
            revision: r.u64("revision").ok()?,
            response: r.bytes("response").ok()?,
        },
        _ => return None,
    };
    Some((index, o))
}

/// Checks a session record: its key is the prefix and three u64s, its
/// value an outcome.
pub(super) fn check_session_record(key: &[u8], value: &[u8]) -> Result<(), Corruption> {
    if key.len() != SESSION_PREFIX.len() + 24 {
        return Err(Corruption::new(
            key,
            "session key",
            "not the prefix and three u64s",
        ));
    }
    match decode_outcome(value) {
        Some(_) => Ok(()),
        None => Err(Corruption::new(
            key,
            "session record",
            "does not decode as an outcome",
        )),
    }
}

impl StateMachine {
    /// Applies a session-stamped batch unless the same stamp already
    /// applied within the retention window; a retry is answered as the
    /// first time and changes nothing.
    pub(super) fn apply_once(
        &self,
        txn: &mut WriteTxn<'_>,
        fx: &mut Effects<'_>,
        session: Session,
        batch: &Batch,
    ) -> Result<Outcome, StateError> {
        let index = fx.index;
        let epoch = index / self.session_retention_entries;
        let key = session_key(epoch, session.client_id, session.seq);
        let mut first = txn.get(&key)?.map(|raw| (key.clone(), raw));
        if self.skips_sessions() {
            first = None;
        }
        if first.is_none() && epoch > 0 && !self.skips_sessions() {
            let previous = session_key(epoch - 1, session.client_id, session.seq);
            first = txn.get(&previous)?.map(|raw| (previous, raw));
        }
        if let Some((found, raw)) = first {
            let (first_index, outcome) = decode_outcome(&raw).ok_or_else(|| {
                Corruption::new(&found, "session record", "does not decode as an outcome")
            })?;
            fx.first_index = Some(first_index);
            return Ok(outcome);
        }
        let o = apply_batch(txn, fx, batch)?;
        // Only effects need guarding against a second apply; a failed batch
        // changed nothing, and its retry (a script re-run after a conflict,
        // say) must be evaluated afresh.
        if matches!(o, Outcome::Applied { .. }) {
            txn.put(&key, &encode_outcome(index, &o))?;
        }
        Ok(o)
    }

    /// Forgets the session epochs before the previous one.
    pub(super) fn prune_sessions(
        &self,
        txn: &mut WriteTxn<'_>,
        index: u64,
    ) -> Result<(), StateError> {
        let epoch = index / self.session_retention_entries;
        if epoch < 2 {
            return Ok(());
        }
        let end = session_epoch_key(epoch - 1);
        txn.delete_range(Bound::Included(SESSION_PREFIX), Bound::Excluded(&end[..]))?;
        Ok(())
    }
}
