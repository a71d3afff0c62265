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
//!
//! The file model is in `sim/model.rs`, the faults and what a crash leaves
//! in `sim/crash.rs`; this file holds the public API and the `Vfs` and
//! `VFile` implementations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{VFile, Vfs};

mod crash;
mod model;

use crash::{torn_len, CrashMode};
use model::{apply_write, file_parent, invalid, not_found, PendingWrite, State};

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
mod tests;
