use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use raft::eraftpb::Entry;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::{Message, MessageType, Snapshot};

use super::frame::{begin_frame, finish_frame, read_frame, KIND_RAFT_BATCH};
use super::handshake::{STATUS_BAD_VERSION, STATUS_OK, STATUS_WRONG_CLUSTER};
use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The default settings: a reconnect backoff of 10 to 50 ms and a peer
/// timeout of 250 ms, as a node with the default timing has them.
fn config(cluster: &str, id: u64, listen: &str, dir: &Path) -> TransportConfig {
    TransportConfig::new(cluster, id, listen, dir.join(format!("snap-{id}")))
}

fn no_snapshots() -> SnapshotSource {
    Arc::new(|_: &Snapshot| Err(io::Error::other("no snapshots here")))
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

    // Several failed redials (backoff is at most 50 ms) are one outage.
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
    assert_eq!(status(b"NACP\x03\x00"), STATUS_BAD_VERSION);
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
    // Long enough that the dial does not give up while this test fills
    // the queue.
    cfg.peer_timeout_ms = 60_000;
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

/// A user record as the store holds it: the namespace byte, and a value
/// behind its 24-byte revision (the receiver checks both).
fn pair(i: usize) -> (Vec<u8>, Vec<u8>) {
    let mut value = vec![0u8; 24];
    value.extend(std::iter::repeat_n((i % 251) as u8, i % 300));
    (format!("ukey-{i:05}").into_bytes(), value)
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

/// Sends a snapshot (index `index`) whose pairs come from `source` from
/// node 1 to node 2, which must fail: the sender hears it failed, the
/// receiver leaves no file behind (`what` names that), and nothing
/// reaches its raft loop.
fn failed_snapshot_leaves_nothing(source: SnapshotSource, index: u64, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
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
    a.transport.send(vec![snapshot_msg(1, 2, index)]);
    assert_eq!(snapshot_status(&a.rx), Some((2, false)));
    let snap_dir = dir.path().join("snap-2");
    let deadline = Instant::now() + WAIT;
    while std::fs::read_dir(&snap_dir).expect("dir").count() > 0 {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(b.rx.try_recv().is_err());
    rt.block_on(a.transport.shutdown());
    rt.block_on(b.transport.shutdown());
}

#[test]
fn failed_snapshot_is_reported_and_leaves_no_file() {
    // The store read fails half way: the sender drops the connection, and
    // the receiver notices and removes its file.
    let source: SnapshotSource = Arc::new(|_: &Snapshot| {
        let pairs = (0..1000).map(|i| {
            if i == 500 {
                Err(io::Error::other("store read failed"))
            } else {
                Ok(pair(i))
            }
        });
        Ok(Box::new(pairs) as SnapshotPairs)
    });
    failed_snapshot_leaves_nothing(source, 5, "temp file left behind");
}

#[test]
fn a_snapshot_pair_that_does_not_decode_is_refused() {
    // A user value of 3 bytes, too short for its revision, in the middle
    // of an otherwise good snapshot: the frames are intact, the pair is not.
    let source: SnapshotSource = Arc::new(|_: &Snapshot| {
        let pairs = (0..1000).map(|i| {
            Ok(if i == 700 {
                (b"ubad".to_vec(), b"abc".to_vec())
            } else {
                pair(i)
            })
        });
        Ok(Box::new(pairs) as SnapshotPairs)
    });
    failed_snapshot_leaves_nothing(source, 9, "refused snapshot left a file");
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

#[test]
fn backoff_is_capped_near_the_heartbeat_and_starts_over_after_a_dial() {
    let mut rng = rand::rng();
    // The node's default timing: a heartbeat every 50 ms.
    let cfg = TransportConfig::new("c", 1, "127.0.0.1:0", "unused");
    let mut backoff = send::Backoff::new(&cfg);
    let waits: Vec<Duration> = (0..40).map(|_| backoff.after_failure(&mut rng)).collect();
    assert!(
        waits.iter().all(|w| *w <= Duration::from_millis(50)),
        "a wait beyond one heartbeat interval: {waits:?}"
    );
    assert!(waits[39] >= Duration::from_millis(25), "{waits:?}");
    backoff.reset();
    assert!(backoff.after_failure(&mut rng) <= Duration::from_millis(10));

    // Slower timing, longer bounds: a tick of 100 ms, a heartbeat every 2.
    let slow = cfg.with_timing(100, 2, 10);
    assert_eq!(
        (
            slow.reconnect_min_ms,
            slow.reconnect_max_ms,
            slow.peer_timeout_ms
        ),
        (40, 200, 500)
    );
    let mut backoff = send::Backoff::new(&slow);
    let longest = (0..40).map(|_| backoff.after_failure(&mut rng)).max();
    assert!(longest <= Some(Duration::from_millis(200)), "{longest:?}");
}

/// How a [`Gate`] treats traffic.
#[derive(Clone, Copy, PartialEq, Debug)]
enum GateMode {
    Open,
    /// Closes every connection and every new one at once, as a peer whose
    /// port is closed or a firewall that rejects.
    Refuse,
    /// Drops packets: connections stay open but carry nothing. A connection
    /// that had bytes to carry meanwhile stays frozen for good, as a TCP
    /// connection does until its retransmission timer fires, which after a
    /// long cut is seconds after the heal; new connections hang.
    Drop,
}

/// A TCP forwarder in front of a peer, for cutting a link the ways a
/// network does.
struct Gate {
    addr: SocketAddr,
    mode: Arc<parking_lot::Mutex<GateMode>>,
    live: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Gate {
    fn start(rt: &tokio::runtime::Runtime, target: SocketAddr) -> Gate {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(parking_lot::Mutex::new(GateMode::Open));
        let live = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (m, l) = (mode.clone(), live.clone());
        rt.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mode = *m.lock();
                if mode == GateMode::Refuse {
                    continue;
                }
                let m = m.clone();
                let task = tokio::spawn(async move {
                    if mode == GateMode::Drop {
                        let _held = inbound;
                        return std::future::pending::<()>().await;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    tokio::join!(
                        Gate::forward(ri, wo, m.clone(), frozen.clone()),
                        Gate::forward(ro, wi, m, frozen)
                    );
                });
                l.lock().push(task.abort_handle());
            }
        });
        Gate { addr, mode, live }
    }

    async fn forward(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mode: Arc<parking_lot::Mutex<GateMode>>,
        frozen: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if *mode.lock() == GateMode::Drop {
                frozen.store(true, SeqCst);
            }
            if frozen.load(SeqCst) {
                // Keeps both sockets open and silent.
                let _held = (from, to);
                return std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn set(&self, mode: GateMode) {
        *self.mode.lock() = mode;
        if mode == GateMode::Refuse {
            for task in self.live.lock().drain(..) {
                task.abort();
            }
        }
    }
}

/// Sends a message from `a` to node 2 every 10 ms, as a leader's
/// heartbeats, until node 2 (`b`) receives one sent after `after`; returns
/// how long after `after` that was.
fn first_arrival_after(a: &Node, b: &Node, after: Instant) -> Option<Duration> {
    let deadline = after + WAIT;
    let mut index = 1_000_000;
    while Instant::now() < deadline {
        index += 1;
        a.transport.send(vec![append(1, 2, index, 8)]);
        let window = Instant::now() + Duration::from_millis(10);
        while let Some(m) = next_raft(&b.rx, window) {
            if m.index > 1_000_000 {
                return Some(after.elapsed());
            }
        }
    }
    None
}

/// A cut of `outage` in `mode`, with traffic throughout; returns how long
/// after the heal a message got through again.
fn outage_then_heal(a: &Node, b: &Node, gate: &Gate, mode: GateMode, outage: Duration) -> Duration {
    // The link works before the cut.
    assert!(first_arrival_after(a, b, Instant::now()).is_some());
    gate.set(mode);
    let healed_at = Instant::now() + outage;
    let mut index = 0;
    while Instant::now() < healed_at {
        index += 1;
        a.transport.send(vec![append(1, 2, index, 8)]);
        std::thread::sleep(Duration::from_millis(10));
    }
    gate.set(GateMode::Open);
    while b.rx.try_recv().is_ok() {}
    first_arrival_after(a, b, Instant::now())
        .unwrap_or_else(|| panic!("{mode:?}: nothing arrived within {WAIT:?} of the heal"))
}

fn gated_pair(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    peer_timeout_ms: u64,
) -> (Node, Node, Gate) {
    let mut a_cfg = config("c", 1, "127.0.0.1:0", dir);
    a_cfg.peer_timeout_ms = peer_timeout_ms;
    let a = start(rt, a_cfg, no_snapshots());
    let b = start(rt, config("c", 2, "127.0.0.1:0", dir), no_snapshots());
    let gate = Gate::start(rt, b.transport.local_addr());
    a.transport.set_peer(2, gate.addr.to_string());
    (a, b, gate)
}

/// A peer that refused connections for 1.5 s is dialled again within the
/// backoff's cap once it accepts: within a tenth of the outage. (With the
/// backoff as it was, doubling up to 2 s, such a link stayed down for up to
/// 1.6 s after the heal; four heals in a row all within 150 ms happen by
/// luck about once in a thousand runs.)
#[test]
fn a_refusing_peer_is_redialled_soon_after_it_accepts_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (a, b, gate) = gated_pair(&rt, dir.path(), 250);
    let outage = Duration::from_millis(1500);
    let after: Vec<Duration> = (0..4)
        .map(|_| outage_then_heal(&a, &b, &gate, GateMode::Refuse, outage))
        .collect();
    eprintln!("refused for {outage:?}: back {after:?} after the heal");
    assert!(
        after.iter().all(|d| *d < outage / 10),
        "the link came back {after:?} after heals of {outage:?} outages"
    );
    rt.block_on(a.transport.shutdown());
    rt.block_on(b.transport.shutdown());
}

/// A partition that drops packets leaves the connection open and silent.
/// The sender notices that nothing is acknowledged, gives the connection
/// up and dials again, and again, each dial hanging as the network drops
/// it: the link is back within a tenth of the outage. (Before
/// acknowledgements, the sender kept writing into the dead connection, and
/// nothing arrived after the heal; with one dial at a time, the dial that
/// hung at the heal held the link down for up to the peer timeout.)
#[test]
fn a_connection_that_stalled_is_given_up_and_redialled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    // A peer timeout of a second: a dial that hangs waits that long, and
    // the first dial after the heal must not wait for it.
    let (a, b, gate) = gated_pair(&rt, dir.path(), 1000);
    let outage = Duration::from_millis(2500);
    let after: Vec<Duration> = (0..2)
        .map(|_| outage_then_heal(&a, &b, &gate, GateMode::Drop, outage))
        .collect();
    eprintln!("dropping for {outage:?}: back {after:?} after the heal");
    assert!(
        after.iter().all(|d| *d < outage / 10),
        "the link came back {after:?} after heals of {outage:?} outages"
    );
    // The stall was reported to raft as an unreachable peer.
    assert!(count_unreachable(&a.rx, 2) >= 1);
    rt.block_on(a.transport.shutdown());
    rt.block_on(b.transport.shutdown());
}

fn hello(version: u16, cluster: &str, id: u64) -> Vec<u8> {
    let mut h = b"NACP".to_vec();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&(cluster.len() as u16).to_le_bytes());
    h.extend_from_slice(cluster.as_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h
}

fn batch_frame(msgs: &[Message]) -> Vec<u8> {
    use protobuf::Message as _;
    let mut frame = Vec::new();
    begin_frame(&mut frame);
    frame.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    for m in msgs {
        let bytes = m.write_to_bytes().expect("encode");
        frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        frame.extend_from_slice(&bytes);
    }
    finish_frame(&mut frame, KIND_RAFT_BATCH);
    frame
}

/// Dials `addr` as node `id` of cluster "c" with `version`.
fn dial_as(addr: SocketAddr, version: u16, id: u64) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(&hello(version, "c", id)).expect("hello");
    let mut status = [0u8; 2];
    s.read_exact(&mut status).expect("status");
    assert_eq!(u16::from_le_bytes(status), STATUS_OK);
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

fn read_ack(s: &mut std::net::TcpStream) -> u64 {
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).expect("acknowledgement");
    u64::from_le_bytes(ack)
}

/// A version 2 sender hears a count after every raft batch; a version 1
/// sender (a node from before acknowledgements) hears nothing, as it
/// expects.
#[test]
fn raft_batches_are_acknowledged_to_version_2_senders_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let b = start(
        &rt,
        config("c", 2, "127.0.0.1:0", dir.path()),
        no_snapshots(),
    );
    let addr = b.transport.local_addr();

    let mut new = dial_as(addr, 2, 1);
    for want in 1..=3 {
        new.write_all(&batch_frame(&[append(1, 2, want, 8)]))
            .expect("frame");
        assert_eq!(read_ack(&mut new), want);
    }

    let mut old = dial_as(addr, 1, 3);
    old.write_all(&batch_frame(&[append(3, 2, 7, 8)]))
        .expect("frame");
    let deadline = Instant::now() + WAIT;
    let got = loop {
        match next_raft(&b.rx, deadline) {
            Some(m) if m.from == 3 => break m,
            Some(_) => {}
            None => panic!("the version 1 sender's message never arrived"),
        }
    };
    assert_eq!(got.index, 7);
    old.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match old.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a version 1 sender was sent {other:?}"),
    }
    rt.block_on(b.transport.shutdown());
}

/// A node from before acknowledgements answers version 2 with "bad
/// version": the sender dials it again with version 1 and keeps that
/// connection, although nothing is ever acknowledged on it.
#[test]
fn a_version_1_peer_is_dialled_with_version_1_and_kept() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let old_peer = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let old_addr = old_peer.local_addr().expect("addr");
    let (v1_connections, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, r) = (v1_connections.clone(), received.clone());
    std::thread::spawn(move || {
        for conn in old_peer.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = [0u8; 6];
            if conn.read_exact(&mut head).is_err() {
                continue;
            }
            if u16::from_le_bytes([head[4], head[5]]) != 1 {
                let _ = conn.write_all(&STATUS_BAD_VERSION.to_le_bytes());
                continue;
            }
            let mut rest = [0u8; 2 + 1 + 8];
            conn.read_exact(&mut rest).expect("hello");
            conn.write_all(&STATUS_OK.to_le_bytes()).expect("status");
            c.fetch_add(1, SeqCst);
            let r = r.clone();
            std::thread::spawn(move || loop {
                let mut header = [0u8; 9];
                if conn.read_exact(&mut header).is_err() {
                    return;
                }
                let len = u32::from_le_bytes(header[..4].try_into().expect("4")) as usize;
                let mut body = vec![0u8; len];
                conn.read_exact(&mut body).expect("body");
                let count = u32::from_le_bytes(body[..4].try_into().expect("4"));
                r.fetch_add(u64::from(count), SeqCst);
            });
        }
    });
    let a = start(
        &rt,
        config("c", 1, "127.0.0.1:0", dir.path()),
        no_snapshots(),
    );
    a.transport.set_peer(2, old_addr.to_string());
    // Four peer timeouts of traffic, none of it acknowledged.
    for i in 0..100 {
        a.transport.send(vec![append(1, 2, i, 8)]);
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + WAIT;
    while received.load(SeqCst) < 100 {
        assert!(
            Instant::now() < deadline,
            "{} of 100 arrived",
            received.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        v1_connections.load(SeqCst),
        1,
        "the version 1 link was redialled"
    );
    rt.block_on(a.transport.shutdown());
}

/// A sender that gave a connection up as stalled dials a new one; the
/// receiver closes the old one when the new one carries raft batches,
/// instead of keeping it open forever for a close that the partition may
/// have dropped.
#[test]
fn a_newer_raft_connection_from_a_peer_closes_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let b = start(
        &rt,
        config("c", 2, "127.0.0.1:0", dir.path()),
        no_snapshots(),
    );
    let addr = b.transport.local_addr();
    let mut first = dial_as(addr, 2, 1);
    first
        .write_all(&batch_frame(&[append(1, 2, 1, 8)]))
        .expect("frame");
    assert_eq!(read_ack(&mut first), 1);
    // Another peer's connection is not affected by node 1's.
    let mut other = dial_as(addr, 2, 3);
    other
        .write_all(&batch_frame(&[append(3, 2, 1, 8)]))
        .expect("frame");
    assert_eq!(read_ack(&mut other), 1);

    let mut second = dial_as(addr, 2, 1);
    second
        .write_all(&batch_frame(&[append(1, 2, 2, 8)]))
        .expect("frame");
    assert_eq!(read_ack(&mut second), 1);
    let mut byte = [0u8; 1];
    assert_eq!(first.read(&mut byte).expect("closed, not timed out"), 0);
    other
        .write_all(&batch_frame(&[append(3, 2, 2, 8)]))
        .expect("frame");
    assert_eq!(read_ack(&mut other), 2);
    rt.block_on(b.transport.shutdown());
}
