//! Typed errors of the storage engine.

use std::io;

/// Everything that can go wrong in `nacre-store`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an I/O call.
    #[error("i/o error during {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A record failed its checksum or is malformed; its bytes are not served.
    #[error("corruption at log position {position}: {what}")]
    Corruption { position: u64, what: String },
    /// An earlier write or fsync failed. Whether that data reached the disk is
    /// unknown, so the store refuses all further writes until it is reopened
    /// (reopening recovers to the last durable commit).
    #[error("store is poisoned by an earlier i/o failure ({0}); reopen it to recover")]
    Poisoned(String),
    #[error("key of {size} bytes exceeds the limit of {max} bytes (key_size_max)")]
    KeyTooLarge { size: usize, max: usize },
    #[error("value of {size} bytes exceeds the limit of {max} bytes (value_size_max)")]
    ValueTooLarge { size: usize, max: usize },
    #[error("transaction wrote {size} bytes, over the limit of {max} bytes (txn_size_max)")]
    TxnTooLarge { size: u64, max: u64 },
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    #[error("too many snapshots: the limit is {max} (snapshots_max)")]
    TooManySnapshots { max: usize },
    #[error("invalid snapshot name {0:?}: use 1 to 255 bytes of UTF-8")]
    InvalidSnapshotName(String),
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The directory holds files this version cannot read.
    #[error("unsupported store format: {0}")]
    Format(String),
    #[error("store at {0} is already open (locked by another process or handle)")]
    Locked(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }

    pub(crate) fn corrupt(position: u64, what: impl Into<String>) -> Error {
        Error::Corruption {
            position,
            what: what.into(),
        }
    }
}
