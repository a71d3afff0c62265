//! The cleaner: reclaims the oldest segments by rewriting their live records
//! at the head of the log, then deleting them.
//!
//! Liveness needs no side table. Every node record holds its level and a key
//! inside its range (a leaf's first key, a branch's first separator), and a
//! value record holds its key; so a record is live in a tree exactly when
//! descending that tree by its key to its level lands on its position. The
//! trees that count are the current root and every snapshot root.
//!
//! Relocation copies each live record, and every node on the path above it,
//! once: a memo from old to new position makes nodes shared between the
//! current tree and snapshots stay shared. The copies have the same content
//! (child pointers aside), hence the same size, so key counts and byte
//! counts in parents stay exact.
//!
//! Work proceeds in batches of at most `cleaner.batch_bytes_max` bytes of
//! old segment, each one short write transaction, so writers interleave.
//! A segment is deleted only after a root that no longer references it is
//! durable; readers holding older roots keep their file handles.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::btree::leaf::DirtyLeaf;
use crate::btree::page::{branch_child_offset, ChildInfo, Val, ValRef};
use crate::btree::read::lookup;
use crate::btree::write::Source;
use crate::error::{Error, Result};
use crate::log::{parse_records, ScannedRecord};
use crate::options::Durability;
use crate::record::{align_up, Kind, Ptr, Reader, HEADER_LEN};
use crate::store::{CleanStats, Ctx, Inner, SnapshotInfo};

/// The background cleaner starts a new head segment to clean the old one
/// only once the head holds at least this much (or a quarter of a segment,
/// if less), and at least half the live data.
const HEAD_ROLL_MIN_BYTES: u64 = 1 << 20;

/// Clean every segment older than the head, after starting a fresh head so
/// that everything written so far can be reclaimed.
pub fn clean_all(inner: &Inner) -> Result<CleanStats> {
    let _cleaning = inner.cleaning.lock();
    let before = inner.log.bytes_on_disk();
    {
        let _guard = inner.begin_write_guard()?;
        inner.log.force_roll()?;
    }
    let head = inner.log.head_id();
    let victims: Vec<u64> = inner
        .log
        .segments()
        .keys()
        .copied()
        .filter(|&id| id < head)
        .collect();
    let mut stats = CleanStats::default();
    for id in victims {
        let s = clean_segment(inner, id, None)?.expect("foreground cleaning never stops early");
        stats.segments_cleaned += 1;
        stats.records_relocated += s.0;
        stats.bytes_relocated += s.1;
    }
    stats.bytes_on_disk_before = before;
    stats.bytes_on_disk_after = inner.log.bytes_on_disk();
    Ok(stats)
}

/// Bytes the store needs: what the current root reaches plus what every
/// snapshot reaches. Counting all of a snapshot's bytes overestimates (pages
/// are shared), which errs on the side of cleaning less rather than moving
/// the same live data in circles.
pub fn live_estimate(inner: &Inner) -> u64 {
    let v = inner.current.load();
    v.root.map_or(0, |r| r.bytes)
        + v.catalog
            .snapshots
            .iter()
            .map(|s| s.live_bytes)
            .sum::<u64>()
}

/// Past `space_ratio_busy_max` the cleaner neither yields nor paces.
fn urgent(inner: &Inner) -> bool {
    inner.log.bytes_on_disk() as f64
        > inner.opts.cleaner.space_ratio_busy_max * live_estimate(inner).max(1) as f64
}

/// One step of background cleaning: if the files hold more than `ratio`
/// times the live data, clean the oldest segment.
/// Returns the bytes it reclaimed (`None` if it had nothing to do).
pub fn clean_step(
    inner: &Inner,
    shutdown: &Arc<(Mutex<bool>, Condvar)>,
    ratio: f64,
) -> Result<Option<u64>> {
    let _cleaning = inner.cleaning.lock();
    let live = live_estimate(inner);
    let on_disk = inner.log.bytes_on_disk();
    if (on_disk as f64) <= ratio * live.max(1) as f64 {
        return Ok(None);
    }
    let head = inner.log.head_id();
    let Some(&oldest) = inner.log.segments().keys().next() else {
        return Ok(None);
    };
    if oldest >= head {
        // All the garbage is in the head, which is never cleaned while it is
        // written. Start a new head so that it can be, unless the head is
        // too small for that to be worth a segment.
        let roll_min = HEAD_ROLL_MIN_BYTES
            .min(inner.log.seg_size / 4)
            .max(live / 2);
        if inner.log.head_len() < roll_min {
            return Ok(None);
        }
        let _guard = inner.begin_write_guard()?;
        inner.log.force_roll()?;
    }
    if clean_segment(inner, oldest, Some(shutdown))?.is_none() {
        // Stopped early for a writer or for shutdown: not a sign that
        // cleaning is futile, just that it is not the time.
        return Ok(None);
    }
    Ok(Some(on_disk.saturating_sub(inner.log.bytes_on_disk())))
}

/// Relocate the live records of segment `id` and delete it. Returns
/// (records relocated, bytes relocated), or `None` if it stopped early. In the background (`pace` set),
/// unless the store is past `space_ratio_busy_max` (checked at every batch),
/// it keeps to `rate_bytes_per_s_max` and stops early, keeping the segment,
/// as soon as a write transaction commits.
fn clean_segment(
    inner: &Inner,
    id: u64,
    pace: Option<&Arc<(Mutex<bool>, Condvar)>>,
) -> Result<Option<(u64, u64)>> {
    let segs = inner.log.segments();
    let Some(seg) = segs.get(&id).cloned() else {
        // Cleaned and deleted already (only cleaning deletes segments).
        return Ok(Some((0, 0)));
    };
    let end = inner
        .log
        .segment_end(&segs, id)
        .ok_or_else(|| Error::corrupt(id * inner.log.seg_size, "cannot clean the head segment"))?;
    let base = id * inner.log.seg_size;
    let rate = inner.opts.cleaner.rate_bytes_per_s_max;
    let batch_max = inner.opts.cleaner.batch_bytes_max;
    let (mut moved_records, mut moved_bytes) = (0u64, 0u64);
    let started = Instant::now();
    let commits_at_start = inner.counters.user_commits.load(Ordering::Relaxed);
    // Read, verify and relocate one batch at a time, so that pacing covers
    // all of the work and memory stays at one batch.
    let mut pos = header_end();
    let mut buf = Vec::new();
    while pos < end {
        let want = (end - pos).min(batch_max);
        buf.resize(want as usize, 0);
        seg.file
            .read_exact_at(&mut buf, pos)
            .map_err(Error::io("read segment for cleaning"))?;
        // Every record of a completed segment must be intact: a bad one
        // could be hiding live data, so cleaning stops rather than deleting.
        let (records, used) = parse_records(&buf, base, pos)?;
        let used = if records.is_empty() {
            // One record larger than a batch: read exactly that record.
            let (_, len) = crate::record::peek_header(&buf).ok_or_else(|| {
                Error::corrupt(base + pos, "bad record header in a completed segment")
            })?;
            let rec = align_up((HEADER_LEN + len as usize) as u64);
            if pos + rec > end {
                return Err(Error::corrupt(
                    base + pos,
                    "record runs past the segment's end",
                ));
            }
            buf.resize(rec as usize, 0);
            seg.file
                .read_exact_at(&mut buf, pos)
                .map_err(Error::io("read segment for cleaning"))?;
            let (records, used) = parse_records(&buf, base, pos)?;
            let (r, b) = relocate_batch(inner, &buf, &records)?;
            moved_records += r;
            moved_bytes += b;
            used
        } else {
            let (r, b) = relocate_batch(inner, &buf, &records)?;
            moved_records += r;
            moved_bytes += b;
            used
        };
        pos += used;
        if pace.is_some_and(|p| *p.0.lock()) {
            // Shutting down: the rest of this segment waits for next time.
            return Ok(None);
        }
        let gentle = pace.is_some() && !urgent(inner);
        if gentle && inner.counters.user_commits.load(Ordering::Relaxed) != commits_at_start {
            // Catching up, and a writer has come: leave it the disk (our
            // writes would ride on its fsync) and finish this segment later.
            // What was relocated so far is committed; those records will be
            // dead when the segment is scanned again.
            return Ok(None);
        }
        if let (Some(shutdown), true) = (pace, gentle && rate > 0) {
            // Keep to the configured rate; wake early on shutdown.
            let due = Duration::from_secs_f64((pos - header_end()) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                let (m, cv) = &**shutdown;
                let mut stop = m.lock();
                if !*stop {
                    cv.wait_for(&mut stop, wait);
                }
                if *stop {
                    return Ok(None);
                }
            }
        }
    }

    // Recovery needs a root record newer than this segment (the current
    // one may live in it even when no node does), and that root must be
    // durable before the segment goes.
    {
        let guard = inner.begin_write_guard()?;
        let v = inner.current.load_full();
        inner.commit_root(guard, v.root, v.catalog.clone(), Durability::Lazy)?;
    }
    inner.log.flush()?;
    inner.log.sync_to(inner.log.written_upto())?;
    {
        let _guard = inner.begin_write_guard()?;
        inner.log.remove_segments(&[id])?;
        let v = inner.current.load_full();
        inner.current.store(Arc::new(crate::store::Version::new(
            v.seq,
            v.root,
            v.catalog.clone(),
            inner.log.segments(),
        )));
    }
    inner
        .counters
        .cleaned_segments
        .fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .relocated_bytes
        .fetch_add(moved_bytes, Ordering::Relaxed);
    tracing::debug!(segment = id, moved_records, moved_bytes, "segment cleaned");
    Ok(Some((moved_records, moved_bytes)))
}

fn header_end() -> u64 {
    align_up((HEADER_LEN + crate::log::SEG_HEADER_PAYLOAD) as u64)
}

/// What must be rewritten for one batch.
#[derive(Default)]
struct Plan {
    /// Positions of nodes to copy: live victims and every node above them.
    nodes: HashSet<u64>,
    /// Positions of value records to copy.
    values: HashSet<u64>,
    rewrite_catalog: bool,
}

fn relocate_batch(inner: &Inner, bytes: &[u8], batch: &[ScannedRecord]) -> Result<(u64, u64)> {
    let guard = inner.begin_write_guard()?;
    let v = inner.current.load_full();
    let segs = inner.log.segments();
    let ctx = inner.ctx(&segs, true);
    let mut roots: Vec<Ptr> = v.root.iter().map(|r| r.ptr).collect();
    roots.extend(
        v.catalog
            .snapshots
            .iter()
            .filter_map(|s| s.root.map(|r| r.ptr)),
    );

    let mut plan = Plan::default();
    let mut moved = (0u64, 0u64);
    for rec in batch {
        let live = match rec.kind {
            Kind::Leaf | Kind::Branch => {
                mark_node(&ctx, &roots, rec, &bytes[rec.payload.clone()], &mut plan)?
            }
            Kind::Value => mark_value(&ctx, &roots, rec, &bytes[rec.payload.clone()], &mut plan)?,
            Kind::Catalog => {
                let live = v.catalog.ptr.addr == rec.ptr.addr;
                plan.rewrite_catalog |= live;
                live
            }
            Kind::Root | Kind::SegmentHeader => false,
        };
        if live {
            moved.0 += 1;
            moved.1 += align_up(rec.ptr.len as u64);
        }
    }
    if plan.nodes.is_empty() && plan.values.is_empty() && !plan.rewrite_catalog {
        return Ok(moved);
    }

    let mut memo: HashMap<u64, Ptr> = HashMap::new();
    let mut reloc = Relocator {
        inner,
        ctx: &ctx,
        plan: &plan,
        memo: &mut memo,
    };
    let root = match v.root {
        Some(r) => Some(ChildInfo {
            ptr: reloc.node(r.ptr)?,
            ..r
        }),
        None => None,
    };
    let mut snaps_changed = plan.rewrite_catalog;
    let mut snaps: Vec<SnapshotInfo> = Vec::with_capacity(v.catalog.snapshots.len());
    for s in &v.catalog.snapshots {
        let mut s = s.clone();
        if let Some(r) = s.root {
            let p = reloc.node(r.ptr)?;
            snaps_changed |= p != r.ptr;
            s.root = Some(ChildInfo { ptr: p, ..r });
        }
        snaps.push(s);
    }
    let catalog = if snaps_changed {
        inner.write_catalog(snaps)?
    } else {
        v.catalog.clone()
    };
    inner.commit_root(guard, root, catalog, Durability::Lazy)?;
    Ok(moved)
}

/// Is this node record live in any tree? If so, mark it and its ancestors.
fn mark_node(
    ctx: &Ctx<'_>,
    roots: &[Ptr],
    rec: &ScannedRecord,
    payload: &[u8],
    plan: &mut Plan,
) -> Result<bool> {
    let (level, key) = crate::btree::page::probe(payload, rec.kind, rec.ptr.addr)?;
    let mut live = false;
    for &root in roots {
        if root.addr == rec.ptr.addr {
            plan.nodes.insert(root.addr);
            live = true;
            continue;
        }
        let Some(key) = key else { continue };
        if let Some(path) = path_to(ctx, root, key, level)? {
            if path.last() == Some(&rec.ptr.addr) {
                plan.nodes.extend(path);
                live = true;
            }
        }
    }
    Ok(live)
}

fn mark_value(
    ctx: &Ctx<'_>,
    roots: &[Ptr],
    rec: &ScannedRecord,
    payload: &[u8],
    plan: &mut Plan,
) -> Result<bool> {
    let mut r = Reader::new(payload, rec.ptr.addr);
    let klen = r.u32()? as usize;
    let key = r.bytes(klen)?;
    let mut live = false;
    for &root in roots {
        if let Some(Val::Ext { ptr, .. }) = lookup(ctx, root, key)? {
            if ptr.addr == rec.ptr.addr {
                // Every tree reaches level 0, unless the one on disk is
                // deeper than `path_to` follows: corrupt, as `lookup` agrees.
                let path = path_to(ctx, root, key, 0)?
                    .ok_or_else(|| Error::corrupt(root.addr, "tree deeper than any valid tree"))?;
                plan.nodes.extend(path);
                plan.values.insert(rec.ptr.addr);
                live = true;
            }
        }
    }
    Ok(live)
}

/// Positions of the nodes from `root` down to the node at `level` covering
/// `key`, if the tree is that tall. The node at `level` itself is not read:
/// its parent's pointer names it, and leaves are what misses the cache.
fn path_to(ctx: &Ctx<'_>, root: Ptr, key: &[u8], level: u8) -> Result<Option<Vec<u64>>> {
    let mut path = vec![root.addr];
    let mut page = ctx.page(root)?;
    loop {
        if page.level == level {
            return Ok(Some(path));
        }
        if page.level < level || path.len() > 64 {
            return Ok(None);
        }
        let child = page.child(page.child_index(key)).ptr;
        path.push(child.addr);
        if page.level == level + 1 {
            return Ok(Some(path));
        }
        let next = ctx.page(child)?;
        // Levels come from disk: 255 + 1 must be an error, not an overflow.
        if next.level.checked_add(1) != Some(page.level) {
            return Err(Error::corrupt(
                next.ptr.addr,
                "child level does not match its parent",
            ));
        }
        page = next;
    }
}

struct Relocator<'a, 'b> {
    inner: &'a Inner,
    ctx: &'a Ctx<'b>,
    plan: &'a Plan,
    memo: &'a mut HashMap<u64, Ptr>,
}

impl Relocator<'_, '_> {
    fn node(&mut self, ptr: Ptr) -> Result<Ptr> {
        if let Some(&p) = self.memo.get(&ptr.addr) {
            return Ok(p);
        }
        if !self.plan.nodes.contains(&ptr.addr) {
            return Ok(ptr);
        }
        // A relocated node takes its old copy's place in the cache if that
        // copy was there, and stays out of it if not: most of what the
        // cleaner moves is cold, and caching it pushed readers' pages out.
        let cached = self.inner.cache.get(ptr.addr).filter(|p| p.ptr == ptr);
        let was_cached = cached.is_some();
        let page = match cached {
            Some(p) => p,
            None => self.ctx.page_to_copy(ptr)?,
        };
        // A relocated node is its old payload with some pointers changed:
        // copy the bytes and patch them, rather than decode and re-encode.
        let mut rec = crate::record::record_buf(page.payload_len());
        let kind = if page.is_leaf() {
            let moved = (0..page.len()).any(|i| {
                matches!(page.value(i), ValRef::Ext { ptr: vp, .. }
                    if self.plan.values.contains(&vp.addr))
            });
            if moved {
                let mut leaf = DirtyLeaf::from_page(&page);
                for i in 0..page.len() {
                    if let ValRef::Ext { vlen, ptr: vp } = page.value(i) {
                        if self.plan.values.contains(&vp.addr) {
                            let ptr = self.value(vp)?;
                            leaf.replace(i, Val::Ext { vlen, ptr });
                        }
                    }
                }
                leaf.encode(&mut rec);
            } else {
                rec.extend_from_slice(page.payload());
            }
            Kind::Leaf
        } else {
            rec.extend_from_slice(page.payload());
            for i in 0..page.len() {
                let c = page.child(i);
                let moved = self.node(c.ptr)?;
                if moved != c.ptr {
                    // The child entry starts with the pointer: addr u64 | len u32.
                    let at = HEADER_LEN + branch_child_offset(i);
                    rec[at..at + 8].copy_from_slice(&moved.addr.to_le_bytes());
                    rec[at + 8..at + 12].copy_from_slice(&moved.len.to_le_bytes());
                }
            }
            Kind::Branch
        };
        let new = self.inner.append_node(kind, rec, was_cached)?;
        if was_cached {
            self.inner.cache.forget(&[ptr.addr]);
        }
        assert_eq!(new.len, ptr.len, "a relocated node changed size");
        self.memo.insert(ptr.addr, new);
        Ok(new)
    }

    fn value(&mut self, ptr: Ptr) -> Result<Ptr> {
        if let Some(&p) = self.memo.get(&ptr.addr) {
            return Ok(p);
        }
        let (kind, payload) = self.inner.log.read_record(self.ctx.segs, ptr)?;
        if kind != Kind::Value {
            return Err(Error::corrupt(
                ptr.addr,
                "value pointer leads to a non-value record",
            ));
        }
        let new = self.inner.log.append(Kind::Value, &payload)?;
        self.memo.insert(ptr.addr, new);
        Ok(new)
    }
}
