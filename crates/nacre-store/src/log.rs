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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use crate::btree::page::ChildInfo;
use crate::error::{Error, Result};
use crate::record::{
    self, align_up, put_ptr, put_u32, put_u64, Kind, Ptr, Reader, ALIGN, HEADER_LEN,
};
use nacre_vfs::{zero_fill_range, VFile, Vfs};

pub const FORMAT_VERSION: u32 = 1;
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

pub fn segment_name(id: u64) -> String {
    format!("seg-{id:016x}.nacre")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".nacre")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One segment file.
pub struct Segment {
    pub id: u64,
    pub file: Arc<dyn VFile>,
    /// Where the valid records of the previous segment end (an offset in it).
    pub prev_end: u64,
}

pub type SegTable = BTreeMap<u64, Arc<Segment>>;

/// The root record: the whole state of the store at one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRec {
    pub seq: u64,
    /// `None` for an empty tree.
    pub root: Option<ChildInfo>,
    pub catalog: Ptr,
    /// A log position known durable when this record was written.
    pub synced_upto: u64,
}

impl RootRec {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56);
        put_u64(&mut out, self.seq);
        let r = self.root.unwrap_or(ChildInfo {
            ptr: Ptr::NULL,
            count: 0,
            bytes: 0,
        });
        put_ptr(&mut out, r.ptr);
        put_u64(&mut out, r.count);
        put_u64(&mut out, r.bytes);
        put_ptr(&mut out, self.catalog);
        put_u64(&mut out, self.synced_upto);
        out
    }

    pub fn decode(payload: &[u8], position: u64) -> Result<RootRec> {
        let mut r = Reader::new(payload, position);
        let seq = r.u64()?;
        let ptr = r.ptr()?;
        let count = r.u64()?;
        let bytes = r.u64()?;
        let catalog = r.ptr()?;
        let synced_upto = r.u64()?;
        if !r.done() {
            return Err(Error::corrupt(position, "root record has trailing bytes"));
        }
        Ok(RootRec {
            seq,
            root: (!ptr.is_null()).then_some(ChildInfo { ptr, count, bytes }),
            catalog,
            synced_upto,
        })
    }
}

struct SegHeader {
    seg_size: u64,
    seg_id: u64,
    store_id: u64,
    prev_end: u64,
}

impl SegHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEG_HEADER_PAYLOAD);
        put_u32(&mut out, FORMAT_VERSION);
        put_u64(&mut out, self.seg_size);
        put_u64(&mut out, self.seg_id);
        put_u64(&mut out, self.store_id);
        put_u64(&mut out, self.prev_end);
        out
    }

    /// Read and check the header at the start of a segment file.
    fn read(file: &dyn VFile, position: u64) -> Result<SegHeader> {
        let mut buf = vec![0u8; HEADER_LEN + SEG_HEADER_PAYLOAD];
        file.read_exact_at(&mut buf, 0)
            .map_err(|_| Error::corrupt(position, "segment shorter than its header"))?;
        let (kind, payload) = record::open(&buf, position)?;
        if kind != Kind::SegmentHeader {
            return Err(Error::corrupt(
                position,
                "segment does not start with a header",
            ));
        }
        let mut r = Reader::new(payload, position);
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::Format(format!(
                "segment format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        Ok(SegHeader {
            seg_size: r.u64()?,
            seg_id: r.u64()?,
            store_id: r.u64()?,
            prev_end: r.u64()?,
        })
    }
}

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

    /// Open the log in `dir`, creating a new store if it holds no segments.
    pub fn open(dir: &Path, vfs: Arc<dyn Vfs>, seg_size_new: u64) -> Result<Recovered> {
        let mut ids: Vec<u64> = vfs
            .list(dir)
            .map_err(Error::io("list store directory"))?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Self::create(dir, vfs, seg_size_new);
        }

        // Read every header. Only the newest may be unreadable: it was being
        // created when the process stopped and holds nothing durable.
        let mut headers: Vec<(u64, Arc<dyn VFile>, SegHeader)> = Vec::new();
        let newest = *ids.last().unwrap();
        for &id in &ids {
            let path = dir.join(segment_name(id));
            let file = vfs.open(&path, false).map_err(Error::io("open segment"))?;
            // The header's own position is id * seg_size, which needs the
            // segment size; take it from the header itself, then check.
            let hdr = match read_header_any_size(&*file, id) {
                Ok(h) => h,
                Err(e @ Error::Corruption { .. })
                    if id == newest
                        && !has_valid_records(
                            &*file,
                            id,
                            headers.first().map_or(seg_size_new, |h| h.2.seg_size),
                        )? =>
                {
                    tracing::warn!(segment = id, error = %e, "dropping newest segment with a torn header");
                    drop(file);
                    vfs.remove(&path)
                        .map_err(Error::io("remove torn segment"))?;
                    vfs.sync_dir(dir)
                        .map_err(Error::io("sync store directory"))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if hdr.seg_id != id {
                return Err(Error::corrupt(
                    0,
                    format!("segment file {id} claims id {}", hdr.seg_id),
                ));
            }
            if let Some((_, _, first)) = headers.first() {
                if first.store_id != hdr.store_id || first.seg_size != hdr.seg_size {
                    return Err(Error::Format(format!(
                        "segment {id} belongs to another store (mixed files in {})",
                        dir.display()
                    )));
                }
            }
            headers.push((id, file, hdr));
        }
        if headers.is_empty() {
            // The only segment was torn while the store was being created:
            // nothing was ever committed.
            return Self::create(dir, vfs, seg_size_new);
        }
        let seg_size = headers[0].2.seg_size;
        let store_id = headers[0].2.store_id;

        // Find the newest trusted root, from the newest segment backwards.
        let mut found: Option<(u64, RootRec)> = None;
        let mut newest_valid_end = 0u64;
        for i in (0..headers.len()).rev() {
            let (id, file, _) = &headers[i];
            let base = id * seg_size;
            let is_newest = i + 1 == headers.len();
            let file_len = file.len().map_err(Error::io("stat segment"))?;
            let end = if is_newest {
                file_len
            } else {
                headers[i + 1].2.prev_end
            };
            if end > file_len || end > seg_size {
                return Err(Error::corrupt(
                    base,
                    "segment shorter than its recorded end",
                ));
            }
            let mut bytes = vec![0u8; end as usize];
            file.read_exact_at(&mut bytes, 0)
                .map_err(Error::io("read segment"))?;
            let scan = scan_segment(&bytes, base)?;
            if is_newest {
                newest_valid_end = scan.valid_end;
                // A root past the torn point that vouches for bytes beyond it
                // proves those bytes were once durable: this is corruption,
                // not a torn tail.
                if let Some(bad) = scan.late_root_synced_upto {
                    if bad > base + scan.valid_end {
                        return Err(Error::corrupt(
                            base + scan.valid_end,
                            "invalid record inside data a later root says was synced",
                        ));
                    }
                }
            } else if scan.valid_end != end {
                return Err(Error::corrupt(
                    base + scan.valid_end,
                    "invalid record inside a completed segment",
                ));
            }
            if let Some(r) = scan.last_root {
                found = Some(r);
                break;
            }
        }
        let header_end = align_up((HEADER_LEN + SEG_HEADER_PAYLOAD) as u64);
        if found.is_none()
            && headers.len() == 1
            && headers[0].0 == 1
            && newest_valid_end <= header_end
        {
            // The store was being created when the process stopped: its
            // first segment never got its first root. Nothing was committed.
            tracing::warn!("store creation was interrupted; creating it again");
            let path = dir.join(segment_name(1));
            drop(headers);
            vfs.remove(&path)
                .map_err(Error::io("remove unfinished segment"))?;
            return Self::create(dir, vfs, seg_size_new);
        }
        let (root_addr, root) =
            found.ok_or_else(|| Error::corrupt(0, "no valid root record in the log"))?;

        let mut table = SegTable::new();
        for (id, file, hdr) in headers {
            table.insert(
                id,
                Arc::new(Segment {
                    id,
                    file,
                    prev_end: hdr.prev_end,
                }),
            );
        }
        let (&last_id, last) = table.iter().next_back().unwrap();
        let last = last.clone();
        let log = Log::with_head(dir, vfs, seg_size, store_id, table, last, newest_valid_end);
        // Recovery trusts everything up to the root it found.
        log.synced_upto.store(root_addr, Ordering::Release);
        log.sync.lock().synced_upto = root_addr;
        // Never append after a possibly torn tail: start a fresh segment.
        {
            let mut app = log.app.lock();
            debug_assert_eq!(app.head.id, last_id);
            log.roll(&mut app)?;
        }
        Ok(Recovered { log, root })
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

/// Does the file hold any intact record after the header's place? A torn
/// header can only belong to a segment that never had anything synced; one
/// followed by intact records was damaged later, which is corruption.
fn has_valid_records(file: &dyn VFile, id: u64, seg_size: u64) -> Result<bool> {
    let len = file.len().map_err(Error::io("stat segment"))?.min(seg_size);
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(Error::io("read segment"))?;
    let base = id.saturating_mul(seg_size);
    let after_header = align_up((HEADER_LEN + SEG_HEADER_PAYLOAD) as u64) as usize;
    let found = intact_records(&bytes, base, after_header).next().is_some();
    Ok(found)
}

/// Every intact record at an aligned offset from `from` on, found by
/// trying each boundary (so records past a damaged one are found too):
/// (offset, kind, payload).
fn intact_records(
    bytes: &[u8],
    base: u64,
    from: usize,
) -> impl Iterator<Item = (usize, Kind, &[u8])> {
    (from..bytes.len().saturating_sub(HEADER_LEN - 1))
        .step_by(ALIGN as usize)
        .filter_map(move |p| {
            let (_, len) = record::peek_header(&bytes[p..])?;
            let end = p + HEADER_LEN + len as usize;
            let (kind, payload) = record::open(bytes.get(p..end)?, base + p as u64).ok()?;
            Some((p, kind, payload))
        })
}

fn read_header_any_size(file: &dyn VFile, id: u64) -> Result<SegHeader> {
    // The checksum covers the position, id * seg_size; peek at the claimed
    // size first, then verify with it.
    let mut buf = vec![0u8; HEADER_LEN + SEG_HEADER_PAYLOAD];
    file.read_exact_at(&mut buf, 0)
        .map_err(|_| Error::corrupt(0, format!("segment {id} shorter than its header")))?;
    let seg_size = u64::from_le_bytes(buf[HEADER_LEN + 4..HEADER_LEN + 12].try_into().unwrap());
    let position = id.checked_mul(seg_size).unwrap_or(0);
    SegHeader::read(file, position)
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

/// What a sequential scan of one segment found.
pub struct Scan {
    /// Offset just past the last record that parsed and passed its checksum.
    pub valid_end: u64,
    /// The last root record in the valid prefix, with its position.
    pub last_root: Option<(u64, RootRec)>,
    /// The largest `synced_upto` claimed by any intact root after the valid
    /// prefix (found by resynchronising on 8-byte boundaries).
    pub late_root_synced_upto: Option<u64>,
}

/// Scan a segment image (`bytes` starts at offset 0 of the segment whose
/// first position is `base`).
pub fn scan_segment(bytes: &[u8], base: u64) -> Result<Scan> {
    let mut pos = 0usize;
    let mut last_root = None;
    let mut first = true;
    while let Some((kind, len)) = record::peek_header(&bytes[pos..]) {
        let end = pos + HEADER_LEN + len as usize;
        if end > bytes.len() {
            break;
        }
        let Ok((kind2, payload)) = record::open(&bytes[pos..end], base + pos as u64) else {
            break;
        };
        debug_assert_eq!(kind, kind2);
        if first && kind != Kind::SegmentHeader {
            break;
        }
        first = false;
        if kind == Kind::Root {
            let r = RootRec::decode(payload, base + pos as u64)?;
            last_root = Some((base + pos as u64, r));
        }
        pos = align_up(end as u64) as usize;
        if pos >= bytes.len() {
            pos = bytes.len().min(pos);
            break;
        }
    }
    let valid_end = pos as u64;
    let late = intact_records(bytes, base, pos + ALIGN as usize)
        .filter(|(_, kind, _)| *kind == Kind::Root)
        .filter_map(|(p, _, payload)| RootRec::decode(payload, base + p as u64).ok())
        .map(|r| r.synced_upto)
        .max();
    Ok(Scan {
        valid_end,
        last_root,
        late_root_synced_upto: late,
    })
}

/// A record of a completed segment, for the cleaner: its pointer and where
/// its payload lies in the buffer it was parsed from.
pub struct ScannedRecord {
    pub ptr: Ptr,
    pub kind: Kind,
    pub payload: std::ops::Range<usize>,
}

/// Parse the whole records at the start of `bytes` (a slice of segment
/// `base` starting at offset `from`). Every record must be valid; a record
/// cut off by the end of the slice ends the parse. Returns the records and
/// the bytes they (with padding) take.
pub fn parse_records(bytes: &[u8], base: u64, from: u64) -> Result<(Vec<ScannedRecord>, u64)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= bytes.len() {
        let position = base + from + pos as u64;
        let (_, len) = record::peek_header(&bytes[pos..])
            .ok_or_else(|| Error::corrupt(position, "bad record header in a completed segment"))?;
        let end = pos + HEADER_LEN + len as usize;
        if end > bytes.len() {
            break;
        }
        let (kind, _) = record::open(&bytes[pos..end], position)?;
        out.push(ScannedRecord {
            ptr: Ptr {
                addr: position,
                len: (HEADER_LEN + len as usize) as u32,
            },
            kind,
            payload: pos + HEADER_LEN..end,
        });
        pos = align_up(end as u64) as usize;
    }
    // `pos` may pass the slice's end by the last record's padding: the next
    // record starts there all the same.
    Ok((out, pos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_vfs::OsVfs;

    /// Bytes of the head segment's file past its last record: the zero fill.
    fn zero_fill(log: &Log) -> u64 {
        let app = log.app.lock();
        let len = app.head.file.len().unwrap();
        assert!(
            len >= app.off,
            "records missing from the file: {len} < {}",
            app.off
        );
        len - app.off
    }

    /// Append `records` records of `len` bytes and make them durable, as a
    /// commit does: hand them to the OS, then sync.
    fn durable(log: &Log, records: usize, len: usize) {
        for i in 0..records {
            log.append(Kind::Value, &vec![i as u8; len]).unwrap();
        }
        log.flush().unwrap();
        log.sync_to(log.written_upto()).unwrap();
        assert_eq!(log.synced_upto(), log.written_upto());
    }

    #[test]
    fn only_syncs_after_small_writes_zero_fill_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Arc::new(OsVfs::default()), 64 << 20)
            .unwrap()
            .log;
        durable(&log, 1, 100);
        assert!(
            zero_fill(&log) >= ZERO_AHEAD * 3 / 4,
            "a small durable write leaves zeros ahead: {}",
            zero_fill(&log)
        );
        // Four megabytes in one sync: zeros now would be synced by this
        // fsync and then written over.
        durable(&log, 64, 64 << 10);
        assert_eq!(zero_fill(&log), 0, "zeros written after a large sync");
        // Small writes again: the fill comes back.
        durable(&log, 1, 100);
        assert!(zero_fill(&log) >= ZERO_AHEAD * 3 / 4);
    }
}
