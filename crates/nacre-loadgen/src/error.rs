//! What can go wrong: in a workload's definition, in one operation on a
//! target, and in a run as a whole. Each keeps the error it came from.

use std::error::Error;

/// A boxed error from a target's own client library (nacre-client, tonic).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A workload that cannot run as defined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("{0:?} is not put, get, mixed, sequence or call")]
    UnknownKind(String),
    #[error("--keys must be at least 1")]
    NoKeys,
    #[error("--key-size {key_size} is too small for {keys} keys: at least {min} bytes")]
    KeySizeTooSmall {
        key_size: usize,
        keys: u64,
        min: usize,
    },
    #[error("--read-percent must be 0..=100")]
    ReadPercent,
    #[error("--sequence-len must be at least 1")]
    EmptySequence,
}

/// Why an operation on a target, or setting one up, failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The system under test answered with an error, or could not be
    /// reached; the message is the client library's.
    #[error(transparent)]
    Request(BoxError),
    /// The system answered in a way the target does not expect.
    #[error("{0}")]
    Unexpected(&'static str),
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: BoxError,
    },
    #[error("no endpoint given")]
    NoEndpoints,
    /// The `call` workload on a target without user functions.
    #[error("{target} has no user functions")]
    NoFunctions { target: &'static str },
    #[error("cannot install the bench script: {0}")]
    InstallScript(#[source] nacre_client::ClientError),
}

impl TargetError {
    /// A failed request, keeping the client library's error.
    pub fn request(e: impl Into<BoxError>) -> TargetError {
        TargetError::Request(e.into())
    }
}

/// Why a preload or a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("no connections")]
    NoConnections,
    #[error("preload: {0}")]
    Preload(#[source] TargetError),
    /// Every operation of the run failed: the first one's error.
    #[error(transparent)]
    AllFailed(TargetError),
    /// A client task panicked or was cancelled.
    #[error("{what} task: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}
