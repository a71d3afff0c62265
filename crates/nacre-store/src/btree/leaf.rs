//! A leaf being changed by a write transaction.
//!
//! Copying a leaf on write used to mean two allocations per entry. Here the
//! unchanged entries stay in the clean page they came from and only new or
//! replaced entries own their bytes. Each entry is one `u32`: an index into
//! the base page, or (with `OWN` set) into `own`. Keeping the entry table
//! that small matters: at 40 bytes an entry, a leaf's table no longer fit
//! malloc's fast per-thread bins, and allocating it showed in profiles.

use std::sync::Arc;

use super::page::{
    begin_leaf, encode_entry, search_sorted, set_entry_offset, Page, Val, ValRef, EXT_LEN,
    LEAF_ENTRY_HEADER,
};

/// Marks an entry that indexes `own` rather than the base page.
const OWN: u32 = 1 << 31;

#[derive(Debug, Default)]
pub struct DirtyLeaf {
    base: Option<Arc<Page>>,
    entries: Vec<u32>,
    /// Entries this transaction wrote. Slots of removed entries stay (empty)
    /// until the leaf is written: the transaction's size limit bounds them.
    own: Vec<(Box<[u8]>, Val)>,
    /// Encoded payload size, kept up to date by every change.
    size: usize,
    /// Still exactly the base page's entries: searches can use the page's
    /// own (prefix-accelerated) search.
    pristine: bool,
}

/// A leaf's vectors without their contents.
#[derive(Debug, Default)]
pub struct LeafVecs {
    entries: Vec<u32>,
    own: Vec<(Box<[u8]>, Val)>,
}

/// Bytes one entry adds to a leaf's encoding (offset slot included).
fn entry_size(key: &[u8], val: ValRef<'_>) -> usize {
    let v = match val {
        ValRef::Inline(b) => b.len(),
        ValRef::Ext { .. } => EXT_LEN,
    };
    4 + LEAF_ENTRY_HEADER + key.len() + v
}

impl DirtyLeaf {
    pub fn new() -> DirtyLeaf {
        DirtyLeaf {
            base: None,
            entries: Vec::new(),
            own: Vec::new(),
            size: 8,
            pristine: false,
        }
    }

    pub fn from_page(page: &Arc<Page>) -> DirtyLeaf {
        DirtyLeaf::from_page_reusing(page, LeafVecs::default())
    }

    /// `from_page`, in vectors a written leaf left behind (see `into_vecs`).
    pub fn from_page_reusing(page: &Arc<Page>, vecs: LeafVecs) -> DirtyLeaf {
        debug_assert!(page.is_leaf());
        assert!((page.len() as u64) < OWN as u64, "leaf entry count");
        let LeafVecs { mut entries, own } = vecs;
        debug_assert!(entries.is_empty() && own.is_empty());
        entries.extend(0..page.len() as u32);
        DirtyLeaf {
            base: Some(page.clone()),
            entries,
            own,
            size: page.payload_len(),
            pristine: true,
        }
    }

    /// The leaf's vectors, emptied, for the next leaf a transaction copies:
    /// a commit of random puts copies about a thousand leaves, and making
    /// these vectors afresh for each showed in profiles as malloc's slow
    /// path.
    pub fn into_vecs(self) -> LeafVecs {
        let DirtyLeaf {
            mut entries,
            mut own,
            ..
        } = self;
        entries.clear();
        own.clear();
        LeafVecs { entries, own }
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
        let e = self.entries[i];
        if e & OWN != 0 {
            &self.own[(e & !OWN) as usize].0
        } else {
            self.base().key(e as usize)
        }
    }

    pub fn val(&self, i: usize) -> ValRef<'_> {
        let e = self.entries[i];
        if e & OWN != 0 {
            self.own[(e & !OWN) as usize].1.as_ref()
        } else {
            self.base().value(e as usize)
        }
    }

    fn size_of(&self, i: usize) -> usize {
        entry_size(self.key(i), self.val(i))
    }

    /// Move an owned entry out of its slot, leaving the slot empty.
    fn take_own(&mut self, e: u32) -> (Box<[u8]>, Val) {
        debug_assert!(e & OWN != 0);
        let slot = &mut self.own[(e & !OWN) as usize];
        std::mem::replace(slot, (Box::default(), Val::Inline(Vec::new())))
    }

    fn push_own(&mut self, key: Box<[u8]>, val: Val) -> u32 {
        let i = self.own.len() as u32;
        assert!(i < OWN, "too many entries written to one leaf");
        self.own.push((key, val));
        OWN | i
    }

    pub fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        if let (true, Some(base)) = (self.pristine, &self.base) {
            return base.search(key);
        }
        search_sorted(0..self.entries.len(), |i| self.key(i), key)
    }

    pub fn insert(&mut self, pos: usize, key: &[u8], val: Val) {
        self.pristine = false;
        self.size += entry_size(key, val.as_ref());
        let e = self.push_own(key.into(), val);
        self.entries.insert(pos, e);
    }

    /// Replace the value at `pos`.
    pub fn replace(&mut self, pos: usize, val: Val) {
        self.pristine = false;
        let old_size = self.size_of(pos);
        let e = self.entries[pos];
        if e & OWN != 0 {
            // Replacing an entry this transaction wrote reuses its slot, so
            // overwriting one key again and again does not grow `own`.
            let slot = &mut self.own[(e & !OWN) as usize];
            self.size = self.size - old_size + entry_size(&slot.0, val.as_ref());
            slot.1 = val;
        } else {
            let key: Box<[u8]> = self.key(pos).into();
            self.size = self.size - old_size + entry_size(&key, val.as_ref());
            self.entries[pos] = self.push_own(key, val);
        }
    }

    pub fn remove(&mut self, pos: usize) -> Val {
        self.pristine = false;
        self.size -= self.size_of(pos);
        let e = self.entries.remove(pos);
        if e & OWN != 0 {
            self.take_own(e).1
        } else {
            self.base().value(e as usize).to_val()
        }
    }

    /// Keep only the entries whose key passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.pristine = false;
        let mut out = Vec::with_capacity(self.entries.len());
        let mut size = 8;
        for i in 0..self.entries.len() {
            if keep(self.key(i)) {
                size += self.size_of(i);
                out.push(self.entries[i]);
            }
        }
        self.entries = out;
        self.size = size;
    }

    /// Move entries `m..` into a new leaf.
    pub fn split_off(&mut self, m: usize) -> DirtyLeaf {
        self.pristine = false;
        let moved = self.entries.split_off(m);
        let mut right = DirtyLeaf {
            base: self.base.clone(),
            entries: Vec::with_capacity(moved.len()),
            own: Vec::new(),
            size: 8,
            pristine: false,
        };
        for e in moved {
            let e = if e & OWN != 0 {
                let (k, v) = self.take_own(e);
                right.push_own(k, v)
            } else {
                e
            };
            right.entries.push(e);
        }
        right.size = 8 + (0..right.len()).map(|i| right.size_of(i)).sum::<usize>();
        self.size -= right.size - 8;
        right
    }

    /// Append all of `other`, whose keys are all greater.
    pub fn append(&mut self, mut other: DirtyLeaf) {
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
        for i in 0..other.entries.len() {
            let e = other.entries[i];
            let e = if e & OWN != 0 {
                let (k, v) = other.take_own(e);
                self.push_own(k, v)
            } else if same_base {
                e
            } else {
                let b = other.base.as_deref().expect("base entry without base");
                let (k, v) = (b.key(e as usize).into(), b.value(e as usize).to_val());
                self.push_own(k, v)
            };
            self.entries.push(e);
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

    /// Append the encoded leaf to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let n = self.len();
        // Entries from the base page are copied as they are encoded there
        // (decoding and re-encoding each was a tenth of a batched commit's
        // instructions), and a run of consecutive base entries, most of a
        // leaf that took one put, is one copy plus a shift of its offsets
        // (copying entry by entry was a tenth of a random-order insert's
        // time).
        let table = begin_leaf(n, out);
        let mut i = 0;
        while i < n {
            let e = self.entries[i];
            if e & OWN != 0 {
                let at = out.len();
                set_entry_offset(out, table, i, at);
                let (k, v) = &self.own[(e & !OWN) as usize];
                encode_entry(k, v.as_ref(), out);
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < n && self.entries[j] == e + (j - i) as u32 {
                j += 1;
            }
            let base = self.base();
            let first = e as usize;
            let (from, bytes) = base.entries_bytes(first, first + (j - i));
            let at = out.len();
            for k in i..j {
                set_entry_offset(out, table, k, at + base.entry_offset(first + k - i) - from);
            }
            out.extend_from_slice(bytes);
            i = j;
        }
        debug_assert_eq!(
            out.len() - start,
            self.size,
            "leaf size bookkeeping drifted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::page::encode_leaf;
    use crate::record::{Kind, Ptr};

    fn base(keys: &[&str]) -> Arc<Page> {
        let entries: Vec<(Vec<u8>, Val)> = keys
            .iter()
            .map(|k| (k.as_bytes().to_vec(), Val::Inline(k.as_bytes().to_vec())))
            .collect();
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        Arc::new(Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap())
    }

    fn contents(l: &DirtyLeaf) -> Vec<(String, String)> {
        (0..l.len())
            .map(|i| {
                let ValRef::Inline(v) = l.val(i) else {
                    panic!("inline values only")
                };
                (
                    String::from_utf8(l.key(i).to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn encoded_size(l: &DirtyLeaf) -> usize {
        let mut out = Vec::new();
        l.encode(&mut out);
        out.len()
    }

    #[test]
    fn own_and_base_entries_survive_split_and_append() {
        let mut l = DirtyLeaf::from_page(&base(&["b", "d", "f", "h"]));
        l.insert(0, b"a", Val::Inline(b"A".to_vec()));
        l.replace(3, Val::Inline(b"F".to_vec()));
        l.insert(4, b"g", Val::Inline(b"G".to_vec()));
        assert_eq!(l.remove(2), Val::Inline(b"d".to_vec()));
        let want = [("a", "A"), ("b", "b"), ("f", "F"), ("g", "G"), ("h", "h")];
        let as_strings = |w: &[(&str, &str)]| -> Vec<(String, String)> {
            w.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(contents(&l), as_strings(&want));
        assert_eq!(encoded_size(&l), l.size());

        let right = l.split_off(2);
        assert_eq!(contents(&l), as_strings(&want[..2]));
        assert_eq!(contents(&right), as_strings(&want[2..]));
        assert_eq!(encoded_size(&l), l.size());
        assert_eq!(encoded_size(&right), right.size());

        // Append a leaf built on another base: its base entries are copied.
        let mut other = DirtyLeaf::from_page(&base(&["x", "y"]));
        other.replace(1, Val::Inline(b"Y".to_vec()));
        let mut joined = right;
        joined.append(other);
        let mut all = as_strings(&want[2..]);
        all.extend(as_strings(&[("x", "x"), ("y", "Y")]));
        assert_eq!(contents(&joined), all);
        assert_eq!(encoded_size(&joined), joined.size());
    }

    #[test]
    fn an_encoded_leaf_decodes_to_its_entries() {
        // Base entries are copied as encoded bytes; mix them with own ones,
        // and with values kept inline and in records of their own.
        let ext = Val::Ext {
            vlen: 70_000,
            ptr: Ptr {
                addr: 1 << 40,
                len: 70_016,
            },
        };
        let entries = vec![
            (b"b".to_vec(), Val::Inline(b"bee".to_vec())),
            (b"d".to_vec(), ext.clone()),
            (b"f".to_vec(), Val::Inline(Vec::new())),
            (b"h".to_vec(), Val::Inline(b"aitch".to_vec())),
        ];
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        let page = Arc::new(Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap());
        let mut l = DirtyLeaf::from_page(&page);
        l.insert(0, b"a", ext.clone());
        l.replace(3, Val::Inline(b"F".to_vec()));
        l.insert(3, b"e", Val::Inline(b"E".to_vec()));
        let mut out = Vec::new();
        l.encode(&mut out);
        assert_eq!(out.len(), l.size());
        let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &out).unwrap();
        let got: Vec<(Vec<u8>, Val)> = (0..p.len())
            .map(|i| (p.key(i).to_vec(), p.value(i).to_val()))
            .collect();
        let want = vec![
            (b"a".to_vec(), ext.clone()),
            (b"b".to_vec(), Val::Inline(b"bee".to_vec())),
            (b"d".to_vec(), ext),
            (b"e".to_vec(), Val::Inline(b"E".to_vec())),
            (b"f".to_vec(), Val::Inline(b"F".to_vec())),
            (b"h".to_vec(), Val::Inline(b"aitch".to_vec())),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn encoding_by_runs_matches_encoding_entry_by_entry() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(5);
        for round in 0..300 {
            let n = rng.random_range(1..80);
            let mut keys: Vec<Vec<u8>> = (0..n)
                .map(|_| (0..rng.random_range(1..12)).map(|_| rng.random()).collect())
                .collect();
            keys.sort();
            keys.dedup();
            let entries: Vec<(Vec<u8>, Val)> = keys
                .iter()
                .map(|k| (k.clone(), Val::Inline(vec![k[0]; rng.random_range(0..40)])))
                .collect();
            let mut buf = Vec::new();
            encode_leaf(&entries, &mut buf);
            let page = Arc::new(Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap());
            let mut l = DirtyLeaf::from_page(&page);
            for _ in 0..rng.random_range(0..6) {
                let pos = rng.random_range(0..l.len());
                match rng.random_range(0..3) {
                    0 => l.replace(pos, Val::Inline(vec![7; rng.random_range(0..30)])),
                    1 if l.len() > 1 => {
                        l.remove(pos);
                    }
                    _ => {
                        // A key just below entry `pos`: the previous key
                        // with a zero byte added sorts between the two.
                        let mut k = if pos == 0 {
                            Vec::new()
                        } else {
                            l.key(pos - 1).to_vec()
                        };
                        k.push(0);
                        if k.as_slice() < l.key(pos) {
                            l.insert(pos, &k, Val::Inline(vec![9; 5]));
                        }
                    }
                }
            }
            let mut got = Vec::new();
            l.encode(&mut got);
            let now: Vec<(Vec<u8>, Val)> = (0..l.len())
                .map(|i| (l.key(i).to_vec(), l.val(i).to_val()))
                .collect();
            let mut want = Vec::new();
            encode_leaf(&now, &mut want);
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn replacing_a_written_entry_reuses_its_slot() {
        let mut l = DirtyLeaf::from_page(&base(&["k"]));
        for i in 0..100u32 {
            l.replace(0, Val::Inline(i.to_le_bytes().to_vec()));
        }
        assert_eq!(
            l.own.len(),
            1,
            "one slot for one key however often it is set"
        );
        assert_eq!(l.val(0).to_val(), Val::Inline(99u32.to_le_bytes().to_vec()));
        assert_eq!(encoded_size(&l), l.size());
    }
}
