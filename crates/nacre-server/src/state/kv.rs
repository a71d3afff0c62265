//! User keys: each stored value carries its revision; guards and ops
//! run against the shared write transaction, with an undo log for a
//! batch that fails part-way; [`Reader`] serves reads from a snapshot.

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, Guard, KeyEntry, Op, RangeQuery, Revision};
use nacre_store::{ReadTxn, Store, WriteTxn};

use super::scripts::{apply_script_op, script_key_count};
use super::{prefix_end, Corruption, Outcome, StateError, META_NS, USER_NS};

const REV_BYTES: usize = Revision::ENCODED_BYTES;

pub fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER_NS);
    k.extend_from_slice(key);
    k
}

/// The user key of a store key in the user namespace (which is never
/// empty: it holds at least the namespace byte).
fn user_part(store_key: &[u8]) -> &[u8] {
    store_key.get(1..).unwrap_or_default()
}

fn encode_stored(rev: Revision, value: &[u8]) -> Vec<u8> {
    let mut head = [0u8; REV_BYTES];
    rev.encode_into(&mut head);
    let mut v = Vec::with_capacity(REV_BYTES + value.len());
    v.extend_from_slice(&head);
    v.extend_from_slice(value);
    v
}

/// The revision and the value of a stored user record. Every one was
/// written by `encode_stored`; a shorter one is bytes this code never
/// wrote (planted, or damage the store's checksums missed), and is
/// refused rather than served or built upon.
pub(super) fn decode_stored<'a>(
    store_key: &[u8],
    raw: &'a [u8],
) -> Result<(Revision, &'a [u8]), Corruption> {
    match (Revision::decode_from(raw), raw.get(REV_BYTES..)) {
        (Some(rev), Some(value)) => Ok((rev, value)),
        _ => Err(Corruption::new(
            store_key,
            "user value",
            format!(
                "{} bytes, shorter than its {REV_BYTES}-byte revision header",
                raw.len()
            ),
        )),
    }
}

fn stored_value<'a>(store_key: &[u8], raw: &'a [u8]) -> Result<&'a [u8], Corruption> {
    decode_stored(store_key, raw).map(|(_, value)| value)
}

/// Stored values a failed batch must restore, newest last.
pub(super) type Undo = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn rollback(txn: &mut WriteTxn<'_>, undo: Undo) -> Result<(), StateError> {
    for (key, old) in undo.into_iter().rev() {
        match old {
            Some(v) => txn.put(&key, &v)?,
            None => {
                txn.delete(&key)?;
            }
        }
    }
    Ok(())
}

fn current_value(txn: &WriteTxn<'_>, key: &[u8]) -> Result<Option<Bytes>, StateError> {
    let uk = user_key(key);
    match txn.get(&uk)? {
        Some(raw) => Ok(Some(Bytes::copy_from_slice(stored_value(&uk, &raw)?))),
        None => Ok(None),
    }
}

/// Checks one guard against the transaction's current state; `Some`
/// describes the failure.
pub(super) fn check(txn: &mut WriteTxn<'_>, guard: &Guard) -> Result<Option<String>, StateError> {
    let failure = match guard {
        Guard::Absent(k) => txn.exists(&user_key(k))?.then(|| "key exists".to_string()),
        Guard::Present(k) => (!txn.exists(&user_key(k))?).then(|| "key does not exist".to_string()),
        Guard::ValueEquals(k, v) => {
            let uk = user_key(k);
            match txn.get(&uk)? {
                Some(raw) if stored_value(&uk, &raw)? == &v[..] => None,
                Some(_) => Some("value differs".to_string()),
                None => Some("key does not exist".to_string()),
            }
        }
        Guard::VersionEquals(k, want) => {
            let uk = user_key(k);
            let have = match txn.get(&uk)? {
                Some(raw) => decode_stored(&uk, &raw)?.0.version,
                None => 0,
            };
            (have != *want).then(|| format!("version is {have}, expected {want}"))
        }
        Guard::PrefixKeysEqual { prefix, keys } => {
            let start = user_key(prefix);
            let end = prefix_end(&start);
            let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let found = txn.range(Bound::Included(&start[..]), end_bound)?;
            let same = found.len() == keys.len()
                && found
                    .iter()
                    .zip(keys)
                    .all(|((k, _), want)| user_part(k) == &want[..]);
            (!same).then(|| {
                format!(
                    "{} keys under the prefix, not the {} expected",
                    found.len(),
                    keys.len()
                )
            })
        }
    };
    Ok(failure)
}

/// A failed guard or check: the batch fails on `key`, whose value at that
/// point is reported.
fn guard_failed(txn: &WriteTxn<'_>, guard: &Guard, why: String) -> Result<Outcome, StateError> {
    let key = guard.key().clone();
    let current = current_value(txn, &key)?;
    Ok(Outcome::Failed {
        code: ErrorCode::AssertionFailed,
        key,
        current,
        message: why,
    })
}

pub(super) fn apply_batch(
    txn: &mut WriteTxn<'_>,
    index: u64,
    batch: &Batch,
) -> Result<Outcome, StateError> {
    for g in &batch.guards {
        if let Some(why) = check(txn, g)? {
            return guard_failed(txn, g, why);
        }
    }
    let mut undo: Undo = Vec::new();
    let mut prev = None;
    let mut count = 0;
    for op in &batch.ops {
        match op {
            Op::Set(k, v) => prev = set(txn, index, k, v, &mut undo)?,
            Op::Delete(k) | Op::Remove(k) => {
                let uk = user_key(k);
                let old = txn.get(&uk)?;
                match old {
                    Some(raw) => {
                        prev = Some(Bytes::copy_from_slice(stored_value(&uk, &raw)?));
                        txn.delete(&uk)?;
                        undo.push((uk, Some(raw)));
                    }
                    None if matches!(op, Op::Delete(_)) => {
                        rollback(txn, undo)?;
                        return Ok(Outcome::Failed {
                            code: ErrorCode::NotFound,
                            key: k.clone(),
                            current: None,
                            message: "delete of a key that does not exist".into(),
                        });
                    }
                    None => prev = None,
                }
            }
            Op::DeletePrefix(p) => {
                let start = user_key(p);
                let end = prefix_end(&start);
                let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let doomed = txn.range(Bound::Included(&start[..]), end_bound)?;
                count += txn.delete_prefix(&start)?;
                undo.extend(doomed.into_iter().map(|(k, v)| (k, Some(v))));
            }
            Op::Check(g) => {
                if let Some(why) = check(txn, g)? {
                    let failed = guard_failed(txn, g, why)?;
                    rollback(txn, undo)?;
                    return Ok(failed);
                }
            }
            Op::TestAndSet {
                key,
                expected,
                wanted,
            } => prev = test_and_set(txn, index, key, expected, wanted, &mut undo)?,
            op => match apply_script_op(txn, index, op, &mut undo)? {
                Ok(version) => count = version,
                Err((code, message)) => {
                    rollback(txn, undo)?;
                    return Ok(Outcome::Failed {
                        code,
                        key: Bytes::new(),
                        current: None,
                        message,
                    });
                }
            },
        }
    }
    Ok(Outcome::Applied { prev, count })
}

/// Arakoon's `test_and_set` step: writes `wanted` (or removes the key)
/// only if the key holds `expected`, and never fails the batch. Returns
/// the value it found, as a standalone `test_and_set` reports it.
fn test_and_set(
    txn: &mut WriteTxn<'_>,
    index: u64,
    key: &Bytes,
    expected: &Option<Bytes>,
    wanted: &Option<Bytes>,
    undo: &mut Undo,
) -> Result<Option<Bytes>, StateError> {
    let current = current_value(txn, key)?;
    if current != *expected {
        return Ok(current);
    }
    match wanted {
        Some(v) => {
            set(txn, index, key, v, undo)?;
        }
        None => {
            let uk = user_key(key);
            if let Some(raw) = txn.get(&uk)? {
                txn.delete(&uk)?;
                undo.push((uk, Some(raw)));
            }
        }
    }
    Ok(current)
}

/// Sets `key` at log index `index`: a new key's revisions start there, an
/// existing key's version goes up by one. Returns the value it replaced.
fn set(
    txn: &mut WriteTxn<'_>,
    index: u64,
    key: &[u8],
    value: &[u8],
    undo: &mut Undo,
) -> Result<Option<Bytes>, StateError> {
    let uk = user_key(key);
    let old = txn.get(&uk)?;
    let (rev, prev) = match &old {
        Some(raw) => {
            let (r, v) = decode_stored(&uk, raw)?;
            let rev = Revision {
                create_rev: r.create_rev,
                mod_rev: index,
                version: r.version + 1,
            };
            (rev, Some(Bytes::copy_from_slice(v)))
        }
        None => {
            let rev = Revision {
                create_rev: index,
                mod_rev: index,
                version: 1,
            };
            (rev, None)
        }
    };
    txn.put(&uk, &encode_stored(rev, value))?;
    undo.push((uk, old));
    Ok(prev)
}

/// Reads against one consistent snapshot of the store.
pub struct Reader {
    txn: ReadTxn,
}

impl Reader {
    pub fn new(store: &Store) -> Reader {
        Reader {
            txn: store.begin_read(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StateError> {
        let uk = user_key(key);
        let value = self.txn.get_with(&uk, |raw| {
            stored_value(&uk, raw).map(Bytes::copy_from_slice)
        })?;
        Ok(value.transpose()?)
    }

    pub fn get_entry(&self, key: &[u8]) -> Result<Option<KeyEntry>, StateError> {
        let uk = user_key(key);
        let entry = self.txn.get_with(&uk, |raw| {
            decode_stored(&uk, raw).map(|(rev, value)| KeyEntry {
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
                rev,
            })
        })?;
        Ok(entry.transpose()?)
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool, StateError> {
        Ok(self.txn.exists(&user_key(key))?)
    }

    /// User keys: all keys minus the (few) service keys.
    pub fn key_count(&self) -> Result<u64, StateError> {
        let meta = [META_NS];
        let end = [META_NS + 1];
        let service = self.txn.scan(
            Bound::Included(&meta[..]),
            Bound::Excluded(&end[..]),
            false,
            |_, _| true,
        )?;
        Ok(self.txn.count() - service - script_key_count(&self.txn)?)
    }

    /// Visits the user entries of a range query, at most `max_results`,
    /// until `visit` fails.
    fn scan_range(
        &self,
        q: &RangeQuery,
        max_results: u32,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Corruption>,
    ) -> Result<(), StateError> {
        let first = q.first.as_deref().map(user_key);
        let last = q.last.as_deref().map(user_key);
        let ns = [USER_NS];
        let ns_end = [USER_NS + 1];
        let start = match &first {
            Some(k) if q.first_inclusive => Bound::Included(&k[..]),
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Included(&ns[..]),
        };
        let end = match &last {
            Some(k) if q.last_inclusive => Bound::Included(&k[..]),
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Excluded(&ns_end[..]),
        };
        let max = q.max.min(max_results) as u64;
        if max == 0 {
            return Ok(());
        }
        let mut seen = 0u64;
        let mut failed = None;
        self.txn.scan(start, end, q.reverse, |k, v| {
            if let Err(e) = visit(k, v) {
                failed = Some(e);
                return false;
            }
            seen += 1;
            seen < max
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    pub fn range_keys(&self, q: &RangeQuery, max_results: u32) -> Result<Vec<Bytes>, StateError> {
        let mut keys = Vec::new();
        self.scan_range(q, max_results, |k, _| {
            keys.push(Bytes::copy_from_slice(user_part(k)));
            Ok(())
        })?;
        Ok(keys)
    }

    pub fn range_entries(
        &self,
        q: &RangeQuery,
        max_results: u32,
    ) -> Result<Vec<KeyEntry>, StateError> {
        let mut entries = Vec::new();
        self.scan_range(q, max_results, |k, raw| {
            let (rev, value) = decode_stored(k, raw)?;
            entries.push(KeyEntry {
                key: Bytes::copy_from_slice(user_part(k)),
                value: Bytes::copy_from_slice(value),
                rev,
            });
            Ok(())
        })?;
        Ok(entries)
    }

    pub fn prefix_keys(&self, prefix: &[u8], max: u32) -> Result<Vec<Bytes>, StateError> {
        let start = user_key(prefix);
        let end = prefix_end(&start);
        let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = Vec::new();
        if max == 0 {
            return Ok(keys);
        }
        self.txn
            .scan(Bound::Included(&start[..]), end_bound, false, |k, _| {
                keys.push(Bytes::copy_from_slice(user_part(k)));
                keys.len() < max as usize
            })?;
        Ok(keys)
    }
}
