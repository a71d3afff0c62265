//! Tuning knobs and limits. Every limit is named `*_max` and enforced with a
//! typed error; `validate` rejects combinations that could not work.

use std::sync::Arc;

use crate::error::{Error, Result};
use nacre_vfs::{OsVfs, Vfs};

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged after the commit's bytes are fsynced. Concurrent immediate
    /// commits share one fsync (group commit).
    Immediate,
    /// Acknowledged once written to the operating system. Crash-consistent:
    /// a crash may lose it (and later lazy commits) but never leaves a
    /// half-applied state. Durable at the next immediate commit or `sync`.
    Lazy,
}

/// Pace and goal of the background cleaner.
#[derive(Debug, Clone)]
pub struct CleanerOptions {
    /// Run the cleaner on a background thread. With `false`, space is only
    /// reclaimed by explicit [`crate::Store::clean`] calls.
    pub background: bool,
    /// Clean while the segment files take more than this many times the live
    /// data (the pages and values reachable from the current root). This is
    /// the goal once writes pause.
    pub space_ratio_max: f64,
    /// While commits keep arriving, clean only past this ratio: cleaning
    /// competes with writers for the disk, the CPU and the writer lock, so
    /// during a burst it lets garbage build up to here and catches up when
    /// the burst ends.
    pub space_ratio_busy_max: f64,
    /// Past this ratio (and once the files exceed four segments), a new
    /// write transaction waits for the background cleaner to bring the
    /// files back under it: space stays bounded even when writers produce
    /// garbage faster than it can be cleaned.
    pub space_ratio_stall: f64,
    /// The longest a write transaction waits in such a stall; after that it
    /// goes ahead (and the stall is logged), so a cleaner that cannot
    /// reclaim anything never stops writes for good.
    pub stall_ms_max: u64,
    /// How often the background cleaner wakes to check the ratio.
    pub interval_ms: u64,
    /// Bytes of old segment scanned per cleaning commit: the writer lock is
    /// held for one such batch at a time, so this bounds the stall a writer
    /// can see.
    pub batch_bytes_max: u64,
    /// Bytes of old segments the background cleaner scans per second while
    /// it catches up (the files are under `space_ratio_busy_max` times the
    /// live data), so that it does not crowd out readers and writers; past
    /// that ratio it runs as fast as it can. 0: never throttled.
    pub rate_bytes_per_s_max: u64,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions {
            background: true,
            space_ratio_max: 1.5,
            space_ratio_busy_max: 3.0,
            space_ratio_stall: 8.0,
            stall_ms_max: 10_000,
            interval_ms: 100,
            batch_bytes_max: 4 << 20,
            rate_bytes_per_s_max: 64 << 20,
        }
    }
}

/// Options for [`crate::Store::open`].
#[derive(Clone)]
pub struct Options {
    /// The file layer. [`OsVfs`] unless testing.
    pub vfs: Arc<dyn Vfs>,
    /// Bytes of decoded pages kept in memory.
    pub cache_size_bytes: usize,
    /// Size of one segment file. Fixed when the store is created; a store
    /// reopened with a different value keeps its own.
    pub segment_size_bytes: u64,
    /// Durability of [`crate::WriteTxn::commit`].
    pub durability: Durability,
    /// A B+tree node is split once its encoding passes this size.
    pub node_size_bytes: usize,
    /// Values up to this size live inside leaves; larger ones are written as
    /// separate value records so that they never bloat nodes.
    pub value_inline_max_bytes: usize,
    pub key_size_max_bytes: usize,
    pub value_size_max_bytes: usize,
    /// Bytes one write transaction may append (nodes and values).
    pub txn_size_max_bytes: u64,
    /// Dirty node bytes a write transaction keeps in memory before it writes
    /// them out early (they become part of its commit, or garbage on abort).
    pub txn_dirty_max_bytes: usize,
    /// Number of named snapshots.
    pub snapshots_max: usize,
    pub cleaner: CleanerOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vfs: Arc::new(OsVfs::default()),
            cache_size_bytes: 64 << 20,
            segment_size_bytes: 64 << 20,
            durability: Durability::Immediate,
            node_size_bytes: 4096,
            value_inline_max_bytes: 1024,
            key_size_max_bytes: 4096,
            value_size_max_bytes: 16 << 20,
            txn_size_max_bytes: 4 << 30,
            txn_dirty_max_bytes: 256 << 20,
            snapshots_max: 64,
            cleaner: CleanerOptions::default(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("cache_size_bytes", &self.cache_size_bytes)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("durability", &self.durability)
            .field("node_size_bytes", &self.node_size_bytes)
            .field("value_inline_max_bytes", &self.value_inline_max_bytes)
            .field("key_size_max_bytes", &self.key_size_max_bytes)
            .field("value_size_max_bytes", &self.value_size_max_bytes)
            .field("txn_size_max_bytes", &self.txn_size_max_bytes)
            .field("txn_dirty_max_bytes", &self.txn_dirty_max_bytes)
            .field("snapshots_max", &self.snapshots_max)
            .field("cleaner", &self.cleaner)
            .finish()
    }
}

/// Hard ceilings that the on-disk format depends on.
pub const KEY_SIZE_LIMIT: usize = 64 << 10;
pub const NODE_SIZE_LIMIT: usize = 1 << 20;
pub const SEGMENT_SIZE_MIN: u64 = 1 << 16;
pub const SEGMENT_SIZE_LIMIT: u64 = 1 << 32;

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOptions(m));
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_LIMIT).contains(&self.segment_size_bytes) {
            return bad(format!(
                "segment_size_bytes must be within {SEGMENT_SIZE_MIN}..={SEGMENT_SIZE_LIMIT}"
            ));
        }
        if !(512..=NODE_SIZE_LIMIT / 4).contains(&self.node_size_bytes) {
            return bad(format!(
                "node_size_bytes must be within 512..={}",
                NODE_SIZE_LIMIT / 4
            ));
        }
        if self.key_size_max_bytes == 0 || self.key_size_max_bytes > KEY_SIZE_LIMIT {
            return bad(format!(
                "key_size_max_bytes must be within 1..={KEY_SIZE_LIMIT}"
            ));
        }
        if self.value_inline_max_bytes > self.node_size_bytes / 2 {
            return bad("value_inline_max_bytes must be at most node_size_bytes / 2".into());
        }
        // A value record must fit in one segment with room for its header
        // and key.
        let record_max = self.value_size_max_bytes as u64 + self.key_size_max_bytes as u64 + 4096;
        if record_max > self.segment_size_bytes {
            return bad(format!(
                "value_size_max_bytes ({}) must leave room in a segment of {} bytes",
                self.value_size_max_bytes, self.segment_size_bytes
            ));
        }
        if self.cache_size_bytes < 64 * 1024 {
            return bad("cache_size_bytes must be at least 64 KiB".into());
        }
        if self.cleaner.space_ratio_max.is_nan() || self.cleaner.space_ratio_max < 1.05 {
            return bad("cleaner.space_ratio_max must be at least 1.05".into());
        }
        if self.cleaner.space_ratio_busy_max.is_nan()
            || self.cleaner.space_ratio_busy_max < self.cleaner.space_ratio_max
        {
            return bad(
                "cleaner.space_ratio_busy_max must be at least cleaner.space_ratio_max".into(),
            );
        }
        if self.cleaner.batch_bytes_max == 0 || self.txn_dirty_max_bytes == 0 {
            return bad("cleaner.batch_bytes_max and txn_dirty_max_bytes must be positive".into());
        }
        if self.snapshots_max > 4096 {
            return bad("snapshots_max must be at most 4096".into());
        }
        Ok(())
    }
}
