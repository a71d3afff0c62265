//! Leases in the replicated state: which leases exist (with their time
//! to live) and which keys each one holds. Time is not here: when a lease
//! expires is the leader's decision (`node/leases.rs`), replicated as a
//! `LeaseRevoke`, so every replica deletes the same keys at the same
//! revision.
//!
//! | store key | value |
//! |---|---|
//! | `m/lease/` + id (u64 BE) | ttl_ms u64 LE + the index of the grant u64 LE |
//! | `m/leasekey/` + id (u64 BE) + user key | empty: the lease's keys, in order |
//! | `m/keylease/` + user key | the key's lease id u64 LE |

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{ErrorCode, EventKind, Revision, WatchEvent};
use nacre_store::{ReadTxn, WriteTxn};

use super::kv::{decode_stored, put_undoable, user_key, Undo};
use super::{prefix_end, u64_le_at, Corruption, StateError};

pub(super) const LEASE_PREFIX: &[u8] = b"m/lease/";
pub(super) const LEASE_KEY_PREFIX: &[u8] = b"m/leasekey/";
pub(super) const KEY_LEASE_PREFIX: &[u8] = b"m/keylease/";

fn lease_key(id: u64) -> Vec<u8> {
    let mut k = LEASE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn lease_keys_prefix(id: u64) -> Vec<u8> {
    let mut k = LEASE_KEY_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn lease_key_entry(id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = lease_keys_prefix(id);
    k.extend_from_slice(key);
    k
}

fn key_lease(key: &[u8]) -> Vec<u8> {
    let mut k = KEY_LEASE_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

/// A lease record: its time to live and the index it was granted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: u64,
    pub ttl_ms: u64,
    pub granted_index: u64,
}

fn decode_record(store_key: &[u8], raw: &[u8]) -> Result<LeaseRecord, Corruption> {
    let id = store_key
        .get(LEASE_PREFIX.len()..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes);
    match (id, raw.len(), u64_le_at(raw, 0), u64_le_at(raw, 8)) {
        (Some(id), 16, Some(ttl_ms), Some(granted_index)) => Ok(LeaseRecord {
            id,
            ttl_ms,
            granted_index,
        }),
        _ => Err(Corruption::new(
            store_key,
            "lease record",
            format!("{} bytes under a {}-byte key", raw.len(), store_key.len()),
        )),
    }
}

/// Checks a lease namespace record of a snapshot.
pub(super) fn check_lease_record(key: &[u8], value: &[u8]) -> Result<(), Corruption> {
    if key.starts_with(LEASE_KEY_PREFIX) {
        let ok = key.len() >= LEASE_KEY_PREFIX.len() + 8 && value.is_empty();
        return ok
            .then_some(())
            .ok_or_else(|| Corruption::new(key, "lease key entry", "malformed"));
    }
    if key.starts_with(KEY_LEASE_PREFIX) {
        return (value.len() == 8)
            .then_some(())
            .ok_or_else(|| Corruption::new(key, "key's lease entry", "not 8 bytes"));
    }
    decode_record(key, value).map(drop)
}

/// Whether `key` belongs to the lease namespace.
pub(super) fn is_lease_key(key: &[u8]) -> bool {
    key.starts_with(LEASE_PREFIX)
        || key.starts_with(LEASE_KEY_PREFIX)
        || key.starts_with(KEY_LEASE_PREFIX)
}

fn delete(txn: &mut WriteTxn<'_>, key: Vec<u8>, undo: &mut Undo) -> Result<(), StateError> {
    if let Some(old) = txn.get(&key)? {
        txn.delete(&key)?;
        undo.push((key, Some(old)));
    }
    Ok(())
}

/// A lease op that cannot apply: the batch fails with this.
pub(super) type LeaseFailure = (ErrorCode, String);

/// Creates lease `id` (0: the grant's index). Returns the id.
pub(super) fn grant(
    txn: &mut WriteTxn<'_>,
    index: u64,
    id: u64,
    ttl_ms: u64,
    undo: &mut Undo,
) -> Result<Result<u64, LeaseFailure>, StateError> {
    let id = if id == 0 { index } else { id };
    let key = lease_key(id);
    if txn.exists(&key)? {
        return Ok(Err((
            ErrorCode::Conflict,
            format!("lease {id} already exists"),
        )));
    }
    let mut rec = [0u8; 16];
    rec[..8].copy_from_slice(&ttl_ms.to_le_bytes());
    rec[8..].copy_from_slice(&index.to_le_bytes());
    put_undoable(txn, key, &rec, undo)?;
    Ok(Ok(id))
}

fn not_found(id: u64) -> LeaseFailure {
    (
        ErrorCode::LeaseNotFound,
        format!("lease {id} does not exist (expired, revoked, or never granted)"),
    )
}

/// Attaches `key` to lease `id` (detaching it from any other).
pub(super) fn attach(
    txn: &mut WriteTxn<'_>,
    key: &[u8],
    id: u64,
    undo: &mut Undo,
) -> Result<Result<(), LeaseFailure>, StateError> {
    if !txn.exists(&lease_key(id))? {
        return Ok(Err(not_found(id)));
    }
    detach(txn, key, undo)?;
    put_undoable(txn, key_lease(key), &id.to_le_bytes(), undo)?;
    put_undoable(txn, lease_key_entry(id, key), &[], undo)?;
    Ok(Ok(()))
}

/// Detaches `key` from its lease, if it has one (a plain set or a delete).
pub(super) fn detach(
    txn: &mut WriteTxn<'_>,
    key: &[u8],
    undo: &mut Undo,
) -> Result<(), StateError> {
    let kl = key_lease(key);
    let Some(id) = attached(&kl, txn.get(&kl)?)? else {
        return Ok(());
    };
    delete(txn, kl, undo)?;
    delete(txn, lease_key_entry(id, key), undo)
}

/// Whether lease `id` exists.
pub(super) fn exists(txn: &WriteTxn<'_>, id: u64) -> Result<bool, StateError> {
    Ok(txn.exists(&lease_key(id))?)
}

/// The lease id a key's lease entry `kl` holds (`raw`, if it exists).
fn attached(kl: &[u8], raw: Option<Vec<u8>>) -> Result<Option<u64>, Corruption> {
    raw.map(|raw| {
        u64_le_at(&raw, 0)
            .filter(|_| raw.len() == 8)
            .ok_or_else(|| Corruption::new(kl, "key's lease entry", "not 8 bytes"))
    })
    .transpose()
}

/// The lease `key` is attached to; 0: none (etcd's "no lease").
pub(super) fn lease_of(txn: &WriteTxn<'_>, key: &[u8]) -> Result<u64, StateError> {
    let kl = key_lease(key);
    Ok(attached(&kl, txn.get(&kl)?)?.unwrap_or(0))
}

/// The lease `key` is attached to in a snapshot; 0: none.
pub fn lease_of_read(txn: &ReadTxn, key: &[u8]) -> Result<u64, StateError> {
    let kl = key_lease(key);
    Ok(attached(&kl, txn.get(&kl)?)?.unwrap_or(0))
}

/// Ends lease `id`: deletes every key attached to it (one delete event
/// each, at `index`) and the lease.
pub(super) fn revoke(
    txn: &mut WriteTxn<'_>,
    index: u64,
    id: u64,
    undo: &mut Undo,
    events: &mut Vec<WatchEvent>,
) -> Result<Result<u64, LeaseFailure>, StateError> {
    let key = lease_key(id);
    if !txn.exists(&key)? {
        return Ok(Err(not_found(id)));
    }
    let start = lease_keys_prefix(id);
    let end = prefix_end(&start);
    let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let attached = txn.range(Bound::Included(&start[..]), end_bound)?;
    let mut deleted = 0;
    for (entry, _) in attached {
        let user = &entry[start.len()..];
        let uk = user_key(user);
        if let Some(raw) = txn.get(&uk)? {
            let (rev, value) = decode_stored(&uk, &raw)?;
            events.push(WatchEvent {
                kind: EventKind::Delete,
                key: Bytes::copy_from_slice(user),
                value: Bytes::new(),
                rev: Revision {
                    create_rev: 0,
                    mod_rev: index,
                    version: 0,
                },
                prev: Some(Bytes::copy_from_slice(value)),
                etcd: nacre_proto::EtcdMeta {
                    prev_rev: Some(rev),
                    lease: 0,
                    prev_lease: id,
                },
            });
            txn.delete(&uk)?;
            undo.push((uk, Some(raw)));
            deleted += 1;
        }
        delete(txn, key_lease(user), undo)?;
        delete(txn, entry, undo)?;
    }
    delete(txn, key, undo)?;
    Ok(Ok(deleted))
}

/// Every lease, in id order.
pub fn list(txn: &ReadTxn) -> Result<Vec<LeaseRecord>, StateError> {
    let end = prefix_end(LEASE_PREFIX);
    let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    let mut bad = None;
    txn.scan(Bound::Included(LEASE_PREFIX), end_bound, false, |k, v| {
        match decode_record(k, v) {
            Ok(r) => out.push(r),
            Err(e) => {
                bad = Some(e);
                return false;
            }
        }
        true
    })?;
    match bad {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// One lease, if it exists.
pub fn get(txn: &ReadTxn, id: u64) -> Result<Option<LeaseRecord>, StateError> {
    let key = lease_key(id);
    match txn.get(&key)? {
        Some(raw) => Ok(Some(decode_record(&key, &raw)?)),
        None => Ok(None),
    }
}

/// The keys attached to lease `id`, at most `max`.
pub fn keys(txn: &ReadTxn, id: u64, max: usize) -> Result<Vec<Bytes>, StateError> {
    let start = lease_keys_prefix(id);
    let end = prefix_end(&start);
    let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    txn.scan(Bound::Included(&start[..]), end_bound, false, |k, _| {
        out.push(Bytes::copy_from_slice(&k[start.len()..]));
        out.len() < max
    })?;
    Ok(out)
}

/// Whether any lease exists: if none does, no key can be attached and a
/// set need not look for an attachment to undo.
pub(crate) fn any(txn: &ReadTxn) -> Result<bool, StateError> {
    let end = prefix_end(LEASE_PREFIX);
    let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut found = false;
    txn.scan(Bound::Included(LEASE_PREFIX), end_bound, false, |_, _| {
        found = true;
        false
    })?;
    Ok(found)
}
