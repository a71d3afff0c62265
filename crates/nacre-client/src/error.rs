//! What can go wrong in a client call.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use nacre_proto::{DecodeError, ErrorCode, ErrorReply};

/// Every failure a [`crate::Client`] call reports.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (not found, assertion failed, ...).
    #[error("{}", describe_reply(.0))]
    Server(ErrorReply),
    /// A socket error before the request was sent, or while reading a reply
    /// of a read request that could not be retried.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The connection broke after a request that may change state and
    /// carries no session (a membership change, or a write sent as a raw
    /// request) was sent: it may or may not have been applied, so it is
    /// not re-sent. The client's own writes carry its session and are.
    #[error("connection to {endpoint} lost after the write was sent ({reason}); it may or may not have been applied")]
    ConnectionLost {
        endpoint: String,
        #[source]
        reason: Disconnect,
    },
    /// The connection broke and the call was not to be retried
    /// ([`crate::ClientOptions::retries_max`]).
    #[error("connection to {endpoint} failed: {reason}")]
    Disconnected {
        endpoint: String,
        #[source]
        reason: Disconnect,
    },
    /// The peer sent bytes that do not decode; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    /// No reply within the request timeout. A write may or may not have
    /// been applied. `last`: how the latest attempt that ended before the
    /// deadline failed (no leader yet, no endpoint reachable, ...), if any.
    #[error("request timed out after {after_ms} ms{}", describe_last(.last.as_deref()))]
    Timeout {
        after_ms: u64,
        #[source]
        last: Option<Box<ClientError>>,
    },
    /// Every node said it is not the leader and none knew who is.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// No endpoint accepted a connection: why each one failed (none when
    /// no endpoint was given).
    #[error("all endpoints failed: {}", describe_failures(.errors))]
    AllEndpointsFailed { errors: Vec<EndpointError> },
    /// The server refused the handshake (wrong cluster, unsupported version).
    #[error("{endpoint} (node {node:?}, cluster {cluster_id:?}) refused the connection: {code}: {message}")]
    Refused {
        endpoint: String,
        code: ErrorCode,
        node: String,
        cluster_id: String,
        message: String,
    },
    /// The request breaks a limit; caught locally, nothing was sent.
    #[error("{}", describe_reply(.0))]
    Limit(ErrorReply),
    /// The server answered with a reply that does not fit the request.
    #[error("unexpected response to {request}: {response}")]
    UnexpectedResponse {
        request: &'static str,
        response: String,
    },
    /// A watch asked for revisions the node no longer keeps: the oldest it
    /// has is `oldest_rev`. The watch cannot resume without a gap; read
    /// the current state and watch again from there.
    #[error("watch from revision {requested_rev} is compacted: the oldest revision kept is {oldest_rev}")]
    Compacted { requested_rev: u64, oldest_rev: u64 },
    /// The server ended a watch for a reason a new watch would meet again
    /// (`too_large`: one revision does not fit in a frame, ...).
    #[error("watch ended: {code}: {message}")]
    WatchEnded { code: ErrorCode, message: String },
    /// A lease kept alive by this client is gone (expired while the
    /// client could not renew it, or revoked): whatever it guarded (a
    /// lock, a leadership) is no longer this client's.
    #[error("lease {id:x} was lost")]
    LeaseLost { id: u64 },
    /// A waiting read ([`crate::Client::get_wait`]) saw nothing it waited
    /// for within its timeout.
    #[error("waited {after_ms} ms and the condition did not hold")]
    WaitTimedOut { after_ms: u64 },
}

/// Why a connection closed. Shared by every request waiting on it, hence
/// `Clone`, with I/O errors behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Disconnect {
    /// The server sent bytes that do not decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    #[error("read error: {0}")]
    Read(#[source] Arc<io::Error>),
    #[error("write error: {0}")]
    Write(#[source] Arc<io::Error>),
    #[error("server closed the connection")]
    ServerClosed,
    /// The connection was closed, by this side or for a reason not known.
    #[error("connection closed")]
    Closed,
    #[error("connection writer stopped")]
    WriterStopped,
    /// Nothing came from the node for this long, not even the answer to a
    /// ping (a stopped process, a host whose packets vanish): the client
    /// abandoned the connection.
    #[error("no reply from the node for {after_ms} ms, not even to a ping; connection abandoned")]
    Hung { after_ms: u64 },
}

/// One endpoint's failure to connect, in [`ClientError::AllEndpointsFailed`].
#[derive(Debug, thiserror::Error)]
#[error("{endpoint}{}: {error}", if *.leader_hint { " (leader hint)" } else { "" })]
pub struct EndpointError {
    pub endpoint: String,
    /// The endpoint was a leader's address another node gave.
    pub leader_hint: bool,
    #[source]
    pub error: Box<ClientError>,
}

fn describe_failures(errors: &[EndpointError]) -> String {
    if errors.is_empty() {
        return "no endpoints given".into();
    }
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.join("; ")
}

fn describe_last(last: Option<&ClientError>) -> String {
    last.map(|e| format!("; the last attempt failed with: {e}"))
        .unwrap_or_default()
}

fn describe_reply(e: &ErrorReply) -> String {
    let mut s = format!("{}: {}", e.code, e.message);
    if let Some(k) = &e.key {
        s.push_str(&format!(" (key {:?})", String::from_utf8_lossy(k)));
    }
    if let Some(l) = &e.leader {
        s.push_str(&format!(" (leader {l})"));
    }
    s
}

impl ClientError {
    /// The protocol error code, for errors that carry one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) | ClientError::Limit(e) => Some(e.code),
            ClientError::Refused { code, .. } => Some(*code),
            ClientError::Timeout { .. } | ClientError::WaitTimedOut { .. } => {
                Some(ErrorCode::Timeout)
            }
            ClientError::Compacted { .. } => Some(ErrorCode::Compacted),
            ClientError::WatchEnded { code, .. } => Some(*code),
            ClientError::LeaseLost { .. } => Some(ErrorCode::LeaseNotFound),
            _ => None,
        }
    }

    /// The error reply, for server errors and local limit errors.
    pub fn reply(&self) -> Option<&ErrorReply> {
        match self {
            ClientError::Server(e) | ClientError::Limit(e) => Some(e),
            _ => None,
        }
    }

    /// The key the error is about, when the server named one.
    pub fn key(&self) -> Option<&Bytes> {
        self.reply().and_then(|e| e.key.as_ref())
    }

    /// The leader hint of a `NotMaster` error.
    pub fn leader(&self) -> Option<&str> {
        self.reply().and_then(|e| e.leader.as_deref())
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }

    pub fn is_assertion_failed(&self) -> bool {
        self.code() == Some(ErrorCode::AssertionFailed)
    }

    pub fn is_not_master(&self) -> bool {
        self.code() == Some(ErrorCode::NotMaster)
    }

    /// A write guarded by a lock's fencing token was refused: the lock
    /// is no longer held with that token.
    pub fn is_fenced(&self) -> bool {
        self.code() == Some(ErrorCode::Fenced)
    }

    /// The lease does not exist (expired, revoked, never granted), or a
    /// lease this client kept alive was lost.
    pub fn is_lease_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::LeaseNotFound)
    }

    /// The oldest revision a node keeps, when a watch asked for older.
    pub fn compacted_oldest_rev(&self) -> Option<u64> {
        match self {
            ClientError::Compacted { oldest_rev, .. } => Some(*oldest_rev),
            _ => None,
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.code() == Some(ErrorCode::Timeout)
    }

    /// A request or its reply is over a limit (`too_large`): a key, value
    /// or batch refused before sending, or a reply that would not fit in
    /// a frame (a multi-get of too many large values). Asking again the
    /// same way gets the same answer; ask for less (fewer keys, or a
    /// range read, which comes in pages).
    pub fn is_too_large(&self) -> bool {
        self.code() == Some(ErrorCode::TooLarge)
    }

    /// The cluster could not be reached or could not serve: connection
    /// errors, timeouts, no leader, no quorum, a node going down.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Io(_)
            | ClientError::ConnectionLost { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoLeader(_)
            | ClientError::AllEndpointsFailed { .. } => true,
            ClientError::Server(e) => matches!(
                e.code,
                ErrorCode::NotMaster
                    | ErrorCode::Unavailable
                    | ErrorCode::GoingDown
                    | ErrorCode::Busy
                    | ErrorCode::Timeout
                    | ErrorCode::InconsistentRead
            ),
            _ => false,
        }
    }
}
