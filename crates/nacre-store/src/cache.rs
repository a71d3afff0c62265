//! The page cache: decoded pages by log position, bounded in bytes.
//!
//! Positions are never reused (segment ids only grow), so an entry can never
//! describe anything but the record it was read from; entries of deleted
//! segments simply age out.

use std::sync::atomic::{AtomicU64, Ordering};
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
    hits: AtomicU64,
    misses: AtomicU64,
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
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, addr: u64) -> Option<Arc<Page>> {
        let p = self.cache.get(&addr);
        let counter = if p.is_some() {
            &self.hits
        } else {
            &self.misses
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
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}
