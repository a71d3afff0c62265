//! Fenced writes: a few lock holders beside the workload, through the
//! same faults. Each takes the lock the way the client's recipe does (a
//! key of its own under `LOCK_PREFIX`, created where it was absent; its
//! create revision is the fencing token; the holder is the lowest one),
//! writes `FENCED_KEY` guarded by `Guard::LockHeld`, lets go, or stalls
//! holding its token while the lock expires under it (all lock keys are
//! deleted, as the leader's revoke of an expired lease deletes them). A
//! stalled holder that comes back writes with its old token: the state
//! machine must refuse it (`Fenced`).
//!
//! The check (`checks.rs`) replays the log and holds every acknowledged
//! fenced write to the lock's holder at its index: two holders' writes
//! never interleave. `Bug::SkipFence` plants a state machine that ignores
//! the fence, which the check must catch.
//!
//! The keys start with 0xff, past every workload key and every range the
//! workload or the final state check reads, so the linearizability
//! checker never sees them.

use bytes::Bytes;
use nacre_proto::{Batch, Command, ErrorCode, Guard, Op};
use rand::Rng;
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::{Ev, Msg, Sim, WriteReply};
use nacre_server::state::Outcome;

pub(super) const LOCK_PREFIX: &[u8] = b"\xfflock/";
pub(super) const FENCED_KEY: &[u8] = b"\xffdata";

/// How long a fencer waits for an answer before it gives the step up.
const FENCE_TIMEOUT_US: u64 = 2_000_000;

/// What a fencer asked for.
enum Step {
    Acquire(Bytes),
    Write(u64),
    Release,
    Expire,
}

struct FencePending {
    rx: oneshot::Receiver<WriteReply>,
    step: Step,
    node: usize,
    deadline_us: u64,
}

/// One lock contender.
#[derive(Default)]
pub(super) struct Fencer {
    /// The node it sends to (the leader, as far as it knows).
    node: usize,
    /// Its lock key and that key's create revision (the token).
    held: Option<(Bytes, u64)>,
    /// Steps taken: names its lock keys and its written values.
    steps: u64,
    pending: Option<FencePending>,
}

impl Sim {
    /// Starts the fencers: `n` of them, waking every few milliseconds.
    pub(super) fn start_fencers(&mut self, n: usize) {
        for f in 0..n {
            let node = self.rng.random_range(0..self.nodes.len());
            self.fencers.push(Fencer {
                node,
                ..Fencer::default()
            });
            let d = self.rng.random_range(0..20_000);
            self.at(d, Ev::Fence(f));
        }
    }

    /// Fencer `f` wakes: it takes its answer, or sends its next step.
    pub(super) fn fencer_wake(&mut self, f: usize) {
        if let Some(p) = self.fencers[f].pending.take() {
            if !self.fence_answer(f, p) {
                self.at(5_000, Ev::Fence(f));
                return;
            }
        }
        if !self.workload {
            return;
        }
        let step = self.fence_next(f);
        self.fence_send(f, step);
        let d = self.rng.random_range(2_000..20_000);
        self.at(d, Ev::Fence(f));
    }

    /// The next step: mostly fenced writes while holding; sometimes the
    /// lock expires under everyone, or the holder lets go or stalls.
    fn fence_next(&mut self, f: usize) -> Option<(Step, Batch)> {
        let roll = self.rng.random_range(0..100);
        let prefix = Bytes::from_static(LOCK_PREFIX);
        let fencer = &mut self.fencers[f];
        fencer.steps += 1;
        if roll < 4 {
            return Some((Step::Expire, one_op(Op::DeletePrefix(prefix))));
        }
        let Some((key, token)) = fencer.held.clone() else {
            let mut key = LOCK_PREFIX.to_vec();
            key.extend_from_slice(format!("f{f}-{}", fencer.steps).as_bytes());
            let key = Bytes::from(key);
            let batch = Batch {
                guards: vec![Guard::Absent(key.clone())],
                ops: vec![Op::Set(key.clone(), Bytes::new())],
            };
            return Some((Step::Acquire(key), batch));
        };
        match roll {
            4..=74 => {
                let value = Bytes::from(format!("f{f}-{}", fencer.steps));
                let batch = Batch {
                    guards: vec![Guard::LockHeld { prefix, token }],
                    ops: vec![Op::Set(Bytes::from_static(FENCED_KEY), value)],
                };
                Some((Step::Write(token), batch))
            }
            75..=84 => {
                fencer.held = None;
                Some((Step::Release, one_op(Op::Remove(key))))
            }
            // Stalls, still believing it holds the lock.
            _ => None,
        }
    }

    fn fence_send(&mut self, f: usize, step: Option<(Step, Batch)>) {
        let Some((step, batch)) = step else {
            return;
        };
        let mut node = self.fencers[f].node;
        if self.nodes[node].node.is_none() {
            match self.up_node() {
                Some(n) => node = n,
                None => return,
            }
        }
        let data = Command {
            session: None,
            batch,
        }
        .encode();
        let (reply, rx) = oneshot::channel();
        self.fencers[f].pending = Some(FencePending {
            rx,
            step,
            node,
            deadline_us: self.now_us + FENCE_TIMEOUT_US,
        });
        self.deliver(node, Msg::Propose { data, reply });
    }

    /// Takes fencer `f`'s answer to `p`; false while it is still due.
    fn fence_answer(&mut self, f: usize, p: FencePending) -> bool {
        let mut p = p;
        let answer = match p.rx.try_recv() {
            Err(TryRecvError::Empty) if self.now_us < p.deadline_us => {
                self.fencers[f].pending = Some(p);
                return false;
            }
            Err(_) => return true,
            Ok(a) => a,
        };
        match (answer, &p.step) {
            (Ok((index, Outcome::Applied { .. })), Step::Acquire(key)) => {
                self.fencers[f].held = Some((key.clone(), index));
            }
            (Ok((index, Outcome::Applied { .. })), Step::Write(token)) => {
                self.stats.fenced_writes_acked += 1;
                self.fenced_acked.push((index, *token));
            }
            (Ok((_, Outcome::Failed { code, .. })), Step::Write(_)) => {
                if code == ErrorCode::Fenced {
                    self.stats.fenced_writes_refused += 1;
                }
                // It lost the lock: it takes it again.
                self.fencers[f].held = None;
            }
            (Ok(_), Step::Expire) => self.stats.lock_expiries += 1,
            (Err(e), _) if e.code == ErrorCode::NotMaster => self.fence_follow(f, p.node),
            _ => {}
        }
        true
    }

    /// Fencer `f` was told `asked` is not the leader: it tries the one
    /// `asked` names, else another node.
    fn fence_follow(&mut self, f: usize, asked: usize) {
        let leader = self.nodes[asked].node.as_ref().map(|n| {
            n.status()
                .leader_id
                .load(std::sync::atomic::Ordering::Acquire)
        });
        let by_id = leader.and_then(|id| self.nodes.iter().position(|n| n.id == id));
        self.fencers[f].node = by_id.unwrap_or_else(|| self.rng.random_range(0..self.nodes.len()));
    }
}

fn one_op(op: Op) -> Batch {
    Batch {
        guards: vec![],
        ops: vec![op],
    }
}
