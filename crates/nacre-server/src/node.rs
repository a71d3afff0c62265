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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_proto::{ErrorCode, ErrorReply, Member};
use nacre_raft::TlogStorage;
use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, HardState, Snapshot, SnapshotMetadata,
};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::lease::Lease;
use crate::state::{Committed, MemberRecord, Outcome, StateMachine};
use crate::transport::{Inbound, Transport};
use crate::ServerError;

/// Where a node's outgoing raft messages go: the TCP transport in
/// production, the simulated network in the simulator.
pub trait PeerSink: Send {
    fn send(&mut self, msgs: Vec<raft::eraftpb::Message>);
    fn set_peer(&mut self, id: u64, addr: String);
    fn remove_peer(&mut self, id: u64);
}

impl PeerSink for Transport {
    fn send(&mut self, msgs: Vec<raft::eraftpb::Message>) {
        Transport::send(self, msgs)
    }
    fn set_peer(&mut self, id: u64, addr: String) {
        Transport::set_peer(self, id, addr)
    }
    fn remove_peer(&mut self, id: u64) {
        Transport::remove_peer(self, id)
    }
}

/// A membership request for the raft loop.
#[derive(Debug, Clone)]
pub enum Membership {
    AddLearner(u64, MemberRecord),
    Promote(u64),
    Remove(u64),
    TransferLeader(u64),
}

/// A stable raft id from a node name (FNV-1a, never 0): every node, and
/// the leader adding a learner, computes the same id with no coordination.
pub fn name_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// Names of the store snapshots that back raft snapshots.
const SNAPSHOT_NAME_PREFIX: &str = "raft-";

/// What a write's proposal comes back with: its log index and outcome.
pub type WriteReply = Result<(u64, Outcome), ErrorReply>;
/// A consistent read may proceed once the node has applied this index.
pub type ReadReply = Result<u64, ErrorReply>;

/// What the raft loop is asked to do (from clients and peers).
pub enum Msg {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<WriteReply>,
    },
    Read {
        reply: oneshot::Sender<ReadReply>,
    },
    Membership {
        change: Membership,
        reply: oneshot::Sender<Result<u64, ErrorReply>>,
    },
    Peer(Inbound),
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

    fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop_notify.notify_waiters();
    }
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

pub struct NodeOptions {
    pub id: u64,
    /// Members to bootstrap a brand-new cluster with (ignored once the
    /// data directory holds a log); empty with `join`.
    pub initial_members: Vec<(u64, MemberRecord)>,
    /// Start empty and wait to be added by the cluster's leader.
    pub join: bool,
    pub preferred_leader: Option<u64>,
    pub cluster_id: String,
    pub peer_listen: String,
    pub data_dir: PathBuf,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Confirm leadership for reads by lease (no round) or by a quorum
    /// heartbeat round (`ReadOnlyOption::Safe`).
    pub reads_by_lease: bool,
    /// The monotonic clock leases are measured on ([`crate::clock`]).
    pub clock: Arc<dyn Clock>,
    pub proposals_pending_max: usize,
    pub checkpoint_entries: u64,
    /// Entries kept in the tlog behind a checkpoint, for lagging followers.
    pub tlog_tail_entries: u64,
    /// Deliberate bugs for the simulator to prove its checker catches them;
    /// all off in production.
    pub planted: Planted,
}

/// Bugs the simulator (crates/nacre-sim) can switch on in one node to show
/// that its checks fail when the code is wrong. Per node rather than a
/// global, so simulations of the correct build can run alongside in one
/// test process. Everything is off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// A follower answers a consistent read at once with its own applied
    /// index, skipping the leadership check.
    pub follower_reads: bool,
    /// The tlog is never fsynced after an append: writes are acknowledged
    /// (and acknowledged to the leader) before they are durable.
    pub ack_before_fsync: bool,
    /// The lease as it was before it had a clock: counted in ticks from
    /// when a quorum's replies arrived. Ticks stop while the process is
    /// stopped, so a leader resumed after a pause still believes it.
    pub tick_lease: bool,
}

/// A read-index round in flight: raft answers it with a read state once a
/// quorum acknowledged the heartbeats carrying its context.
struct ReadRound {
    /// The tick count when asked (raft drops a round silently on a leader
    /// change, so an old one is asked again).
    asked_tick: u64,
    /// The clock when asked, before its heartbeats left: where a lease
    /// confirmed by this round starts.
    sent_us: u64,
    term: u64,
    /// Empty for a round that only renews the lease.
    waiters: Vec<oneshot::Sender<ReadReply>>,
}

struct Pending {
    term: u64,
    reply: oneshot::Sender<WriteReply>,
}

/// What a raft snapshot taken by this node describes.
#[derive(Default)]
struct SnapState {
    applied: u64,
    term: u64,
    conf: ConfState,
}

/// One raft member: its log, state machine and loop state. Production runs
/// it on its own thread ([`Node::start`]); the simulator drives the same
/// methods ([`Node::step`], [`Node::tick`], [`Node::process`]) itself.
pub struct Node {
    raw: RawNode<TlogStorage>,
    /// The runtime that starts the TCP transport; none in the simulator,
    /// whose sink is given up front.
    rt: Option<tokio::runtime::Handle>,
    transport: Option<Box<dyn PeerSink>>,
    inbound_tx: SyncSender<Inbound>,
    snap_state: Arc<Mutex<SnapState>>,
    /// Snapshots received, by index, waiting for raft to accept them.
    snapshots_in: HashMap<u64, PathBuf>,
    membership_pending: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, ErrorReply>>)>,
    was_leader: bool,
    /// When (in ticks) each peer was last heard from: only the planted
    /// tick-counted lease reads it.
    last_heard: HashMap<u64, u64>,
    lease: Lease,
    /// The context of the lease-renewing round in flight, if any.
    renewal: Option<u64>,
    tlog: TlogStorage,
    sm: StateMachine,
    rx: Receiver<Msg>,
    status: Arc<Status>,
    opts: NodeOptions,
    /// Writes proposed by this node as leader, by log index.
    pending: BTreeMap<u64, Pending>,
    /// Read-index rounds in flight, by context id.
    reads_asked: HashMap<u64, ReadRound>,
    ticks: u64,
    /// Reads whose read index is known, waiting for apply to reach it.
    reads_ready: Vec<(u64, oneshot::Sender<ReadReply>)>,
    reads_new: Vec<oneshot::Sender<ReadReply>>,
    read_ctx_next: u64,
    checkpointed: u64,
    shutting_down: bool,
}

/// Takes (or reuses) a store snapshot of the applied state for raft to
/// ship to a lagging or new follower; its data names the store snapshot.
fn take_snapshot(store: &nacre_store::Store, state: &Mutex<SnapState>) -> Result<Snapshot, String> {
    let st = state.lock();
    let name = format!("{SNAPSHOT_NAME_PREFIX}{:020}", st.applied);
    let existing = store.list_snapshots();
    if !existing.iter().any(|s| s.name == name) {
        store.create_snapshot(&name).map_err(|e| e.to_string())?;
        // Keep the newest two: one may still be streaming.
        let mut ours: Vec<String> = existing
            .into_iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with(SNAPSHOT_NAME_PREFIX))
            .collect();
        ours.sort();
        while ours.len() > 1 {
            let old = ours.remove(0);
            let _ = store.drop_snapshot(&old);
        }
    }
    let mut snap = Snapshot {
        data: name.into_bytes().into(),
        ..Default::default()
    };
    let meta = snap.mut_metadata();
    meta.index = st.applied;
    meta.term = st.term;
    meta.set_conf_state(st.conf.clone());
    Ok(snap)
}

fn err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Raft(e.to_string())
}

impl Node {
    /// Opens the raft node over a recovered tlog and state machine and runs
    /// it on its own thread.
    pub(crate) fn start(
        tlog: TlogStorage,
        sm: StateMachine,
        opts: NodeOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<(NodeHandle, std::thread::JoinHandle<Result<(), ServerError>>), ServerError> {
        let (node, handle) = Node::new(tlog, sm, opts, Some(rt), None)?;
        let thread = std::thread::Builder::new()
            .name("nacre-raft".into())
            .spawn(move || node.run())?;
        Ok((handle, thread))
    }

    /// Opens the raft node without running it. With `sink`, outgoing
    /// messages go there (the simulator); without, a TCP transport is
    /// started on `rt` when there are peers.
    pub fn new(
        tlog: TlogStorage,
        mut sm: StateMachine,
        opts: NodeOptions,
        rt: Option<tokio::runtime::Handle>,
        sink: Option<Box<dyn PeerSink>>,
    ) -> Result<(Node, NodeHandle), ServerError> {
        {
            let mut log = tlog.write();
            let fresh =
                log.conf_state().voters.is_empty() && log.last_index() == 0 && sm.applied().0 == 0;
            if fresh && !opts.join {
                // A brand-new cluster starts from a snapshot at index 1
                // holding the initial members, the same on every member.
                // Its conf state is then part of snapshot metadata, so a
                // node that joins later receives it with its first snapshot.
                let voters: Vec<u64> = opts.initial_members.iter().map(|(id, _)| *id).collect();
                let changes: Vec<(u64, Option<MemberRecord>)> = opts
                    .initial_members
                    .iter()
                    .map(|(id, m)| (*id, Some(m.clone())))
                    .collect();
                sm.apply_members(1, 1, &changes)?;
                sm.checkpoint()?;
                let mut meta = SnapshotMetadata {
                    index: 1,
                    term: 1,
                    ..Default::default()
                };
                meta.set_conf_state(ConfState {
                    voters,
                    ..Default::default()
                });
                log.apply_snapshot(&meta).map_err(err)?;
                let hs = HardState {
                    term: 1,
                    commit: 1,
                    ..Default::default()
                };
                log.set_hard_state(&hs).map_err(err)?;
                log.sync().map_err(err)?;
            }
        }
        let (applied, applied_term) = sm.applied();
        {
            let mut log = tlog.write();
            let installed = sm.installed_snapshot()?;
            // A fresh tlog next to a store that has applied entries is a
            // lost tlog, whatever the store says: the votes it held are
            // gone, and the node must not run (below).
            let fresh = log.last_index() == 0 && log.hard_state().term == 0;
            if let Some((index, term, conf)) = installed.filter(|s| s.0 == applied && !fresh) {
                if applied > log.last_index() {
                    // A snapshot went into the store, but the node stopped
                    // (a crash, a disk error) before its tlog recorded it:
                    // record it now, as the install would have.
                    tracing::warn!(
                        index,
                        tlog_last = log.last_index(),
                        "finishing a snapshot install that a crash interrupted"
                    );
                    let mut meta = SnapshotMetadata {
                        index,
                        term,
                        ..Default::default()
                    };
                    meta.set_conf_state(conf);
                    log.apply_snapshot(&meta).map_err(err)?;
                    let mut hs: HardState = log.hard_state();
                    if hs.term < term {
                        // As if it had heard of the term: no vote in it.
                        hs.term = term;
                        hs.vote = 0;
                    }
                    hs.commit = hs.commit.max(index);
                    log.set_hard_state(&hs).map_err(err)?;
                    log.sync().map_err(err)?;
                }
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
            // Always quorum rounds inside raft: the lease is ours, on a
            // clock (lease.rs); raft-rs's own trusts a tick count.
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        cfg.validate().map_err(err)?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());

        let snap_state = Arc::new(Mutex::new(SnapState {
            applied,
            term: applied_term,
            conf: tlog.read().conf_state(),
        }));
        {
            let store = sm.store().clone();
            let snap_state = snap_state.clone();
            tlog.set_snapshot_provider(Box::new(move |_request_index| {
                take_snapshot(&store, &snap_state)
                    .map_err(|e| raft::Error::Store(raft::StorageError::Other(e.into())))
            }));
        }
        let raw = RawNode::new(&cfg, tlog.clone(), &logger).map_err(err)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(opts.proposals_pending_max);

        // Peer traffic arrives on its own channel (the transport's type);
        // a small thread forwards it into the loop's queue.
        let (inbound_tx, inbound_rx) =
            std::sync::mpsc::sync_channel::<Inbound>(opts.proposals_pending_max);
        {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("nacre-peer-in".into())
                .spawn(move || {
                    while let Ok(m) = inbound_rx.recv() {
                        if tx.send(Msg::Peer(m)).is_err() {
                            return;
                        }
                    }
                })?;
        }

        let status = Arc::new(Status::default());
        status.applied.store(applied, Ordering::Relaxed);
        status.id.store(opts.id, Ordering::Relaxed);
        let mut members = sm.members()?;
        if members.is_empty() {
            // A joining node knows the initial members from its config
            // until the leader's snapshot tells it the truth.
            members = opts.initial_members.iter().cloned().collect();
        }
        *status.members.write() = members;
        let mut node = Node {
            raw,
            rt,
            transport: sink,
            inbound_tx,
            snap_state,
            snapshots_in: HashMap::new(),
            membership_pending: BTreeMap::new(),
            was_leader: false,
            last_heard: HashMap::new(),
            lease: Lease::new(Lease::duration_us(opts.election_ticks, opts.tick_ms)),
            renewal: None,
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
        let voters = node.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(node.opts.id) {
            node.raw.campaign().map_err(err)?;
        }
        Ok((node, NodeHandle { tx, status }))
    }

    /// Hands one request or peer message to the node.
    pub fn step(&mut self, m: Msg) -> Result<(), ServerError> {
        self.handle(m)
    }

    /// One raft tick (`tick_ms` of time).
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        self.retry_stale_reads();
        self.renew_lease();
        if self.ticks.is_multiple_of(self.opts.election_ticks as u64) {
            self.maybe_transfer_to_preferred();
        }
    }

    /// Does everything the inputs so far call for: read-index rounds,
    /// persisting (one fsync), sending, applying, answering.
    pub fn process(&mut self) -> Result<(), ServerError> {
        self.ask_reads();
        self.on_ready()?;
        self.publish();
        Ok(())
    }

    /// raft-rs draws each randomized election timeout from the thread's
    /// RNG, which no seed reaches. The simulator calls this before every
    /// tick with a draw from its own seed, so elections replay exactly.
    /// `ticks` must lie in `election_ticks..2 * election_ticks`.
    pub fn set_election_timeout_ticks(&mut self, ticks: usize) {
        self.raw.raft.set_randomized_election_timeout(ticks);
    }

    /// The current term and role, for the simulator to notice when raft
    /// would have drawn a new election timeout.
    pub fn raft_role(&self) -> (u64, StateRole) {
        (self.raw.raft.term, self.raw.raft.state)
    }

    /// Whether the node stopped itself (it was removed from the cluster).
    pub fn is_stopping(&self) -> bool {
        self.shutting_down
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    pub fn store(&self) -> &nacre_store::Store {
        self.sm.store()
    }

    /// Starts the peer transport once there is anyone to talk to, and
    /// points it at every member's current address.
    fn sync_transport(&mut self) -> Result<(), ServerError> {
        let members = self.status.members.read().clone();
        let others: Vec<(u64, String)> = members
            .iter()
            .filter(|(id, _)| **id != self.opts.id)
            .map(|(id, m)| (*id, m.peer.clone()))
            .collect();
        if self.transport.is_none() && (others.is_empty() && !self.opts.join) {
            return Ok(());
        }
        if self.transport.is_none() {
            let Some(rt) = self.rt.clone() else {
                return Ok(());
            };
            let store = self.sm.store().clone();
            let source: crate::transport::SnapshotSource = Arc::new(move |snap: &Snapshot| {
                let name = String::from_utf8(snap.data.to_vec()).map_err(|e| e.to_string())?;
                let txn = store.snapshot(&name).map_err(|e| e.to_string())?;
                let iter = txn
                    .iter()
                    .filter(|kv| {
                        !kv.as_ref()
                            .is_ok_and(|(k, _)| crate::state::is_local_key(k))
                    })
                    .map(|kv| kv.map_err(|e| e.to_string()));
                Ok(Box::new(iter)
                    as Box<
                        dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), String>> + Send,
                    >)
            });
            let cfg = crate::transport::TransportConfig::new(
                self.opts.cluster_id.clone(),
                self.opts.id,
                self.opts.peer_listen.clone(),
                self.opts.data_dir.join("snapshots-in"),
            );
            std::fs::create_dir_all(&cfg.snapshot_dir)?;
            let t = rt
                .block_on(Transport::start(cfg, self.inbound_tx.clone(), source))
                .map_err(|source| ServerError::Listen {
                    addr: self.opts.peer_listen.clone(),
                    source,
                })?;
            tracing::info!(addr = %t.local_addr(), "peer transport listening");
            self.transport = Some(Box::new(t));
        }
        let t = self.transport.as_mut().expect("started above");
        for (id, addr) in others {
            t.set_peer(id, addr);
        }
        Ok(())
    }

    fn run(mut self) -> Result<(), ServerError> {
        // On this thread (not a runtime's) the transport's async start can
        // be waited for.
        let result = self.sync_transport().and_then(|()| self.run_loop());
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft loop stopped");
        }
        self.status.mark_stopped();
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
                self.tick();
                next_tick += tick;
                // After a long stall, do not replay every missed tick.
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            self.process()?;
        }
    }

    fn leader_hint(&self) -> ErrorReply {
        self.status.not_master()
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
            Msg::Membership { change, reply } => self.propose_membership(change, reply),
            Msg::Peer(Inbound::Raft(mut m)) => {
                self.last_heard.insert(m.from, self.ticks);
                use raft::eraftpb::MessageType;
                if self.must_ignore_vote(&m) {
                    return Ok(());
                }
                // The leader may remember more of this node's log than it
                // still has (it lost its data and rejoined): raft-rs would
                // panic on a commit index past the log, so cap it; the
                // leader then finds the gap and sends a snapshot.
                if m.get_msg_type() == MessageType::MsgHeartbeat {
                    m.commit = m.commit.min(self.raw.raft.raft_log.last_index());
                }
                // A message from an old term or an unknown peer is refused
                // by raft itself; that is not our error.
                if let Err(e) = self.raw.step(m) {
                    tracing::debug!(error = %e, "raft refused a peer message");
                }
            }
            Msg::Peer(Inbound::Unreachable(id)) => self.raw.report_unreachable(id),
            Msg::Peer(Inbound::SnapshotStatus { to, ok }) => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                if ok {
                    self.status.snapshots_sent.fetch_add(1, Ordering::Relaxed);
                }
                self.raw.report_snapshot(to, status);
            }
            Msg::Peer(Inbound::Snapshot { msg, path }) => {
                let index = msg.get_snapshot().get_metadata().index;
                self.snapshots_in.insert(index, path);
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "raft refused a snapshot");
                }
            }
            Msg::Shutdown => self.shutting_down = true,
        }
        Ok(())
    }

    /// Vote requests this node must not answer. A node that starts empty
    /// to (re)join has none of the log it may once have acknowledged: it
    /// must not help elect anyone until a snapshot has given it the
    /// cluster's state. And a node in its first election timeout after a
    /// start may have heard a leader just before it stopped, and promised
    /// (by acknowledging a lease round) not to vote for another before its
    /// timer ran out; the restart forgot that leader, so it waits one full
    /// timeout before it votes. A transfer the leader asked for is exempt:
    /// that leader gave up its lease when it began it.
    fn must_ignore_vote(&self, m: &raft::eraftpb::Message) -> bool {
        use raft::eraftpb::MessageType;
        if !matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) {
            return false;
        }
        let conf = self.raw.raft.prs().conf();
        let empty = conf.voters().ids().is_empty() && conf.learners().is_empty();
        let transfer = &m.context[..] == b"CampaignTransfer";
        let young = self.ticks < self.opts.election_ticks as u64;
        empty || (young && !transfer && m.term > self.raw.raft.term)
    }

    /// Starts handing leadership to `to`: from now on this term serves no
    /// read by lease (the transferee's campaign overrides the promise the
    /// followers made).
    fn transfer_leader(&mut self, to: u64) {
        self.lease.transfer_started(self.raw.raft.term);
        self.raw.transfer_leader(to);
    }

    fn propose_membership(
        &mut self,
        change: Membership,
        reply: oneshot::Sender<Result<u64, ErrorReply>>,
    ) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.leader_hint()));
            return;
        }
        let conf = self.raw.raft.prs().conf().clone();
        let known = |id: u64| conf.voters().contains(id) || conf.learners().contains(&id);
        let bad = |m: &str| ErrorReply::new(ErrorCode::BadInput, m.to_string());
        let (single, context) = match change {
            Membership::TransferLeader(id) => {
                if !conf.voters().contains(id) {
                    let _ = reply.send(Err(bad("only a voter can become the leader")));
                    return;
                }
                self.transfer_leader(id);
                let _ = reply.send(Ok(self.sm.applied().0));
                return;
            }
            Membership::AddLearner(id, m) => {
                if known(id) {
                    let _ = reply.send(Err(bad("a member with this name exists already")));
                    return;
                }
                (
                    ConfChangeSingle {
                        change_type: ConfChangeType::AddLearnerNode,
                        node_id: id,
                        ..Default::default()
                    },
                    m.encode(),
                )
            }
            Membership::Promote(id) => {
                if !conf.learners().contains(&id) {
                    let _ = reply.send(Err(bad("not a learner of this cluster")));
                    return;
                }
                (
                    ConfChangeSingle {
                        change_type: ConfChangeType::AddNode,
                        node_id: id,
                        ..Default::default()
                    },
                    Vec::new(),
                )
            }
            Membership::Remove(id) => {
                if !known(id) {
                    let _ = reply.send(Err(bad("not a member of this cluster")));
                    return;
                }
                if conf.voters().ids().len() == 1 && conf.voters().contains(id) {
                    let _ = reply.send(Err(bad("cannot remove the last voter")));
                    return;
                }
                (
                    ConfChangeSingle {
                        change_type: ConfChangeType::RemoveNode,
                        node_id: id,
                        ..Default::default()
                    },
                    Vec::new(),
                )
            }
        };
        let cc = ConfChangeV2 {
            // One change at a time is a simple change; several would go
            // through joint consensus and leave it automatically.
            transition: ConfChangeTransition::Auto,
            changes: vec![single].into(),
            context: context.into(),
            ..Default::default()
        };
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                self.membership_pending
                    .insert(index, (self.raw.raft.term, reply));
            }
            Err(e) => {
                // raft-rs allows one pending conf change at a time.
                let _ = reply.send(Err(ErrorReply::new(
                    ErrorCode::Busy,
                    format!("membership change refused: {e}"),
                )));
            }
        }
    }

    /// Every read that arrived since the last call is served by the lease
    /// at once, or shares one read-index round.
    fn ask_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        if self.raw.raft.state != StateRole::Leader {
            let planted_applied = self
                .opts
                .planted
                .follower_reads
                .then(|| self.sm.applied().0);
            for r in std::mem::take(&mut self.reads_new) {
                let _ = r.send(match planted_applied {
                    Some(applied) => Ok(applied),
                    None => Err(self.leader_hint()),
                });
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
        // The clock is read now, after these reads were taken off the
        // queue: a lease that held then held when each of them began.
        if self.opts.reads_by_lease && self.lease_valid() {
            self.status
                .read_rounds_by_lease
                .fetch_add(1, Ordering::Relaxed);
            let index = self.raw.raft.raft_log.committed;
            self.reads_ready
                .extend(reads.into_iter().map(|r| (index, r)));
            return;
        }
        // Without a lease the round goes to a quorum, which a deposed or
        // cut-off leader cannot get; its answer also renews the lease.
        self.status
            .read_rounds_by_quorum
            .fetch_add(1, Ordering::Relaxed);
        self.ask_round(reads);
    }

    /// Sends a read-index round (heartbeats carrying a fresh context).
    fn ask_round(&mut self, waiters: Vec<oneshot::Sender<ReadReply>>) -> u64 {
        let ctx = self.read_ctx_next;
        self.read_ctx_next += 1;
        let round = ReadRound {
            asked_tick: self.ticks,
            sent_us: self.opts.clock.now_us(),
            term: self.raw.raft.term,
            waiters,
        };
        self.reads_asked.insert(ctx, round);
        self.raw.read_index(ctx.to_le_bytes().to_vec());
        ctx
    }

    /// Whether this leader may answer reads from its lease now.
    fn lease_valid(&self) -> bool {
        if self.opts.planted.tick_lease {
            return self.tick_lease_valid();
        }
        let term = self.raw.raft.term;
        self.lease.valid(term, self.opts.clock.now_us())
    }

    /// Keeps the lease from running out while this node leads: once less
    /// than half of it is left, one round (at most one in flight) renews
    /// it. A round costs a heartbeat to each peer, every half lease.
    fn renew_lease(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        if !self.opts.reads_by_lease || !leader || self.renewal.is_some() {
            return;
        }
        if !self.raw.raft.commit_to_current_term() {
            return;
        }
        let left_us = self
            .lease
            .remaining_us(self.raw.raft.term, self.opts.clock.now_us());
        if left_us < self.lease.length_us() / 2 {
            self.renewal = Some(self.ask_round(Vec::new()));
        }
    }

    /// The planted bug (`Planted::tick_lease`): the lease as it was, a
    /// quorum of voters heard from within E/2 - 1 ticks, counted from when
    /// their replies arrived.
    fn tick_lease_valid(&self) -> bool {
        let lease_ticks = (self.opts.election_ticks as u64 / 2)
            .saturating_sub(1)
            .max(1);
        let voters = self.raw.raft.prs().conf().voters().ids();
        let quorum = voters.len() / 2 + 1;
        let fresh = voters
            .iter()
            .filter(|id| {
                *id == self.opts.id
                    || self
                        .last_heard
                        .get(id)
                        .is_some_and(|t| self.ticks - t < lease_ticks)
            })
            .count();
        fresh >= quorum
    }

    /// A read state came back: the round's reads may proceed at `index`,
    /// and a quorum heard this leader after the round was sent.
    fn round_answered(&mut self, ctx: u64, index: u64) {
        let Some(round) = self.reads_asked.remove(&ctx) else {
            return;
        };
        if self.renewal == Some(ctx) {
            self.renewal = None;
        }
        if self.raw.raft.state == StateRole::Leader && round.term == self.raw.raft.term {
            self.lease.confirmed(round.term, round.sent_us);
        }
        self.reads_ready
            .extend(round.waiters.into_iter().map(|w| (index, w)));
    }

    /// Rounds that got no answer within an election timeout are given up:
    /// their reads go back in the queue (and fail there if this node is no
    /// longer the leader), a renewal is asked again.
    fn retry_stale_reads(&mut self) {
        let limit = self.opts.election_ticks as u64;
        let ticks = self.ticks;
        let stale: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, r)| ticks - r.asked_tick > limit)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if self.renewal == Some(ctx) {
                self.renewal = None;
            }
            if let Some(round) = self.reads_asked.remove(&ctx) {
                self.reads_new.extend(round.waiters);
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), ServerError> {
        if !self.raw.has_ready() {
            self.release_reads();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // Messages of this Ready (a leader's appends and heartbeats) may go
        // out before the entries are persisted.
        self.send_messages(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
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
            if let Ok(ctx) = <[u8; 8]>::try_from(&rs.request_ctx[..]) {
                self.round_answered(u64::from_le_bytes(ctx), rs.index);
            }
        }
        if wrote && rd.must_sync() && !self.opts.planted.ack_before_fsync {
            self.tlog.write().sync().map_err(err)?;
            self.status.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        // These (votes, append acknowledgements) promise persisted state.
        self.send_messages(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        self.send_messages(light.take_messages());
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

    fn send_messages(&mut self, msgs: Vec<raft::eraftpb::Message>) {
        if msgs.is_empty() {
            return;
        }
        match &mut self.transport {
            Some(t) => t.send(msgs),
            None => tracing::debug!(n = msgs.len(), "no peer transport; messages dropped"),
        }
    }

    /// Replaces the state with a snapshot that raft accepted: the store
    /// from the streamed file, then the tlog starts after it.
    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), ServerError> {
        let meta = snap.get_metadata().clone();
        let Some(path) = self.snapshots_in.remove(&meta.index) else {
            return Err(ServerError::Raft(format!(
                "raft accepted a snapshot at index {} whose data never arrived",
                meta.index
            )));
        };
        let pairs = crate::transport::read_snapshot_file(&path)?;
        self.sm
            .install_snapshot(pairs, meta.index, meta.term, meta.get_conf_state())?;
        let _ = std::fs::remove_file(&path);
        self.tlog.write().apply_snapshot(&meta).map_err(err)?;
        self.snapshots_in.retain(|i, _| *i > meta.index);
        *self.status.members.write() = self.sm.members()?;
        {
            let mut st = self.snap_state.lock();
            st.applied = meta.index;
            st.term = meta.term;
            st.conf = meta.get_conf_state().clone();
        }
        self.checkpointed = meta.index;
        self.status.applied.store(meta.index, Ordering::Release);
        self.status
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(index = meta.index, "installed a snapshot from the leader");
        self.sync_transport()
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
        self.applied_moved();
        Ok(())
    }

    fn applied_moved(&mut self) {
        let (applied, term) = self.sm.applied();
        self.status.applied.store(applied, Ordering::Release);
        let mut st = self.snap_state.lock();
        st.applied = applied;
        st.term = term;
    }

    fn apply_conf_change(&mut self, e: &Entry) -> Result<(), ServerError> {
        let mut changes: Vec<(u64, Option<MemberRecord>)> = Vec::new();
        let cs = if e.get_entry_type() == EntryType::EntryConfChange {
            let mut cc = ConfChange::default();
            protobuf::Message::merge_from_bytes(&mut cc, &e.data).map_err(err)?;
            self.raw.apply_conf_change(&cc).map_err(err)?
        } else {
            let mut cc = ConfChangeV2::default();
            protobuf::Message::merge_from_bytes(&mut cc, &e.data).map_err(err)?;
            for c in cc.changes.iter() {
                match c.change_type {
                    ConfChangeType::AddLearnerNode => {
                        if let Some(m) = MemberRecord::decode(&cc.context) {
                            changes.push((c.node_id, Some(m)));
                        }
                    }
                    ConfChangeType::RemoveNode => changes.push((c.node_id, None)),
                    ConfChangeType::AddNode => {}
                }
            }
            self.raw.apply_conf_change(&cc).map_err(err)?
        };
        self.tlog.write().set_conf_state(&cs).map_err(err)?;
        // Rounds acknowledged under the old voters prove nothing about
        // the new ones' quorums.
        self.lease.revoke();
        // The member table changes in the same step as the applied index,
        // so a restart never sees one without the other.
        self.sm.apply_members(e.index, e.term, &changes)?;
        {
            let mut members = self.status.members.write();
            for (id, m) in &changes {
                match m {
                    Some(m) => {
                        members.insert(*id, m.clone());
                    }
                    None => {
                        members.remove(id);
                    }
                }
            }
        }
        self.snap_state.lock().conf = cs.clone();
        self.applied_moved();
        for (id, m) in &changes {
            if let (None, Some(t)) = (m, &mut self.transport) {
                t.remove_peer(*id);
            }
        }
        self.sync_transport()?;
        if let Some((term, reply)) = self.membership_pending.remove(&e.index) {
            let r = if term == e.term {
                Ok(e.index)
            } else {
                Err(self.leader_hint())
            };
            let _ = reply.send(r);
        }
        if changes
            .iter()
            .any(|(id, m)| *id == self.opts.id && m.is_none())
        {
            tracing::warn!("this node was removed from the cluster; stopping");
            self.shutting_down = true;
        }
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

    fn publish(&mut self) {
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

    fn publish_progress(&self, is_leader: bool) {
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

    /// The preferred leader takes leadership back once it has caught up.
    fn maybe_transfer_to_preferred(&mut self) {
        let Some(pref) = self.opts.preferred_leader else {
            return;
        };
        if pref == self.opts.id || self.raw.raft.state != StateRole::Leader {
            return;
        }
        if !self.raw.raft.prs().conf().voters().contains(pref) {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        if self
            .raw
            .raft
            .prs()
            .get(pref)
            .is_some_and(|p| p.matched == last)
        {
            tracing::info!(to = pref, "handing leadership to the preferred leader");
            self.transfer_leader(pref);
        }
    }

    fn fail_all(&mut self, why: ErrorReply) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(why.clone()));
        }
        for (_, round) in std::mem::take(&mut self.reads_asked) {
            for w in round.waiters {
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
