//! Errors of the state machine: the store's own, and records that do not
//! decode as what their namespace says.

use bytes::Bytes;
use nacre_proto::{ErrorCode, ErrorReply};

use super::{META_NS, SCRIPT_NS, USER_NS};

/// Why the state machine could not apply, read or install.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("store: {0}")]
    Store(#[from] nacre_store::Error),
    #[error("{0}")]
    Corruption(#[from] Corruption),
    /// Raft hands entries over once, in order; anything else means the
    /// driver is broken and applying would corrupt the state.
    #[error("entry {index} came to be applied after index {applied}: entries out of order")]
    OutOfOrder { index: u64, applied: u64 },
    /// The snapshot file could not be read back (or is cut short).
    #[error("cannot read the snapshot: {0}")]
    SnapshotRead(#[source] std::io::Error),
    /// A pair of a leader's snapshot does not decode; the install is
    /// refused.
    #[error("snapshot refused: {0}")]
    BadSnapshot(#[source] Corruption),
    /// A committed entry in a command format newer than this build reads:
    /// the other nodes run a newer Nacre. Applying it as a failed command
    /// would make this replica differ from theirs, so the node stops.
    #[error(
        "entry {index} is a command of format {format}, newer than this build reads          (up to {newest}): upgrade this node"
    )]
    NewerCommandFormat { index: u64, format: u8, newest: u8 },
}

/// Why a page of a range or prefix read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    State(#[from] StateError),
    /// One result is larger than a whole reply may be, so no page can
    /// hold it. A configuration whose `frame_size_max_bytes` cannot hold a
    /// maximal key and value is refused, so this takes a result stored
    /// under larger limits than the node runs with now.
    #[error(
        "one result alone takes a reply of {length} bytes, over frame_size_max_bytes \
         {frame_size_max_bytes}: no page can hold it"
    )]
    ResultTooLarge {
        length: usize,
        frame_size_max_bytes: usize,
    },
}

impl From<Corruption> for PageError {
    fn from(c: Corruption) -> PageError {
        PageError::State(c.into())
    }
}

impl From<PageError> for ErrorReply {
    fn from(e: PageError) -> ErrorReply {
        match e {
            PageError::State(e) => e.to_reply(),
            e @ PageError::ResultTooLarge { .. } => {
                ErrorReply::new(ErrorCode::TooLarge, e.to_string())
            }
        }
    }
}

/// A record in the store, or in a snapshot from the leader, that does not
/// decode as what its namespace says: it is never served, and nothing is
/// applied on top of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what} under {}: {detail}", describe_key(.key))]
pub struct Corruption {
    /// The store key (namespace byte included).
    pub key: Vec<u8>,
    /// What the record should have been ("user value", "member record").
    pub what: &'static str,
    pub detail: String,
}

impl Corruption {
    pub fn new(key: &[u8], what: &'static str, detail: impl Into<String>) -> Corruption {
        Corruption {
            key: key.to_vec(),
            what,
            detail: detail.into(),
        }
    }
}

/// A store key as a person reads it: a user key without its namespace
/// byte, other keys whole; bytes that are not printable ASCII escaped.
pub fn describe_key(key: &[u8]) -> String {
    let shown = |b: &[u8]| b.escape_ascii().to_string();
    match key.split_first() {
        Some((&USER_NS, user)) => format!("user key \"{}\"", shown(user)),
        Some((&SCRIPT_NS, _)) => format!("script key \"{}\"", shown(key)),
        Some((&META_NS, _)) => format!("service key \"{}\"", shown(key)),
        _ => format!("store key \"{}\"", shown(key)),
    }
}

impl StateError {
    /// The reply a client gets when its read failed on this; a corrupt
    /// user value's reply carries its key.
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            StateError::Corruption(_)
            | StateError::Store(nacre_store::Error::Corruption { .. }) => ErrorCode::Corruption,
            _ => ErrorCode::Internal,
        };
        let reply = ErrorReply::new(code, self.to_string());
        match self {
            StateError::Corruption(c) => match c.key.split_first() {
                Some((&USER_NS, user)) => reply.with_key(Bytes::copy_from_slice(user)),
                _ => reply,
            },
            _ => reply,
        }
    }
}

impl From<StateError> for ErrorReply {
    fn from(e: StateError) -> ErrorReply {
        e.to_reply()
    }
}
