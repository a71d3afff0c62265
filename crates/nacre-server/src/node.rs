//! The Raft driver: one thread owns the raft-rs `RawNode`, the tlog and
//! the state machine, and runs the loop tick → step → ready → persist →
//! apply. Client tasks talk to it through a bounded channel, so the
//! consensus core stays single-threaded and free of async code (the same
//! loop can later run inside the simulator).
//!
//! Group commit falls out of the loop: every proposal that arrives while
//! the previous fsync runs is appended by the next `Ready` and made durable
//! by one fsync.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_proto::{ErrorCode, ErrorReply};
use nacre_raft::TlogStorage;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, HardState};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use crate::state::{Committed, Outcome, StateMachine};
use crate::ServerError;

/// What a write's proposal comes back with: its log index and outcome.
pub type WriteReply = Result<(u64, Outcome), ErrorReply>;
/// A consistent read may proceed once the node has applied this index.
pub type ReadReply = Result<u64, ErrorReply>;

pub(crate) enum Msg {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<WriteReply>,
    },
    Read {
        reply: oneshot::Sender<ReadReply>,
    },
    Shutdown,
}

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
    pub stopped: AtomicBool,
}

/// The client side's handle on the loop.
#[derive(Clone)]
pub struct NodeHandle {
    tx: SyncSender<Msg>,
    pub status: Arc<Status>,
}

fn going_down() -> ErrorReply {
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

    pub fn shutdown(&self) {
        // A full queue still sees the disconnect once the loop drains it;
        // the loop also stops when every handle is gone.
        let _ = self.tx.try_send(Msg::Shutdown);
    }
}

pub struct NodeOptions {
    pub id: u64,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub proposals_pending_max: usize,
    pub checkpoint_entries: u64,
    /// Entries kept in the tlog behind a checkpoint, for lagging followers.
    pub tlog_tail_entries: u64,
}

struct Pending {
    term: u64,
    reply: oneshot::Sender<WriteReply>,
}

pub(crate) struct Node {
    raw: RawNode<TlogStorage>,
    tlog: TlogStorage,
    sm: StateMachine,
    rx: Receiver<Msg>,
    status: Arc<Status>,
    opts: NodeOptions,
    /// Writes proposed by this node as leader, by log index.
    pending: BTreeMap<u64, Pending>,
    /// Reads waiting for their read-index round, by context id, with the
    /// tick count when asked (raft drops a round silently on a leader
    /// change, so an old one is asked again).
    reads_asked: HashMap<u64, (u64, Vec<oneshot::Sender<ReadReply>>)>,
    ticks: u64,
    /// Reads whose read index is known, waiting for apply to reach it.
    reads_ready: Vec<(u64, oneshot::Sender<ReadReply>)>,
    reads_new: Vec<oneshot::Sender<ReadReply>>,
    read_ctx_next: u64,
    checkpointed: u64,
    shutting_down: bool,
}

fn err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Raft(e.to_string())
}

impl Node {
    /// Opens the raft node over a recovered tlog and state machine.
    pub(crate) fn start(
        tlog: TlogStorage,
        sm: StateMachine,
        opts: NodeOptions,
    ) -> Result<(NodeHandle, std::thread::JoinHandle<Result<(), ServerError>>), ServerError> {
        let (applied, _) = sm.applied();
        {
            let mut log = tlog.write();
            // A brand-new node bootstraps a one-member group. (Joining an
            // existing cluster comes with replication.)
            if log.conf_state().voters.is_empty() && log.last_index() == 0 {
                let cs = raft::eraftpb::ConfState {
                    voters: vec![opts.id],
                    ..Default::default()
                };
                log.set_conf_state(&cs).map_err(err)?;
                log.sync().map_err(err)?;
            }
            if applied > log.last_index() {
                return Err(ServerError::Raft(format!(
                    "the store has applied index {applied} but the tlog ends at {}: \
                     the tlog was lost or belongs to another store",
                    log.last_index()
                )));
            }
            // Applied entries were committed, whatever the persisted hard
            // state says (its commit field may lag: it is written lazily).
            let mut hs: HardState = log.hard_state();
            if hs.commit < applied {
                hs.commit = applied;
                log.set_hard_state(&hs).map_err(err)?;
                log.sync().map_err(err)?;
            }
        }
        let cfg = raft::Config {
            id: opts.id,
            election_tick: opts.election_ticks,
            heartbeat_tick: opts.heartbeat_ticks,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::LeaseBased,
            ..Default::default()
        };
        cfg.validate().map_err(err)?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&cfg, tlog.clone(), &logger).map_err(err)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(opts.proposals_pending_max);
        let status = Arc::new(Status::default());
        status.applied.store(applied, Ordering::Relaxed);
        let mut node = Node {
            raw,
            tlog,
            sm,
            rx,
            status: status.clone(),
            checkpointed: applied,
            opts,
            pending: BTreeMap::new(),
            reads_asked: HashMap::new(),
            reads_ready: Vec::new(),
            reads_new: Vec::new(),
            read_ctx_next: 1,
            ticks: 0,
            shutting_down: false,
        };
        // A single voter need not wait an election timeout to lead.
        if node.raw.raft.prs().conf().voters().ids().len() == 1 {
            node.raw.campaign().map_err(err)?;
        }
        let thread = std::thread::Builder::new()
            .name("nacre-raft".into())
            .spawn(move || node.run())?;
        Ok((NodeHandle { tx, status }, thread))
    }

    fn run(mut self) -> Result<(), ServerError> {
        let result = self.run_loop();
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft loop stopped");
        }
        self.status.stopped.store(true, Ordering::SeqCst);
        self.fail_all(going_down());
        // Leave the store durable up to what was applied, so the next start
        // replays less of the tlog.
        if result.is_ok() {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "final checkpoint failed");
            }
        }
        result
    }

    fn run_loop(&mut self) -> Result<(), ServerError> {
        let tick = Duration::from_millis(self.opts.tick_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(m) => self.handle(m)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Take everything already queued: these share one fsync. The
            // channel's bound keeps the batch bounded.
            while let Ok(m) = self.rx.try_recv() {
                self.handle(m)?;
            }
            if self.shutting_down {
                return Ok(());
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                self.ticks += 1;
                self.retry_stale_reads();
                next_tick += tick;
                // After a long stall, do not replay every missed tick.
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            self.ask_reads();
            self.on_ready()?;
            self.publish();
        }
    }

    fn leader_hint(&self) -> ErrorReply {
        ErrorReply::new(ErrorCode::NotMaster, "this node is not the leader")
    }

    fn handle(&mut self, m: Msg) -> Result<(), ServerError> {
        match m {
            Msg::Propose { data, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.leader_hint()));
                    return Ok(());
                }
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {
                        let index = self.raw.raft.raft_log.last_index();
                        let term = self.raw.raft.term;
                        self.status.proposals.fetch_add(1, Ordering::Relaxed);
                        self.pending.insert(index, Pending { term, reply });
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(self.leader_hint()));
                    }
                    Err(e) => {
                        let _ =
                            reply.send(Err(ErrorReply::new(ErrorCode::Internal, e.to_string())));
                    }
                }
            }
            Msg::Read { reply } => self.reads_new.push(reply),
            Msg::Shutdown => self.shutting_down = true,
        }
        Ok(())
    }

    /// One read-index round serves every read that arrived since the last.
    fn ask_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        if self.raw.raft.state != StateRole::Leader {
            for r in std::mem::take(&mut self.reads_new) {
                let _ = r.send(Err(self.leader_hint()));
            }
            return;
        }
        // A new leader knows the commit index only once an entry of its own
        // term commits; raft drops read-index requests until then, so they
        // wait here.
        if !self.raw.raft.commit_to_current_term() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_new);
        let ctx = self.read_ctx_next;
        self.read_ctx_next += 1;
        self.raw.read_index(ctx.to_le_bytes().to_vec());
        self.reads_asked.insert(ctx, (self.ticks, reads));
    }

    /// Reads whose round got no answer within an election timeout go back
    /// in the queue (and fail there if this node is no longer the leader).
    fn retry_stale_reads(&mut self) {
        let limit = self.opts.election_ticks as u64;
        let ticks = self.ticks;
        let stale: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, (asked, _))| ticks - asked > limit)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, waiters)) = self.reads_asked.remove(&ctx) {
                self.reads_new.extend(waiters);
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), ServerError> {
        if !self.raw.has_ready() {
            self.release_reads();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if !rd.snapshot().is_empty() {
            return Err(ServerError::Raft(
                "snapshot install is not supported by a single node".into(),
            ));
        }
        // Committed entries in this Ready were persisted by an earlier one.
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        let mut wrote = false;
        if !rd.entries().is_empty() {
            self.tlog.write().append(rd.entries()).map_err(err)?;
            wrote = true;
        }
        if let Some(hs) = rd.hs() {
            self.tlog.write().set_hard_state(hs).map_err(err)?;
            wrote = true;
        }
        for rs in rd.take_read_states() {
            let Ok(ctx) = <[u8; 8]>::try_from(&rs.request_ctx[..]) else {
                continue;
            };
            if let Some((_, waiters)) = self.reads_asked.remove(&u64::from_le_bytes(ctx)) {
                self.reads_ready
                    .extend(waiters.into_iter().map(|w| (rs.index, w)));
            }
        }
        if wrote && rd.must_sync() {
            self.tlog.write().sync().map_err(err)?;
            self.status.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut log = self.tlog.write();
            let mut hs = log.hard_state();
            hs.commit = commit;
            // Durable with the next sync; a lagging commit is repaired at
            // start from the store's applied index.
            log.set_hard_state(&hs).map_err(err)?;
        }
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.release_reads();
        self.maybe_checkpoint()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), ServerError> {
        let mut batch: Vec<&Entry> = Vec::new();
        for e in &entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => batch.push(e),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_normal(std::mem::take(&mut batch))?;
                    self.apply_conf_change(e)?;
                }
            }
        }
        self.apply_normal(batch)
    }

    fn apply_normal(&mut self, entries: Vec<&Entry>) -> Result<(), ServerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let committed: Vec<Committed<'_>> = entries
            .iter()
            .map(|e| Committed {
                index: e.index,
                term: e.term,
                data: &e.data,
            })
            .collect();
        let outcomes = self.sm.apply(&committed)?;
        for (e, outcome) in entries.iter().zip(outcomes) {
            if let Some(p) = self.pending.remove(&e.index) {
                let reply = if p.term == e.term {
                    Ok((e.index, outcome))
                } else {
                    // Another leader's entry took this index: ours was
                    // dropped and never applied.
                    Err(self.leader_hint())
                };
                let _ = p.reply.send(reply);
            }
        }
        let (applied, _) = self.sm.applied();
        self.status.applied.store(applied, Ordering::Release);
        Ok(())
    }

    fn apply_conf_change(&mut self, e: &Entry) -> Result<(), ServerError> {
        let cs = if e.get_entry_type() == EntryType::EntryConfChange {
            let mut cc = ConfChange::default();
            protobuf::Message::merge_from_bytes(&mut cc, &e.data).map_err(err)?;
            self.raw.apply_conf_change(&cc).map_err(err)?
        } else {
            let mut cc = ConfChangeV2::default();
            protobuf::Message::merge_from_bytes(&mut cc, &e.data).map_err(err)?;
            self.raw.apply_conf_change(&cc).map_err(err)?
        };
        self.tlog.write().set_conf_state(&cs).map_err(err)?;
        // The conf change is in the log; the store's applied index moves
        // past it with the next batch, and replaying it is harmless.
        Ok(())
    }

    fn release_reads(&mut self) {
        if self.reads_ready.is_empty() {
            return;
        }
        let (applied, _) = self.sm.applied();
        let ready = std::mem::take(&mut self.reads_ready);
        for (index, reply) in ready {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else {
                self.reads_ready.push((index, reply));
            }
        }
    }

    fn maybe_checkpoint(&mut self) -> Result<(), ServerError> {
        let (applied, _) = self.sm.applied();
        if applied >= self.checkpointed + self.opts.checkpoint_entries {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Makes the store durable up to the applied index, then drops tlog
    /// entries the store now covers (keeping a tail for lagging peers).
    fn checkpoint(&mut self) -> Result<(), ServerError> {
        let covered = self.sm.checkpoint()?;
        let compact_to = covered.saturating_sub(self.opts.tlog_tail_entries);
        let mut log = self.tlog.write();
        // Make sure the persisted commit index is not behind what the store
        // now durably holds.
        log.sync().map_err(err)?;
        if compact_to > log.first_index() {
            log.compact(compact_to).map_err(err)?;
        }
        self.checkpointed = covered;
        self.status.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn publish(&self) {
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

    fn fail_all(&mut self, why: ErrorReply) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(why.clone()));
        }
        for (_, (_, waiters)) in std::mem::take(&mut self.reads_asked) {
            for w in waiters {
                let _ = w.send(Err(why.clone()));
            }
        }
        for (_, w) in std::mem::take(&mut self.reads_ready) {
            let _ = w.send(Err(why.clone()));
        }
        for w in std::mem::take(&mut self.reads_new) {
            let _ = w.send(Err(why.clone()));
        }
    }
}
