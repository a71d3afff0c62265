//! Clean pages: B+tree nodes as read from the log, searched in place.
//! Searching (`page/search.rs`) and encoding (`page/encode.rs`) have files
//! of their own.
//!
//! Leaf payload (all integers little-endian):
//! ```text
//!  0  u8   level = 0
//!  1  u8   reserved
//!  2  u16  reserved
//!  4  u32  n, number of entries
//!  8  u32 × n   offset of each entry from the payload start
//!  .. entries:  klen u32 | vtag u8 | vlen u32 | key | value
//!      vtag 0: value inline (vlen bytes)
//!      vtag 1: value in its own record: addr u64 | len u32 (12 bytes)
//! ```
//! Branch payload:
//! ```text
//!  0  u8   level >= 1
//!  1  u8   reserved
//!  2  u16  reserved
//!  4  u32  n, number of children (>= 1)
//!  8  child × n: addr u64 | len u32 | count u64 | bytes u64   (28 bytes)
//!  .. u32 × (n-1)  offset of each separator key from the payload start
//!  .. separators:  klen u32 | key
//! ```
//! Separator `i` bounds children `i` and `i + 1` (it need not be a key; see
//! `shortest_separator` in write.rs): child `i` holds the keys in
//! `[sep(i-1), sep(i))`. `count` is the number of keys under a child and
//! `bytes` the log footprint of its subtree (nodes and value records), which
//! makes `count` O(1) and lets a range delete drop whole subtrees unread.

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::record::{Kind, Ptr, Reader};

mod encode;
mod search;

pub use encode::{
    begin_leaf, branch_child_offset, branch_entry_size, encode_branch_with, encode_entry,
    set_entry_offset,
};
#[cfg(test)]
pub use encode::{encode_branch, encode_leaf};
use search::Search;
pub use search::{common_len, search_sorted};

pub const LEAF_ENTRY_HEADER: usize = 9;
pub const CHILD_LEN: usize = 28;
pub const EXT_LEN: usize = 12;

/// A value as stored in a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Inline(Vec<u8>),
    /// In a value record of its own; `vlen` is the value's length.
    Ext {
        vlen: u32,
        ptr: Ptr,
    },
}

impl Val {
    pub fn as_ref(&self) -> ValRef<'_> {
        match self {
            Val::Inline(b) => ValRef::Inline(b),
            Val::Ext { vlen, ptr } => ValRef::Ext {
                vlen: *vlen,
                ptr: *ptr,
            },
        }
    }
}

/// Borrowed view of a value in a clean leaf.
#[derive(Debug, Clone, Copy)]
pub enum ValRef<'a> {
    Inline(&'a [u8]),
    Ext { vlen: u32, ptr: Ptr },
}

impl ValRef<'_> {
    pub fn encoded_len(&self) -> usize {
        match self {
            ValRef::Inline(v) => v.len(),
            ValRef::Ext { .. } => EXT_LEN,
        }
    }

    pub fn to_val(self) -> Val {
        match self {
            ValRef::Inline(v) => Val::Inline(v.to_vec()),
            ValRef::Ext { vlen, ptr } => Val::Ext { vlen, ptr },
        }
    }
}

/// A child pointer in a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildInfo {
    pub ptr: Ptr,
    pub count: u64,
    pub bytes: u64,
}

/// A decoded, validated node. Immutable; shared through the page cache.
#[derive(Debug)]
pub struct Page {
    pub ptr: Ptr,
    pub level: u8,
    n: usize,
    /// The buffer the node was read into; its payload starts at `start`
    /// (after the record header, so that neither a read nor a write needs
    /// a copy). It returns to the buffer pool when the page is dropped.
    buf: Vec<u8>,
    start: usize,
    /// What searches use, built on the second search. Building it costs
    /// about as much as a few plain binary searches, and many pages are
    /// searched once or never: a page a commit writes goes into the cache
    /// and is mostly evicted unsearched; a leaf a writer reads to copy it,
    /// or a reader reads on a cache miss, is mostly searched once.
    search: OnceLock<Search>,
    /// Whether a search without the aids was made already.
    searched: AtomicBool,
}

/// What a cached page costs beyond its buffer and slots: the page in its
/// `Arc` (two counters), the cache's entry for it (key, pointer, links) and
/// index slot, and the allocator's headers of the page and its buffer.
pub const PAGE_OVERHEAD_BYTES: usize = std::mem::size_of::<Page>() + 16 + 48 + 2 * 16;

impl Drop for Page {
    fn drop(&mut self) {
        crate::bufpool::give(std::mem::take(&mut self.buf));
        if let Some(s) = self.search.take() {
            crate::bufpool::give_slots(s.slots);
        }
    }
}

fn rd_u32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
fn rd_u64(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

/// Check a node's payload: every offset and length in it lies inside it.
/// Returns the node's level and its entry (leaf) or child (branch) count.
fn validate(ptr: Ptr, kind: Kind, payload: &[u8]) -> Result<(u8, usize)> {
    let bad = |what: &str| Error::corrupt(ptr.addr, format!("malformed node: {what}"));
    let mut r = Reader::new(payload, ptr.addr);
    let level = r.u8()?;
    r.u8()?;
    r.u16()?;
    let n = r.u32()? as usize;
    match kind {
        Kind::Leaf => {
            if level != 0 {
                return Err(bad("leaf with nonzero level"));
            }
            let table_end = 8usize
                .checked_add(n.checked_mul(4).ok_or_else(|| bad("entry count"))?)
                .filter(|&e| e <= payload.len())
                .ok_or_else(|| bad("entry table past end"))?;
            // Entries lie packed, in order, right after the table: a copy
            // on write takes runs of them over with one copy each.
            let mut next = table_end;
            for i in 0..n {
                let off = rd_u32(payload, 8 + 4 * i) as usize;
                if off != next {
                    return Err(bad("entries not packed in order"));
                }
                let mut e = Reader::new(
                    payload.get(off..).ok_or_else(|| bad("entry offset"))?,
                    ptr.addr,
                );
                let klen = e.u32()? as usize;
                let vtag = e.u8()?;
                let vlen = e.u32()? as usize;
                e.bytes(klen)?;
                let vbytes = match vtag {
                    0 => vlen,
                    1 => EXT_LEN,
                    _ => return Err(bad("value tag")),
                };
                e.bytes(vbytes)?;
                next = off + LEAF_ENTRY_HEADER + klen + vbytes;
            }
        }
        Kind::Branch => {
            if level == 0 || n == 0 {
                return Err(bad("branch with level 0 or no children"));
            }
            let table_end = n
                .checked_mul(CHILD_LEN + 4)
                .and_then(|t| t.checked_add(8 - 4))
                .filter(|&e| e <= payload.len())
                .ok_or_else(|| bad("child table past end"))?;
            let _ = table_end;
            let offs_at = 8 + n * CHILD_LEN;
            for i in 0..n - 1 {
                let off = rd_u32(payload, offs_at + 4 * i) as usize;
                let mut e = Reader::new(
                    payload.get(off..).ok_or_else(|| bad("separator offset"))?,
                    ptr.addr,
                );
                let klen = e.u32()? as usize;
                e.bytes(klen)?;
            }
        }
        _ => return Err(bad("record is not a node")),
    }
    Ok((level, n))
}

impl Page {
    #[cfg(test)]
    pub fn decode(ptr: Ptr, kind: Kind, payload: &[u8]) -> Result<Page> {
        let mut buf = crate::bufpool::take(payload.len());
        buf.extend_from_slice(payload);
        Page::decode_owned(ptr, kind, buf, 0)
    }

    /// Decode the payload at `buf[start..]`, keeping `buf`. Every offset and
    /// length is validated once, here, so the accessors below can index
    /// without further checks.
    pub fn decode_owned(ptr: Ptr, kind: Kind, buf: Vec<u8>, start: usize) -> Result<Page> {
        let payload = buf
            .get(start..)
            .ok_or_else(|| Error::corrupt(ptr.addr, "record shorter than its header"))?;
        let (level, n) = validate(ptr, kind, payload)?;
        Ok(Page::unsearched(ptr, level, n, buf, start))
    }

    /// A page this process just encoded (a commit's node, or one the
    /// cleaner relocated from a page that was validated when read), kept as
    /// it is: validated only in debug builds, and its search aids left
    /// until a search needs them.
    pub fn from_written(ptr: Ptr, kind: Kind, buf: Vec<u8>, start: usize) -> Page {
        debug_assert!(
            validate(ptr, kind, &buf[start..]).is_ok(),
            "a written node does not decode"
        );
        let d = &buf[start..];
        let (level, n) = (d[0], rd_u32(d, 4) as usize);
        Page::unsearched(ptr, level, n, buf, start)
    }

    /// A page no search has used yet.
    fn unsearched(ptr: Ptr, level: u8, n: usize, buf: Vec<u8>, start: usize) -> Page {
        Page {
            ptr,
            level,
            n,
            buf,
            start,
            search: OnceLock::new(),
            searched: AtomicBool::new(false),
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }

    /// Entries (leaf) or children (branch).
    pub fn len(&self) -> usize {
        self.n
    }

    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Size of the encoded payload.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The encoded payload, as written to the log.
    pub fn payload(&self) -> &[u8] {
        self.data()
    }

    /// Bytes this page holds in memory: its buffer, its search slots
    /// (counted whether or not they were built yet, at the capacity they
    /// will have) and `PAGE_OVERHEAD_BYTES`.
    pub fn weight(&self) -> u64 {
        let slots = crate::bufpool::slots_bytes(self.search_keys());
        (self.buf.capacity() + slots + PAGE_OVERHEAD_BYTES) as u64
    }

    // ---- leaf ----

    fn entry_at(&self, i: usize) -> usize {
        rd_u32(self.data(), 8 + 4 * i) as usize
    }

    pub fn key(&self, i: usize) -> &[u8] {
        debug_assert!(self.is_leaf() && i < self.n);
        let off = self.entry_at(i);
        let klen = rd_u32(self.data(), off) as usize;
        &self.data()[off + LEAF_ENTRY_HEADER..off + LEAF_ENTRY_HEADER + klen]
    }

    pub fn value(&self, i: usize) -> ValRef<'_> {
        debug_assert!(self.is_leaf() && i < self.n);
        let off = self.entry_at(i);
        let klen = rd_u32(self.data(), off) as usize;
        let vtag = self.data()[off + 4];
        let vlen = rd_u32(self.data(), off + 5);
        let at = off + LEAF_ENTRY_HEADER + klen;
        if vtag == 0 {
            ValRef::Inline(&self.data()[at..at + vlen as usize])
        } else {
            ValRef::Ext {
                vlen,
                ptr: Ptr {
                    addr: rd_u64(self.data(), at),
                    len: rd_u32(self.data(), at + 8),
                },
            }
        }
    }

    /// Entries `a..b` as they are encoded, back to back (validation made
    /// sure they are packed in order), and where the first starts in the
    /// payload: a leaf copied on write takes a run of unchanged entries
    /// over with one copy, shifting their offsets by one amount.
    pub fn entries_bytes(&self, a: usize, b: usize) -> (usize, &[u8]) {
        debug_assert!(self.is_leaf() && a < b && b <= self.n);
        let from = self.entry_at(a);
        let last = self.entry_bytes(b - 1);
        let to = self.entry_at(b - 1) + last.len();
        (from, &self.data()[from..to])
    }

    /// Where entry `i` starts in the payload.
    pub fn entry_offset(&self, i: usize) -> usize {
        debug_assert!(self.is_leaf() && i < self.n);
        self.entry_at(i)
    }

    /// Entry `i` as it is encoded (header, key, value or value pointer), so
    /// that a leaf copied on write can take it over without decoding it.
    pub fn entry_bytes(&self, i: usize) -> &[u8] {
        debug_assert!(self.is_leaf() && i < self.n);
        let d = self.data();
        let off = self.entry_at(i);
        let klen = rd_u32(d, off) as usize;
        let vlen = if d[off + 4] == 0 {
            rd_u32(d, off + 5) as usize
        } else {
            EXT_LEN
        };
        &d[off..off + LEAF_ENTRY_HEADER + klen + vlen]
    }

    /// Binary search for `key` among the leaf's entries.
    pub fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        debug_assert!(self.is_leaf());
        self.locate(key)
    }

    // ---- branch ----

    pub fn child(&self, i: usize) -> ChildInfo {
        debug_assert!(!self.is_leaf() && i < self.n);
        let at = 8 + CHILD_LEN * i;
        ChildInfo {
            ptr: Ptr {
                addr: rd_u64(self.data(), at),
                len: rd_u32(self.data(), at + 8),
            },
            count: rd_u64(self.data(), at + 12),
            bytes: rd_u64(self.data(), at + 20),
        }
    }

    /// Separator `i` (0 ..= len-2).
    pub fn sep(&self, i: usize) -> &[u8] {
        debug_assert!(!self.is_leaf() && i + 1 < self.n);
        let off = rd_u32(self.data(), 8 + CHILD_LEN * self.n + 4 * i) as usize;
        let klen = rd_u32(self.data(), off) as usize;
        &self.data()[off + 4..off + 4 + klen]
    }

    /// Index of the child whose range holds `key`: the number of
    /// separators that are <= key.
    pub fn child_index(&self, key: &[u8]) -> usize {
        debug_assert!(!self.is_leaf());
        match self.locate(key) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// A node record's level and the key the cleaner finds it by (a leaf's
/// first key, a branch's first separator), read without decoding the node.
pub fn probe(payload: &[u8], kind: Kind, position: u64) -> Result<(u8, Option<&[u8]>)> {
    let mut r = Reader::new(payload, position);
    let level = r.u8()?;
    r.bytes(3)?;
    let n = r.u32()? as usize;
    let at = match kind {
        Kind::Leaf if n > 0 => 8,
        Kind::Branch if n > 1 => 8usize.saturating_add(n.saturating_mul(CHILD_LEN)),
        Kind::Leaf | Kind::Branch => return Ok((level, None)),
        _ => return Err(Error::corrupt(position, "record is not a node")),
    };
    let off = Reader::new(payload.get(at..).unwrap_or(&[]), position).u32()? as usize;
    let mut e = Reader::new(payload.get(off..).unwrap_or(&[]), position);
    let klen = e.u32()? as usize;
    if kind == Kind::Leaf {
        e.bytes(5)?;
    }
    Ok((level, Some(e.bytes(klen)?)))
}

#[cfg(test)]
mod tests;
