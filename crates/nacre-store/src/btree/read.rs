//! The read side: point lookups and cursors over clean (on-disk) trees.

use std::ops::Bound;
use std::sync::Arc;

use super::page::{Page, Val};
use super::write::Source;
use crate::error::{Error, Result};
use crate::record::Ptr;

/// Bound on tree height; a deeper tree means a corrupt pointer cycle.
const HEIGHT_MAX: usize = 64;

pub fn lookup(src: &dyn Source, root: Ptr, key: &[u8]) -> Result<Option<Val>> {
    Ok(find(src, root, key)?.map(|(page, i)| page.value(i).to_val()))
}

/// A page a lookup holds: borrowed when its source keeps it for as long as
/// itself (a version's root and the root's children), else a counted
/// reference from the cache. Every lookup passes the pinned pages, so
/// cloning their `Arc`s would have every reader thread write the same
/// reference counts, twice per page per lookup.
pub enum PageRef<'a> {
    Pinned(&'a Page),
    Shared(Arc<Page>),
}

impl std::ops::Deref for PageRef<'_> {
    type Target = Page;
    fn deref(&self) -> &Page {
        match self {
            PageRef::Pinned(p) => p,
            PageRef::Shared(p) => p,
        }
    }
}

/// The leaf holding `key` and its index there, if the key exists.
pub fn find<'s>(
    src: &'s dyn Source,
    root: Ptr,
    key: &[u8],
) -> Result<Option<(PageRef<'s>, usize)>> {
    let mut page = match src.pinned(root) {
        Some(p) => PageRef::Pinned(p),
        None => PageRef::Shared(src.page(root)?),
    };
    for _ in 0..HEIGHT_MAX {
        if page.is_leaf() {
            return Ok(page.search(key).ok().map(|i| (page, i)));
        }
        let i = page.child_index(key);
        let child = match src.pinned_child(&page, i) {
            Some(c) => PageRef::Pinned(c),
            None => PageRef::Shared(src.child(&page, i)?),
        };
        check_level(&page, &child)?;
        page = child;
    }
    Err(Error::corrupt(root.addr, "tree deeper than any valid tree"))
}

fn check_level(parent: &Page, child: &Page) -> Result<()> {
    // Both levels come from disk: a child claiming level 255 must be an
    // error, not an overflow.
    if child.level.checked_add(1) != Some(parent.level) {
        return Err(Error::corrupt(
            child.ptr.addr,
            "child level does not match its parent",
        ));
    }
    Ok(())
}

/// A position in a clean tree: a stack of pages from the root to a leaf.
/// For forward cursors the leaf index is the next entry to yield; for
/// reverse cursors it is one past it.
pub struct Cursor {
    stack: Vec<(Arc<Page>, usize)>,
    reverse: bool,
}

impl Cursor {
    /// Position at the first key within `start` (forward) or the last key
    /// within `start` (reverse, where `start` is the upper bound).
    pub fn seek(
        src: &dyn Source,
        root: Option<Ptr>,
        start: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<Cursor> {
        let mut cur = Cursor {
            stack: Vec::new(),
            reverse,
        };
        let Some(root) = root else { return Ok(cur) };
        let mut page = src.page(root)?;
        loop {
            if cur.stack.len() > HEIGHT_MAX {
                return Err(Error::corrupt(root.addr, "tree deeper than any valid tree"));
            }
            if page.is_leaf() {
                let pos = match (start, reverse) {
                    (Bound::Unbounded, false) => 0,
                    (Bound::Unbounded, true) => page.len(),
                    (Bound::Included(k), false) => page.search(k).unwrap_or_else(|p| p),
                    (Bound::Excluded(k), false) => page.search(k).map_or_else(|p| p, |p| p + 1),
                    (Bound::Included(k), true) => page.search(k).map_or_else(|p| p, |p| p + 1),
                    (Bound::Excluded(k), true) => page.search(k).unwrap_or_else(|p| p),
                };
                cur.stack.push((page, pos));
                return Ok(cur);
            }
            let i = match start {
                Bound::Unbounded if reverse => page.len() - 1,
                Bound::Unbounded => 0,
                Bound::Included(k) | Bound::Excluded(k) => page.child_index(k),
            };
            let child = src.child(&page, i)?;
            check_level(&page, &child)?;
            cur.stack.push((page, i));
            page = child;
        }
    }

    /// The next entry, as (leaf page, index), or `None` at the end.
    pub fn next(&mut self, src: &dyn Source) -> Result<Option<(&Page, usize)>> {
        if !self.advance(src)? {
            return Ok(None);
        }
        let (leaf, pos) = self.stack.last().expect("advance left a leaf");
        Ok(Some((leaf, if self.reverse { *pos } else { *pos - 1 })))
    }

    /// Step past the next entry; `false` at the end.
    fn advance(&mut self, src: &dyn Source) -> Result<bool> {
        loop {
            let Some((leaf, pos)) = self.stack.last_mut() else {
                return Ok(false);
            };
            if !self.reverse && *pos < leaf.len() {
                *pos += 1;
                return Ok(true);
            }
            if self.reverse && *pos > 0 {
                *pos -= 1;
                return Ok(true);
            }
            // Leaf exhausted: climb to the nearest branch with a sibling
            // left in our direction, then descend to its edge.
            self.stack.pop();
            loop {
                let Some((branch, i)) = self.stack.last_mut() else {
                    return Ok(false);
                };
                let next = if self.reverse {
                    (*i > 0).then(|| *i - 1)
                } else {
                    (*i + 1 < branch.len()).then(|| *i + 1)
                };
                match next {
                    Some(n) => {
                        *i = n;
                        let branch = branch.clone();
                        self.descend_edge(src, branch, n)?;
                        break;
                    }
                    None => {
                        self.stack.pop();
                    }
                }
            }
        }
    }

    /// Go down from child `i` of `parent` to its first (or, in reverse, last)
    /// leaf.
    fn descend_edge(&mut self, src: &dyn Source, mut parent: Arc<Page>, i: usize) -> Result<()> {
        let mut page = src.child(&parent, i)?;
        loop {
            check_level(&parent, &page)?;
            if page.is_leaf() {
                let pos = if self.reverse { page.len() } else { 0 };
                self.stack.push((page, pos));
                return Ok(());
            }
            let i = if self.reverse { page.len() - 1 } else { 0 };
            let child = src.child(&page, i)?;
            self.stack.push((page.clone(), i));
            parent = page;
            page = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;
    use crate::btree::page::{encode_branch, encode_leaf, ChildInfo};
    use crate::record::Kind;

    /// Three levels in memory: a root over two branches over four leaves.
    /// It counts what lookups ask of it, and pins the root and the root's
    /// children when `pin` is set, as a read transaction's view does.
    struct Tree {
        pages: HashMap<u64, Arc<Page>>,
        root: Arc<Page>,
        root_children: Vec<Arc<Page>>,
        pin: bool,
        counted: Cell<usize>,
    }

    impl Source for Tree {
        fn page(&self, ptr: Ptr) -> Result<Arc<Page>> {
            self.counted.set(self.counted.get() + 1);
            Ok(self.pages[&ptr.addr].clone())
        }
        fn pinned(&self, ptr: Ptr) -> Option<&Page> {
            (self.pin && ptr == self.root.ptr).then_some(&*self.root)
        }
        fn pinned_child(&self, parent: &Page, i: usize) -> Option<&Page> {
            (self.pin && parent.ptr == self.root.ptr).then(|| &*self.root_children[i])
        }
    }

    fn key(i: usize) -> Vec<u8> {
        format!("key{i:04}").into_bytes()
    }

    fn tree(pin: bool) -> Tree {
        let mut pages = HashMap::new();
        let mut addr = 0u64;
        let mut add = |kind: Kind, payload: &[u8], pages: &mut HashMap<u64, Arc<Page>>| {
            addr += 4096;
            let ptr = Ptr {
                addr,
                len: payload.len() as u32,
            };
            let page = Arc::new(Page::decode(ptr, kind, payload).unwrap());
            pages.insert(addr, page.clone());
            page
        };
        let mut out = Vec::new();
        let mut leaves = Vec::new();
        for l in 0..4 {
            let entries: Vec<(Vec<u8>, Val)> = (l * 10..l * 10 + 10)
                .map(|i| (key(i), Val::Inline(vec![i as u8; 3])))
                .collect();
            encode_leaf(&entries, &mut out);
            leaves.push(add(Kind::Leaf, &out, &mut pages));
        }
        let info = |p: &Arc<Page>| ChildInfo {
            ptr: p.ptr,
            count: 10,
            bytes: 100,
        };
        let mut mids = Vec::new();
        for m in 0..2 {
            let kids = [info(&leaves[2 * m]), info(&leaves[2 * m + 1])];
            encode_branch(1, &[key(20 * m + 10)], &kids, &mut out);
            mids.push(add(Kind::Branch, &out, &mut pages));
        }
        encode_branch(2, &[key(20)], &[info(&mids[0]), info(&mids[1])], &mut out);
        let root = add(Kind::Branch, &out, &mut pages);
        Tree {
            pages,
            root,
            root_children: mids,
            pin,
            counted: Cell::new(0),
        }
    }

    #[test]
    fn lookups_borrow_pinned_pages_and_read_only_the_rest() {
        for pin in [false, true] {
            let t = tree(pin);
            for i in 0..40 {
                t.counted.set(0);
                let (leaf, at) = find(&t, t.root.ptr, &key(i)).unwrap().expect("present");
                assert_eq!(leaf.key(at), key(i).as_slice());
                assert!(matches!(leaf, PageRef::Shared(_)), "a leaf is not pinned");
                // Unpinned: root, branch and leaf come from `page`. Pinned:
                // only the leaf does.
                assert_eq!(t.counted.get(), if pin { 1 } else { 3 }, "key {i}");
                assert_eq!(
                    lookup(&t, t.root.ptr, &key(i)).unwrap(),
                    Some(Val::Inline(vec![i as u8; 3]))
                );
            }
            assert!(find(&t, t.root.ptr, b"key0005x").unwrap().is_none());
            assert!(find(&t, t.root.ptr, b"zz").unwrap().is_none());
        }
    }

    /// Levels come from disk: a parent at level 1 whose child claims level
    /// 255 (so that `level + 1` would overflow) is corrupt, not a panic.
    #[test]
    fn a_child_at_level_255_is_corruption() {
        let mut out = Vec::new();
        let child = ChildInfo {
            ptr: Ptr { addr: 8, len: 0 },
            count: 0,
            bytes: 0,
        };
        let page = |level: u8, out: &mut Vec<u8>| {
            encode_branch(level, &[key(1)], &[child, child], out);
            Page::decode(Ptr { addr: 8, len: 0 }, Kind::Branch, out).unwrap()
        };
        let parent = page(1, &mut out);
        let top = page(255, &mut out);
        assert!(matches!(
            check_level(&parent, &top),
            Err(Error::Corruption { .. })
        ));
        let grandparent = page(2, &mut out);
        assert!(check_level(&grandparent, &parent).is_ok());
    }
}
