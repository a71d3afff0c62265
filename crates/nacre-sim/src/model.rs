//! The sequential specification the checker holds Nacre to: a map from
//! key to value, and what a guarded batch does to it. Written from the
//! documented semantics (crates/nacre-proto/src/types.rs), not from the
//! state machine's code, so that a bug there shows up as a disagreement.

use std::collections::BTreeMap;

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, Guard, Op};
use nacre_server::state::Outcome;

/// The user-visible state: key → value (revisions are not modelled).
pub type KvState = BTreeMap<Bytes, Bytes>;

/// What a write returned, without the human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WriteResult {
    Applied {
        prev: Option<Bytes>,
        count: u64,
    },
    Failed {
        code: ErrorCode,
        key: Bytes,
        current: Option<Bytes>,
    },
    /// A failure as a real client sees it: the wire reply names the code
    /// and the key but not the value found there. Admits any `Failed`
    /// with the same code and key ([`WriteResult::admits`]).
    Refused {
        code: ErrorCode,
        key: Bytes,
    },
}

impl WriteResult {
    /// Whether a client that recorded `self` may have been answered
    /// `model`, the model's result.
    pub fn admits(&self, model: &WriteResult) -> bool {
        match (self, model) {
            (
                WriteResult::Refused { code, key },
                WriteResult::Failed {
                    code: c, key: k, ..
                },
            ) => code == c && key == k,
            _ => self == model,
        }
    }
}

impl From<&Outcome> for WriteResult {
    fn from(o: &Outcome) -> WriteResult {
        match o {
            Outcome::Applied { prev, count } => WriteResult::Applied {
                prev: prev.clone(),
                count: *count,
            },
            Outcome::Failed {
                code, key, current, ..
            } => WriteResult::Failed {
                code: *code,
                key: key.clone(),
                current: current.clone(),
            },
        }
    }
}

fn holds(state: &KvState, g: &Guard) -> bool {
    match g {
        Guard::Absent(k) => !state.contains_key(k),
        Guard::Present(k) => state.contains_key(k),
        Guard::ValueEquals(k, v) => state.get(k) == Some(v),
        Guard::PrefixKeysEqual { prefix, keys } => {
            let found: Vec<&Bytes> = state.keys().filter(|k| k.starts_with(prefix)).collect();
            found.len() == keys.len() && found.iter().zip(keys).all(|(a, b)| *a == b)
        }
        // Revisions are not modelled; the workload never sends this guard.
        Guard::VersionEquals(..) => unreachable!("the simulated workload sends no VersionEquals"),
    }
}

fn failed(state: &KvState, code: ErrorCode, key: &Bytes) -> WriteResult {
    WriteResult::Failed {
        code,
        key: key.clone(),
        current: state.get(key).cloned(),
    }
}

/// Applies `batch` to `state` (all or nothing) and says what it returned.
pub fn apply(state: &mut KvState, batch: &Batch) -> WriteResult {
    for g in &batch.guards {
        if !holds(state, g) {
            return failed(state, ErrorCode::AssertionFailed, g.key());
        }
    }
    // Later ops see earlier ones; a failure reports the value at that point
    // of the sequence and then throws the working copy away.
    let mut work = state.clone();
    let mut prev = None;
    let mut count = 0;
    for op in &batch.ops {
        match op {
            Op::Set(k, v) => prev = work.insert(k.clone(), v.clone()),
            Op::Delete(k) => match work.remove(k) {
                Some(old) => prev = Some(old),
                None => {
                    return WriteResult::Failed {
                        code: ErrorCode::NotFound,
                        key: k.clone(),
                        current: None,
                    }
                }
            },
            Op::Remove(k) => prev = work.remove(k),
            Op::DeletePrefix(p) => {
                let doomed: Vec<Bytes> =
                    work.keys().filter(|k| k.starts_with(p)).cloned().collect();
                count += doomed.len() as u64;
                for k in doomed {
                    work.remove(&k);
                }
            }
            Op::Check(g) => {
                if !holds(&work, g) {
                    return failed(&work, ErrorCode::AssertionFailed, g.key());
                }
            }
            // A conditional write that never fails the batch.
            Op::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                prev = work.get(key).cloned();
                if prev == *expected {
                    match wanted {
                        Some(v) => work.insert(key.clone(), v.clone()),
                        None => work.remove(key),
                    };
                }
            }
            op => unreachable!("the simulated workload sends no service op {op:?}"),
        }
    }
    *state = work;
    WriteResult::Applied { prev, count }
}

/// The keys `batch` may read or write, out of `universe` (prefix ops and
/// guards touch every key under their prefix).
pub fn batch_keys(batch: &Batch, universe: &[Bytes]) -> Vec<Bytes> {
    let mut keys: Vec<Bytes> = Vec::new();
    let mut add_prefix = |keys: &mut Vec<Bytes>, p: &Bytes| {
        keys.extend(universe.iter().filter(|k| k.starts_with(p)).cloned())
    };
    let guard_keys =
        |keys: &mut Vec<Bytes>, g: &Guard, add: &mut dyn FnMut(&mut Vec<Bytes>, &Bytes)| match g {
            Guard::PrefixKeysEqual { prefix, .. } => add(keys, prefix),
            g => keys.push(g.key().clone()),
        };
    for g in &batch.guards {
        guard_keys(&mut keys, g, &mut add_prefix);
    }
    for op in &batch.ops {
        match op {
            Op::Set(k, _) | Op::Delete(k) | Op::Remove(k) | Op::TestAndSet { key: k, .. } => {
                keys.push(k.clone())
            }
            Op::DeletePrefix(p) => add_prefix(&mut keys, p),
            Op::Check(g) => guard_keys(&mut keys, g, &mut add_prefix),
            _ => {}
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn sequence_is_all_or_nothing() {
        let mut st = KvState::new();
        st.insert(b("a"), b("1"));
        let batch = Batch {
            guards: vec![],
            ops: vec![Op::Set(b("b"), b("2")), Op::Check(Guard::Absent(b("b")))],
        };
        let r = apply(&mut st, &batch);
        assert_eq!(
            r,
            WriteResult::Failed {
                code: ErrorCode::AssertionFailed,
                key: b("b"),
                current: Some(b("2"))
            }
        );
        assert_eq!(st.len(), 1);
        let del = Batch {
            guards: vec![],
            ops: vec![Op::Delete(b("zz"))],
        };
        assert!(matches!(
            apply(&mut st, &del),
            WriteResult::Failed {
                code: ErrorCode::NotFound,
                ..
            }
        ));
    }
}
