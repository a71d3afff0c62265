//! Typed errors of the tlog.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the tlog.
#[derive(Debug, thiserror::Error)]
pub enum TlogError {
    /// The operating system (or the simulated one) refused an I/O call.
    #[error("tlog i/o error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record failed its checksum or is malformed; its bytes are never
    /// served. `offset` is a byte offset inside the segment file `path`.
    #[error("tlog corruption in {path} at offset {offset}: {what}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// The index lies at or below the log start (compacted or covered by a
    /// snapshot).
    #[error("tlog index is compacted")]
    Compacted,
    /// The index lies past the last entry.
    #[error("tlog index is past the last entry")]
    Unavailable,
    /// One entry's encoding is over `entry_size_max_bytes`.
    #[error("tlog entry of {size_bytes} bytes exceeds entry_size_max_bytes = {max_bytes}")]
    TooLarge { size_bytes: u64, max_bytes: u64 },
    /// The caller broke a precondition (non-contiguous entries, an append
    /// below the log start, a compaction past the last entry, ...).
    #[error("invalid tlog argument: {0}")]
    InvalidArgument(String),
    /// An earlier write or sync failed, so what reached the disk is unknown;
    /// the tlog refuses further writes until it is reopened (reopening
    /// recovers exactly what is durable).
    #[error("tlog is poisoned by an earlier i/o failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// The directory holds segment files this version cannot read.
    #[error("unsupported tlog format: {0}")]
    Format(String),
}

impl TlogError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> TlogError {
        let path = path.to_path_buf();
        move |source| TlogError::Io { op, path, source }
    }

    pub(crate) fn corrupt(
        path: &std::path::Path,
        offset: u64,
        what: impl Into<String>,
    ) -> TlogError {
        TlogError::Corruption {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }
}
