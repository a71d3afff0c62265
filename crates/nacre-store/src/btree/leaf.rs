//! A leaf being changed by a write transaction.
//!
//! Copying a leaf on write used to mean two allocations per entry. Here the
//! unchanged entries stay in the clean page they came from (`Entry::Base`
//! names an index in it) and only new or replaced entries own their bytes,
//! so copy-on-write of a leaf costs one small vector.

use std::sync::Arc;

use super::page::{encode_leaf_with, search_sorted, Page, Val, ValRef, EXT_LEN, LEAF_ENTRY_HEADER};

#[derive(Debug)]
enum Entry {
    Base(u32),
    Own(Box<[u8]>, Val),
}

#[derive(Debug, Default)]
pub struct DirtyLeaf {
    base: Option<Arc<Page>>,
    entries: Vec<Entry>,
    /// Encoded payload size, kept up to date by every change.
    size: usize,
    /// Still exactly the base page's entries: searches can use the page's
    /// own (prefix-accelerated) search.
    pristine: bool,
}

/// Bytes one entry adds to a leaf's encoding (offset slot included).
fn entry_size(key: &[u8], val: ValRef<'_>) -> usize {
    let v = match val {
        ValRef::Inline(b) => b.len(),
        ValRef::Ext { .. } => EXT_LEN,
    };
    4 + LEAF_ENTRY_HEADER + key.len() + v
}

fn val_ref(v: &Val) -> ValRef<'_> {
    match v {
        Val::Inline(b) => ValRef::Inline(b),
        Val::Ext { vlen, ptr } => ValRef::Ext {
            vlen: *vlen,
            ptr: *ptr,
        },
    }
}

impl DirtyLeaf {
    pub fn new() -> DirtyLeaf {
        DirtyLeaf {
            base: None,
            entries: Vec::new(),
            size: 8,
            pristine: false,
        }
    }

    pub fn from_page(page: &Arc<Page>) -> DirtyLeaf {
        debug_assert!(page.is_leaf());
        DirtyLeaf {
            base: Some(page.clone()),
            entries: (0..page.len() as u32).map(Entry::Base).collect(),
            size: page.payload_len(),
            pristine: true,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn base(&self) -> &Page {
        self.base
            .as_deref()
            .expect("a base entry without a base page")
    }

    pub fn key(&self, i: usize) -> &[u8] {
        match &self.entries[i] {
            Entry::Base(j) => self.base().key(*j as usize),
            Entry::Own(k, _) => k,
        }
    }

    pub fn val(&self, i: usize) -> ValRef<'_> {
        match &self.entries[i] {
            Entry::Base(j) => self.base().value(*j as usize),
            Entry::Own(_, v) => val_ref(v),
        }
    }

    fn size_of(&self, i: usize) -> usize {
        entry_size(self.key(i), self.val(i))
    }

    pub fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        if let (true, Some(base)) = (self.pristine, &self.base) {
            return base.search(key);
        }
        search_sorted(0..self.entries.len(), |i| self.key(i), key)
    }

    pub fn insert(&mut self, pos: usize, key: &[u8], val: Val) {
        self.pristine = false;
        self.size += entry_size(key, val_ref(&val));
        self.entries.insert(pos, Entry::Own(key.into(), val));
    }

    /// Replace the value at `pos`; returns the old one.
    pub fn replace(&mut self, pos: usize, val: Val) -> Val {
        self.pristine = false;
        let old_size = self.size_of(pos);
        let old = self.val(pos).to_val();
        let key: Box<[u8]> = self.key(pos).into();
        self.size = self.size - old_size + entry_size(&key, val_ref(&val));
        self.entries[pos] = Entry::Own(key, val);
        old
    }

    pub fn remove(&mut self, pos: usize) -> Val {
        self.pristine = false;
        self.size -= self.size_of(pos);
        let old = self.val(pos).to_val();
        self.entries.remove(pos);
        old
    }

    /// Keep only the entries whose key passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.pristine = false;
        let mut out = Vec::with_capacity(self.entries.len());
        let mut size = 8;
        for e in std::mem::take(&mut self.entries) {
            let k = match &e {
                Entry::Base(j) => self.base().key(*j as usize),
                Entry::Own(k, _) => k,
            };
            if keep(k) {
                size += match &e {
                    Entry::Base(j) => entry_size(k, self.base().value(*j as usize)),
                    Entry::Own(k, v) => entry_size(k, val_ref(v)),
                };
                out.push(e);
            }
        }
        self.entries = out;
        self.size = size;
    }

    /// Move entries `m..` into a new leaf.
    pub fn split_off(&mut self, m: usize) -> DirtyLeaf {
        self.pristine = false;
        let entries = self.entries.split_off(m);
        let mut right = DirtyLeaf {
            base: self.base.clone(),
            entries,
            size: 8,
            pristine: false,
        };
        right.size = 8 + (0..right.len()).map(|i| right.size_of(i)).sum::<usize>();
        self.size -= right.size - 8;
        right
    }

    /// Append all of `other`, whose keys are all greater.
    pub fn append(&mut self, other: DirtyLeaf) {
        self.pristine = false;
        let same_base = match (&self.base, &other.base) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            // Without a base all our entries are owned: adopt `other`'s.
            (None, _) => {
                self.base = other.base.clone();
                true
            }
            (Some(_), None) => true,
        };
        self.size += other.size - 8;
        if same_base {
            self.entries.extend(other.entries);
        } else {
            for e in other.entries {
                self.entries.push(match e {
                    Entry::Base(j) => {
                        let b = other.base.as_deref().expect("base entry without base");
                        Entry::Own(b.key(j as usize).into(), b.value(j as usize).to_val())
                    }
                    own => own,
                });
            }
        }
    }

    /// Sum of the value records this leaf points to (aligned).
    pub fn ext_bytes(&self) -> u64 {
        (0..self.len())
            .map(|i| match self.val(i) {
                ValRef::Ext { ptr, .. } => crate::record::align_up(ptr.len as u64),
                ValRef::Inline(_) => 0,
            })
            .sum()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_leaf_with(self.len(), |i| (self.key(i), self.val(i)), out);
        debug_assert_eq!(out.len(), self.size, "leaf size bookkeeping drifted");
    }
}
