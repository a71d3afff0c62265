//! The simulated disk's file model: every file's volatile and durable
//! images with the writes between them, and the volatile and durable
//! namespaces. What a crash does to them, and the faults that cause one,
//! are in `crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;

use super::SimFault;

/// A write made since the last `sync_data` of its file.
pub(super) struct PendingWrite {
    pub(super) offset: usize,
    pub(super) data: Vec<u8>,
}

/// One file's contents. A file is bound to the path it was created at for
/// its whole life (there is no rename), which is what makes `gc` cheap.
pub(super) struct Inode {
    pub(super) path: PathBuf,
    pub(super) volatile: Vec<u8>,
    pub(super) durable: Vec<u8>,
    /// Invariant: `durable` with every pending write applied in order equals
    /// `volatile`.
    pub(super) pending: Vec<PendingWrite>,
    /// Live handles of the current generation.
    pub(super) handles: usize,
}

pub(super) struct State {
    pub(super) rng: StdRng,
    pub(super) dirs: BTreeSet<PathBuf>,
    /// Path -> inode as reads see it.
    pub(super) volatile_ns: BTreeMap<PathBuf, u64>,
    /// Path -> inode as a crash would leave it.
    pub(super) durable_ns: BTreeMap<PathBuf, u64>,
    pub(super) inodes: BTreeMap<u64, Inode>,
    pub(super) next_inode: u64,
    pub(super) locks: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles and lock guards of older generations
    /// are stale.
    pub(super) generation: u64,
    pub(super) ops: u64,
    pub(super) crashed: bool,
    pub(super) crash_after: Option<u64>,
    pub(super) io_error_after: Option<u64>,
    pub(super) fail_next_sync: bool,
    /// See [`SimVfs::plant_skipped_syncs`]; survives crashes.
    pub(super) skip_syncs: bool,
}

pub(super) fn not_found(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} {} not found (sim)", path.display()),
    )
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The directory holding the file at `path`.
pub(super) fn file_parent(path: &Path) -> io::Result<&Path> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(_)) => Ok(parent),
        _ => Err(invalid(format!("{} is not a file path", path.display()))),
    }
}

/// Write `data` at `offset` into `image`, zero-filling any gap.
pub(super) fn apply_write(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

impl State {
    pub(super) fn check_live(&self) -> io::Result<()> {
        if self.crashed {
            Err(SimFault::Crash.into())
        } else {
            Ok(())
        }
    }

    pub(super) fn check_handle(&self, generation: u64) -> io::Result<()> {
        self.check_live()?;
        if generation != self.generation {
            return Err(SimFault::StaleHandle.into());
        }
        Ok(())
    }

    pub(super) fn dir_exists(&self, dir: &Path) -> bool {
        dir.parent().is_none() || self.dirs.contains(dir)
    }

    pub(super) fn inode_mut(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other(format!("sim inode {id} vanished")))
    }

    /// Create an empty file at `path` (whose parent must exist and which must
    /// not exist yet): a mutating operation.
    pub(super) fn create_file(&mut self, path: &Path) -> io::Result<u64> {
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
    pub(super) fn gc(&mut self, id: u64) {
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
}
