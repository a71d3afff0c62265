//! User keys: each stored value carries its revision; guards and ops
//! run against the shared write transaction, with an undo log for a
//! batch that fails part-way; [`Reader`] serves reads from a snapshot.

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, Guard, KeyEntry, Op, RangeQuery, Revision};
use nacre_store::{ReadTxn, Store, WriteTxn};

use super::scripts::{apply_script_op, script_key_count};
use super::{prefix_end, Outcome, META_NS, USER_NS};

const REV_BYTES: usize = Revision::ENCODED_BYTES;

pub fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER_NS);
    k.extend_from_slice(key);
    k
}

fn encode_stored(rev: Revision, value: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; REV_BYTES + value.len()];
    let head: &mut [u8; REV_BYTES] = (&mut v[..REV_BYTES]).try_into().expect("24 bytes");
    rev.encode_into(head);
    v[REV_BYTES..].copy_from_slice(value);
    v
}

fn stored_rev(raw: &[u8]) -> Revision {
    // Every user value was written by `encode_stored`; a shorter one means
    // the store returned bytes we never wrote, which its checksums exclude.
    Revision::decode_from(raw).expect("stored value carries its revision")
}

fn stored_value(raw: &[u8]) -> &[u8] {
    &raw[REV_BYTES..]
}

/// Stored values a failed batch must restore, newest last.
pub(super) type Undo = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn rollback(txn: &mut WriteTxn<'_>, undo: Undo) -> nacre_store::Result<()> {
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

fn current_value(txn: &WriteTxn<'_>, key: &[u8]) -> nacre_store::Result<Option<Bytes>> {
    Ok(txn
        .get(&user_key(key))?
        .map(|raw| Bytes::copy_from_slice(stored_value(&raw))))
}

/// Checks one guard against the transaction's current state; `Some`
/// describes the failure.
pub(super) fn check(txn: &mut WriteTxn<'_>, guard: &Guard) -> nacre_store::Result<Option<String>> {
    let failure = match guard {
        Guard::Absent(k) => txn.exists(&user_key(k))?.then(|| "key exists".to_string()),
        Guard::Present(k) => (!txn.exists(&user_key(k))?).then(|| "key does not exist".to_string()),
        Guard::ValueEquals(k, v) => match txn.get(&user_key(k))? {
            Some(raw) if stored_value(&raw) == &v[..] => None,
            Some(_) => Some("value differs".to_string()),
            None => Some("key does not exist".to_string()),
        },
        Guard::VersionEquals(k, want) => {
            let have = txn
                .get(&user_key(k))?
                .map_or(0, |raw| stored_rev(&raw).version);
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
                    .all(|((k, _), want)| k[1..] == want[..]);
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

pub(super) fn apply_batch(
    txn: &mut WriteTxn<'_>,
    index: u64,
    batch: &Batch,
) -> nacre_store::Result<Outcome> {
    for g in &batch.guards {
        if let Some(why) = check(txn, g)? {
            let key = g.key().clone();
            let current = current_value(txn, &key)?;
            return Ok(Outcome::Failed {
                code: ErrorCode::AssertionFailed,
                key,
                current,
                message: why,
            });
        }
    }
    let mut undo: Undo = Vec::new();
    let mut prev = None;
    let mut count = 0;
    for op in &batch.ops {
        match op {
            Op::Set(k, v) => {
                let uk = user_key(k);
                let old = txn.get(&uk)?;
                let rev = match &old {
                    Some(raw) => {
                        let r = stored_rev(raw);
                        Revision {
                            create_rev: r.create_rev,
                            mod_rev: index,
                            version: r.version + 1,
                        }
                    }
                    None => Revision {
                        create_rev: index,
                        mod_rev: index,
                        version: 1,
                    },
                };
                txn.put(&uk, &encode_stored(rev, v))?;
                prev = old
                    .as_deref()
                    .map(|raw| Bytes::copy_from_slice(stored_value(raw)));
                undo.push((uk, old));
            }
            Op::Delete(k) | Op::Remove(k) => {
                let uk = user_key(k);
                let old = txn.get(&uk)?;
                match old {
                    Some(raw) => {
                        txn.delete(&uk)?;
                        prev = Some(Bytes::copy_from_slice(stored_value(&raw)));
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
                    let key = g.key().clone();
                    let current = current_value(txn, &key)?;
                    rollback(txn, undo)?;
                    return Ok(Outcome::Failed {
                        code: ErrorCode::AssertionFailed,
                        key,
                        current,
                        message: why,
                    });
                }
            }
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

    pub fn get(&self, key: &[u8]) -> nacre_store::Result<Option<Bytes>> {
        self.txn.get_with(&user_key(key), |raw| {
            Bytes::copy_from_slice(stored_value(raw))
        })
    }

    pub fn get_entry(&self, key: &[u8]) -> nacre_store::Result<Option<KeyEntry>> {
        self.txn.get_with(&user_key(key), |raw| KeyEntry {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(stored_value(raw)),
            rev: stored_rev(raw),
        })
    }

    pub fn exists(&self, key: &[u8]) -> nacre_store::Result<bool> {
        self.txn.exists(&user_key(key))
    }

    /// User keys: all keys minus the (few) service keys.
    pub fn key_count(&self) -> nacre_store::Result<u64> {
        let meta = [META_NS];
        let end = prefix_end(&meta).expect("namespace byte below 0xff");
        let service = self.txn.scan(
            Bound::Included(&meta[..]),
            Bound::Excluded(&end[..]),
            false,
            |_, _| true,
        )?;
        Ok(self.txn.count() - service - script_key_count(&self.txn)?)
    }

    /// Visits the user entries of a range query, at most `max_results`.
    fn scan_range(
        &self,
        q: &RangeQuery,
        max_results: u32,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> nacre_store::Result<()> {
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
        self.txn.scan(start, end, q.reverse, |k, v| {
            visit(&k[1..], v);
            seen += 1;
            seen < max
        })?;
        Ok(())
    }

    pub fn range_keys(&self, q: &RangeQuery, max_results: u32) -> nacre_store::Result<Vec<Bytes>> {
        let mut keys = Vec::new();
        self.scan_range(q, max_results, |k, _| keys.push(Bytes::copy_from_slice(k)))?;
        Ok(keys)
    }

    pub fn range_entries(
        &self,
        q: &RangeQuery,
        max_results: u32,
    ) -> nacre_store::Result<Vec<KeyEntry>> {
        let mut entries = Vec::new();
        self.scan_range(q, max_results, |k, raw| {
            entries.push(KeyEntry {
                key: Bytes::copy_from_slice(k),
                value: Bytes::copy_from_slice(stored_value(raw)),
                rev: stored_rev(raw),
            })
        })?;
        Ok(entries)
    }

    pub fn prefix_keys(&self, prefix: &[u8], max: u32) -> nacre_store::Result<Vec<Bytes>> {
        let start = user_key(prefix);
        let end = prefix_end(&start);
        let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = Vec::new();
        if max == 0 {
            return Ok(keys);
        }
        self.txn
            .scan(Bound::Included(&start[..]), end_bound, false, |k, _| {
                keys.push(Bytes::copy_from_slice(&k[1..]));
                keys.len() < max as usize
            })?;
        Ok(keys)
    }
}
