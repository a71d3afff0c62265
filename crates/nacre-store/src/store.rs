//! `Store`: ties the log, the page cache, the tree and the cleaner together.
//!
//! How transactions reach pages is in `store/ctx.rs`, named snapshots and
//! their catalog in `store/snapshots.rs`, the background cleaner's thread
//! and the writers' stall in `store/background.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use nacre_vfs::Vfs;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::btree::page::{ChildInfo, Page};
use crate::btree::write::Spares;
use crate::cache::PageCache;
use crate::error::{Error, Result};
use crate::log::{Log, RootRec, SegTable};
use crate::options::{Durability, Options};
use crate::record::{Kind, Ptr, HEADER_LEN};
use crate::txn::{ReadTxn, WriteTxn};

mod background;
mod ctx;
mod snapshots;

pub(crate) use ctx::{Ctx, LogSink};
pub(crate) use snapshots::Catalog;
pub use snapshots::SnapshotInfo;

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

impl Inner {
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

    pub fn begin_write_guard(&self) -> Result<MutexGuard<'_, ()>> {
        self.log.check()?;
        let g = self.writer.lock();
        self.log.check()?;
        Ok(g)
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

impl Store {
    /// Open the store in `path`, creating it if the directory holds none.
    /// Recovery finds the newest intact root; see docs/store-format.md.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let dir = path.as_ref();
        let lock = lock_dir(&*opts.vfs, dir)?;
        let rec = Log::open(dir, opts.vfs.clone(), opts.segment_size_bytes)?;
        let log = rec.log;
        check_record_fits(&opts, log.seg_size)?;
        let segs = log.segments();
        let catalog = read_catalog(&log, &segs, rec.root.catalog)?;
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
            background::spawn_cleaner(&inner)?;
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

/// Create the store's directory and take its lock: one handle per store.
fn lock_dir(vfs: &dyn Vfs, dir: &Path) -> Result<Box<dyn Send + Sync>> {
    vfs.create_dir_all(dir)
        .map_err(Error::io("create store directory"))?;
    vfs.lock(&dir.join("LOCK")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked(dir.display().to_string())
        } else {
            Error::Io {
                op: "lock store directory",
                source: e,
            }
        }
    })
}

/// An existing store keeps the segment size it was created with: the
/// largest record must fit in that one, not in the requested one.
fn check_record_fits(opts: &Options, seg_size: u64) -> Result<()> {
    let record_max = opts.value_size_max_bytes as u64 + opts.key_size_max_bytes as u64 + 4096;
    if record_max > seg_size {
        return Err(Error::InvalidOptions(format!(
            "value_size_max_bytes ({}) does not fit the store's segments of {} bytes \
             (fixed when the store was created)",
            opts.value_size_max_bytes, seg_size
        )));
    }
    Ok(())
}

/// The snapshot catalog the recovered root points to (none: empty).
fn read_catalog(log: &Log, segs: &SegTable, ptr: Ptr) -> Result<Catalog> {
    if ptr.is_null() {
        return Ok(Catalog::default());
    }
    let (kind, payload) = log.read_record(segs, ptr)?;
    if kind != Kind::Catalog {
        return Err(Error::corrupt(ptr.addr, "catalog pointer leads elsewhere"));
    }
    Catalog::decode(ptr, &payload)
}
