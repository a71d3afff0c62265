//! The sequential specification the checker holds Nacre to: a map from
//! key to value, and what a guarded batch does to it. Written from the
//! documented semantics (crates/nacre-proto/src/types.rs), not from the
//! state machine's code, so that a bug there shows up as a disagreement.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use nacre_proto::{Batch, ErrorCode, Guard, Op};
use nacre_server::state::Outcome;

/// The user-visible state: key → value and version. Versions are
/// modelled (a `VersionEquals` guard reads them); the other revisions
/// (`create_rev`, `mod_rev`) are log indexes and are not.
pub type KvState = BTreeMap<Bytes, Entry>;

/// A key's value and its version: 1 when created, one more at every set,
/// gone with the key when it is deleted (a missing key's version is 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub value: Bytes,
    pub version: u64,
}

/// Sets `k` to `v`, counting the version up; returns the value replaced.
fn set(state: &mut KvState, k: &Bytes, v: &Bytes) -> Option<Bytes> {
    let version = state.get(k).map_or(1, |e| e.version + 1);
    let entry = Entry {
        value: v.clone(),
        version,
    };
    state.insert(k.clone(), entry).map(|e| e.value)
}

/// The value of `k`, if it has one.
pub fn value(state: &KvState, k: &Bytes) -> Option<Bytes> {
    state.get(k).map(|e| e.value.clone())
}

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
            // The simulated clients send no etcd op: an etcd outcome for
            // their batch is a wrong answer, which the checker reports.
            Outcome::Etcd { .. } => WriteResult::Failed {
                code: nacre_proto::ErrorCode::Internal,
                key: bytes::Bytes::new(),
                current: None,
            },
        }
    }
}

fn holds(state: &KvState, g: &Guard) -> bool {
    match g {
        Guard::Absent(k) => !state.contains_key(k),
        Guard::Present(k) => state.contains_key(k),
        Guard::ValueEquals(k, v) => state.get(k).is_some_and(|e| e.value == *v),
        Guard::PrefixKeysEqual { prefix, keys } => {
            let found: Vec<&Bytes> = state.keys().filter(|k| k.starts_with(prefix)).collect();
            found.len() == keys.len() && found.iter().zip(keys).all(|(a, b)| *a == b)
        }
        Guard::VersionEquals(k, want) => state.get(k).map_or(0, |e| e.version) == *want,
        // The model has no create revisions: the workload generates no
        // fenced writes yet (sim/fence.rs checks them separately).
        Guard::LockHeld { .. } => panic!("the model cannot judge a LockHeld guard"),
    }
}

fn failed(state: &KvState, code: ErrorCode, key: &Bytes) -> WriteResult {
    WriteResult::Failed {
        code,
        key: key.clone(),
        current: value(state, key),
    }
}

/// Leases as the documented ops define them (docs/coordination.md): which
/// exist, and the keys attached to each. A set or delete of a key detaches
/// it; a revoke deletes the keys still attached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    attached: BTreeMap<u64, BTreeSet<Bytes>>,
    by_key: BTreeMap<Bytes, u64>,
}

impl Leases {
    fn detach(&mut self, k: &Bytes) {
        if let Some(id) = self.by_key.remove(k) {
            if let Some(keys) = self.attached.get_mut(&id) {
                keys.remove(k);
            }
        }
    }

    /// Whether lease `id` exists.
    pub fn exists(&self, id: u64) -> bool {
        self.attached.contains_key(&id)
    }
}

fn lease_failed(code: ErrorCode, key: &Bytes) -> WriteResult {
    WriteResult::Failed {
        code,
        key: key.clone(),
        current: None,
    }
}

/// Applies `batch` to `state` (all or nothing) and says what it returned.
/// For histories without lease ops (the linearizability search).
pub fn apply(state: &mut KvState, batch: &Batch) -> WriteResult {
    apply_with_leases(state, &mut Leases::default(), 0, batch)
}

/// [`apply`] with leases: `index` is the entry's log index (a grant of id
/// 0 takes it as its id).
pub fn apply_with_leases(
    state: &mut KvState,
    leases: &mut Leases,
    index: u64,
    batch: &Batch,
) -> WriteResult {
    for g in &batch.guards {
        if !holds(state, g) {
            return failed(state, ErrorCode::AssertionFailed, g.key());
        }
    }
    // Later ops see earlier ones; a failure reports the value at that point
    // of the sequence and then throws the working copy away.
    let mut work = state.clone();
    let mut held = leases.clone();
    let mut prev = None;
    let mut count = 0;
    for op in &batch.ops {
        if let Some(r) = lease_op(&mut work, &mut held, index, op, &mut prev, &mut count) {
            match r {
                Ok(()) => continue,
                Err(failure) => return failure,
            }
        }
        match op {
            Op::Set(k, v) => {
                held.detach(k);
                prev = set(&mut work, k, v);
            }
            Op::Delete(k) => match work.remove(k) {
                Some(old) => {
                    held.detach(k);
                    prev = Some(old.value);
                }
                None => {
                    return WriteResult::Failed {
                        code: ErrorCode::NotFound,
                        key: k.clone(),
                        current: None,
                    }
                }
            },
            Op::Remove(k) => {
                held.detach(k);
                prev = work.remove(k).map(|e| e.value);
            }
            Op::DeletePrefix(p) => {
                let doomed: Vec<Bytes> =
                    work.keys().filter(|k| k.starts_with(p)).cloned().collect();
                count += doomed.len() as u64;
                for k in doomed {
                    held.detach(&k);
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
                prev = value(&work, key);
                if prev == *expected {
                    held.detach(key);
                    match wanted {
                        Some(v) => {
                            set(&mut work, key, v);
                        }
                        None => {
                            work.remove(key);
                        }
                    }
                }
            }
            op => unreachable!("the simulated workload sends no service op {op:?}"),
        }
    }
    *state = work;
    *leases = held;
    WriteResult::Applied { prev, count }
}

/// A lease op of a batch: `None` if `op` is none; `Err` with the batch's
/// result if it fails the batch.
fn lease_op(
    work: &mut KvState,
    held: &mut Leases,
    index: u64,
    op: &Op,
    prev: &mut Option<Bytes>,
    count: &mut u64,
) -> Option<Result<(), WriteResult>> {
    let empty = Bytes::new();
    Some(match op {
        Op::SetLeased { key, value, lease } => {
            if !held.exists(*lease) {
                return Some(Err(lease_failed(ErrorCode::LeaseNotFound, key)));
            }
            *prev = set(work, key, value);
            held.detach(key);
            held.by_key.insert(key.clone(), *lease);
            held.attached.entry(*lease).or_default().insert(key.clone());
            Ok(())
        }
        Op::LeaseGrant { id, .. } => {
            let id = if *id == 0 { index } else { *id };
            if held.exists(id) {
                return Some(Err(lease_failed(ErrorCode::Conflict, &empty)));
            }
            held.attached.insert(id, BTreeSet::new());
            *count = id;
            Ok(())
        }
        Op::LeaseRevoke(id) => match held.attached.remove(id) {
            None => Err(lease_failed(ErrorCode::LeaseNotFound, &empty)),
            Some(keys) => {
                for k in keys {
                    held.by_key.remove(&k);
                    *count += u64::from(work.remove(&k).is_some());
                }
                Ok(())
            }
        },
        _ => return None,
    })
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
        set(&mut st, &b("a"), &b("1"));
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

    /// etcd's rule, as the state machine keeps it: 1 on create, one more
    /// per set, 0 once deleted.
    #[test]
    fn versions_count_sets_since_the_key_was_created() {
        let mut st = KvState::new();
        let guard = |k: &str, v: u64| Batch {
            guards: vec![Guard::VersionEquals(b(k), v)],
            ops: vec![],
        };
        let applied =
            |st: &mut KvState, g: Batch| matches!(apply(st, &g), WriteResult::Applied { .. });
        assert!(applied(&mut st, guard("a", 0)));
        set(&mut st, &b("a"), &b("1"));
        set(&mut st, &b("a"), &b("2"));
        assert!(applied(&mut st, guard("a", 2)));
        assert!(!applied(&mut st, guard("a", 1)));
        let remove = Batch {
            guards: vec![],
            ops: vec![Op::Remove(b("a"))],
        };
        apply(&mut st, &remove);
        assert!(applied(&mut st, guard("a", 0)));
        set(&mut st, &b("a"), &b("3"));
        assert!(applied(&mut st, guard("a", 1)));
    }
}
