//! The page cache: decoded pages by log position, bounded in bytes.
//!
//! Positions are never reused (segment ids only grow), so an entry can never
//! describe anything but the record it was read from; entries of deleted
//! segments simply age out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::btree::page::Page;

#[derive(Clone)]
struct PageWeight;

impl Weighter<u64, Arc<Page>> for PageWeight {
    fn weight(&self, _key: &u64, val: &Arc<Page>) -> u64 {
        val.weight()
    }
}

pub struct PageCache {
    cache: Cache<u64, Arc<Page>, PageWeight>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PageCache {
    pub fn new(bytes_max: usize) -> PageCache {
        let items = (bytes_max / 4096).max(16);
        PageCache {
            cache: Cache::with_weighter(items, bytes_max as u64, PageWeight),
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
