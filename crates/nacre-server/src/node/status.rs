//! What other threads see of the node without asking its loop: the
//! [`Status`] published after every turn, and the [`NodeHandle`] through
//! which client tasks send requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use nacre_proto::{ErrorCode, ErrorReply, Member};
use parking_lot::{Mutex, RwLock};
use raft::StateRole;
use tokio::sync::oneshot;

use super::{Membership, Msg, Node, ReadReply, WriteReply};
use crate::state::MemberRecord;

/// Facts about the node that any thread may read without asking the loop.
#[derive(Debug, Default)]
pub struct Status {
    pub applied: AtomicU64,
    pub commit: AtomicU64,
    pub term: AtomicU64,
    pub leader_id: AtomicU64,
    pub is_leader: AtomicBool,
    pub first_index: AtomicU64,
    pub last_index: AtomicU64,
    pub checkpoints: AtomicU64,
    pub proposals: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Set once the raft loop has ended, for good; `stop_notify` wakes
    /// whoever waits for that (see [`Status::wait_stopped`]).
    pub stopped: AtomicBool,
    stop_notify: tokio::sync::Notify,
    pub snapshots_sent: AtomicU64,
    /// Read rounds answered from the leader lease, and by a quorum round.
    pub read_rounds_by_lease: AtomicU64,
    pub read_rounds_by_quorum: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// This node's raft id.
    pub id: AtomicU64,
    /// The node waits for the other initial members' answers before it
    /// creates the cluster (its data directory was empty).
    pub creating: AtomicBool,
    /// The loop stopped because the cluster removed this node.
    pub removed: AtomicBool,
    /// Who is who: names and addresses of every member.
    pub members: RwLock<BTreeMap<u64, MemberRecord>>,
    /// Voters, learners and (on the leader) replication progress.
    pub progress: Mutex<Vec<Member>>,
}

impl Status {
    /// A NotMaster error carrying the leader's client address, if known.
    pub fn not_master(&self) -> ErrorReply {
        let leader = self.leader_id.load(Ordering::Acquire);
        let (msg, hint) = match self.members.read().get(&leader) {
            Some(m) => (
                format!("this node is not the leader; {} is", m.name),
                Some(m.client.clone()),
            ),
            None => (
                "this node is not the leader, and no leader is known".to_string(),
                None,
            ),
        };
        ErrorReply::new(ErrorCode::NotMaster, msg).with_leader(hint)
    }

    pub fn leader_name(&self) -> Option<String> {
        let leader = self.leader_id.load(Ordering::Acquire);
        self.members.read().get(&leader).map(|m| m.name.clone())
    }

    /// Completes once the raft loop has ended, whether it was asked to, it
    /// failed, or the node was removed from the cluster.
    pub async fn wait_stopped(&self) {
        loop {
            // Registered before the check, so a stop between the check and
            // the await still wakes it.
            let woken = self.stop_notify.notified();
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    pub(super) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop_notify.notify_waiters();
    }
}

/// The client side's handle on the loop.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) tx: SyncSender<Msg>,
    pub status: Arc<Status>,
}

pub(super) fn going_down() -> ErrorReply {
    ErrorReply::new(ErrorCode::GoingDown, "the node is shutting down")
}

impl NodeHandle {
    fn send(&self, msg: Msg) -> Result<(), ErrorReply> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ErrorReply::new(
                ErrorCode::Busy,
                "too many requests queued for the log (proposals_pending_max)",
            )),
            Err(TrySendError::Disconnected(_)) => Err(going_down()),
        }
    }

    /// Proposes an encoded command and waits until it is applied.
    pub async fn propose(&self, data: Vec<u8>) -> WriteReply {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Propose { data, reply })?;
        rx.await.unwrap_or_else(|_| Err(going_down()))
    }

    /// Waits until a linearizable read may run: this node is the leader
    /// (by lease or a read-index round) and has applied everything
    /// committed before the read began.
    pub async fn read_barrier(&self) -> ReadReply {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Read { reply })?;
        rx.await.unwrap_or_else(|_| Err(going_down()))
    }

    /// Proposes a membership change; answers once it is applied.
    pub async fn membership(&self, change: Membership) -> Result<u64, ErrorReply> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Membership { change, reply })?;
        rx.await.unwrap_or_else(|_| Err(going_down()))
    }

    pub fn shutdown(&self) {
        // A full queue still sees the disconnect once the loop drains it;
        // the loop also stops when every handle is gone.
        let _ = self.tx.try_send(Msg::Shutdown);
    }
}

impl Node {
    pub(super) fn publish(&mut self) {
        let is_leader = self.raw.raft.state == StateRole::Leader;
        if self.was_leader && !is_leader {
            // Entries this node proposed may still commit under the next
            // leader, or be dropped: the client cannot know which, so the
            // answer is the one that says so (a session makes its retry
            // safe).
            let why = ErrorReply::new(
                ErrorCode::Timeout,
                "leadership moved before the write committed; it may or may not apply",
            );
            for (_, p) in std::mem::take(&mut self.pending) {
                let _ = p.reply.send(Err(why.clone()));
            }
            for (_, (_, reply)) in std::mem::take(&mut self.membership_pending) {
                let _ = reply.send(Err(why.clone()));
            }
            // raft forgot its rounds on stepping down; their reads are
            // answered (NotMaster) by the next ask_reads, not a timeout.
            self.lease.revoke();
            self.renewal = None;
            for (_, round) in std::mem::take(&mut self.reads_asked) {
                self.reads_new.extend(round.waiters);
            }
        }
        self.was_leader = is_leader;
        self.publish_progress(is_leader);
        let s = &self.status;
        let log = self.tlog.read();
        s.first_index.store(log.first_index(), Ordering::Relaxed);
        s.last_index.store(log.last_index(), Ordering::Relaxed);
        drop(log);
        s.commit
            .store(self.raw.raft.raft_log.committed, Ordering::Relaxed);
        s.term.store(self.raw.raft.term, Ordering::Relaxed);
        s.leader_id
            .store(self.raw.raft.leader_id, Ordering::Relaxed);
        s.is_leader
            .store(self.raw.raft.state == StateRole::Leader, Ordering::Release);
    }

    pub(super) fn publish_progress(&self, is_leader: bool) {
        let members = self.status.members.read();
        let conf = self.raw.raft.prs().conf();
        let mut ids: Vec<u64> = conf.voters().ids().iter().collect();
        ids.extend(conf.learners().iter().copied());
        ids.sort_unstable();
        ids.dedup();
        let leader = self.raw.raft.leader_id;
        let list = ids
            .into_iter()
            .map(|id| {
                let m = members.get(&id);
                let match_index = if is_leader {
                    self.raw.raft.prs().get(id).map_or(0, |p| p.matched)
                } else {
                    0
                };
                Member {
                    id,
                    name: m.map_or_else(|| format!("#{id}"), |m| m.name.clone()),
                    client: m.map(|m| m.client.clone()).unwrap_or_default(),
                    peer: m.map(|m| m.peer.clone()).unwrap_or_default(),
                    voter: conf.voters().contains(id),
                    leader: id == leader,
                    match_index,
                }
            })
            .collect();
        *self.status.progress.lock() = list;
    }
}
