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

/// The leaf holding `key` and its index there, if the key exists.
pub fn find(src: &dyn Source, root: Ptr, key: &[u8]) -> Result<Option<(Arc<Page>, usize)>> {
    let mut page = src.page(root)?;
    for _ in 0..HEIGHT_MAX {
        if page.is_leaf() {
            return Ok(page.search(key).ok().map(|i| (page, i)));
        }
        let child = src.child(&page, page.child_index(key))?;
        check_level(&page, &child)?;
        page = child;
    }
    Err(Error::corrupt(root.addr, "tree deeper than any valid tree"))
}

fn check_level(parent: &Page, child: &Page) -> Result<()> {
    if child.level + 1 != parent.level {
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
