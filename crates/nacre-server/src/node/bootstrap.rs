//! Opening a node: what a node with an empty data directory does (create
//! the cluster once every other initial member is new too, or wait for the
//! leader of the existing one), a brand-new cluster's bootstrap, the checks
//! of the recovered tlog against the store (and the repair of an
//! interrupted snapshot install), raft's configuration, the threads that
//! run it, and the progress a node that started empty logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nacre_raft::TlogStorage;
use parking_lot::Mutex;
use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};
use raft::RawNode;

use super::snapshot::{take_snapshot, SnapState};
use super::{Msg, Node, NodeHandle, NodeOptions, PeerSink, Status};
use crate::error::panic_message;
use crate::lease::Lease;
use crate::state::{MemberRecord, StateMachine};
use crate::transport::Inbound;
use crate::ServerError;

impl Node {
    /// Opens the raft node over a recovered tlog and state machine and runs
    /// it on its own thread. However the loop ends — asked to, failed, or
    /// panicked — the status says it stopped, so that whoever serves the
    /// node stops too instead of answering `GoingDown` forever.
    pub(crate) fn start(
        tlog: TlogStorage,
        sm: StateMachine,
        opts: NodeOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<(NodeHandle, std::thread::JoinHandle<Result<(), ServerError>>), ServerError> {
        let (node, handle) = Node::new(tlog, sm, opts, Some(rt), None)?;
        let status = handle.status.clone();
        let thread = std::thread::Builder::new()
            .name("nacre-raft".into())
            .spawn(move || {
                // A panic unwinds through `run`, dropping the node: every
                // pending request's reply channel closes (`GoingDown`) and
                // the queue refuses new ones, before the status says so.
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| node.run()))
                    .unwrap_or_else(|payload| {
                        let e = ServerError::Stopped {
                            thread: "raft thread",
                            why: format!("panicked: {}", panic_message(payload.as_ref())),
                        };
                        tracing::error!(error = %e, "raft loop stopped");
                        Err(e)
                    });
                status.mark_stopped();
                result
            })?;
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
        let start = empty_start(&tlog, &mut sm, &opts)?;
        check_tlog_against_store(&tlog, &sm)?;
        let (applied, applied_term) = sm.applied();
        let raw = new_raw_node(&opts, &tlog, applied)?;
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
                    .map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(e))))
            }));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(opts.proposals_pending_max);
        let (inbound_tx, peer_in) = spawn_peer_in(tx.clone(), opts.proposals_pending_max)?;
        let status = initial_status(&opts, &tlog, &sm)?;
        let mut node = Node {
            raw,
            rt,
            transport: sink,
            inbound_tx,
            peer_in: Some(peer_in),
            snap_state,
            snapshots_in: HashMap::new(),
            membership_pending: BTreeMap::new(),
            was_leader: false,
            seen: Default::default(),
            planted: Default::default(),
            lease: Lease::new(Lease::duration_us(opts.election_ticks, opts.tick_ms)),
            renewal: None,
            expiry: Default::default(),
            tlog,
            sm,
            rx,
            status: status.clone(),
            checkpointed: applied,
            applied_bytes_since_checkpoint: 0,
            opts,
            pending: BTreeMap::new(),
            reads_asked: HashMap::new(),
            reads_ready: Vec::new(),
            reads_new: Vec::new(),
            read_ctx_next: 1,
            ticks: 0,
            shutting_down: false,
            creating: None,
            catching_up: false,
        };
        match start {
            Start::Ready => {}
            Start::Creating => {
                node.creating = Some(Creation::default());
                node.status.creating.store(true, Ordering::Release);
            }
            Start::Waiting => node.catching_up = true,
        }
        node.campaign_if_alone()?;
        // Watches start after what the node has applied: the changes
        // before are not known here.
        node.opts.watches.reset(applied);
        let watches = node.opts.watches.clone();
        let clock = node.opts.clock.clone();
        Ok((
            node,
            NodeHandle {
                tx,
                status,
                watches,
                clock,
            },
        ))
    }

    /// A single voter need not wait an election timeout to lead.
    fn campaign_if_alone(&mut self) -> Result<(), ServerError> {
        let voters = self.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(self.opts.id) {
            self.raw.campaign()?;
        }
        Ok(())
    }

    /// The other initial members, whose answers decide whether this node
    /// creates the cluster.
    fn other_initial_members(&self) -> impl Iterator<Item = &(u64, MemberRecord)> {
        self.opts
            .initial_members
            .iter()
            .filter(|(id, _)| *id != self.opts.id)
    }

    /// Another initial member answered (`Msg::PeerState`) while this node
    /// waits to create the cluster. A member that has a term past the
    /// bootstrap's (1) or a log past its snapshot (index 1) has been part
    /// of a running cluster: then the cluster exists (and this node, if it
    /// was a member, lost its data), so it waits for the leader's
    /// snapshot, neither voting nor serving until then. Once every other
    /// member has answered that it is new too, no member can hold an entry
    /// beyond the bootstrap (a committed entry lives on a majority, in
    /// logs that are never emptied short of losing the disk), so
    /// bootstrapping cannot forget anything: the node creates the cluster.
    pub(super) fn peer_state(
        &mut self,
        id: u64,
        term: u64,
        last_index: u64,
    ) -> Result<(), ServerError> {
        if self.creating.is_none() {
            return Ok(());
        }
        let others: BTreeSet<u64> = self.other_initial_members().map(|(id, _)| *id).collect();
        if !others.contains(&id) {
            return Ok(());
        }
        if term > BOOTSTRAP_TERM || last_index > BOOTSTRAP_INDEX {
            let name = self.member_name(id);
            // Also when the others simply created the cluster first: this
            // node then joins it the same way.
            tracing::warn!(
                member = %name,
                term,
                last_index,
                "the cluster exists already ({name} is at term {term}, log index {last_index}) \
                 and this node's data directory is empty (if it was a member before, it lost \
                 its data): it waits for the leader to send it the cluster's state, and neither \
                 votes nor serves until then"
            );
            self.creating = None;
            self.status.creating.store(false, Ordering::Release);
            self.catching_up = true;
            return Ok(());
        }
        let Some(creation) = self.creating.as_mut() else {
            return Ok(());
        };
        creation.fresh.insert(id);
        if creation.fresh.len() == others.len() {
            tracing::info!("every initial member is new: creating the cluster");
            self.create_cluster()?;
        }
        Ok(())
    }

    /// Bootstraps the cluster now (every initial member is new) and starts
    /// raft over the bootstrapped log.
    fn create_cluster(&mut self) -> Result<(), ServerError> {
        bootstrap(&self.tlog, &mut self.sm, &self.opts)?;
        // raft read the empty log when it started: start it again over the
        // bootstrapped one (it has done nothing meanwhile: peer messages
        // were dropped, and a node outside any configuration never
        // campaigns).
        let (applied, term) = self.sm.applied();
        self.raw = new_raw_node(&self.opts, &self.tlog, applied)?;
        {
            let mut st = self.snap_state.lock();
            st.applied = applied;
            st.term = term;
            st.conf = self.tlog.read().conf_state();
        }
        *self.status.members.write() = self.sm.members()?;
        self.status.applied.store(applied, Ordering::Release);
        self.opts.watches.reset(applied);
        self.checkpointed = applied;
        self.creating = None;
        self.status.creating.store(false, Ordering::Release);
        self.campaign_if_alone()?;
        self.sync_transport()
    }

    /// Every `PROGRESS_LOG_MS`, what a node that started without the
    /// cluster's state is waiting for, or how far it has caught up; once it
    /// has, says so (and, for a learner, how to promote it).
    pub(super) fn report_progress(&mut self) {
        let every = (PROGRESS_LOG_MS / self.opts.tick_ms.max(1)).max(1);
        if !self.ticks.is_multiple_of(every) {
            return;
        }
        if let Some(c) = &self.creating {
            let waiting: Vec<String> = self
                .other_initial_members()
                .filter(|(id, _)| !c.fresh.contains(id))
                .map(|(_, m)| format!("{} ({})", m.name, m.client))
                .collect();
            let waiting = waiting.join(", ");
            tracing::info!(
                "creating the cluster: waiting for {waiting} to answer; a new cluster is created \
                 once every initial member has answered that it is new (to create it without a \
                 member, leave it out of [[nodes]] on every member and add it later with \
                 nacre cluster add-learner)"
            );
            return;
        }
        if !self.catching_up {
            return;
        }
        let (applied, _) = self.sm.applied();
        let commit = self.raw.raft.raft_log.committed;
        if applied == 0 {
            tracing::info!(
                "no cluster state yet: waiting for the leader to send a snapshot; this node \
                 neither votes nor serves until then"
            );
        } else if applied < commit {
            tracing::info!(
                applied,
                commit,
                "catching up: applied {applied} of {commit}"
            );
        } else {
            self.catching_up = false;
            let learner = self
                .raw
                .raft
                .prs()
                .conf()
                .learners()
                .contains(&self.opts.id);
            if learner {
                let name = self.member_name(self.opts.id);
                tracing::info!(
                    applied,
                    "caught up at index {applied}; this learner can be promoted: \
                     nacre cluster promote {name}"
                );
            } else {
                tracing::info!(applied, "caught up at index {applied}");
            }
        }
    }
}

/// The index and term of a new cluster's initial snapshot.
const BOOTSTRAP_INDEX: u64 = 1;
const BOOTSTRAP_TERM: u64 = 1;

/// How often a node that started without the cluster's state logs what it
/// waits for.
const PROGRESS_LOG_MS: u64 = 5_000;

/// How a node with an empty data directory is waiting to create the
/// cluster: the other initial members that answered that they are new.
#[derive(Debug, Default)]
pub(crate) struct Creation {
    fresh: BTreeSet<u64>,
}

/// What a node with an empty data directory does: `New` creates the
/// cluster from the initial members once every other one has answered
/// that it is new too, `Existing` waits for the leader of the cluster that
/// exists (etcd's `--initial-cluster-state new|existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    New,
    Existing,
}

/// How the node starts.
enum Start {
    /// It has the cluster's state (or just bootstrapped it).
    Ready,
    /// It waits for the other initial members' answers.
    Creating,
    /// It waits for the leader's snapshot.
    Waiting,
}

/// Decides how a node starts: a data directory with a log is `Ready`; an
/// empty one creates the cluster (at once when this node is its only
/// initial member, since there is no one to ask), or waits.
fn empty_start(
    tlog: &TlogStorage,
    sm: &mut StateMachine,
    opts: &NodeOptions,
) -> Result<Start, ServerError> {
    let log = tlog.read();
    let empty = log.conf_state().voters.is_empty() && log.last_index() == 0 && sm.applied().0 == 0;
    if !empty {
        return Ok(Start::Ready);
    }
    let hs = log.hard_state();
    drop(log);
    // A term or a vote in an empty log: the node had heard of the cluster
    // (it was waiting for the leader's snapshot when it stopped).
    if hs.term > 0 || hs.vote != 0 {
        return Ok(Start::Waiting);
    }
    let alone = opts.initial_members.iter().all(|(id, _)| *id == opts.id);
    match opts.initial_cluster_state {
        InitialClusterState::Existing => Ok(Start::Waiting),
        InitialClusterState::New if alone || planted_bootstrap_anyway(opts) => {
            bootstrap(tlog, sm, opts)?;
            Ok(Start::Ready)
        }
        InitialClusterState::New => Ok(Start::Creating),
    }
}

#[cfg(feature = "sim")]
fn planted_bootstrap_anyway(opts: &NodeOptions) -> bool {
    opts.planted.bootstrap_anyway
}

#[cfg(not(feature = "sim"))]
fn planted_bootstrap_anyway(_opts: &NodeOptions) -> bool {
    false
}

/// Raft over the tlog, as the tlog holds it now.
fn new_raw_node(
    opts: &NodeOptions,
    tlog: &TlogStorage,
    applied: u64,
) -> Result<RawNode<TlogStorage>, ServerError> {
    let cfg = raft_config(opts, applied);
    cfg.validate()?;
    let logger = super::events::raft_logger();
    Ok(RawNode::new(&cfg, tlog.clone(), &logger)?)
}

/// What other threads see before the loop's first turn: the applied
/// index, and the term and last index of the log (other members ask for
/// them before they create a cluster, so they must not read 0 here for a
/// node that has a log), and who the members are.
fn initial_status(
    opts: &NodeOptions,
    tlog: &TlogStorage,
    sm: &StateMachine,
) -> Result<Arc<Status>, ServerError> {
    let status = Arc::new(Status::default());
    status.applied.store(sm.applied().0, Ordering::Relaxed);
    status.id.store(opts.id, Ordering::Relaxed);
    {
        let log = tlog.read();
        status.term.store(log.hard_state().term, Ordering::Relaxed);
        status.last_index.store(log.last_index(), Ordering::Relaxed);
        status
            .first_index
            .store(log.first_index(), Ordering::Relaxed);
    }
    let mut members = sm.members()?;
    if members.is_empty() {
        // A node without the cluster's state knows the initial members
        // from its config until the leader's snapshot tells it the truth.
        members = opts.initial_members.iter().cloned().collect();
    }
    *status.members.write() = members;
    Ok(status)
}

/// A brand-new cluster starts from a snapshot at index 1 holding the
/// initial members, the same on every member. Its conf state is then part
/// of snapshot metadata, so a node that joins later receives it with its
/// first snapshot.
fn bootstrap(
    tlog: &TlogStorage,
    sm: &mut StateMachine,
    opts: &NodeOptions,
) -> Result<(), ServerError> {
    let mut log = tlog.write();
    let voters: Vec<u64> = opts.initial_members.iter().map(|(id, _)| *id).collect();
    let changes: Vec<(u64, Option<MemberRecord>)> = opts
        .initial_members
        .iter()
        .map(|(id, m)| (*id, Some(m.clone())))
        .collect();
    sm.apply_members(BOOTSTRAP_INDEX, BOOTSTRAP_TERM, &changes)?;
    sm.checkpoint()?;
    let mut meta = SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: BOOTSTRAP_TERM,
        ..Default::default()
    };
    meta.set_conf_state(ConfState {
        voters,
        ..Default::default()
    });
    log.apply_snapshot(&meta)?;
    let hs = HardState {
        term: BOOTSTRAP_TERM,
        commit: BOOTSTRAP_INDEX,
        ..Default::default()
    };
    log.set_hard_state(&hs)?;
    log.sync()?;
    Ok(())
}

/// The tlog must hold everything the store has applied: finishes a
/// snapshot install a crash interrupted, refuses a tlog that was lost, and
/// raises a lagging persisted commit index to the applied one.
fn check_tlog_against_store(tlog: &TlogStorage, sm: &StateMachine) -> Result<(), ServerError> {
    let (applied, _) = sm.applied();
    let mut log = tlog.write();
    let installed = sm.installed_snapshot()?;
    // A fresh tlog next to a store that has applied entries is a lost
    // tlog, whatever the store says: the votes it held are gone, and the
    // node must not run (below).
    let fresh = log.last_index() == 0 && log.hard_state().term == 0;
    if let Some((index, term, conf)) = installed.filter(|s| s.0 == applied && !fresh) {
        if applied > log.last_index() {
            // A snapshot went into the store, but the node stopped (a
            // crash, a disk error) before its tlog recorded it: record it
            // now, as the install would have.
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
            log.apply_snapshot(&meta)?;
            let mut hs: HardState = log.hard_state();
            if hs.term < term {
                // As if it had heard of the term: no vote in it.
                hs.term = term;
                hs.vote = 0;
            }
            hs.commit = hs.commit.max(index);
            log.set_hard_state(&hs)?;
            log.sync()?;
        }
    }
    if applied > log.last_index() {
        return Err(ServerError::TlogBehindStore {
            applied,
            tlog_last: log.last_index(),
        });
    }
    // Applied entries were committed, whatever the persisted hard state
    // says (its commit field may lag: it is written lazily).
    let mut hs: HardState = log.hard_state();
    if hs.commit < applied {
        hs.commit = applied;
        log.set_hard_state(&hs)?;
        log.sync()?;
    }
    Ok(())
}

fn raft_config(opts: &NodeOptions, applied: u64) -> raft::Config {
    raft::Config {
        id: opts.id,
        election_tick: opts.election_ticks,
        heartbeat_tick: opts.heartbeat_ticks,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        // Always quorum rounds inside raft: the lease is ours, on a clock
        // (lease.rs); raft-rs's own trusts a tick count.
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    }
}

/// Peer traffic arrives on its own channel (the transport's type); a small
/// thread forwards it into the loop's queue. The loop watches the thread
/// (`Node::check_helpers`): without it, the node hears no peer.
fn spawn_peer_in(
    tx: std::sync::mpsc::SyncSender<Msg>,
    capacity: usize,
) -> Result<
    (
        std::sync::mpsc::SyncSender<Inbound>,
        std::thread::JoinHandle<()>,
    ),
    ServerError,
> {
    let (inbound_tx, inbound_rx) = std::sync::mpsc::sync_channel::<Inbound>(capacity);
    let thread = std::thread::Builder::new()
        .name("nacre-peer-in".into())
        .spawn(move || {
            while let Ok(m) = inbound_rx.recv() {
                if tx.send(Msg::Peer(m)).is_err() {
                    return;
                }
            }
        })?;
    Ok((inbound_tx, thread))
}

impl NodeHandle {
    /// Hands the loop what another initial member answered about its state
    /// ([`Msg::PeerState`]); dropped if the loop is busy (it is asked
    /// again).
    pub fn peer_state(&self, id: u64, term: u64, last_index: u64) {
        let _ = self.tx.try_send(Msg::PeerState {
            id,
            term,
            last_index,
        });
    }

    /// Hands the loop the members a member of the cluster reported
    /// ([`Msg::Members`]).
    pub fn learn_members(&self, members: Vec<(u64, MemberRecord)>) {
        let _ = self.tx.try_send(Msg::Members(members));
    }

    /// Tells the loop that `leader` no longer lists this node among the
    /// members ([`Msg::Removed`]); dropped if the loop is busy (it is told
    /// again).
    pub fn removed_by(&self, leader: String) {
        let _ = self.tx.try_send(Msg::Removed { leader });
    }
}
