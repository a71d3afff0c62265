//! A deterministic, fault-injecting, in-memory [`Vfs`] for crash tests.
//!
//! [`SimVfs`] keeps every file in memory with two images:
//!
//! * the *volatile* image, which reads see (the page cache), and
//! * the *durable* image, which survives a crash (the platter),
//!
//! plus the writes made since the file's last `sync_data`, in order.
//! `sync_data` makes the volatile image durable.
//!
//! Directory entries have the same split: creating or removing a file changes
//! the volatile namespace at once, and the durable namespace only when the
//! parent directory is synced with `sync_dir`. A file whose data was synced
//! but whose creation was never made durable by a `sync_dir` may vanish in a
//! crash, exactly the risk real POSIX file systems carry.
//!
//! Directories themselves are simpler: `create_dir_all` is durable at once
//! and directories are never removed. Opening a file in a directory that was
//! never created is `NotFound`, as on a real file system.
//!
//! # Faults
//!
//! All randomness comes from one [`StdRng`] seeded by [`SimVfs::new`], so the
//! same seed and the same sequence of calls give the same result.
//!
//! *Mutating operations* are `write_all_at`, `sync_data`, `open` (or `lock`)
//! creating a new file, `remove` and `sync_dir`. Each one that takes effect
//! advances the counter returned by [`SimVfs::ops`]; the operation about to
//! run has the index `ops()`. Calls that fail before reaching the file layer
//! (a `NotFound`, a bad offset) and operations that fail by an injected fault
//! do not advance it.
//!
//! * [`SimVfs::set_crash_after`]`(Some(n))`: the mutating operation with index
//!   `n` (counted from the creation of the vfs, not from the call) does not
//!   happen — a write may leave a torn prefix of whole 512-byte sectors in the
//!   volatile image — and fails with [`SimFault::Crash`]. From then on every
//!   call of any kind fails with [`SimFault::Crash`] until [`SimVfs::crash`] or
//!   [`SimVfs::crash_lose_all_unsynced`] "reboots" the machine.
//! * [`SimVfs::inject_io_error_after`] and [`SimVfs::fail_next_sync`]: one
//!   operation fails with [`SimFault::Io`] and has no effect; nothing crashes.
//! * [`SimVfs::crash`]: power loss. Every unsynced write is independently
//!   applied, dropped or torn (a prefix of whole 512-byte sectors applied),
//!   in the original order; every unsynced creation or removal of a directory
//!   entry independently persists or is undone. Handles and lock guards from
//!   before the crash become stale ([`SimFault::StaleHandle`] /
//!   no effect on drop).
//! * [`SimVfs::crash_lose_all_unsynced`]: the same, but every unsynced write
//!   and every unsynced directory change is lost.
//! * [`SimVfs::flip_bit`]: media corruption of durable data.
//! * [`SimVfs::plant_skipped_syncs`]: a planted bug for checkers to catch,
//!   not a fault real disks have: `sync_data` reports success and makes
//!   nothing durable, as if the program had skipped its fsyncs.
//!
//! Errors produced by the simulation carry a [`SimFault`] payload; use
//! [`SimFault::of`] to recognise them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{VFile, Vfs};

/// Torn writes keep a prefix that is a multiple of this many bytes.
pub const SECTOR_SIZE: usize = 512;

/// Largest file the simulation accepts; a write past it is `InvalidInput`
/// rather than an allocation that would abort the test process.
pub const MAX_FILE_LEN: u64 = 1 << 32;

/// The faults [`SimVfs`] injects, carried inside the `io::Error`s it returns
/// (`ErrorKind::Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimFault {
    /// Power was cut; every call fails until the vfs is crashed ("rebooted").
    #[error("simulated crash")]
    Crash,
    /// An injected EIO: the operation had no effect, the vfs still works.
    #[error("simulated I/O error")]
    Io,
    /// A file handle opened before the last simulated crash.
    #[error("stale file handle from before a simulated crash")]
    StaleHandle,
}

impl SimFault {
    /// The simulated fault inside `err`, if `err` came from the simulation.
    pub fn of(err: &io::Error) -> Option<SimFault> {
        err.get_ref()?.downcast_ref::<SimFault>().copied()
    }
}

impl From<SimFault> for io::Error {
    fn from(fault: SimFault) -> io::Error {
        io::Error::other(fault)
    }
}

/// The in-memory, fault-injecting file system. Clones share one state.
#[derive(Clone)]
pub struct SimVfs {
    state: Arc<Mutex<State>>,
}

/// A write made since the last `sync_data` of its file.
struct PendingWrite {
    offset: usize,
    data: Vec<u8>,
}

/// One file's contents. A file is bound to the path it was created at for
/// its whole life (there is no rename), which is what makes `gc` cheap.
struct Inode {
    path: PathBuf,
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// Invariant: `durable` with every pending write applied in order equals
    /// `volatile`.
    pending: Vec<PendingWrite>,
    /// Live handles of the current generation.
    handles: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashMode {
    Random,
    LoseAllUnsynced,
}

struct State {
    rng: StdRng,
    dirs: BTreeSet<PathBuf>,
    /// Path -> inode as reads see it.
    volatile_ns: BTreeMap<PathBuf, u64>,
    /// Path -> inode as a crash would leave it.
    durable_ns: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles and lock guards of older generations
    /// are stale.
    generation: u64,
    ops: u64,
    crashed: bool,
    crash_after: Option<u64>,
    io_error_after: Option<u64>,
    fail_next_sync: bool,
    /// See [`SimVfs::plant_skipped_syncs`]; survives crashes.
    skip_syncs: bool,
}

fn not_found(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} {} not found (sim)", path.display()),
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The directory holding the file at `path`.
fn file_parent(path: &Path) -> io::Result<&Path> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(_)) => Ok(parent),
        _ => Err(invalid(format!("{} is not a file path", path.display()))),
    }
}

/// Write `data` at `offset` into `image`, zero-filling any gap.
fn apply_write(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

/// A random torn length for a write of `len` bytes: a multiple of
/// [`SECTOR_SIZE`] strictly below `len` (possibly 0).
fn torn_len(rng: &mut StdRng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    rng.random_range(0..=(len - 1) / SECTOR_SIZE) * SECTOR_SIZE
}

impl State {
    fn check_live(&self) -> io::Result<()> {
        if self.crashed {
            Err(SimFault::Crash.into())
        } else {
            Ok(())
        }
    }

    fn check_handle(&self, generation: u64) -> io::Result<()> {
        self.check_live()?;
        if generation != self.generation {
            return Err(SimFault::StaleHandle.into());
        }
        Ok(())
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.parent().is_none() || self.dirs.contains(dir)
    }

    /// The injected fault, if any, that hits the mutating operation about to
    /// run. One-shot I/O errors are consumed here.
    fn fault(&mut self, is_sync: bool) -> Option<SimFault> {
        if self.crash_after.is_some_and(|n| self.ops >= n) {
            return Some(SimFault::Crash);
        }
        if self.io_error_after.is_some_and(|n| self.ops >= n) {
            self.io_error_after = None;
            return Some(SimFault::Io);
        }
        if is_sync && self.fail_next_sync {
            self.fail_next_sync = false;
            return Some(SimFault::Io);
        }
        None
    }

    /// Start a mutating operation that has no partial effect: Ok to go on, or
    /// the injected fault (entering the crashed state for a crash).
    fn begin_op(&mut self, is_sync: bool) -> io::Result<()> {
        match self.fault(is_sync) {
            None => Ok(()),
            Some(fault) => {
                if fault == SimFault::Crash {
                    self.crashed = true;
                }
                Err(fault.into())
            }
        }
    }

    fn inode_mut(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other(format!("sim inode {id} vanished")))
    }

    /// Create an empty file at `path` (whose parent must exist and which must
    /// not exist yet): a mutating operation.
    fn create_file(&mut self, path: &Path) -> io::Result<u64> {
        let parent = file_parent(path)?;
        if !self.dir_exists(parent) {
            return Err(not_found("directory", parent));
        }
        if self.dirs.contains(path) {
            return Err(invalid(format!("{} is a directory", path.display())));
        }
        self.begin_op(false)?;
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(
            id,
            Inode {
                path: path.to_path_buf(),
                volatile: Vec::new(),
                durable: Vec::new(),
                pending: Vec::new(),
                handles: 0,
            },
        );
        self.volatile_ns.insert(path.to_path_buf(), id);
        self.ops += 1;
        Ok(id)
    }

    /// Free the inode if no namespace and no live handle refers to it.
    fn gc(&mut self, id: u64) {
        let Some(inode) = self.inodes.get(&id) else {
            return;
        };
        let referenced = inode.handles > 0
            || self.volatile_ns.get(&inode.path) == Some(&id)
            || self.durable_ns.get(&inode.path) == Some(&id);
        if !referenced {
            self.inodes.remove(&id);
        }
    }

    fn crash(&mut self, mode: CrashMode) {
        // Directory entries first: each unsynced change persists or not.
        let paths: BTreeSet<PathBuf> = self
            .volatile_ns
            .keys()
            .chain(self.durable_ns.keys())
            .cloned()
            .collect();
        let mut ns = BTreeMap::new();
        for path in paths {
            let durable = self.durable_ns.get(&path).copied();
            let volatile = self.volatile_ns.get(&path).copied();
            let survivor = if durable == volatile {
                durable
            } else if mode == CrashMode::Random && self.rng.random_bool(0.5) {
                volatile
            } else {
                durable
            };
            if let Some(id) = survivor {
                ns.insert(path, id);
            }
        }

        // Then the data of every surviving file, in path order.
        let mut old = std::mem::take(&mut self.inodes);
        let mut inodes = BTreeMap::new();
        for &id in ns.values() {
            let Some(mut inode) = old.remove(&id) else {
                continue;
            };
            let mut image = std::mem::take(&mut inode.durable);
            for write in std::mem::take(&mut inode.pending) {
                let keep = match mode {
                    CrashMode::LoseAllUnsynced => 0,
                    CrashMode::Random => match self.rng.random_range(0..3u8) {
                        0 => write.data.len(),
                        1 => 0,
                        _ => torn_len(&mut self.rng, write.data.len()),
                    },
                };
                apply_write(&mut image, write.offset, &write.data[..keep]);
            }
            inode.volatile.clone_from(&image);
            inode.durable = image;
            inode.handles = 0;
            inodes.insert(id, inode);
        }

        self.inodes = inodes;
        self.volatile_ns.clone_from(&ns);
        self.durable_ns = ns;
        self.locks.clear();
        self.generation += 1;
        self.crashed = false;
        self.crash_after = None;
        self.io_error_after = None;
        self.fail_next_sync = false;
    }
}

impl SimVfs {
    /// An empty file system whose every random choice comes from `seed`.
    pub fn new(seed: u64) -> SimVfs {
        SimVfs {
            state: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                dirs: BTreeSet::new(),
                volatile_ns: BTreeMap::new(),
                durable_ns: BTreeMap::new(),
                inodes: BTreeMap::new(),
                next_inode: 0,
                locks: BTreeSet::new(),
                generation: 0,
                ops: 0,
                crashed: false,
                crash_after: None,
                io_error_after: None,
                fail_next_sync: false,
                skip_syncs: false,
            })),
        }
    }

    /// Cut the power at the mutating operation with index `n` (see the module
    /// docs); `None` disarms. Cleared by a crash.
    pub fn set_crash_after(&self, n: Option<u64>) {
        self.state.lock().crash_after = n;
    }

    /// Mutating operations that have taken effect since [`SimVfs::new`]
    /// (crashes do not reset it).
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Whether a `set_crash_after` crash has happened and not yet been
    /// followed by [`SimVfs::crash`] or [`SimVfs::crash_lose_all_unsynced`].
    pub fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Make the next `sync_data` or `sync_dir` fail with [`SimFault::Io`]
    /// without effect (its writes stay unsynced). `false` disarms.
    pub fn fail_next_sync(&self, fail: bool) {
        self.state.lock().fail_next_sync = fail;
    }

    /// Make the mutating operation with index `n` fail with [`SimFault::Io`]
    /// without effect, once; `None` disarms.
    pub fn inject_io_error_after(&self, n: Option<u64>) {
        self.state.lock().io_error_after = n;
    }

    /// A planted bug, for proving that a crash checker notices lost
    /// fsyncs: while on, `sync_data` succeeds (and counts as an operation)
    /// but leaves the file's writes unsynced, as if the program had skipped
    /// the fsync. A crash then treats them as it treats any unsynced write.
    pub fn plant_skipped_syncs(&self, on: bool) {
        self.state.lock().skip_syncs = on;
    }

    /// Power loss now, with every unsynced write and directory change
    /// independently kept, dropped or (writes only) torn. Afterwards the vfs
    /// works again, holds no locks, has no armed faults, and every handle from
    /// before is stale.
    pub fn crash(&self) {
        self.state.lock().crash(CrashMode::Random);
    }

    /// Power loss now, losing every unsynced write and directory change.
    pub fn crash_lose_all_unsynced(&self) {
        self.state.lock().crash(CrashMode::LoseAllUnsynced);
    }

    /// Flip bit `bit` (0 = least significant) of the byte at `offset` of the
    /// file at `path`, in its durable image, its volatile image and any
    /// unsynced write covering that byte: the medium is corrupt there.
    ///
    /// # Panics
    ///
    /// If `bit > 7`, the file does not exist or `offset` is not inside its
    /// durable image.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        assert!(bit < 8, "bit {bit} is not in 0..8");
        let mut st = self.state.lock();
        let id = *st
            .volatile_ns
            .get(path)
            .or_else(|| st.durable_ns.get(path))
            .unwrap_or_else(|| panic!("flip_bit: no file {}", path.display()));
        let inode = st.inodes.get_mut(&id).expect("inode of a named file");
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        assert!(
            off < inode.durable.len(),
            "flip_bit: offset {offset} is outside the {} durable bytes of {}",
            inode.durable.len(),
            path.display()
        );
        let mask = 1u8 << bit;
        inode.durable[off] ^= mask;
        inode.volatile[off] ^= mask;
        for write in &mut inode.pending {
            if let Some(byte) = off
                .checked_sub(write.offset)
                .and_then(|i| write.data.get_mut(i))
            {
                *byte ^= mask;
            }
        }
    }

    /// Length of the file at `path` as reads see it.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let st = self.state.lock();
        let id = st.volatile_ns.get(path)?;
        Some(st.inodes.get(id)?.volatile.len() as u64)
    }

    /// Contents of the file at `path` as reads see it (works while crashed,
    /// showing what the page cache held at the power cut).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let id = st.volatile_ns.get(path)?;
        Some(st.inodes.get(id)?.volatile.clone())
    }

    /// Every file path as reads see them, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().volatile_ns.keys().cloned().collect()
    }

    /// Sum of the lengths of the files in [`SimVfs::paths`].
    pub fn total_bytes(&self) -> u64 {
        let st = self.state.lock();
        st.volatile_ns
            .values()
            .filter_map(|id| st.inodes.get(id))
            .map(|inode| inode.volatile.len() as u64)
            .sum()
    }
}

impl fmt::Debug for SimVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("SimVfs")
            .field("files", &st.volatile_ns.len())
            .field("ops", &st.ops)
            .field("crashed", &st.crashed)
            .field("generation", &st.generation)
            .finish_non_exhaustive()
    }
}

impl Vfs for SimVfs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_live()?;
        let mut new = Vec::new();
        for ancestor in dir.ancestors() {
            if ancestor.parent().is_none() || st.dirs.contains(ancestor) {
                break;
            }
            if st.volatile_ns.contains_key(ancestor) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file (sim)", ancestor.display()),
                ));
            }
            new.push(ancestor.to_path_buf());
        }
        st.dirs.extend(new);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.check_live()?;
        if !st.dir_exists(dir) {
            return Err(not_found("directory", dir));
        }
        let children = st.volatile_ns.keys().chain(st.dirs.iter());
        let mut names: Vec<String> = children
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VFile>> {
        let mut st = self.state.lock();
        st.check_live()?;
        let id = match st.volatile_ns.get(path) {
            Some(&id) => id,
            None if create => st.create_file(path)?,
            None => return Err(not_found("file", path)),
        };
        st.inode_mut(id)?.handles += 1;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            generation: st.generation,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_live()?;
        let Some(&id) = st.volatile_ns.get(path) else {
            return Err(not_found("file", path));
        };
        st.begin_op(false)?;
        st.volatile_ns.remove(path);
        st.ops += 1;
        st.gc(id);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_live()?;
        if !st.dir_exists(dir) {
            return Err(not_found("directory", dir));
        }
        st.begin_op(true)?;
        let paths: BTreeSet<PathBuf> = st
            .volatile_ns
            .keys()
            .chain(st.durable_ns.keys())
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect();
        for path in paths {
            let replaced = match st.volatile_ns.get(&path).copied() {
                Some(id) => st.durable_ns.insert(path, id),
                None => st.durable_ns.remove(&path),
            };
            if let Some(old) = replaced {
                st.gc(old);
            }
        }
        st.ops += 1;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        let mut st = self.state.lock();
        st.check_live()?;
        file_parent(path)?;
        if st.locks.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another process (sim)", path.display()),
            ));
        }
        // Like the real lock, this opens (creating if needed) the lock file.
        if !st.volatile_ns.contains_key(path) {
            st.create_file(path)?;
        }
        st.locks.insert(path.to_path_buf());
        Ok(Box::new(SimLockGuard {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            generation: st.generation,
        }))
    }
}

/// A handle on one simulated file.
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
}

impl VFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_handle(self.generation)?;
        let image = &st.inode_mut(self.inode)?.volatile;
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= image.len() as u64 => {
                // Both fit in usize: they are within `image`.
                buf.copy_from_slice(&image[offset as usize..end as usize]);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end ({}) (sim)",
                    buf.len(),
                    image.len()
                ),
            )),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.check_handle(self.generation)?;
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= MAX_FILE_LEN);
        let (Some(_), Ok(start)) = (end, usize::try_from(offset)) else {
            return Err(invalid(format!(
                "write of {} bytes at {offset} exceeds the sim limit of {MAX_FILE_LEN}",
                buf.len()
            )));
        };
        // A crash cuts the write to a torn prefix (possibly empty) that stays
        // in the page cache, unsynced, for the coming crash to judge.
        let fault = st.fault(false);
        let keep = match fault {
            None => buf.len(),
            Some(SimFault::Crash) => torn_len(&mut st.rng, buf.len()),
            Some(fault) => return Err(fault.into()),
        };
        let inode = st.inode_mut(self.inode)?;
        apply_write(&mut inode.volatile, start, &buf[..keep]);
        if keep > 0 {
            inode.pending.push(PendingWrite {
                offset: start,
                data: buf[..keep].to_vec(),
            });
        }
        if fault == Some(SimFault::Crash) {
            st.crashed = true;
            return Err(SimFault::Crash.into());
        }
        st.ops += 1;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_handle(self.generation)?;
        st.begin_op(true)?;
        if st.skip_syncs {
            st.ops += 1;
            return Ok(());
        }
        let inode = st.inode_mut(self.inode)?;
        for write in std::mem::take(&mut inode.pending) {
            apply_write(&mut inode.durable, write.offset, &write.data);
        }
        st.ops += 1;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.state.lock();
        st.check_handle(self.generation)?;
        Ok(st.inode_mut(self.inode)?.volatile.len() as u64)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.generation != self.generation {
            return;
        }
        if let Some(inode) = st.inodes.get_mut(&self.inode) {
            inode.handles = inode.handles.saturating_sub(1);
        }
        st.gc(self.inode);
    }
}

/// Holds a simulated lock; dropping it releases the lock unless a crash
/// already did.
struct SimLockGuard {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/db";

    fn p(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn dir() -> &'static Path {
        Path::new(DIR)
    }

    fn fresh(seed: u64) -> SimVfs {
        let vfs = SimVfs::new(seed);
        vfs.create_dir_all(dir()).unwrap();
        vfs
    }

    fn read_all(file: &dyn VFile) -> Vec<u8> {
        let mut buf = vec![0; file.len().unwrap() as usize];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    fn fault(result: io::Result<impl Sized>) -> Option<SimFault> {
        match result {
            Ok(_) => None,
            Err(err) => {
                assert_eq!(err.kind(), io::ErrorKind::Other, "{err}");
                SimFault::of(&err)
            }
        }
    }

    /// Every file's path and contents.
    fn snapshot(vfs: &SimVfs) -> Vec<(PathBuf, Vec<u8>)> {
        vfs.paths()
            .into_iter()
            .map(|path| {
                let data = vfs.contents(&path).unwrap();
                (path, data)
            })
            .collect()
    }

    /// Check the invariant durable + pending == volatile for every file.
    fn assert_images_consistent(vfs: &SimVfs) {
        let st = vfs.state.lock();
        for inode in st.inodes.values() {
            let mut image = inode.durable.clone();
            for write in &inode.pending {
                apply_write(&mut image, write.offset, &write.data);
            }
            assert_eq!(image, inode.volatile, "{}", inode.path.display());
        }
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<SimVfs>();
    }

    #[test]
    fn read_your_writes() {
        let vfs = fresh(1);
        let f = vfs.open(&p("a"), true).unwrap();
        assert_eq!(f.len().unwrap(), 0);
        f.write_all_at(b"hello", 0).unwrap();
        f.write_all_at(b"world", 10).unwrap();
        assert_eq!(f.len().unwrap(), 15);
        assert_eq!(read_all(&*f), b"hello\0\0\0\0\0world");
        f.write_all_at(b"J", 0).unwrap();
        let mut buf = [0; 5];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"Jello");

        // A second handle and a clone of the vfs see the same bytes.
        let other = vfs.clone().open(&p("a"), false).unwrap();
        other.read_exact_at(&mut buf, 10).unwrap();
        assert_eq!(&buf, b"world");

        let err = f.read_exact_at(&mut buf, 11).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = f.read_exact_at(&mut buf, u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = f.write_all_at(b"x", u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        assert_eq!(vfs.file_len(&p("a")), Some(15));
        assert_eq!(vfs.total_bytes(), 15);
        assert_images_consistent(&vfs);
    }

    #[test]
    fn namespace_basics() {
        let vfs = SimVfs::new(2);
        let err = vfs.open(&p("a"), true).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "no such directory");
        assert_eq!(vfs.list(dir()).unwrap_err().kind(), io::ErrorKind::NotFound);
        vfs.create_dir_all(&p("sub")).unwrap();
        let err = vfs.open(&p("a"), false).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        vfs.open(&p("b"), true).unwrap();
        vfs.open(&p("a"), true).unwrap();
        assert_eq!(vfs.list(dir()).unwrap(), ["a", "b", "sub"]);
        assert_eq!(vfs.paths(), [p("a"), p("b")]);
        vfs.remove(&p("a")).unwrap();
        assert_eq!(
            vfs.remove(&p("a")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(vfs.list(dir()).unwrap(), ["b", "sub"]);
        assert_eq!(vfs.file_len(&p("a")), None);
        assert!(vfs.create_dir_all(&p("b")).is_err(), "b is a file");
    }

    #[test]
    fn synced_data_survives_and_unsynced_does_not() {
        let vfs = fresh(3);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        f.write_all_at(&[1; 1000], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[2; 100], 500).unwrap();
        f.write_all_at(&[3; 100], 1000).unwrap();
        assert_eq!(vfs.file_len(&p("a")), Some(1100));
        assert_images_consistent(&vfs);

        vfs.crash_lose_all_unsynced();
        assert_eq!(vfs.contents(&p("a")).unwrap(), vec![1; 1000]);
        let f = vfs.open(&p("a"), false).unwrap();
        assert_eq!(read_all(&*f), vec![1; 1000]);
        assert_images_consistent(&vfs);
    }

    #[test]
    fn planted_skipped_syncs_make_nothing_durable() {
        let vfs = fresh(12);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        f.write_all_at(b"kept", 0).unwrap();
        f.sync_data().unwrap();
        vfs.plant_skipped_syncs(true);
        f.write_all_at(b"lost", 4).unwrap();
        let ops = vfs.ops();
        f.sync_data().unwrap();
        assert_eq!(vfs.ops(), ops + 1, "a skipped sync still counts");
        assert_eq!(read_all(&*f), b"keptlost");
        vfs.crash_lose_all_unsynced();
        assert_eq!(vfs.contents(&p("a")).unwrap(), b"kept");
        assert_images_consistent(&vfs);
    }

    #[test]
    fn undirsynced_create_vanishes_on_lose_all() {
        let vfs = fresh(4);
        let f = vfs.open(&p("a"), true).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_data().unwrap();
        vfs.sync_dir(Path::new("/other")).unwrap_err();
        assert_eq!(vfs.paths(), [p("a")]);
        vfs.crash_lose_all_unsynced();
        assert!(vfs.paths().is_empty());
        assert!(vfs.list(dir()).unwrap().is_empty());
        let err = vfs.open(&p("a"), false).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(vfs.state.lock().inodes.is_empty(), "its data was freed");
    }

    #[test]
    fn undirsynced_create_may_survive_a_random_crash() {
        let (mut kept, mut lost) = (0, 0);
        for seed in 0..64 {
            let vfs = fresh(seed);
            let f = vfs.open(&p("a"), true).unwrap();
            f.write_all_at(b"data", 0).unwrap();
            f.sync_data().unwrap();
            vfs.crash();
            match vfs.contents(&p("a")) {
                Some(data) => {
                    assert_eq!(data, b"data", "synced data survives with the file");
                    kept += 1;
                }
                None => lost += 1,
            }
        }
        assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");
    }

    #[test]
    fn undirsynced_remove_is_undone_by_crash() {
        let vfs = fresh(5);
        let f = vfs.open(&p("a"), true).unwrap();
        let g = vfs.open(&p("b"), true).unwrap();
        f.write_all_at(b"keep", 0).unwrap();
        f.sync_data().unwrap();
        g.write_all_at(b"gone", 0).unwrap();
        g.sync_data().unwrap();
        vfs.sync_dir(dir()).unwrap();
        drop(g);

        vfs.remove(&p("a")).unwrap();
        vfs.remove(&p("b")).unwrap();
        vfs.sync_dir(&p("elsewhere")).unwrap_err();
        // A removed file stays usable through an open handle.
        f.write_all_at(b"more", 4).unwrap();
        assert_eq!(read_all(&*f), b"keepmore");
        assert!(vfs.paths().is_empty());
        vfs.open(&p("c"), true).unwrap();

        vfs.crash_lose_all_unsynced();
        assert_eq!(vfs.paths(), [p("a"), p("b")], "both removals undone");
        assert_eq!(vfs.contents(&p("a")).unwrap(), b"keep");
        assert_eq!(vfs.contents(&p("b")).unwrap(), b"gone");

        // A dir-synced removal is permanent and frees the data.
        vfs.remove(&p("b")).unwrap();
        vfs.sync_dir(dir()).unwrap();
        vfs.crash();
        assert_eq!(vfs.paths(), [p("a")]);
        assert_eq!(vfs.state.lock().inodes.len(), 1);
    }

    #[test]
    fn removed_file_is_freed_when_unreferenced() {
        let vfs = fresh(6);
        let f = vfs.open(&p("a"), true).unwrap();
        f.write_all_at(&[7; 4096], 0).unwrap();
        vfs.sync_dir(dir()).unwrap();
        vfs.remove(&p("a")).unwrap();
        vfs.sync_dir(dir()).unwrap();
        assert_eq!(vfs.state.lock().inodes.len(), 1, "the handle keeps it");
        assert_eq!(f.len().unwrap(), 4096);
        drop(f);
        assert!(vfs.state.lock().inodes.is_empty());
        assert_eq!(vfs.total_bytes(), 0);
    }

    /// Nine mutating operations (indices 0..9) and some that are not.
    fn workload(vfs: &SimVfs) -> io::Result<()> {
        vfs.create_dir_all(dir())?;
        let a = vfs.open(&p("a"), true)?; // 0
        vfs.sync_dir(dir())?; // 1
        a.write_all_at(&[1; 1500], 0)?; // 2
        a.sync_data()?; // 3
        let mut buf = [0; 10];
        a.read_exact_at(&mut buf, 0)?;
        let b = vfs.open(&p("b"), true)?; // 4
        vfs.open(&p("b"), false)?;
        b.write_all_at(&[2; 700], 0)?; // 5
        vfs.remove(&p("a"))?; // 6
        vfs.sync_dir(dir())?; // 7
        b.sync_data()?; // 8
        vfs.list(dir())?;
        Ok(())
    }

    #[test]
    fn crash_after_fails_op_n_and_everything_after() {
        let clean = SimVfs::new(7);
        workload(&clean).unwrap();
        let total = clean.ops();
        assert_eq!(total, 9);

        for n in 0..total {
            let vfs = SimVfs::new(7);
            vfs.set_crash_after(Some(n));
            let err = workload(&vfs).unwrap_err();
            assert_eq!(SimFault::of(&err), Some(SimFault::Crash), "n={n}");
            assert_eq!(err.to_string(), "simulated crash");
            assert_eq!(vfs.ops(), n, "exactly n operations took effect");
            assert!(vfs.is_crashed());

            // Every later call of any kind fails.
            assert_eq!(fault(vfs.create_dir_all(dir())), Some(SimFault::Crash));
            assert_eq!(fault(vfs.list(dir())), Some(SimFault::Crash));
            assert_eq!(fault(vfs.open(&p("a"), false)), Some(SimFault::Crash));
            assert_eq!(fault(vfs.open(&p("z"), true)), Some(SimFault::Crash));
            assert_eq!(fault(vfs.remove(&p("b"))), Some(SimFault::Crash));
            assert_eq!(fault(vfs.sync_dir(dir())), Some(SimFault::Crash));
            assert_eq!(fault(vfs.lock(&p("LOCK"))), Some(SimFault::Crash));
            assert_eq!(vfs.ops(), n);

            vfs.crash_lose_all_unsynced();
            assert!(!vfs.is_crashed());
            // What is durable matches how far the workload got.
            let a = vfs.contents(&p("a"));
            let b = vfs.contents(&p("b"));
            match n {
                0 | 1 => assert_eq!((a, b), (None, None)),
                2 | 3 => assert_eq!((a, b), (Some(vec![]), None)),
                4..=6 => assert_eq!((a, b), (Some(vec![1; 1500]), None)),
                7 => assert_eq!((a, b), (Some(vec![1; 1500]), None)),
                _ => assert_eq!((a, b), (None, Some(vec![]))),
            }
            // The vfs works again and the crash point is disarmed.
            workload(&vfs).unwrap();
        }

        // Past the end of the workload nothing happens.
        let vfs = SimVfs::new(7);
        vfs.set_crash_after(Some(total));
        workload(&vfs).unwrap();
        assert!(!vfs.is_crashed());
        // The index is absolute: arm relative to the current count.
        vfs.set_crash_after(Some(vfs.ops() + 1));
        let f = vfs.open(&p("b"), false).unwrap();
        f.sync_data().unwrap();
        assert_eq!(fault(f.sync_data()), Some(SimFault::Crash));
        // Handle calls fail too once crashed, reads included.
        assert_eq!(fault(f.len()), Some(SimFault::Crash));
        assert_eq!(
            fault(f.read_exact_at(&mut [0; 1], 0)),
            Some(SimFault::Crash)
        );
        assert_eq!(fault(f.write_all_at(b"x", 0)), Some(SimFault::Crash));
    }

    #[test]
    fn crash_point_write_leaves_a_sector_multiple_prefix() {
        let mut lens = BTreeSet::new();
        for seed in 0..64 {
            let vfs = fresh(seed);
            let f = vfs.open(&p("a"), true).unwrap();
            vfs.set_crash_after(Some(vfs.ops()));
            assert_eq!(fault(f.write_all_at(&[9; 2000], 0)), Some(SimFault::Crash));
            let data = vfs.contents(&p("a")).unwrap();
            assert_eq!(data.len() % SECTOR_SIZE, 0, "seed {seed}");
            assert!(data.len() < 2000);
            assert!(data.iter().all(|&b| b == 9));
            lens.insert(data.len());
            assert_images_consistent(&vfs);
        }
        assert!(lens.len() > 1, "torn lengths seen: {lens:?}");
        assert!(lens.contains(&0));
    }

    #[test]
    fn crash_tears_unsynced_writes_at_sector_multiples() {
        const BASE: u8 = 0xAA;
        const NEW: u8 = 0x55;
        let (offset, len) = (100usize, 3000usize);
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let vfs = fresh(seed);
            let f = vfs.open(&p("a"), true).unwrap();
            vfs.sync_dir(dir()).unwrap();
            f.write_all_at(&[BASE; 4096], 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(&[NEW; 3000], offset as u64).unwrap();
            vfs.crash();
            let data = vfs.contents(&p("a")).unwrap();
            assert_eq!(data.len(), 4096);
            let applied = data[offset..].iter().take_while(|&&b| b == NEW).count();
            assert!(
                applied == len || applied % SECTOR_SIZE == 0,
                "seed {seed}: {applied} bytes applied"
            );
            assert!(applied <= len);
            assert!(data[..offset].iter().all(|&b| b == BASE));
            assert!(data[offset + applied..].iter().all(|&b| b == BASE));
            seen.insert(applied);
            assert_images_consistent(&vfs);
        }
        assert!(seen.contains(&0), "{seen:?}");
        assert!(seen.contains(&len), "{seen:?}");
        assert!(seen.iter().any(|&n| n > 0 && n < len), "{seen:?}");
    }

    #[test]
    fn crash_extends_files_only_by_applied_writes() {
        for seed in 0..32 {
            let vfs = fresh(seed);
            let f = vfs.open(&p("a"), true).unwrap();
            vfs.sync_dir(dir()).unwrap();
            f.write_all_at(&[1; 10], 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(&[2; 600], 2000).unwrap();
            vfs.crash();
            let len = vfs.file_len(&p("a")).unwrap();
            assert!([10, 2512, 2600].contains(&len), "seed {seed}: {len}");
        }
    }

    /// A workload with plenty of unsynced state for a crash to choose from.
    fn busy_workload(vfs: &SimVfs) {
        let mut files = Vec::new();
        for i in 0..6u8 {
            let f = vfs.open(&p(&format!("f{i}")), true).unwrap();
            for j in 0..8u64 {
                let len = 100 + 397 * j as usize + i as usize * 13;
                f.write_all_at(&vec![i * 16 + j as u8; len], j * 700)
                    .unwrap();
                if (i as u64 + j).is_multiple_of(3) {
                    f.sync_data().unwrap();
                }
            }
            if i % 2 == 0 {
                vfs.sync_dir(dir()).unwrap();
            }
            files.push(f);
        }
        vfs.remove(&p("f0")).unwrap();
        vfs.remove(&p("f5")).unwrap();
        assert_images_consistent(vfs);
    }

    #[test]
    fn same_seed_same_ops_same_images() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..8 {
            let one = fresh(seed);
            let two = fresh(seed);
            busy_workload(&one);
            busy_workload(&two);
            assert_eq!(snapshot(&one), snapshot(&two));
            one.crash();
            two.crash();
            let after = snapshot(&one);
            assert_eq!(after, snapshot(&two), "seed {seed}");
            assert_images_consistent(&one);
            // A second crash without new writes changes nothing.
            one.crash();
            assert_eq!(snapshot(&one), after);
            outcomes.insert(after);
        }
        assert!(outcomes.len() > 1, "seeds should differ in their choices");
    }

    #[test]
    fn flip_bit_changes_exactly_one_bit() {
        let vfs = fresh(8);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        let original: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
        f.write_all_at(&original, 0).unwrap();
        f.sync_data().unwrap();
        // An unsynced write covering the byte is corrupted too.
        f.write_all_at(&original[500..600], 500).unwrap();

        vfs.flip_bit(&p("a"), 513, 6);
        let check = |data: &[u8]| {
            let diff: Vec<(usize, u8)> = data
                .iter()
                .zip(&original)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| (i, a ^ b))
                .collect();
            assert_eq!(diff, [(513, 1 << 6)]);
        };
        check(&read_all(&*f));
        f.sync_data().unwrap();
        assert_images_consistent(&vfs);
        vfs.crash_lose_all_unsynced();
        check(&vfs.contents(&p("a")).unwrap());
    }

    #[test]
    #[should_panic(expected = "outside the 0 durable bytes")]
    fn flip_bit_rejects_unsynced_bytes() {
        let vfs = fresh(8);
        let f = vfs.open(&p("a"), true).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        vfs.flip_bit(&p("a"), 1, 0);
    }

    #[test]
    fn old_handles_fail_after_crash() {
        let vfs = fresh(9);
        let old = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        old.write_all_at(b"abc", 0).unwrap();
        old.sync_data().unwrap();
        vfs.crash();

        let stale = Some(SimFault::StaleHandle);
        assert_eq!(fault(old.len()), stale);
        assert_eq!(fault(old.read_exact_at(&mut [0; 1], 0)), stale);
        assert_eq!(fault(old.write_all_at(b"x", 0)), stale);
        assert_eq!(fault(old.sync_data()), stale);

        let new = vfs.open(&p("a"), false).unwrap();
        assert_eq!(read_all(&*new), b"abc");
        drop(old); // must not disturb the new handle's bookkeeping
        vfs.remove(&p("a")).unwrap();
        vfs.sync_dir(dir()).unwrap();
        assert_eq!(read_all(&*new), b"abc", "new handle keeps the inode");
        drop(new);
        assert!(vfs.state.lock().inodes.is_empty());
    }

    #[test]
    fn lock_is_exclusive() {
        let vfs = fresh(10);
        let lock_path = p("LOCK");
        let guard = vfs.lock(&lock_path).unwrap();
        let err = vfs.clone().lock(&lock_path).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(vfs.list(dir()).unwrap(), ["LOCK"], "lock file is created");
        let other = vfs.lock(&p("OTHER")).unwrap();
        drop(guard);
        let again = vfs.lock(&lock_path).unwrap();
        assert_eq!(
            vfs.lock(&lock_path).err().unwrap().kind(),
            io::ErrorKind::WouldBlock
        );

        // A crash releases every lock; stale guards release nothing later.
        vfs.crash();
        let after = vfs.lock(&lock_path).unwrap();
        drop(again);
        drop(other);
        assert_eq!(
            vfs.lock(&lock_path).err().unwrap().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(after);
        vfs.lock(&lock_path).unwrap();
    }

    #[test]
    fn injected_io_errors_do_not_crash() {
        let vfs = fresh(11);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        f.write_all_at(b"abc", 0).unwrap();

        vfs.fail_next_sync(true);
        let err = f.sync_data().unwrap_err();
        assert_eq!(SimFault::of(&err), Some(SimFault::Io));
        assert_eq!(err.to_string(), "simulated I/O error");
        assert!(!vfs.is_crashed());
        let ops = vfs.ops();

        // A failed write has no effect and is not counted.
        vfs.inject_io_error_after(Some(ops));
        assert_eq!(fault(f.write_all_at(b"zzz", 3)), Some(SimFault::Io));
        assert_eq!(vfs.ops(), ops);
        assert_eq!(read_all(&*f), b"abc");
        // Both were one-shot.
        f.write_all_at(b"def", 3).unwrap();
        assert_eq!(read_all(&*f), b"abcdef");

        // The failed sync made nothing durable.
        vfs.crash_lose_all_unsynced();
        assert_eq!(vfs.contents(&p("a")).unwrap(), b"");

        // Failing other operations: remove, sync_dir, create.
        let f = vfs.open(&p("a"), false).unwrap();
        vfs.inject_io_error_after(Some(vfs.ops()));
        assert_eq!(fault(vfs.remove(&p("a"))), Some(SimFault::Io));
        assert_eq!(vfs.paths(), [p("a")]);
        vfs.fail_next_sync(true);
        assert_eq!(fault(vfs.sync_dir(dir())), Some(SimFault::Io));
        vfs.inject_io_error_after(Some(vfs.ops()));
        assert_eq!(fault(vfs.open(&p("b"), true)), Some(SimFault::Io));
        assert_eq!(vfs.paths(), [p("a")]);
        f.sync_data().unwrap();
    }
}
