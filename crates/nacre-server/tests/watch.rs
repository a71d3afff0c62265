//! Watches over raw protocol frames: a watch on a prefix gets the
//! committed changes of its keys in revision order (first frame: the
//! watch exists), a watch from an old revision is replayed from the
//! node's history, one older than the history is `Compacted`, an idle
//! watch gets progress frames, a cancel ends it, and a follower of a
//! three-node cluster serves watches too.

use std::time::Duration;

use bytes::Bytes;
use nacre_proto::{CoordRequest, CoordResponse, ErrorCode, KeySpan, Request, Response, WatchSpec};
use nacre_server::{NodeConfig, RunningServer, ServerConfig};

mod common;
use common::wire::Conn;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        watch_progress_ms: 200,
        ..Default::default()
    }
}

impl Conn {
    /// Sets `key`; the revision it applied at.
    async fn set(&mut self, key: &str, value: &str) -> u64 {
        match self
            .call(Request::Set {
                key: b(key),
                value: b(value),
            })
            .await
        {
            Response::Written { index, .. } => index,
            r => panic!("expected Written, got {r:?}"),
        }
    }

    async fn watch(&mut self, span: KeySpan, start_rev: u64) -> u64 {
        self.send(Request::Coord(CoordRequest::Watch(WatchSpec {
            span,
            start_rev,
            prev_value: false,
        })))
        .await
    }

    /// The next frame of watch `id` (no other frame may come first).
    async fn watched(&mut self, id: u64) -> CoordResponse {
        match self.recv().await {
            (got, Response::Coord(c)) if got == id => c,
            f => panic!("expected a frame of watch {id}, got {f:?}"),
        }
    }
}

/// (key, revision) of each event of a `Watched` frame, and its revision.
fn events(frame: &CoordResponse) -> (Vec<(Bytes, u64)>, u64) {
    match frame {
        CoordResponse::Watched { events, revision } => (
            events
                .iter()
                .map(|e| (e.key.clone(), e.revision()))
                .collect(),
            *revision,
        ),
        f => panic!("expected Watched, got {f:?}"),
    }
}

async fn applied(conn: &mut Conn) -> u64 {
    match conn.call(Request::GetTxid).await {
        Response::U64(i) => i,
        r => panic!("expected U64, got {r:?}"),
    }
}

/// Reads frames of watch `id` until every change up to `revision` is
/// delivered; the events seen.
async fn events_through(conn: &mut Conn, id: u64, revision: u64) -> Vec<(Bytes, u64)> {
    let mut seen = Vec::new();
    loop {
        let (evs, through) = events(&conn.watched(id).await);
        seen.extend(evs);
        if through >= revision {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_its_changes_replays_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut writer = Conn::open(server.local_addr()).await;
    let mut watcher = Conn::open(server.local_addr()).await;
    let now = applied(&mut writer).await;
    let id = watcher.watch(KeySpan::Prefix(b("w/")), 0).await;
    let (first, rev) = events(&watcher.watched(id).await);
    assert!(first.is_empty());
    assert!(rev >= now, "the watch starts at the applied revision");

    let r1 = writer.set("w/a", "1").await;
    writer.set("x/b", "2").await;
    let r3 = writer.set("w/c", "3").await;
    let seen = events_through(&mut watcher, id, r3).await;
    assert_eq!(seen, vec![(b("w/a"), r1), (b("w/c"), r3)]);

    // Idle: progress frames with no events and the applied revision.
    let (none, progress) = events(&watcher.watched(id).await);
    assert!(none.is_empty());
    assert!(progress >= r3);

    // From an old revision: replayed from the history.
    let old = watcher.watch(KeySpan::Prefix(b("w/")), r1).await;
    let (_, created) = events(&watcher.watched(old).await);
    assert_eq!(created, r1 - 1);
    let replayed = events_through(&mut watcher, old, r3).await;
    assert_eq!(replayed, vec![(b("w/a"), r1), (b("w/c"), r3)]);

    // Older than the node's history (it starts after what the node had
    // applied when it started): Compacted, with the oldest revision kept.
    let compacted = watcher.watch(KeySpan::Key(b("w/a")), 1).await;
    match watcher.watched(compacted).await {
        CoordResponse::WatchEnd { code, revision, .. } => {
            assert_eq!(code, ErrorCode::Compacted);
            assert!(revision > 1 && revision <= r1, "{revision}");
        }
        f => panic!("expected Compacted, got {f:?}"),
    }

    // Cancelled: the cancel is answered Unit, the watch ends Cancelled.
    let cancel = watcher
        .send(Request::Coord(CoordRequest::WatchCancel { watch_id: id }))
        .await;
    let (mut unit, mut ended) = (false, false);
    while !(unit && ended) {
        match watcher.recv().await {
            (got, Response::Unit) if got == cancel => unit = true,
            (got, Response::Coord(CoordResponse::WatchEnd { code, .. })) if got == id => {
                assert_eq!(code, ErrorCode::Cancelled);
                ended = true;
            }
            // Progress of either watch may still come before.
            (_, Response::Coord(CoordResponse::Watched { events, .. })) => {
                assert!(events.is_empty(), "{events:?}")
            }
            f => panic!("unexpected frame {f:?}"),
        }
    }
    writer.set("w/d", "4").await;
    stats_count_watches(&mut writer).await;
    server.shutdown().await.unwrap();
}

/// The statistics report watches: one left open (`old`), events sent.
async fn stats_count_watches(conn: &mut Conn) {
    let Response::Stats(kv) = conn.call(Request::Statistics).await else {
        panic!("expected statistics");
    };
    let get = |k: &str| -> u64 {
        kv.iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k} in {kv:?}"))
            .1
            .parse()
            .unwrap()
    };
    assert_eq!(get("watches_active"), 1);
    assert!(get("watch_events_sent") >= 4);
    assert_eq!(get("watches_ended_slow"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_per_connection_are_bounded_and_end_with_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        watches_per_connection_max: 2,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut conn = Conn::open(server.local_addr()).await;
    for _ in 0..2 {
        let id = conn.watch(KeySpan::Prefix(b("")), 0).await;
        assert!(events(&conn.watched(id).await).0.is_empty());
    }
    let id = conn.watch(KeySpan::Prefix(b("")), 0).await;
    match conn.recv().await {
        (got, Response::Error(e)) if got == id => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert!(e.message.contains("watches_per_connection_max"), "{e:?}");
        }
        f => panic!("expected Busy, got {f:?}"),
    }
    drop(conn);
    // The closed connection's watches are gone once the node publishes.
    let mut other = Conn::open(server.local_addr()).await;
    other.set("k", "v").await;
    let Response::Stats(kv) = other.call(Request::Statistics).await else {
        panic!("expected statistics");
    };
    let active = kv.iter().find(|(n, _)| n == "watches_active").unwrap();
    assert_eq!(active.1, "0");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_watches_cancelled_after_their_frames() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut writer = Conn::open(server.local_addr()).await;
    let mut watcher = Conn::open(server.local_addr()).await;
    let id = watcher.watch(KeySpan::Key(b("s")), 0).await;
    assert!(events(&watcher.watched(id).await).0.is_empty());
    let rev = writer.set("s", "1").await;
    drop(writer);
    let stopping = tokio::spawn(server.shutdown());
    let mut seen = Vec::new();
    let end = loop {
        match watcher.watched(id).await {
            CoordResponse::WatchEnd {
                code,
                message,
                revision,
            } => break (code, message, revision),
            f => seen.extend(events(&f).0),
        }
    };
    assert_eq!(seen, vec![(b("s"), rev)]);
    assert_eq!(end.0, ErrorCode::Cancelled);
    assert!(end.1.contains("shutting down"), "{}", end.1);
    assert!(end.2 >= rev);
    stopping.await.unwrap().unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_watches() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<NodeConfig> = (0..3)
        .map(|i| NodeConfig {
            name: format!("n{i}"),
            id: None,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            etcd: None,
            admin: None,
            data_dir: dir.path().join(format!("n{i}")),
        })
        .collect();
    let mut servers: Vec<RunningServer> = Vec::new();
    let starts = nodes.iter().map(|n| {
        let mut c = ServerConfig {
            etcd_listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            nodes: nodes.clone(),
            ..config(&n.data_dir)
        };
        c.select_node(&n.name).unwrap();
        nacre_server::start(c)
    });
    for s in futures_join(starts).await {
        servers.push(s.unwrap());
    }
    // Find the leader, then watch on a follower.
    let leader = wait_leader(&servers).await;
    let follower = (leader + 1) % 3;
    let mut writer = Conn::open(servers[leader].local_addr()).await;
    let mut watcher = Conn::open(servers[follower].local_addr()).await;
    let id = watcher.watch(KeySpan::Prefix(b("f/")), 0).await;
    assert!(events(&watcher.watched(id).await).0.is_empty());
    let r1 = writer.set("f/1", "a").await;
    let r2 = writer.set("f/2", "b").await;
    let seen = events_through(&mut watcher, id, r2).await;
    assert_eq!(seen, vec![(b("f/1"), r1), (b("f/2"), r2)]);
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

/// Starts the nodes together: each waits for the others' answers before
/// it creates the cluster.
async fn futures_join<F: std::future::Future + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn wait_leader(servers: &[RunningServer]) -> usize {
    for _ in 0..500 {
        for (i, s) in servers.iter().enumerate() {
            let mut c = Conn::open(s.local_addr()).await;
            if let Response::Master(Some(name)) = c.call(Request::WhoMaster).await {
                if name == format!("n{i}") {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader within 10 s");
}
