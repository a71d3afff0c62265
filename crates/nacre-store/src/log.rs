//! The log: numbered segment files that records are only ever appended to.
//!
//! A record's log position is `segment_id * segment_size + offset`, so a
//! position names a segment and a place in it, and positions only grow.
//! Segment ids start at 1; position 0 is never a record.
//!
//! Ordering rules that recovery relies on (argued in docs/store-format.md):
//! * a segment is fsynced in full before the next one is created, and the
//!   directory is fsynced after a segment file is created, so every segment
//!   but the newest is complete and durable;
//! * the newest segment's valid prefix ends at the first record that fails
//!   to parse; a root record is only trusted if everything before it in that
//!   segment is valid;
//! * every open starts a new segment whose header records where the valid
//!   data of the previous segment ended, so bytes after a torn tail are never
//!   followed by new records in the same file.
//!
//! The log's records and file names are in `log/format.rs`, the scans that
//! read segments back whole in `log/scan.rs`, and `Log::open` in
//! `log/recover.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::record::{self, align_up, Kind, Ptr, HEADER_LEN};
use nacre_vfs::{zero_fill_range, VFile, Vfs};

mod format;
mod recover;
mod scan;

pub use format::RootRec;
use format::{segment_name, SegHeader};
pub use scan::{parse_records, ScannedRecord};

pub const SEG_HEADER_PAYLOAD: usize = 4 + 8 + 8 + 8 + 8;
/// Buffered bytes that force a write to the file before the commit ends.
const APPEND_BUF_MAX: usize = 1 << 20;
/// Durable commits keep this much of the head segment written ahead with
/// zeros: an fdatasync that need not record a new file size (no journal
/// commit on ext4) is markedly cheaper, and only the fsync path pays for it.
/// Syncs that carry this much or more of new records skip it (see
/// `nacre_vfs::zero_fill_range`).
const ZERO_AHEAD: u64 = 1 << 20;
/// The page size that early writeback rounds down to.
const WRITEBACK_PAGE: u64 = 4096;

/// One segment file.
pub struct Segment {
    pub id: u64,
    pub file: Arc<dyn VFile>,
    /// Where the valid records of the previous segment end (an offset in it).
    pub prev_end: u64,
}

pub type SegTable = BTreeMap<u64, Arc<Segment>>;

struct Appender {
    head: Arc<Segment>,
    /// Offset in `head` where the next record goes (buffered bytes included).
    off: u64,
    /// Offset in `head` up to which bytes were handed to the OS.
    flushed_off: u64,
    /// Offset in `head` up to which the file has been written (records or
    /// zero fill).
    zeroed_off: u64,
    buf: Vec<u8>,
}

struct SyncState {
    synced_upto: u64,
    syncing: bool,
}

/// What `Log::open` found.
pub struct Recovered {
    pub log: Log,
    pub root: RootRec,
}

pub struct Log {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    pub seg_size: u64,
    pub store_id: u64,
    app: Mutex<Appender>,
    segs: ArcSwap<SegTable>,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
    written_upto: AtomicU64,
    synced_upto: AtomicU64,
    /// Bytes in the files of every segment but the head.
    sealed_bytes: AtomicU64,
    poison: Mutex<Option<String>>,
    pub fsyncs: AtomicU64,
}

impl Log {
    pub fn segments(&self) -> Arc<SegTable> {
        self.segs.load_full()
    }

    pub fn written_upto(&self) -> u64 {
        self.written_upto.load(Ordering::Acquire)
    }

    pub fn synced_upto(&self) -> u64 {
        self.synced_upto.load(Ordering::Acquire)
    }

    pub fn head_id(&self) -> u64 {
        self.app.lock().head.id
    }

    /// Bytes in the head segment so far.
    pub fn head_len(&self) -> u64 {
        self.app.lock().off
    }

    pub fn check(&self) -> Result<()> {
        match &*self.poison.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison_with(&self, e: Error) -> Error {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(e.to_string());
            tracing::error!(error = %e, "store poisoned: refusing further writes");
        }
        e
    }

    /// Bytes in all segment files.
    pub fn bytes_on_disk(&self) -> u64 {
        // Kept as a counter: this is asked on every write transaction, and
        // a stat of every segment file each time would not be cheap.
        self.sealed_bytes.load(Ordering::Acquire) + self.app.lock().off
    }

    fn with_head(
        dir: &Path,
        vfs: Arc<dyn Vfs>,
        seg_size: u64,
        store_id: u64,
        table: SegTable,
        head: Arc<Segment>,
        off: u64,
    ) -> Log {
        let sealed: u64 = table
            .values()
            .filter(|seg| seg.id != head.id)
            .map(|seg| seg.file.len().unwrap_or(0))
            .sum();
        let written = head.id * seg_size + off;
        Log {
            dir: dir.to_path_buf(),
            vfs,
            seg_size,
            store_id,
            app: Mutex::new(Appender {
                head,
                off,
                flushed_off: off,
                zeroed_off: off,
                buf: Vec::new(),
            }),
            segs: ArcSwap::from_pointee(table),
            sync: Mutex::new(SyncState {
                synced_upto: 0,
                syncing: false,
            }),
            synced_cv: Condvar::new(),
            written_upto: AtomicU64::new(written),
            synced_upto: AtomicU64::new(0),
            sealed_bytes: AtomicU64::new(sealed),
            poison: Mutex::new(None),
            fsyncs: AtomicU64::new(0),
        }
    }

    fn create(dir: &Path, vfs: Arc<dyn Vfs>, seg_size: u64) -> Result<Recovered> {
        let store_id = rand::random::<u64>() | 1;
        let file = create_segment_file(&*vfs, dir, 1, seg_size, store_id, 0)?;
        let head = Arc::new(Segment {
            id: 1,
            file,
            prev_end: 0,
        });
        let mut table = SegTable::new();
        table.insert(1, head.clone());
        let first = align_up((HEADER_LEN + SEG_HEADER_PAYLOAD) as u64);
        let log = Log::with_head(dir, vfs, seg_size, store_id, table, head, first);
        let root = RootRec {
            seq: 0,
            root: None,
            catalog: Ptr::NULL,
            synced_upto: 0,
        };
        log.append(Kind::Root, &root.encode())?;
        log.flush()?;
        log.sync_to(log.written_upto())?;
        Ok(Recovered { log, root })
    }

    /// Append one record; returns where it will live. The bytes reach the
    /// file at the next `flush` (or sooner, when the buffer fills).
    pub fn append(&self, kind: Kind, payload: &[u8]) -> Result<Ptr> {
        self.check()?;
        let rec_len = HEADER_LEN + payload.len();
        let footprint = align_up(rec_len as u64);
        let mut app = self.app.lock();
        if app.off + footprint > self.seg_size {
            self.roll(&mut app)?;
        }
        assert!(
            app.off + footprint <= self.seg_size,
            "record larger than a segment"
        );
        let addr = app.head.id * self.seg_size + app.off;
        let at = app.buf.len();
        // Header room, payload, then zeros only for the alignment padding:
        // setting the whole footprint to zero first cost a memset of every
        // byte the log writes.
        app.buf.extend_from_slice(&[0u8; HEADER_LEN]);
        app.buf.extend_from_slice(payload);
        app.buf.resize(at + footprint as usize, 0);
        record::seal(&mut app.buf[at..at + rec_len], addr, kind);
        app.off += footprint;
        if app.buf.len() >= APPEND_BUF_MAX {
            let from = app.flushed_off;
            self.flush_locked(&mut app)?;
            // A large commit is written a megabyte at a time while it is
            // still being built: have the device start on each megabyte now,
            // so that the commit's fsync waits only for the last one. Only
            // whole pages are handed over; the last, partly filled one is
            // written again by the next append.
            let to = app.off / WRITEBACK_PAGE * WRITEBACK_PAGE;
            if to > from {
                // Only a hint: a failure leaves the work to the fsync.
                let _ = app.head.file.start_writeback(from, to - from);
            }
        }
        Ok(Ptr {
            addr,
            len: rec_len as u32,
        })
    }

    /// Hand every appended byte to the OS.
    pub fn flush(&self) -> Result<()> {
        let mut app = self.app.lock();
        self.flush_locked(&mut app)
    }

    fn flush_locked(&self, app: &mut Appender) -> Result<()> {
        if !app.buf.is_empty() {
            if let Err(e) = app.head.file.write_all_at(&app.buf, app.flushed_off) {
                return Err(self.poison_with(Error::Io {
                    op: "write segment",
                    source: e,
                }));
            }
            app.buf.clear();
        }
        app.flushed_off = app.off;
        app.zeroed_off = app.zeroed_off.max(app.off);
        self.written_upto
            .store(app.head.id * self.seg_size + app.off, Ordering::Release);
        Ok(())
    }

    /// Keep `ZERO_AHEAD` bytes past the head written, for cheap fdatasyncs,
    /// when the sync about to run carries `fresh` bytes of new records (see
    /// `nacre_vfs::zero_fill_range` for when it is due).
    fn zero_ahead(&self, app: &mut Appender, fresh: u64) -> Result<()> {
        let Some(fill) = zero_fill_range(fresh, app.off, app.zeroed_off, ZERO_AHEAD, self.seg_size)
        else {
            return Ok(());
        };
        if let Err(e) = app.head.file.write_zeros(fill.start, fill.end - fill.start) {
            return Err(self.poison_with(Error::Io {
                op: "zero-fill segment",
                source: e,
            }));
        }
        app.zeroed_off = fill.end;
        Ok(())
    }

    /// Make sure a record at `ptr` can be read back from its file.
    pub fn ensure_readable(&self, ptr: Ptr) -> Result<()> {
        if ptr.addr + ptr.len as u64 > self.written_upto() {
            self.flush()?;
        }
        Ok(())
    }

    /// Finish the head segment (durably) and start the next one.
    fn roll(&self, app: &mut Appender) -> Result<()> {
        self.flush_locked(app)?;
        let fail = |e: Error| self.poison_with(e);
        app.head.file.sync_data().map_err(|e| {
            fail(Error::Io {
                op: "sync segment",
                source: e,
            })
        })?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let sealed = app.head.file.len().map_err(|e| {
            fail(Error::Io {
                op: "stat segment",
                source: e,
            })
        })?;
        let id = app.head.id + 1;
        let file = create_segment_file(
            &*self.vfs,
            &self.dir,
            id,
            self.seg_size,
            self.store_id,
            app.off,
        )
        .map_err(fail)?;
        let seg = Arc::new(Segment {
            id,
            file,
            prev_end: app.off,
        });
        let mut table = (**self.segs.load()).clone();
        table.insert(id, seg.clone());
        self.segs.store(Arc::new(table));
        app.head = seg;
        self.sealed_bytes.fetch_add(sealed, Ordering::AcqRel);
        app.off = align_up((HEADER_LEN + SEG_HEADER_PAYLOAD) as u64);
        app.flushed_off = app.off;
        app.zeroed_off = app.off;
        self.written_upto
            .store(id * self.seg_size + app.off, Ordering::Release);
        Ok(())
    }

    /// Start a new head segment now, so that everything before it can be
    /// cleaned. Call with the writer lock held.
    pub fn force_roll(&self) -> Result<()> {
        self.check()?;
        let mut app = self.app.lock();
        self.roll(&mut app)
    }

    /// Wait until everything up to log position `upto` is durable. Callers
    /// that arrive while an fsync runs wait for the next one, which covers
    /// them all: this is the group commit.
    pub fn sync_to(&self, upto: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if s.synced_upto >= upto {
                return Ok(());
            }
            self.check()?;
            if s.syncing {
                self.synced_cv.wait(&mut s);
                continue;
            }
            s.syncing = true;
            let synced_before = s.synced_upto;
            drop(s);
            let (file, target) = {
                let mut app = self.app.lock();
                let r = self.flush_locked(&mut app).and_then(|_| {
                    let fresh = self.written_upto().saturating_sub(synced_before);
                    self.zero_ahead(&mut app, fresh)
                });
                (r.map(|_| app.head.file.clone()), self.written_upto())
            };
            let result = file.and_then(|f| {
                f.sync_data().map_err(|e| {
                    self.poison_with(Error::Io {
                        op: "sync segment",
                        source: e,
                    })
                })
            });
            s = self.sync.lock();
            s.syncing = false;
            if result.is_ok() {
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                s.synced_upto = s.synced_upto.max(target);
                self.synced_upto.store(s.synced_upto, Ordering::Release);
            }
            self.synced_cv.notify_all();
            result?;
        }
    }

    /// Read the whole record at `ptr` and verify it; returns its kind and
    /// payload.
    pub fn read_record(&self, segs: &SegTable, ptr: Ptr) -> Result<(Kind, Vec<u8>)> {
        let (kind, mut buf) = self.read_record_raw(segs, ptr)?;
        buf.drain(..HEADER_LEN);
        Ok((kind, buf))
    }

    /// Read and verify the record at `ptr`, returning it whole (header
    /// included), so that a caller can keep the buffer without a copy. Node
    /// sized buffers come from the buffer pool.
    pub fn read_record_raw(&self, segs: &SegTable, ptr: Ptr) -> Result<(Kind, Vec<u8>)> {
        let seg = segs.get(&(ptr.addr / self.seg_size)).ok_or_else(|| {
            Error::corrupt(ptr.addr, "record points into a segment that does not exist")
        })?;
        let off = ptr.addr % self.seg_size;
        if (ptr.len as usize) < HEADER_LEN || off + ptr.len as u64 > self.seg_size {
            return Err(Error::corrupt(ptr.addr, "record pointer out of bounds"));
        }
        let mut buf = crate::bufpool::take_for_read(ptr.len as usize);
        seg.file.read_exact_at(&mut buf, off).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(ptr.addr, "record lies past the end of its segment")
            } else {
                Error::Io {
                    op: "read record",
                    source: e,
                }
            }
        })?;
        let (kind, payload) = record::open(&buf, ptr.addr)?;
        if payload.len() + HEADER_LEN != buf.len() {
            return Err(Error::corrupt(
                ptr.addr,
                "record length differs from its pointer",
            ));
        }
        Ok((kind, buf))
    }

    /// Where the valid records of segment `id` end, if it is not the head.
    pub fn segment_end(&self, segs: &SegTable, id: u64) -> Option<u64> {
        segs.range(id + 1..).next().map(|(_, s)| s.prev_end)
    }

    /// Drop segments from the table and delete their files. Readers that
    /// still hold an older table keep their open handles.
    pub fn remove_segments(&self, ids: &[u64]) -> Result<()> {
        let mut table = (**self.segs.load()).clone();
        for id in ids {
            if let Some(seg) = table.remove(id) {
                let len = seg.file.len().map_err(Error::io("stat segment"))?;
                self.sealed_bytes.fetch_sub(len, Ordering::AcqRel);
            }
        }
        self.segs.store(Arc::new(table));
        for id in ids {
            let path = self.dir.join(segment_name(*id));
            if let Err(e) = self.vfs.remove(&path) {
                tracing::warn!(segment = id, error = %e, "could not delete a cleaned segment");
            }
        }
        // Not needed for safety (a resurrected segment is garbage that the
        // cleaner deletes again), but keeps the directory honest.
        let _ = self.vfs.sync_dir(&self.dir);
        Ok(())
    }
}

fn create_segment_file(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    seg_size: u64,
    store_id: u64,
    prev_end: u64,
) -> Result<Arc<dyn VFile>> {
    let path = dir.join(segment_name(id));
    let file = vfs.open(&path, true).map_err(Error::io("create segment"))?;
    let hdr = SegHeader {
        seg_size,
        seg_id: id,
        store_id,
        prev_end,
    };
    let payload = hdr.encode();
    let mut buf = vec![0u8; align_up((HEADER_LEN + payload.len()) as u64) as usize];
    buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(&payload);
    record::seal(
        &mut buf[..HEADER_LEN + payload.len()],
        id * seg_size,
        Kind::SegmentHeader,
    );
    file.write_all_at(&buf, 0)
        .map_err(Error::io("write segment header"))?;
    // The header is durable before any record follows it, so a bad header
    // with intact records after it can only be later damage; and the new
    // name is durable before any commit in the file is acknowledged.
    file.sync_data().map_err(Error::io("sync segment header"))?;
    vfs.sync_dir(dir)
        .map_err(Error::io("sync store directory"))?;
    Ok(file)
}

#[cfg(test)]
mod tests;
