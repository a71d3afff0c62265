//! Online backup and restore.
//!
//! | module | one job |
//! |---|---|
//! | `format.rs` | the backup file: [`BackupWriter`] streams one read snapshot of the store, [`BackupReader`] / [`read_backup`] read one back, checked |
//! | `serve.rs` | the native protocol's `Backup` request: a read barrier, then the file as a paced stream of chunk frames and an end frame |
//! | `restore.rs` | [`restore`]: the data directory of a member of a new cluster, from a backup |
//!
//! The etcd API's Maintenance.Snapshot streams the same file
//! (etcd/maintenance.rs), so `etcdctl snapshot save` output restores too.

mod format;
mod restore;
mod serve;
#[cfg(test)]
mod tests;

pub use format::{
    read_backup, BackupError, BackupInfo, BackupReader, BackupWriter, BACKUP_MAGIC, SHA_BYTES,
};
pub use restore::{restore, RestoreError, Restored};
pub(crate) use serve::serve_backup;
