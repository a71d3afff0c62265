//! User keys: each stored value carries its revision; guards and ops
//! run against the shared write transaction, with an undo log for a
//! batch that fails part-way; [`Reader`] serves reads from a snapshot.

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, Guard, KeyEntry, Op, Page, PageItem, RangeQuery, Revision};
use nacre_store::{ReadTxn, Store, WriteTxn};

use super::scripts::{apply_script_op, script_key_count};
use super::{prefix_end, Corruption, Outcome, PageError, StateError, META_NS, USER_NS};

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

    /// The user-key bounds of a range query, in store keys.
    fn bounds(q: &RangeQuery) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let start = match &q.first {
            Some(k) if q.first_inclusive => Bound::Included(user_key(k)),
            Some(k) => Bound::Excluded(user_key(k)),
            None => Bound::Included(vec![USER_NS]),
        };
        let end = match &q.last {
            Some(k) if q.last_inclusive => Bound::Included(user_key(k)),
            Some(k) => Bound::Excluded(user_key(k)),
            None => Bound::Excluded(vec![USER_NS + 1]),
        };
        (start, end)
    }

    /// One page of the user entries between `start` and `end`: at most
    /// `max` results and no more than fit in a reply frame of
    /// `frame_size_max_bytes`. `more` is found by visiting one entry past
    /// the page, so that it says whether a key follows, not whether the
    /// page happens to be full. The second value is set when the first
    /// result alone would not fit: its reply length.
    fn scan_page<T: PageItem>(
        &self,
        (start, end): (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        max: u32,
        frame_size_max_bytes: usize,
        mut item: impl FnMut(&[u8], &[u8]) -> Result<T, Corruption>,
    ) -> Result<(Page<T>, Option<usize>), StateError> {
        let mut page = Page {
            items: Vec::new(),
            more: false,
        };
        let mut bytes = 0;
        let mut failed = None;
        let mut too_large = None;
        self.txn.scan(start, end, reverse, |k, v| {
            if page.items.len() >= max as usize {
                page.more = true;
                return false;
            }
            let it = match item(k, v) {
                Ok(it) => it,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            };
            let len = it.encoded_len();
            if Page::<T>::frame_length(bytes + len) > frame_size_max_bytes {
                page.more = true;
                if page.items.is_empty() {
                    too_large = Some(Page::<T>::frame_length(len));
                }
                return false;
            }
            bytes += len;
            page.items.push(it);
            true
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok((page, too_large)),
        }
    }

    /// A page for a reply: a first result no reply can hold is an error,
    /// since an empty page that says "more" would never advance.
    fn page_for_reply<T>(
        scanned: (Page<T>, Option<usize>),
        limits: PageLimits,
    ) -> Result<Page<T>, PageError> {
        match scanned {
            (page, None) => Ok(page),
            (_, Some(length)) => Err(PageError::ResultTooLarge {
                length,
                frame_size_max_bytes: limits.frame_size_max_bytes,
            }),
        }
    }

    fn range_page<T: PageItem>(
        &self,
        q: &RangeQuery,
        limits: PageLimits,
        item: impl FnMut(&[u8], &[u8]) -> Result<T, Corruption>,
    ) -> Result<(Page<T>, Option<usize>), StateError> {
        let (start, end) = Self::bounds(q);
        let bounds = (
            start.as_ref().map(Vec::as_slice),
            end.as_ref().map(Vec::as_slice),
        );
        let max = q.max.min(limits.results_max);
        self.scan_page(bounds, q.reverse, max, limits.frame_size_max_bytes, item)
    }

    fn prefix_page(
        &self,
        prefix: &[u8],
        max: u32,
        limits: PageLimits,
    ) -> Result<(Page<Bytes>, Option<usize>), StateError> {
        let start = user_key(prefix);
        let end = prefix_end(&start);
        let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.scan_page(
            (Bound::Included(&start[..]), end_bound),
            false,
            max.min(limits.results_max),
            limits.frame_size_max_bytes,
            |k, _| Ok(Bytes::copy_from_slice(user_part(k))),
        )
    }

    fn entry(k: &[u8], raw: &[u8]) -> Result<KeyEntry, Corruption> {
        let (rev, value) = decode_stored(k, raw)?;
        Ok(KeyEntry {
            key: Bytes::copy_from_slice(user_part(k)),
            value: Bytes::copy_from_slice(value),
            rev,
        })
    }

    /// The keys of a range query, one page of them (see [`PageLimits`]).
    pub fn range_keys_page(
        &self,
        q: &RangeQuery,
        limits: PageLimits,
    ) -> Result<Page<Bytes>, PageError> {
        let scanned =
            self.range_page(q, limits, |k, _| Ok(Bytes::copy_from_slice(user_part(k))))?;
        Self::page_for_reply(scanned, limits)
    }

    /// The entries of a range query, one page of them (see [`PageLimits`]).
    pub fn range_entries_page(
        &self,
        q: &RangeQuery,
        limits: PageLimits,
    ) -> Result<Page<KeyEntry>, PageError> {
        Self::page_for_reply(self.range_page(q, limits, Self::entry)?, limits)
    }

    /// The keys starting with `prefix`, at most `max`, one page of them
    /// (see [`PageLimits`]).
    pub fn prefix_keys_page(
        &self,
        prefix: &[u8],
        max: u32,
        limits: PageLimits,
    ) -> Result<Page<Bytes>, PageError> {
        Self::page_for_reply(self.prefix_page(prefix, max, limits)?, limits)
    }

    /// The entries of a range query, at most `max`, with no byte limit:
    /// for readers that are not building a reply (scripts, the simulator).
    pub fn range_entries(&self, q: &RangeQuery, max: u32) -> Result<Vec<KeyEntry>, StateError> {
        let (page, _) = self.range_page(q, PageLimits::results(max), Self::entry)?;
        Ok(page.items)
    }

    /// The keys starting with `prefix`, at most `max`, with no byte limit.
    pub fn prefix_keys(&self, prefix: &[u8], max: u32) -> Result<Vec<Bytes>, StateError> {
        let (page, _) = self.prefix_page(prefix, max, PageLimits::results(max))?;
        Ok(page.items)
    }
}

/// How much one page of a range or prefix read may hold: a query's own
/// smaller `max` wins over `results_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Results in one page (`range_results_max` for a client's read).
    pub results_max: u32,
    /// The reply frame's `length` (`frame_size_max_bytes` for a client's
    /// read): a page stops before a result that would not fit.
    pub frame_size_max_bytes: usize,
}

impl PageLimits {
    /// At most `max` results, however many bytes they take.
    pub fn results(max: u32) -> PageLimits {
        PageLimits {
            results_max: max,
            frame_size_max_bytes: usize::MAX,
        }
    }
}
