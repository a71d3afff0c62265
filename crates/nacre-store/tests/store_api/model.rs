//! What the store must hold: a `BTreeMap` per committed state, and which
//! of those states a recovery may come back to.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Snapshots by name: the commit each holds and its data.
pub type Snaps = BTreeMap<String, (u64, Arc<Model>)>;

/// One committed (or possibly committed) state of the store.
#[derive(Clone)]
pub struct State {
    pub seq: u64,
    pub data: Arc<Model>,
    pub snaps: Arc<Snaps>,
}

/// The states the store went through since it was created, and the bounds
/// on where a recovery may land.
pub struct History {
    /// Every state that changed data or snapshots, by increasing seq. The
    /// last one may belong to a commit in flight when a fault hit.
    /// Commits that change neither (the cleaner's, `close`'s) are not here:
    /// the state at any seq is that of the last entry at or before it.
    states: Vec<State>,
    /// The newest seq acknowledged as durable: a recovery never goes back
    /// past it.
    pub durable: u64,
    /// The newest seq any operation so far may have committed: a recovery
    /// never lands past it.
    pub max_seq: u64,
}

impl History {
    /// A history that starts with the (durable) state `first`.
    pub fn new(first: State) -> History {
        History {
            durable: first.seq,
            max_seq: first.seq,
            states: vec![first],
        }
    }

    /// The newest state: what the store shows while no fault has hit.
    pub fn latest(&self) -> &State {
        self.states.last().expect("a history is never empty")
    }

    /// The state a store recovered at `seq` must hold.
    pub fn at(&self, seq: u64) -> &State {
        self.states
            .iter()
            .rev()
            .find(|s| s.seq <= seq)
            .expect("the history starts at the store's first state")
    }

    pub fn push(&mut self, state: State) {
        assert!(state.seq > self.latest().seq, "states out of order");
        self.states.push(state);
    }

    pub fn pop(&mut self) -> State {
        assert!(self.states.len() > 1, "the first state stays");
        self.states.pop().expect("checked above")
    }

    /// A recovery landed at `seq`: later states are gone for good, since
    /// the next commit reuses their sequence numbers.
    pub fn forget_after(&mut self, seq: u64) {
        self.states.retain(|s| s.seq <= seq);
        self.max_seq = seq;
    }
}

pub fn in_bounds(key: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
    };
    above && below
}

/// The entries of `model` between the bounds, in key order. Filtering
/// rather than `BTreeMap::range`, which panics on an inverted range (the
/// store must return nothing for one).
pub fn entries_in(
    model: &Model,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|(k, _)| in_bounds(k, lo, hi))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn entries_with_prefix(model: &Model, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
