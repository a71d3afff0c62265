//! The separator keys of a branch being changed by a write transaction.
//!
//! As with leaves (`leaf.rs`), separators the transaction has not touched
//! stay in the clean page they came from, so copying a branch on write
//! costs one small vector instead of an allocation per separator.

use std::ops::Range;
use std::sync::Arc;

use super::page::{branch_entry_size, search_sorted, Page};

#[derive(Debug)]
pub enum Sep {
    Base(u32),
    Own(Box<[u8]>),
}

#[derive(Debug, Default)]
pub struct SepKeys {
    base: Option<Arc<Page>>,
    keys: Vec<Sep>,
    /// Sum of `branch_entry_size` over the separators.
    bytes: usize,
    /// Still exactly the base page's separators: searches can use the
    /// page's own (prefix-accelerated) search.
    pristine: bool,
}

impl SepKeys {
    /// The page's separators, in `keys` (an empty vector to reuse).
    pub fn from_page(page: &Arc<Page>, mut keys: Vec<Sep>) -> SepKeys {
        debug_assert!(!page.is_leaf());
        debug_assert!(keys.is_empty());
        let n = page.len() - 1;
        keys.extend((0..n as u32).map(Sep::Base));
        let mut s = SepKeys {
            base: Some(page.clone()),
            keys,
            bytes: 0,
            pristine: true,
        };
        s.bytes = (0..n).map(|i| branch_entry_size(s.get(i))).sum();
        s
    }

    pub fn one(key: Vec<u8>) -> SepKeys {
        let mut s = SepKeys::default();
        s.push(key);
        s
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The emptied vector, for reuse.
    pub fn into_vec(mut self) -> Vec<Sep> {
        self.keys.clear();
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Sum of the separators' contributions to the branch's encoding.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, i: usize) -> &[u8] {
        match &self.keys[i] {
            Sep::Base(j) => self
                .base
                .as_deref()
                .expect("base separator without base page")
                .sep(*j as usize),
            Sep::Own(k) => k,
        }
    }

    /// The child index for `key`: how many separators are <= key.
    pub fn index(&self, key: &[u8]) -> usize {
        if let (true, Some(base)) = (self.pristine, &self.base) {
            return base.child_index(key);
        }
        match search_sorted(0..self.keys.len(), |i| self.get(i), key) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    pub fn insert(&mut self, i: usize, key: Vec<u8>) {
        self.pristine = false;
        self.bytes += branch_entry_size(&key);
        self.keys.insert(i, Sep::Own(key.into_boxed_slice()));
    }

    pub fn push(&mut self, key: Vec<u8>) {
        let n = self.keys.len();
        self.insert(n, key);
    }

    pub fn remove(&mut self, i: usize) -> Vec<u8> {
        self.pristine = false;
        let k = self.get(i).to_vec();
        self.bytes -= branch_entry_size(&k);
        self.keys.remove(i);
        k
    }

    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let n = self.keys.len();
        (n > 0).then(|| self.remove(n - 1))
    }

    pub fn drain(&mut self, r: Range<usize>) {
        self.pristine = false;
        let gone: usize = r.clone().map(|i| branch_entry_size(self.get(i))).sum();
        self.bytes -= gone;
        self.keys.drain(r);
    }

    pub fn split_off(&mut self, m: usize) -> SepKeys {
        self.pristine = false;
        let keys = self.keys.split_off(m);
        let mut right = SepKeys {
            base: self.base.clone(),
            keys,
            bytes: 0,
            pristine: false,
        };
        right.bytes = (0..right.len())
            .map(|i| branch_entry_size(right.get(i)))
            .sum();
        self.bytes -= right.bytes;
        right
    }

    /// Append `other`'s separators (all greater than ours).
    pub fn append(&mut self, other: SepKeys) {
        self.pristine = false;
        let same_base = match (&self.base, &other.base) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, _) if self.keys.iter().all(|k| matches!(k, Sep::Own(_))) => {
                self.base = other.base.clone();
                true
            }
            (_, None) => true,
            _ => false,
        };
        self.bytes += other.bytes;
        if same_base {
            self.keys.extend(other.keys);
        } else {
            for i in 0..other.len() {
                self.keys.push(Sep::Own(other.get(i).into()));
            }
        }
    }
}
