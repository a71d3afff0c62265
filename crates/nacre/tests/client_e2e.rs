//! End to end through the Rust client: a real `nacre serve` process, every
//! operation and error code, atomic sequences, kill -9 and restart, and
//! concurrent test-and-set.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::ServerProc;
use nacre_client::{Client, ClientError, ClientOptions, Sequence};
use nacre_proto::{Consistency, ErrorCode};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn client(s: &ServerProc) -> Client {
    Client::connect(ClientOptions::new([s.addr.clone()]))
        .await
        .unwrap()
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("no error code in {e:?}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let c = client(&server).await;

    assert!(c.ping().await.unwrap().starts_with("nacre"));
    assert_eq!(c.version().await.unwrap().major, 0);
    assert_eq!(c.who_master().await.unwrap().as_deref(), Some("nacre0"));

    let i1 = c.set("a", "1").await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), b("1"));
    assert_eq!(code(c.get("missing").await), ErrorCode::NotFound);
    assert_eq!(c.get_option("missing").await.unwrap(), None);
    assert!(c.exists("a").await.unwrap());
    let i2 = c.set("a", "2").await.unwrap();
    let e = c.get_entry("a").await.unwrap().unwrap();
    assert_eq!(
        (e.rev.create_rev, e.rev.mod_rev, e.rev.version),
        (i1, i2, 2)
    );

    // Read-your-writes at a level any node could serve, and its refusal.
    let follower_view = c.with_consistency(Consistency::AtLeast(i2));
    assert_eq!(follower_view.get("a").await.unwrap(), b("2"));
    let txid = c.get_txid().await.unwrap();
    assert!(txid >= i2);
    let ahead = c.with_consistency(Consistency::AtLeast(txid + 1_000));
    assert_eq!(code(ahead.get("a").await), ErrorCode::InconsistentRead);
    assert_eq!(
        c.with_consistency(Consistency::Any).get("a").await.unwrap(),
        b("2")
    );

    // test_and_set / replace / confirm.
    assert_eq!(
        c.test_and_set("a", Some(b("x")), Some(b("3")))
            .await
            .unwrap(),
        Some(b("2"))
    );
    assert_eq!(
        c.get("a").await.unwrap(),
        b("2"),
        "a mismatch writes nothing"
    );
    assert_eq!(
        c.test_and_set("a", Some(b("2")), Some(b("3")))
            .await
            .unwrap(),
        Some(b("2"))
    );
    assert_eq!(c.get("a").await.unwrap(), b("3"));
    assert_eq!(c.replace("a", Some(b("4"))).await.unwrap(), Some(b("3")));
    let version = c.get_entry("a").await.unwrap().unwrap().rev.version;
    c.confirm("a", "4").await.unwrap();
    assert_eq!(
        c.get_entry("a").await.unwrap().unwrap().rev.version,
        version,
        "confirm of the same value writes nothing"
    );
    c.confirm("a", "5").await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), b("5"));
    assert_eq!(c.replace("a", None).await.unwrap(), Some(b("5")));
    assert_eq!(code(c.delete("a").await), ErrorCode::NotFound);

    // multi_get and ranges.
    for k in ["k1", "k2", "k3", "k4", "z"] {
        c.set(k, format!("v{k}")).await.unwrap();
    }
    match c.multi_get(vec![b("k1"), b("nope"), b("k2")]).await {
        Err(e) => {
            assert_eq!(e.code(), Some(ErrorCode::NotFound));
            assert_eq!(e.key(), Some(&b("nope")));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.multi_get(vec![b("k2"), b("k1")]).await.unwrap(),
        vec![b("vk2"), b("vk1")]
    );
    assert_eq!(
        c.multi_get_option(vec![b("k1"), b("nope")]).await.unwrap(),
        vec![Some(b("vk1")), None]
    );
    assert_eq!(
        c.range(Some(b("k1")), false, Some(b("k4")), true, 10)
            .await
            .unwrap(),
        vec![b("k2"), b("k3"), b("k4")]
    );
    let es = c
        .range_entries(Some(b("k1")), true, None, true, 2)
        .await
        .unwrap();
    assert_eq!(
        es.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![b("k1"), b("k2")]
    );
    let es = c
        .rev_range_entries(Some(b("k3")), true, Some(b("k1")), false, 10)
        .await
        .unwrap();
    assert_eq!(
        es.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![b("k3"), b("k2")]
    );
    assert_eq!(es[0].value, b("vk3"));
    assert_eq!(
        c.prefix_keys("k", 3).await.unwrap(),
        vec![b("k1"), b("k2"), b("k3")]
    );
    assert_eq!(c.key_count().await.unwrap(), 5);

    // A sequence that fails half way leaves nothing behind.
    let mut seq = Sequence::new();
    seq.set("s1", "x")
        .delete("k1")
        .delete_prefix("k")
        .assert("z", Some(b("wrong")))
        .set("s2", "y");
    match c.sequence(seq).await {
        Err(e) => {
            assert_eq!(e.code(), Some(ErrorCode::AssertionFailed));
            assert_eq!(e.key(), Some(&b("z")));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(c.key_count().await.unwrap(), 5);
    assert!(!c.exists("s1").await.unwrap());
    assert_eq!(c.get("k1").await.unwrap(), b("vk1"));
    // A delete of a missing key inside a sequence is NotFound, all undone.
    let mut seq = Sequence::new();
    seq.set("s1", "x").delete("never");
    assert_eq!(code(c.sequence(seq).await), ErrorCode::NotFound);
    assert!(!c.exists("s1").await.unwrap());
    // Optimistic concurrency with a version guard.
    let v = c.get_entry("z").await.unwrap().unwrap().rev.version;
    let mut seq = Sequence::new();
    seq.assert_version("z", v)
        .set("z", "new")
        .assert_range("k", vec![b("k1"), b("k2"), b("k3"), b("k4")]);
    c.sequence(seq).await.unwrap();
    let mut stale = Sequence::new();
    stale.assert_version("z", v).set("z", "lost");
    assert_eq!(code(c.sequence(stale).await), ErrorCode::AssertionFailed);
    assert_eq!(c.get("z").await.unwrap(), b("new"));

    assert_eq!(c.delete_prefix("k").await.unwrap(), 4);
    assert_eq!(c.key_count().await.unwrap(), 1);
    assert!(c.nop().await.unwrap() > i2);

    // Limits are checked before sending, with the same error code.
    let huge = Bytes::from(vec![0u8; 16 * 1024 * 1024 + 1]);
    assert_eq!(code(c.set("big", huge).await), ErrorCode::TooLarge);
    let long_key = Bytes::from(vec![b'k'; 5000]);
    assert_eq!(code(c.get(long_key).await), ErrorCode::TooLarge);

    let stats: BTreeMap<_, _> = c.statistics().await.unwrap().into_iter().collect();
    assert_eq!(stats["role"], "leader");
    assert_eq!(stats["key_count"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let addr = server.addr.clone();
    let acked: Arc<parking_lot::Mutex<BTreeMap<String, u64>>> = Default::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let acked = acked.clone();
        let addr = addr.clone();
        writers.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new([addr])).await.unwrap();
            for i in 0u64.. {
                let key = format!("w{w}/{:04}", i);
                match c.set(key.clone(), i.to_string()).await {
                    Ok(_) => {
                        acked.lock().insert(key, i);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    while acked.lock().len() < 2_000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let at_kill = acked.lock().clone();
    server.kill9();
    for w in writers {
        w.await.unwrap();
    }
    // Same address: clients configured with it find the node again.
    let server = ServerProc::start_at(dir.path(), &addr);
    let c = client(&server).await;
    for chunk in at_kill.keys().collect::<Vec<_>>().chunks(500) {
        let keys: Vec<Bytes> = chunk.iter().map(|k| Bytes::from((*k).clone())).collect();
        let values = c.multi_get(keys).await.unwrap();
        for (k, v) in chunk.iter().zip(values) {
            assert_eq!(v, Bytes::from(at_kill[*k].to_string()), "{k}");
        }
    }
    assert!(c.key_count().await.unwrap() >= at_kill.len() as u64);
    // The node goes on from there, and a clean stop exits 0.
    c.set("after", "restart").await.unwrap();
    assert_eq!(server.terminate(), Some(0));
    let server = ServerProc::start_at(dir.path(), &addr);
    assert_eq!(
        client(&server).await.get("after").await.unwrap(),
        b("restart")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_test_and_set_never_loses_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    // Half the tasks share one pipelined connection, half have their own.
    let shared = client(&server).await;
    let tasks = 16;
    let increments = 30u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let c = if t % 2 == 0 {
            shared.clone()
        } else {
            client(&server).await
        };
        handles.push(tokio::spawn(async move {
            let mut done = 0;
            while done < increments {
                let cur = c.get_option("counter").await.unwrap();
                let n: u64 = cur
                    .as_ref()
                    .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                let prev = c
                    .test_and_set(
                        "counter",
                        cur.clone(),
                        Some(Bytes::from((n + 1).to_string())),
                    )
                    .await
                    .unwrap();
                if prev == cur {
                    done += 1;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(
        shared.get("counter").await.unwrap(),
        Bytes::from((tasks as u64 * increments).to_string())
    );
}
