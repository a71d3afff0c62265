//! Error replies: the typed code and the reply that carries it.

use bytes::Bytes;

/// Typed error codes. Unknown codes from a newer peer decode as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A key that must exist does not (get, multi_get, delete).
    NotFound,
    /// A guard or assertion failed; the reply names the key.
    AssertionFailed,
    /// This node is not the leader; the reply hints who is, if known.
    NotMaster,
    /// The node has not applied the index an `at_least` read asked for.
    InconsistentRead,
    /// The request is malformed or breaks a rule.
    BadInput,
    /// A key, value, batch, frame or range is over its limit.
    TooLarge,
    /// The node is shutting down.
    GoingDown,
    /// No quorum: the cluster cannot make progress now.
    Unavailable,
    /// Too many connections or requests in flight.
    Busy,
    /// The handshake named another cluster.
    WrongCluster,
    /// The handshake asked for a protocol version this node does not speak.
    UnsupportedVersion,
    /// The request did not complete in time; it may or may not have applied.
    Timeout,
    /// Stored data failed its checksum; the node refuses to serve it.
    Corruption,
    /// Anything else that went wrong inside the node.
    Internal,
    /// A script call kept losing to concurrent writes: its reads changed
    /// before its effects applied, on every retry.
    Conflict,
    /// A script failed: syntax error at install, runtime error (the
    /// message names the line), or a bad return value.
    ScriptError,
    /// A script call ran over its instruction or memory budget.
    BudgetExceeded,
    /// `Promote` of a learner that lags the leader by more than the
    /// leader's bound; the message says by how much.
    LearnerBehind,
    /// The lease does not exist: it expired, was revoked, or never was.
    LeaseNotFound,
    /// A watch asked for revisions older than the node still keeps; the
    /// watch end names the oldest one it has.
    Compacted,
    /// A watch's consumer fell too far behind (its buffer filled); resume
    /// from the last revision delivered.
    SlowConsumer,
    /// The watch was cancelled (by its client or because the node stopped
    /// serving it).
    Cancelled,
    /// A write guarded by a lock was refused: the lock is no longer held
    /// with the caller's fencing token.
    Fenced,
    Unknown(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotFound => 1,
            ErrorCode::AssertionFailed => 2,
            ErrorCode::NotMaster => 3,
            ErrorCode::InconsistentRead => 4,
            ErrorCode::BadInput => 5,
            ErrorCode::TooLarge => 6,
            ErrorCode::GoingDown => 7,
            ErrorCode::Unavailable => 8,
            ErrorCode::Busy => 9,
            ErrorCode::WrongCluster => 10,
            ErrorCode::UnsupportedVersion => 11,
            ErrorCode::Timeout => 12,
            ErrorCode::Corruption => 13,
            ErrorCode::Internal => 14,
            ErrorCode::Conflict => 15,
            ErrorCode::ScriptError => 16,
            ErrorCode::BudgetExceeded => 17,
            ErrorCode::LearnerBehind => 18,
            ErrorCode::LeaseNotFound => 19,
            ErrorCode::Compacted => 20,
            ErrorCode::SlowConsumer => 21,
            ErrorCode::Cancelled => 22,
            ErrorCode::Fenced => 23,
            ErrorCode::Unknown(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::AssertionFailed,
            3 => ErrorCode::NotMaster,
            4 => ErrorCode::InconsistentRead,
            5 => ErrorCode::BadInput,
            6 => ErrorCode::TooLarge,
            7 => ErrorCode::GoingDown,
            8 => ErrorCode::Unavailable,
            9 => ErrorCode::Busy,
            10 => ErrorCode::WrongCluster,
            11 => ErrorCode::UnsupportedVersion,
            12 => ErrorCode::Timeout,
            13 => ErrorCode::Corruption,
            14 => ErrorCode::Internal,
            15 => ErrorCode::Conflict,
            16 => ErrorCode::ScriptError,
            17 => ErrorCode::BudgetExceeded,
            18 => ErrorCode::LearnerBehind,
            19 => ErrorCode::LeaseNotFound,
            20 => ErrorCode::Compacted,
            21 => ErrorCode::SlowConsumer,
            22 => ErrorCode::Cancelled,
            23 => ErrorCode::Fenced,
            c => ErrorCode::Unknown(c),
        }
    }

    /// A stable lower-case name, used by the CLI's JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AssertionFailed => "assertion_failed",
            ErrorCode::NotMaster => "not_master",
            ErrorCode::InconsistentRead => "inconsistent_read",
            ErrorCode::BadInput => "bad_input",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::GoingDown => "going_down",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::WrongCluster => "wrong_cluster",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Corruption => "corruption",
            ErrorCode::Internal => "internal",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ScriptError => "script_error",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::LearnerBehind => "learner_behind",
            ErrorCode::LeaseNotFound => "lease_not_found",
            ErrorCode::Compacted => "compacted",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Fenced => "fenced",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Unknown(c) => write!(f, "unknown error code {c}"),
            c => f.write_str(c.name()),
        }
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    /// The key the error is about (NotFound, AssertionFailed).
    pub key: Option<Bytes>,
    /// For NotMaster: the leader's client address, when known.
    pub leader: Option<String>,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
            key: None,
            leader: None,
        }
    }

    pub fn with_key(mut self, key: Bytes) -> ErrorReply {
        self.key = Some(key);
        self
    }

    pub fn with_leader(mut self, leader: Option<String>) -> ErrorReply {
        self.leader = leader;
        self
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
