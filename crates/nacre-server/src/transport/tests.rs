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

fn config(cluster: &str, id: u64, listen: &str, dir: &Path) -> TransportConfig {
    let mut cfg = TransportConfig::new(cluster, id, listen, dir.join(format!("snap-{id}")));
    // Short backoff keeps the reconnect tests fast.
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 100;
    cfg
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

#[test]
fn failed_snapshot_is_reported_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
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
fn a_snapshot_pair_that_does_not_decode_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
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
    a.transport.send(vec![snapshot_msg(1, 2, 9)]);
    assert_eq!(snapshot_status(&a.rx), Some((2, false)));
    let snap_dir = dir.path().join("snap-2");
    let deadline = Instant::now() + WAIT;
    while std::fs::read_dir(&snap_dir).expect("dir").count() > 0 {
        assert!(Instant::now() < deadline, "refused snapshot left a file");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Nothing reached the raft loop.
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
