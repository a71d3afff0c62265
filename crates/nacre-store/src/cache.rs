//! The page cache: decoded pages by log position, bounded in bytes.
//!
//! Positions are never reused (segment ids only grow), so an entry can never
//! describe anything but the record it was read from; entries of deleted
//! segments simply age out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use std::hash::{BuildHasher, Hasher};

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::Weighter;

use crate::btree::page::Page;

#[derive(Clone)]
struct PageWeight;

impl Weighter<u64, Arc<Page>> for PageWeight {
    fn weight(&self, _key: &u64, val: &Arc<Page>) -> u64 {
        val.weight()
    }
}

/// Log positions are already well spread; one multiply mixes them enough
/// for the table, at a fraction of the cost of a keyed hash.
#[derive(Clone, Default)]
struct PositionHash;

struct PositionHasher(u64);

impl Hasher for PositionHasher {
    fn finish(&self) -> u64 {
        let x = self.0 ^ (self.0 >> 29);
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ b as u64 ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

impl BuildHasher for PositionHash {
    type Hasher = PositionHasher;
    fn build_hasher(&self) -> PositionHasher {
        PositionHasher(0)
    }
}

type Inner = Cache<u64, Arc<Page>, PageWeight, PositionHash, DefaultLifecycle<u64, Arc<Page>>>;

pub struct PageCache {
    cache: Inner,
    counts: Box<[Counts; STRIPES]>,
}

/// Hits and misses are counted on one of `STRIPES` cache lines picked per
/// thread: every lookup counts, and with one shared pair of counters every
/// reader thread would write the same line on every lookup (two per get).
const STRIPES: usize = 16;

#[derive(Default)]
#[repr(align(64))]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// This thread's stripe: threads take stripes in turn as they first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

impl PageCache {
    pub fn new(bytes_max: usize) -> PageCache {
        let items = (bytes_max / 4096).max(16);
        PageCache {
            cache: Cache::with(
                items,
                bytes_max as u64,
                PageWeight,
                PositionHash,
                DefaultLifecycle::default(),
            ),
            counts: Box::default(),
        }
    }

    pub fn get(&self, addr: u64) -> Option<Arc<Page>> {
        let p = self.cache.get(&addr);
        let counts = &self.counts[stripe()];
        let counter = if p.is_some() {
            &counts.hits
        } else {
            &counts.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        p
    }

    pub fn insert(&self, page: Arc<Page>) {
        self.cache.insert(page.ptr.addr, page);
    }

    /// Drop the pages at `addrs`, superseded by a commit: they would only
    /// push out current pages before they aged out. A reader of an older
    /// version that still wants one reads it again.
    pub fn forget(&self, addrs: &[u64]) {
        for a in addrs {
            self.cache.remove(a);
        }
    }

    pub fn hits(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.hits.load(Ordering::Relaxed))
            .sum()
    }

    pub fn misses(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.misses.load(Ordering::Relaxed))
            .sum()
    }

    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::page::{encode_leaf, Page, Val};
    use crate::record::{Kind, Ptr};

    #[test]
    fn lookups_from_many_threads_are_all_counted() {
        let cache = PageCache::new(1 << 20);
        let mut payload = Vec::new();
        encode_leaf(&[(b"k".to_vec(), Val::Inline(b"v".to_vec()))], &mut payload);
        let ptr = Ptr {
            addr: 4096,
            len: payload.len() as u32,
        };
        cache.insert(Arc::new(Page::decode(ptr, Kind::Leaf, &payload).unwrap()));
        // More threads than stripes, so that some share one.
        let threads = STRIPES + 5;
        let per_thread = 2_000u64;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for i in 0..per_thread {
                        // Every other lookup misses (an address never cached).
                        let addr = if i % 2 == 0 { 4096 } else { 8192 + i };
                        assert_eq!(cache.get(addr).is_some(), i % 2 == 0);
                    }
                });
            }
        });
        assert_eq!(cache.hits(), threads as u64 * per_thread / 2);
        assert_eq!(cache.misses(), threads as u64 * per_thread / 2);
    }
}
