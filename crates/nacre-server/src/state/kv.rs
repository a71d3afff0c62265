//! User keys: each stored value carries its revision; guards and ops
//! run against the shared write transaction, with an undo log for a
//! batch that fails part-way; [`Reader`] serves reads from a snapshot.

use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{
    Batch, ErrorCode, EtcdMeta, EventKind, Guard, KeyEntry, Op, Page, PageItem, RangeQuery,
    Revision, WatchEvent,
};
use nacre_store::{ReadTxn, Store, WriteTxn};

use super::leases;
use super::scripts::{apply_script_op, script_key_count};
use super::{prefix_end, Corruption, Outcome, PageError, StateError, META_NS, USER_NS};

const REV_BYTES: usize = Revision::ENCODED_BYTES;

/// What applying a batch produces besides its outcome, and what it needs
/// to know: the entry's index, the change events for watches, and whether
/// any lease exists (only then can a key be attached to one).
pub(super) struct Effects<'e> {
    pub index: u64,
    /// The etcd revision before this entry: the last index that changed a
    /// user key (state/etcd.rs).
    pub revision: u64,
    /// How many events were in `events` when this entry began.
    pub events_start: usize,
    /// A session-stamped retry of a write that already applied: the index
    /// it applied at, which its client is told (not the retry's).
    pub first_index: Option<u64>,
    pub events: &'e mut Vec<WatchEvent>,
    pub leases: bool,
    /// A planted bug (simulator only): `LockHeld` guards always hold.
    pub skip_fence: bool,
}

impl Effects<'_> {
    /// The etcd revision as this entry stands: its index once it changed
    /// a key, else the revision before it (what etcd's headers say).
    pub(super) fn revision_now(&self) -> u64 {
        if self.events.len() > self.events_start {
            self.index
        } else {
            self.revision
        }
    }

    fn put_event(
        &mut self,
        key: &[u8],
        value: &[u8],
        rev: Revision,
        prev: Option<&Bytes>,
        etcd: EtcdMeta,
    ) {
        self.events.push(WatchEvent {
            kind: EventKind::Put,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            rev,
            prev: prev.cloned(),
            etcd,
        });
    }

    /// The key of the last event was just attached to `lease`.
    pub(super) fn leased(&mut self, lease: u64) {
        if let Some(e) = self.events.last_mut() {
            e.etcd.lease = lease;
        }
    }

    fn delete_event(&mut self, key: &[u8], prev: &[u8], etcd: EtcdMeta) {
        self.events.push(WatchEvent {
            kind: EventKind::Delete,
            key: Bytes::copy_from_slice(key),
            value: Bytes::new(),
            rev: Revision {
                create_rev: 0,
                mod_rev: self.index,
                version: 0,
            },
            prev: Some(Bytes::copy_from_slice(prev)),
            etcd,
        });
    }

    /// What etcd's events say of a key's value before a change.
    fn before(
        &self,
        txn: &WriteTxn<'_>,
        key: &[u8],
        rev: Revision,
    ) -> Result<EtcdMeta, StateError> {
        let prev_lease = if self.leases {
            leases::lease_of(txn, key)?
        } else {
            0
        };
        Ok(EtcdMeta {
            prev_rev: Some(rev),
            lease: 0,
            prev_lease,
        })
    }
}

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

/// Puts `key`, remembering what it held for a rollback.
pub(super) fn put_undoable(
    txn: &mut WriteTxn<'_>,
    key: Vec<u8>,
    value: &[u8],
    undo: &mut Undo,
) -> Result<(), StateError> {
    let old = txn.get(&key)?;
    txn.put(&key, value)?;
    undo.push((key, old));
    Ok(())
}

pub(super) fn rollback(txn: &mut WriteTxn<'_>, undo: Undo) -> Result<(), StateError> {
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
pub(super) fn check(
    txn: &mut WriteTxn<'_>,
    guard: &Guard,
    skip_fence: bool,
) -> Result<Option<String>, StateError> {
    let failure = match guard {
        Guard::LockHeld { .. } if skip_fence => None,
        Guard::LockHeld { prefix, token } => lock_holder_differs(txn, prefix, *token)?,
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

/// Why the lock (or election) under `prefix` is not held with `token`:
/// its holder is the key with the lowest create revision.
fn lock_holder_differs(
    txn: &mut WriteTxn<'_>,
    prefix: &[u8],
    token: u64,
) -> Result<Option<String>, StateError> {
    let start = user_key(prefix);
    let end = prefix_end(&start);
    let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut holder: Option<u64> = None;
    for (k, raw) in txn.range(Bound::Included(&start[..]), end_bound)? {
        let (rev, _) = decode_stored(&k, &raw)?;
        holder = Some(holder.map_or(rev.create_rev, |h| h.min(rev.create_rev)));
    }
    Ok(match holder {
        Some(h) if h == token => None,
        Some(h) => Some(format!("the lock is held with token {h}, not {token}")),
        None => Some(format!("the lock is not held (token {token} expired)")),
    })
}

/// A failed guard or check: the batch fails on `key`, whose value at that
/// point is reported.
fn guard_failed(txn: &WriteTxn<'_>, guard: &Guard, why: String) -> Result<Outcome, StateError> {
    let key = guard.key().clone();
    let current = current_value(txn, &key)?;
    let code = match guard {
        Guard::LockHeld { .. } => ErrorCode::Fenced,
        _ => ErrorCode::AssertionFailed,
    };
    Ok(Outcome::Failed {
        code,
        key,
        current,
        message: why,
    })
}

/// Applies one batch: every guard holds and every op applies, or nothing
/// changes (its store writes and its events are undone).
pub(super) fn apply_batch(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    batch: &Batch,
) -> Result<Outcome, StateError> {
    for g in &batch.guards {
        if let Some(why) = check(txn, g, fx.skip_fence)? {
            return guard_failed(txn, g, why);
        }
    }
    let mut undo: Undo = Vec::new();
    let events_before = fx.events.len();
    let mut applied = Outcome::Applied {
        prev: None,
        count: 0,
    };
    for op in &batch.ops {
        let step = apply_op(txn, fx, op, &mut undo)?;
        match (step, &mut applied) {
            (Step::Failed(failed), _) => {
                rollback(txn, undo)?;
                fx.events.truncate(events_before);
                return Ok(failed);
            }
            (Step::Prev(p), Outcome::Applied { prev, .. }) => *prev = p,
            (Step::Count(n), Outcome::Applied { count, .. }) => *count += n,
            (Step::Version(v), Outcome::Applied { count, .. }) => *count = v,
            (Step::Etcd(o), _) => applied = o,
            (Step::Nothing, _) | (_, Outcome::Failed { .. } | Outcome::Etcd { .. }) => {}
        }
    }
    Ok(applied)
}

/// What one op did, for the batch's outcome.
enum Step {
    Nothing,
    /// The value a set / delete / remove replaced.
    Prev(Option<Bytes>),
    /// Keys deleted (delete_prefix, a lease revoke): summed.
    Count(u64),
    /// A script version, or a granted lease's id: the last one counts.
    Version(u64),
    /// An etcd request's response (the batch's only op).
    Etcd(Outcome),
    Failed(Outcome),
}

fn failed(code: ErrorCode, key: Bytes, message: impl Into<String>) -> Step {
    Step::Failed(Outcome::Failed {
        code,
        key,
        current: None,
        message: message.into(),
    })
}

fn apply_op(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    op: &Op,
    undo: &mut Undo,
) -> Result<Step, StateError> {
    Ok(match op {
        Op::Set(k, v) => Step::Prev(set(txn, fx, k, v, undo)?),
        Op::SetLeased { key, value, lease } => {
            let prev = set(txn, fx, key, value, undo)?;
            match leases::attach(txn, key, *lease, undo)? {
                Ok(()) => {
                    fx.leased(*lease);
                    Step::Prev(prev)
                }
                Err((code, why)) => failed(code, key.clone(), why),
            }
        }
        Op::Delete(k) | Op::Remove(k) => match remove(txn, fx, k, undo)? {
            None if matches!(op, Op::Delete(_)) => failed(
                ErrorCode::NotFound,
                k.clone(),
                "delete of a key that does not exist",
            ),
            prev => Step::Prev(prev),
        },
        Op::DeletePrefix(p) => Step::Count(delete_prefix(txn, fx, p, undo)?),
        Op::Check(g) => match check(txn, g, fx.skip_fence)? {
            Some(why) => Step::Failed(guard_failed(txn, g, why)?),
            None => Step::Nothing,
        },
        Op::TestAndSet {
            key,
            expected,
            wanted,
        } => Step::Prev(test_and_set(txn, fx, key, expected, wanted, undo)?),
        Op::LeaseGrant { id, ttl_ms } => {
            fx.leases = true;
            match leases::grant(txn, fx.index, *id, *ttl_ms, undo)? {
                Ok(id) => Step::Version(id),
                Err((code, why)) => failed(code, Bytes::new(), why),
            }
        }
        Op::LeaseRevoke(id) => match leases::revoke(txn, fx.index, *id, undo, fx.events)? {
            Ok(n) => Step::Count(n),
            Err((code, why)) => failed(code, Bytes::new(), why),
        },
        Op::Etcd(payload) => match super::etcd::apply_etcd(txn, fx, payload)? {
            failed @ Outcome::Failed { .. } => Step::Failed(failed),
            o => Step::Etcd(o),
        },
        op => match apply_script_op(txn, fx.index, op, undo)? {
            Ok(version) => Step::Version(version),
            Err((code, message)) => failed(code, Bytes::new(), message),
        },
    })
}

/// Deletes `key` if it exists; returns the value it held.
pub(super) fn remove(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    key: &[u8],
    undo: &mut Undo,
) -> Result<Option<Bytes>, StateError> {
    let uk = user_key(key);
    let Some(raw) = txn.get(&uk)? else {
        return Ok(None);
    };
    let (rev, value) = decode_stored(&uk, &raw)?;
    let prev = Bytes::copy_from_slice(value);
    let meta = fx.before(txn, key, rev)?;
    txn.delete(&uk)?;
    undo.push((uk, Some(raw)));
    if fx.leases {
        leases::detach(txn, key, undo)?;
    }
    fx.delete_event(key, &prev, meta);
    Ok(Some(prev))
}

/// Deletes every key under `prefix`; returns how many.
fn delete_prefix(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    prefix: &[u8],
    undo: &mut Undo,
) -> Result<u64, StateError> {
    let start = user_key(prefix);
    let end = prefix_end(&start);
    let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let doomed = txn.range(Bound::Included(&start[..]), end_bound)?;
    let count = txn.delete_prefix(&start)?;
    for (k, v) in doomed {
        let user = user_part(&k);
        let (rev, value) = decode_stored(&k, &v)?;
        let meta = fx.before(txn, user, rev)?;
        fx.delete_event(user, value, meta);
        if fx.leases {
            leases::detach(txn, user, undo)?;
        }
        undo.push((k, Some(v)));
    }
    Ok(count)
}

/// Arakoon's `test_and_set` step: writes `wanted` (or removes the key)
/// only if the key holds `expected`, and never fails the batch. Returns
/// the value it found, as a standalone `test_and_set` reports it.
fn test_and_set(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
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
        Some(v) => set(txn, fx, key, v, undo)?,
        None => remove(txn, fx, key, undo)?,
    };
    Ok(current)
}

/// Sets `key` at log index `index`: a new key's revisions start there, an
/// existing key's version goes up by one. Returns the value it replaced.
pub(super) fn set(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    key: &[u8],
    value: &[u8],
    undo: &mut Undo,
) -> Result<Option<Bytes>, StateError> {
    let index = fx.index;
    let uk = user_key(key);
    let old = txn.get(&uk)?;
    let (rev, prev, meta) = match &old {
        Some(raw) => {
            let (r, v) = decode_stored(&uk, raw)?;
            let rev = Revision {
                create_rev: r.create_rev,
                mod_rev: index,
                version: r.version + 1,
            };
            (
                rev,
                Some(Bytes::copy_from_slice(v)),
                fx.before(txn, key, r)?,
            )
        }
        None => {
            let rev = Revision {
                create_rev: index,
                mod_rev: index,
                version: 1,
            };
            (rev, None, EtcdMeta::default())
        }
    };
    txn.put(&uk, &encode_stored(rev, value))?;
    undo.push((uk, old));
    if fx.leases {
        leases::detach(txn, key, undo)?;
    }
    fx.put_event(key, value, rev, prev.as_ref(), meta);
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
