//! Peer transport: carries raft messages and snapshots between the nodes
//! of one cluster over TCP.
//!
//! Each peer has one outbound connection owned by a sender task; the raft
//! thread only pushes into that peer's bounded queue, so `send` never
//! blocks it. Receiving is a listener spawning one task per accepted
//! connection. Snapshots travel on a connection of their own, streamed
//! from a [`SnapshotSource`] in chunks, so a large store neither sits in
//! memory nor delays the heartbeats on the normal connection.
//!
//! Wire format (all integers little endian):
//! - handshake, sender to receiver: `b"NACP"`, u16 version (1 or 2), u16
//!   length and the cluster id, u64 sender node id; the receiver answers a
//!   u16 status (0 ok, 1 wrong cluster, 2 bad version) and closes on
//!   non-zero. A sender refused version 2 dials again with version 1.
//! - frames: u32 body length, u8 kind, u32 CRC32C of the body, body.
//!   Kind 1 is a raft batch (u32 count, then u32 length and protobuf
//!   message each); kind 2 a snapshot chunk (a run of u32 key length, key,
//!   u32 value length, value); kind 3 ends a snapshot and carries the
//!   protobuf MsgSnapshot. After kind 3 the receiver answers a u16 status
//!   (0 once the file is durable and handed to the raft loop), so the
//!   sender reports success only for a snapshot that really arrived.
//! - acknowledgements, version 2 only: after each kind 1 frame the receiver
//!   writes a u64, the number of kind 1 frames it has read on this
//!   connection. A sender whose frames go unacknowledged for
//!   `peer_timeout_ms` gives the connection up and dials a new one.
//!
//! | module | one job |
//! |---|---|
//! | this file | the [`Transport`] handle: peers, their queues, the listener |
//! | `send.rs` | a peer's sender task: connection, bounded backoff, batching the queue, stall detection |
//! | `receive.rs` | accepted connections: raft batches in, snapshot frames to a file |
//! | `handshake.rs` | the handshake, both sides |
//! | `frame.rs` | frames: header, CRC32C, body fields |
//! | `snapshot.rs` | snapshot streaming: chunks out, the incoming file, reading it back |

mod frame;
mod handshake;
mod receive;
mod send;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use raft::eraftpb::{Message, MessageType, Snapshot};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use send::Backoff;
pub use snapshot::read_snapshot_file;

use receive::run_listener;
use send::run_sender;
use snapshot::{remove_stale_snapshots, send_snapshot};

/// What the transport hands to the raft loop.
#[derive(Debug)]
pub enum Inbound {
    Raft(Message),
    /// A peer could not be reached: report it to raft (`report_unreachable`).
    Unreachable(u64),
    /// A complete snapshot arrived: `msg` is the MsgSnapshot (its data is
    /// the leader's small snapshot descriptor), `path` a file in
    /// `snapshot_dir` holding the streamed store contents (read it with
    /// [`read_snapshot_file`]); the raft loop installs it, removes the file,
    /// then steps `msg`.
    Snapshot {
        msg: Message,
        path: PathBuf,
    },
    /// Sending a snapshot to `to` finished (Ok) or failed: report via
    /// `report_snapshot`.
    SnapshotStatus {
        to: u64,
        ok: bool,
    },
}

/// The store's key/value pairs at a snapshot, as streamed to a peer.
pub type SnapshotPairs = Box<dyn Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>> + Send>;

/// Streams the data of a snapshot the leader sends: called with the
/// MsgSnapshot's Snapshot; returns an iterator over the store's key/value
/// pairs at that snapshot. Runs on a blocking thread, so it may do I/O.
pub type SnapshotSource = Arc<dyn Fn(&Snapshot) -> io::Result<SnapshotPairs> + Send + Sync>;

/// Settings of a [`Transport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Peers presenting another cluster id are refused.
    pub cluster_id: String,
    pub node_id: u64,
    /// Address to listen on for peers; port 0 picks a free one.
    pub listen: String,
    /// Where incoming snapshots are written.
    pub snapshot_dir: PathBuf,
    /// Messages queued per peer before new ones are dropped.
    pub queue_max: usize,
    /// Largest frame accepted or sent; a connection sending a larger one
    /// is closed.
    pub frame_size_max_bytes: usize,
    /// The first wait before redialling a peer after a failure; it doubles
    /// with every failed dial up to `reconnect_max_ms`, and a dial that
    /// works starts it over.
    pub reconnect_min_ms: u64,
    /// The longest wait between two dials of an unreachable peer. It bounds
    /// how long after a partition heals the link stays down, so it is kept
    /// near the heartbeat interval ([`TransportConfig::with_timing`]).
    pub reconnect_max_ms: u64,
    /// How long a peer may take to answer: a dial (connect and handshake)
    /// slower than this fails, and a connection on which frames have been
    /// sent while nothing was acknowledged for this long is given up and
    /// redialled. TCP would otherwise leave a connection whose packets were
    /// dropped for a while silent long after the network healed: its
    /// retransmission timer backs off to seconds.
    pub peer_timeout_ms: u64,
    /// Target size of one snapshot chunk frame.
    pub snapshot_chunk_bytes: usize,
}

impl TransportConfig {
    /// A configuration with the default limits.
    pub fn new(
        cluster_id: impl Into<String>,
        node_id: u64,
        listen: impl Into<String>,
        snapshot_dir: impl Into<PathBuf>,
    ) -> Self {
        TransportConfig {
            cluster_id: cluster_id.into(),
            node_id,
            listen: listen.into(),
            snapshot_dir: snapshot_dir.into(),
            queue_max: 4096,
            frame_size_max_bytes: 64 << 20,
            reconnect_min_ms: 0,
            reconnect_max_ms: 0,
            peer_timeout_ms: 0,
            snapshot_chunk_bytes: 1 << 20,
        }
        .with_timing(50, 1, 10)
    }

    /// Sets the reconnection backoff and the peer timeout from raft's
    /// timing (a tick of `tick_ms`, a heartbeat every `heartbeat_ticks`,
    /// an election timeout of at least `election_ticks`), which `new`
    /// takes at the node's defaults (50 ms, 1, 10).
    ///
    /// A leader steps down when it has heard no quorum for an election
    /// timeout (check-quorum). So that a leader cut off from one follower
    /// keeps the other, a link must be back within well under that after a
    /// partition heals: the backoff is capped at one heartbeat interval
    /// (10 to 50 ms by default), and a stalled connection or dial is given
    /// up after half an election timeout (250 ms), which is also how late
    /// a heartbeat may arrive before the follower starts to count the
    /// leader gone.
    pub fn with_timing(
        mut self,
        tick_ms: u64,
        heartbeat_ticks: usize,
        election_ticks: usize,
    ) -> Self {
        let heartbeat_ms = (tick_ms * heartbeat_ticks as u64).max(1);
        let election_ms = tick_ms * election_ticks as u64;
        self.reconnect_max_ms = heartbeat_ms;
        self.reconnect_min_ms = (heartbeat_ms / 5).max(1);
        self.peer_timeout_ms = (election_ms / 2).max(heartbeat_ms);
        self
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        if self.node_id == 0 {
            return invalid("node id 0 is reserved by raft");
        }
        if self.cluster_id.len() > u16::MAX as usize {
            return invalid("cluster id longer than 65535 bytes");
        }
        if self.queue_max == 0 {
            return invalid("queue_max must be at least 1");
        }
        if self.frame_size_max_bytes > u32::MAX as usize || self.frame_size_max_bytes < 1024 {
            return invalid("frame_size_max_bytes must be between 1 KiB and 4 GiB");
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > self.frame_size_max_bytes {
            return invalid("snapshot_chunk_bytes must be between 1 and frame_size_max_bytes");
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return invalid("need 0 < reconnect_min_ms <= reconnect_max_ms");
        }
        if self.peer_timeout_ms == 0 {
            return invalid("peer_timeout_ms must be at least 1");
        }
        Ok(())
    }
}

/// A peer that does not drain its socket for this long is treated as down,
/// so its sender task gets back to reconnecting instead of hanging: on a
/// snapshot connection, and on a raft connection to a version 1 peer, which
/// does not acknowledge frames (a version 2 peer must acknowledge within
/// `peer_timeout_ms`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends raft messages and snapshots to peers and receives theirs.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    peers: Mutex<HashMap<u64, Peer>>,
    /// Flipped to true by `shutdown`; dropping it (last `Transport` gone)
    /// stops the tasks as well.
    stop: watch::Sender<bool>,
    listener: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// What every task needs; kept apart from `Inner` so tasks do not keep the
/// peer table (and with it their own handles) alive.
struct Shared {
    cfg: TransportConfig,
    /// `send` runs on the raft thread, outside tokio, and spawns from here.
    handle: tokio::runtime::Handle,
    inbound: SyncSender<Inbound>,
    snapshots: SnapshotSource,
    /// Per peer, the newest connection that carried raft batches. A sender
    /// uses one connection at a time, so an older one is a connection it
    /// gave up on as stalled, whose close may never have got through the
    /// partition that stalled it: it is closed when a newer one claims
    /// its place, rather than left open forever.
    raft_connections: Mutex<HashMap<u64, watch::Sender<()>>>,
}

struct Peer {
    addr: watch::Sender<String>,
    link: Arc<PeerLink>,
    sender: JoinHandle<()>,
    /// The snapshot transfer in flight, if any; one at a time per peer.
    snapshot: Option<JoinHandle<()>>,
}

/// The queue between `send` and a peer's sender task.
struct PeerLink {
    id: u64,
    queue: Mutex<VecDeque<Message>>,
    ready: Notify,
    /// Set once Unreachable was reported and cleared when a write succeeds,
    /// so one outage is reported once, not once per message or retry.
    unreachable: AtomicBool,
}

impl Transport {
    /// Binds `listen` (a port of 0 is allowed: see `local_addr`) and starts
    /// accepting peers; inbound messages go to `inbound`. Must be called
    /// inside a tokio runtime.
    pub async fn start(
        cfg: TransportConfig,
        inbound: SyncSender<Inbound>,
        snapshots: SnapshotSource,
    ) -> io::Result<Transport> {
        cfg.validate()?;
        let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        std::fs::create_dir_all(&cfg.snapshot_dir)?;
        remove_stale_snapshots(&cfg.snapshot_dir)?;
        let listener = TcpListener::bind(&cfg.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            handle,
            inbound,
            snapshots,
            raft_connections: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(run_listener(shared.clone(), listener, stop_rx));
        tracing::info!(addr = %local_addr, node = shared.cfg.node_id, "peer transport listening");
        Ok(Transport {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                peers: Mutex::new(HashMap::new()),
                stop,
                listener: Mutex::new(Some(accept)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Adds a peer or changes its address; a changed address makes the
    /// sender task drop its connection and dial the new one.
    pub fn set_peer(&self, id: u64, addr: String) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if id == inner.shared.cfg.node_id {
            // Raft never messages itself; a sender to our own listener
            // would only loop messages back.
            tracing::debug!(id, "ignoring self as peer");
            return;
        }
        let mut peers = inner.peers.lock();
        if let Some(peer) = peers.get(&id) {
            peer.addr.send_if_modified(|current| {
                if *current == addr {
                    return false;
                }
                tracing::info!(peer = id, from = %current, to = %addr, "peer address changed");
                *current = addr;
                true
            });
            return;
        }
        let (addr_tx, addr_rx) = watch::channel(addr);
        let link = Arc::new(PeerLink {
            id,
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            unreachable: AtomicBool::new(false),
        });
        let sender = inner.shared.handle.spawn(run_sender(
            inner.shared.clone(),
            link.clone(),
            addr_rx,
            inner.stop.subscribe(),
        ));
        peers.insert(
            id,
            Peer {
                addr: addr_tx,
                link,
                sender,
                snapshot: None,
            },
        );
    }

    /// Stops the peer's sender task and drops its queue.
    pub fn remove_peer(&self, id: u64) {
        if let Some(peer) = self.inner.peers.lock().remove(&id) {
            peer.sender.abort();
            if let Some(snapshot) = peer.snapshot {
                snapshot.abort();
            }
        }
    }

    /// Queues messages for their peers without blocking; callable from the
    /// raft thread. A full queue drops the message and reports the peer
    /// unreachable (once per outage). A MsgSnapshot goes to a snapshot
    /// transfer of its own instead of the queue.
    pub fn send(&self, msgs: Vec<Message>) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let shared = &inner.shared;
        let mut touched: Vec<Arc<PeerLink>> = Vec::new();
        let mut peers = inner.peers.lock();
        for msg in msgs {
            let to = msg.to;
            let Some(peer) = peers.get_mut(&to) else {
                tracing::debug!(to, "message for unknown peer dropped");
                if msg.get_msg_type() == MessageType::MsgSnapshot {
                    // Raft waits for a status before it sends another one.
                    shared.report_snapshot_status(to, false);
                }
                continue;
            };
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.start_snapshot(peer, msg);
                continue;
            }
            let mut queue = peer.link.queue.lock();
            if queue.len() >= shared.cfg.queue_max {
                drop(queue);
                shared.report_unreachable(&peer.link);
                continue;
            }
            queue.push_back(msg);
            drop(queue);
            if !touched.iter().any(|l| Arc::ptr_eq(l, &peer.link)) {
                touched.push(peer.link.clone());
            }
        }
        drop(peers);
        for link in touched {
            link.ready.notify_one();
        }
    }

    /// Stops the listener, every sender and every transfer; the listening
    /// port is free once this returns.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.stop.send_replace(true);
        let listener = inner.listener.lock().take();
        let peers: Vec<Peer> = inner.peers.lock().drain().map(|(_, p)| p).collect();
        let mut tasks = Vec::new();
        for peer in peers {
            peer.sender.abort();
            tasks.push(peer.sender);
            if let Some(snapshot) = peer.snapshot {
                snapshot.abort();
                tasks.push(snapshot);
            }
        }
        if let Some(listener) = listener {
            tasks.push(listener);
        }
        for task in tasks {
            // Cancelled is the expected outcome; a panic was logged already.
            let _ = task.await;
        }
    }

    /// Whether the listener task ended while the transport is open: it
    /// ends only on shutdown, or by panicking, and then peers can no
    /// longer reach this node.
    pub fn listener_ended(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
            && self
                .inner
                .listener
                .lock()
                .as_ref()
                .is_some_and(|t| t.is_finished())
    }

    /// Messages waiting in the peer's queue, or None for an unknown peer.
    pub fn queued(&self, id: u64) -> Option<usize> {
        let peers = self.inner.peers.lock();
        peers.get(&id).map(|p| p.link.queue.lock().len())
    }

    fn start_snapshot(&self, peer: &mut Peer, msg: Message) {
        let shared = &self.inner.shared;
        let to = msg.to;
        if peer.snapshot.as_ref().is_some_and(|t| !t.is_finished()) {
            // Raft only sends another snapshot after giving up on the last;
            // refusing lets it retry once the running transfer is over.
            tracing::warn!(to, "snapshot already streaming to peer; refusing another");
            shared.report_snapshot_status(to, false);
            return;
        }
        let addr = peer.addr.borrow().clone();
        peer.snapshot = Some(shared.handle.spawn(send_snapshot(
            shared.clone(),
            addr,
            msg,
            self.inner.stop.subscribe(),
        )));
    }
}

impl Shared {
    /// Makes a connection from `from` that carries raft batches that
    /// peer's current one; the receiver changes when a newer one does.
    fn claim_raft_connection(&self, from: u64) -> watch::Receiver<()> {
        let mut connections = self.raft_connections.lock();
        match connections.get(&from) {
            Some(tx) => {
                tx.send_replace(());
                tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(());
                connections.insert(from, tx);
                rx
            }
        }
    }

    fn report_unreachable(&self, link: &PeerLink) {
        if link.unreachable.swap(true, Ordering::AcqRel) {
            return;
        }
        if self
            .inbound
            .try_send(Inbound::Unreachable(link.id))
            .is_err()
        {
            // Not delivered: leave the episode open so the next failure
            // tries again.
            link.unreachable.store(false, Ordering::Release);
        }
    }

    /// Raft must learn how every snapshot ended, so this blocks (on a
    /// blocking thread, never the caller's) rather than dropping.
    fn report_snapshot_status(&self, to: u64, ok: bool) {
        let tx = self.inbound.clone();
        self.handle.spawn_blocking(move || {
            let _ = tx.send(Inbound::SnapshotStatus { to, ok });
        });
    }
}

/// Delivers something that must not be dropped, waiting for room in the
/// raft loop's channel on a blocking thread. False if the loop is gone.
async fn deliver_blocking(shared: &Shared, item: Inbound) -> bool {
    let tx = shared.inbound.clone();
    matches!(
        tokio::task::spawn_blocking(move || tx.send(item).is_ok()).await,
        Ok(true)
    )
}
