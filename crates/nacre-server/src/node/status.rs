//! What other threads see of the node without asking its loop: the
//! [`Status`] published after every turn, and the [`NodeHandle`] through
//! which client tasks send requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use nacre_proto::{CoordResponse, ErrorCode, ErrorReply, Member};
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
    /// This node's [`Role`], as a `u8`; read it with [`Status::role`].
    role: AtomicU8,
    pub first_index: AtomicU64,
    pub last_index: AtomicU64,
    pub checkpoints: AtomicU64,
    pub proposals: AtomicU64,
    pub fsyncs: AtomicU64,
    /// When this node last heard from the leader of its current term, on
    /// [`NodeHandle::clock`] in µs (0: never). A leader counts as hearing
    /// from itself while it leads: with check-quorum it steps down within
    /// an election timeout of losing its quorum. `/health` and `ping`
    /// read it.
    pub leader_contact_us: AtomicU64,
    /// Set once the raft loop has ended, for good; `stop_notify` wakes
    /// whoever waits for that (see [`Status::wait_stopped`]).
    pub stopped: AtomicBool,
    stop_notify: tokio::sync::Notify,
    pub snapshots_sent: AtomicU64,
    /// Read rounds answered from the leader lease, and by a quorum round.
    pub read_rounds_by_lease: AtomicU64,
    pub read_rounds_by_quorum: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// Leases whose deadlines this node keeps (0 unless it leads).
    pub leases_tracked: AtomicU64,
    /// Revokes this node proposed for leases past their deadline.
    pub leases_expired: AtomicU64,
    /// Keep-alive requests this node answered as leader.
    pub lease_keep_alives: AtomicU64,
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
    /// What only `/metrics` needs: latency histograms and a few counts.
    pub metrics: crate::metrics::NodeMetrics,
}

/// What part a node plays in its cluster, as `statistics` and `cluster
/// status` report it. A learner is a non-voting member (it follows the
/// leader but never votes or campaigns); raft-rs calls it a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    Learner,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Learner => "learner",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }

    const ALL: [Role; 5] = [
        Role::Follower,
        Role::Learner,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ];
}

impl Status {
    /// This node's role as of the loop's last turn.
    pub fn role(&self) -> Role {
        let i = usize::from(self.role.load(Ordering::Acquire));
        Role::ALL.get(i).copied().unwrap_or(Role::Follower)
    }

    /// A NotMaster error carrying the leader's client address, if known.
    ///
    /// Never this node's own address, although the published `leader_id`
    /// may name it: the loop publishes once per turn, so a leader that
    /// stepped down during this turn (a former leader resumed from a pause
    /// learning of the new term, check-quorum) still has itself published,
    /// and a leader handing leadership over drops proposals while it still
    /// leads. A client sent back here would only ask again.
    pub fn not_master(&self) -> ErrorReply {
        let leader = self.leader_id.load(Ordering::Acquire);
        let me = self.id.load(Ordering::Relaxed);
        let members = self.members.read();
        let known = members.get(&leader).filter(|_| leader != me);
        let (msg, hint) = match known {
            Some(m) => (
                format!("this node is not the leader; {} is", m.name),
                Some(m.client.clone()),
            ),
            None if leader == me && me != 0 => (
                "this node is not the leader any more, and knows no other yet".to_string(),
                None,
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
    pub watches: Arc<crate::watch::WatchHub>,
    /// The clock the loop measures leases and leader contact on.
    pub clock: Arc<dyn crate::clock::Clock>,
}

pub(super) fn going_down() -> ErrorReply {
    ErrorReply::new(ErrorCode::GoingDown, "the node is shutting down")
}

impl NodeHandle {
    fn send(&self, msg: Msg) -> Result<(), ErrorReply> {
        // Counted before it is queued: the loop may take it (and count it
        // out) before `try_send` returns.
        self.status.metrics.queued();
        let sent = self.tx.try_send(msg);
        if sent.is_err() {
            self.status.metrics.dequeued();
        }
        match sent {
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

    /// Renews leases at the leader; `CoordResponse::Leases` in id order
    /// of the request.
    pub async fn lease_keep_alive(&self, ids: Vec<u64>) -> Result<CoordResponse, ErrorReply> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::LeaseKeepAlive { ids, reply })?;
        rx.await.unwrap_or_else(|_| Err(going_down()))
    }

    /// The time each lease has left on the leader's clock, in ms.
    pub async fn lease_remaining(&self, ids: Vec<u64>) -> Result<Vec<Option<u64>>, ErrorReply> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::LeaseRemaining { ids, reply })?;
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
            self.leases_on_stepping_down();
        }
        if !self.was_leader && is_leader {
            self.leases_on_leading();
        }
        self.was_leader = is_leader;
        self.publish_progress(is_leader);
        if is_leader {
            self.heard_from_leader();
        }
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
        s.metrics
            .leader_seen(self.raw.raft.term, self.raw.raft.leader_id);
        s.is_leader
            .store(self.raw.raft.state == StateRole::Leader, Ordering::Release);
        let role = match self.raw.raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Follower
                if self
                    .raw
                    .raft
                    .prs()
                    .conf()
                    .learners()
                    .contains(&self.opts.id) =>
            {
                Role::Learner
            }
            StateRole::Follower => Role::Follower,
        };
        let i = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
        s.role.store(i as u8, Ordering::Release);
        self.log_raft_events();
    }

    /// Notes that the leader of this term was heard from just now.
    pub(super) fn heard_from_leader(&self) {
        let now_us = self.opts.clock.now_us().max(1);
        self.status
            .leader_contact_us
            .store(now_us, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, client: &str) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            client: client.into(),
            peer: String::new(),
        }
    }

    fn status(me: u64, leader: u64) -> Status {
        let s = Status::default();
        s.id.store(me, Ordering::Relaxed);
        s.leader_id.store(leader, Ordering::Relaxed);
        let mut m = s.members.write();
        m.insert(1, member("n1", "127.0.0.1:1"));
        m.insert(3, member("n3", "127.0.0.1:3"));
        drop(m);
        s
    }

    #[test]
    fn not_master_names_another_leader() {
        let e = status(1, 3).not_master();
        assert_eq!(e.code, ErrorCode::NotMaster);
        assert_eq!(e.leader.as_deref(), Some("127.0.0.1:3"));
        assert!(e.message.contains("n3 is"), "{}", e.message);
    }

    #[test]
    fn not_master_never_names_the_node_that_sends_it() {
        // n3 still has itself published as leader (it stepped down, or is
        // resuming from a pause): it must not send clients back to itself.
        let e = status(3, 3).not_master();
        assert_eq!(e.code, ErrorCode::NotMaster);
        assert_eq!(e.leader, None);
        assert!(!e.message.contains("n3"), "{}", e.message);
    }
}
