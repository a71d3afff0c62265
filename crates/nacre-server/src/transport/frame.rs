//! Frames on a peer connection: u32 body length, u8 kind, u32 CRC32C of
//! the body, then the body; and the length-prefixed fields inside bodies.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

pub(super) const KIND_RAFT_BATCH: u8 = 1;
pub(super) const KIND_SNAPSHOT_CHUNK: u8 = 2;
pub(super) const KIND_SNAPSHOT_END: u8 = 3;

/// u32 length, u8 kind, u32 CRC32C.
pub(super) const FRAME_HEADER_BYTES: usize = 9;

/// Starts a frame in `buf`, leaving room for the header `finish_frame`
/// fills in once the body is known.
pub(super) fn begin_frame(buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(FRAME_HEADER_BYTES, 0);
}

pub(super) fn finish_frame(buf: &mut [u8], kind: u8) {
    let (header, body) = buf.split_at_mut(FRAME_HEADER_BYTES);
    // Frames are built under `frame_size_max_bytes`, which the config keeps
    // below 4 GiB; were one larger, the receiver would refuse the length
    // rather than this side panic.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = kind;
    header[5..9].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
}

/// Reads one frame into `body`, returning its kind, or None when the peer
/// closed the connection between frames.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
    frame_size_max_bytes: usize,
) -> io::Result<Option<u8>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let n = r.read(&mut header).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut header[n..]).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = header[4];
    let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    if len > frame_size_max_bytes {
        return Err(invalid_data(format!(
            "frame of {len} bytes exceeds limit of {frame_size_max_bytes}"
        )));
    }
    body.clear();
    // Grows as bytes arrive instead of trusting the length up front.
    let got = r.take(len as u64).read_to_end(body).await?;
    if got != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-frame",
        ));
    }
    if crc32c::crc32c(body) != crc {
        return Err(invalid_data("frame checksum mismatch".into()));
    }
    Ok(Some(kind))
}

pub(super) fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub(super) fn take_u32(buf: &mut &[u8]) -> io::Result<u32> {
    let bytes = take_bytes(buf, 4)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

pub(super) fn take_bytes<'a>(buf: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if buf.len() < n {
        return Err(invalid_data("truncated frame body".into()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Checks that a chunk body is a whole number of key/value pairs, each
/// of which passes `check`, so the snapshot file is well formed by
/// construction.
pub(super) fn check_pairs(
    mut body: &[u8],
    check: impl Fn(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    while !body.is_empty() {
        let key_len = take_u32(&mut body)? as usize;
        let key = take_bytes(&mut body, key_len)?;
        let value_len = take_u32(&mut body)? as usize;
        let value = take_bytes(&mut body, value_len)?;
        check(key, value)?;
    }
    Ok(())
}

/// Appends one key/value pair to a chunk body.
pub(super) fn push_pair(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) -> io::Result<()> {
    for field in [key, value] {
        let len = u32::try_from(field.len())
            .map_err(|_| invalid_data(format!("a {}-byte field", field.len())))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(field);
    }
    Ok(())
}
