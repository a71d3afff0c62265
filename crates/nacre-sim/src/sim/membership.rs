//! Membership changes among the random faults, done as an operator does
//! them (docs/cli.md): remove a member, and once that has applied, stop
//! it, wipe its data directory and add it back as a learner started with
//! `initial_cluster_state = existing`; promote the learner once it has
//! caught up (the leader refuses sooner: `learner_behind`). A removal is
//! one of the random faults; the steps after it follow 0.2–1 s apart.
//! One change at a time, each sent to the leader as `Msg::Membership`,
//! and the next step waits for its answer. After the workload the
//! operator finishes a cycle it began, during the healing time; a node
//! still not added back at the end is left out of the final checks.
//!
//! A change without a definite answer (the leader crashed, stepped down
//! or was cut off; the operator gave up after 3 s) is sent again, to the
//! leader of the moment, until one comes: a refusal that says it is done
//! already (`not a member`, `exists already` for a learner the leader
//! lists, `not a learner` for a voter it lists) counts as applied. A new
//! leader may not have applied the latest change yet, so until it has,
//! it refuses what follows (adding back a node it still lists as a voter)
//! and the operator asks again later.

use nacre_proto::{ErrorCode, ErrorReply};
use nacre_server::node::Membership;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::{Ev, Msg, Sim};

/// How long the operator waits for a change's answer.
const CHANGE_TIMEOUT_US: u64 = 3_000_000;
/// When the operator asks again after no leader, a refusal, or no answer.
const RETRY_US: u64 = 200_000;

/// A change, by node position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Remove(usize),
    AddLearner(usize),
    Promote(usize),
}

struct InFlight {
    change: Change,
    reply: oneshot::Receiver<Result<u64, ErrorReply>>,
    deadline_us: u64,
}

/// The operator's state.
#[derive(Default)]
pub(super) struct Reconfig {
    /// A node taken out of the cluster and stopped, until it is added
    /// back.
    removed: Option<usize>,
    /// The change to send next: the step after the last one, or the same
    /// one again.
    next: Option<Change>,
    in_flight: Option<InFlight>,
}

impl Sim {
    /// The operator's next step: the change due, or (from the random
    /// faults, with nothing under way) the removal of any member, the
    /// leader too.
    pub(super) fn membership_step(&mut self) {
        if self.reconfig.in_flight.is_some() {
            return;
        }
        let Some(l) = self.leader() else {
            if self.reconfig.next.is_some() {
                self.at(RETRY_US, Ev::Membership);
            }
            return;
        };
        let change = match self.reconfig.next {
            Some(c) => c,
            // After the workload the operator only finishes what it began.
            None if !self.workload => return,
            None => Change::Remove(self.rng.random_range(0..self.nodes.len())),
        };
        if let Change::AddLearner(j) = change {
            self.rejoin(j);
        }
        let id = |i: usize| self.nodes[i].id;
        let membership = match change {
            Change::Remove(v) => Membership::Remove(id(v)),
            Change::AddLearner(j) => Membership::AddLearner(id(j), self.members[j].1.clone()),
            Change::Promote(j) => Membership::Promote(id(j), false),
        };
        let (tx, rx) = oneshot::channel();
        self.log(|| format!("membership: {change:?} asked of n{l}"));
        self.reconfig.next = Some(change);
        self.reconfig.in_flight = Some(InFlight {
            change,
            reply: rx,
            deadline_us: self.now_us + CHANGE_TIMEOUT_US,
        });
        self.deliver(
            l,
            Msg::Membership {
                change: membership,
                reply: tx,
            },
        );
    }

    /// Node `j`, removed and stopped, comes back on an empty disk, waiting
    /// to be added (`initial_cluster_state = existing`); already waiting,
    /// it is left alone.
    fn rejoin(&mut self, j: usize) {
        if self.nodes[j].node.is_some() {
            return;
        }
        let sn = &mut self.nodes[j];
        sn.vfs = nacre_vfs::sim::SimVfs::new(self.rng.random());
        sn.existing = true;
        sn.restart_pending = false;
        self.log(|| format!("n{j} wiped; restarts to join"));
        self.restart(j);
    }

    /// Takes the answer to the change in flight, if it came or the
    /// operator stopped waiting, and schedules the next step.
    pub(super) fn poll_membership(&mut self) {
        let Some(f) = self.reconfig.in_flight.as_mut() else {
            return;
        };
        let change = f.change;
        let answer = match f.reply.try_recv() {
            Ok(a) => Some(a),
            Err(TryRecvError::Empty) if self.now_us < f.deadline_us => return,
            Err(_) => None,
        };
        self.reconfig.in_flight = None;
        self.log(|| format!("membership: {change:?} answered {answer:?}"));
        let done = match answer {
            Some(Ok(_)) => true,
            Some(Err(e)) if e.code == ErrorCode::BadInput => self.done_already(change),
            // learner_behind, not_master, timeout, going_down, no answer.
            _ => {
                self.stats.membership_retried += 1;
                false
            }
        };
        if done {
            self.change_applied(change);
        }
        if self.reconfig.next.is_some() {
            let d = if done {
                self.rng.random_range(200_000..1_000_000)
            } else {
                RETRY_US
            };
            self.at(d, Ev::Membership);
        }
    }

    /// `change` was refused as invalid: whether because it is in place
    /// already, as the leader lists its members.
    fn done_already(&mut self, change: Change) -> bool {
        let Some(l) = self.leader() else {
            return false;
        };
        let status = self.nodes[l].node.as_ref().expect("up").status().clone();
        let progress = status.progress.lock().clone();
        let listed = |i: usize| progress.iter().find(|m| m.id == self.nodes[i].id);
        match change {
            Change::Remove(v) => listed(v).is_none(),
            Change::AddLearner(j) => listed(j).is_some_and(|m| !m.voter),
            Change::Promote(j) => listed(j).is_some_and(|m| m.voter),
        }
    }

    fn change_applied(&mut self, change: Change) {
        self.reconfig.next = match change {
            Change::Remove(v) => {
                // The operator stops the removed node (it stops itself
                // once it applies its removal, if it hears of it).
                self.crash(v, "removed from the cluster");
                self.reconfig.removed = Some(v);
                self.stats.members_removed += 1;
                Some(Change::AddLearner(v))
            }
            Change::AddLearner(j) => {
                self.reconfig.removed = None;
                self.stats.learners_added += 1;
                Some(Change::Promote(j))
            }
            Change::Promote(_) => {
                self.stats.learners_promoted += 1;
                None
            }
        };
    }

    /// Whether node `i` is out of the cluster: removed, and not added
    /// back yet (it may be running, waiting to be added).
    pub(super) fn is_removed(&self, i: usize) -> bool {
        self.reconfig.removed == Some(i)
    }
}
