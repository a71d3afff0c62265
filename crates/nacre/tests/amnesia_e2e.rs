//! Raft's amnesia case with real processes: a write acknowledged by the
//! leader and one follower while the third voter is cut off; then that
//! follower loses its data directory and is restarted with the same config
//! (no `--join`) while the leader is down. The restarted node must not
//! vote until the leader has restored it, or the lagging voter becomes
//! leader without the write and overwrites it on every node
//! (docs/replication.md, "A node that lost its data").

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{local_client, Cluster};
use nacre_client::Consistency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_next_to_a_lagging_one_loses_no_committed_write() {
    let mut c = Cluster::start(3, "tick_ms = 50\nrequest_timeout_ms = 3000").await;
    let client = c.client(c.endpoints()).await;
    client.set("before", "1").await.unwrap();
    let leader = c.leader().await;
    let others: Vec<String> = c.names().into_iter().filter(|n| *n != leader).collect();
    let (lagging, wiped) = (others[0].clone(), others[1].clone());

    // Acknowledged by the leader and `wiped`: a bare quorum.
    c.isolate(&lagging);
    let index = client.set("w", "committed").await.unwrap();
    assert!(index > 0);

    c.kill9(&wiped);
    let data_dir = c
        .cfg
        .nodes
        .iter()
        .find(|n| n.name == wiped)
        .unwrap()
        .data_dir
        .clone();
    std::fs::remove_dir_all(&data_dir).unwrap();
    c.kill9(&leader);
    c.heal();
    // The same command line as always: the config still says "new".
    c.restart(&wiped);
    c.procs[&wiped].wait_log("the cluster exists already", Duration::from_secs(10));

    // Several election timeouts (0.5-1 s each) with only the lagging voter
    // and the wiped one up: a wiped node that votes lets the lagging one
    // lead, and its first entry takes the write's place.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for name in [&lagging, &wiped] {
            assert_ne!(
                role(&c, name).await.as_deref(),
                Some("leader"),
                "{name} was elected by the lagging voter and the wiped one:\n{}",
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    c.restart(&leader);
    let client = c.client(c.endpoints()).await;
    match client.get("w").await {
        Ok(v) => assert_eq!(v, Bytes::from("committed")),
        Err(e) => panic!("the committed write is lost: {e}\n{}", c.logs()),
    }
    // The wiped node is restored by the leader's snapshot, write included.
    let last = client.nop().await.unwrap();
    let restored = local_client(&c.client_addr(&wiped), Consistency::AtLeast(last), 2_000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match restored.get("w").await {
            Ok(v) => {
                assert_eq!(v, Bytes::from("committed"));
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "{wiped} was not restored: {e}\n{}",
                c.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The role node `name` reports, if it answers.
async fn role(c: &Cluster, name: &str) -> Option<String> {
    let node = local_client(&c.client_addr(name), Consistency::Any, 2_000).await;
    let stats = node.statistics().await.ok()?;
    stats.into_iter().find(|(k, _)| k == "role").map(|(_, v)| v)
}
