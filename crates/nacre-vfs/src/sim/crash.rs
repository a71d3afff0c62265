//! Faults: which mutating operation an injected crash or I/O error hits,
//! and what a crash (power loss) leaves of the file model's unsynced
//! writes and directory changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::Rng;

use super::model::{apply_write, State};
use super::{SimFault, SECTOR_SIZE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrashMode {
    Random,
    LoseAllUnsynced,
}

/// A random torn length for a write of `len` bytes: a multiple of
/// [`SECTOR_SIZE`] strictly below `len` (possibly 0).
pub(super) fn torn_len(rng: &mut StdRng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    rng.random_range(0..=(len - 1) / SECTOR_SIZE) * SECTOR_SIZE
}

impl State {
    /// The injected fault, if any, that hits the mutating operation about to
    /// run. One-shot I/O errors are consumed here.
    pub(super) fn fault(&mut self, is_sync: bool) -> Option<SimFault> {
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
    pub(super) fn begin_op(&mut self, is_sync: bool) -> io::Result<()> {
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

    pub(super) fn crash(&mut self, mode: CrashMode) {
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
