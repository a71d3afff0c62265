//! Why a node stopped or could not start, with the error it came from kept
//! as its source, so that corruption, I/O failure and poisoning stay
//! distinguishable up to the exit code of `nacre serve`
//! ([`ServerError::kind`]).

use crate::config::ConfigError;
use crate::state::{Corruption, StateError};

/// Why a node stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] nacre_store::Error),
    /// The tlog's own messages all say "tlog".
    #[error("{0}")]
    Tlog(#[from] nacre_raft::TlogError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A stored record, or one in a snapshot from the leader, does not
    /// decode as what its namespace says.
    #[error("{0}")]
    Corruption(#[from] Corruption),
    /// A committed conf-change entry that does not decode.
    #[error("conf change at index {index} does not decode: {source}")]
    ConfChange {
        index: u64,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error(
        "the store has applied index {applied} but the tlog ends at {tlog_last}: \
         the tlog was lost or belongs to another store"
    )]
    TlogBehindStore { applied: u64, tlog_last: u64 },
    #[error("entry {index} came to be applied after index {applied}: entries out of order")]
    OutOfOrder { index: u64, applied: u64 },
    #[error("raft accepted a snapshot at index {index} whose data never arrived")]
    SnapshotMissing { index: u64 },
    /// The snapshot file streamed from the leader could not be read back.
    #[error("cannot read the snapshot file: {0}")]
    SnapshotRead(#[source] std::io::Error),
    /// A snapshot from the leader holds a pair that does not decode; it
    /// was not installed.
    #[error("snapshot refused: {0}")]
    BadSnapshot(#[source] Corruption),
    /// The log holds a command of a format this build does not read: the
    /// cluster runs a newer Nacre (the state machine's error says which).
    #[error("{0}")]
    NewerCommandFormat(#[source] StateError),
    /// A thread or task the node cannot live without panicked or ended.
    #[error("the {thread} {why}")]
    Stopped { thread: &'static str, why: String },
    /// The cluster removed this node (`nacre cluster remove`): it stopped,
    /// and must not be restarted as a member.
    #[error("this node was removed from the cluster")]
    Removed,
}

impl From<StateError> for ServerError {
    fn from(e: StateError) -> ServerError {
        match e {
            StateError::Store(e) => ServerError::Store(e),
            StateError::Corruption(c) => ServerError::Corruption(c),
            StateError::OutOfOrder { index, applied } => ServerError::OutOfOrder { index, applied },
            StateError::SnapshotRead(e) => ServerError::SnapshotRead(e),
            StateError::BadSnapshot(c) => ServerError::BadSnapshot(c),
            e @ StateError::NewerCommandFormat { .. } => ServerError::NewerCommandFormat(e),
        }
    }
}

/// The message a panic was raised with, when it was a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_string(),
    }
}

/// What kind of failure an error is, for whoever must decide what to do
/// about it (the exit code of `nacre serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Data on disk (or from the leader) is not what was written: a
    /// checksum failed, a stored record does not decode, the tlog lags the
    /// store. Restarting will not help.
    Corruption,
    /// The operating system refused an I/O call.
    Io,
    /// The store or the tlog refuses writes after an earlier I/O failure;
    /// a restart recovers what is durable.
    Poisoned,
    /// A thread the node needs panicked or ended, or an invariant broke.
    Internal,
    /// Not a failure: the cluster removed this node, so it stopped.
    Removed,
    /// Anything else: configuration, an address already in use, ...
    Other,
}

impl ServerError {
    /// The kind of failure, found in this error or the errors it wraps
    /// (raft-rs boxes the tlog's errors inside its own).
    pub fn kind(&self) -> FailureKind {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(kind) = kind_of(e) {
                return kind;
            }
            next = e.source();
        }
        FailureKind::Other
    }
}

/// The kind of one error in a chain, if it decides it.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    if let Some(e) = e.downcast_ref::<ServerError>() {
        return match e {
            ServerError::Corruption(_)
            | ServerError::BadSnapshot(_)
            | ServerError::ConfChange { .. }
            | ServerError::TlogBehindStore { .. } => Some(FailureKind::Corruption),
            // A file cut short is as corrupt as one with wrong bytes.
            ServerError::SnapshotRead(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Some(FailureKind::Corruption)
            }
            ServerError::Io(_) | ServerError::SnapshotRead(_) => Some(FailureKind::Io),
            ServerError::OutOfOrder { .. }
            | ServerError::SnapshotMissing { .. }
            | ServerError::Stopped { .. } => Some(FailureKind::Internal),
            ServerError::Config(_)
            | ServerError::Listen { .. }
            | ServerError::NewerCommandFormat(_) => Some(FailureKind::Other),
            ServerError::Removed => Some(FailureKind::Removed),
            // Decided by what they wrap.
            ServerError::Store(_) | ServerError::Tlog(_) | ServerError::Raft(_) => None,
        };
    }
    if let Some(e) = e.downcast_ref::<nacre_store::Error>() {
        return Some(match e {
            nacre_store::Error::Corruption { .. } => FailureKind::Corruption,
            nacre_store::Error::Io { .. } => FailureKind::Io,
            nacre_store::Error::Poisoned(_) => FailureKind::Poisoned,
            _ => FailureKind::Other,
        });
    }
    if let Some(e) = e.downcast_ref::<nacre_raft::TlogError>() {
        return Some(match e {
            nacre_raft::TlogError::Corruption { .. } => FailureKind::Corruption,
            nacre_raft::TlogError::Io { .. } => FailureKind::Io,
            nacre_raft::TlogError::Poisoned(_) => FailureKind::Poisoned,
            nacre_raft::TlogError::Format(_) => FailureKind::Other,
            _ => FailureKind::Internal,
        });
    }
    if e.downcast_ref::<Corruption>().is_some() {
        return Some(FailureKind::Corruption);
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return Some(FailureKind::Io);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_through_raft_and_the_store() {
        let io = || std::io::Error::other("disk on fire");
        let tlog_io = nacre_raft::TlogError::Io {
            op: "sync segment",
            path: "/t".into(),
            source: io(),
        };
        // raft-rs boxes a storage error inside its own.
        let boxed = ServerError::Raft(raft::Error::from(tlog_io));
        assert_eq!(boxed.kind(), FailureKind::Io);
        let poisoned = ServerError::Tlog(nacre_raft::TlogError::Poisoned("earlier".into()));
        assert_eq!(poisoned.kind(), FailureKind::Poisoned);
        let store = ServerError::Store(nacre_store::Error::Corruption {
            position: 7,
            what: "bad checksum".into(),
        });
        assert_eq!(store.kind(), FailureKind::Corruption);
        let store_poisoned = ServerError::Store(nacre_store::Error::Poisoned("earlier".into()));
        assert_eq!(store_poisoned.kind(), FailureKind::Poisoned);
        let value = ServerError::from(StateError::Corruption(Corruption::new(
            b"ukey",
            "user value",
            "3 bytes",
        )));
        assert_eq!(value.kind(), FailureKind::Corruption);
        let listen = ServerError::Listen {
            addr: "127.0.0.1:1".into(),
            source: io(),
        };
        assert_eq!(listen.kind(), FailureKind::Other);
        let panicked = ServerError::Stopped {
            thread: "raft thread",
            why: "panicked: boom".into(),
        };
        assert_eq!(panicked.kind(), FailureKind::Internal);
    }
}
