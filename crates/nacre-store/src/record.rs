//! Record framing: the one envelope every byte on disk travels in.
//!
//! ```text
//! offset size field
//!  0      4   magic       0x3152_434E ("NCR1" read as little-endian bytes)
//!  4      1   kind        see `Kind`
//!  5      3   reserved    zero
//!  8      4   payload_len bytes of payload after this header
//! 12      4   crc32c      over (position as u64 LE) ++ bytes 0..12 ++ payload
//! 16      -   payload
//! ```
//! Records start at 8-byte aligned log positions; the gap up to the next
//! record is zero padding. The checksum covers the record's own log position,
//! so a record read from (or misdirected to) the wrong place fails it.

use crate::error::{Error, Result};

pub const MAGIC: u32 = 0x3152_434E;
pub const HEADER_LEN: usize = 16;
pub const ALIGN: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    SegmentHeader = 1,
    Leaf = 2,
    Branch = 3,
    Value = 4,
    Root = 5,
    Catalog = 6,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::SegmentHeader,
            2 => Kind::Leaf,
            3 => Kind::Branch,
            4 => Kind::Value,
            5 => Kind::Root,
            6 => Kind::Catalog,
            _ => return None,
        })
    }
}

/// A reference to a record: its log position and its length (header plus
/// payload, without padding). Position 0 is never a record, so it is "null".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ptr {
    pub addr: u64,
    pub len: u32,
}

impl Ptr {
    pub const NULL: Ptr = Ptr { addr: 0, len: 0 };
    pub fn is_null(&self) -> bool {
        self.addr == 0
    }
}

/// A pooled buffer for a record of `payload_len` bytes, holding
/// `HEADER_LEN` zero bytes for the header; the payload is appended after
/// them (see `Sink::append_node`).
pub fn record_buf(payload_len: usize) -> Vec<u8> {
    let mut buf = crate::bufpool::take(HEADER_LEN + payload_len);
    buf.resize(HEADER_LEN, 0);
    buf
}

pub fn align_up(n: u64) -> u64 {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

fn checksum(position: u64, head: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&position.to_le_bytes());
    let c = crc32c::crc32c_append(c, head);
    crc32c::crc32c_append(c, payload)
}

/// Write a record header for `payload` (already placed right after the
/// header's 16 bytes in `buf`) at log position `position`.
pub fn seal(buf: &mut [u8], position: u64, kind: Kind) {
    debug_assert!(buf.len() >= HEADER_LEN);
    let payload_len = (buf.len() - HEADER_LEN) as u32;
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4] = kind as u8;
    buf[5..8].fill(0);
    buf[8..12].copy_from_slice(&payload_len.to_le_bytes());
    let (head, rest) = buf.split_at_mut(12);
    let crc = checksum(position, head, &rest[4..]);
    rest[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Parse the header at the start of `buf`; returns kind and payload length
/// without checking the checksum (the payload may not have been read yet).
pub fn peek_header(buf: &[u8]) -> Option<(Kind, u32)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    if u32::from_le_bytes(buf[0..4].try_into().unwrap()) != MAGIC || buf[5..8] != [0, 0, 0] {
        return None;
    }
    let kind = Kind::from_u8(buf[4])?;
    let len = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    Some((kind, len))
}

/// Verify a whole record (header and payload) read from `position`;
/// returns its kind and payload.
pub fn open(buf: &[u8], position: u64) -> Result<(Kind, &[u8])> {
    let (kind, len) =
        peek_header(buf).ok_or_else(|| Error::corrupt(position, "bad record header"))?;
    let end = HEADER_LEN + len as usize;
    if buf.len() < end {
        return Err(Error::corrupt(
            position,
            "record length runs past its extent",
        ));
    }
    let stored = u32::from_le_bytes(buf[12..16].try_into().unwrap());
    let payload = &buf[HEADER_LEN..end];
    if checksum(position, &buf[0..12], payload) != stored {
        return Err(Error::corrupt(position, "record checksum mismatch"));
    }
    Ok((kind, payload))
}

/// Little-endian cursor over a payload whose every read is bounds-checked,
/// so a malformed (but checksum-valid) record yields an error, not a panic.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    position: u64,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], position: u64) -> Self {
        Reader {
            buf,
            pos: 0,
            position,
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| Error::corrupt(self.position, "payload shorter than its fields"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    pub fn ptr(&mut self) -> Result<Ptr> {
        Ok(Ptr {
            addr: self.u64()?,
            len: self.u32()?,
        })
    }
    pub fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn put_ptr(out: &mut Vec<u8>, p: Ptr) {
    put_u64(out, p.addr);
    put_u32(out, p.len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(position: u64, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(payload);
        seal(&mut buf, position, kind);
        buf
    }

    #[test]
    fn round_trip_and_every_bit_flip_is_caught() {
        let rec = record(4096, Kind::Leaf, b"some payload bytes");
        let (kind, payload) = open(&rec, 4096).unwrap();
        assert_eq!(kind, Kind::Leaf);
        assert_eq!(payload, b"some payload bytes");
        for bit in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&bad, 4096).is_err(), "flip of bit {bit} not caught");
        }
    }

    #[test]
    fn wrong_position_is_caught() {
        let rec = record(4096, Kind::Value, b"v");
        assert!(open(&rec, 4104).is_err());
    }

    #[test]
    fn reader_refuses_to_run_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3], 0);
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(r.u32().is_err());
    }
}
