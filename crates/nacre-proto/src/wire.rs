//! Little-endian primitives: a growable writer and a bounds-checked reader.
//!
//! The reader works on a [`Bytes`] frame so that keys and values decode as
//! slices of the frame (a reference count bump, no copy, no allocation).
//! Every length read from the wire is checked against the bytes that remain
//! before anything is allocated, so a hostile length cannot make us reserve
//! memory the frame does not carry.

use bytes::Bytes;

use crate::DecodeError;

/// Encoded size of a length-prefixed byte string.
#[inline]
pub fn bytes_len(v: &[u8]) -> usize {
    4 + v.len()
}

/// Encoded size of an optional byte string.
#[inline]
pub fn opt_bytes_len(v: Option<&[u8]>) -> usize {
    1 + v.map_or(0, bytes_len)
}

/// Appends little-endian values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { buf: Vec::new() }
    }

    pub fn with_buf(buf: Vec<u8>) -> Writer {
        Writer { buf }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    #[inline]
    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    #[inline]
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A byte string: u32 length, then the bytes. Callers keep lengths
    /// within the frame limit, which is far below `u32::MAX`.
    #[inline]
    pub fn bytes(&mut self, v: &[u8]) {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }

    #[inline]
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    #[inline]
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.bytes(b);
            }
        }
    }

    #[inline]
    pub fn opt_str(&mut self, v: Option<&str>) {
        self.opt_bytes(v.map(str::as_bytes));
    }

    /// Reserves a u32 slot and returns its offset, for lengths known only
    /// after the body is written.
    pub fn u32_slot(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A counted list: u32 count, then each element as `item` writes it.
    /// The decoding side is [`Reader::list`].
    #[inline]
    pub fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Writer, &T)) {
        self.u32(items.len() as u32);
        for x in items {
            item(self, x);
        }
    }
}

/// Reads little-endian values from a frame, failing cleanly at its end.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The whole buffer back, read or not (to recycle it).
    pub fn into_inner(self) -> Bytes {
        self.buf
    }

    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    #[inline]
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::BadTag {
                what,
                tag: v as u32,
            }),
        }
    }

    #[inline]
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    #[inline]
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }

    #[inline]
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(8, what)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }

    /// A length-prefixed byte string, as a zero-copy slice of the frame.
    #[inline]
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        if self.remaining() < len {
            return Err(DecodeError::Truncated { what });
        }
        let b = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(b)
    }

    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.u32(what)? as usize;
        let b = self.take(len, what)?;
        // Validate in place, then copy once.
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8 { what })
    }

    pub fn opt_bytes(&mut self, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
        if self.bool(what)? {
            Ok(Some(self.bytes(what)?))
        } else {
            Ok(None)
        }
    }

    pub fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        if self.bool(what)? {
            Ok(Some(self.string(what)?))
        } else {
            Ok(None)
        }
    }

    /// An element count, checked against what remains: every element takes
    /// at least `elem_min_bytes`, so a count the frame cannot hold is
    /// rejected before any allocation.
    pub fn count(
        &mut self,
        what: &'static str,
        elem_min_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(elem_min_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n)
    }

    /// A counted list written by [`Writer::list`], each element as `item`
    /// reads it. The count is checked as [`Reader::count`] does, with
    /// `elem_min_bytes` the smallest encoding of one element.
    pub fn list<T>(
        &mut self,
        what: &'static str,
        elem_min_bytes: usize,
        mut item: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.count(what, elem_min_bytes)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// Fails if bytes are left over: a message must fill its frame exactly,
    /// otherwise two peers disagree about the format.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                what,
                count: self.remaining(),
            });
        }
        Ok(())
    }
}
