//! Framing and the connection handshake.
//!
//! A frame is `length: u32 LE` (the bytes that follow it), `request_id:
//! u64 LE`, then one encoded [`Request`] or [`Response`]. The length comes
//! first so a reader can wait for a whole frame and reject an oversized one
//! before it buffers anything.

use bytes::{Buf, Bytes, BytesMut};

use crate::message::{ErrorCode, Request, Response};
use crate::wire::{Reader, Writer};
use crate::DecodeError;

/// "NACR" on the wire: the first bytes of every connection, both ways.
pub const MAGIC: [u8; 4] = *b"NACR";
/// The protocol version this crate speaks. Version 2 answers range and
/// prefix reads with pages that say whether more results follow
/// (`Response::KeyPage`, `Response::EntryPage`); version 1 did not.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest version a server still accepts in a client's hello: a
/// version 1 client gets the replies it knows ([`Response::for_version`]).
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Bytes before the message: length (4) and request id (8).
pub const FRAME_HEADER_BYTES: usize = 12;
/// Longest cluster id or node name in a handshake.
pub const NAME_SIZE_MAX_BYTES: usize = 255;

/// What `split_frame` may reserve ahead of data that has not arrived.
const SPLIT_RESERVE_MIN_BYTES: usize = 64 << 10;

/// Appends one request frame to `out`.
pub fn encode_request(request_id: u64, req: &Request, out: &mut Vec<u8>) {
    encode_frame(request_id, out, req.encoded_len(), |w| req.encode(w));
}

/// Appends one response frame to `out`.
pub fn encode_response(request_id: u64, resp: &Response, out: &mut Vec<u8>) {
    encode_frame(request_id, out, resp.encoded_len(), |w| resp.encode(w));
}

fn encode_frame(
    request_id: u64,
    out: &mut Vec<u8>,
    body_len: usize,
    body: impl FnOnce(&mut Writer),
) {
    // One reservation of the exact size: no reallocation while encoding.
    out.reserve(FRAME_HEADER_BYTES + body_len);
    let mut w = Writer::with_buf(std::mem::take(out));
    let start = w.u32_slot();
    w.u64(request_id);
    body(&mut w);
    let len = w.len() - start - 4;
    // Senders keep frames under the limit; a u32 overflow would be a bug.
    assert!(len <= u32::MAX as usize, "frame too large to encode");
    w.patch_u32(start, len as u32);
    *out = w.into_inner();
}

/// Splits the next whole frame off `buf`: `Ok(None)` until one is there.
/// A frame longer than `frame_size_max_bytes` is an error, detected from
/// its header alone; the caller closes the connection.
pub fn split_frame(
    buf: &mut BytesMut,
    frame_size_max_bytes: usize,
) -> Result<Option<(u64, Bytes)>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > frame_size_max_bytes {
        return Err(DecodeError::FrameTooLarge {
            size: len,
            max: frame_size_max_bytes,
        });
    }
    if len < 8 {
        return Err(DecodeError::Truncated {
            what: "frame header",
        });
    }
    if buf.len() < 4 + len {
        // Make room for the rest, but never more than the bytes already
        // received (or 64 KiB): a peer that sends a header claiming a huge
        // frame and then stalls cannot make us reserve memory it has not
        // sent. The buffer still grows geometrically for large frames.
        let missing = 4 + len - buf.len();
        buf.reserve(missing.min(buf.len().max(SPLIT_RESERVE_MIN_BYTES)));
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(len).freeze();
    let request_id = frame.get_u64_le();
    Ok(Some((request_id, frame)))
}

/// Decodes a request body that must fill its frame exactly.
pub fn decode_request(body: Bytes) -> Result<Request, DecodeError> {
    let mut r = Reader::new(body);
    let req = Request::decode(&mut r)?;
    r.finish("request")?;
    Ok(req)
}

/// Decodes a response body that must fill its frame exactly.
pub fn decode_response(body: Bytes) -> Result<Response, DecodeError> {
    let mut r = Reader::new(body);
    let resp = Response::decode(&mut r)?;
    r.finish("response")?;
    Ok(resp)
}

/// The client's first bytes: magic, version, and the cluster it expects
/// (empty: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u16,
    pub cluster_id: String,
}

/// The server's answer. A non-zero status is an [`ErrorCode`], after
/// which the server closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub version: u16,
    pub status: u16,
    pub cluster_id: String,
    pub node: String,
    pub message: String,
}

/// Writes a u16-length name, cut to `NAME_SIZE_MAX_BYTES` at a character
/// boundary so that what is sent is still valid UTF-8.
fn put_name(w: &mut Writer, s: &str) {
    let mut end = s.len().min(NAME_SIZE_MAX_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let b = &s.as_bytes()[..end];
    w.u16(b.len() as u16);
    w.buf.extend_from_slice(b);
}

/// Reads a u16-length string from a possibly incomplete buffer.
fn get_name(b: &[u8], pos: &mut usize, what: &'static str) -> Result<Option<String>, DecodeError> {
    if b.len() < *pos + 2 {
        return Ok(None);
    }
    let n = u16::from_le_bytes([b[*pos], b[*pos + 1]]) as usize;
    if n > NAME_SIZE_MAX_BYTES {
        return Err(DecodeError::FrameTooLarge {
            size: n,
            max: NAME_SIZE_MAX_BYTES,
        });
    }
    if b.len() < *pos + 2 + n {
        return Ok(None);
    }
    let s = std::str::from_utf8(&b[*pos + 2..*pos + 2 + n])
        .map_err(|_| DecodeError::BadUtf8 { what })?;
    *pos += 2 + n;
    Ok(Some(s.to_string()))
}

fn check_magic(b: &[u8]) -> Result<bool, DecodeError> {
    let n = b.len().min(4);
    if b[..n] != MAGIC[..n] {
        return Err(DecodeError::BadMagic);
    }
    Ok(b.len() >= 6)
}

impl ClientHello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(8 + self.cluster_id.len().min(NAME_SIZE_MAX_BYTES));
        let mut w = Writer::with_buf(std::mem::take(out));
        w.buf.extend_from_slice(&MAGIC);
        w.u16(self.version);
        put_name(&mut w, &self.cluster_id);
        *out = w.into_inner();
    }

    /// `Ok(None)` while incomplete; otherwise the hello and its length.
    pub fn decode(b: &[u8]) -> Result<Option<(ClientHello, usize)>, DecodeError> {
        if !check_magic(b)? {
            return Ok(None);
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        let mut pos = 6;
        let Some(cluster_id) = get_name(b, &mut pos, "cluster id")? else {
            return Ok(None);
        };
        Ok(Some((
            ClientHello {
                version,
                cluster_id,
            },
            pos,
        )))
    }
}

impl ServerHello {
    pub fn ok(cluster_id: &str, node: &str) -> ServerHello {
        ServerHello {
            version: PROTOCOL_VERSION,
            status: 0,
            cluster_id: cluster_id.to_string(),
            node: node.to_string(),
            message: String::new(),
        }
    }

    pub fn refuse(code: ErrorCode, cluster_id: &str, node: &str, message: &str) -> ServerHello {
        ServerHello {
            version: PROTOCOL_VERSION,
            status: code.to_u16(),
            cluster_id: cluster_id.to_string(),
            node: node.to_string(),
            message: message.to_string(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::with_buf(std::mem::take(out));
        w.buf.extend_from_slice(&MAGIC);
        w.u16(self.version);
        w.u16(self.status);
        put_name(&mut w, &self.cluster_id);
        put_name(&mut w, &self.node);
        put_name(&mut w, &self.message);
        *out = w.into_inner();
    }

    pub fn decode(b: &[u8]) -> Result<Option<(ServerHello, usize)>, DecodeError> {
        if !check_magic(b)? || b.len() < 8 {
            return Ok(None);
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        let status = u16::from_le_bytes([b[6], b[7]]);
        let mut pos = 8;
        let Some(cluster_id) = get_name(b, &mut pos, "cluster id")? else {
            return Ok(None);
        };
        let Some(node) = get_name(b, &mut pos, "node name")? else {
            return Ok(None);
        };
        let Some(message) = get_name(b, &mut pos, "message")? else {
            return Ok(None);
        };
        Ok(Some((
            ServerHello {
                version,
                status,
                cluster_id,
                node,
                message,
            },
            pos,
        )))
    }
}
