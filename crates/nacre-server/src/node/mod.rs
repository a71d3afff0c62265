//! The Raft driver: one thread owns the raft-rs `RawNode`, the tlog and
//! the state machine, and runs the loop tick → step → ready → persist →
//! apply. Client tasks talk to it through a bounded channel, so the
//! consensus core stays single-threaded and free of async code (the same
//! loop runs inside the simulator).
//!
//! Group commit falls out of the loop: every proposal that arrives while
//! the previous fsync runs is appended by the next `Ready` and made durable
//! by one fsync.
//!
//! One concern per file, all of them `impl Node` blocks over the struct
//! defined here:
//!
//! | module | one job |
//! |---|---|
//! | `bootstrap.rs` | opening a node: bootstrap, the startup checks of tlog against store, the threads |
//! | `run.rs` | the loop: receive, handle, `Ready` (persist, send, apply), answer |
//! | `reads.rs` | consistent reads: read-index rounds and the leader lease |
//! | `membership.rs` | conf changes, votes a node must not give, leadership transfer, the peer transport's address book |
//! | `snapshot.rs` | raft snapshots (taking and installing) and checkpoints |
//! | `planted.rs` | bugs planted for the simulator, only with the `sim` feature |
//! | `status.rs` | what other threads see: `Status`, `NodeHandle`, publishing after each turn |
//! | `events.rs` | raft events in the log: elections, votes, leaders, terms, membership, snapshots |
//! | `leases.rs` | lease expiry on the leader's clock: deadlines, keep-alives, revokes |

mod bootstrap;
mod events;
mod leases;
mod membership;
mod planted;
mod reads;
mod run;
mod snapshot;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use nacre_proto::{CoordResponse, ErrorReply};
use nacre_raft::TlogStorage;
use parking_lot::Mutex;
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::lease::Lease;
use crate::state::{MemberRecord, Outcome, StateMachine};
use crate::transport::{Inbound, Transport};
use crate::ServerError;

pub use bootstrap::InitialClusterState;
#[cfg(feature = "sim")]
pub use planted::{stalled_link_back_at_us, Planted};
pub use status::{NodeHandle, Role, Status};

use bootstrap::Creation;
use planted::PlantedState;
use reads::ReadRound;
use snapshot::SnapState;

/// Where a node's outgoing raft messages go: the TCP transport in
/// production, the simulated network in the simulator.
pub trait PeerSink: Send {
    fn send(&mut self, msgs: Vec<raft::eraftpb::Message>);
    fn set_peer(&mut self, id: u64, addr: String);
    fn remove_peer(&mut self, id: u64);
    /// The task the sink cannot work without, if it has ended: then peers
    /// no longer reach this node, and the node stops.
    fn stopped_task(&self) -> Option<&'static str> {
        None
    }
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
    fn stopped_task(&self) -> Option<&'static str> {
        self.listener_ended().then_some("peer listener task")
    }
}

/// A membership request for the raft loop.
#[derive(Debug, Clone)]
pub enum Membership {
    AddLearner(u64, MemberRecord),
    /// Promote a learner; `true`: even one that lags the leader by more
    /// than `NodeOptions::promote_lag_max_entries`.
    Promote(u64, bool),
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
    /// Renews leases to their full TTL (leader only): answered with
    /// `CoordResponse::Leases`, one entry per id.
    LeaseKeepAlive {
        ids: Vec<u64>,
        reply: oneshot::Sender<Result<CoordResponse, ErrorReply>>,
    },
    /// The time each lease has left on the leader's clock, in ms (`None`:
    /// the leader tracks no such lease).
    LeaseRemaining {
        ids: Vec<u64>,
        reply: oneshot::Sender<Result<Vec<Option<u64>>, ErrorReply>>,
    },
    Peer(Inbound),
    /// What another initial member answered about its state while this
    /// node waits to create the cluster: its term and last log index.
    PeerState {
        id: u64,
        term: u64,
        last_index: u64,
    },
    /// Members and their addresses, as a member of the cluster this node
    /// joins reported them.
    Members(Vec<(u64, MemberRecord)>),
    /// The leader named here no longer counts this node among the members
    /// (it was removed while it could not hear of it: removal.rs).
    Removed {
        leader: String,
    },
    Shutdown,
}

pub struct NodeOptions {
    pub id: u64,
    /// Members to bootstrap a brand-new cluster with (ignored once the
    /// data directory holds a log).
    pub initial_members: Vec<(u64, MemberRecord)>,
    /// What to do with an empty data directory: create the cluster, or
    /// wait for the leader of the existing one.
    pub initial_cluster_state: InitialClusterState,
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
    /// A checkpoint also comes once this many bytes of entries were applied
    /// since the last one.
    pub checkpoint_bytes: u64,
    /// Entries kept in the tlog behind a checkpoint, for lagging followers.
    pub tlog_tail_entries: u64,
    /// ...and at most this many bytes of them.
    pub tlog_tail_bytes: u64,
    /// How far behind the leader's log a learner may be and still be
    /// promoted without `force`.
    pub promote_lag_max_entries: u64,
    /// Where the change events of every apply go, for watches (shared
    /// with the request layer through [`NodeHandle::watches`]).
    pub watches: Arc<crate::watch::WatchHub>,
    /// Deliberate bugs for the simulator to prove its checker catches them
    /// (only with the `sim` feature).
    #[cfg(feature = "sim")]
    pub planted: Planted,
}

struct Pending {
    term: u64,
    reply: oneshot::Sender<WriteReply>,
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
    /// The thread that forwards `inbound_tx`'s messages into the loop.
    peer_in: Option<std::thread::JoinHandle<()>>,
    snap_state: Arc<Mutex<SnapState>>,
    /// Snapshots received, by index, waiting for raft to accept them.
    snapshots_in: HashMap<u64, PathBuf>,
    membership_pending: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, ErrorReply>>)>,
    was_leader: bool,
    /// What the log last said about the raft state (`events.rs`).
    seen: events::Seen,
    /// What the planted bugs track (nothing without the `sim` feature,
    /// where it is never read).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    planted: PlantedState,
    lease: Lease,
    /// Deadlines of the replicated leases, while this node leads.
    expiry: leases::Expiry,
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
    /// Bytes of entry data applied since the last checkpoint.
    applied_bytes_since_checkpoint: u64,
    shutting_down: bool,
    /// Set while this node, started on an empty data directory, waits for
    /// the other initial members' answers before creating the cluster.
    creating: Option<Creation>,
    /// The node started without the cluster's state and has not caught up
    /// with the leader yet: its progress is logged.
    catching_up: bool,
}

impl Node {
    /// Hands one request or peer message to the node.
    pub fn step(&mut self, m: Msg) -> Result<(), ServerError> {
        self.handle(m)
    }

    /// One raft tick (`tick_ms` of time).
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        self.report_progress();
        self.retry_stale_reads();
        self.renew_lease();
        self.expire_leases();
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

    /// Takes what handles ([`NodeHandle`]) queued for this node, at most
    /// `max` messages: the simulator delivers them itself, as the
    /// production loop takes them off its queue.
    #[cfg(feature = "sim")]
    pub fn take_queued(&mut self, max: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(m) => {
                    self.took(&m);
                    out.push(m);
                }
                Err(_) => break,
            }
        }
        out
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

    /// Whether the node waits for the other initial members' answers
    /// ([`Msg::PeerState`]) before it creates the cluster.
    pub fn is_creating(&self) -> bool {
        self.creating.is_some()
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    pub fn store(&self) -> &nacre_store::Store {
        self.sm.store()
    }
}
