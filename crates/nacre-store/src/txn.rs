//! Read and write transactions.

use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use parking_lot::MutexGuard;

use crate::btree::page::{ChildInfo, Val, ValRef};
use crate::btree::read::{lookup, Cursor};
use crate::btree::write::{in_range, Source, Tree};
use crate::error::{Error, Result};
use crate::options::Durability;
use crate::record::{put_u32, Kind};
use crate::store::{CommitInfo, Ctx, Inner, LogSink, Store, Version};

/// A consistent, read-only view of one committed state (the latest one, or
/// a named snapshot). Cheap to create; holds no lock. Pages it needs stay
/// readable for as long as it lives, even if the cleaner deletes their
/// segment meanwhile.
pub struct ReadTxn {
    inner: Arc<Inner>,
    version: Arc<Version>,
    root: Option<ChildInfo>,
    seq: u64,
}

impl ReadTxn {
    pub(crate) fn new(
        inner: Arc<Inner>,
        version: Arc<Version>,
        at: Option<(Option<ChildInfo>, u64)>,
    ) -> ReadTxn {
        let (root, seq) = at.unwrap_or((version.root, version.seq));
        ReadTxn {
            inner,
            version,
            root,
            seq,
        }
    }

    /// The commit this view shows.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A page source for this view; the version's root page is served
    /// without a cache lookup once read.
    fn ctx(&self) -> Ctx<'_> {
        let mut ctx = self.inner.ctx(&self.version.segs, false);
        if let (Some(r), Some(v)) = (self.root, self.version.root) {
            if r.ptr == v.ptr {
                if self.version.root_page.get().is_none() {
                    if let Ok(p) = ctx.page(r.ptr) {
                        let _ = self.version.root_page.set(p);
                    }
                }
                ctx.pinned = self.version.root_page.get();
                if let Some(root) = ctx.pinned.filter(|p| !p.is_leaf()) {
                    let slots = self
                        .version
                        .root_children
                        .get_or_init(|| (0..root.len()).map(|_| OnceLock::new()).collect());
                    ctx.pinned_children = Some(slots);
                }
            }
        }
        ctx
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        let ctx = self.ctx();
        match lookup(&ctx, root.ptr, key)? {
            None => Ok(None),
            Some(Val::Inline(v)) => Ok(Some(v)),
            Some(Val::Ext { vlen, ptr }) => ctx.value(ptr, vlen, key).map(Some),
        }
    }

    /// Look `key` up and hand its value to `f` without copying it out of
    /// the page (values in their own records are read first).
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        let ctx = self.ctx();
        let Some((page, i)) = crate::btree::read::find(&ctx, root.ptr, key)? else {
            return Ok(None);
        };
        match page.value(i) {
            ValRef::Inline(v) => Ok(Some(f(v))),
            ValRef::Ext { vlen, ptr } => Ok(Some(f(&ctx.value(ptr, vlen, key)?))),
        }
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        let Some(root) = self.root else {
            return Ok(false);
        };
        Ok(crate::btree::read::find(&self.ctx(), root.ptr, key)?.is_some())
    }

    /// Number of keys, in O(1).
    pub fn count(&self) -> u64 {
        self.root.map_or(0, |r| r.count)
    }

    /// Entries with keys in `[start, end]` (per the bounds), in key order.
    /// Stop early with `.take(n)`.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Iter {
        self.iter_inner(start, end, false)
    }

    /// Like `range`, from the last key down.
    pub fn range_rev(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Iter {
        self.iter_inner(start, end, true)
    }

    /// Every entry whose key starts with `prefix`.
    pub fn prefix(&self, prefix: &[u8]) -> Iter {
        match prefix_end(prefix) {
            Some(end) => self.iter_inner(Bound::Included(prefix), Bound::Excluded(&end), false),
            None => self.iter_inner(Bound::Included(prefix), Bound::Unbounded, false),
        }
    }

    /// The whole view as a stream of entries, in key order: how a snapshot
    /// is shipped to another node.
    pub fn iter(&self) -> Iter {
        self.iter_inner(Bound::Unbounded, Bound::Unbounded, false)
    }

    /// Visit the entries in `[start, end]` in key order (descending with
    /// `reverse`) without copying them out; `visit` returns `false` to stop.
    /// Returns how many entries were visited. The fastest way to scan.
    pub fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<u64> {
        let (seek, stop) = if reverse { (end, start) } else { (start, end) };
        let ctx = self.ctx();
        let mut cursor = Cursor::seek(&ctx, self.root.map(|r| r.ptr), seek, reverse)?;
        let mut seen = 0;
        while let Some((page, i)) = cursor.next(&ctx)? {
            let key = page.key(i);
            let inside = if reverse {
                in_range(key, stop, Bound::Unbounded)
            } else {
                in_range(key, Bound::Unbounded, stop)
            };
            if !inside {
                break;
            }
            seen += 1;
            let go_on = match page.value(i) {
                ValRef::Inline(v) => visit(key, v),
                ValRef::Ext { vlen, ptr } => visit(key, &ctx.value(ptr, vlen, key)?),
            };
            if !go_on {
                break;
            }
        }
        Ok(seen)
    }

    fn iter_inner(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, reverse: bool) -> Iter {
        let (seek, stop) = if reverse { (end, start) } else { (start, end) };
        let ctx = self.ctx();
        let cursor = Cursor::seek(&ctx, self.root.map(|r| r.ptr), seek, reverse);
        let (cursor, error) = match cursor {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        Iter {
            inner: self.inner.clone(),
            version: self.version.clone(),
            cursor,
            error,
            stop: own(stop),
            reverse,
        }
    }
}

fn own(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key with this prefix, if any.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A lazy stream of `(key, value)` entries. Owns what it needs, so it can
/// outlive the transaction that made it.
pub struct Iter {
    inner: Arc<Inner>,
    version: Arc<Version>,
    cursor: Option<Cursor>,
    error: Option<Error>,
    stop: Bound<Vec<u8>>,
    reverse: bool,
}

impl Iterator for Iter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.cursor = None;
            return Some(Err(e));
        }
        let cursor = self.cursor.as_mut()?;
        let ctx = self.inner.ctx(&self.version.segs, false);
        let (page, i) = match cursor.next(&ctx) {
            Ok(Some(x)) => x,
            Ok(None) => {
                self.cursor = None;
                return None;
            }
            Err(e) => {
                self.cursor = None;
                return Some(Err(e));
            }
        };
        let key = page.key(i);
        let inside = if self.reverse {
            in_range(key, self.stop.as_ref().map(Vec::as_slice), Bound::Unbounded)
        } else {
            in_range(key, Bound::Unbounded, self.stop.as_ref().map(Vec::as_slice))
        };
        if !inside {
            self.cursor = None;
            return None;
        }
        let value = match page.value(i) {
            ValRef::Inline(v) => Ok(v.to_vec()),
            ValRef::Ext { vlen, ptr } => ctx.value(ptr, vlen, key),
        };
        Some(value.map(|v| (key.to_vec(), v)))
    }
}

/// The single write transaction. Changes are invisible to readers until
/// `commit`; dropping the transaction (or `abort`) discards them.
pub struct WriteTxn<'a> {
    store: &'a Store,
    guard: Option<MutexGuard<'a, ()>>,
    base: Arc<Version>,
    tree: Tree,
    written: u64,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn new(store: &'a Store, guard: MutexGuard<'a, ()>) -> WriteTxn<'a> {
        let base = store.inner.current.load_full();
        let spares = std::mem::take(&mut *store.inner.spares.lock());
        let tree = Tree::new(base.root, store.inner.opts.node_size_bytes, spares);
        WriteTxn {
            store,
            guard: Some(guard),
            base,
            tree,
            written: 0,
        }
    }

    fn inner(&self) -> &'a Inner {
        &self.store.inner
    }

    /// The commit this transaction builds on.
    pub fn base_seq(&self) -> u64 {
        self.base.seq
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.inner().opts.key_size_max_bytes;
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                size: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn charge(&mut self, bytes: u64) -> Result<()> {
        let max = self.inner().opts.txn_size_max_bytes;
        if self.written + bytes > max {
            return Err(Error::TxnTooLarge {
                size: self.written + bytes,
                max,
            });
        }
        self.written += bytes;
        Ok(())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let inner = self.inner();
        let max = inner.opts.value_size_max_bytes;
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                max,
            });
        }
        self.charge((key.len() + value.len() + 16) as u64)?;
        let segs = inner.log.segments();
        let val = if value.len() > inner.opts.value_inline_max_bytes {
            // Large values get a record of their own, written now, so that
            // neither nodes nor transaction memory grow with them.
            let mut payload = Vec::with_capacity(4 + key.len() + value.len());
            put_u32(&mut payload, key.len() as u32);
            payload.extend_from_slice(key);
            payload.extend_from_slice(value);
            let ptr = inner.log.append(Kind::Value, &payload)?;
            Val::Ext {
                vlen: value.len() as u32,
                ptr,
            }
        } else {
            Val::Inline(value.to_vec())
        };
        self.tree.put(&inner.ctx(&segs, true), key, val)?;
        self.maybe_spill()
    }

    /// Remove `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        self.check_key(key)?;
        let inner = self.inner();
        let segs = inner.log.segments();
        let old = self.tree.delete(&inner.ctx(&segs, true), key)?;
        self.maybe_spill()?;
        Ok(old.is_some())
    }

    /// Remove every key in the range; returns how many were removed.
    pub fn delete_range(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        let inner = self.inner();
        let segs = inner.log.segments();
        let n = self
            .tree
            .delete_range(&inner.ctx(&segs, true), start, end)?;
        self.maybe_spill()?;
        Ok(n)
    }

    /// Remove every key that starts with `prefix`; returns how many.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> Result<u64> {
        match prefix_end(prefix) {
            Some(end) => self.delete_range(Bound::Included(prefix), Bound::Excluded(&end)),
            None => self.delete_range(Bound::Included(prefix), Bound::Unbounded),
        }
    }

    /// Read through this transaction's own changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let inner = self.inner();
        let segs = inner.log.segments();
        let ctx = inner.ctx(&segs, true);
        match self.tree.get(&ctx, key)? {
            None => Ok(None),
            Some(Val::Inline(v)) => Ok(Some(v)),
            Some(Val::Ext { vlen, ptr }) => ctx.value(ptr, vlen, key).map(Some),
        }
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        let inner = self.inner();
        let segs = inner.log.segments();
        Ok(self.tree.get(&inner.ctx(&segs, true), key)?.is_some())
    }

    /// Number of keys including this transaction's changes, in O(1).
    pub fn count(&self) -> u64 {
        self.tree.count()
    }

    /// Entries in the range as they stand in this transaction, in key order.
    /// The dirty part of the tree is written out first, so a scan inside a
    /// large transaction costs a spill.
    pub fn range(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let root = self.spill()?;
        let inner = self.inner();
        let version = Arc::new(Version::new(
            self.base.seq,
            root,
            self.base.catalog.clone(),
            inner.log.segments(),
        ));
        inner.log.flush()?;
        let view = ReadTxn::new(self.store.inner.clone(), version, None);
        view.range(start, end).collect()
    }

    fn maybe_spill(&mut self) -> Result<()> {
        if self.tree.dirty_bytes() > self.inner().opts.txn_dirty_max_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Write the dirty nodes out without a root record: they become part of
    /// this transaction's commit, or garbage if it aborts.
    fn spill(&mut self) -> Result<Option<ChildInfo>> {
        let inner = self.inner();
        let mut sink = LogSink { inner, written: 0 };
        let root = self.tree.flush(&mut sink)?;
        let w = sink.written;
        self.charge(w)?;
        Ok(root)
    }

    /// Commit with the store's default durability.
    pub fn commit(self) -> Result<CommitInfo> {
        let d = self.inner().opts.durability;
        self.commit_with(d)
    }

    /// Commit with the given durability. A transaction that changed nothing
    /// writes nothing and returns the sequence number it started from.
    pub fn commit_with(mut self, durability: Durability) -> Result<CommitInfo> {
        let unchanged = !self.tree.is_dirty()
            && self.tree.root.map(|c| c.r)
                == self
                    .base
                    .root
                    .map(|r| crate::btree::write::NodeRef::Clean(r.ptr));
        if unchanged {
            // Nothing to write, but an immediate commit still promises that
            // the state it returns (which may hold earlier lazy commits) is
            // durable. Free when nothing is pending.
            self.keep_spares();
            drop(self.guard.take());
            if durability == Durability::Immediate {
                self.store.sync()?;
            }
            return Ok(CommitInfo { seq: self.base.seq });
        }
        let root = self.spill()?;
        let superseded = self.tree.take_superseded();
        self.keep_spares();
        let guard = self.guard.take().expect("transaction already finished");
        let inner = self.inner();
        let seq = inner.commit_root(guard, root, self.base.catalog.clone(), durability)?;
        inner.cache.forget(&superseded);
        inner
            .counters
            .user_commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(CommitInfo { seq })
    }

    /// Discard every change (the same as dropping the transaction).
    pub fn abort(self) {}

    fn keep_spares(&mut self) {
        *self.inner().spares.lock() = self.tree.take_spares();
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if self.guard.is_some() {
            self.keep_spares();
        }
    }
}
