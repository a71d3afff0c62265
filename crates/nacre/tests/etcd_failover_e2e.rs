//! The etcd API through a fail-over: a client that knows every member's
//! endpoint writes through followers (which forward to the leader), the
//! leader is killed with -9, and the client goes on through the others
//! as etcd's clients do (retrying `Unavailable` on the next endpoint).
//! Every write it was told succeeded is then read back, linearizably,
//! through every surviving member.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{init_cluster, ServerProc};
use nacre_etcd_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

const WRITES: usize = 60;

async fn client(addr: &str) -> KvClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    KvClient::new(channel)
}

/// The member id the node at `addr` reports as leader, if it knows one.
async fn leader_of(addr: &str) -> Option<u64> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_lazy();
    let status = MaintenanceClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some(status.leader).filter(|l| *l != 0)
}

/// Puts `key` through the endpoints in turn, from `first`, until one
/// answers: what a client with every endpoint does.
async fn put_anywhere(clients: &mut [KvClient<Channel>], first: usize, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = first;
    while Instant::now() < deadline {
        let n = clients.len();
        let req = pb::PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        };
        match clients[i % n].put(req).await {
            Ok(_) => return true,
            Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("put {key}: {s:?}"),
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_through_the_other_members_when_the_leader_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = init_cluster(dir.path(), 3, "");
    let mut servers: Vec<Option<ServerProc>> = cfg
        .nodes
        .iter()
        .map(|n| Some(ServerProc::start_member(&config, &n.name, &[])))
        .collect();
    let addrs: Vec<String> = cfg.nodes.iter().map(|n| n.etcd.clone().unwrap()).collect();
    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(client(a).await);
    }
    let ids: Vec<u64> = cfg
        .initial_members()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let leader = loop {
        if let Some(l) = leader_of(&addrs[0]).await {
            break ids.iter().position(|id| *id == l).expect("a member");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut acked = Vec::new();
    for i in 0..WRITES {
        if i == WRITES / 2 {
            servers[leader].take().unwrap().kill9();
        }
        // Half of them start at a follower, which forwards.
        let key = format!("k{i:03}");
        if put_anywhere(&mut clients, leader + 1 + i % 2, &key).await {
            acked.push(key);
        }
    }
    assert!(
        acked.len() >= WRITES - 2,
        "only {} writes acknowledged",
        acked.len()
    );
    for (i, c) in clients.iter_mut().enumerate() {
        if i == leader {
            continue;
        }
        let req = pb::RangeRequest {
            key: Bytes::from_static(b"k"),
            range_end: Bytes::from_static(b"l"),
            ..Default::default()
        };
        let got = c.range(req).await.unwrap().into_inner();
        let keys: Vec<String> = got
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        for k in &acked {
            assert!(keys.contains(k), "member {i} lost acknowledged {k}");
        }
    }
    drop(servers);
}
