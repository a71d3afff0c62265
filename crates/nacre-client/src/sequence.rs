//! A builder for Arakoon-style sequences: steps applied in order, all or
//! nothing, compiled to one guarded [`Batch`].

use bytes::Bytes;
use nacre_proto::{Batch, Guard, Op};

/// Steps of a sequence. Asserts are checks at their point in the order,
/// so they see the effect of earlier steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequence {
    ops: Vec<Op>,
}

impl Sequence {
    pub fn new() -> Sequence {
        Sequence::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn set(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> &mut Sequence {
        self.ops.push(Op::Set(key.into(), value.into()));
        self
    }

    /// Deletes the key; a missing key fails the sequence with `NotFound`.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut Sequence {
        self.ops.push(Op::Delete(key.into()));
        self
    }

    /// Deletes the key if it exists.
    pub fn remove(&mut self, key: impl Into<Bytes>) -> &mut Sequence {
        self.ops.push(Op::Remove(key.into()));
        self
    }

    pub fn delete_prefix(&mut self, prefix: impl Into<Bytes>) -> &mut Sequence {
        self.ops.push(Op::DeletePrefix(prefix.into()));
        self
    }

    /// Checks the key holds `expected` (`None`: is absent), then sets it to
    /// `wanted` (`None`: removes it). A mismatch fails the sequence.
    pub fn test_and_set(
        &mut self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        wanted: Option<Bytes>,
    ) -> &mut Sequence {
        let key = key.into();
        self.assert(key.clone(), expected);
        self.ops.push(match wanted {
            Some(v) => Op::Set(key, v),
            None => Op::Remove(key),
        });
        self
    }

    /// The key holds exactly `value`, or with `None` is absent.
    pub fn assert(&mut self, key: impl Into<Bytes>, value: Option<Bytes>) -> &mut Sequence {
        let key = key.into();
        self.ops.push(Op::Check(match value {
            Some(v) => Guard::ValueEquals(key, v),
            None => Guard::Absent(key),
        }));
        self
    }

    pub fn assert_exists(&mut self, key: impl Into<Bytes>) -> &mut Sequence {
        self.ops.push(Op::Check(Guard::Present(key.into())));
        self
    }

    /// The key's version is `version` (0: absent).
    pub fn assert_version(&mut self, key: impl Into<Bytes>, version: u64) -> &mut Sequence {
        self.ops
            .push(Op::Check(Guard::VersionEquals(key.into(), version)));
        self
    }

    /// The keys with this prefix are exactly `keys`, in order.
    pub fn assert_range(&mut self, prefix: impl Into<Bytes>, keys: Vec<Bytes>) -> &mut Sequence {
        self.ops.push(Op::Check(Guard::PrefixKeysEqual {
            prefix: prefix.into(),
            keys,
        }));
        self
    }

    pub fn into_batch(self) -> Batch {
        Batch {
            guards: Vec::new(),
            ops: self.ops,
        }
    }
}

impl From<Sequence> for Batch {
    fn from(s: Sequence) -> Batch {
        s.into_batch()
    }
}

impl From<&mut Sequence> for Batch {
    fn from(s: &mut Sequence) -> Batch {
        std::mem::take(s).into_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_and_set_compiles_to_check_then_write() {
        let mut s = Sequence::new();
        s.test_and_set("k", None, Some(Bytes::from_static(b"v")))
            .test_and_set("k", Some(Bytes::from_static(b"v")), None);
        let b = s.into_batch();
        assert!(b.guards.is_empty());
        assert_eq!(
            b.ops,
            vec![
                Op::Check(Guard::Absent(Bytes::from_static(b"k"))),
                Op::Set(Bytes::from_static(b"k"), Bytes::from_static(b"v")),
                Op::Check(Guard::ValueEquals(
                    Bytes::from_static(b"k"),
                    Bytes::from_static(b"v")
                )),
                Op::Remove(Bytes::from_static(b"k")),
            ]
        );
    }
}
