//! A network partition between real `nacre serve` processes: the nodes
//! reach each other only through an in-process proxy that can cut any
//! pair. The leader cut off from the other two must stop serving
//! consistent reads and writes, the majority goes on, and after healing
//! all three converge to identical state.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{local_client, Cluster};
use nacre_client::{Client, ClientOptions, Consistency};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_refuses_majority_goes_on_and_all_converge() {
    let cl = Cluster::start(3, "request_timeout_ms = 3000").await;
    let (cfg, net, ids) = (cl.cfg.clone(), cl.net.clone(), cl.ids.clone());
    let all: Vec<String> = cfg.nodes.iter().map(|n| n.client.clone()).collect();
    let mut o = ClientOptions::new(all.clone());
    o.request_timeout_ms = 20_000;
    let c = Client::connect(o).await.unwrap();
    for i in 0..100 {
        c.set(format!("before/{i}"), "x").await.unwrap();
    }
    let leader = c.who_master().await.unwrap().unwrap();
    let old = cfg.nodes.iter().find(|n| n.name == leader).unwrap().clone();
    // In good health the leader answers consistent reads from its lease.
    c.get("before/0").await.unwrap();
    let stat = |stats: Vec<(String, String)>, k: &str| -> u64 {
        stats
            .into_iter()
            .find(|(n, _)| n == k)
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let by_lease = stat(
        local_client(&old.client, Consistency::Any, 3_000)
            .await
            .statistics()
            .await
            .unwrap(),
        "read_rounds_by_lease",
    );
    assert!(by_lease > 0);
    for n in cfg.nodes.iter().filter(|n| n.name != leader) {
        net.cut(ids[&leader], ids[&n.name]);
    }
    // Past half an election timeout of silence the lease has lapsed, while
    // check-quorum may keep the old leader in office for up to two election
    // timeouts, and the others may elect a new leader after one. A
    // consistent read there must not be answered from the old state.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let lonely = local_client(&old.client, Consistency::Consistent, 3_000).await;
    if let Ok(v) = lonely.get("before/0").await {
        panic!("the cut-off leader answered a consistent read after its lease: {v:?}");
    }

    // The majority elects a leader among itself and takes writes.
    let majority: Vec<String> = cfg
        .nodes
        .iter()
        .filter(|n| n.name != leader)
        .map(|n| n.client.clone())
        .collect();
    let mut o = ClientOptions::new(majority.clone());
    o.request_timeout_ms = 20_000;
    let m = Client::connect(o).await.unwrap();
    for i in 0..100 {
        m.set(format!("during/{i}"), "y").await.unwrap();
    }
    let new_leader = m.who_master().await.unwrap().unwrap();
    assert_ne!(new_leader, leader);

    // The old leader, alone, has lost its lease: it refuses rather than
    // answer from stale state, and its writes fail instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(10);
    match lonely.get("during/0").await {
        Err(e) => assert!(e.is_unavailable() || e.is_not_master(), "{e:?}"),
        Ok(v) => panic!("the cut-off node served a consistent read: {v:?}"),
    }
    let started = Instant::now();
    let w = lonely.set("minority-write", "z").await;
    assert!(w.is_err(), "the cut-off node acknowledged a write");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused write took {:?}",
        started.elapsed()
    );
    assert!(Instant::now() < deadline);
    // Reads that ask for no freshness still work there.
    let dirty = local_client(&old.client, Consistency::Any, 3_000).await;
    assert_eq!(dirty.get("before/0").await.unwrap(), Bytes::from("x"));

    // Heal: the old leader catches up and everyone holds the same data.
    net.heal();
    let last = m.nop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = local_client(&old.client, Consistency::Any, 3_000).await;
        if v.get_txid().await.unwrap_or(0) >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healed node did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut dumps = Vec::new();
    for a in &all {
        let v = local_client(a, Consistency::AtLeast(last), 3_000).await;
        dumps.push(
            v.range_entries(None, true, None, true, 10_000)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        dumps[0].len(),
        200,
        "before + during, and no minority write"
    );
    assert!(
        dumps.iter().all(|d| d == &dumps[0]),
        "replicas differ after healing"
    );
    drop(cl);
}
