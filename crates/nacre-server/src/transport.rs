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
//! - handshake, sender to receiver: `b"NACP"`, u16 version, u16 length and
//!   the cluster id, u64 sender node id; the receiver answers a u16 status
//!   (0 ok, 1 wrong cluster, 2 bad version) and closes on non-zero.
//! - frames: u32 body length, u8 kind, u32 CRC32C of the body, body.
//!   Kind 1 is a raft batch (u32 count, then u32 length and protobuf
//!   message each); kind 2 a snapshot chunk (a run of u32 key length, key,
//!   u32 value length, value); kind 3 ends a snapshot and carries the
//!   protobuf MsgSnapshot. After kind 3 the receiver answers a u16 status
//!   (0 once the file is durable and handed to the raft loop), so the
//!   sender reports success only for a snapshot that really arrived.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType, Snapshot};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

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
pub type SnapshotPairs = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), String>> + Send>;

/// Streams the data of a snapshot the leader sends: called with the
/// MsgSnapshot's Snapshot; returns an iterator over the store's key/value
/// pairs at that snapshot. Runs on a blocking thread, so it may do I/O.
pub type SnapshotSource = Arc<dyn Fn(&Snapshot) -> Result<SnapshotPairs, String> + Send + Sync>;

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
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
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
            reconnect_min_ms: 50,
            reconnect_max_ms: 2000,
            snapshot_chunk_bytes: 1 << 20,
        }
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
        Ok(())
    }
}

const MAGIC: &[u8; 4] = b"NACP";
const VERSION: u16 = 1;

const STATUS_OK: u16 = 0;
const STATUS_WRONG_CLUSTER: u16 = 1;
const STATUS_BAD_VERSION: u16 = 2;
/// Answer to a snapshot end frame the receiver could not store or deliver.
const STATUS_SNAPSHOT_FAILED: u16 = 3;

const KIND_RAFT_BATCH: u8 = 1;
const KIND_SNAPSHOT_CHUNK: u8 = 2;
const KIND_SNAPSHOT_END: u8 = 3;

/// u32 length, u8 kind, u32 CRC32C.
const FRAME_HEADER_BYTES: usize = 9;
/// One write carries about this much, so a backlog goes out in few
/// syscalls without building huge buffers.
const BATCH_TARGET_BYTES: usize = 1 << 20;

/// Connect plus handshake; a peer slower than this is treated as down.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer that does not drain its socket for this long is treated as down,
/// so its sender task gets back to reconnecting instead of hanging.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A snapshot sender silent for this long mid-transfer is dropped, so a
/// vanished leader does not pin the temp file forever.
const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The receiver fsyncs the whole snapshot before answering the end frame.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Left-overs of a previous run: no Inbound::Snapshot survives a restart,
/// so nobody will install these.
fn remove_stale_snapshots(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("incoming-") && (name.ends_with(".tmp") || name.ends_with(".snap")) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- framing

/// Starts a frame in `buf`, leaving room for the header `finish_frame`
/// fills in once the body is known.
fn begin_frame(buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(FRAME_HEADER_BYTES, 0);
}

fn finish_frame(buf: &mut [u8], kind: u8) {
    let (header, body) = buf.split_at_mut(FRAME_HEADER_BYTES);
    let len = u32::try_from(body.len()).expect("frames are capped well below 4 GiB");
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = kind;
    header[5..9].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
}

/// Reads one frame into `body`, returning its kind, or None when the peer
/// closed the connection between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
    frame_size_max_bytes: usize,
) -> io::Result<Option<u8>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let n = r.read(&mut header).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut header[n..]).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = header[4];
    let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    if len > frame_size_max_bytes {
        return Err(invalid_data(format!(
            "frame of {len} bytes exceeds limit of {frame_size_max_bytes}"
        )));
    }
    body.clear();
    // Grows as bytes arrive instead of trusting the length up front.
    let got = r.take(len as u64).read_to_end(body).await?;
    if got != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-frame",
        ));
    }
    if crc32c::crc32c(body) != crc {
        return Err(invalid_data("frame checksum mismatch".into()));
    }
    Ok(Some(kind))
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn take_u32(buf: &mut &[u8]) -> io::Result<u32> {
    let bytes = take_bytes(buf, 4)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn take_bytes<'a>(buf: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if buf.len() < n {
        return Err(invalid_data("truncated frame body".into()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Checks that a chunk body is a whole number of key/value pairs, so the
/// snapshot file is well formed by construction.
fn check_pairs(mut body: &[u8]) -> io::Result<()> {
    while !body.is_empty() {
        for _ in 0..2 {
            let len = take_u32(&mut body)? as usize;
            take_bytes(&mut body, len)?;
        }
    }
    Ok(())
}

fn push_pair(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    for field in [key, value] {
        let len = u32::try_from(field.len()).expect("pair length checked against the frame limit");
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(field);
    }
}

// ----------------------------------------------------------------- handshake

/// Dials `addr` and presents ourselves; Ok once the receiver accepted.
async fn connect(cfg: &TransportConfig, addr: &str) -> io::Result<TcpStream> {
    let dial = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let cluster = cfg.cluster_id.as_bytes();
        let mut hello = Vec::with_capacity(16 + cluster.len());
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&VERSION.to_le_bytes());
        hello.extend_from_slice(&(cluster.len() as u16).to_le_bytes());
        hello.extend_from_slice(cluster);
        hello.extend_from_slice(&cfg.node_id.to_le_bytes());
        stream.write_all(&hello).await?;
        match stream.read_u16_le().await? {
            STATUS_OK => Ok(stream),
            STATUS_WRONG_CLUSTER => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "peer belongs to another cluster",
            )),
            STATUS_BAD_VERSION => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "peer does not speak protocol version 1",
            )),
            other => Err(invalid_data(format!("unknown handshake status {other}"))),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, dial)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer handshake timed out"))?
}

/// Reads a peer's handshake and answers it; returns the peer's node id.
async fn accept_handshake(stream: &mut TcpStream, cfg: &TransportConfig) -> io::Result<u64> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        // Not one of ours: no status, since it would not understand it.
        return Err(invalid_data("not a Nacre peer (bad magic)".into()));
    }
    let version = stream.read_u16_le().await?;
    if version != VERSION {
        // The rest of the handshake may be laid out differently: refuse
        // before reading it.
        stream.write_u16_le(STATUS_BAD_VERSION).await?;
        return Err(invalid_data(format!("peer speaks version {version}")));
    }
    let cluster_len = stream.read_u16_le().await? as usize;
    let mut cluster = vec![0u8; cluster_len];
    stream.read_exact(&mut cluster).await?;
    let from = stream.read_u64_le().await?;
    if cluster != cfg.cluster_id.as_bytes() {
        stream.write_u16_le(STATUS_WRONG_CLUSTER).await?;
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "node {from} belongs to cluster {:?}",
                String::from_utf8_lossy(&cluster)
            ),
        ));
    }
    stream.write_u16_le(STATUS_OK).await?;
    Ok(from)
}

// ------------------------------------------------------------------- sending

enum PumpEnd {
    Stop,
    AddrChanged,
    Failed(io::Error),
}

/// A peer's sender task: keeps a connection up and drains the queue into it.
async fn run_sender(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    mut addr_rx: watch::Receiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.cfg;
    let mut backoff_ms = cfg.reconnect_min_ms;
    loop {
        if *stop.borrow() {
            return;
        }
        let addr = addr_rx.borrow_and_update().clone();
        let connected = tokio::select! {
            r = connect(cfg, &addr) => r,
            _ = stop.changed() => return,
            r = addr_rx.changed() => match r {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let failure = match connected {
            Ok(stream) => {
                tracing::debug!(peer = link.id, %addr, "connected to peer");
                backoff_ms = cfg.reconnect_min_ms;
                match pump(&shared, &link, stream, &mut addr_rx, &mut stop).await {
                    PumpEnd::Stop => return,
                    PumpEnd::AddrChanged => continue,
                    PumpEnd::Failed(e) => e,
                }
            }
            Err(e) => e,
        };
        if link.unreachable.load(Ordering::Acquire) {
            tracing::debug!(peer = link.id, %addr, error = %failure, "peer still unreachable");
        } else {
            tracing::warn!(peer = link.id, %addr, error = %failure, "peer unreachable");
        }
        // Raft falls back to probing an unreachable peer and resends what
        // it needs, so the backlog is stale: drop it rather than replay it.
        link.queue.lock().clear();
        shared.report_unreachable(&link);

        // Jitter keeps the nodes of a cluster from redialling in lockstep.
        let sleep_ms = rand::rng().random_range(backoff_ms / 2..=backoff_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            _ = stop.changed() => return,
            r = addr_rx.changed() => if r.is_err() { return },
        }
        backoff_ms = backoff_ms.saturating_mul(2).min(cfg.reconnect_max_ms);
    }
}

/// Writes queued messages to an established connection until it fails,
/// the address changes or the transport stops.
async fn pump(
    shared: &Shared,
    link: &PeerLink,
    stream: TcpStream,
    addr_rx: &mut watch::Receiver<String>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    // The receiver never writes after the handshake; reading only notices
    // when it closes, so a dead idle connection is redialled right away
    // instead of on the next message.
    let mut probe = [0u8; 1];
    loop {
        while let Some(count) = encode_batch(link, &mut buf, shared.cfg.frame_size_max_bytes) {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&buf)).await {
                Ok(Ok(())) => {
                    link.unreachable.store(false, Ordering::Release);
                    tracing::trace!(peer = link.id, count, bytes = buf.len(), "batch sent");
                }
                Ok(Err(e)) => return PumpEnd::Failed(e),
                Err(_) => {
                    return PumpEnd::Failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    ))
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return PumpEnd::Stop,
            r = addr_rx.changed() => {
                return if r.is_ok() { PumpEnd::AddrChanged } else { PumpEnd::Stop };
            }
            r = rd.read(&mut probe) => {
                return PumpEnd::Failed(match r {
                    Ok(0) => io::Error::new(io::ErrorKind::ConnectionReset, "peer closed the connection"),
                    Ok(_) => invalid_data("peer sent data after the handshake".into()),
                    Err(e) => e,
                });
            }
            _ = link.ready.notified() => {}
        }
    }
}

/// Moves queued messages into one raft batch frame in `buf`, up to about
/// `BATCH_TARGET_BYTES`; None when the queue is empty.
fn encode_batch(link: &PeerLink, buf: &mut Vec<u8>, frame_size_max_bytes: usize) -> Option<usize> {
    // Pick under the lock, encode after releasing it, so the raft thread's
    // `send` never waits for serialization.
    let mut picked = Vec::new();
    {
        let mut queue = link.queue.lock();
        let mut batch_bytes = FRAME_HEADER_BYTES + 4;
        while let Some(msg) = queue.front() {
            let size = 4 + msg.compute_size() as usize;
            if size + 4 > frame_size_max_bytes {
                // The receiver would close the connection over it; raft
                // copes with a lost message, not with a wedged link.
                tracing::error!(
                    peer = link.id,
                    bytes = size,
                    "raft message exceeds frame limit; dropped"
                );
                queue.pop_front();
                continue;
            }
            if !picked.is_empty()
                && (batch_bytes + size > BATCH_TARGET_BYTES
                    || batch_bytes + size - FRAME_HEADER_BYTES > frame_size_max_bytes)
            {
                break;
            }
            batch_bytes += size;
            picked.extend(queue.pop_front());
        }
    }
    if picked.is_empty() {
        return None;
    }
    begin_frame(buf);
    buf.extend_from_slice(&(picked.len() as u32).to_le_bytes());
    let mut count = 0u32;
    for msg in &picked {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        if let Err(e) = msg.write_to_vec(buf) {
            tracing::error!(peer = link.id, error = %e, "cannot encode raft message; dropped");
            buf.truncate(start);
            continue;
        }
        let len = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        count += 1;
    }
    buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + 4].copy_from_slice(&count.to_le_bytes());
    finish_frame(buf, KIND_RAFT_BATCH);
    Some(count as usize)
}

/// Streams one snapshot to a peer and reports how it went to our raft loop.
async fn send_snapshot(
    shared: Arc<Shared>,
    addr: String,
    msg: Message,
    mut stop: watch::Receiver<bool>,
) {
    let to = msg.to;
    let index = msg.get_snapshot().get_metadata().index;
    let result = tokio::select! {
        r = transfer_snapshot(&shared, &addr, &msg) => r,
        _ = stop.changed() => return,
    };
    let ok = match result {
        Ok(bytes) => {
            tracing::info!(to, index, bytes, "snapshot sent");
            true
        }
        Err(e) => {
            tracing::warn!(to, index, %addr, error = %e, "snapshot transfer failed");
            false
        }
    };
    deliver_blocking(&shared, Inbound::SnapshotStatus { to, ok }).await;
}

/// Returns the number of pair bytes sent.
async fn transfer_snapshot(shared: &Shared, addr: &str, msg: &Message) -> io::Result<u64> {
    let cfg = &shared.cfg;
    let mut stream = connect(cfg, addr).await?;
    // A small channel keeps the reader at most a couple of chunks ahead of
    // the socket, so memory stays bounded whatever the store's size.
    let (tx, mut rx) = mpsc::channel(2);
    let source = shared.snapshots.clone();
    let snapshot = msg.get_snapshot().clone();
    let chunk_bytes = cfg.snapshot_chunk_bytes;
    let frame_max = cfg.frame_size_max_bytes;
    tokio::task::spawn_blocking(move || {
        produce_chunks(&source, &snapshot, chunk_bytes, frame_max, &tx)
    });
    let mut sent_bytes = 0u64;
    while let Some(frame) = rx.recv().await {
        let frame: Vec<u8> = frame?;
        sent_bytes += (frame.len() - FRAME_HEADER_BYTES) as u64;
        write_timed(&mut stream, &frame).await?;
    }
    let mut end = Vec::new();
    begin_frame(&mut end);
    msg.write_to_vec(&mut end).map_err(io::Error::other)?;
    if end.len() - FRAME_HEADER_BYTES > frame_max {
        return Err(invalid_data("snapshot message exceeds frame limit".into()));
    }
    finish_frame(&mut end, KIND_SNAPSHOT_END);
    write_timed(&mut stream, &end).await?;
    let status = tokio::time::timeout(SNAPSHOT_ACK_TIMEOUT, stream.read_u16_le())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no snapshot acknowledgement"))??;
    if status != STATUS_OK {
        return Err(io::Error::other(format!(
            "peer refused snapshot (status {status})"
        )));
    }
    Ok(sent_bytes)
}

async fn write_timed(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))?
}

/// Runs on a blocking thread: reads the snapshot's pairs and sends chunk
/// frames; stops early when the transfer is abandoned (channel closed).
fn produce_chunks(
    source: &SnapshotSource,
    snapshot: &Snapshot,
    chunk_bytes: usize,
    frame_max: usize,
    tx: &mpsc::Sender<io::Result<Vec<u8>>>,
) {
    let fail = |e: String| {
        let _ = tx.blocking_send(Err(io::Error::other(e)));
    };
    let pairs = match source(snapshot) {
        Ok(pairs) => pairs,
        Err(e) => return fail(format!("snapshot source: {e}")),
    };
    let mut frame = Vec::new();
    begin_frame(&mut frame);
    for pair in pairs {
        let (key, value) = match pair {
            Ok(pair) => pair,
            Err(e) => return fail(format!("snapshot source: {e}")),
        };
        let pair_bytes = 8 + key.len() + value.len();
        if pair_bytes > frame_max {
            return fail(format!("a {pair_bytes}-byte pair exceeds the frame limit"));
        }
        let body_bytes = frame.len() - FRAME_HEADER_BYTES;
        if body_bytes > 0 && body_bytes + pair_bytes > chunk_bytes {
            finish_frame(&mut frame, KIND_SNAPSHOT_CHUNK);
            if tx.blocking_send(Ok(std::mem::take(&mut frame))).is_err() {
                return;
            }
            begin_frame(&mut frame);
        }
        push_pair(&mut frame, &key, &value);
    }
    if frame.len() > FRAME_HEADER_BYTES {
        finish_frame(&mut frame, KIND_SNAPSHOT_CHUNK);
        let _ = tx.blocking_send(Ok(frame));
    }
}

// ----------------------------------------------------------------- receiving

async fn run_listener(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    // Owning the connection tasks here means they are aborted when the
    // listener ends.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    conns.spawn(serve_connection(shared.clone(), stream, remote));
                }
                Err(e) => {
                    // Typically out of file descriptors: pause instead of
                    // spinning on the error.
                    tracing::warn!(error = %e, "accepting peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, mut stream: TcpStream, remote: SocketAddr) {
    if let Err(e) = serve(&shared, &mut stream).await {
        tracing::warn!(%remote, error = %e, "peer connection closed");
    }
}

async fn serve(shared: &Shared, stream: &mut TcpStream) -> io::Result<()> {
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let from = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(stream, cfg))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer handshake timed out"))??;
    tracing::debug!(from, "peer connected");
    let mut incoming: Option<IncomingSnapshot> = None;
    let mut body = Vec::new();
    loop {
        let next = read_frame(stream, &mut body, cfg.frame_size_max_bytes);
        let kind = if incoming.is_some() {
            tokio::time::timeout(SNAPSHOT_STALL_TIMEOUT, next)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "snapshot sender stalled"))??
        } else {
            next.await?
        };
        let Some(kind) = kind else {
            return Ok(());
        };
        match kind {
            KIND_RAFT_BATCH => deliver_batch(shared, from, &body)?,
            KIND_SNAPSHOT_CHUNK => {
                check_pairs(&body)?;
                let snap = match incoming.as_mut() {
                    Some(snap) => snap,
                    None => {
                        incoming.insert(IncomingSnapshot::create(&cfg.snapshot_dir, from).await?)
                    }
                };
                body = snap.append(body).await?;
            }
            KIND_SNAPSHOT_END => {
                let snap = match incoming.take() {
                    Some(snap) => snap,
                    // An empty store streams no chunks.
                    None => IncomingSnapshot::create(&cfg.snapshot_dir, from).await?,
                };
                let status = match finish_snapshot(shared, from, &body, snap).await {
                    Ok(()) => STATUS_OK,
                    Err(e) => {
                        tracing::warn!(from, error = %e, "incoming snapshot rejected");
                        STATUS_SNAPSHOT_FAILED
                    }
                };
                stream.write_u16_le(status).await?;
            }
            other => return Err(invalid_data(format!("unknown frame kind {other}"))),
        }
    }
}

fn deliver_batch(shared: &Shared, from: u64, body: &[u8]) -> io::Result<()> {
    let mut rest = body;
    let count = take_u32(&mut rest)?;
    let mut dropped = 0u32;
    for _ in 0..count {
        let len = take_u32(&mut rest)? as usize;
        let bytes = take_bytes(&mut rest, len)?;
        let msg = Message::parse_from_bytes(bytes).map_err(|e| invalid_data(e.to_string()))?;
        if msg.from != from || msg.to != shared.cfg.node_id {
            // A misconfigured address book would otherwise feed raft
            // messages meant for another node.
            return Err(invalid_data(format!(
                "message {} -> {} on a connection from {from} to {}",
                msg.from, msg.to, shared.cfg.node_id
            )));
        }
        match shared.inbound.try_send(Inbound::Raft(msg)) {
            Ok(()) => {}
            // Raft retransmits; a busy raft loop must not stall the socket.
            Err(TrySendError::Full(_)) => dropped += 1,
            Err(TrySendError::Disconnected(_)) => {
                return Err(io::Error::other("raft loop has stopped"))
            }
        }
    }
    if !rest.is_empty() {
        return Err(invalid_data("trailing bytes after raft batch".into()));
    }
    if dropped > 0 {
        tracing::debug!(from, dropped, "raft loop busy; inbound messages dropped");
    }
    Ok(())
}

async fn finish_snapshot(
    shared: &Shared,
    from: u64,
    body: &[u8],
    snap: IncomingSnapshot,
) -> io::Result<()> {
    let msg = Message::parse_from_bytes(body).map_err(|e| invalid_data(e.to_string()))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot
        || msg.from != from
        || msg.to != shared.cfg.node_id
    {
        return Err(invalid_data(format!(
            "snapshot end carries {:?} {} -> {}",
            msg.get_msg_type(),
            msg.from,
            msg.to
        )));
    }
    let index = msg.get_snapshot().get_metadata().index;
    let path = snap.persist(from, index).await?;
    if !deliver_blocking(
        shared,
        Inbound::Snapshot {
            msg,
            path: path.clone(),
        },
    )
    .await
    {
        let _ = std::fs::remove_file(&path);
        return Err(io::Error::other("raft loop has stopped"));
    }
    Ok(())
}

/// A snapshot being received; its temp file is removed unless persisted.
struct IncomingSnapshot {
    file: Option<std::fs::File>,
    dir: PathBuf,
    tmp_path: PathBuf,
}

/// Distinguishes temp files of concurrent transfers from the same peer
/// (the snapshot index is only known at the end frame).
static INCOMING_SEQ: AtomicU64 = AtomicU64::new(0);

impl IncomingSnapshot {
    async fn create(dir: &Path, from: u64) -> io::Result<IncomingSnapshot> {
        let seq = INCOMING_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!("incoming-{from}-{seq}.tmp"));
        let file = {
            let tmp_path = tmp_path.clone();
            tokio::task::spawn_blocking(move || std::fs::File::create(tmp_path))
                .await
                .map_err(io::Error::other)??
        };
        Ok(IncomingSnapshot {
            file: Some(file),
            dir: dir.to_path_buf(),
            tmp_path,
        })
    }

    /// Appends a chunk body; hands the buffer back for reuse.
    async fn append(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot file closed"))?;
        let (file, chunk) =
            tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| (file, chunk)))
                .await
                .map_err(io::Error::other)??;
        self.file = Some(file);
        Ok(chunk)
    }

    /// Makes the file durable under its final name
    /// `incoming-<from>-<index>.snap`.
    async fn persist(mut self, from: u64, index: u64) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot file closed"))?;
        let tmp_path = self.tmp_path.clone();
        let dir = self.dir.clone();
        let path = dir.join(format!("incoming-{from}-{index}.snap"));
        let final_path = path.clone();
        let persisted = tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp_path, &final_path)?;
            // The rename itself must survive a crash too.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?;
        match persisted {
            Ok(()) => {
                // Renamed away: nothing left for Drop to clean up.
                self.tmp_path = PathBuf::new();
                Ok(path)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

// ------------------------------------------------------------ snapshot files

/// Reads a snapshot file written by the transport: the key/value pairs in
/// the order the leader streamed them.
pub fn read_snapshot_file(
    path: impl AsRef<Path>,
) -> io::Result<impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>> {
    let file = std::fs::File::open(path)?;
    let remaining_bytes = file.metadata()?.len();
    Ok(SnapshotFilePairs {
        reader: BufReader::new(file),
        remaining_bytes,
        failed: false,
    })
}

struct SnapshotFilePairs {
    reader: BufReader<std::fs::File>,
    /// Bounds every length read from the file, so a corrupt length fails
    /// instead of allocating gigabytes.
    remaining_bytes: u64,
    failed: bool,
}

impl SnapshotFilePairs {
    fn read_field(&mut self) -> io::Result<Vec<u8>> {
        if self.remaining_bytes < 4 {
            return Err(invalid_data("snapshot file truncated".into()));
        }
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        self.remaining_bytes -= 4;
        let len = u64::from(u32::from_le_bytes(len));
        if len > self.remaining_bytes {
            return Err(invalid_data("snapshot file truncated".into()));
        }
        let mut field = vec![0u8; len as usize];
        self.reader.read_exact(&mut field)?;
        self.remaining_bytes -= len;
        Ok(field)
    }
}

impl Iterator for SnapshotFilePairs {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.remaining_bytes == 0 {
            return None;
        }
        let pair = self
            .read_field()
            .and_then(|key| self.read_field().map(|value| (key, value)));
        self.failed = pair.is_err();
        Some(pair)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{sync_channel, Receiver};
    use std::time::Instant;

    use raft::eraftpb::Entry;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn config(cluster: &str, id: u64, listen: &str, dir: &Path) -> TransportConfig {
        let mut cfg = TransportConfig::new(cluster, id, listen, dir.join(format!("snap-{id}")));
        // Short backoff keeps the reconnect tests fast.
        cfg.reconnect_min_ms = 10;
        cfg.reconnect_max_ms = 100;
        cfg
    }

    fn no_snapshots() -> SnapshotSource {
        Arc::new(|_: &Snapshot| Err("no snapshots here".to_string()))
    }

    struct Node {
        transport: Transport,
        rx: Receiver<Inbound>,
    }

    fn start(rt: &tokio::runtime::Runtime, cfg: TransportConfig, source: SnapshotSource) -> Node {
        let (tx, rx) = sync_channel(100_000);
        let transport = rt
            .block_on(Transport::start(cfg, tx, source))
            .expect("transport starts");
        Node { transport, rx }
    }

    fn append(from: u64, to: u64, index: u64, payload_bytes: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = from;
        m.to = to;
        m.index = index;
        let e = Entry {
            index: index + 1,
            data: vec![index as u8; payload_bytes].into(),
            ..Default::default()
        };
        m.entries = vec![e].into();
        m
    }

    /// A port nothing listens on (yet).
    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    fn next_raft(rx: &Receiver<Inbound>, deadline: Instant) -> Option<Message> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match rx.recv_timeout(left) {
                Ok(Inbound::Raft(m)) => return Some(m),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn count_unreachable(rx: &Receiver<Inbound>, id: u64) -> usize {
        rx.try_iter()
            .filter(|i| matches!(i, Inbound::Unreachable(p) if *p == id))
            .count()
    }

    fn wait_unreachable(rx: &Receiver<Inbound>, id: u64) -> bool {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Inbound::Unreachable(p)) if p == id => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    #[test]
    fn messages_flow_both_ways_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        let a = start(
            &rt,
            config("c", 1, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        let b = start(
            &rt,
            config("c", 2, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        a.transport
            .set_peer(2, b.transport.local_addr().to_string());
        b.transport
            .set_peer(1, a.transport.local_addr().to_string());

        // 1000 messages of 2 KiB make about 2 MiB: more than one batch.
        const COUNT: u64 = 1000;
        for chunk in 0..10 {
            let range = chunk * 100..(chunk + 1) * 100;
            a.transport
                .send(range.clone().map(|i| append(1, 2, i, 2048)).collect());
            b.transport
                .send(range.map(|i| append(2, 1, i, 2048)).collect());
        }
        let deadline = Instant::now() + WAIT;
        for (node, from) in [(&b, 1), (&a, 2)] {
            for want in 0..COUNT {
                let m = next_raft(&node.rx, deadline)
                    .unwrap_or_else(|| panic!("message {want} from {from} never arrived"));
                assert_eq!((m.from, m.index), (from, want));
                assert_eq!(m.entries[0].data.len(), 2048);
            }
        }
        assert_eq!(a.transport.queued(2), Some(0));
        rt.block_on(a.transport.shutdown());
        rt.block_on(b.transport.shutdown());
    }

    #[test]
    fn down_peer_is_reported_once_then_reconnected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        let b_addr = free_addr();
        let a = start(
            &rt,
            config("c", 1, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        a.transport.set_peer(2, b_addr.to_string());
        a.transport.send(vec![append(1, 2, 0, 1)]);
        assert!(wait_unreachable(&a.rx, 2), "no Unreachable for a down peer");

        // Several failed redials (backoff is at most 100 ms) are one outage.
        for i in 0..10 {
            a.transport.send(vec![append(1, 2, i, 1)]);
            std::thread::sleep(Duration::from_millis(40));
        }
        assert_eq!(count_unreachable(&a.rx, 2), 0, "outage reported twice");

        let b = start(
            &rt,
            config("c", 2, &b_addr.to_string(), dir.path()),
            no_snapshots(),
        );
        // Messages queued while the redial raced the restart may arrive
        // first; what matters is that new ones get through.
        let deadline = Instant::now() + WAIT;
        let mut arrived = false;
        while !arrived && Instant::now() < deadline {
            a.transport.send(vec![append(1, 2, 42, 1)]);
            let window = Instant::now() + Duration::from_millis(50);
            while let Some(m) = next_raft(&b.rx, window) {
                arrived |= m.index == 42;
            }
        }
        assert!(arrived, "no message after the peer came up");

        // Delivery ended the outage, so losing the peer again is news.
        rt.block_on(b.transport.shutdown());
        a.transport.send(vec![append(1, 2, 43, 1)]);
        assert!(wait_unreachable(&a.rx, 2), "second outage not reported");
        rt.block_on(a.transport.shutdown());
    }

    #[test]
    fn other_cluster_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        let a = start(
            &rt,
            config("ours", 1, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        let b = start(
            &rt,
            config("theirs", 2, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        let b_addr = b.transport.local_addr();
        a.transport.set_peer(2, b_addr.to_string());
        for i in 0..10 {
            a.transport.send(vec![append(1, 2, i, 1)]);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            wait_unreachable(&a.rx, 2),
            "rejection not reported as unreachable"
        );
        assert!(next_raft(&b.rx, Instant::now() + Duration::from_millis(200)).is_none());

        // The handshake answers say why.
        let status = |hello: &[u8]| {
            let mut s = std::net::TcpStream::connect(b_addr).expect("connect");
            s.write_all(hello).expect("write");
            let mut status = [0u8; 2];
            s.read_exact(&mut status).expect("status");
            u16::from_le_bytes(status)
        };
        let mut wrong_cluster = b"NACP\x01\x00\x04\x00ours".to_vec();
        wrong_cluster.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(status(&wrong_cluster), STATUS_WRONG_CLUSTER);
        assert_eq!(status(b"NACP\x02\x00"), STATUS_BAD_VERSION);
        let mut right = b"NACP\x01\x00\x06\x00theirs".to_vec();
        right.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(status(&right), STATUS_OK);
        rt.block_on(a.transport.shutdown());
        rt.block_on(b.transport.shutdown());
    }

    #[test]
    fn full_queue_drops_and_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        // Accepts TCP but never answers the handshake: the sender stays
        // stuck connecting, so nothing drains or clears the queue.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut cfg = config("c", 1, "127.0.0.1:0", dir.path());
        cfg.queue_max = 8;
        let a = start(&rt, cfg, no_snapshots());
        a.transport
            .set_peer(2, silent.local_addr().expect("addr").to_string());
        let started = Instant::now();
        for i in 0..100 {
            a.transport
                .send((0..100).map(|j| append(1, 2, i * 100 + j, 64)).collect());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "send blocked");
        assert_eq!(a.transport.queued(2), Some(8));
        assert_eq!(count_unreachable(&a.rx, 2), 1);
        rt.block_on(a.transport.shutdown());
    }

    fn pair(i: usize) -> (Vec<u8>, Vec<u8>) {
        (
            format!("key-{i:05}").into_bytes(),
            vec![(i % 251) as u8; i % 300],
        )
    }

    fn snapshot_msg(from: u64, to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = from;
        m.to = to;
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = 3;
        s.data = b"descriptor".to_vec().into();
        m.set_snapshot(s);
        m
    }

    fn snapshot_status(rx: &Receiver<Inbound>) -> Option<(u64, bool)> {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Inbound::SnapshotStatus { to, ok }) => return Some((to, ok)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    #[test]
    fn snapshot_streams_to_a_file() {
        const PAIRS: usize = 10_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        let source: SnapshotSource = Arc::new(|snap: &Snapshot| {
            assert_eq!(snap.get_metadata().index, 77);
            Ok(Box::new((0..PAIRS).map(|i| Ok(pair(i)))) as SnapshotPairs)
        });
        let mut a_cfg = config("c", 1, "127.0.0.1:0", dir.path());
        // Small chunks so the transfer takes many frames.
        a_cfg.snapshot_chunk_bytes = 16 << 10;
        let a = start(&rt, a_cfg, source);
        let b = start(
            &rt,
            config("c", 2, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        a.transport
            .set_peer(2, b.transport.local_addr().to_string());
        a.transport.send(vec![snapshot_msg(1, 2, 77)]);

        let (msg, path) = match b.rx.recv_timeout(WAIT) {
            Ok(Inbound::Snapshot { msg, path }) => (msg, path),
            other => panic!("expected a snapshot, got {other:?}"),
        };
        assert_eq!(msg.get_snapshot().get_metadata().index, 77);
        assert_eq!(msg.get_snapshot().get_data(), b"descriptor");
        assert_eq!(path, dir.path().join("snap-2").join("incoming-1-77.snap"));
        let got: Vec<_> = read_snapshot_file(&path)
            .expect("open")
            .collect::<io::Result<_>>()
            .expect("read");
        assert_eq!(got.len(), PAIRS);
        assert!(got.iter().enumerate().all(|(i, p)| *p == pair(i)));
        assert_eq!(snapshot_status(&a.rx), Some((2, true)));
        rt.block_on(a.transport.shutdown());
        rt.block_on(b.transport.shutdown());
    }

    #[test]
    fn failed_snapshot_is_reported_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        let source: SnapshotSource = Arc::new(|_: &Snapshot| {
            let pairs = (0..1000).map(|i| {
                if i == 500 {
                    Err("store read failed".to_string())
                } else {
                    Ok(pair(i))
                }
            });
            Ok(Box::new(pairs) as SnapshotPairs)
        });
        let mut a_cfg = config("c", 1, "127.0.0.1:0", dir.path());
        a_cfg.snapshot_chunk_bytes = 4 << 10;
        let a = start(&rt, a_cfg, source);
        let b = start(
            &rt,
            config("c", 2, "127.0.0.1:0", dir.path()),
            no_snapshots(),
        );
        a.transport
            .set_peer(2, b.transport.local_addr().to_string());
        a.transport.send(vec![snapshot_msg(1, 2, 5)]);
        assert_eq!(snapshot_status(&a.rx), Some((2, false)));

        // The receiver notices the dropped connection and removes its file.
        let snap_dir = dir.path().join("snap-2");
        let deadline = Instant::now() + WAIT;
        while std::fs::read_dir(&snap_dir).expect("dir").count() > 0 {
            assert!(Instant::now() < deadline, "temp file left behind");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(b.rx.try_recv().is_err());
        rt.block_on(a.transport.shutdown());
        rt.block_on(b.transport.shutdown());
    }

    #[test]
    fn bad_frames_are_rejected() {
        let rt = runtime();
        let mut frame = Vec::new();
        begin_frame(&mut frame);
        frame.extend_from_slice(b"payload");
        finish_frame(&mut frame, KIND_RAFT_BATCH);
        let read = |bytes: Vec<u8>, max: usize| {
            rt.block_on(async {
                let mut body = Vec::new();
                read_frame(&mut bytes.as_slice(), &mut body, max)
                    .await
                    .map(|k| (k, body))
            })
        };
        assert_eq!(
            read(frame.clone(), 1024).expect("valid frame"),
            (Some(KIND_RAFT_BATCH), b"payload".to_vec())
        );
        assert!(read(frame.clone(), 4).is_err(), "oversized frame accepted");
        let mut corrupt = frame.clone();
        *corrupt.last_mut().expect("body") ^= 1;
        assert!(read(corrupt, 1024).is_err(), "checksum not checked");
        assert!(
            read(frame[..12].to_vec(), 1024).is_err(),
            "truncated frame accepted"
        );
        assert_eq!(read(Vec::new(), 1024).expect("eof").0, None);
    }
}
