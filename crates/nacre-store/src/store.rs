//! `Store`: ties the log, the page cache, the tree and the cleaner together.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::btree::page::{ChildInfo, Page};
use crate::btree::write::{Sink, Source, Spares};
use crate::cache::PageCache;
use crate::error::{Error, Result};
use crate::log::{Log, RootRec, SegTable};
use crate::options::{Durability, Options};
use crate::record::{put_ptr, put_u16, put_u32, put_u64, Kind, Ptr, Reader, HEADER_LEN};
use crate::txn::{ReadTxn, WriteTxn};

/// A named snapshot: the store as it was at commit `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// The commit whose state the snapshot holds.
    pub seq: u64,
    pub key_count: u64,
    /// Log bytes reachable from the snapshot's root (shared pages included).
    pub live_bytes: u64,
    pub created_unix_ms: u64,
    pub(crate) root: Option<ChildInfo>,
}

/// The snapshot catalog and where it was last written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub ptr: Ptr,
    pub snapshots: Vec<SnapshotInfo>,
}

impl Catalog {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u32(&mut out, self.snapshots.len() as u32);
        for s in &self.snapshots {
            put_u16(&mut out, s.name.len() as u16);
            out.extend_from_slice(s.name.as_bytes());
            put_u64(&mut out, s.seq);
            let r = s.root.unwrap_or(ChildInfo {
                ptr: Ptr::NULL,
                count: 0,
                bytes: 0,
            });
            put_ptr(&mut out, r.ptr);
            put_u64(&mut out, r.count);
            put_u64(&mut out, r.bytes);
            put_u64(&mut out, s.created_unix_ms);
        }
        out
    }

    pub fn decode(ptr: Ptr, payload: &[u8]) -> Result<Catalog> {
        let mut r = Reader::new(payload, ptr.addr);
        let n = r.u32()? as usize;
        let mut snapshots = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let len = r.u16()? as usize;
            let name = String::from_utf8(r.bytes(len)?.to_vec())
                .map_err(|_| Error::corrupt(ptr.addr, "snapshot name is not UTF-8"))?;
            let seq = r.u64()?;
            let rp = r.ptr()?;
            let count = r.u64()?;
            let bytes = r.u64()?;
            let created_unix_ms = r.u64()?;
            snapshots.push(SnapshotInfo {
                name,
                seq,
                key_count: count,
                live_bytes: bytes,
                created_unix_ms,
                root: (!rp.is_null()).then_some(ChildInfo {
                    ptr: rp,
                    count,
                    bytes,
                }),
            });
        }
        if !r.done() {
            return Err(Error::corrupt(ptr.addr, "catalog has trailing bytes"));
        }
        Ok(Catalog { ptr, snapshots })
    }
}

/// One published state: what a reader sees. The segment table travels with
/// the root so that a reader always holds open every file its root needs,
/// even after the cleaner deletes them.
pub(crate) struct Version {
    pub seq: u64,
    pub root: Option<ChildInfo>,
    pub catalog: Arc<Catalog>,
    pub segs: Arc<SegTable>,
    /// The root page, kept once read: every lookup starts there.
    pub root_page: OnceLock<Arc<Page>>,
    /// The root's children, each kept once read (slots made with the root
    /// page): every lookup passes one of them. Bounded by one node's fanout.
    pub root_children: OnceLock<Box<[OnceLock<Arc<Page>>]>>,
}

impl Version {
    pub fn new(
        seq: u64,
        root: Option<ChildInfo>,
        catalog: Arc<Catalog>,
        segs: Arc<SegTable>,
    ) -> Version {
        Version {
            seq,
            root,
            catalog,
            segs,
            root_page: OnceLock::new(),
            root_children: OnceLock::new(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    /// Commits of write transactions (not of the cleaner or snapshots).
    pub user_commits: AtomicU64,
    pub cleaned_segments: AtomicU64,
    pub relocated_bytes: AtomicU64,
    pub stalls: AtomicU64,
    pub stalled_ms: AtomicU64,
    /// The commit at which the background cleaner found a whole lap futile
    /// (`u64::MAX`: it is not idle). Writers do not stall for an idle
    /// cleaner.
    pub cleaner_idle_at: AtomicU64,
}

pub(crate) struct Inner {
    pub opts: Options,
    pub log: Log,
    pub cache: PageCache,
    pub writer: Mutex<()>,
    /// Vectors the last write transaction left for the next (taken and put
    /// back under `writer`).
    pub spares: Mutex<Spares>,
    /// One cleaning pass at a time: foreground `clean()` and the background
    /// cleaner would otherwise work on, and delete, the same segments.
    pub cleaning: Mutex<()>,
    pub current: ArcSwap<Version>,
    pub counters: Counters,
    pub cleaner_error: Mutex<Option<String>>,
    shutdown: Arc<(Mutex<bool>, Condvar)>,
    cleaner: Mutex<Option<JoinHandle<()>>>,
    _lock: Box<dyn Send + Sync>,
}

/// Reads pages through the cache. The writer may read records it appended
/// but has not yet handed to the OS, so it flushes first.
pub(crate) struct Ctx<'a> {
    pub inner: &'a Inner,
    pub segs: &'a SegTable,
    pub writer: bool,
    /// A page to serve without a cache lookup (a version's root)...
    pub pinned: Option<&'a Arc<Page>>,
    /// ...and slots for its children.
    pub pinned_children: Option<&'a [OnceLock<Arc<Page>>]>,
}

impl Ctx<'_> {
    /// The page at `ptr`, from the cache or else from the log; a page read
    /// from the log goes into the cache if `keep`.
    fn fetch(&self, ptr: Ptr, keep: bool) -> Result<Arc<Page>> {
        if let Some(p) = self.pinned_root(ptr) {
            return Ok(p.clone());
        }
        if let Some(p) = self.inner.cache.get(ptr.addr) {
            if p.ptr != ptr {
                return Err(Error::corrupt(
                    ptr.addr,
                    "pointer length disagrees with the record",
                ));
            }
            return Ok(p);
        }
        if self.writer {
            self.inner.log.ensure_readable(ptr)?;
        }
        let (kind, record) = self.inner.log.read_record_raw(self.segs, ptr)?;
        let page = Arc::new(Page::decode_owned(ptr, kind, record, HEADER_LEN)?);
        if keep {
            self.inner.cache.insert(page.clone());
        }
        Ok(page)
    }
}

impl Source for Ctx<'_> {
    fn page(&self, ptr: Ptr) -> Result<Arc<Page>> {
        self.fetch(ptr, true)
    }

    /// Not cached when read from the log: the commit writes (and caches)
    /// the page's successor, and a superseded page in the cache would only
    /// push out pages that are still current. Random writes into a store
    /// larger than the cache read most of the leaves they copy.
    fn page_to_copy(&self, ptr: Ptr) -> Result<Arc<Page>> {
        self.fetch(ptr, false)
    }

    fn pinned(&self, ptr: Ptr) -> Option<&Page> {
        self.pinned_root(ptr).map(|p| &**p)
    }

    fn pinned_child(&self, parent: &Page, i: usize) -> Option<&Page> {
        self.pinned_slot(parent, i)?.get().map(|p| &**p)
    }

    fn child(&self, parent: &Page, i: usize) -> Result<Arc<Page>> {
        let ptr = parent.child(i).ptr;
        let slot = self.pinned_slot(parent, i);
        let Some(slot) = slot else {
            return self.page(ptr);
        };
        if let Some(p) = slot.get() {
            return Ok(p.clone());
        }
        let p = self.page(ptr)?;
        let _ = slot.set(p.clone());
        Ok(p)
    }
}

impl<'a> Ctx<'a> {
    /// The pinned root, if it is the page at `ptr`.
    fn pinned_root(&self, ptr: Ptr) -> Option<&'a Arc<Page>> {
        self.pinned.filter(|p| p.ptr == ptr)
    }

    /// The slot that keeps child `i` of `parent`, if `parent` is the
    /// pinned root.
    fn pinned_slot(&self, parent: &Page, i: usize) -> Option<&OnceLock<Arc<Page>>> {
        match (self.pinned, self.pinned_children) {
            (Some(root), Some(slots)) if root.ptr == parent.ptr => slots.get(i),
            _ => None,
        }
    }

    /// Read a value record and check that it belongs to `key`.
    pub fn value(&self, ptr: Ptr, vlen: u32, key: &[u8]) -> Result<Vec<u8>> {
        if self.writer {
            self.inner.log.ensure_readable(ptr)?;
        }
        let (kind, mut payload) = self.inner.log.read_record(self.segs, ptr)?;
        if kind != Kind::Value {
            return Err(Error::corrupt(
                ptr.addr,
                "value pointer leads to a non-value record",
            ));
        }
        let mut r = Reader::new(&payload, ptr.addr);
        let klen = r.u32()? as usize;
        let stored_key = r.bytes(klen)?;
        if stored_key != key || payload.len() - 4 - klen != vlen as usize {
            return Err(Error::corrupt(
                ptr.addr,
                "value record belongs to another key",
            ));
        }
        payload.drain(..4 + klen);
        Ok(payload)
    }
}

/// Appends a transaction's records and counts what it wrote.
pub(crate) struct LogSink<'a> {
    pub inner: &'a Inner,
    pub written: u64,
}

impl Sink for LogSink<'_> {
    fn append_node(&mut self, kind: Kind, rec: Vec<u8>) -> Result<Ptr> {
        let p = self.inner.append_node(kind, rec, true)?;
        self.written += crate::record::align_up(p.len as u64);
        Ok(p)
    }
}

/// Result of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit's sequence number (one per commit, increasing).
    pub seq: u64,
}

/// What a cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_cleaned: u64,
    pub records_relocated: u64,
    pub bytes_relocated: u64,
    pub bytes_on_disk_before: u64,
    pub bytes_on_disk_after: u64,
}

/// A point-in-time view of the store's counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub seq: u64,
    pub key_count: u64,
    /// Log bytes reachable from the current root (nodes and values).
    pub live_bytes: u64,
    /// Bytes in all segment files.
    pub bytes_on_disk: u64,
    pub segments: usize,
    pub snapshots: usize,
    pub commits: u64,
    pub fsyncs: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    pub cleaned_segments: u64,
    pub relocated_bytes: u64,
    /// Write transactions that waited for the cleaner, and for how long.
    pub stalls: u64,
    pub stalled_ms: u64,
    /// The last error the background cleaner met, if any.
    pub cleaner_error: Option<String>,
    /// Set when an I/O failure stopped all writes until reopen.
    pub poisoned: Option<String>,
}

/// A store: cheap to clone, shareable between threads.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    /// Shared by the clones of this handle: when the last one goes, the
    /// background cleaner is stopped and joined, so that the store is
    /// released (once its read transactions are gone too) without waiting
    /// for the cleaner's next wake.
    _handles: Arc<Handles>,
}

struct Handles {
    inner: Arc<Inner>,
}

impl Drop for Handles {
    fn drop(&mut self) {
        self.inner.stop_cleaner();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    pub fn ctx<'a>(&'a self, segs: &'a SegTable, writer: bool) -> Ctx<'a> {
        Ctx {
            inner: self,
            segs,
            writer,
            pinned: None,
            pinned_children: None,
        }
    }

    /// Write a root record for a new state, publish it to readers and, for
    /// immediate durability, wait for it to be fsynced. Must be called with
    /// the writer lock held; it is released before waiting on the fsync so
    /// that the next writer can join the same group commit.
    pub fn commit_root(
        &self,
        guard: MutexGuard<'_, ()>,
        root: Option<ChildInfo>,
        catalog: Arc<Catalog>,
        durability: Durability,
    ) -> Result<u64> {
        let base = self.current.load_full();
        let seq = base.seq + 1;
        let rec = RootRec {
            seq,
            root,
            catalog: catalog.ptr,
            synced_upto: self.log.synced_upto(),
        };
        self.log.append(Kind::Root, &rec.encode())?;
        self.log.flush()?;
        let upto = self.log.written_upto();
        self.current.store(Arc::new(Version::new(
            seq,
            root,
            catalog,
            self.log.segments(),
        )));
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        if durability == Durability::Immediate {
            self.log.sync_to(upto)?;
        }
        Ok(seq)
    }

    /// Append a node record whose payload follows `HEADER_LEN` spare bytes
    /// in `rec`. With `cache`, the node also goes into the page cache, as a
    /// page that keeps `rec` (no copy), so that the next reader of a page
    /// just written does not read it back from the file.
    pub fn append_node(&self, kind: Kind, rec: Vec<u8>, cache: bool) -> Result<Ptr> {
        debug_assert!(matches!(kind, Kind::Leaf | Kind::Branch));
        let p = self.log.append(kind, &rec[HEADER_LEN..])?;
        if cache {
            self.cache
                .insert(Arc::new(Page::from_written(p, kind, rec, HEADER_LEN)));
        } else {
            crate::bufpool::give(rec);
        }
        Ok(p)
    }

    pub fn write_catalog(&self, snapshots: Vec<SnapshotInfo>) -> Result<Arc<Catalog>> {
        if snapshots.is_empty() {
            return Ok(Arc::new(Catalog::default()));
        }
        let mut cat = Catalog {
            ptr: Ptr::NULL,
            snapshots,
        };
        cat.ptr = self.log.append(Kind::Catalog, &cat.encode())?;
        Ok(Arc::new(cat))
    }

    pub fn begin_write_guard(&self) -> Result<MutexGuard<'_, ()>> {
        self.log.check()?;
        let g = self.writer.lock();
        self.log.check()?;
        Ok(g)
    }

    fn stop_cleaner(&self) {
        {
            let (m, cv) = &*self.shutdown;
            *m.lock() = true;
            cv.notify_all();
        }
        if let Some(h) = self.cleaner.lock().take() {
            let _ = h.join();
        }
    }

    fn over_stall_ratio(&self) -> bool {
        let c = &self.opts.cleaner;
        let on_disk = self.log.bytes_on_disk();
        on_disk > 4 * self.log.seg_size
            && on_disk as f64
                > c.space_ratio_stall * crate::cleaner::live_estimate(self).max(1) as f64
    }

    /// Wait (outside the writer lock, which the cleaner needs) while the
    /// files are past the stall ratio and the background cleaner works.
    /// Whether a background cleaner is there to wait for: enabled, not shut
    /// down, and not idle after finding a whole lap futile.
    fn cleaner_at_work(&self) -> bool {
        self.opts.cleaner.background && !self.cleaner_idle() && !*self.shutdown.0.lock()
    }

    /// The cleaner found a whole lap futile and nothing was committed since:
    /// more cleaning would only move the same live data in circles.
    fn cleaner_idle(&self) -> bool {
        self.counters.cleaner_idle_at.load(Ordering::Relaxed) == self.current.load().seq
    }

    fn stall_for_cleaner(&self) {
        if !self.cleaner_at_work() || !self.over_stall_ratio() {
            return;
        }
        let started = std::time::Instant::now();
        let limit = Duration::from_millis(self.opts.cleaner.stall_ms_max);
        while self.over_stall_ratio() && self.log.check().is_ok() && self.cleaner_at_work() {
            if started.elapsed() >= limit {
                tracing::warn!(
                    waited_ms = limit.as_millis() as u64,
                    "the cleaner cannot bring the files under cleaner.space_ratio_stall; writing anyway"
                );
                break;
            }
            self.shutdown.1.notify_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        self.counters
            .stalled_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn sync_all(&self) -> Result<()> {
        self.log.flush()?;
        self.log.sync_to(self.log.written_upto())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.log.check().is_ok() {
            if let Err(e) = self.sync_all() {
                tracing::warn!(error = %e, "final sync on drop failed");
            }
        }
    }
}

fn validate_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::InvalidSnapshotName(name.to_string()));
    }
    Ok(())
}

impl Store {
    /// Open the store in `path`, creating it if the directory holds none.
    /// Recovery finds the newest intact root; see docs/store-format.md.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let dir = path.as_ref();
        let vfs = opts.vfs.clone();
        vfs.create_dir_all(dir)
            .map_err(Error::io("create store directory"))?;
        let lock = vfs.lock(&dir.join("LOCK")).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked(dir.display().to_string())
            } else {
                Error::Io {
                    op: "lock store directory",
                    source: e,
                }
            }
        })?;
        let rec = Log::open(dir, vfs, opts.segment_size_bytes)?;
        let log = rec.log;
        // An existing store keeps the segment size it was created with: the
        // largest record must fit in that one, not in the requested one.
        let record_max = opts.value_size_max_bytes as u64 + opts.key_size_max_bytes as u64 + 4096;
        if record_max > log.seg_size {
            return Err(Error::InvalidOptions(format!(
                "value_size_max_bytes ({}) does not fit the store's segments of {} bytes \
                 (fixed when the store was created)",
                opts.value_size_max_bytes, log.seg_size
            )));
        }
        let segs = log.segments();
        let catalog = if rec.root.catalog.is_null() {
            Catalog::default()
        } else {
            let (kind, payload) = log.read_record(&segs, rec.root.catalog)?;
            if kind != Kind::Catalog {
                return Err(Error::corrupt(
                    rec.root.catalog.addr,
                    "catalog pointer leads elsewhere",
                ));
            }
            Catalog::decode(rec.root.catalog, &payload)?
        };
        tracing::info!(
            dir = %dir.display(),
            seq = rec.root.seq,
            keys = rec.root.root.map_or(0, |r| r.count),
            segments = segs.len(),
            "store opened"
        );
        let inner = Arc::new(Inner {
            cache: PageCache::new(opts.cache_size_bytes),
            current: ArcSwap::from_pointee(Version::new(
                rec.root.seq,
                rec.root.root,
                Arc::new(catalog),
                segs,
            )),
            log,
            writer: Mutex::new(()),
            spares: Mutex::new(Spares::default()),
            cleaning: Mutex::new(()),
            counters: Counters {
                cleaner_idle_at: AtomicU64::new(u64::MAX),
                ..Counters::default()
            },
            cleaner_error: Mutex::new(None),
            shutdown: Arc::new((Mutex::new(false), Condvar::new())),
            cleaner: Mutex::new(None),
            opts,
            _lock: lock,
        });
        if inner.opts.cleaner.background {
            let weak = Arc::downgrade(&inner);
            let shutdown = inner.shutdown.clone();
            let interval = Duration::from_millis(inner.opts.cleaner.interval_ms.max(1));
            let handle = std::thread::Builder::new()
                .name("nacre-cleaner".into())
                .spawn(move || cleaner_thread(weak, shutdown, interval))
                .map_err(Error::io("spawn cleaner thread"))?;
            *inner.cleaner.lock() = Some(handle);
        }
        Ok(Store {
            _handles: Arc::new(Handles {
                inner: inner.clone(),
            }),
            inner,
        })
    }

    /// A read transaction on the latest committed state. Never blocks on,
    /// and never blocks, the writer.
    pub fn begin_read(&self) -> ReadTxn {
        ReadTxn::new(self.inner.clone(), self.inner.current.load_full(), None)
    }

    /// The write transaction. Blocks until the single writer slot is free,
    /// and while the files are past `cleaner.space_ratio_stall` (see there).
    pub fn begin_write(&self) -> Result<WriteTxn<'_>> {
        self.inner.stall_for_cleaner();
        let guard = self.inner.begin_write_guard()?;
        Ok(WriteTxn::new(self, guard))
    }

    /// Make every commit so far durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync_all()
    }

    /// Create a named snapshot of the latest committed state, in O(1).
    ///
    /// Takes the writer slot: do not call it while this thread holds a
    /// [`WriteTxn`] (it would wait for itself).
    pub fn create_snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        let guard = self.inner.begin_write_guard()?;
        let base = self.inner.current.load_full();
        if base.catalog.snapshots.iter().any(|s| s.name == name) {
            return Err(Error::SnapshotExists(name.to_string()));
        }
        if base.catalog.snapshots.len() >= self.inner.opts.snapshots_max {
            return Err(Error::TooManySnapshots {
                max: self.inner.opts.snapshots_max,
            });
        }
        let info = SnapshotInfo {
            name: name.to_string(),
            seq: base.seq,
            key_count: base.root.map_or(0, |r| r.count),
            live_bytes: base.root.map_or(0, |r| r.bytes),
            created_unix_ms: now_ms(),
            root: base.root,
        };
        let mut snaps = base.catalog.snapshots.clone();
        snaps.push(info.clone());
        let catalog = self.inner.write_catalog(snaps)?;
        self.inner
            .commit_root(guard, base.root, catalog, self.inner.opts.durability)?;
        Ok(info)
    }

    /// Drop a snapshot; the cleaner releases the space only it held.
    ///
    /// Takes the writer slot: do not call it while this thread holds a
    /// [`WriteTxn`] (it would wait for itself).
    pub fn drop_snapshot(&self, name: &str) -> Result<()> {
        let guard = self.inner.begin_write_guard()?;
        let base = self.inner.current.load_full();
        let mut snaps = base.catalog.snapshots.clone();
        let before = snaps.len();
        snaps.retain(|s| s.name != name);
        if snaps.len() == before {
            return Err(Error::SnapshotNotFound(name.to_string()));
        }
        let catalog = self.inner.write_catalog(snaps)?;
        self.inner
            .commit_root(guard, base.root, catalog, self.inner.opts.durability)?;
        Ok(())
    }

    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        self.inner.current.load().catalog.snapshots.clone()
    }

    /// A read transaction on a named snapshot: the full read API, while
    /// writes go on.
    pub fn snapshot(&self, name: &str) -> Result<ReadTxn> {
        let v = self.inner.current.load_full();
        let s = v
            .catalog
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::SnapshotNotFound(name.to_string()))?;
        let at = (s.root, s.seq);
        Ok(ReadTxn::new(self.inner.clone(), v, Some(at)))
    }

    /// Clean every segment that exists now (except the one being written),
    /// in the foreground: a full compaction. The background cleaner instead
    /// works only while the space ratio is exceeded.
    ///
    /// Takes the writer slot: do not call it while this thread holds a
    /// [`WriteTxn`] (it would wait for itself).
    pub fn clean(&self) -> Result<CleanStats> {
        crate::cleaner::clean_all(&self.inner)
    }

    pub fn stats(&self) -> Stats {
        let v = self.inner.current.load();
        let i = &self.inner;
        Stats {
            seq: v.seq,
            key_count: v.root.map_or(0, |r| r.count),
            live_bytes: v.root.map_or(0, |r| r.bytes),
            bytes_on_disk: i.log.bytes_on_disk(),
            segments: i.log.segments().len(),
            snapshots: v.catalog.snapshots.len(),
            commits: i.counters.commits.load(Ordering::Relaxed),
            fsyncs: i.log.fsyncs.load(Ordering::Relaxed),
            cache_hits: i.cache.hits(),
            cache_misses: i.cache.misses(),
            cache_bytes: i.cache.weight(),
            cleaned_segments: i.counters.cleaned_segments.load(Ordering::Relaxed),
            relocated_bytes: i.counters.relocated_bytes.load(Ordering::Relaxed),
            stalls: i.counters.stalls.load(Ordering::Relaxed),
            stalled_ms: i.counters.stalled_ms.load(Ordering::Relaxed),
            cleaner_error: i.cleaner_error.lock().clone(),
            poisoned: i.log.check().err().map(|e| e.to_string()),
        }
    }

    /// Stop the cleaner and make everything durable. Other clones of this
    /// handle and open read transactions stay usable.
    ///
    /// Takes the writer slot: do not call it while this thread holds a
    /// [`WriteTxn`] (it would wait for itself).
    pub fn close(self) -> Result<()> {
        self.inner.stop_cleaner();
        self.inner.log.check()?;
        // A last root record vouches (through `synced_upto`) for everything
        // before it, so recovery can tell later damage to the tail from a
        // torn write.
        let guard = self.inner.begin_write_guard()?;
        let v = self.inner.current.load_full();
        self.inner.sync_all()?;
        self.inner
            .commit_root(guard, v.root, v.catalog.clone(), Durability::Immediate)?;
        Ok(())
    }
}

fn cleaner_thread(weak: Weak<Inner>, shutdown: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    let mut user_commits_seen = 0;
    loop {
        {
            let (m, cv) = &*shutdown;
            let mut stop = m.lock();
            if !*stop {
                cv.wait_for(&mut stop, interval);
            }
            if *stop {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.log.check().is_err() || inner.cleaner_idle() {
            continue;
        }
        // Segments at or past this id were written after cleaning stopped
        // making progress; reaching them means a full lap was in vain.
        let mut lap_end: Option<u64> = None;
        loop {
            // Writers active since we last looked: only clean past the
            // higher ratio, and leave them the disk and the lock otherwise.
            let user_commits = inner.counters.user_commits.load(Ordering::Relaxed);
            let busy = user_commits != user_commits_seen;
            user_commits_seen = user_commits;
            let c = &inner.opts.cleaner;
            let ratio = if busy {
                c.space_ratio_busy_max
            } else {
                c.space_ratio_max
            };
            match crate::cleaner::clean_step(&inner, &shutdown, ratio) {
                Ok(Some(reclaimed)) => {
                    // A segment that was nearly all live is no proof that the
                    // next one is: only a whole lap without progress is.
                    if reclaimed >= inner.log.seg_size / 8 {
                        lap_end = None;
                    } else {
                        let lap = *lap_end.get_or_insert_with(|| inner.log.head_id());
                        let oldest = inner.log.segments().keys().next().copied().unwrap_or(lap);
                        if oldest >= lap {
                            let seq = inner.current.load().seq;
                            inner.counters.cleaner_idle_at.store(seq, Ordering::Relaxed);
                            break;
                        }
                    }
                    if *shutdown.0.lock() {
                        break;
                    }
                }
                // The ratio is met, or cleaning stopped early for a writer.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "background cleaning failed");
                    *inner.cleaner_error.lock() = Some(e.to_string());
                    break;
                }
            }
        }
    }
}
