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
//! Separator `i` bounds children `i` and `i + 1` (it need not be a key; see
//! `shortest_separator` in write.rs): child `i` holds the keys in
//! `[sep(i-1), sep(i))`. `count` is the number of keys under a child and
//! `bytes` the log footprint of its subtree (nodes and value records), which
//! makes `count` O(1) and lets a range delete drop whole subtrees unread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

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

/// A page's search aids.
#[derive(Debug)]
struct Search {
    /// The prefix every key (leaf) or separator (branch) shares, as where
    /// it starts in the payload (it is the head of the first key) and its
    /// length: a range, not a copy, so that it costs no allocation.
    shared_at: u32,
    shared_len: u32,
    /// The shared prefix's first bytes (up to eight), big-endian and
    /// zero-padded: a search compares the key's head with it instead of
    /// with the first key, whose cache line it would otherwise load only to
    /// learn that the key is in range (with random keys the whole prefix is
    /// a byte or two).
    shared_head: u64,
    /// One slot per key (leaf) or separator (branch): in the high half the
    /// four bytes after `shared`, big-endian and zero-padded; in the low
    /// half the offset of its entry (or separator) in the payload. Searches
    /// compare the high halves and touch keys only among equal ones, and
    /// find those keys without the offset table: one cache miss fewer per
    /// level than reading the table, which profiles of cached lookups
    /// showed to be memory-bound.
    /// A pooled vector, like `buf`: every page searched makes one.
    slots: Vec<u64>,
}

impl Drop for Page {
    fn drop(&mut self) {
        crate::bufpool::give(std::mem::take(&mut self.buf));
        if let Some(s) = self.search.take() {
            crate::bufpool::give_slots(s.slots);
        }
    }
}

/// Four bytes of `key` from `from`, zero-padded, as a big-endian integer.
/// For keys that agree before `from`, a smaller result means a smaller key;
/// equal results decide nothing.
#[inline]
fn prefix_at(key: &[u8], from: usize) -> u32 {
    let tail = key.get(from..).unwrap_or(&[]);
    match tail.first_chunk::<4>() {
        Some(b) => u32::from_be_bytes(*b),
        None => {
            let mut b = [0u8; 4];
            b[..tail.len()].copy_from_slice(tail);
            u32::from_be_bytes(b)
        }
    }
}

/// The first `n` bytes of `key` (`n` at most 8 and at most its length) as
/// a big-endian integer, zero-padded: for two heads of equal `n`, integer
/// order is byte order.
#[inline]
fn head_be(key: &[u8], n: usize) -> u64 {
    debug_assert!(n <= 8 && n <= key.len());
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Bytes at the start of `a` and `b` that are the same.
pub fn common_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Lexicographic byte order, deciding on the first eight bytes as one
/// big-endian integer when it can: most comparisons in a search end there,
/// without a call to `memcmp`.
#[inline]
pub fn cmp_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

/// Binary search for `key` among the sorted keys `key_at(i)`, `i` in
/// `range`: `Ok(i)` where equal, else `Err(i)` where it would go.
#[inline]
pub fn search_sorted<'a>(
    range: std::ops::Range<usize>,
    key_at: impl Fn(usize) -> &'a [u8],
    key: &[u8],
) -> std::result::Result<usize, usize> {
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match cmp_keys(key_at(mid), key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// Pages with up to this many searched keys find a key's slots by counting
/// rather than by binary search. Both read the slots (8 bytes a key, so 8
/// lines at most here) and a cached lookup is bound by memory latency:
/// `nacre-bench store --sets c` (reads in turns with redb) measured hotspot
/// reads at 1.16–1.22× redb with counting against 1.06–1.16× without, four
/// and five runs (docs/benchmarks.md). A page of 4 KiB holds up to ~45 entries of set B's
/// 40-byte keys and values; pages of small keys hold hundreds and keep the
/// binary search.
const LINEAR_SLOTS_MAX: usize = 64;

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

    fn search_aids(&self) -> &Search {
        self.search.get_or_init(|| {
            let keys = self.search_keys();
            if keys == 0 {
                return Search {
                    shared_at: 0,
                    shared_len: 0,
                    shared_head: 0,
                    slots: Vec::new(),
                };
            }
            let common = common_len(self.search_key(0), self.search_key(keys - 1));
            let mut slots = crate::bufpool::take_slots(keys);
            slots.extend((0..keys).map(|i| {
                let off = self.search_offset(i) as u64;
                ((prefix_at(self.search_key(i), common) as u64) << 32) | off
            }));
            // The first key's bytes follow its length (and, in a leaf, the
            // rest of the entry header); a payload is under 4 GiB, as a
            // record's length is a u32.
            let at = self.search_offset(0) + self.key_header_len();
            debug_assert_eq!(&self.data()[at..at + common], &self.search_key(0)[..common]);
            Search {
                shared_at: at as u32,
                shared_len: common as u32,
                shared_head: head_be(self.search_key(0), common.min(8)),
                slots,
            }
        })
    }

    /// The prefix every searched key shares.
    #[cfg(test)]
    fn shared(&self) -> &[u8] {
        let s = self.search_aids();
        let at = s.shared_at as usize;
        &self.data()[at..at + s.shared_len as usize]
    }

    /// Number of keys searched: entries of a leaf, separators of a branch.
    fn search_keys(&self) -> usize {
        if self.is_leaf() {
            self.n
        } else {
            self.n - 1
        }
    }

    fn search_key(&self, i: usize) -> &[u8] {
        if self.is_leaf() {
            self.key(i)
        } else {
            self.sep(i)
        }
    }

    /// Offset in the payload of searched key `i`'s entry or separator.
    fn search_offset(&self, i: usize) -> usize {
        if self.is_leaf() {
            self.entry_at(i)
        } else {
            rd_u32(self.data(), 8 + CHILD_LEN * self.n + 4 * i) as usize
        }
    }

    /// Searched key `i`, found through its slot.
    #[inline]
    fn slot_key<'a>(&'a self, slots: &[u64], i: usize) -> &'a [u8] {
        let off = slots[i] as u32 as usize;
        let klen = rd_u32(self.data(), off) as usize;
        let at = off + self.key_header_len();
        &self.data()[at..at + klen]
    }

    /// Bytes before a searched key's own bytes in its entry or separator.
    #[inline]
    fn key_header_len(&self) -> usize {
        if self.is_leaf() {
            LEAF_ENTRY_HEADER
        } else {
            4
        }
    }

    /// Where `key` falls among the searched keys: `Ok(i)` if equal to key
    /// `i`, else `Err(i)` with `i` the number of keys smaller than it.
    fn locate(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let m = self.search_keys();
        if m == 0 {
            return Err(0);
        }
        let search = match self.search.get() {
            Some(s) => s,
            // A race between two first searches only builds the aids early.
            None if !self.searched.swap(true, Ordering::Relaxed) => {
                return search_sorted(0..m, |i| self.search_key(i), key);
            }
            None => self.search_aids(),
        };
        let c = search.shared_len as usize;
        if c > 0 {
            // Every key starts with the same `c` bytes; a key that differs
            // there is before or after all of them. The first eight come
            // from `shared_head`, the rest (rare) from the first key.
            let n = c.min(key.len());
            let inline = n.min(8);
            // A key shorter than the head compares as less or equal, and
            // is before every key either way (below).
            let mut ord = head_be(key, inline).cmp(&search.shared_head);
            if ord.is_eq() && n > inline {
                let at = search.shared_at as usize;
                ord = key[inline..n].cmp(&self.data()[at + inline..at + n]);
            }
            match ord {
                std::cmp::Ordering::Less => return Err(0),
                std::cmp::Ordering::Greater => return Err(m),
                std::cmp::Ordering::Equal if key.len() < c => return Err(0),
                std::cmp::Ordering::Equal => {}
            }
        }
        let kp = prefix_at(key, c) as u64;
        let slots = &search.slots[..];
        let (lo, hi) = if slots.len() <= LINEAR_SLOTS_MAX {
            // Counting reads every slot, but the loads do not depend on
            // each other: the CPU has all of the page's slot lines in
            // flight at once, where each step of a binary search waits for
            // the line the step before chose.
            let lo: usize = slots.iter().map(|&s| usize::from(s >> 32 < kp)).sum();
            let eq: usize = slots.iter().map(|&s| usize::from(s >> 32 == kp)).sum();
            (lo, lo + eq)
        } else {
            let lo = slots.partition_point(|&s| s >> 32 < kp);
            (lo, lo + slots[lo..].partition_point(|&s| s >> 32 == kp))
        };
        search_sorted(lo..hi, |i| self.slot_key(slots, i), key)
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

// ---- encoding (from the write side) ----

/// Where child `i`'s pointer starts in a branch payload.
pub fn branch_child_offset(i: usize) -> usize {
    8 + CHILD_LEN * i
}

pub fn branch_entry_size(sep: &[u8]) -> usize {
    CHILD_LEN + 4 + 4 + sep.len()
}

#[cfg(test)]
pub fn encode_leaf(entries: &[(Vec<u8>, Val)], out: &mut Vec<u8>) {
    out.clear();
    let table = begin_leaf(entries.len(), out);
    for (i, (k, v)) in entries.iter().enumerate() {
        let at = out.len();
        set_entry_offset(out, table, i, at);
        encode_entry(k, v.as_ref(), out);
    }
}

/// Start a leaf of `n` entries at the end of `out` (which then holds its
/// payload from there on): the header and a table of offsets to fill with
/// `set_entry_offset` as the entries are appended, packed and in order.
/// Returns where the table starts in `out`.
pub fn begin_leaf(n: usize, out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0, 0, 0, 0]);
    put_u32(out, n as u32);
    let table = out.len();
    out.resize(table + 4 * n, 0);
    table
}

/// Record that entry `i` of the leaf whose table is at `table` in `out`
/// starts at `at` in `out`. Offsets in the page count from the payload
/// start, 8 bytes before the table.
pub fn set_entry_offset(out: &mut [u8], table: usize, i: usize, at: usize) {
    let off = (at - (table - 8)) as u32;
    out[table + 4 * i..table + 4 * i + 4].copy_from_slice(&off.to_le_bytes());
}

/// Append one leaf entry: key length, value tag, value length, key, then
/// the value or the pointer to its record.
pub fn encode_entry(k: &[u8], v: ValRef<'_>, out: &mut Vec<u8>) {
    put_u32(out, k.len() as u32);
    match v {
        ValRef::Inline(b) => {
            out.push(0);
            put_u32(out, b.len() as u32);
            out.extend_from_slice(k);
            out.extend_from_slice(b);
        }
        ValRef::Ext { vlen, ptr } => {
            out.push(1);
            put_u32(out, vlen);
            out.extend_from_slice(k);
            put_ptr(out, ptr);
        }
    }
}

#[cfg(test)]
pub fn encode_branch(level: u8, keys: &[Vec<u8>], children: &[ChildInfo], out: &mut Vec<u8>) {
    out.clear();
    encode_branch_with(
        level,
        keys.len(),
        |i| keys[i].as_slice(),
        |i| children[i],
        out,
    );
}

/// Encode a branch whose separator `i` is `key(i)` and child `i` is
/// `child(i)`, appended to `out` like `begin_leaf` and its entries.
pub fn encode_branch_with<'a>(
    level: u8,
    nkeys: usize,
    key: impl Fn(usize) -> &'a [u8],
    child: impl Fn(usize) -> ChildInfo,
    out: &mut Vec<u8>,
) {
    debug_assert!(level > 0);
    let base = out.len();
    let nchildren = nkeys + 1;
    out.extend_from_slice(&[level, 0, 0, 0]);
    put_u32(out, nchildren as u32);
    for i in 0..nchildren {
        let c = child(i);
        put_ptr(out, c.ptr);
        put_u64(out, c.count);
        put_u64(out, c.bytes);
    }
    let mut off = 8 + CHILD_LEN * nchildren + 4 * nkeys;
    for i in 0..nkeys {
        put_u32(out, off as u32);
        off += 4 + key(i).len();
    }
    for i in 0..nkeys {
        let k = key(i);
        put_u32(out, k.len() as u32);
        out.extend_from_slice(k);
    }
    debug_assert_eq!(out.len() - base, off);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmp_keys_is_lexicographic() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"abcdefgi",
            b"b",
            &[0xff; 9],
            &[0xff; 8],
            &[0x7f, 0xff, 0, 0, 0, 0, 0, 0, 1],
        ];
        for a in &keys {
            for b in &keys {
                assert_eq!(cmp_keys(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    /// The cache's budget is bytes of memory, so a page's weight must cover
    /// what it holds once searched: its buffer, its built slots (a pooled
    /// vector larger than its key count) and the page struct itself.
    #[test]
    fn a_page_weighs_at_least_what_it_holds() {
        for n in [1usize, 17, 35, 100] {
            let entries: Vec<(Vec<u8>, Val)> = (0..n)
                .map(|i| (format!("key-{i:04}").into_bytes(), Val::Inline(vec![7; 8])))
                .collect();
            let mut buf = Vec::new();
            encode_leaf(&entries, &mut buf);
            let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
            let before = p.weight();
            for _ in 0..2 {
                assert_eq!(p.search(b"key-0000"), Ok(0));
            }
            let slots = p.search.get().expect("slots built on the second search");
            let held = p.buf.capacity() + 8 * slots.slots.capacity() + std::mem::size_of::<Page>();
            assert!(
                p.weight() as usize >= held,
                "{n} keys: weight {} under the {held} bytes held",
                p.weight()
            );
            assert_eq!(
                p.weight(),
                before,
                "the weight changed when slots were built"
            );
        }
    }

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
    fn search_agrees_with_a_plain_search_for_prefixes_of_every_length() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(3);
        // Pages searched by counting and by binary search, respectively.
        let (mut counted, mut halved) = (0, 0);
        for round in 0..300 {
            // Keys that share a prefix of 0 to 20 bytes, over a small
            // alphabet so that they also share bytes after it.
            let shared: Vec<u8> = (0..rng.random_range(0..=20))
                .map(|_| rng.random_range(0..3))
                .collect();
            // Up to 300 keys: pages of many keys, as well as few.
            let mut raw: Vec<Vec<u8>> = (0..rng.random_range(1..300))
                .map(|_| {
                    let mut k = shared.clone();
                    k.extend((0..rng.random_range(0..12)).map(|_| rng.random_range(0..3u8)));
                    k
                })
                .collect();
            raw.sort();
            raw.dedup();
            let entries: Vec<(Vec<u8>, Val)> = raw
                .iter()
                .map(|k| (k.clone(), Val::Inline(vec![1])))
                .collect();
            let mut buf = Vec::new();
            encode_leaf(&entries, &mut buf);
            let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
            // Built here, so that every probe below searches with the aids.
            assert!(p.shared().len() >= shared.len());
            if raw.len() <= LINEAR_SLOTS_MAX {
                counted += 1;
            } else {
                halved += 1;
            }
            // Probes: every key, every prefix of one, and each with its
            // last byte moved up or down.
            let mut probes: Vec<Vec<u8>> = Vec::new();
            for k in &raw {
                probes.extend((0..=k.len()).map(|n| k[..n].to_vec()));
                if let Some((&last, head)) = k.split_last() {
                    for b in [last.wrapping_sub(1), last.wrapping_add(1)] {
                        probes.push([head, &[b]].concat());
                    }
                }
                probes.push([k.as_slice(), &[0]].concat());
            }
            for q in &probes {
                assert_eq!(
                    p.search(q),
                    raw.binary_search(q),
                    "round {round}: probe {q:?} among {raw:?}"
                );
            }
        }
        assert!(counted > 20 && halved > 20, "{counted} and {halved} pages");
    }

    #[test]
    fn search_agrees_with_a_plain_search_for_shared_and_short_keys() {
        let raw: Vec<&[u8]> = vec![
            b"/cfg/a",
            b"/cfg/a/",
            b"/cfg/a/x",
            b"/cfg/aaaaaaaaaaaa",
            b"/cfg/aaaaaaaaaaab",
            b"/cfg/b",
            b"/cfg/b\0",
            b"/cfg/b\0\0\0\0\0\0\0\0\x01",
            b"/cfg/c",
        ];
        let entries: Vec<(Vec<u8>, Val)> = raw
            .iter()
            .map(|k| (k.to_vec(), Val::Inline(vec![])))
            .collect();
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
        assert_eq!(p.shared(), b"/cfg/");
        let probes: Vec<&[u8]> = vec![
            b"",
            b"/",
            b"/cfg",
            b"/cfg/",
            b"/cfg/a",
            b"/cfg/a\0",
            b"/cfg/aa",
            b"/cfg/aaaaaaaaaaaa",
            b"/cfg/aaaaaaaaaaaa\0",
            b"/cfg/b\0\0\0\0\0\0\0\0",
            b"/cfg/b\0\0\0\0\0\0\0\0\x01",
            b"/cfg/c",
            b"/cfg/d",
            b"/cfh",
            b"/cfa/zzz",
            b"\xff",
        ];
        for q in probes {
            let want = raw.binary_search(&q);
            assert_eq!(p.search(q), want, "probe {q:?}");
            // A fresh page's first search goes without the aids, its second
            // builds and uses them.
            let fresh = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
            assert_eq!(fresh.search(q), want, "first search, probe {q:?}");
            assert!(fresh.search.get().is_none());
            assert_eq!(fresh.search(q), want, "second search, probe {q:?}");
            assert!(fresh.search.get().is_some());
        }
        let keys: Vec<Vec<u8>> = raw[1..].iter().map(|k| k.to_vec()).collect();
        let ch = |a| ChildInfo {
            ptr: Ptr { addr: a, len: 10 },
            count: 1,
            bytes: 1,
        };
        let children: Vec<_> = (0..raw.len() as u64).map(|i| ch(8 * (i + 1))).collect();
        encode_branch(1, &keys, &children, &mut buf);
        let b = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Branch, &buf).unwrap();
        for q in [
            &b"/cfg/a"[..],
            b"/cfg/a/",
            b"/cfg/a/w",
            b"/cfg/b\0",
            b"/a",
            b"/z",
            b"/cfg/c",
        ] {
            let want = keys.partition_point(|k| k.as_slice() <= q);
            assert_eq!(b.child_index(q), want, "probe {q:?}");
        }
    }

    #[test]
    fn probe_finds_level_and_first_key() {
        let entries: Vec<(Vec<u8>, Val)> = vec![
            (b"first".to_vec(), Val::Inline(b"v".to_vec())),
            (b"second".to_vec(), Val::Inline(vec![])),
        ];
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        assert_eq!(
            probe(&buf, Kind::Leaf, 0).unwrap(),
            (0, Some(&b"first"[..]))
        );
        let keys = vec![b"m".to_vec()];
        let ch = ChildInfo {
            ptr: Ptr { addr: 8, len: 10 },
            count: 1,
            bytes: 1,
        };
        encode_branch(3, &keys, &[ch, ch], &mut buf);
        assert_eq!(probe(&buf, Kind::Branch, 0).unwrap(), (3, Some(&b"m"[..])));
        assert!(probe(&buf[..9], Kind::Branch, 0).is_err());
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
    fn entries_out_of_place_are_corrupt() {
        let entries: Vec<(Vec<u8>, Val)> = ["a", "b", "c"]
            .iter()
            .map(|k| (k.as_bytes().to_vec(), Val::Inline(b"v".to_vec())))
            .collect();
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        assert!(Page::decode(Ptr::NULL, Kind::Leaf, &buf).is_ok());
        // Each offset still leads to a whole entry, but the entries no
        // longer lie packed in table order.
        let mut swapped = buf.clone();
        let (a, b) = (rd_u32(&buf, 8), rd_u32(&buf, 12));
        swapped[8..12].copy_from_slice(&b.to_le_bytes());
        swapped[12..16].copy_from_slice(&a.to_le_bytes());
        assert!(matches!(
            Page::decode(Ptr::NULL, Kind::Leaf, &swapped),
            Err(Error::Corruption { .. })
        ));
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
