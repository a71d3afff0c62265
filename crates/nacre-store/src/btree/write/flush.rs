//! Writing the dirty tree out: every dirty node, children before parents,
//! through a `Sink`, leaving the arena empty and the root clean.

use super::super::page::{encode_branch_with, ChildInfo, CHILD_LEN};
use super::{Child, Node, NodeRef, Sink, Tree};
use crate::error::Result;
use crate::record::{align_up, record_buf, Kind};

impl Tree {
    /// Write every dirty node (children before parents) and return the
    /// clean root. The arena is empty afterwards.
    pub fn flush(&mut self, sink: &mut dyn Sink) -> Result<Option<ChildInfo>> {
        let Some(mut root) = self.root else {
            self.arena.clear();
            self.gone = 0;
            return Ok(None);
        };
        self.write(sink, &mut root)?;
        self.root = Some(root);
        self.arena.clear();
        self.gone = 0;
        let NodeRef::Clean(ptr) = root.r else {
            unreachable!()
        };
        Ok(Some(ChildInfo {
            ptr,
            count: root.count,
            bytes: root.bytes,
        }))
    }

    fn write(&mut self, sink: &mut dyn Sink, c: &mut Child) -> Result<()> {
        let NodeRef::Dirty(idx) = c.r else {
            return Ok(());
        };
        let node = std::mem::replace(&mut self.arena[idx], Node::Gone);
        let (ptr, bytes) = match node {
            Node::Leaf(leaf) => {
                assert_eq!(leaf.len() as u64, c.count, "leaf count drifted");
                let mut buf = record_buf(leaf.size());
                leaf.encode(&mut buf);
                let ptr = sink.append_node(Kind::Leaf, buf)?;
                let bytes = align_up(ptr.len as u64) + leaf.ext_bytes();
                self.spares.keep_leaf(leaf);
                (ptr, bytes)
            }
            Node::Branch(mut b) => {
                for ch in b.children.iter_mut() {
                    self.write(sink, ch)?;
                }
                let info = |i: usize| {
                    let ch: &Child = &b.children[i];
                    let NodeRef::Clean(ptr) = ch.r else {
                        unreachable!("child written above")
                    };
                    ChildInfo {
                        ptr,
                        count: ch.count,
                        bytes: ch.bytes,
                    }
                };
                assert_eq!(
                    b.children.iter().map(|ch| ch.count).sum::<u64>(),
                    c.count,
                    "branch count drifted"
                );
                let size = 8 + CHILD_LEN + b.keys.bytes();
                let mut buf = record_buf(size);
                encode_branch_with(b.level, b.keys.len(), |i| b.keys.get(i), info, &mut buf);
                let ptr = sink.append_node(Kind::Branch, buf)?;
                let bytes =
                    align_up(ptr.len as u64) + b.children.iter().map(|ch| ch.bytes).sum::<u64>();
                self.spares.keep(b);
                (ptr, bytes)
            }
            Node::Gone => unreachable!("gone node reachable from the root"),
        };
        c.r = NodeRef::Clean(ptr);
        c.bytes = bytes;
        Ok(())
    }
}
