//! Opening a node: a brand-new cluster's bootstrap, the checks of the
//! recovered tlog against the store (and the repair of an interrupted
//! snapshot install), raft's configuration, and the threads that run it.

use std::collections::{BTreeMap, HashMap};
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
        bootstrap_if_fresh(&tlog, &mut sm, &opts)?;
        check_tlog_against_store(&tlog, &sm)?;
        let (applied, applied_term) = sm.applied();
        let cfg = raft_config(&opts, applied);
        cfg.validate()?;
        let logger = super::events::raft_logger();

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
        let raw = RawNode::new(&cfg, tlog.clone(), &logger)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(opts.proposals_pending_max);
        let (inbound_tx, peer_in) = spawn_peer_in(tx.clone(), opts.proposals_pending_max)?;

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
            peer_in: Some(peer_in),
            snap_state,
            snapshots_in: HashMap::new(),
            membership_pending: BTreeMap::new(),
            was_leader: false,
            seen: Default::default(),
            planted: Default::default(),
            lease: Lease::new(Lease::duration_us(opts.election_ticks, opts.tick_ms)),
            renewal: None,
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
        };
        // A single voter need not wait an election timeout to lead.
        let voters = node.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(node.opts.id) {
            node.raw.campaign()?;
        }
        Ok((node, NodeHandle { tx, status }))
    }
}

/// A brand-new cluster starts from a snapshot at index 1 holding the
/// initial members, the same on every member. Its conf state is then part
/// of snapshot metadata, so a node that joins later receives it with its
/// first snapshot. A node that joins starts empty instead.
fn bootstrap_if_fresh(
    tlog: &TlogStorage,
    sm: &mut StateMachine,
    opts: &NodeOptions,
) -> Result<(), ServerError> {
    let mut log = tlog.write();
    let fresh = log.conf_state().voters.is_empty() && log.last_index() == 0 && sm.applied().0 == 0;
    if !fresh || opts.join {
        return Ok(());
    }
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
    log.apply_snapshot(&meta)?;
    let hs = HardState {
        term: 1,
        commit: 1,
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
