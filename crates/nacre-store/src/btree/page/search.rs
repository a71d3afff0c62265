//! Searching a page in place: the search aids a page builds on its second
//! search (a shared prefix and one slot per key), and the lookups that use
//! them. `page.rs` decodes a page and reads its fields; this file finds a
//! key among them, which is where a cached read spends its time.

use std::sync::atomic::Ordering;

use super::{rd_u32, Page, CHILD_LEN, LEAF_ENTRY_HEADER};

/// A page's search aids.
#[derive(Debug)]
pub(super) struct Search {
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
    pub(super) slots: Vec<u64>,
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
pub(super) const LINEAR_SLOTS_MAX: usize = 64;

impl Page {
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
    pub(super) fn shared(&self) -> &[u8] {
        let s = self.search_aids();
        let at = s.shared_at as usize;
        &self.data()[at..at + s.shared_len as usize]
    }

    /// Number of keys searched: entries of a leaf, separators of a branch.
    pub(super) fn search_keys(&self) -> usize {
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
    pub(super) fn locate(&self, key: &[u8]) -> std::result::Result<usize, usize> {
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
}
