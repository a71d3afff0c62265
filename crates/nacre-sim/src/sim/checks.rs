//! The checks after healing: every node up and converged (the same
//! applied index, the same store digest), the committed log replayed
//! through the model against every acknowledged write and every read, and
//! the linearizability search over the history.

use std::collections::BTreeMap;

use bytes::Bytes;
use nacre_proto::{Batch, Command, ErrorCode, Guard};
use raft::eraftpb::{Entry, EntryType};

use super::fence::LOCK_PREFIX;
use super::workload::read;
use super::{fnv, is_local_key, Node, Sim, COMMITTED_FIRST};
use crate::checker::{self, OpKind, OpValue, Verdict};
use crate::model::{self, KvState, WriteResult};

/// A read served at a known applied index, for the log-replay check.
pub(super) struct ReadObs {
    pub(super) node: usize,
    pub(super) applied: u64,
    pub(super) at_least: Option<u64>,
    pub(super) kind: OpKind,
    pub(super) value: OpValue,
}

impl Sim {
    /// All the checks, once the cluster has healed.
    pub(super) fn final_checks(&mut self) {
        self.replicas_check();
        self.linearizability_check();
        self.lease_checks();
    }

    /// Every member is up (a node removed and not added back is not one),
    /// and all have applied the same index into stores with the same
    /// digest; then the log replay. A member still down leaves nothing to
    /// compare, so the replay is skipped.
    fn replicas_check(&mut self) {
        let down: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_none() && !self.is_removed(i))
            .collect();
        if !down.is_empty() {
            self.fail(format!("nodes {down:?} are still down after healing"));
            return;
        }
        let (applied, digests): (Vec<u64>, Vec<u64>) = (0..self.nodes.len())
            .filter(|&i| !self.is_removed(i))
            .filter_map(|i| self.nodes[i].node.as_ref())
            .map(|n| (n.store_applied(), digest(n.store())))
            .unzip();
        if applied.iter().any(|a| *a != applied[0]) {
            self.fail(format!(
                "replicas did not converge after healing: applied {applied:?}"
            ));
        }
        if applied.iter().all(|a| *a == applied[0]) && digests.iter().any(|d| *d != digests[0]) {
            self.fail(format!(
                "replicas differ at the same applied index: digests {digests:x?}"
            ));
        }
        self.stats.final_index = applied[0];
        self.replay_check(applied[0]);
    }

    /// Replays the committed log through the model and holds every
    /// acknowledged write, every read and a member's final store to it.
    fn replay_check(&mut self, final_index: u64) {
        let Some(entries) = self.committed_log(final_index) else {
            return;
        };
        self.watchers_check(&entries);
        let replay = Replay::new(&entries);
        let mut bad = self.acked_mismatches(&replay, final_index);
        bad.extend(self.read_mismatches(&replay, final_index));
        bad.extend(self.fence_mismatches(&replay));
        let node = (0..self.nodes.len())
            .filter(|&i| !self.is_removed(i))
            .find_map(|i| self.nodes[i].node.as_ref())
            .expect("a member is up");
        let all = OpKind::Range {
            first: Bytes::new(),
            last: Bytes::from_static(b"\xff"),
        };
        let have = read(node.store(), &all);
        let want = checker::step(&mut replay.state.clone(), &all);
        if have != want {
            bad.push(format!(
                "final state {have:?} differs from the replayed log {want:?}"
            ));
        }
        for b in bad.into_iter().take(5) {
            self.fail(b);
        }
    }

    /// The committed log from `COMMITTED_FIRST` to `final_index`, after
    /// taking what the nodes committed last; `None` (and a failure) if the
    /// simulator missed any of it.
    fn committed_log(&mut self, final_index: u64) -> Option<Vec<Entry>> {
        for i in 0..self.nodes.len() {
            self.capture(i);
        }
        let first = COMMITTED_FIRST;
        let taken = first + self.committed.len() as u64;
        if taken <= final_index {
            self.fail(format!(
                "the simulator took committed entries up to {} only, of {final_index}",
                taken - 1
            ));
            return None;
        }
        let entries: Vec<Entry> = self
            .committed
            .iter()
            .take_while(|e| e.index <= final_index)
            .cloned()
            .collect();
        if let Some((pos, e)) = entries
            .iter()
            .enumerate()
            .find(|(pos, e)| e.index != first + *pos as u64)
        {
            self.fail(format!("entry {} taken at position {pos}", e.index));
            return None;
        }
        Some(entries)
    }

    /// Every acknowledged write must be in the log at the index it was
    /// acknowledged with, and answered what the replay gives.
    fn acked_mismatches(&self, replay: &Replay, final_index: u64) -> Vec<String> {
        let mut bad = Vec::new();
        for (pos, index, data) in &self.acked {
            let call = &self.history[*pos];
            match replay.results.get(index) {
                None => bad.push(format!(
                    "acknowledged write lost: {:?} acked at index {index}, final log ends at {final_index}",
                    call.kind
                )),
                Some((d, _)) if d != data => bad.push(format!(
                    "acknowledged write lost: index {index} holds another command than {:?}",
                    call.kind
                )),
                Some((_, r)) if Some(&OpValue::Write(r.clone())) != call.value.as_ref() => bad.push(
                    format!(
                        "write at {index} answered {:?}, but replaying the log gives {r:?}",
                        call.value
                    ),
                ),
                Some(_) => {}
            }
        }
        bad
    }

    /// Every fenced write acknowledged as applied must have been written
    /// by the lock's holder at its index: holders never interleave.
    fn fence_mismatches(&self, replay: &Replay) -> Vec<String> {
        let mut bad = Vec::new();
        for (index, token) in &self.fenced_acked {
            let holder = match replay.fence_holders.get(index) {
                Some(Some(h)) if h == token => continue,
                Some(Some(h)) => format!("held with token {h}"),
                Some(None) => "not held".to_string(),
                None => "a command without a fence".to_string(),
            };
            bad.push(format!(
                "fenced write with token {token} acknowledged at {index}, but there the lock \
                 was {holder}: two holders' writes interleaved"
            ));
        }
        bad
    }

    /// Every read served at a known applied index must have returned the
    /// state at that index, and an `at_least` read one at or past its
    /// bound.
    fn read_mismatches(&self, replay: &Replay, final_index: u64) -> Vec<String> {
        let mut bad = Vec::new();
        for r in &self.reads {
            let Some(st) = replay.states.get(r.applied as usize) else {
                bad.push(format!(
                    "n{} served a read at applied index {} beyond the final log ({final_index})",
                    r.node, r.applied
                ));
                continue;
            };
            let want = checker::step(&mut st.clone(), &r.kind);
            if want != r.value {
                bad.push(format!(
                    "n{} read {:?} at applied index {} (at_least {:?}) = {:?}, but the log says {want:?}",
                    r.node, r.kind, r.applied, r.at_least, r.value
                ));
            }
            if r.at_least.is_some_and(|w| r.applied < w) {
                bad.push(format!(
                    "an at_least({:?}) read went back to {}",
                    r.at_least, r.applied
                ));
            }
        }
        bad
    }

    /// The linearizability search over every write and consistent read.
    fn linearizability_check(&mut self) {
        match checker::check(&self.history, &self.keys, self.cfg.check_budget_states) {
            Verdict::Linearizable => {}
            Verdict::Violation(why) => self.fail(format!("not linearizable: {why}")),
            Verdict::Unknown(why) => self.unknown.push(format!("linearizability: {why}")),
        }
    }
}

/// The committed log replayed through the model.
struct Replay {
    /// `states[i]`: the user state after applying index `i`.
    states: Vec<KvState>,
    /// Each command's index: its bytes and what the model says it did.
    results: BTreeMap<u64, (Vec<u8>, WriteResult)>,
    /// The state after the last entry.
    state: KvState,
    /// At each fenced command's index: the lock's holder there (the
    /// lowest create revision under `LOCK_PREFIX`), if any.
    fence_holders: BTreeMap<u64, Option<u64>>,
}

/// Create revisions of the lock keys, kept beside the model (which has no
/// revisions) to judge `LockHeld` guards.
#[derive(Default)]
struct LockKeys(BTreeMap<Bytes, u64>);

impl LockKeys {
    fn holder(&self) -> Option<u64> {
        self.0.values().min().copied()
    }

    /// After the entry at `index`: keys that appeared were created there.
    fn update(&mut self, state: &KvState, index: u64) {
        let now: Vec<&Bytes> = state
            .range(Bytes::from_static(LOCK_PREFIX)..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(LOCK_PREFIX))
            .collect();
        self.0.retain(|k, _| now.contains(&k));
        for k in now {
            self.0.entry(k.clone()).or_insert(index);
        }
    }

    /// The model's answer to a batch, with its `LockHeld` guards judged
    /// here: a failed one fails the batch as the state machine does.
    fn apply(
        &self,
        state: &mut KvState,
        leases: &mut model::Leases,
        index: u64,
        batch: &Batch,
    ) -> (WriteResult, Option<Option<u64>>) {
        let fenced = |g: &Guard| matches!(g, Guard::LockHeld { .. });
        if !batch.guards.iter().any(fenced) {
            return (model::apply_with_leases(state, leases, index, batch), None);
        }
        let holder = self.holder();
        for g in &batch.guards {
            if let Guard::LockHeld { prefix, token } = g {
                if holder != Some(*token) {
                    let failed = WriteResult::Failed {
                        code: ErrorCode::Fenced,
                        key: prefix.clone(),
                        current: model::value(state, prefix),
                    };
                    return (failed, Some(holder));
                }
            }
        }
        let rest = Batch {
            guards: batch
                .guards
                .iter()
                .filter(|g| !fenced(g))
                .cloned()
                .collect(),
            ops: batch.ops.clone(),
        };
        let r = model::apply_with_leases(state, leases, index, &rest);
        (r, Some(holder))
    }
}

impl Replay {
    /// Replays `entries`, which start at `COMMITTED_FIRST`. A command whose
    /// session (client, sequence number) already applied is not applied
    /// again: it answers what the first did, as the session records make
    /// the state machine do.
    fn new(entries: &[Entry]) -> Replay {
        let first = COMMITTED_FIRST;
        let mut states: Vec<KvState> = vec![KvState::new(); first as usize];
        let mut results: BTreeMap<u64, (Vec<u8>, WriteResult)> = BTreeMap::new();
        let mut sessions: BTreeMap<(u64, u64), WriteResult> = BTreeMap::new();
        let mut state = KvState::new();
        let mut locks = LockKeys::default();
        let mut fence_holders = BTreeMap::new();
        let mut leases = model::Leases::default();
        for e in entries {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                let cmd = Command::decode(Bytes::copy_from_slice(&e.data)).expect("own command");
                let key = cmd.session.map(|s| (s.client_id, s.seq));
                let r = match key.and_then(|k| sessions.get(&k)) {
                    Some(first) => first.clone(),
                    None => {
                        let (r, holder) = locks.apply(&mut state, &mut leases, e.index, &cmd.batch);
                        if let Some(h) = holder {
                            fence_holders.insert(e.index, h);
                        }
                        if let (Some(k), WriteResult::Applied { .. }) = (key, &r) {
                            sessions.insert(k, r.clone());
                        }
                        r
                    }
                };
                results.insert(e.index, (e.data.to_vec(), r));
                locks.update(&state, e.index);
            }
            states.push(state.clone());
        }
        Replay {
            states,
            results,
            state,
            fence_holders,
        }
    }
}

/// A hash of every record in the store, in key order.
fn digest(store: &nacre_store::Store) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for kv in store.begin_read().iter() {
        let (k, v) = kv.expect("store read");
        if is_local_key(&k) {
            continue;
        }
        fnv(&mut h, &(k.len() as u64).to_le_bytes());
        fnv(&mut h, &k);
        fnv(&mut h, &(v.len() as u64).to_le_bytes());
        fnv(&mut h, &v);
    }
    h
}

trait StoreApplied {
    fn store_applied(&self) -> u64;
}

impl StoreApplied for Node {
    fn store_applied(&self) -> u64 {
        self.status()
            .applied
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
