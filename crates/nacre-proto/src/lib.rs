//! Nacre's native binary protocol.
//!
//! Pure encoding and decoding, no I/O: the server, the client, the
//! simulator and the fuzzer share it. The byte layout is documented in
//! `docs/protocol.md`. Integers are little-endian and read straight from
//! the buffer; keys and values decode as zero-copy slices of the frame.

mod backup;
mod coord;
mod frame;
mod limits;
mod message;
mod types;
pub mod wire;

pub use backup::{BackupFrame, BackupSummary};
pub use coord::{
    CoordRequest, CoordResponse, EtcdMeta, EventKind, KeySpan, LeaseInfo, WatchEvent, WatchSpec,
};
pub use frame::{
    decode_request, decode_response, encode_request, encode_response, split_frame, ClientHello,
    ServerHello, FRAME_HEADER_BYTES, MAGIC, NAME_SIZE_MAX_BYTES, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};
pub use limits::Limits;
pub use message::{
    list_reply_frame_length, ErrorCode, ErrorReply, Member, Page, PageItem, RangeQuery, Request,
    Response, ScriptSource, ScriptSummary, ScriptVersionInfo, VersionInfo,
};
pub use types::{Batch, Command, Consistency, Guard, KeyEntry, Op, Revision, Session};

pub use bytes::{Bytes, BytesMut};

/// Why bytes did not decode. Any of these closes the connection: after a
/// framing error the two sides no longer agree where messages start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated while reading {what}")]
    Truncated { what: &'static str },
    #[error("unknown {what} tag {tag}")]
    BadTag { what: &'static str, tag: u32 },
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    #[error("{count} unexpected bytes after the {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("frame of {size} bytes is over the limit of {max}")]
    FrameTooLarge { size: usize, max: usize },
    #[error("not a Nacre peer: bad magic number")]
    BadMagic,
}
