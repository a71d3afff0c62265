//! The write side: a copy-on-write B+tree whose changed nodes live in an
//! arena until the transaction writes them out (at commit, or early when the
//! transaction grows past its dirty-memory budget).
//!
//! Invariants kept for every tree written to disk:
//! * every node except the root is non-empty; every branch except the root
//!   has at least two children; a root branch has at least two children;
//! * keys are strictly increasing, separators bound their children;
//! * each child pointer carries the exact key count of its subtree.

//!
//! Restoring the invariants after a change is in `write/rebalance.rs`,
//! writing the tree out in `write/flush.rs`.

use std::ops::Bound;
use std::sync::Arc;

use super::leaf::{DirtyLeaf, LeafVecs};
use super::page::{common_len, ChildInfo, Page, Val, CHILD_LEN};
use super::seps::{Sep, SepKeys};
use crate::error::{Error, Result};
use crate::record::{Kind, Ptr};

mod flush;
mod rebalance;

/// Where the write side gets clean pages from.
pub trait Source {
    fn page(&self, ptr: Ptr) -> Result<Arc<Page>>;

    /// Child `i` of `parent`; a source may serve the root's children from
    /// somewhere cheaper than the cache.
    fn child(&self, parent: &Page, i: usize) -> Result<Arc<Page>> {
        self.page(parent.child(i).ptr)
    }

    /// A page a write transaction is about to copy on write. The commit
    /// supersedes it, so a source need not keep it (in a cache) for later.
    fn page_to_copy(&self, ptr: Ptr) -> Result<Arc<Page>> {
        self.page(ptr)
    }

    /// The page at `ptr` if the source holds it for as long as itself, so
    /// that a lookup may borrow it instead of counting a reference.
    fn pinned(&self, _ptr: Ptr) -> Option<&Page> {
        None
    }

    /// Child `i` of `parent`, if the source holds it likewise (and has it
    /// already: `child` is what reads it).
    fn pinned_child(&self, _parent: &Page, _i: usize) -> Option<&Page> {
        None
    }
}

/// Where it writes nodes to.
pub trait Sink {
    /// Append one node record. `rec` holds the payload after
    /// `HEADER_LEN` bytes left for the record header, so that the sink can
    /// keep the buffer (as the cached page) without copying it.
    fn append_node(&mut self, kind: Kind, rec: Vec<u8>) -> Result<Ptr>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    Clean(Ptr),
    Dirty(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub r: NodeRef,
    pub count: u64,
    /// Log footprint of the subtree; exact for clean children, recomputed
    /// when dirty ones are written.
    pub bytes: u64,
}

impl Child {
    fn clean(c: ChildInfo) -> Child {
        Child {
            r: NodeRef::Clean(c.ptr),
            count: c.count,
            bytes: c.bytes,
        }
    }
}

#[derive(Debug)]
pub struct BranchNode {
    level: u8,
    keys: SepKeys,
    children: Vec<Child>,
}

#[derive(Debug)]
enum Node {
    Leaf(DirtyLeaf),
    Branch(BranchNode),
    /// A slot whose node was written out or merged away.
    Gone,
}

/// The vectors of branches already written, kept for the next branches a
/// transaction copies: a branch's child and separator tables (2-3 KiB) are
/// past malloc's fast per-thread bins, and a commit of 1,000 random puts
/// copies some 600 branches. Kept by the store between transactions.
#[derive(Debug, Default)]
pub struct Spares {
    /// The node arena, empty, with the capacity the last transaction grew.
    arena: Vec<Node>,
    children: Vec<Vec<Child>>,
    seps: Vec<Vec<Sep>>,
    leaves: Vec<LeafVecs>,
}

/// Vectors kept at most, of each kind.
const SPARES_MAX: usize = 1024;

impl Spares {
    fn keep(&mut self, b: BranchNode) {
        if self.children.len() < SPARES_MAX {
            let mut c = b.children;
            c.clear();
            self.children.push(c);
        }
        if self.seps.len() < SPARES_MAX {
            self.seps.push(b.keys.into_vec());
        }
    }

    fn keep_leaf(&mut self, l: DirtyLeaf) {
        if self.leaves.len() < SPARES_MAX {
            self.leaves.push(l.into_vecs());
        }
    }

    fn node_from_page(&mut self, p: &Arc<Page>) -> Node {
        if p.is_leaf() {
            let vecs = self.leaves.pop().unwrap_or_default();
            return Node::Leaf(DirtyLeaf::from_page_reusing(p, vecs));
        }
        let mut children = self.children.pop().unwrap_or_default();
        children.extend((0..p.len()).map(|i| Child::clean(p.child(i))));
        Node::Branch(BranchNode {
            level: p.level,
            keys: SepKeys::from_page(p, self.seps.pop().unwrap_or_default()),
            children,
        })
    }
}

impl Node {
    fn size(&self) -> usize {
        match self {
            Node::Leaf(e) => e.size(),
            Node::Branch(b) => 8 + CHILD_LEN + b.keys.bytes(),
            Node::Gone => 0,
        }
    }

    fn count(&self) -> u64 {
        match self {
            Node::Leaf(e) => e.len() as u64,
            Node::Branch(b) => b.children.iter().map(|c| c.count).sum(),
            Node::Gone => 0,
        }
    }

    fn level(&self) -> u8 {
        match self {
            Node::Leaf(_) => 0,
            Node::Branch(b) => b.level,
            Node::Gone => unreachable!("level of a gone node"),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Node::Leaf(e) => e.is_empty(),
            Node::Branch(b) => b.children.is_empty(),
            Node::Gone => true,
        }
    }

    /// Not allowed below the root.
    fn is_invalid(&self) -> bool {
        match self {
            Node::Leaf(e) => e.is_empty(),
            Node::Branch(b) => b.children.len() < 2,
            Node::Gone => true,
        }
    }
}

fn branch_index(keys: &SepKeys, key: &[u8]) -> usize {
    keys.index(key)
}

/// The shortest key `s` with `left < s <= right` (for `left < right`): a
/// prefix of `right`. A separator only has to bound its children, not be a
/// key, and random keys differ within their first few bytes, so branches
/// keep a few bytes per child instead of whole keys: more children per
/// branch, fewer branches to copy on write, a shallower tree.
fn shortest_separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    debug_assert!(left < right);
    let common = common_len(left, right);
    let sep = right[..(common + 1).min(right.len())].to_vec();
    debug_assert!(left < sep.as_slice() && sep.as_slice() <= right);
    sep
}

pub fn in_range(k: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(x) => k >= x,
        Bound::Excluded(x) => k > x,
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(y) => k <= y,
        Bound::Excluded(y) => k < y,
    };
    above && below
}

/// Does `[lo, hi]` cover every key a child bounded by `[clo, chi)` can hold?
fn covers(lo: Bound<&[u8]>, hi: Bound<&[u8]>, clo: Option<&[u8]>, chi: Option<&[u8]>) -> bool {
    let low_ok = match (lo, clo) {
        (Bound::Unbounded, _) => true,
        (_, None) => false,
        (Bound::Included(x), Some(l)) => x <= l,
        (Bound::Excluded(x), Some(l)) => x < l,
    };
    let high_ok = match (hi, chi) {
        (Bound::Unbounded, _) => true,
        (_, None) => false,
        (Bound::Included(y) | Bound::Excluded(y), Some(u)) => u <= y,
    };
    low_ok && high_ok
}

pub struct Tree {
    pub root: Option<Child>,
    arena: Vec<Node>,
    /// Arena slots that no longer hold a node.
    gone: usize,
    node_size: usize,
    spares: Spares,
    /// Positions of the clean nodes this transaction copied on write: once
    /// it commits, they are superseded.
    superseded: Vec<u64>,
}

impl Tree {
    pub fn new(root: Option<ChildInfo>, node_size: usize, mut spares: Spares) -> Tree {
        let arena = std::mem::take(&mut spares.arena);
        debug_assert!(arena.is_empty());
        Tree {
            root: root.map(Child::clean),
            arena,
            gone: 0,
            node_size,
            spares,
            superseded: Vec::new(),
        }
    }

    /// The positions of the nodes this transaction copied on write so far.
    pub fn take_superseded(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.superseded)
    }

    pub fn count(&self) -> u64 {
        self.root.map_or(0, |c| c.count)
    }

    /// The reusable vectors, for the next transaction.
    pub fn take_spares(&mut self) -> Spares {
        let mut spares = std::mem::take(&mut self.spares);
        let mut arena = std::mem::take(&mut self.arena);
        arena.clear();
        spares.arena = arena;
        spares
    }

    /// A rough measure of memory held by dirty nodes.
    pub fn dirty_bytes(&self) -> usize {
        (self.arena.len() - self.gone) * self.node_size
    }

    fn retire(&mut self, idx: usize) -> Node {
        self.gone += 1;
        std::mem::replace(&mut self.arena[idx], Node::Gone)
    }

    pub fn is_dirty(&self) -> bool {
        matches!(
            self.root,
            Some(Child {
                r: NodeRef::Dirty(_),
                ..
            })
        )
    }

    fn push(&mut self, n: Node) -> usize {
        self.arena.push(n);
        self.arena.len() - 1
    }

    fn branch(&self, idx: usize) -> &BranchNode {
        match &self.arena[idx] {
            Node::Branch(b) => b,
            _ => unreachable!("expected a branch"),
        }
    }

    fn branch_mut(&mut self, idx: usize) -> &mut BranchNode {
        match &mut self.arena[idx] {
            Node::Branch(b) => b,
            _ => unreachable!("expected a branch"),
        }
    }

    fn dirty_root(&mut self, src: &dyn Source) -> Result<usize> {
        let root = self.root.as_mut().expect("dirty_root of an empty tree");
        match root.r {
            NodeRef::Dirty(i) => Ok(i),
            NodeRef::Clean(ptr) => {
                let page = src.page_to_copy(ptr)?;
                let node = self.spares.node_from_page(&page);
                self.superseded.push(ptr.addr);
                let idx = self.push(node);
                self.root.as_mut().unwrap().r = NodeRef::Dirty(idx);
                Ok(idx)
            }
        }
    }

    fn dirty_child(&mut self, src: &dyn Source, parent: usize, i: usize) -> Result<usize> {
        match self.branch(parent).children[i].r {
            NodeRef::Dirty(c) => Ok(c),
            NodeRef::Clean(ptr) => {
                let page = src.page_to_copy(ptr)?;
                let node = self.spares.node_from_page(&page);
                self.superseded.push(ptr.addr);
                let idx = self.push(node);
                self.branch_mut(parent).children[i].r = NodeRef::Dirty(idx);
                Ok(idx)
            }
        }
    }

    pub fn get(&self, src: &dyn Source, key: &[u8]) -> Result<Option<Val>> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        let mut r = root.r;
        loop {
            match r {
                NodeRef::Clean(ptr) => return super::read::lookup(src, ptr, key),
                NodeRef::Dirty(idx) => match &self.arena[idx] {
                    Node::Branch(b) => r = b.children[branch_index(&b.keys, key)].r,
                    Node::Leaf(e) => return Ok(e.search(key).ok().map(|p| e.val(p).to_val())),
                    Node::Gone => unreachable!("gone node reachable"),
                },
            }
        }
    }

    /// Descend to the leaf for `key`, making the path dirty.
    fn dirty_path(&mut self, src: &dyn Source, key: &[u8]) -> Result<(usize, Vec<(usize, usize)>)> {
        let mut idx = self.dirty_root(src)?;
        let mut path = Vec::new();
        while let Node::Branch(b) = &self.arena[idx] {
            let i = branch_index(&b.keys, key);
            let c = self.dirty_child(src, idx, i)?;
            path.push((idx, i));
            idx = c;
        }
        Ok((idx, path))
    }

    /// Insert or replace; returns whether `key` was there before. (The old
    /// value is not returned: no caller wants it, and copying it out cost a
    /// few percent of batched writes.)
    pub fn put(&mut self, src: &dyn Source, key: &[u8], val: Val) -> Result<bool> {
        if self.root.is_none() {
            let idx = self.push(Node::Leaf(DirtyLeaf::new()));
            self.root = Some(Child {
                r: NodeRef::Dirty(idx),
                count: 0,
                bytes: 0,
            });
        }
        let (leaf, path) = self.dirty_path(src, key)?;
        let Node::Leaf(entries) = &mut self.arena[leaf] else {
            unreachable!()
        };
        let (replaced, pos) = match entries.search(key) {
            Ok(p) => {
                entries.replace(p, val);
                (true, p)
            }
            Err(p) => {
                entries.insert(p, key, val);
                (false, p)
            }
        };
        let at_end = pos + 1 == entries.len();
        if !replaced {
            for &(b, i) in &path {
                self.branch_mut(b).children[i].count += 1;
            }
            self.root.as_mut().unwrap().count += 1;
        }
        self.split_up(leaf, path, at_end);
        self.debug_check("put");
        Ok(replaced)
    }

    /// Remove `key`; returns the old value.
    pub fn delete(&mut self, src: &dyn Source, key: &[u8]) -> Result<Option<Val>> {
        // Look first, so that deleting a missing key copies nothing.
        if self.get(src, key)?.is_none() {
            return Ok(None);
        }
        let (leaf, path) = self.dirty_path(src, key)?;
        let Node::Leaf(entries) = &mut self.arena[leaf] else {
            unreachable!()
        };
        // `get` and the path walk search the same pages, so they agree on
        // any tree this code wrote; they can differ only on a corrupt one
        // (keys out of order), read back from disk.
        let p = entries
            .search(key)
            .map_err(|_| Error::corrupt(0, "a key the lookup found is missing from its leaf"))?;
        let old = entries.remove(p);
        for &(b, i) in &path {
            self.branch_mut(b).children[i].count -= 1;
        }
        self.root.as_mut().unwrap().count -= 1;
        // Only the child on the path changed at each level.
        for &(b, i) in path.iter().rev() {
            self.fix_child(src, b, i)?;
        }
        self.fix_root();
        self.debug_check("delete");
        Ok(Some(old))
    }

    /// Remove every key in `[lo, hi]`; returns how many. Subtrees that lie
    /// wholly inside the range are dropped without being read.
    pub fn delete_range(
        &mut self,
        src: &dyn Source,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<u64> {
        if self.root.is_none() {
            return Ok(0);
        }
        let root = self.dirty_root(src)?;
        let removed = self.remove_range(src, root, lo, hi, None, None)?;
        self.root.as_mut().unwrap().count -= removed;
        self.fix_root();
        self.debug_check("delete_range");
        Ok(removed)
    }

    fn remove_range(
        &mut self,
        src: &dyn Source,
        idx: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        node_lo: Option<&[u8]>,
        node_hi: Option<&[u8]>,
    ) -> Result<u64> {
        if let Node::Leaf(entries) = &mut self.arena[idx] {
            let before = entries.len();
            entries.retain(|k| !in_range(k, lo, hi));
            return Ok((before - entries.len()) as u64);
        }
        let b = self.branch(idx);
        let n = b.children.len();
        let first = match lo {
            Bound::Unbounded => 0,
            Bound::Included(x) | Bound::Excluded(x) => branch_index(&b.keys, x),
        };
        let last = match hi {
            Bound::Unbounded => n - 1,
            Bound::Included(y) | Bound::Excluded(y) => branch_index(&b.keys, y),
        };
        let mut removed = 0;
        let mut dropped: Vec<usize> = Vec::new();
        for i in first..=last {
            let b = self.branch(idx);
            let clo = if i == 0 {
                node_lo.map(<[u8]>::to_vec)
            } else {
                Some(b.keys.get(i - 1).to_vec())
            };
            let chi = if i == n - 1 {
                node_hi.map(<[u8]>::to_vec)
            } else {
                Some(b.keys.get(i).to_vec())
            };
            if covers(lo, hi, clo.as_deref(), chi.as_deref()) {
                removed += b.children[i].count;
                dropped.push(i);
            } else {
                let c = self.dirty_child(src, idx, i)?;
                let r = self.remove_range(src, c, lo, hi, clo.as_deref(), chi.as_deref())?;
                self.branch_mut(idx).children[i].count -= r;
                removed += r;
            }
        }
        if let (Some(&a), Some(&z)) = (dropped.first(), dropped.last()) {
            debug_assert_eq!(z - a + 1, dropped.len(), "covered children are contiguous");
            let b = self.branch_mut(idx);
            b.children.drain(a..=z);
            let nkeys = b.keys.len();
            if a > 0 {
                b.keys.drain(a - 1..z.min(nkeys));
            } else {
                b.keys.drain(0..(z + 1).min(nkeys));
            }
        }
        self.fix_children(src, idx)?;
        Ok(removed)
    }

    /// Check the shape of every dirty branch (debug builds only).
    pub fn debug_check(&self, op: &str) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (i, n) in self.arena.iter().enumerate() {
            if let Node::Branch(b) = n {
                if !b.children.is_empty() {
                    assert_eq!(
                        b.keys.len() + 1,
                        b.children.len(),
                        "after {op}: branch {i} keys/children mismatch"
                    );
                }
                for j in 1..b.keys.len() {
                    assert!(
                        b.keys.get(j - 1) < b.keys.get(j),
                        "after {op}: separators out of order in {i}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
