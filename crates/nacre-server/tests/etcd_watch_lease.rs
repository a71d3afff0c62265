//! etcd's Watch and Lease services end to end, with etcd's own gRPC
//! messages on one node: events with etcd's kinds, revisions and prev_kv,
//! replay from a revision, filters, cancel, progress, compaction, and
//! leases from grant to revoke (whose deletes a watch sees), and a
//! follower of three nodes sending lease calls on to the leader.

use std::time::Duration;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
use nacre_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use nacre_etcd_proto::etcdserverpb::watch_client::WatchClient;
use nacre_etcd_proto::mvccpb;
use nacre_proto::{Request, Response};
use nacre_server::{RunningServer, ServerConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

mod common;
use common::wire::Conn;

const WAIT: Duration = Duration::from_secs(5);
const PUT: i32 = mvccpb::event::EventType::Put as i32;
const DELETE: i32 = mvccpb::event::EventType::Delete as i32;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        tick_ms: 20,
        ..Default::default()
    }
}

async fn start(config: ServerConfig) -> (RunningServer, Channel) {
    let server = nacre_server::start(config).await.expect("the node starts");
    let addr = server.etcd_addr().expect("the etcd API is on");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid address")
        .connect()
        .await
        .expect("the etcd API accepts");
    (server, channel)
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str, lease: i64) -> i64 {
    let r = kv
        .put(pb::PutRequest {
            key: b(key),
            value: b(value),
            lease,
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    r.header.expect("a header").revision
}

async fn delete(kv: &mut KvClient<Channel>, key: &str) -> i64 {
    let r = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b(key),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    r.header.expect("a header").revision
}

async fn current_revision(kv: &mut KvClient<Channel>) -> i64 {
    let r = kv
        .range(pb::RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.header.expect("a header").revision
}

/// One watch stream: requests in, responses out.
struct Watcher {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: Streaming<pb::WatchResponse>,
}

impl Watcher {
    async fn open(channel: &Channel) -> Watcher {
        let (tx, rx) = mpsc::channel(16);
        let rx = WatchClient::new(channel.clone())
            .watch(ReceiverStream::new(rx))
            .await
            .expect("a watch stream")
            .into_inner();
        Watcher { tx, rx }
    }

    async fn send(&self, r: pb::watch_request::RequestUnion) {
        let req = pb::WatchRequest {
            request_union: Some(r),
        };
        self.tx.send(req).await.expect("the stream is open");
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c))
            .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("no stream error")
            .expect("the stream goes on")
    }

    /// Creates a watch and checks etcd's first answer; its id.
    async fn created(&mut self, c: pb::WatchCreateRequest) -> i64 {
        self.create(c).await;
        let r = self.next().await;
        assert!(r.created && !r.canceled, "{r:?}");
        assert!(r.events.is_empty());
        r.watch_id
    }

    async fn nothing_for(&mut self, ms: u64) {
        let r = tokio::time::timeout(Duration::from_millis(ms), self.rx.message()).await;
        assert!(r.is_err(), "expected nothing, got {r:?}");
    }
}

fn watch_key(key: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: b(key),
        ..Default::default()
    }
}

fn kv_of(e: &mvccpb::Event) -> &mvccpb::KeyValue {
    e.kv.as_ref().expect("an event has a kv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_etcds_kinds_revisions_and_prev_kv() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(config(dir.path())).await;
    let mut kv = KvClient::new(channel.clone());
    let r1 = put(&mut kv, "a/1", "one", 0).await;
    let mut w = Watcher::open(&channel).await;
    w.create(pb::WatchCreateRequest {
        key: b("a/"),
        range_end: b("a0"),
        prev_kv: true,
        ..Default::default()
    })
    .await;
    let created = w.next().await;
    assert!(created.created && !created.canceled, "{created:?}");
    assert_eq!(created.watch_id, 0, "server ids start at 0 as etcd's");
    assert_eq!(created.header.unwrap().revision, r1);

    let r2 = put(&mut kv, "a/1", "two", 0).await;
    put(&mut kv, "b", "outside the range", 0).await;
    let r3 = delete(&mut kv, "a/1").await;
    let r4 = put(&mut kv, "a/2", "new", 0).await;

    let e = w.next().await;
    assert_eq!(e.header.unwrap().revision, r2);
    assert_eq!(e.events.len(), 1);
    let ev = &e.events[0];
    assert_eq!(ev.r#type, PUT);
    let k = kv_of(ev);
    assert_eq!((&k.key[..], &k.value[..]), (&b"a/1"[..], &b"two"[..]));
    assert_eq!((k.create_revision, k.mod_revision, k.version), (r1, r2, 2));
    let p = ev.prev_kv.as_ref().expect("the key existed");
    assert_eq!(&p.value[..], b"one");
    assert_eq!((p.create_revision, p.mod_revision, p.version), (r1, r1, 1));

    let e = w.next().await;
    assert_eq!(e.header.unwrap().revision, r3);
    let ev = &e.events[0];
    assert_eq!(ev.r#type, DELETE);
    let k = kv_of(ev);
    assert_eq!(&k.key[..], b"a/1");
    assert_eq!((k.mod_revision, k.create_revision, k.version), (r3, 0, 0));
    assert!(k.value.is_empty());
    let p = ev.prev_kv.as_ref().expect("the key existed");
    assert_eq!(
        (&p.value[..], p.mod_revision, p.version),
        (&b"two"[..], r2, 2)
    );

    let e = w.next().await;
    assert_eq!(e.header.unwrap().revision, r4);
    let ev = &e.events[0];
    assert_eq!((ev.r#type, kv_of(ev).version), (PUT, 1));
    assert!(ev.prev_kv.is_none(), "a created key had no previous value");
    w.nothing_for(200).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_replays_from_its_start_revision_through_its_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(config(dir.path())).await;
    let mut kv = KvClient::new(channel.clone());
    let r1 = put(&mut kv, "k1", "v", 0).await;
    let r2 = put(&mut kv, "k2", "v", 0).await;
    let r3 = delete(&mut kv, "k1").await;
    let mut w = Watcher::open(&channel).await;

    // Every key (etcd's empty key and "\0" range end), from r1.
    let all = w
        .created(pb::WatchCreateRequest {
            key: Bytes::new(),
            range_end: b("\0"),
            start_revision: r1,
            ..Default::default()
        })
        .await;
    let revs: Vec<(i64, i32)> = [w.next().await, w.next().await, w.next().await]
        .iter()
        .map(|r| {
            assert_eq!(r.watch_id, all);
            (r.header.as_ref().unwrap().revision, r.events[0].r#type)
        })
        .collect();
    assert_eq!(revs, vec![(r1, PUT), (r2, PUT), (r3, DELETE)]);

    // From r2 on, deletes only: "k" and up.
    let deletes = w
        .created(pb::WatchCreateRequest {
            key: b("k"),
            range_end: b("\0"),
            start_revision: r2,
            filters: vec![pb::watch_create_request::FilterType::Noput as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(deletes, all + 1);
    let r = w.next().await;
    assert_eq!((r.watch_id, r.events.len()), (deletes, 1));
    assert_eq!(
        (r.events[0].r#type, r.header.unwrap().revision),
        (DELETE, r3)
    );

    // Puts only of k1 from r1: the delete is filtered out.
    let puts = w
        .created(pb::WatchCreateRequest {
            key: b("k1"),
            start_revision: r1,
            filters: vec![pb::watch_create_request::FilterType::Nodelete as i32],
            ..Default::default()
        })
        .await;
    let r = w.next().await;
    assert_eq!((r.watch_id, r.events[0].r#type), (puts, PUT));
    assert_eq!(r.header.unwrap().revision, r1);
    w.nothing_for(200).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_cancelled_by_id_and_ids_follow_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(config(dir.path())).await;
    let mut kv = KvClient::new(channel.clone());
    let mut w = Watcher::open(&channel).await;
    let chosen = w
        .created(pb::WatchCreateRequest {
            watch_id: 7,
            ..watch_key("x")
        })
        .await;
    assert_eq!(chosen, 7);
    assert_eq!(w.created(watch_key("y")).await, 0);
    assert_eq!(w.created(watch_key("y")).await, 1);

    // A client-chosen id in use: created and cancelled under id -1.
    w.create(pb::WatchCreateRequest {
        watch_id: 7,
        ..watch_key("z")
    })
    .await;
    let r = w.next().await;
    assert!(r.created && r.canceled, "{r:?}");
    assert_eq!(r.watch_id, -1);
    assert_eq!(
        r.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // A range that holds no key.
    w.create(pb::WatchCreateRequest {
        key: b("b"),
        range_end: b("a"),
        ..Default::default()
    })
    .await;
    let r = w.next().await;
    assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
    assert_eq!(r.cancel_reason, "mvcc: watcher range is empty");

    w.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 7 },
    ))
    .await;
    let r = w.next().await;
    assert!(r.canceled && !r.created, "{r:?}");
    assert_eq!(r.watch_id, 7);
    // An unknown id gets no answer (etcd's too).
    w.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 99 },
    ))
    .await;
    put(&mut kv, "x", "1", 0).await;
    let ry = put(&mut kv, "y", "1", 0).await;
    let mut ids = vec![];
    for _ in 0..2 {
        let r = w.next().await;
        assert_eq!(r.header.unwrap().revision, ry);
        ids.push(r.watch_id);
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1], "the cancelled watch on x saw nothing");
    w.nothing_for(200).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_reported_on_request_and_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(ServerConfig {
        watch_progress_ms: 100,
        ..config(dir.path())
    })
    .await;
    let mut kv = KvClient::new(channel.clone());
    let mut w = Watcher::open(&channel).await;
    let quiet = w.created(watch_key("quiet")).await;
    put(&mut kv, "other", "1", 0).await;
    let rev = put(&mut kv, "other", "2", 0).await;
    assert_eq!(current_revision(&mut kv).await, rev);

    w.send(pb::watch_request::RequestUnion::ProgressRequest(
        pb::WatchProgressRequest {},
    ))
    .await;
    let r = w.next().await;
    assert_eq!(r.watch_id, -1, "a progress answer is for the whole stream");
    assert!(r.events.is_empty() && !r.created && !r.canceled);
    assert_eq!(r.header.unwrap().revision, rev);
    // Without progress_notify, an idle watch hears nothing more.
    w.nothing_for(400).await;

    let notified = w
        .created(pb::WatchCreateRequest {
            progress_notify: true,
            ..watch_key("quiet2")
        })
        .await;
    assert_ne!(notified, quiet);
    let r = w.next().await;
    assert_eq!(r.watch_id, notified);
    assert!(r.events.is_empty() && !r.canceled, "{r:?}");
    assert_eq!(r.header.unwrap().revision, rev);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_is_told_where_to_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(config(dir.path())).await;
    let mut kv = KvClient::new(channel.clone());
    let r1 = put(&mut kv, "c", "1", 0).await;
    let r2 = put(&mut kv, "c", "2", 0).await;
    put(&mut kv, "c", "3", 0).await;
    kv.compact(pb::CompactionRequest {
        revision: r2,
        physical: false,
    })
    .await
    .expect("compact");

    let mut w = Watcher::open(&channel).await;
    let id = w
        .created(pb::WatchCreateRequest {
            start_revision: r1,
            ..watch_key("c")
        })
        .await;
    let r = w.next().await;
    assert_eq!(r.watch_id, id);
    assert!(r.canceled, "{r:?}");
    assert_eq!(r.compact_revision, r2);

    // From the compacted revision itself: kept, as in etcd.
    let id = w
        .created(pb::WatchCreateRequest {
            start_revision: r2,
            ..watch_key("c")
        })
        .await;
    let r = w.next().await;
    assert_eq!((r.watch_id, r.header.unwrap().revision), (id, r2));
    assert_eq!(&kv_of(&r.events[0]).value[..], b"2");

    // A negative start: etcd's compacted reason, under no id.
    w.create(pb::WatchCreateRequest {
        start_revision: -1,
        ..watch_key("c")
    })
    .await;
    let mut r = w.next().await;
    if r.watch_id == id {
        // The replay's next revision came first.
        r = w.next().await;
    }
    assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
    assert_eq!(
        r.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_follow_etcds_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(config(dir.path())).await;
    let mut kv = KvClient::new(channel.clone());
    let mut leases = LeaseClient::new(channel.clone());
    // A TTL below the node's shortest is raised to it, as etcd does.
    let short = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 0, id: 4242 })
        .await
        .expect("grant")
        .into_inner();
    assert_eq!((short.id, short.ttl), (4242, 1));
    let e = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: 4242 })
        .await
        .expect_err("the id is taken");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), "etcdserver: lease already exists");
    let e = leases
        .lease_grant(pb::LeaseGrantRequest {
            ttl: 1_000_000_000,
            id: 0,
        })
        .await
        .expect_err("over lease_ttl_max_ms");
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(e.message(), "etcdserver: too large lease TTL");
    // A client takes the id the next server-picked grant would get (its
    // log index): that grant picks another.
    let r = put(&mut kv, "before", "v", 0).await;
    leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: r + 2 })
        .await
        .expect("grant");
    let auto = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: 0 })
        .await
        .expect("a server-picked id is never taken")
        .into_inner();
    assert_ne!(auto.id, r + 2);
    for id in [r + 2, auto.id] {
        leases
            .lease_revoke(pb::LeaseRevokeRequest { id })
            .await
            .expect("revoke");
    }

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_from_grant_to_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(config(dir.path())).await;
    let mut kv = KvClient::new(channel.clone());
    let mut leases = LeaseClient::new(channel.clone());

    let g = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(g.ttl, 10);
    assert!(g.id > 0);
    let id = g.id;
    put(&mut kv, "leased/1", "v", id).await;
    put(&mut kv, "leased/2", "v", id).await;
    let mut w = Watcher::open(&channel).await;
    w.created(pb::WatchCreateRequest {
        key: b("leased/"),
        range_end: b("leased0"),
        ..Default::default()
    })
    .await;

    let t = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!((t.id, t.granted_ttl), (id, 10));
    assert!((8..=10).contains(&t.ttl), "{t:?}");
    assert_eq!(t.keys, vec![b("leased/1"), b("leased/2")]);

    let (tx, rx) = mpsc::channel(4);
    let mut replies = leases
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("a keep-alive stream")
        .into_inner();
    for (ask, ttl) in [(id, 10), (999_999, 0)] {
        tx.send(pb::LeaseKeepAliveRequest { id: ask })
            .await
            .unwrap();
        let r = tokio::time::timeout(WAIT, replies.message())
            .await
            .expect("in time")
            .expect("no error")
            .expect("an answer");
        assert_eq!((r.id, r.ttl), (ask, ttl));
        assert!(r.header.is_some());
    }

    let all = leases
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    assert_eq!(all.leases, vec![pb::LeaseStatus { id }]);

    let revoked = leases
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .expect("revoke")
        .into_inner();
    let rev = revoked.header.unwrap().revision;
    let mut deleted = vec![];
    while deleted.len() < 2 {
        let r = w.next().await;
        for e in &r.events {
            assert_eq!(e.r#type, DELETE);
            assert_eq!(kv_of(e).mod_revision, rev);
            deleted.push(kv_of(e).key.clone());
        }
    }
    deleted.sort();
    assert_eq!(deleted, vec![b("leased/1"), b("leased/2")]);

    let t = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("a missing lease is no error")
        .into_inner();
    assert_eq!((t.id, t.ttl, t.granted_ttl), (id, -1, 0));
    let e = leases
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .expect_err("revoked already");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "etcdserver: requested lease not found");
    server.shutdown().await.unwrap();
}

/// Three nodes that know each other's etcd addresses; the leader's index.
async fn three_nodes(dir: &std::path::Path) -> (Vec<RunningServer>, usize) {
    let servers = common::three_etcd_nodes(dir, config).await;
    for _ in 0..500 {
        for (i, s) in servers.iter().enumerate() {
            let mut c = Conn::open(s.local_addr()).await;
            if let Response::Master(Some(name)) = c.call(Request::WhoMaster).await {
                if name == format!("n{i}") {
                    return (servers, i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sends_lease_calls_to_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, leader) = three_nodes(dir.path()).await;
    let follower = &servers[(leader + 1) % 3];
    let addr = follower.etcd_addr().expect("the etcd API is on");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the follower's etcd API accepts");
    let mut leases = LeaseClient::new(channel.clone());
    let mut kv = KvClient::new(channel.clone());

    let g = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 77 })
        .await
        .expect("a grant at a follower")
        .into_inner();
    assert_eq!((g.id, g.ttl), (77, 30));
    put(&mut kv, "f/leased", "v", 77).await;
    let mut w = Watcher::open(&channel).await;
    w.created(watch_key("f/leased")).await;

    let (tx, rx) = mpsc::channel(4);
    let mut replies = leases
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("a keep-alive stream")
        .into_inner();
    for (ask, ttl) in [(77, 30), (78, 0), (77, 30)] {
        tx.send(pb::LeaseKeepAliveRequest { id: ask })
            .await
            .unwrap();
        let r = tokio::time::timeout(WAIT, replies.message())
            .await
            .expect("in time")
            .expect("no error")
            .expect("an answer");
        assert_eq!((r.id, r.ttl), (ask, ttl));
    }
    let t = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 77, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!((t.granted_ttl, t.keys.clone()), (30, vec![b("f/leased")]));
    assert!((28..=30).contains(&t.ttl), "{t:?}");
    let all = leases
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    assert_eq!(all.leases, vec![pb::LeaseStatus { id: 77 }]);

    leases
        .lease_revoke(pb::LeaseRevokeRequest { id: 77 })
        .await
        .expect("a revoke at a follower");
    let r = w.next().await;
    assert_eq!(r.events[0].r#type, DELETE);
    let e = leases
        .lease_revoke(pb::LeaseRevokeRequest { id: 77 })
        .await
        .expect_err("revoked already");
    assert_eq!(e.code(), Code::NotFound);
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_client_does_not_read_is_cancelled_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = start(ServerConfig {
        watch_buffer_frames: 2,
        ..config(dir.path())
    })
    .await;
    let mut kv = KvClient::new(channel.clone());
    let mut w = Watcher::open(&channel).await;
    let id = w.created(watch_key("big")).await;
    // Unread, these fill the gRPC stream's window, the stream's queue,
    // then the watch's two frames in the hub.
    let value = "x".repeat(16 << 10);
    for _ in 0..200 {
        put(&mut kv, "big", &value, 0).await;
    }
    let mut events = 0;
    let end = loop {
        let r = w.next().await;
        assert_eq!(r.watch_id, id);
        if r.canceled {
            break r;
        }
        events += r.events.len();
    };
    assert!(events < 200, "{events} events: the watch was never behind");
    assert!(
        end.cancel_reason.contains("fell too far behind"),
        "{}",
        end.cancel_reason
    );
    server.shutdown().await.unwrap();
}
