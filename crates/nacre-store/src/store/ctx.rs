//! How a transaction reaches pages: `Ctx` reads them through the cache
//! (serving a version's root and its children without a lookup), and
//! `LogSink` appends the nodes a commit writes.

use std::sync::{Arc, OnceLock};

use super::Inner;
use crate::btree::page::Page;
use crate::btree::write::{Sink, Source};
use crate::error::{Error, Result};
use crate::log::SegTable;
use crate::record::{Kind, Ptr, Reader, HEADER_LEN};

/// Reads pages through the cache. The writer may read records it appended
/// but has not yet handed to the OS, so it flushes first.
pub(crate) struct Ctx<'a> {
    pub inner: &'a Inner,
    pub segs: &'a SegTable,
    pub writer: bool,
    /// A page to serve without a cache lookup (a version's root)...
    pub pinned: Option<&'a Arc<Page>>,
    /// ...and slots for its children.
    pub pinned_children: Option<&'a [OnceLock<Arc<Page>>]>,
}

impl Ctx<'_> {
    /// The page at `ptr`, from the cache or else from the log; a page read
    /// from the log goes into the cache if `keep`.
    fn fetch(&self, ptr: Ptr, keep: bool) -> Result<Arc<Page>> {
        if let Some(p) = self.pinned_root(ptr) {
            return Ok(p.clone());
        }
        if let Some(p) = self.inner.cache.get(ptr.addr) {
            if p.ptr != ptr {
                return Err(Error::corrupt(
                    ptr.addr,
                    "pointer length disagrees with the record",
                ));
            }
            return Ok(p);
        }
        if self.writer {
            self.inner.log.ensure_readable(ptr)?;
        }
        let (kind, record) = self.inner.log.read_record_raw(self.segs, ptr)?;
        let page = Arc::new(Page::decode_owned(ptr, kind, record, HEADER_LEN)?);
        if keep {
            self.inner.cache.insert(page.clone());
        }
        Ok(page)
    }
}

impl Source for Ctx<'_> {
    fn page(&self, ptr: Ptr) -> Result<Arc<Page>> {
        self.fetch(ptr, true)
    }

    /// Not cached when read from the log: the commit writes (and caches)
    /// the page's successor, and a superseded page in the cache would only
    /// push out pages that are still current. Random writes into a store
    /// larger than the cache read most of the leaves they copy.
    fn page_to_copy(&self, ptr: Ptr) -> Result<Arc<Page>> {
        self.fetch(ptr, false)
    }

    fn pinned(&self, ptr: Ptr) -> Option<&Page> {
        self.pinned_root(ptr).map(|p| &**p)
    }

    fn pinned_child(&self, parent: &Page, i: usize) -> Option<&Page> {
        self.pinned_slot(parent, i)?.get().map(|p| &**p)
    }

    fn child(&self, parent: &Page, i: usize) -> Result<Arc<Page>> {
        let ptr = parent.child(i).ptr;
        let slot = self.pinned_slot(parent, i);
        let Some(slot) = slot else {
            return self.page(ptr);
        };
        if let Some(p) = slot.get() {
            return Ok(p.clone());
        }
        let p = self.page(ptr)?;
        let _ = slot.set(p.clone());
        Ok(p)
    }
}

impl<'a> Ctx<'a> {
    /// The pinned root, if it is the page at `ptr`.
    fn pinned_root(&self, ptr: Ptr) -> Option<&'a Arc<Page>> {
        self.pinned.filter(|p| p.ptr == ptr)
    }

    /// The slot that keeps child `i` of `parent`, if `parent` is the
    /// pinned root.
    fn pinned_slot(&self, parent: &Page, i: usize) -> Option<&OnceLock<Arc<Page>>> {
        match (self.pinned, self.pinned_children) {
            (Some(root), Some(slots)) if root.ptr == parent.ptr => slots.get(i),
            _ => None,
        }
    }

    /// Read a value record and check that it belongs to `key`.
    pub fn value(&self, ptr: Ptr, vlen: u32, key: &[u8]) -> Result<Vec<u8>> {
        if self.writer {
            self.inner.log.ensure_readable(ptr)?;
        }
        let (kind, mut payload) = self.inner.log.read_record(self.segs, ptr)?;
        if kind != Kind::Value {
            return Err(Error::corrupt(
                ptr.addr,
                "value pointer leads to a non-value record",
            ));
        }
        let mut r = Reader::new(&payload, ptr.addr);
        let klen = r.u32()? as usize;
        let stored_key = r.bytes(klen)?;
        if stored_key != key || payload.len() - 4 - klen != vlen as usize {
            return Err(Error::corrupt(
                ptr.addr,
                "value record belongs to another key",
            ));
        }
        payload.drain(..4 + klen);
        Ok(payload)
    }
}

/// Appends a transaction's records and counts what it wrote.
pub(crate) struct LogSink<'a> {
    pub inner: &'a Inner,
    pub written: u64,
}

impl Sink for LogSink<'_> {
    fn append_node(&mut self, kind: Kind, rec: Vec<u8>) -> Result<Ptr> {
        let p = self.inner.append_node(kind, rec, true)?;
        self.written += crate::record::align_up(p.len as u64);
        Ok(p)
    }
}

impl Inner {
    pub fn ctx<'a>(&'a self, segs: &'a SegTable, writer: bool) -> Ctx<'a> {
        Ctx {
            inner: self,
            segs,
            writer,
            pinned: None,
            pinned_children: None,
        }
    }
}
