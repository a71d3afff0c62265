//! etcd's Cluster, Maintenance, Lock and Election services over tonic
//! clients: the member list and membership changes, status, hashes that
//! agree between members and change with a write, a snapshot that reads
//! back (and whose damage is found), MoveLeader through a follower, a lock
//! that waits for its holder (and a waiter that gives up or loses its
//! lease), and an election observed from campaign to resignation.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::cluster_client::ClusterClient;
use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
use nacre_etcd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use nacre_etcd_proto::v3electionpb as epb;
use nacre_etcd_proto::v3electionpb::election_client::ElectionClient;
use nacre_etcd_proto::v3lockpb as lockpb;
use nacre_etcd_proto::v3lockpb::lock_client::LockClient;
use nacre_proto::{CoordRequest, CoordResponse, Request, Response};
use nacre_server::{BackupError, RunningServer, ServerConfig};
use tonic::transport::Channel;
use tonic::Code;

mod common;
use common::wire::Conn;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        listen: "127.0.0.1:0".into(),
        // Bound only once the node has a peer (a learner added): never
        // the default port, which another node on the machine may hold.
        peer_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        tick_ms: 20,
        ..Default::default()
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn etcd(s: &RunningServer) -> SocketAddr {
    s.etcd_addr().expect("the etcd API is on")
}

/// A single node that has elected itself and applied its first entries.
async fn one_node(dir: &std::path::Path) -> (RunningServer, Channel) {
    let server = nacre_server::start(config(dir)).await.unwrap();
    let ch = channel(etcd(&server)).await;
    let mut m = MaintenanceClient::new(ch.clone());
    for _ in 0..250 {
        let s = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
        if s.leader != 0 && s.raft_applied_index > 0 {
            return (server, ch);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader within 5 s");
}

/// A put, retried while the answer is `Unavailable` (no leader for a
/// moment, as on a loaded machine), as etcd's clients retry it.
async fn put(ch: &Channel, key: &str, value: &[u8]) -> i64 {
    for _ in 0..100 {
        let r = KvClient::new(ch.clone())
            .put(pb::PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => return r.into_inner().header.unwrap().revision,
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("put {key}: {s:?}"),
        }
    }
    panic!("put {key}: no leader for 5 s");
}

async fn exists(ch: &Channel, key: &Bytes) -> bool {
    let r = KvClient::new(ch.clone())
        .range(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.count > 0
}

/// A lease of `ttl_ms`, granted over Nacre's own protocol (the etcd Lease
/// service is another part of the API).
async fn grant(server: &RunningServer, ttl_ms: u64) -> i64 {
    let mut c = Conn::open(server.local_addr()).await;
    match c
        .call(Request::Coord(CoordRequest::LeaseGrant { id: 0, ttl_ms }))
        .await
    {
        Response::Coord(CoordResponse::Lease(l)) => i64::try_from(l.id).unwrap(),
        r => panic!("expected a lease, got {r:?}"),
    }
}

async fn hash_kv(ch: &Channel, revision: i64) -> Result<pb::HashKvResponse, tonic::Status> {
    MaintenanceClient::new(ch.clone())
        .hash_kv(pb::HashKvRequest { revision })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_member_list_describe_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    let s = MaintenanceClient::new(ch.clone())
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let header = s.header.unwrap();
    assert!(s.version.starts_with("3.4."), "{}", s.version);
    assert_eq!(s.leader, header.member_id);
    assert!(s.raft_term >= 1 && s.raft_term == header.raft_term);
    assert!(s.raft_index >= s.raft_applied_index && s.raft_applied_index > 0);
    assert!(s.db_size > 0 && !s.is_learner);
    assert!(s.errors.is_empty(), "{:?}", s.errors);

    let list = ClusterClient::new(ch.clone())
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let [m] = &list.members[..] else {
        panic!("one member, got {:?}", list.members);
    };
    assert_eq!(m.id, header.member_id);
    assert_eq!(m.id, nacre_server::name_id(&m.name));
    // HOST:PORT, without a scheme (docs/etcd.md, "Endpoints with a scheme").
    assert_eq!(m.client_ur_ls, vec![etcd(&server).to_string()]);
    assert!(m.peer_ur_ls.len() == 1 && m.peer_ur_ls[0].starts_with("http://"));
    assert!(!m.is_learner);
    assert_eq!(list.header.unwrap().cluster_id, header.cluster_id);

    let alarms = MaintenanceClient::new(ch.clone())
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(alarms.alarms.is_empty());
    MaintenanceClient::new(ch.clone())
        .defragment(pb::DefragmentRequest {})
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_as_learners_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    let mut cluster = ClusterClient::new(ch.clone());
    let peer = "http://127.0.0.1:9";
    let add = |is_learner| pb::MemberAddRequest {
        peer_ur_ls: vec![peer.to_string()],
        is_learner,
    };
    let e = cluster.member_add(add(false)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("learner"), "{}", e.message());
    let bad = pb::MemberAddRequest {
        peer_ur_ls: vec!["https://127.0.0.1:9".into()],
        is_learner: true,
    };
    let e = cluster.member_add(bad).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid"
        )
    );

    let added = cluster.member_add(add(true)).await.unwrap().into_inner();
    let m = added.member.unwrap();
    assert_eq!(m.name, "etcd-127.0.0.1-9");
    assert_eq!(m.id, nacre_server::name_id("etcd-127.0.0.1-9"));
    assert!(m.is_learner);
    assert_eq!(m.peer_ur_ls, vec![peer.to_string()]);
    assert_eq!(added.members.len(), 2);
    // Never started: listed without a name, as etcd lists it.
    assert!(added
        .members
        .iter()
        .any(|x| x.id == m.id && x.is_learner && x.name.is_empty()));

    let e = cluster.member_add(add(true)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: member ID already exist"
        )
    );
    // Nothing listens there: the learner never catches up.
    let e = cluster
        .member_promote(pb::MemberPromoteRequest { id: m.id })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader"
        )
    );
    let me = added.header.unwrap().member_id;
    let e = cluster
        .member_promote(pb::MemberPromoteRequest { id: me })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member"
        )
    );
    let e = cluster
        .member_update(pb::MemberUpdateRequest {
            id: m.id,
            peer_ur_ls: vec!["http://127.0.0.1:10".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    let removed = cluster
        .member_remove(pb::MemberRemoveRequest { id: m.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.members.len(), 1);
    let e = cluster
        .member_remove(pb::MemberRemoveRequest { id: m.id })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: member not found")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_are_stable_and_change_with_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    for i in 0..50 {
        put(&ch, &format!("h/{i:02}"), format!("v{i}").as_bytes()).await;
    }
    let a = hash_kv(&ch, 0).await.unwrap();
    let rev = a.header.unwrap().revision;
    let b = hash_kv(&ch, rev).await.unwrap();
    assert_eq!((a.hash, a.compact_revision), (b.hash, b.compact_revision));
    let h = MaintenanceClient::new(ch.clone())
        .hash(pb::HashRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.hash, a.hash);

    let e = hash_kv(&ch, rev + 100).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    let e = hash_kv(&ch, rev - 1).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );

    // The same value again is still a change: its revisions moved.
    put(&ch, "h/07", b"v7").await;
    let c = hash_kv(&ch, 0).await.unwrap();
    assert_ne!(c.hash, a.hash);
    assert!(c.header.unwrap().revision > rev);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_reads_back_and_damage_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    let big = vec![0xabu8; 150 << 10];
    put(&ch, "s/big", &big).await;
    for i in 0..20 {
        put(&ch, &format!("s/{i:02}"), format!("v{i}").as_bytes()).await;
    }
    let revision = put(&ch, "s/last", b"end").await;

    let mut stream = MaintenanceClient::new(ch.clone())
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut file = Vec::new();
    let mut chunks = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        assert!(r.blob.len() <= 64 << 10);
        chunks.push((r.blob.len(), r.remaining_bytes));
        file.extend_from_slice(&r.blob);
    }
    // etcdctl's check: a body of 512-byte blocks, then a SHA-256.
    assert_eq!(file.len() % 512, 32);
    assert!(chunks.len() > 3, "{chunks:?}");
    let body: u64 = chunks.iter().map(|c| c.0 as u64).sum::<u64>() - 32;
    assert_eq!(chunks[0].1, body - chunks[0].0 as u64);
    assert_eq!(*chunks.last().unwrap(), (32, 0));

    let mut user = Vec::new();
    let info = nacre_server::read_backup(&file[..], |k, v| {
        if let Some(key) = k.strip_prefix(b"u") {
            // A stored user value: a 24-byte revision, then the value.
            user.push((key.to_vec(), v[24..].to_vec()));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(info.revision, u64::try_from(revision).unwrap());
    assert!(info.applied >= info.revision && info.pairs > 22);
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("s/{i:02}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    want.push((b"s/big".to_vec(), big.clone()));
    want.push((b"s/last".to_vec(), b"end".to_vec()));
    want.sort();
    assert_eq!(user, want);

    // A flipped byte anywhere, in a value or the header, is found.
    for at in [40_000, file.len() - 100, 20] {
        let mut damaged = file.clone();
        damaged[at] ^= 0x01;
        let r = nacre_server::read_backup(&damaged[..], |_, _| Ok(()));
        assert!(
            matches!(
                r,
                Err(BackupError::Checksum
                    | BackupError::BadPair { .. }
                    | BackupError::BadPadding
                    | BackupError::Truncated(_))
            ),
            "byte {at}: {r:?}"
        );
    }
    let r = nacre_server::read_backup(&file[..file.len() - 1], |_, _| Ok(()));
    assert!(matches!(r, Err(BackupError::Truncated(_))), "{r:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_waits_for_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    let (l1, l2) = (grant(&server, 60_000).await, grant(&server, 60_000).await);
    let lock = |lease| lockpb::LockRequest {
        name: Bytes::from_static(b"L"),
        lease,
    };
    let first = LockClient::new(ch.clone())
        .lock(lock(l1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&first.key[..], format!("L/{l1:x}").as_bytes());
    assert!(first.header.unwrap().revision > 0);

    let mut c2 = LockClient::new(ch.clone());
    let second = tokio::spawn(async move { c2.lock(lock(l2)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "the second lock did not wait");

    LockClient::new(ch.clone())
        .unlock(lockpb::UnlockRequest {
            key: first.key.clone(),
        })
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second lock within 5 s of the unlock")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(&second.key[..], format!("L/{l2:x}").as_bytes());
    // The same lease again is the same acquisition.
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        LockClient::new(ch.clone()).lock(lock(l2)),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    assert_eq!(again.key, second.key);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_waiter_stops_when_its_lease_expires_or_it_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    let holder = grant(&server, 60_000).await;
    let short = grant(&server, 1_000).await;
    let patient = grant(&server, 60_000).await;
    let lock = |lease| lockpb::LockRequest {
        name: Bytes::from_static(b"M"),
        lease,
    };
    LockClient::new(ch.clone())
        .lock(lock(holder))
        .await
        .unwrap();

    // Nobody keeps the short lease alive: its key goes, and so does the
    // waiter.
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        LockClient::new(ch.clone()).lock(lock(short)),
    )
    .await
    .expect("the waiter ends once its lease expires")
    .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");

    // A waiter whose client gives up has its key withdrawn.
    let mut req = tonic::Request::new(lock(patient));
    req.set_timeout(Duration::from_millis(300));
    let e = LockClient::new(ch.clone()).lock(req).await.unwrap_err();
    // tonic's client reports its own deadline as Cancelled.
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    let key = Bytes::from(format!("M/{patient:x}"));
    let mut gone = false;
    for _ in 0..100 {
        if !exists(&ch, &key).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the abandoned key is still there");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_from_campaign_to_resignation() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ch) = one_node(dir.path()).await;
    let (l1, l2) = (grant(&server, 60_000).await, grant(&server, 60_000).await);
    let mut el = ElectionClient::new(ch.clone());
    let name = Bytes::from_static(b"E");
    let e = el
        .leader(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "election: no leader");

    // An observer from before the first campaign sees every leader.
    let mut observed = el
        .observe(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    let next_value = async |o: &mut tonic::Streaming<epb::LeaderResponse>| {
        let r = tokio::time::timeout(Duration::from_secs(5), o.message())
            .await
            .expect("an observed change within 5 s")
            .unwrap()
            .unwrap();
        r.kv.unwrap().value
    };
    let campaign = |lease, value: &'static str| epb::CampaignRequest {
        name: name.clone(),
        lease,
        value: Bytes::from_static(value.as_bytes()),
    };
    let won = el.campaign(campaign(l1, "a")).await.unwrap().into_inner();
    let leader = won.leader.unwrap();
    assert_eq!(&leader.key[..], format!("E/{l1:x}").as_bytes());
    assert_eq!(leader.rev, won.header.unwrap().revision);
    assert_eq!(&next_value(&mut observed).await[..], b"a");

    let mut c2 = ElectionClient::new(ch.clone());
    let request = campaign(l2, "b");
    let second = tokio::spawn(async move { c2.campaign(request).await });
    el.proclaim(epb::ProclaimRequest {
        leader: Some(leader.clone()),
        value: Bytes::from_static(b"a2"),
    })
    .await
    .unwrap();
    assert_eq!(&next_value(&mut observed).await[..], b"a2");
    let now = el
        .leader(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&now.kv.unwrap().value[..], b"a2");
    let stale = epb::LeaderKey {
        rev: leader.rev - 1,
        ..leader.clone()
    };
    let e = el
        .proclaim(epb::ProclaimRequest {
            leader: Some(stale),
            value: Bytes::from_static(b"x"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "election: not leader");
    assert!(!second.is_finished(), "the second campaign did not wait");

    el.resign(epb::ResignRequest {
        leader: Some(leader),
    })
    .await
    .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second campaign wins within 5 s of the resignation")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(
        &second.leader.unwrap().key[..],
        format!("E/{l2:x}").as_bytes()
    );
    assert_eq!(&next_value(&mut observed).await[..], b"b");
    server.shutdown().await.unwrap();
}

/// Three members, each with its etcd API where the others know it.
async fn three_nodes(dir: &std::path::Path) -> Vec<RunningServer> {
    common::three_etcd_nodes(dir, config).await
}

/// The leader's id, once every member agrees on it.
async fn agreed_leader(chs: &[Channel]) -> u64 {
    for _ in 0..500 {
        let mut leaders = Vec::new();
        for ch in chs {
            let s = MaintenanceClient::new(ch.clone())
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            leaders.push(s.leader);
        }
        if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0];
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the members did not agree on a leader within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_agree_on_hashes_and_move_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let servers = three_nodes(dir.path()).await;
    let mut chs = Vec::new();
    for s in &servers {
        chs.push(channel(etcd(s)).await);
    }
    let leader = agreed_leader(&chs).await;

    // Every member lists all three, with the etcd addresses configured.
    for ch in &chs {
        let list = ClusterClient::new(ch.clone())
            .member_list(pb::MemberListRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.members.len(), 3);
        for (m, s) in list.members.iter().zip(sorted_by_id(&servers)) {
            assert_eq!(m.client_ur_ls, vec![etcd(s).to_string()]);
            assert!(!m.is_learner);
        }
    }

    // Writes through a follower; then each member, once at the same
    // revision, hashes the same.
    let ids = ids_by_server(&chs).await;
    let follower = ids.iter().position(|id| *id != leader).unwrap();
    let mut last = 0;
    for i in 0..30 {
        last = put(&chs[follower], &format!("k/{i}"), b"v").await;
    }
    let mut hashes = Vec::new();
    for ch in &chs {
        let mut h = None;
        for _ in 0..250 {
            let r = hash_kv(ch, 0).await.unwrap();
            if r.header.unwrap().revision == last {
                h = Some(r.hash);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hashes.push(h.expect("every member reaches the revision"));
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");

    // MoveLeader sent to a follower, naming the other follower.
    let target = ids
        .iter()
        .copied()
        .find(|id| *id != leader && *id != ids[follower])
        .unwrap();
    MaintenanceClient::new(chs[follower].clone())
        .move_leader(pb::MoveLeaderRequest { target_id: target })
        .await
        .unwrap();
    assert_eq!(agreed_leader(&chs).await, target);
    let e = MaintenanceClient::new(chs[0].clone())
        .move_leader(pb::MoveLeaderRequest { target_id: 12345 })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "etcdserver: bad leader transferee");
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

fn sorted_by_id(servers: &[RunningServer]) -> Vec<&RunningServer> {
    let mut v: Vec<&RunningServer> = servers.iter().collect();
    v.sort_by_key(|s| nacre_server::name_id(&name_of(servers, s)));
    v
}

fn name_of(servers: &[RunningServer], s: &RunningServer) -> String {
    let i = servers.iter().position(|x| std::ptr::eq(x, s)).unwrap();
    format!("n{i}")
}

async fn ids_by_server(chs: &[Channel]) -> Vec<u64> {
    let mut ids = Vec::new();
    for ch in chs {
        let s = MaintenanceClient::new(ch.clone())
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        ids.push(s.header.unwrap().member_id);
    }
    ids
}
