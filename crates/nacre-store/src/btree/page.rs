//! Clean pages: B+tree nodes as read from the log, searched in place.
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
//! Separator `i` is the lowest key of child `i + 1`: child `i` holds the keys
//! in `[sep(i-1), sep(i))`. `count` is the number of keys under a child and
//! `bytes` the log footprint of its subtree (nodes and value records), which
//! makes `count` O(1) and lets a range delete drop whole subtrees unread.

use crate::error::{Error, Result};
use crate::record::{put_ptr, put_u32, put_u64, Kind, Ptr, Reader};

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
    pub fn encoded_len(&self) -> usize {
        match self {
            Val::Inline(v) => v.len(),
            Val::Ext { .. } => EXT_LEN,
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
    data: Box<[u8]>,
}

fn rd_u32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
fn rd_u64(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

impl Page {
    /// Validate every offset and length once, so the accessors below can
    /// index without further checks.
    pub fn decode(ptr: Ptr, kind: Kind, payload: &[u8]) -> Result<Page> {
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
                for i in 0..n {
                    let off = rd_u32(payload, 8 + 4 * i) as usize;
                    if off < table_end {
                        return Err(bad("entry offset inside header"));
                    }
                    let mut e = Reader::new(
                        payload.get(off..).ok_or_else(|| bad("entry offset"))?,
                        ptr.addr,
                    );
                    let klen = e.u32()? as usize;
                    let vtag = e.u8()?;
                    let vlen = e.u32()? as usize;
                    e.bytes(klen)?;
                    match vtag {
                        0 => {
                            e.bytes(vlen)?;
                        }
                        1 => {
                            e.bytes(EXT_LEN)?;
                        }
                        _ => return Err(bad("value tag")),
                    }
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
        Ok(Page {
            ptr,
            level,
            n,
            data: payload.into(),
        })
    }

    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }

    /// Entries (leaf) or children (branch).
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn weight(&self) -> u64 {
        self.data.len() as u64 + 64
    }

    // ---- leaf ----

    fn entry_at(&self, i: usize) -> usize {
        rd_u32(&self.data, 8 + 4 * i) as usize
    }

    pub fn key(&self, i: usize) -> &[u8] {
        debug_assert!(self.is_leaf() && i < self.n);
        let off = self.entry_at(i);
        let klen = rd_u32(&self.data, off) as usize;
        &self.data[off + LEAF_ENTRY_HEADER..off + LEAF_ENTRY_HEADER + klen]
    }

    pub fn value(&self, i: usize) -> ValRef<'_> {
        debug_assert!(self.is_leaf() && i < self.n);
        let off = self.entry_at(i);
        let klen = rd_u32(&self.data, off) as usize;
        let vtag = self.data[off + 4];
        let vlen = rd_u32(&self.data, off + 5);
        let at = off + LEAF_ENTRY_HEADER + klen;
        if vtag == 0 {
            ValRef::Inline(&self.data[at..at + vlen as usize])
        } else {
            ValRef::Ext {
                vlen,
                ptr: Ptr {
                    addr: rd_u64(&self.data, at),
                    len: rd_u32(&self.data, at + 8),
                },
            }
        }
    }

    /// Binary search for `key` among the leaf's entries.
    pub fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0usize, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    // ---- branch ----

    pub fn child(&self, i: usize) -> ChildInfo {
        debug_assert!(!self.is_leaf() && i < self.n);
        let at = 8 + CHILD_LEN * i;
        ChildInfo {
            ptr: Ptr {
                addr: rd_u64(&self.data, at),
                len: rd_u32(&self.data, at + 8),
            },
            count: rd_u64(&self.data, at + 12),
            bytes: rd_u64(&self.data, at + 20),
        }
    }

    /// Separator `i` (0 ..= len-2).
    pub fn sep(&self, i: usize) -> &[u8] {
        debug_assert!(!self.is_leaf() && i + 1 < self.n);
        let off = rd_u32(&self.data, 8 + CHILD_LEN * self.n + 4 * i) as usize;
        let klen = rd_u32(&self.data, off) as usize;
        &self.data[off + 4..off + 4 + klen]
    }

    /// Index of the child whose range holds `key`: the number of
    /// separators that are <= key.
    pub fn child_index(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0usize, self.n - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.sep(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

// ---- encoding (from the write side) ----

pub fn leaf_size(entries: &[(Vec<u8>, Val)]) -> usize {
    8 + entries
        .iter()
        .map(|(k, v)| leaf_entry_size(k, v))
        .sum::<usize>()
}

pub fn leaf_entry_size(k: &[u8], v: &Val) -> usize {
    4 + LEAF_ENTRY_HEADER + k.len() + v.encoded_len()
}

pub fn branch_entry_size(sep: &[u8]) -> usize {
    CHILD_LEN + 4 + 4 + sep.len()
}

pub fn encode_leaf(entries: &[(Vec<u8>, Val)], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0, 0, 0, 0]);
    put_u32(out, entries.len() as u32);
    let mut off = 8 + 4 * entries.len();
    for (k, v) in entries {
        put_u32(out, off as u32);
        off += LEAF_ENTRY_HEADER + k.len() + v.encoded_len();
    }
    for (k, v) in entries {
        put_u32(out, k.len() as u32);
        match v {
            Val::Inline(b) => {
                out.push(0);
                put_u32(out, b.len() as u32);
                out.extend_from_slice(k);
                out.extend_from_slice(b);
            }
            Val::Ext { vlen, ptr } => {
                out.push(1);
                put_u32(out, *vlen);
                out.extend_from_slice(k);
                put_ptr(out, *ptr);
            }
        }
    }
    debug_assert_eq!(out.len(), off);
}

pub fn encode_branch(level: u8, keys: &[Vec<u8>], children: &[ChildInfo], out: &mut Vec<u8>) {
    debug_assert!(level > 0);
    debug_assert_eq!(keys.len() + 1, children.len());
    out.clear();
    out.extend_from_slice(&[level, 0, 0, 0]);
    put_u32(out, children.len() as u32);
    for c in children {
        put_ptr(out, c.ptr);
        put_u64(out, c.count);
        put_u64(out, c.bytes);
    }
    let mut off = 8 + CHILD_LEN * children.len() + 4 * keys.len();
    for k in keys {
        put_u32(out, off as u32);
        off += 4 + k.len();
    }
    for k in keys {
        put_u32(out, k.len() as u32);
        out.extend_from_slice(k);
    }
    debug_assert_eq!(out.len(), off);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trip_and_search() {
        let entries: Vec<(Vec<u8>, Val)> = vec![
            (b"a".to_vec(), Val::Inline(b"1".to_vec())),
            (
                b"c".to_vec(),
                Val::Ext {
                    vlen: 5000,
                    ptr: Ptr {
                        addr: 64,
                        len: 5020,
                    },
                },
            ),
            (b"e".to_vec(), Val::Inline(vec![])),
        ];
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        assert_eq!(buf.len(), leaf_size(&entries));
        let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.key(1), b"c");
        assert_eq!(p.search(b"c"), Ok(1));
        assert_eq!(p.search(b"d"), Err(2));
        assert_eq!(p.search(b"0"), Err(0));
        assert!(matches!(p.value(1), ValRef::Ext { vlen: 5000, ptr } if ptr.addr == 64));
        assert!(matches!(p.value(0), ValRef::Inline(b"1")));
    }

    #[test]
    fn branch_round_trip_and_child_index() {
        let keys = vec![b"g".to_vec(), b"p".to_vec()];
        let ch = |a| ChildInfo {
            ptr: Ptr { addr: a, len: 10 },
            count: a,
            bytes: 2 * a,
        };
        let children = vec![ch(8), ch(16), ch(24)];
        let mut buf = Vec::new();
        encode_branch(2, &keys, &children, &mut buf);
        let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Branch, &buf).unwrap();
        assert_eq!(p.level, 2);
        assert_eq!(p.child(2), ch(24));
        assert_eq!(p.child_index(b"a"), 0);
        assert_eq!(p.child_index(b"g"), 1);
        assert_eq!(p.child_index(b"h"), 1);
        assert_eq!(p.child_index(b"p"), 2);
        assert_eq!(p.child_index(b"z"), 2);
    }

    #[test]
    fn malformed_offsets_are_errors_not_panics() {
        let entries: Vec<(Vec<u8>, Val)> = vec![(b"key".to_vec(), Val::Inline(b"v".to_vec()))];
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        for i in 0..buf.len() {
            for b in [0u8, 0xff, 0x7f] {
                let mut bad = buf.clone();
                bad[i] = b;
                // Must never panic, whatever the bytes.
                let _ = Page::decode(Ptr::NULL, Kind::Leaf, &bad);
            }
        }
        buf.truncate(buf.len() - 1);
        assert!(Page::decode(Ptr::NULL, Kind::Leaf, &buf).is_err());
    }
}
