//! The history a simulation records, and a Wing–Gong style
//! linearizability search over it (the "just-in-time" variant Knossos and
//! Porcupine use, with memoisation of visited configurations).
//!
//! An operation whose outcome the client never learned (a timeout, a
//! crash, a leader change) stays open: it may take effect at any point
//! after its invocation, or never. Independent keys are checked apart
//! (P-compositionality): operations are grouped by the keys they touch,
//! and a multi-key sequence or range read joins the groups of all its
//! keys, so with a small key set those are checked over the whole history.

use std::collections::HashSet;

use bytes::Bytes;
use nacre_proto::Batch;

use crate::model::{self, KvState, WriteResult};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Write(Batch),
    Get(Bytes),
    /// Every key in `first..=last`, in order.
    Range {
        first: Bytes,
        last: Bytes,
    },
}

/// What it got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpValue {
    Write(WriteResult),
    Get(Option<Bytes>),
    Range(Vec<(Bytes, Bytes)>),
}

impl OpValue {
    /// Whether a client that recorded `self` may have been answered
    /// `model` (a real client does not see everything the model says).
    pub fn admits(&self, model: &OpValue) -> bool {
        match (self, model) {
            (OpValue::Write(a), OpValue::Write(b)) => a.admits(b),
            _ => self == model,
        }
    }
}

/// One operation of the history, in simulated microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub client: usize,
    pub invoke_us: u64,
    /// `None`: the outcome is unknown (open until the end of time).
    pub complete_us: Option<u64>,
    pub kind: OpKind,
    /// `None` exactly when `complete_us` is.
    pub value: Option<OpValue>,
}

impl OpKind {
    /// The keys of `universe` this operation may read or write.
    pub fn keys(&self, universe: &[Bytes]) -> Vec<Bytes> {
        match self {
            OpKind::Write(b) => model::batch_keys(b, universe),
            OpKind::Get(k) => vec![k.clone()],
            OpKind::Range { first, last } => universe
                .iter()
                .filter(|k| *k >= first && *k <= last)
                .cloned()
                .collect(),
        }
    }
}

/// Runs `kind` against `state`: the value it returns.
pub fn step(state: &mut KvState, kind: &OpKind) -> OpValue {
    match kind {
        OpKind::Write(b) => OpValue::Write(model::apply(state, b)),
        OpKind::Get(k) => OpValue::Get(model::value(state, k)),
        OpKind::Range { first, last } => OpValue::Range(
            state
                .range(first.clone()..=last.clone())
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists; the text says where the search got stuck.
    Violation(String),
    /// The search gave up (its budget of visited configurations ran out).
    Unknown(String),
}

/// Checks `calls` against the sequential KV model. `budget_states` bounds
/// the configurations visited per independent group.
pub fn check(calls: &[Call], universe: &[Bytes], budget_states: u64) -> Verdict {
    // Union-find over the keys of the universe.
    let mut parent: Vec<usize> = (0..universe.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let pos = |k: &Bytes| universe.iter().position(|u| u == k);
    let call_keys: Vec<Vec<usize>> = calls
        .iter()
        .map(|c| c.kind.keys(universe).iter().filter_map(pos).collect())
        .collect();
    for ks in &call_keys {
        for w in ks.windows(2) {
            let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
            parent[a] = b;
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, ks) in call_keys.iter().enumerate() {
        // An op that touches no key (an empty range) constrains nothing.
        if let Some(&k) = ks.first() {
            let root = find(&mut parent, k);
            groups.entry(root).or_default().push(i);
        }
    }
    let mut unknown = None;
    for members in groups.values() {
        let group: Vec<&Call> = members.iter().map(|&i| &calls[i]).collect();
        match check_group(&group, budget_states) {
            Verdict::Linearizable => {}
            v @ Verdict::Violation(_) => return v,
            v @ Verdict::Unknown(_) => unknown = Some(v),
        }
    }
    unknown.unwrap_or(Verdict::Linearizable)
}

fn ret(c: &Call) -> u64 {
    c.complete_us.unwrap_or(u64::MAX)
}

fn check_group(calls: &[&Call], budget_states: u64) -> Verdict {
    let mut ops: Vec<&Call> = calls.to_vec();
    ops.sort_by_key(|c| (c.invoke_us, ret(c)));
    let n = ops.len();
    let words = n.div_ceil(64);
    let completed: Vec<usize> = (0..n).filter(|&i| ops[i].complete_us.is_some()).collect();
    let is_done = |lin: &[u64]| completed.iter().all(|&i| lin[i / 64] >> (i % 64) & 1 == 1);

    let start = (vec![0u64; words], KvState::new());
    let mut seen: HashSet<(Vec<u64>, KvState)> = HashSet::new();
    seen.insert(start.clone());
    let mut stack = vec![start];
    // The configuration that linearized the most operations, for the report.
    let mut deepest: (usize, Vec<u64>) = (0, vec![0u64; words]);
    while let Some((lin, state)) = stack.pop() {
        if is_done(&lin) {
            return Verdict::Linearizable;
        }
        if seen.len() as u64 > budget_states {
            return Verdict::Unknown(format!(
                "gave up after {budget_states} configurations on {n} operations"
            ));
        }
        let count: usize = lin.iter().map(|w| w.count_ones() as usize).sum();
        if count > deepest.0 {
            deepest = (count, lin.clone());
        }
        let min_ret = (0..n)
            .filter(|&i| lin[i / 64] >> (i % 64) & 1 == 0)
            .map(|i| ret(ops[i]))
            .min()
            .unwrap_or(u64::MAX);
        // Push in reverse so the earliest-invoked candidate is tried first.
        let mut next = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.invoke_us > min_ret {
                break;
            }
            if lin[i / 64] >> (i % 64) & 1 == 1 {
                continue;
            }
            let mut s = state.clone();
            let got = step(&mut s, &op.kind);
            if op.value.as_ref().is_some_and(|want| !want.admits(&got)) {
                continue;
            }
            let mut l = lin.clone();
            l[i / 64] |= 1 << (i % 64);
            let cfg = (l, s);
            if seen.insert(cfg.clone()) {
                next.push(cfg);
            }
        }
        stack.extend(next.into_iter().rev());
    }
    let lin = deepest.1;
    let stuck: Vec<String> = (0..n)
        .filter(|&i| lin[i / 64] >> (i % 64) & 1 == 0 && ops[i].complete_us.is_some())
        .take(4)
        .map(|i| format!("{:?}", ops[i]))
        .collect();
    Verdict::Violation(format!(
        "no linearization of {n} operations; at most {} could be ordered; \
         the first that could not follow them: {}",
        deepest.0,
        stuck.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::Op;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(client: usize, t0: u64, t1: Option<u64>, k: &str, v: &str, prev: Option<&str>) -> Call {
        Call {
            client,
            invoke_us: t0,
            complete_us: t1,
            kind: OpKind::Write(Batch {
                guards: vec![],
                ops: vec![Op::Set(b(k), b(v))],
            }),
            value: t1.map(|_| {
                OpValue::Write(WriteResult::Applied {
                    prev: prev.map(b),
                    count: 0,
                })
            }),
        }
    }

    fn get(client: usize, t0: u64, t1: u64, k: &str, v: Option<&str>) -> Call {
        Call {
            client,
            invoke_us: t0,
            complete_us: Some(t1),
            kind: OpKind::Get(b(k)),
            value: Some(OpValue::Get(v.map(b))),
        }
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_a_violation() {
        let u = vec![b("a"), b("b")];
        let h = vec![
            set(0, 0, Some(10), "a", "1", None),
            get(1, 20, 30, "a", None),
        ];
        assert!(matches!(check(&h, &u, 10_000), Verdict::Violation(_)));
        let ok = vec![
            set(0, 0, Some(10), "a", "1", None),
            get(1, 5, 30, "a", None),
        ];
        assert_eq!(check(&ok, &u, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn open_write_may_or_may_not_happen() {
        let u = vec![b("a")];
        let seen = vec![
            set(0, 0, None, "a", "1", None),
            get(1, 20, 30, "a", Some("1")),
        ];
        assert_eq!(check(&seen, &u, 10_000), Verdict::Linearizable);
        let unseen = vec![set(0, 0, None, "a", "1", None), get(1, 20, 30, "a", None)];
        assert_eq!(check(&unseen, &u, 10_000), Verdict::Linearizable);
        // Once seen, it cannot be unseen.
        let flicker = vec![
            set(0, 0, None, "a", "1", None),
            get(1, 20, 30, "a", Some("1")),
            get(1, 40, 50, "a", None),
        ];
        assert!(matches!(check(&flicker, &u, 10_000), Verdict::Violation(_)));
    }

    #[test]
    fn a_refusal_without_the_value_found_admits_only_its_code_and_key() {
        let u = vec![b("a")];
        let guarded = |value: WriteResult| Call {
            client: 1,
            invoke_us: 20,
            complete_us: Some(30),
            kind: OpKind::Write(Batch {
                guards: vec![nacre_proto::Guard::Absent(b("a"))],
                ops: vec![Op::Set(b("a"), b("2"))],
            }),
            value: Some(OpValue::Write(value)),
        };
        let refused = |key: &str| WriteResult::Refused {
            code: nacre_proto::ErrorCode::AssertionFailed,
            key: b(key),
        };
        let h = vec![set(0, 0, Some(10), "a", "1", None), guarded(refused("a"))];
        assert_eq!(check(&h, &u, 10_000), Verdict::Linearizable);
        // Another key, or a refusal where the guard held, is no order.
        let h = vec![set(0, 0, Some(10), "a", "1", None), guarded(refused("b"))];
        assert!(matches!(check(&h, &u, 10_000), Verdict::Violation(_)));
        let h = vec![guarded(refused("a"))];
        assert!(matches!(check(&h, &u, 10_000), Verdict::Violation(_)));
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        let u = vec![b("a")];
        // Every subset of the reads is a configuration; the impossible set
        // (its prev was never written) keeps the search from finishing.
        let mut h: Vec<Call> = (0..12).map(|i| get(i, 0, 100, "a", None)).collect();
        h.push(set(12, 0, Some(100), "a", "1", Some("never")));
        assert!(matches!(check(&h, &u, 50), Verdict::Unknown(_)));
    }
}
