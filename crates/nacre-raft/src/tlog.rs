//! The tlog: Nacre's durable Raft log.
//!
//! A directory of segment files `tlog-<number as 16 hex digits>.log`, each a
//! sequence of checksummed records (see `record.rs` and docs/tlog-format.md).
//! Entries, hard states, conf states, snapshot installs and compactions are
//! all records, appended in the order they happen; replaying them in order
//! rebuilds the log. Truncating a conflicting suffix is logical: a later
//! entry record with a lower index supersedes everything from that index on.
//!
//! Ordering rules recovery relies on:
//! * records are buffered in memory and written with one positional write per
//!   `sync`, followed by one `sync_data` (group commit);
//! * a segment is synced in full before the next one is created; a new
//!   segment's header is written and synced, and the directory synced, before
//!   any other record goes into it — so every segment but the newest is
//!   complete, and its valid length is recorded in its successor's header;
//! * so only one write per file is ever unsynced, and only in the newest
//!   segment. A power cut may persist any subset of its sectors, so a damaged
//!   record there may be followed by intact ones. Every record carries
//!   `synced_end`, how much of its segment was durable when it was written:
//!   a damaged record is corruption if an intact later record vouches
//!   `synced_end` past its offset (the damaged bytes had been synced), and
//!   otherwise a torn tail (truncated there, everything after it zeroed);
//! * a compaction or snapshot record is synced before any segment is deleted,
//!   and only a prefix of segments (those holding no live entry) is deleted.
//!
//! Recovery, which replays the segments on open, is in `tlog/recover.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nacre_vfs::{zero_fill_range, VFile, Vfs};
use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};

use crate::error::TlogError;
use crate::record::{self, Kind, LogState, SegHeader, HEADER_LEN};

mod recover;

/// Tuning and limits of a [`Tlog`].
#[derive(Debug, Clone)]
pub struct TlogOptions {
    /// A new segment is started once the current one reaches this size.
    pub segment_size_bytes: u64,
    /// Largest encoded entry (index, term, type, data, context) accepted.
    pub entry_size_max_bytes: u64,
    /// Recent entries kept decoded in memory; older ones are read from disk.
    pub cache_bytes_max: u64,
    /// The current segment is kept written with zeros this far past its
    /// last record, so appends overwrite the file in place and their
    /// fdatasync does not also commit a file-size change (on ext4 that
    /// halves the cost of a small sync). Syncs that carry this much or more
    /// of new records skip it. 0 turns it off.
    pub zero_fill_ahead_bytes: u64,
}

impl Default for TlogOptions {
    fn default() -> Self {
        TlogOptions {
            segment_size_bytes: 64 << 20,
            entry_size_max_bytes: 64 << 20,
            cache_bytes_max: 64 << 20,
            zero_fill_ahead_bytes: 1 << 20,
        }
    }
}

/// Name of the lock file that keeps two processes from opening one tlog.
const LOCK_NAME: &str = "LOCK";

pub fn segment_name(seq: u64) -> String {
    format!("tlog-{seq:016x}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("tlog-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

struct Segment {
    path: PathBuf,
    file: Arc<dyn VFile>,
}

/// Where a live entry's record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    term: u64,
    seq: u64,
    offset: u64,
    /// Header plus payload, without padding.
    len: u32,
}

/// The durable Raft log. See the module documentation.
pub struct Tlog {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    opts: TlogOptions,
    _lock: Box<dyn Send + Sync>,
    /// Every segment file, by number; the last one is appended to.
    segments: BTreeMap<u64, Segment>,
    cur_seq: u64,
    /// Length of the current segment's header record (padded): a segment
    /// holding nothing else is never rolled away from.
    cur_header_bytes: u64,
    /// Bytes of the current segment written to the file.
    flushed_bytes: u64,
    /// Bytes of the current segment known durable.
    synced_bytes: u64,
    /// The current segment's file is written (with zeros past the records)
    /// up to here: appends below it do not grow the file, so their
    /// fdatasync need not wait for a metadata journal commit.
    zeroed_bytes: u64,
    /// Framed records not yet written; they start at `flushed_bytes`.
    buf: Vec<u8>,
    state: LogState,
    /// Locations of entries `state.start_index + 1 ..= last_index()`.
    index: VecDeque<Loc>,
    /// The newest `cache.len()` entries, decoded.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    scratch: Vec<u8>,
    /// Set by a failed write or sync: what reached the disk is unknown.
    poisoned: Option<String>,
}

impl Tlog {
    /// Open (creating if needed) the tlog in `dir` and recover it.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, opts: TlogOptions) -> Result<Tlog, TlogError> {
        if opts.segment_size_bytes == 0 {
            return Err(TlogError::InvalidArgument(
                "segment_size_bytes must be positive".into(),
            ));
        }
        // A payload length is a u32 on disk.
        let entry_cap = u64::from(u32::MAX) - record::ENTRY_FIXED_BYTES - HEADER_LEN as u64;
        if opts.entry_size_max_bytes > entry_cap {
            return Err(TlogError::InvalidArgument(format!(
                "entry_size_max_bytes must be at most {entry_cap}"
            )));
        }
        vfs.create_dir_all(dir)
            .map_err(TlogError::io("create tlog directory", dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = vfs
            .lock(&lock_path)
            .map_err(TlogError::io("lock tlog directory", &lock_path))?;
        let mut tlog = Tlog {
            vfs,
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            segments: BTreeMap::new(),
            cur_seq: 0,
            cur_header_bytes: 0,
            flushed_bytes: 0,
            zeroed_bytes: 0,
            synced_bytes: 0,
            buf: Vec::new(),
            state: LogState::default(),
            index: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            scratch: Vec::new(),
            poisoned: None,
        };
        tlog.recover()?;
        Ok(tlog)
    }

    fn sync_dir(&self) -> Result<(), TlogError> {
        self.vfs
            .sync_dir(&self.dir)
            .map_err(TlogError::io("sync tlog directory", &self.dir))
    }

    fn open_segment(&self, seq: u64) -> Result<Segment, TlogError> {
        let path = self.dir.join(segment_name(seq));
        let file = self
            .vfs
            .open(&path, false)
            .map_err(TlogError::io("open segment", &path))?;
        Ok(Segment { path, file })
    }

    /// Create segment `seq` holding only its header, durably (file data and
    /// directory entry), and make it the current segment.
    fn create_segment(&mut self, seq: u64, prev_seq: u64, prev_end: u64) -> Result<(), TlogError> {
        let path = self.dir.join(segment_name(seq));
        let file = self
            .vfs
            .open(&path, true)
            .map_err(TlogError::io("create segment", &path))?;
        // Numbers only grow and older files are never renamed, so an existing
        // non-empty file here means the directory holds something foreign.
        if file.len().map_err(TlogError::io("stat segment", &path))? != 0 {
            return Err(TlogError::Format(format!(
                "{} exists already and is not empty",
                path.display()
            )));
        }
        let hdr = SegHeader {
            seq,
            prev_seq,
            prev_end,
            last_index: self.last_index(),
            state: self.state.clone(),
        };
        let mut bytes = Vec::new();
        record::frame(
            &mut bytes,
            0,
            seq,
            Kind::Header,
            0,
            &record::encode_header(&hdr),
        );
        file.write_all_at(&bytes, 0)
            .map_err(TlogError::io("write segment header", &path))?;
        file.sync_data()
            .map_err(TlogError::io("sync segment", &path))?;
        self.sync_dir()?;
        self.segments.insert(seq, Segment { path, file });
        self.cur_seq = seq;
        self.cur_header_bytes = bytes.len() as u64;
        self.flushed_bytes = bytes.len() as u64;
        self.synced_bytes = bytes.len() as u64;
        self.zeroed_bytes = bytes.len() as u64;
        Ok(())
    }

    fn check_writable(&self) -> Result<(), TlogError> {
        match &self.poisoned {
            Some(why) => Err(TlogError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Remember an I/O failure: nothing more may be written in this life.
    fn poison_on<T>(&mut self, r: Result<T, TlogError>) -> Result<T, TlogError> {
        if let Err(e) = &r {
            if self.poisoned.is_none() {
                tracing::error!(error = %e, "tlog write failed; refusing further writes until reopened");
                self.poisoned = Some(e.to_string());
            }
        }
        r
    }

    fn cur_len(&self) -> u64 {
        self.flushed_bytes + self.buf.len() as u64
    }

    /// Start a new segment if the current one is full (and holds more than
    /// its header, so a tiny segment size cannot roll forever).
    fn maybe_roll(&mut self) -> Result<(), TlogError> {
        let len = self.cur_len();
        if len < self.opts.segment_size_bytes || len <= self.cur_header_bytes {
            return Ok(());
        }
        // The old segment must be complete and durable before a successor
        // exists: recovery treats damage in any but the newest as corruption.
        self.flush_and_sync()?;
        let seq = (self.last_index() + 1).max(self.cur_seq + 1);
        self.create_segment(seq, self.cur_seq, self.flushed_bytes)
    }

    /// Frame a record into the write buffer of the current segment.
    fn push_record(&mut self, kind: Kind, payload: &[u8]) -> (u64, u32) {
        record::frame(
            &mut self.buf,
            self.flushed_bytes,
            self.cur_seq,
            kind,
            self.synced_bytes,
            payload,
        )
    }

    fn flush_and_sync(&mut self) -> Result<(), TlogError> {
        let seg = &self.segments[&self.cur_seq];
        if !self.buf.is_empty() {
            seg.file
                .write_all_at(&self.buf, self.flushed_bytes)
                .map_err(TlogError::io("write segment", &seg.path))?;
            self.flushed_bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        self.zeroed_bytes = self.zeroed_bytes.max(self.flushed_bytes);
        // Zeros read as the end of the log at recovery, so the fill never
        // changes what the log holds; it only keeps later fdatasyncs from
        // growing the file.
        let fresh = self.flushed_bytes.saturating_sub(self.synced_bytes);
        if let Some(fill) = zero_fill_range(
            fresh,
            self.flushed_bytes,
            self.zeroed_bytes,
            self.opts.zero_fill_ahead_bytes,
            u64::MAX,
        ) {
            seg.file
                .write_zeros(fill.start, fill.end - fill.start)
                .map_err(TlogError::io("zero-fill segment", &seg.path))?;
            self.zeroed_bytes = fill.end;
        }
        if self.synced_bytes < self.flushed_bytes {
            seg.file
                .sync_data()
                .map_err(TlogError::io("sync segment", &seg.path))?;
            self.synced_bytes = self.flushed_bytes;
        }
        Ok(())
    }

    /// Append contiguous `entries`; a suffix of the log from
    /// `entries[0].index` on is replaced. Durable at the next [`Tlog::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), TlogError> {
        self.check_writable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let first_index = first.index;
        if first_index <= self.state.start_index {
            return Err(TlogError::InvalidArgument(format!(
                "append at index {first_index} at or below the log start {}",
                self.state.start_index
            )));
        }
        if first_index > self.last_index() + 1 {
            return Err(TlogError::InvalidArgument(format!(
                "append at index {first_index} leaves a gap after the last index {}",
                self.last_index()
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            if e.index != first_index + i as u64 {
                return Err(TlogError::InvalidArgument(format!(
                    "entries are not contiguous: index {} at position {i}",
                    e.index
                )));
            }
            let size_bytes = record::entry_payload_bytes(e);
            if size_bytes > self.opts.entry_size_max_bytes {
                return Err(TlogError::TooLarge {
                    size_bytes,
                    max_bytes: self.opts.entry_size_max_bytes,
                });
            }
        }
        // Roll before the in-memory truncation: a new segment's header must
        // describe the log as replaying the records before it leaves it, and
        // the truncation only reaches the disk with the first new entry.
        let r = self.maybe_roll();
        self.poison_on(r)?;
        self.truncate_from(first_index);
        let r = self.append_inner(entries);
        self.poison_on(r)
    }

    fn append_inner(&mut self, entries: &[Entry]) -> Result<(), TlogError> {
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                self.maybe_roll()?;
            }
            let mut payload = std::mem::take(&mut self.scratch);
            payload.clear();
            record::encode_entry(&mut payload, e);
            let (offset, len) = self.push_record(Kind::Entry, &payload);
            self.scratch = payload;
            self.index.push_back(Loc {
                term: e.term,
                seq: self.cur_seq,
                offset,
                len,
            });
            self.cache_bytes += record::entry_payload_bytes(e);
            self.cache.push_back(e.clone());
            self.evict_cache();
        }
        Ok(())
    }

    fn evict_cache(&mut self) {
        while self.cache_bytes > self.opts.cache_bytes_max {
            let Some(e) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= record::entry_payload_bytes(&e);
        }
    }

    /// Forget entries `index..` in memory (the records stay on disk and are
    /// superseded on replay by the ones written next).
    fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.state.start_index + 1) as usize;
        self.index.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index >= index) {
            let e = self.cache.pop_back().unwrap();
            self.cache_bytes -= record::entry_payload_bytes(&e);
        }
    }

    /// Record a new hard state; durable at the next [`Tlog::sync`].
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), TlogError> {
        self.check_writable()?;
        let r = self.maybe_roll();
        self.poison_on(r)?;
        self.push_record(Kind::HardState, &record::encode_hard_state(hs));
        self.state.hard_state = hs.clone();
        Ok(())
    }

    /// Record a new conf state; durable at the next [`Tlog::sync`].
    pub fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), TlogError> {
        self.check_writable()?;
        let r = self.maybe_roll();
        self.poison_on(r)?;
        self.push_record(Kind::ConfState, &record::encode_conf_state(cs));
        self.state.conf_state = cs.clone();
        Ok(())
    }

    /// Make everything recorded so far durable: one write and one
    /// `sync_data` for all of it.
    pub fn sync(&mut self) -> Result<(), TlogError> {
        self.check_writable()?;
        let r = self.flush_and_sync();
        self.poison_on(r)
    }

    /// Install a snapshot's metadata: every entry is dropped, the log starts
    /// after `meta.index`. Durable when this returns.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), TlogError> {
        self.check_writable()?;
        if meta.index < self.state.start_index {
            return Err(TlogError::InvalidArgument(format!(
                "snapshot at index {} is older than the log start {}",
                meta.index, self.state.start_index
            )));
        }
        let r = self.maybe_roll();
        self.poison_on(r)?;
        self.push_record(Kind::Snapshot, &record::encode_snapshot(meta));
        self.index.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.state.start_index = meta.index;
        self.state.start_term = meta.term;
        self.state.conf_state = meta.get_conf_state().clone();
        self.state.snapshot =
            record::snapshot_meta(meta.index, meta.term, meta.get_conf_state().clone());
        let r = self
            .flush_and_sync()
            .and_then(|()| self.remove_dead_segments());
        self.poison_on(r)
    }

    /// Entries up to `index` are no longer needed; segments holding only
    /// such entries are deleted. `term(index)` stays answerable.
    pub fn compact(&mut self, index: u64) -> Result<(), TlogError> {
        self.check_writable()?;
        if index <= self.state.start_index {
            return Ok(());
        }
        if index > self.last_index() {
            return Err(TlogError::InvalidArgument(format!(
                "compaction to {index} is past the last index {}",
                self.last_index()
            )));
        }
        let term = self.term(index)?;
        let r = self.maybe_roll();
        self.poison_on(r)?;
        self.push_record(Kind::Compact, &record::encode_compact(index, term));
        let drop = (index - self.state.start_index) as usize;
        self.index.drain(..drop);
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().unwrap();
            self.cache_bytes -= record::entry_payload_bytes(&e);
        }
        self.state.start_index = index;
        self.state.start_term = term;
        if self.dead_segments().next().is_none() {
            // Nothing to delete: the record may become durable with the
            // next sync; losing it only brings back entries nobody needs.
            return Ok(());
        }
        let r = self
            .flush_and_sync()
            .and_then(|()| self.remove_dead_segments());
        self.poison_on(r)
    }

    /// Segments older than the one holding the oldest live entry. Live
    /// entries' segments never decrease with their index (writing index i
    /// drops every entry above it), so these hold no live entry, and every
    /// newer segment's header restates the rest of the state.
    fn dead_segments(&self) -> impl Iterator<Item = u64> + '_ {
        let keep_from = self.index.front().map_or(self.cur_seq, |l| l.seq);
        self.segments.range(..keep_from).map(|(&seq, _)| seq)
    }

    /// Delete dead segments, oldest first. Call only once the record that
    /// made them dead is durable.
    fn remove_dead_segments(&mut self) -> Result<(), TlogError> {
        let dead: Vec<u64> = self.dead_segments().collect();
        if dead.is_empty() {
            return Ok(());
        }
        for seq in dead {
            let path = self.segments[&seq].path.clone();
            self.vfs
                .remove(&path)
                .map_err(TlogError::io("remove segment", &path))?;
            self.segments.remove(&seq);
        }
        self.sync_dir()
    }

    pub fn first_index(&self) -> u64 {
        self.state.start_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.state.start_index + self.index.len() as u64
    }

    /// Term of entry `idx`, for `first_index() - 1 <= idx <= last_index()`.
    pub fn term(&self, idx: u64) -> Result<u64, TlogError> {
        if idx == self.state.start_index {
            return Ok(self.state.start_term);
        }
        if idx < self.state.start_index {
            return Err(TlogError::Compacted);
        }
        if idx > self.last_index() {
            return Err(TlogError::Unavailable);
        }
        Ok(self.index[(idx - self.state.start_index - 1) as usize].term)
    }

    /// Entries `lo..hi`, with raft's size rule: the first entry always, then
    /// more while their total protobuf size stays within `max_size`.
    pub fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, TlogError> {
        if lo > hi {
            return Err(TlogError::InvalidArgument(format!(
                "entries({lo}, {hi}): low above high"
            )));
        }
        if lo < self.first_index() {
            return Err(TlogError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(TlogError::Unavailable);
        }
        let max = max_size.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut total_bytes = 0u64;
        for idx in lo..hi {
            let e = self.entry(idx)?;
            total_bytes += u64::from(e.compute_size());
            if !out.is_empty() && total_bytes > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    /// One live entry, from the cache or, checked again, from its record.
    fn entry(&self, idx: u64) -> Result<Entry, TlogError> {
        let cache_first = self.last_index() + 1 - self.cache.len() as u64;
        if idx >= cache_first {
            return Ok(self.cache[(idx - cache_first) as usize].clone());
        }
        let loc = self.index[(idx - self.state.start_index - 1) as usize];
        let seg = &self.segments[&loc.seq];
        let mut bytes = vec![0u8; loc.len as usize];
        if loc.seq == self.cur_seq && loc.offset >= self.flushed_bytes {
            let at = (loc.offset - self.flushed_bytes) as usize;
            bytes.copy_from_slice(&self.buf[at..at + loc.len as usize]);
        } else {
            seg.file
                .read_exact_at(&mut bytes, loc.offset)
                .map_err(TlogError::io("read entry", &seg.path))?;
        }
        let bad = |what: &str| TlogError::corrupt(&seg.path, loc.offset, what.to_string());
        let f = record::unframe(&bytes, 0, loc.seq, loc.offset)
            .ok_or_else(|| bad("entry record fails its checksum"))?;
        if f.kind != Kind::Entry {
            return Err(bad("expected an entry record"));
        }
        let e = record::decode_entry(f.payload).map_err(|e| bad(e.0))?;
        if e.index != idx || e.term != loc.term {
            return Err(bad("entry record holds another index or term"));
        }
        Ok(e)
    }

    pub fn hard_state(&self) -> HardState {
        self.state.hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.state.conf_state.clone()
    }

    /// Where to compact so that the entries kept after it, up to `upto`,
    /// take at most `bytes_max` of records: the lowest index `c` such that
    /// the records of `c + 1 ..= upto` sum to no more than `bytes_max`.
    /// Without a byte bound a tail of a few entries could be gigabytes (a
    /// value may be megabytes). Never below the log's start.
    pub fn tail_start(&self, upto: u64, bytes_max: u64) -> u64 {
        let upto = upto.min(self.last_index());
        let start = self.state.start_index;
        let mut kept = 0u64;
        let mut idx = upto;
        while idx > start {
            kept += u64::from(self.index[(idx - start - 1) as usize].len);
            if kept > bytes_max {
                return idx;
            }
            idx -= 1;
        }
        start
    }

    /// Metadata of the last installed snapshot (default if none).
    pub fn snapshot_meta(&self) -> SnapshotMetadata {
        self.state.snapshot.clone()
    }

    /// Number of segment files, for tests and metrics.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Entries and bytes in the cache, and its newest index.
    #[cfg(test)]
    pub(crate) fn cache_stats(&self) -> (usize, u64, Option<u64>) {
        (
            self.cache.len(),
            self.cache_bytes,
            self.cache.back().map(|e| e.index),
        )
    }

    /// The directory this tlog lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
