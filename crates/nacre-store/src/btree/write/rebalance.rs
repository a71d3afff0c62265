//! Keeping the dirty tree's shape: merging children that fell under a
//! quarter of a node or lost their keys, splitting nodes that grew past
//! one, and shrinking the root. The invariants are listed in `write.rs`.

use super::super::page::{branch_entry_size, LEAF_ENTRY_HEADER};
use super::super::seps::SepKeys;
use super::{shortest_separator, BranchNode, Child, Node, NodeRef, Source, Tree};
use crate::error::Result;

impl Tree {
    /// Restore the invariants among the children of branch `p`: remove empty
    /// children, merge one-child branches and empty leaves into a
    /// neighbour, then merge children that fell under a quarter of a node.
    pub(super) fn fix_children(&mut self, src: &dyn Source, p: usize) -> Result<()> {
        // Empty children first: merging into an empty neighbour would pull
        // down a separator with nothing on its far side.
        loop {
            let b = self.branch(p);
            let empty = b.children.iter().position(|c| match c.r {
                NodeRef::Dirty(i) => self.arena[i].is_empty(),
                NodeRef::Clean(_) => false,
            });
            let Some(i) = empty else { break };
            self.remove_empty_child(p, i);
        }
        // Then one-child branches: merged into a neighbour, which is never
        // empty now and so gives the merge at least two children.
        while self.branch(p).children.len() >= 2 {
            let bad = self.branch(p).children.iter().position(|c| match c.r {
                NodeRef::Dirty(i) => self.arena[i].is_invalid(),
                NodeRef::Clean(_) => false,
            });
            let Some(i) = bad else { break };
            self.merge_child(src, p, i)?;
        }
        let mut i = 0;
        while i < self.branch(p).children.len() {
            let under = match self.branch(p).children[i].r {
                NodeRef::Dirty(ci) => self.arena[ci].size() < self.node_size / 4,
                NodeRef::Clean(_) => false,
            };
            if under && self.branch(p).children.len() >= 2 {
                self.merge_child(src, p, i)?;
            }
            i += 1;
        }
        Ok(())
    }

    /// Drop child `i` of `p`, which holds nothing, with the separator that
    /// bounded it.
    pub(super) fn remove_empty_child(&mut self, p: usize, i: usize) {
        let NodeRef::Dirty(ci) = self.branch(p).children[i].r else {
            unreachable!("only a dirty child can have become empty")
        };
        self.retire(ci);
        let b = self.branch_mut(p);
        b.children.remove(i);
        if !b.keys.is_empty() {
            b.keys.remove(i.saturating_sub(1));
        }
    }

    /// Restore the invariants for child `i` of branch `p` alone: remove it if
    /// empty, merge it into a neighbour if it is a one-child branch or under
    /// a quarter of a node.
    pub(super) fn fix_child(&mut self, src: &dyn Source, p: usize, i: usize) -> Result<()> {
        let NodeRef::Dirty(ci) = self.branch(p).children[i].r else {
            return Ok(());
        };
        if self.arena[ci].is_empty() {
            self.remove_empty_child(p, i);
        } else if self.branch(p).children.len() >= 2
            && (self.arena[ci].is_invalid() || self.arena[ci].size() < self.node_size / 4)
        {
            self.merge_child(src, p, i)?;
        }
        Ok(())
    }

    /// Merge child `i` of `p` with a neighbour; split the result again if it
    /// is too large.
    pub(super) fn merge_child(&mut self, src: &dyn Source, p: usize, i: usize) -> Result<()> {
        let n = self.branch(p).children.len();
        debug_assert!(n >= 2);
        let (l, r) = if i + 1 < n { (i, i + 1) } else { (i - 1, i) };
        let li = self.dirty_child(src, p, l)?;
        let ri = self.dirty_child(src, p, r)?;
        let right = self.retire(ri);
        let b = self.branch_mut(p);
        let sep = b.keys.remove(l);
        let rc = b.children.remove(r);
        b.children[l].count += rc.count;
        match (&mut self.arena[li], right) {
            (Node::Leaf(a), Node::Leaf(bn)) => a.append(bn),
            (Node::Branch(a), Node::Branch(bn)) => {
                a.keys.push(sep);
                a.keys.append(bn.keys);
                a.children.extend(bn.children);
            }
            _ => unreachable!("siblings at different levels"),
        }
        if self.arena[li].size() > self.node_size {
            if let Some((sep, right)) = self.split_node(li, false) {
                let rc = right.count();
                let ridx = self.push(right);
                let lc = self.arena[li].count();
                let b = self.branch_mut(p);
                b.children[l].count = lc;
                b.children.insert(
                    l + 1,
                    Child {
                        r: NodeRef::Dirty(ridx),
                        count: rc,
                        bytes: 0,
                    },
                );
                b.keys.insert(l, sep);
            }
        }
        Ok(())
    }

    pub(super) fn fix_root(&mut self) {
        while let Some(Child {
            r: NodeRef::Dirty(idx),
            count,
            ..
        }) = self.root
        {
            match &self.arena[idx] {
                Node::Leaf(e) if e.is_empty() => self.root = None,
                Node::Branch(b) if b.children.is_empty() => self.root = None,
                Node::Branch(b) if b.children.len() == 1 => {
                    debug_assert_eq!(b.children[0].count, count);
                    self.root = Some(b.children[0]);
                }
                _ => return,
            }
        }
    }

    /// Split node `idx` in two if it can be; it keeps the left half.
    /// Returns the separator and the right half.
    pub(super) fn split_node(&mut self, idx: usize, at_end: bool) -> Option<(Vec<u8>, Node)> {
        match &mut self.arena[idx] {
            Node::Leaf(e) => {
                let n = e.len();
                if n < 2 {
                    return None;
                }
                // Appends in key order fill leaves instead of halving them.
                let m = if at_end {
                    n - 1
                } else {
                    let half = (e.size() - 8) / 2;
                    let mut acc = 0;
                    let mut m = 0;
                    while m < n && acc < half {
                        acc += 4 + LEAF_ENTRY_HEADER + e.key(m).len() + e.val(m).encoded_len();
                        m += 1;
                    }
                    m.clamp(1, n - 1)
                };
                let right = e.split_off(m);
                let sep = shortest_separator(e.key(e.len() - 1), right.key(0));
                Some((sep, Node::Leaf(right)))
            }
            Node::Branch(b) => {
                let n = b.children.len();
                if n < 4 {
                    return None;
                }
                let m = if at_end {
                    n - 2
                } else {
                    let total = b.keys.bytes();
                    let mut acc = 0;
                    let mut m = 0;
                    while m < b.keys.len() && acc < total / 2 {
                        acc += branch_entry_size(b.keys.get(m));
                        m += 1;
                    }
                    m.clamp(2, n - 2)
                };
                let right_children = b.children.split_off(m);
                let right_keys = b.keys.split_off(m);
                let sep = b.keys.pop().expect("left half keeps a separator");
                Some((
                    sep,
                    Node::Branch(BranchNode {
                        level: b.level,
                        keys: right_keys,
                        children: right_children,
                    }),
                ))
            }
            Node::Gone => unreachable!(),
        }
    }

    pub(super) fn split_up(
        &mut self,
        mut idx: usize,
        mut path: Vec<(usize, usize)>,
        mut at_end: bool,
    ) {
        loop {
            if self.arena[idx].size() <= self.node_size {
                return;
            }
            let Some((sep, right)) = self.split_node(idx, at_end) else {
                return;
            };
            let rc = right.count();
            let ridx = self.push(right);
            let lc = self.arena[idx].count();
            let right_child = Child {
                r: NodeRef::Dirty(ridx),
                count: rc,
                bytes: 0,
            };
            match path.pop() {
                None => {
                    let level = self.arena[idx].level() + 1;
                    let left_child = Child {
                        r: NodeRef::Dirty(idx),
                        count: lc,
                        bytes: 0,
                    };
                    let root = self.push(Node::Branch(BranchNode {
                        level,
                        keys: SepKeys::one(sep),
                        children: vec![left_child, right_child],
                    }));
                    self.root = Some(Child {
                        r: NodeRef::Dirty(root),
                        count: lc + rc,
                        bytes: 0,
                    });
                    return;
                }
                Some((p, i)) => {
                    let b = self.branch_mut(p);
                    b.children[i].count = lc;
                    b.children.insert(i + 1, right_child);
                    b.keys.insert(i, sep);
                    at_end = i + 2 == b.children.len();
                    idx = p;
                }
            }
        }
    }
}
