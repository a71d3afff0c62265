//! One simulated cluster run: real Nacre nodes (raft driver, tlog, state
//! machine, store) driven from one thread by an event queue in simulated
//! time, over a simulated network and one simulated disk per node, with
//! every random choice drawn from the seed.
//!
//! This file holds the event loop, the configuration and the report, and
//! each node's lifecycle (open, tick, step, drive, capture). The rest is
//! split by concern, in the spirit of TigerBeetle's simulator:
//! `network.rs` carries messages and snapshots between the nodes,
//! `faults.rs` draws the random fault schedule (partitions, crashes and
//! restarts, disk errors, pauses), `scenario.rs` runs the targeted
//! schedules, `workload.rs` runs the clients and records what they saw,
//! and `checks.rs` holds the cluster to it once it has healed. All of them
//! draw from the one `rng`: reordering draws, even across files, changes
//! what every seed runs.

mod bugs;
mod checks;
mod faults;
mod fence;
mod leases;
mod membership;
mod network;
mod scenario;
mod stats;
mod via_server;
mod watchers;
mod wipe;
mod workload;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use nacre_raft::{Tlog, TlogOptions, TlogStorage};
use nacre_vfs::sim::SimVfs;
use nacre_vfs::Vfs;
use parking_lot::Mutex;
use raft::eraftpb::{Entry, Message};
use raft::StateRole;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// Everything the simulator takes from nacre-server, for all its modules
// (they import it from here): one place to change when those paths move.
use nacre_server::name_id;
use nacre_server::node::{
    InitialClusterState, Msg, Node, NodeOptions, PeerSink, Planted, ReadReply, WriteReply,
};
use nacre_server::sim_server::SimServer;
use nacre_server::state::{is_local_key, MemberRecord, Reader, StateMachine};
use nacre_server::transport::Inbound;

use crate::checker::Call;
use crate::clock::{SimClock, SimNow};
use checks::ReadObs;
use membership::Reconfig;
use network::Network;
use scenario::{CutOff, FollowerCuts};
use wipe::Wipe;
use workload::Client;

pub use bugs::Bug;
pub use scenario::Scenario;
pub use stats::Stats;

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster size; `None`: 3 or 5, chosen by the seed.
    pub nodes: Option<usize>,
    pub clients: usize,
    pub keys: usize,
    /// Simulated time with clients and faults.
    pub workload_ms: u64,
    /// Quiet simulated time after the workload (network healed, nodes
    /// restarted) before the final checks.
    pub heal_ms: u64,
    pub faults: bool,
    pub planted: Option<Bug>,
    /// Keep a human-readable trace of the run.
    pub trace: bool,
    /// Consistent reads by lease or by a read-index round; `None`: chosen
    /// by the seed.
    pub reads_by_lease: Option<bool>,
    /// Each node's clock runs up to this many per mille fast or slow.
    pub clock_drift_permille_max: u64,
    /// Configurations the linearizability search may visit per group.
    pub check_budget_states: u64,
    /// A targeted schedule instead of the random faults.
    pub scenario: Option<Scenario>,
    /// Of the client requests, how many per mille go through the node's
    /// request layer (`SimServer`: consistency gates, sessions, reply
    /// mapping, as a connection's do) rather than straight to the node,
    /// whose answers carry more for the checks (a failed guard's value).
    pub via_server_permille: u32,
    /// Lock contenders making fenced writes beside the workload
    /// (`sim/fence.rs`).
    pub fencers: usize,
    /// Lease holders in the workload (`sim/leases.rs`) and the lease
    /// checks. Off by default: with it, every seed runs differently.
    pub leases: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: None,
            clients: 5,
            keys: 6,
            workload_ms: 10_000,
            heal_ms: 4_000,
            faults: true,
            planted: None,
            trace: false,
            reads_by_lease: None,
            clock_drift_permille_max: 20,
            check_budget_states: 200_000,
            scenario: None,
            via_server_permille: 500,
            fencers: 2,
            leases: false,
        }
    }
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    /// Violated checks; empty means the run passed.
    pub failures: Vec<String>,
    /// Checks that could not decide (the linearizability search budget).
    pub unknown: Vec<String>,
    pub sim_ms: u64,
    pub stats: Stats,
    pub history: Vec<Call>,
    pub trace: Vec<String>,
    /// A hash of every event handled, for comparing runs cheaply.
    pub fingerprint: u64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one seed, turning a panic anywhere (raft, store, checker) into a
/// failure of the run.
pub fn run_seed(seed: u64, cfg: SimConfig) -> Report {
    let sim_ms = cfg.workload_ms + cfg.heal_ms;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(seed, cfg).run())) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Report {
                seed,
                failures: vec![format!("panic: {msg}")],
                unknown: vec![],
                sim_ms,
                stats: Stats::default(),
                history: vec![],
                trace: vec![],
                fingerprint: 0,
            }
        }
    }
}

/// Outgoing raft messages of one node, collected for the simulator.
struct Outbox(Arc<Mutex<Vec<Message>>>);

impl PeerSink for Outbox {
    fn send(&mut self, msgs: Vec<Message>) {
        self.0.lock().extend(msgs);
    }
    fn set_peer(&mut self, _id: u64, _addr: String) {}
    fn remove_peer(&mut self, _id: u64) {}
}

struct SimNode {
    id: u64,
    vfs: SimVfs,
    /// The node's own clock; its rate also sets its tick period.
    clock: Arc<SimClock>,
    /// Set while the process is paused: what arrived for it meanwhile.
    paused: Option<Paused>,
    outbox: Arc<Mutex<Vec<Message>>>,
    node: Option<Node>,
    /// The node's request layer, over the same node (none while down).
    server: Option<SimServer>,
    /// The node's watch hub (of its latest incarnation).
    watches: Option<Arc<nacre_server::watch::WatchHub>>,
    /// It starts with `initial_cluster_state = existing` (added back after
    /// a removal, on a wiped disk), not as one of the initial members.
    existing: bool,
    /// A second handle on the node's tlog, to read the final log.
    tlog: Option<TlogStorage>,
    /// Bumped at every crash so ticks scheduled for a dead incarnation
    /// are ignored.
    incarnation: u64,
    timeout_ticks: usize,
    role: Option<(u64, StateRole)>,
    restart_pending: bool,
}

impl SimNode {
    /// A node not started yet, with its disk and its clock: the clock's
    /// drift (up to `drift` per mille either way) is drawn from `rng`.
    fn new(id: u64, drift: i64, sim_now: &SimNow, rng: &mut StdRng) -> SimNode {
        let d = if drift > 0 {
            rng.random_range(-drift..=drift)
        } else {
            0
        };
        let period_permille = (1000 + d) as u64;
        SimNode {
            id,
            vfs: SimVfs::new(rng.random()),
            clock: SimClock::new(
                sim_now.clone(),
                period_permille,
                rng.random_range(0..1 << 40),
            ),
            paused: None,
            outbox: Arc::new(Mutex::new(Vec::new())),
            node: None,
            server: None,
            watches: None,
            existing: false,
            tlog: None,
            incarnation: 0,
            timeout_ticks: ELECTION_TICKS,
            role: None,
            restart_pending: false,
        }
    }
}

/// The members of an `n`-node cluster: `n0`, `n1`, ...
/// The request layer's settings: production's defaults, with a request
/// timeout far beyond any run (its timer is never driven in the
/// simulator, and the simulated clients keep their own deadlines).
fn server_config() -> nacre_server::ServerConfig {
    nacre_server::ServerConfig {
        request_timeout_ms: 24 * 3_600_000,
        // Two of the simulator's election timeouts (the layer's defaults
        // assume production's ticks).
        lease_ttl_min_ms: Some(2 * ELECTION_TICKS as u64 * TICK_US / 1_000),
        ..Default::default()
    }
}

fn members(n: usize) -> Vec<(u64, MemberRecord)> {
    (0..n)
        .map(|i| {
            let name = format!("n{i}");
            (
                name_id(&name),
                MemberRecord {
                    name: name.clone(),
                    client: format!("{name}:client"),
                    peer: format!("{name}:peer"),
                },
            )
        })
        .collect()
}

/// A paused process: its timers do not fire and its inbound messages and
/// client requests wait, in arrival order.
struct Paused {
    backlog: Vec<Msg>,
    /// A tick fell due during the pause (the loop runs one on resuming).
    tick_due: bool,
}

enum Ev {
    Tick(usize, u64),
    /// The paused node (of this incarnation) resumes.
    Resume(usize, u64),
    Deliver(usize, Box<Message>),
    /// A MsgSnapshot and the file holding the leader's store contents.
    DeliverSnapshot(usize, Box<Message>, PathBuf),
    /// Tells the sender (a position) how sending a snapshot to `to` (a
    /// raft id) ended.
    SnapshotStatus(usize, u64, bool),
    Client(usize),
    Fault,
    Heal,
    Restart(usize),
    EndWorkload,
    ScenarioStart,
    ScenarioEnd,
    /// The next step of `Scenario::FollowerCuts`.
    CutsStep,
    /// [`Scenario::WipeWithLaggingVoter`]: wipe a node of the bare quorum.
    Wipe,
    /// The operator's next membership step (`sim/membership.rs`).
    Membership,
    /// A lock contender's next step (`sim/fence.rs`).
    Fence(usize),
    /// A watcher wakes (`sim/watchers.rs`).
    Watch(usize),
    /// A lease holder's next request (`sim/leases.rs`).
    Lease(usize),
}

struct Queued {
    at_us: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(o.at_us, o.seq))
    }
}

const TICK_US: u64 = 10_000;
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 2;

pub struct Sim {
    seed: u64,
    cfg: SimConfig,
    rng: StdRng,
    now_us: u64,
    /// `now_us`, shared with the nodes' clocks.
    sim_now: SimNow,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<SimNode>,
    members: Vec<(u64, MemberRecord)>,
    reads_by_lease: bool,
    keys: Vec<Bytes>,
    clients: Vec<Client>,
    net: Network,
    workload: bool,
    cutoff: Option<CutOff>,
    cuts: Option<FollowerCuts>,
    wipe: Option<Wipe>,
    /// A committed entry changed after it was taken (reported once).
    rewritten: bool,
    history: Vec<Call>,
    /// Acknowledged writes: (history position, log index, command bytes).
    acked: Vec<(usize, u64, Vec<u8>)>,
    reads: Vec<ReadObs>,
    failures: Vec<String>,
    unknown: Vec<String>,
    stats: Stats,
    trace: Vec<String>,
    fingerprint: u64,
    /// Every committed entry from index `COMMITTED_FIRST` on, taken from
    /// the nodes' tlogs as they commit, before compaction drops them: the
    /// replay check's log.
    committed: Vec<Entry>,
    /// The tokio context the request layer's futures are polled in. The
    /// runtime is never run, so its timers never fire and nothing runs on
    /// its own (`via_server.rs`).
    rt: tokio::runtime::Runtime,
    /// Membership changes in progress (`sim/membership.rs`).
    reconfig: Reconfig,
    /// Requests in a node's request layer whose client stopped waiting:
    /// they run on (`via_server.rs`).
    orphans: Vec<(usize, nacre_server::sim_server::Answer)>,
    /// Lock contenders (`sim/fence.rs`).
    fencers: Vec<fence::Fencer>,
    /// Fenced writes acknowledged as applied: (log index, token).
    fenced_acked: Vec<(u64, u64)>,
    /// Watchers of key spans through the faults (`sim/watchers.rs`).
    watchers: watchers::Watchers,
    /// The lease holders and what they saw (`SimConfig::leases`).
    leases: Option<leases::LeaseWork>,
}

/// The first index of a fresh cluster's log (index 1 is its initial
/// snapshot).
const COMMITTED_FIRST: u64 = 2;

/// Entries of the tlog kept behind a checkpoint. Small, so that the log is
/// compacted and a lagging node is brought up to date by a snapshot.
const TLOG_TAIL_ENTRIES: u64 = 48;

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

impl Sim {
    pub fn new(seed: u64, cfg: SimConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = cfg
            .nodes
            .unwrap_or(if rng.random_bool(0.5) { 3 } else { 5 });
        let reads_by_lease = cfg.reads_by_lease.unwrap_or_else(|| rng.random_bool(0.5));
        let members = members(n);
        let drift = cfg.clock_drift_permille_max as i64;
        let sim_now: SimNow = Arc::new(AtomicU64::new(0));
        let nodes = members
            .iter()
            .map(|(id, _)| SimNode::new(*id, drift, &sim_now, &mut rng))
            .collect();
        let keys: Vec<Bytes> = (0..cfg.keys)
            .map(|i| Bytes::from(format!("k{i}")))
            .collect();
        let clients = (0..cfg.clients)
            .map(|_| Client::new(rng.random_range(0..n)))
            .collect();
        let net = Network::new(seed, cfg.faults, &mut rng);
        let watchers = watchers::Watchers::new(seed, &keys);
        Sim {
            seed,
            rng,
            now_us: 0,
            sim_now,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            members,
            reads_by_lease,
            keys,
            clients,
            net,
            workload: true,
            cutoff: None,
            cuts: None,
            wipe: None,
            rewritten: false,
            history: Vec::new(),
            acked: Vec::new(),
            reads: Vec::new(),
            failures: Vec::new(),
            unknown: Vec::new(),
            stats: Stats {
                nodes: n,
                reads_by_lease,
                ..Stats::default()
            },
            trace: Vec::new(),
            fingerprint: 0xcbf2_9ce4_8422_2325,
            committed: Vec::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime"),
            reconfig: Reconfig::default(),
            orphans: Vec::new(),
            fencers: Vec::new(),
            fenced_acked: Vec::new(),
            watchers,
            leases: cfg.leases.then(|| leases::LeaseWork::new(seed, n)),
            cfg,
        }
    }

    fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
        self.sim_now.store(now_us, Ordering::Relaxed);
    }

    /// A node's tick period in simulated microseconds, at its clock's rate.
    fn tick_us(&self, i: usize) -> u64 {
        self.nodes[i].clock.sim_us_for(TICK_US)
    }

    fn at(&mut self, delay_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at_us: self.now_us + delay_us,
            seq: self.seq,
            ev,
        }));
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if self.cfg.trace {
            let line = format!("{:>10.3}ms {}", self.now_us as f64 / 1000.0, f());
            self.trace.push(line);
        }
    }

    fn fail(&mut self, why: String) {
        self.log(|| format!("FAILURE {why}"));
        self.failures.push(why);
    }

    pub fn run(mut self) -> Report {
        for i in 0..self.nodes.len() {
            let period = self.nodes[i].clock.period_permille();
            let delays = (self.net.delay_min_us, self.net.delay_jitter_us);
            self.log(|| {
                format!(
                    "n{i}: clock period {period}\u{2030} of simulated time; messages take \
                     {}+[0, {}) \u{b5}s",
                    delays.0, delays.1
                )
            });
            if let Err(e) = self.open_node(i) {
                self.fail(format!("n{i} failed to start: {e}"));
                return self.report();
            }
        }
        // Each node finds its disk empty and asks the others before it
        // creates the cluster: all are new, so all create it now.
        for i in 0..self.nodes.len() {
            self.answer_creation(i);
        }
        for c in 0..self.clients.len() {
            let d = self.rng.random_range(0..20_000);
            self.at(d, Ev::Client(c));
        }
        self.start_fencers(self.cfg.fencers);
        self.watchers_start();
        self.leases_start();
        if self.cfg.scenario.is_some() {
            let d = self.rng.random_range(800_000..1_200_000);
            self.at(d, Ev::ScenarioStart);
        } else if self.cfg.faults {
            let d = self.fault_gap_us();
            self.at(d, Ev::Fault);
        }
        self.at(self.cfg.workload_ms * 1000, Ev::EndWorkload);
        let end_us = (self.cfg.workload_ms + self.cfg.heal_ms) * 1000;
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at_us > end_us {
                break;
            }
            self.set_now(q.at_us);
            let mut h = self.fingerprint;
            fnv(&mut h, &q.at_us.to_le_bytes());
            self.fingerprint = h;
            self.handle(q.ev);
            self.poll_clients();
            self.poll_orphans();
            self.poll_membership();
            self.poll_leases();
        }
        self.set_now(end_us);
        self.final_checks();
        self.report()
    }

    fn report(self) -> Report {
        Report {
            seed: self.seed,
            failures: self.failures,
            unknown: self.unknown,
            sim_ms: self.now_us / 1000,
            stats: self.stats,
            history: self.history,
            trace: self.trace,
            fingerprint: self.fingerprint,
        }
    }

    fn open_node(&mut self, i: usize) -> Result<(), OpenError> {
        let sn = &self.nodes[i];
        let vfs: Arc<dyn Vfs> = Arc::new(sn.vfs.clone());
        let dir = PathBuf::from(format!("/n{i}"));
        vfs.create_dir_all(&dir)?;
        let store_opts = nacre_store::Options {
            vfs: vfs.clone(),
            durability: nacre_store::Durability::Lazy,
            // The background cleaner is a thread on a wall clock; the
            // simulation must not depend on when it runs.
            cleaner: nacre_store::CleanerOptions {
                background: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let store = nacre_store::Store::open(dir.join("store"), store_opts)?;
        let tlog_opts = TlogOptions {
            segment_size_bytes: 256 << 10,
            zero_fill_ahead_bytes: 16 << 10,
            ..Default::default()
        };
        let tlog = Tlog::open(vfs, &dir.join("tlog"), tlog_opts)?;
        let tlog = TlogStorage::new(tlog);
        let mut sm = StateMachine::open_with(store.clone(), 100_000)?;
        sm.plant_skip_guards(self.cfg.planted == Some(Bug::SkipGuard));
        sm.plant_skip_sessions(self.cfg.planted == Some(Bug::SkipSessions));
        sm.plant_skip_fence(self.cfg.planted == Some(Bug::SkipFence));
        let hub = watchers::hub(self.cfg.planted);
        let opts = NodeOptions {
            id: sn.id,
            initial_members: self.members.clone(),
            initial_cluster_state: if sn.existing {
                InitialClusterState::Existing
            } else {
                InitialClusterState::New
            },
            preferred_leader: None,
            cluster_id: "sim".into(),
            peer_listen: String::new(),
            data_dir: dir,
            tick_ms: TICK_US / 1000,
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: HEARTBEAT_TICKS,
            reads_by_lease: self.reads_by_lease,
            clock: sn.clock.clone(),
            proposals_pending_max: 4096,
            // Checkpoints (store fsync) every 64 entries, each compacting
            // the tlog to a short tail: a node that falls further behind is
            // sent a snapshot.
            checkpoint_entries: 64,
            // The workload's values are small: checkpoints and tails are
            // counted in entries alone, as before byte bounds existed, so
            // that every seed replays as it did.
            checkpoint_bytes: u64::MAX,
            tlog_tail_entries: TLOG_TAIL_ENTRIES,
            tlog_tail_bytes: u64::MAX,
            promote_lag_max_entries: 1_000,
            watches: hub.clone(),
            planted: Planted {
                follower_reads: self.cfg.planted == Some(Bug::FollowerReads),
                ack_before_fsync: self.cfg.planted == Some(Bug::AckBeforeFsync),
                tick_lease: self.cfg.planted == Some(Bug::TickLease),
                stalled_links: self.cfg.planted == Some(Bug::StalledLinks),
                bootstrap_anyway: self.cfg.planted == Some(Bug::BootstrapAnyway),
                lease_short_ttl: self.cfg.planted == Some(Bug::LeaseShortTtl),
            },
        };
        let sink = Box::new(Outbox(sn.outbox.clone()));
        let (node, handle) = Node::new(tlog.clone(), sm, opts, None, Some(sink))?;
        let sn = &mut self.nodes[i];
        sn.node = Some(node);
        let skip_barrier = self.cfg.planted == Some(Bug::LayerSkipsBarrier);
        sn.server = Some(SimServer::new(server_config(), handle, store, skip_barrier));
        sn.watches = Some(hub);
        sn.tlog = Some(tlog);
        sn.role = None;
        sn.restart_pending = false;
        let inc = sn.incarnation;
        let first_tick = self.rng.random_range(0..self.tick_us(i));
        self.at(first_tick, Ev::Tick(i, inc));
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(i, inc) => {
                if self.nodes[i].incarnation != inc || self.nodes[i].node.is_none() {
                    return;
                }
                if let Some(p) = self.nodes[i].paused.as_mut() {
                    // No timer fires in a stopped process; the tick chain
                    // picks up again when it resumes.
                    p.tick_due = true;
                    return;
                }
                self.tick(i, inc);
            }
            Ev::Resume(i, inc) => {
                if self.nodes[i].incarnation == inc {
                    self.resume(i);
                }
            }
            Ev::Deliver(i, m) => {
                let mut h = self.fingerprint;
                fnv(&mut h, &[i as u8, m.get_msg_type() as u8]);
                self.fingerprint = h;
                self.deliver(i, Msg::Peer(Inbound::Raft(*m)));
            }
            Ev::DeliverSnapshot(i, m, path) => {
                if self.nodes[i].node.is_none() {
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                self.deliver(i, Msg::Peer(Inbound::Snapshot { msg: *m, path }));
            }
            Ev::SnapshotStatus(i, to, ok) => {
                self.deliver(i, Msg::Peer(Inbound::SnapshotStatus { to, ok }));
            }
            Ev::Client(c) => self.client_wake(c),
            Ev::Fault => self.fault_due(),
            Ev::Heal => self.heal(),
            // A removed node stays down until it is added back.
            Ev::Restart(i) if self.is_removed(i) => self.nodes[i].restart_pending = false,
            Ev::Restart(i) => self.restart(i),
            Ev::ScenarioStart => self.scenario_start(),
            Ev::ScenarioEnd => self.scenario_end(),
            Ev::CutsStep => self.cuts_step(),
            Ev::Wipe => self.wipe_and_crash(),
            Ev::Membership => self.membership_step(),
            Ev::Fence(f) => self.fencer_wake(f),
            Ev::Watch(w) => self.watcher_wake(w),
            Ev::Lease(h) => self.lease_wake(h),
            Ev::EndWorkload => self.end_workload(),
        }
    }

    /// One tick of node `i` (up, not paused), and the next one scheduled.
    fn tick(&mut self, i: usize, inc: u64) {
        let role = self.nodes[i].node.as_ref().expect("up").raft_role();
        if self.nodes[i].role != Some(role) {
            let t = self.rng.random_range(ELECTION_TICKS..2 * ELECTION_TICKS);
            self.nodes[i].timeout_ticks = t;
            self.nodes[i].role = Some(role);
            self.log(|| format!("n{i} is {:?} in term {}", role.1, role.0));
            self.cuts_role_seen(i, role);
        }
        self.answer_creation(i);
        let sn = &mut self.nodes[i];
        let Some(node) = sn.node.as_mut() else {
            // Answering failed it (a disk error): it restarts later.
            return;
        };
        node.set_election_timeout_ticks(sn.timeout_ticks);
        node.tick();
        self.drive(i);
        let d = self.tick_us(i);
        self.at(d, Ev::Tick(i, inc));
    }

    /// Hands `msg` to node `i`: at once, or into its backlog while it is
    /// paused; dropped when the node is down.
    fn deliver(&mut self, i: usize, msg: Msg) {
        let sn = &mut self.nodes[i];
        if sn.node.is_none() {
            return;
        }
        if let Some(p) = sn.paused.as_mut() {
            p.backlog.push(msg);
            return;
        }
        self.step(i, vec![msg]);
    }

    /// Node `i` takes `msgs` off its queue, then processes them together,
    /// as one turn of the production loop does.
    fn step(&mut self, i: usize, msgs: Vec<Msg>) {
        let installed = |n: &Node| n.status().snapshots_installed.load(Ordering::Relaxed);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let before = installed(node);
        for m in msgs {
            if let Err(e) = node.step(m) {
                self.node_error(i, e.to_string());
                return;
            }
        }
        self.drive(i);
        if let Some(node) = self.nodes[i].node.as_ref() {
            if installed(node) > before {
                self.stats.snapshots_installed += 1;
                let applied = node.status().applied.load(Ordering::Relaxed);
                self.log(|| format!("n{i} installed a snapshot, applied {applied}"));
            }
        }
    }

    /// The leader of the highest term, if any node is one.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| {
                let (term, role) = self.nodes[i].node.as_ref()?.raft_role();
                (role == StateRole::Leader).then_some((term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// One election timeout, in simulated microseconds.
    fn election_timeout_us() -> u64 {
        ELECTION_TICKS as u64 * TICK_US
    }

    /// A random node other than `not`.
    fn other_node(&mut self, not: usize) -> usize {
        let j = self.rng.random_range(0..self.nodes.len() - 1);
        if j >= not {
            j + 1
        } else {
            j
        }
    }

    /// Lets node `i` persist, apply, answer and send, then routes what it
    /// sent.
    fn drive(&mut self, i: usize) {
        let r = match self.nodes[i].node.as_mut() {
            Some(node) => node.process(),
            None => return,
        };
        self.capture(i);
        let msgs = std::mem::take(&mut *self.nodes[i].outbox.lock());
        for m in msgs {
            self.route(i, m);
        }
        if let Err(e) = r {
            self.node_error(i, e.to_string());
        }
    }

    /// Takes the entries node `i` has committed past those taken so far,
    /// while its tlog still holds them; and checks that the last entry
    /// taken is still the one node `i` committed at that index (a
    /// committed entry must never change: one that did was lost).
    fn capture(&mut self, i: usize) {
        let sn = &self.nodes[i];
        let (Some(node), Some(tlog)) = (sn.node.as_ref(), sn.tlog.as_ref()) else {
            return;
        };
        let commit = node.status().commit.load(Ordering::Relaxed);
        let next = COMMITTED_FIRST + self.committed.len() as u64;
        let log = tlog.read();
        if let Some(taken) = self.committed.last().filter(|e| e.index <= commit) {
            let (index, term) = (taken.index, taken.term);
            // `term` fails only for an index outside node i's log.
            let now = log.term(index).ok().filter(|t| *t != term);
            if let Some(now) = now.filter(|_| !self.rewritten) {
                drop(log);
                self.rewritten = true;
                self.fail(format!(
                    "committed entry {index} changed: taken with term {term}, n{i} committed \
                     one of term {now} there (an acknowledged write may be lost)"
                ));
                return;
            }
        }
        if commit < next {
            return;
        }
        if log.first_index() > next {
            // It came up to date by a snapshot: the others have them.
            return;
        }
        match log.entries(next, commit + 1, None) {
            Ok(entries) => {
                drop(log);
                self.lease_log(&entries);
                self.committed.extend(entries);
            }
            Err(e) => {
                let why = format!("n{i}: cannot read committed entries {next}..={commit}: {e}");
                drop(log);
                self.fail(why);
            }
        }
    }
}

/// Why a simulated node did not open: the error of the store, the tlog or
/// the node, whole, with its sources.
pub(crate) type OpenError = Box<dyn std::error::Error + Send + Sync>;

/// Whether `e` is, or was caused by, an I/O error the simulated disk
/// injected (as opposed to a real bug).
pub(crate) fn is_injected_io(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let io = c.downcast_ref::<std::io::Error>();
        if io.and_then(nacre_vfs::sim::SimFault::of) == Some(nacre_vfs::sim::SimFault::Io) {
            return true;
        }
        cause = c.source();
    }
    false
}
