//! A builder for Arakoon-style sequences: steps applied in order, all or
//! nothing, compiled to one guarded [`Batch`]; and Arakoon's standalone
//! `assert` and `assert_exists`, which are reads.

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, ErrorReply, Guard, Op};

use crate::{Client, ClientError};

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

    /// If the key holds `expected` (`None`: is absent), sets it to
    /// `wanted` (`None`: removes it); otherwise leaves it. As in Arakoon a
    /// mismatch does not fail the sequence: put an [`assert`](Self::assert)
    /// before it for a sequence that must abort instead. The sequence is
    /// then written in command format 2, which nodes older than this
    /// step do not apply (docs/protocol.md).
    pub fn test_and_set(
        &mut self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        wanted: Option<Bytes>,
    ) -> &mut Sequence {
        self.ops.push(Op::TestAndSet {
            key: key.into(),
            expected,
            wanted,
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

/// Arakoon's standalone `assert` and `assert_exists`: reads at the
/// client's consistency level, answered by the node that serves that level
/// (no log entry is written). A mismatch is an `AssertionFailed` error that
/// names the key; the value is compared here, so it travels to the client.
impl Client {
    /// Succeeds if the key holds exactly `value` (`None`: is absent).
    pub async fn assert(
        &self,
        key: impl Into<Bytes>,
        value: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let key = key.into();
        let current = self.get_option(key.clone()).await?;
        let why = match (&current, &value) {
            (a, b) if a == b => return Ok(()),
            (Some(_), None) => "key exists",
            (None, Some(_)) => "key does not exist",
            _ => "value differs",
        };
        Err(assertion_failed(key, why))
    }

    /// Succeeds if the key exists.
    pub async fn assert_exists(&self, key: impl Into<Bytes>) -> Result<(), ClientError> {
        let key = key.into();
        if self.exists(key.clone()).await? {
            return Ok(());
        }
        Err(assertion_failed(key, "key does not exist"))
    }
}

/// The error a failed guard gets from the server, for the same failure
/// found by a read.
fn assertion_failed(key: Bytes, why: &str) -> ClientError {
    ClientError::Server(ErrorReply::new(ErrorCode::AssertionFailed, why).with_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_and_set_compiles_to_a_conditional_write_not_a_check() {
        let mut s = Sequence::new();
        s.test_and_set("k", None, Some(Bytes::from_static(b"v")))
            .test_and_set("k", Some(Bytes::from_static(b"v")), None);
        let b = s.into_batch();
        assert!(b.guards.is_empty());
        assert_eq!(
            b.ops,
            vec![
                Op::TestAndSet {
                    key: Bytes::from_static(b"k"),
                    expected: None,
                    wanted: Some(Bytes::from_static(b"v")),
                },
                Op::TestAndSet {
                    key: Bytes::from_static(b"k"),
                    expected: Some(Bytes::from_static(b"v")),
                    wanted: None,
                },
            ]
        );
    }
}
