//! `nacre-vfs`: the file layer Nacre's store and tlog do all of their I/O
//! through.
//!
//! Production uses [`OsVfs`] (positional writes on real files; reads from
//! a mapping of each file, or positional reads).
//! Tests use `sim::SimVfs` (with the `sim` feature), which keeps files in
//! memory, separates what was written from what was made durable by a
//! sync, and can crash, tear writes, lose unsynced data and flip bits — all
//! driven by a seed. The feature keeps the simulator and its fault
//! injection out of the release binary: only tests and `nacre-sim` turn it
//! on.
//!
//! The engine only ever needs: create a directory, list it, open or create a
//! file, positional read/write, `sync_data`, remove a file and sync a
//! directory (so that creating and removing segment files is durable).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use memmap2::{Mmap, MmapOptions};
use parking_lot::Mutex;

#[cfg(feature = "sim")]
pub mod sim;

/// One open file. Reads and writes are positional, so one handle is shared by
/// many threads without a seek position to fight over.
#[allow(clippy::len_without_is_empty)]
pub trait VFile: Send + Sync {
    /// Fill `buf` from `offset`; a short file is `ErrorKind::UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`, growing the file as needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Write `len` zero bytes at `offset`, growing the file as needed: the
    /// logs' fill ahead of their head. Written from one static block; a
    /// fresh buffer of zeros per fill showed in profiles.
    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            self.write_all_at(&ZEROS[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
    /// Make every completed write to this file durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// A hint: start writing `len` bytes from `offset` to the device now,
    /// without waiting, so that a later `sync_data` has less left to do.
    /// It promises nothing about durability; the default does nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// The zero fill both logs keep ahead of their head, so that appends
/// overwrite the file in place and a small sync's fdatasync does not also
/// record a new file size: the range to write with zeros before a sync
/// that carries `fresh` bytes of new records, when records end at `end`,
/// zeros already reach `zeroed`, the fill is `ahead` bytes and the file may
/// not grow past `limit`. `None` when no fill is due: none is wanted
/// (`ahead` 0), nothing is to be synced (zeros would sit unsynced), enough
/// is left (a quarter of `ahead`), or the sync is large (`ahead` or more):
/// the zeros are dirty pages of the same file, so that fsync would write
/// them too and records would write over them again, while for a large
/// sync the file size it records is a small part of its cost.
pub fn zero_fill_range(
    fresh: u64,
    end: u64,
    zeroed: u64,
    ahead: u64,
    limit: u64,
) -> Option<std::ops::Range<u64>> {
    let zeroed = zeroed.max(end);
    if ahead == 0 || fresh == 0 || fresh >= ahead || zeroed >= end + ahead / 4 {
        return None;
    }
    let to = (end + ahead).min(limit);
    (to > zeroed).then_some(zeroed..to)
}

/// A directory of files.
pub trait Vfs: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Open `path` for reading and writing; with `create`, make it if absent.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make creations and removals of files in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take an exclusive lock that lives as long as the returned guard, so two
    /// processes never open one store.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>>;
}

/// The real file system.
///
/// Reads are copied out of a shared read-only mapping of the file where
/// they can be, and made with `pread` otherwise. A read through the map
/// makes no system call and no lookup in the kernel's page cache, which
/// profiles of random gets on a store larger than its cache showed to be
/// most of the cost of a cache miss (see `docs/benchmarks.md`).
#[derive(Debug, Clone, Copy)]
pub struct OsVfs {
    mapped_reads: bool,
}

impl Default for OsVfs {
    fn default() -> OsVfs {
        OsVfs { mapped_reads: true }
    }
}

impl OsVfs {
    /// Reads through a mapping where they can (the default).
    pub fn new() -> OsVfs {
        OsVfs::default()
    }

    /// Every read a `pread`: for file systems where mapping files is not
    /// wanted, and for measuring what the mapping gains. It also turns a
    /// disk error during a read into an `io::Error`; through the map, the
    /// kernel can only report one by killing the process (SIGBUS).
    pub fn pread_only() -> OsVfs {
        OsVfs {
            mapped_reads: false,
        }
    }

    fn open_file(&self, path: &Path, create: bool) -> io::Result<OsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let mapped = if self.mapped_reads {
            Some(Mapped::new(file.metadata()?.len()))
        } else {
            None
        };
        Ok(OsFile { file, mapped })
    }

    /// Bytes of `file`'s read map, 0 if it has none.
    #[cfg(test)]
    fn mapped_len(file: &OsFile) -> usize {
        let map = file.mapped.as_ref().map(|m| m.map.load_full());
        map.flatten().map_or(0, |m| m.len())
    }
}

struct OsFile {
    file: File,
    /// `None` when every read is a `pread`.
    mapped: Option<Mapped>,
}

/// The read mapping of one file, kept from growing stale as the file grows.
struct Mapped {
    /// Bytes known to exist in the file: its length at open, raised by this
    /// handle's writes and by reads that found more. Only bytes below it
    /// are read through the map, because touching a mapped page past the
    /// end of the file raises SIGBUS. Files only grow (the layer has no
    /// truncate), so what was known to exist stays.
    len_known: AtomicU64,
    /// Maps at least `len_known` bytes once a read has needed them; it may
    /// reach past the end of the file, which costs only address space.
    map: ArcSwapOption<Mmap>,
    /// Held while a new map is made, so that racing readers make one.
    remap: Mutex<()>,
    /// Set when mapping failed; the file is then read with `pread` only.
    failed: AtomicBool,
}

/// The smallest map made, so that a segment of the default size is mapped
/// once; a longer file gets the next power of two.
const MAP_LEN_MIN: u64 = 64 << 20;
/// Beyond this a file is read with `pread` past the map: 1 TiB of address
/// space per file is far more than any segment.
const MAP_LEN_MAX: u64 = 1 << 40;

impl Mapped {
    fn new(len_known: u64) -> Mapped {
        Mapped {
            len_known: AtomicU64::new(len_known),
            map: ArcSwapOption::empty(),
            remap: Mutex::new(()),
            failed: AtomicBool::new(false),
        }
    }

    /// Copy `buf.len()` bytes from `offset` out of the map; `false` if the
    /// map does not hold them (yet).
    fn read(&self, buf: &mut [u8], offset: u64) -> bool {
        let Some(end) = offset.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > self.len_known.load(Ordering::Acquire) {
            return false;
        }
        let guard = self.map.load();
        let Some(map) = guard.as_deref() else {
            return false;
        };
        if end > map.len() as u64 {
            return false;
        }
        // SAFETY: `offset..end` lies within the map (checked just above)
        // and below the file's known length, so every byte of it is backed
        // by the file and the read cannot fault. Bytes are copied through
        // raw pointers and no reference to the mapping is made, because
        // other parts of the file (past the log's head) are written while
        // this runs; the bytes read here belong to records already written,
        // which nothing rewrites: the store appends only, holds its
        // directory's lock, and this layer never truncates. `buf` is
        // ours and does not overlap the map.
        unsafe {
            std::ptr::copy_nonoverlapping(
                map.as_ptr().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        true
    }

    /// Whether the current map reaches `end`.
    fn maps(&self, end: u64) -> bool {
        let map = self.map.load();
        map.as_deref().is_some_and(|m| m.len() as u64 >= end)
    }

    /// The file holds at least `end` bytes: let later reads of them use the
    /// map, mapping more of the file if the map is too short.
    fn known(&self, file: &File, end: u64) {
        self.len_known.fetch_max(end, Ordering::AcqRel);
        if self.failed.load(Ordering::Relaxed) || end > MAP_LEN_MAX {
            return;
        }
        if self.maps(end) {
            return;
        }
        let _held = self.remap.lock();
        if self.maps(end) {
            return;
        }
        let len = end.next_power_of_two().clamp(MAP_LEN_MIN, MAP_LEN_MAX);
        let Ok(len) = usize::try_from(len) else {
            self.failed.store(true, Ordering::Relaxed);
            return;
        };
        // SAFETY: a shared read-only map of a file this process has open.
        // It may reach past the end of the file; `read` only touches bytes
        // below `len_known`, which exist. The file's written records are
        // not changed while mapped (see `read`). The old map, if any, is
        // unmapped only when the last reader's guard of it is gone.
        match unsafe { MmapOptions::new().len(len).map(file) } {
            Ok(m) => self.map.store(Some(Arc::new(m))),
            Err(e) => {
                tracing::debug!(error = %e, "mapping a file failed; reading it with pread");
                self.failed.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl VFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(m) = &self.mapped {
            if m.read(buf, offset) {
                return Ok(());
            }
        }
        self.file.read_exact_at(buf, offset)?;
        if let Some(m) = &self.mapped {
            m.known(&self.file, offset + buf.len() as u64);
        }
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, offset)?;
        if let Some(m) = &self.mapped {
            m.len_known
                .fetch_max(offset + buf.len() as u64, Ordering::AcqRel);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: sync_file_range reads no memory of ours; the descriptor is
        // owned by `self.file` and open for as long as `self` lives.
        let r = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

struct OsLock {
    _file: File,
}

impl Vfs for OsVfs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(self.open_file(path, create)?))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another process", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn zero_fill_is_due_only_for_small_syncs_short_of_zeros() {
        // A small sync with no zeros ahead: fill to `ahead` past the end.
        assert_eq!(
            zero_fill_range(100, 1000, 1000, 4096, u64::MAX),
            Some(1000..5096)
        );
        // Zeros already reaching part way: only the rest.
        assert_eq!(
            zero_fill_range(100, 1000, 1500, 4096, u64::MAX),
            Some(1500..5096)
        );
        // Enough zeros left (a quarter of `ahead` or more): none.
        assert_eq!(zero_fill_range(100, 1000, 2024, 4096, u64::MAX), None);
        // A large sync, nothing to sync, or no fill wanted: none.
        assert_eq!(zero_fill_range(4096, 1000, 1000, 4096, u64::MAX), None);
        assert_eq!(zero_fill_range(0, 1000, 1000, 4096, u64::MAX), None);
        assert_eq!(zero_fill_range(100, 1000, 1000, 0, u64::MAX), None);
        // Never past the limit, and nothing when the limit is reached.
        assert_eq!(
            zero_fill_range(100, 1000, 1000, 4096, 3000),
            Some(1000..3000)
        );
        assert_eq!(zero_fill_range(100, 3000, 3000, 4096, 3000), None);
    }

    #[test]
    fn write_zeros_zeroes_exactly_the_range_asked() {
        let dir = tempfile::tempdir().unwrap();
        let f = OsVfs::new().open_file(&dir.path().join("z"), true).unwrap();
        f.write_all_at(&[0xff; 200_000], 0).unwrap();
        // Past one 64 KiB block, from an odd offset, and growing the file.
        f.write_zeros(1_001, 150_000).unwrap();
        f.write_zeros(199_990, 100_000).unwrap();
        assert_eq!(f.len().unwrap(), 299_990);
        let mut got = vec![0u8; 299_990];
        f.read_exact_at(&mut got, 0).unwrap();
        let zero = |i: usize| (1_001..151_001).contains(&i) || i >= 199_990;
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, if zero(i) { 0 } else { 0xff }, "byte {i}");
        }
    }

    #[test]
    fn mapped_reads_return_what_was_written_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let vfs = OsVfs::new();
        let writer = vfs.open_file(&path, true).unwrap();
        // A second handle, as a reader that did not make the writes: it
        // learns of the growth only by reading.
        let other = vfs.open_file(&path, false).unwrap();
        let plain = OsVfs::pread_only().open_file(&path, false).unwrap();
        let mut model: Vec<u8> = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        for step in 0..2_000 {
            if rng.random_bool(0.3) || model.is_empty() {
                let len = rng.random_range(1..20_000);
                let at = rng.random_range(0..=model.len());
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                writer.write_all_at(&bytes, at as u64).unwrap();
                if model.len() < at + len {
                    model.resize(at + len, 0);
                }
                model[at..at + len].copy_from_slice(&bytes);
                continue;
            }
            let at = rng.random_range(0..model.len());
            let len = rng.random_range(1..=(model.len() - at).min(9_000));
            for (name, f) in [("writer", &writer), ("other", &other), ("plain", &plain)] {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, at as u64).unwrap();
                assert!(
                    buf == model[at..at + len],
                    "step {step}: {name} read {len} bytes at {at} that differ from those written"
                );
            }
        }
        assert!(
            OsVfs::mapped_len(&writer) >= model.len(),
            "reads went through a map"
        );
        assert!(OsVfs::mapped_len(&other) > 0);
        assert_eq!(OsVfs::mapped_len(&plain), 0, "pread_only maps nothing");
    }

    #[test]
    fn a_read_past_the_end_is_an_error_not_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = OsVfs::new().open_file(&path, true).unwrap();
        f.write_all_at(&[1u8; 5000], 0).unwrap();
        let mut buf = [0u8; 100];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(
            OsVfs::mapped_len(&f) >= 5000,
            "the first read maps the file"
        );
        // Within the map (it is at least MAP_LEN_MIN long) but past the end
        // of the file: touching the map there would raise SIGBUS.
        let e = f.read_exact_at(&mut buf, 4950).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = f.read_exact_at(&mut buf, 1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = f.read_exact_at(&mut buf, u64::MAX - 10).unwrap_err();
        assert!(matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput
        ));
    }

    #[test]
    fn a_file_longer_than_its_map_is_mapped_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = OsVfs::new().open_file(&path, true).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(OsVfs::mapped_len(&f) as u64, MAP_LEN_MIN);
        // A sparse write past the first map: the file grows without using
        // the disk.
        let far = 3 * MAP_LEN_MIN + 12_345;
        f.write_all_at(b"tail", far).unwrap();
        f.read_exact_at(&mut buf, far).unwrap();
        assert_eq!(&buf, b"tail");
        assert!(OsVfs::mapped_len(&f) as u64 >= far + 4, "mapped again");
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"head");
    }
}
