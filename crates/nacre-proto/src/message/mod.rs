//! Requests and replies: what travels inside a frame. Requests (what they
//! mean, then their encoding), replies, and the error reply each have a
//! file of their own.

mod error;
mod request;
mod request_codec;
mod response;

pub use error::{ErrorCode, ErrorReply};
pub use request::{RangeQuery, Request};
pub use response::{
    list_reply_frame_length, Member, Page, PageItem, Response, ScriptSource, ScriptSummary,
    ScriptVersionInfo, VersionInfo,
};
