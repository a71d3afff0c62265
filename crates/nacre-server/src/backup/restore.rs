//! Restoring a backup: the data directory of one member of a new cluster,
//! holding every pair of the backup but with the new cluster's members,
//! and a tlog that starts where the backup ends.
//!
//! What it writes, in a directory beside the target that is renamed into
//! place once complete (so a restore that fails or is interrupted leaves
//! no half-made data directory that a node could start from):
//!
//! - the store: every pair of the backup (user keys with their revisions,
//!   scripts, leases, sessions, etcd's revision records) except its
//!   member records, replaced by the members of the new cluster (the
//!   config's `[[nodes]]`, with the ids `nacre serve` gives them), and
//!   the applied index of the backup — installed the way a node installs
//!   a leader's snapshot (`StateMachine::install_snapshot`);
//! - the tlog: that snapshot's metadata (index and term of the backup,
//!   the new members as voters) and a hard state at that term, committed
//!   up to it — what a node that had just installed the snapshot holds.
//!
//! Every member restored from the same file with the same config starts
//! from the same snapshot at the same index: they elect a leader and go
//! on from there, none of them waiting for a snapshot, and new writes get
//! indexes (revisions) above the backup's.
//!
//! Leases are kept, as etcd keeps them: the first leader of the new
//! cluster gives each one its full time to live from when it took over
//! (node/leases.rs), so keys under a lease nobody renews go away one TTL
//! after the restored cluster starts.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nacre_vfs::OsVfs;
use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};

use super::format::{BackupError, BackupInfo, BackupReader};
use crate::state::{applied_of_pair, is_member_key, member_pair, MemberRecord, StateMachine};
use crate::{ServerConfig, ServerError};

/// Read-ahead of the backup file.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the backup {}: {source}", .path.display())]
    Backup {
        path: PathBuf,
        #[source]
        source: BackupError,
    },
    #[error("cannot open the backup {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data directory {} is not empty: a restore creates a new one", .0.display())]
    NotEmpty(PathBuf),
    #[error("{0} is not one of the config's [[nodes]]: restore each member of the new cluster with --node NAME")]
    NotAMember(String),
    #[error("a restore creates a member of a new cluster; this config joins an existing one (join / initial_cluster_state = \"existing\")")]
    JoinsExisting,
    #[error("the backup has no applied-index record: it holds no cluster state")]
    NoAppliedRecord,
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the restored state: {0}")]
    Server(#[from] ServerError),
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub backup: BackupInfo,
    /// The term of the backup's applied index, which the tlog starts at.
    pub term: u64,
    /// The members of the new cluster, by raft id.
    pub members: Vec<(u64, String)>,
    pub data_dir: PathBuf,
}

/// Creates `config.data_dir` for member `config.node_name` of a new
/// cluster (its members: `config.initial_members()`) from the backup at
/// `file`, which is checked in full before anything is written.
pub fn restore(file: &Path, config: &ServerConfig) -> Result<Restored, RestoreError> {
    if config.joins_existing() {
        return Err(RestoreError::JoinsExisting);
    }
    let members: Vec<(u64, MemberRecord)> = config
        .initial_members()
        .into_iter()
        .map(|(id, n)| {
            let record = MemberRecord {
                name: n.name,
                client: n.client,
                peer: n.peer,
            };
            (id, record)
        })
        .collect();
    if !members.iter().any(|(_, m)| m.name == config.node_name) {
        return Err(RestoreError::NotAMember(config.node_name.clone()));
    }
    let target = config.data_dir.clone();
    refuse_non_empty(&target)?;
    let (info, term) = verify(file)?;
    let partial = partial_dir(&target);
    if partial.exists() {
        // Left by a restore that was interrupted: nothing else uses it.
        std::fs::remove_dir_all(&partial).map_err(io("cannot remove", &partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io("cannot create", &partial))?;
    let written = write_state(file, config, &partial, &members, term);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if target.exists() {
        // Empty (checked above): make way for the rename.
        std::fs::remove_dir(&target).map_err(io("cannot replace", &target))?;
    }
    std::fs::rename(&partial, &target).map_err(io("cannot move the restored state to", &target))?;
    sync_parent(&target)?;
    Ok(Restored {
        backup: info,
        term,
        members: members.into_iter().map(|(id, m)| (id, m.name)).collect(),
        data_dir: target,
    })
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io { what, path, source }
}

/// `D.restoring`, beside `D`.
fn partial_dir(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    target.with_file_name(name)
}

fn refuse_non_empty(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::Io {
            what: "cannot read",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn open_backup(file: &Path) -> Result<BackupReader<BufReader<File>>, RestoreError> {
    let f = File::open(file).map_err(|source| RestoreError::Open {
        path: file.to_path_buf(),
        source,
    })?;
    BackupReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, f)).map_err(|source| {
        RestoreError::Backup {
            path: file.to_path_buf(),
            source,
        }
    })
}

/// Reads the whole backup, checksum included, before anything is
/// written: its figures and the term of its applied index.
fn verify(file: &Path) -> Result<(BackupInfo, u64), RestoreError> {
    let bad = |source| RestoreError::Backup {
        path: file.to_path_buf(),
        source,
    };
    let mut r = open_backup(file)?;
    let mut term = None;
    while let Some((k, v)) = r.next_pair().map_err(bad)? {
        if let Some((index, t)) = applied_of_pair(&k, &v) {
            if index != r.applied() {
                return Err(bad(BackupError::BadPair {
                    index: 0,
                    why: format!(
                        "the applied-index record says {index}, the header {}",
                        r.applied()
                    ),
                }));
            }
            term = Some(t);
        }
    }
    let info = r.finish().map_err(bad)?;
    Ok((info, term.ok_or(RestoreError::NoAppliedRecord)?))
}

/// The store and the tlog of the restored member, in `dir`.
fn write_state(
    file: &Path,
    config: &ServerConfig,
    dir: &Path,
    members: &[(u64, MemberRecord)],
    term: u64,
) -> Result<(), RestoreError> {
    let mut cfg = config.clone();
    cfg.data_dir = dir.to_path_buf();
    let vfs: Arc<dyn nacre_vfs::Vfs> = Arc::new(OsVfs::default());
    let store = crate::open_store(&cfg, vfs.clone()).map_err(RestoreError::Server)?;
    let mut sm = StateMachine::open_with(store.clone(), cfg.session_retention_entries)
        .map_err(|e| RestoreError::Server(e.into()))?;
    let mut reader = open_backup(file)?;
    let index = reader.applied();
    let conf = ConfState {
        voters: members.iter().map(|(id, _)| *id).collect(),
        ..Default::default()
    };
    let ours = members.iter().map(|(id, m)| Ok(member_pair(*id, m)));
    let pairs = PairsThenCheck {
        reader: Some(&mut reader),
        file,
    }
    .filter(|kv| !kv.as_ref().is_ok_and(|(k, _)| is_member_key(k)))
    .chain(ours);
    sm.install_snapshot(pairs, index, term, &conf)
        .map_err(|e| RestoreError::Server(e.into()))?;
    drop(sm);
    store.close().map_err(|e| RestoreError::Server(e.into()))?;

    let tlog_opts = nacre_raft::TlogOptions {
        segment_size_bytes: cfg.tlog_segment_size_bytes,
        ..Default::default()
    };
    let mut tlog = nacre_raft::Tlog::open(vfs, &dir.join("tlog"), tlog_opts)
        .map_err(|e| RestoreError::Server(e.into()))?;
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    meta.set_conf_state(conf);
    let hs = HardState {
        term,
        commit: index,
        vote: 0,
        ..Default::default()
    };
    let written = tlog
        .apply_snapshot(&meta)
        .and_then(|()| tlog.set_hard_state(&hs))
        .and_then(|()| tlog.sync());
    written.map_err(|e| RestoreError::Server(e.into()))?;
    Ok(())
}

/// The backup's pairs as the snapshot install takes them; after the last
/// one, the padding and checksum are checked again (the file could have
/// changed since it was verified), and a mismatch is the last item, an
/// error, so the install never commits.
struct PairsThenCheck<'a, R> {
    reader: Option<&'a mut BackupReader<R>>,
    file: &'a Path,
}

impl<R: std::io::Read> Iterator for PairsThenCheck<'_, R> {
    type Item = std::io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.reader.as_mut()?;
        let failed = |e: BackupError| {
            let why = format!("the backup {}: {e}", self.file.display());
            Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                why,
            )))
        };
        match reader.next_pair() {
            Ok(Some(pair)) => Some(Ok(pair)),
            Ok(None) => {
                let reader = self.reader.take()?;
                match reader.finish() {
                    Ok(_) => None,
                    Err(e) => failed(e),
                }
            }
            Err(e) => {
                self.reader = None;
                failed(e)
            }
        }
    }
}

/// Makes the rename into place durable.
fn sync_parent(target: &Path) -> Result<(), RestoreError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync", parent))
}
