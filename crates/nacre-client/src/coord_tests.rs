//! Watches, leases, locks, elections and waiting reads against the fake
//! cluster of `fake.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use nacre_proto::{Batch, Bytes, Consistency, ErrorCode, EventKind, KeySpan, Op};

use crate::fake::{Fake, Node};
use crate::{Client, ClientError, ClientOptions, LeaseLoss, WaitFor, WatchOptions, WatchStream};

async fn client(nodes: &[&Node]) -> Client {
    let mut o = ClientOptions::new(nodes.iter().map(|n| n.addr.clone()));
    o.request_timeout_ms = 5_000;
    Client::connect(o).await.unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// Takes batches until `n` events came; the events.
async fn take(w: &mut WatchStream, n: usize) -> Vec<nacre_proto::WatchEvent> {
    let mut all = Vec::new();
    while all.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("a batch in time")
            .expect("the stream goes on")
            .expect("no error");
        all.extend(batch.events);
    }
    all
}

fn assert_once_in_order(events: &[nacre_proto::WatchEvent], want: usize) {
    let keys: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.key).into_owned())
        .collect();
    let expected: Vec<String> = (0..want).map(|i| format!("a/{i:03}")).collect();
    assert_eq!(keys, expected);
    assert!(events.windows(2).all(|w| w[0].revision() < w[1].revision()));
}

#[tokio::test]
async fn a_watch_reports_each_change_of_its_span_once_in_order() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let opts = WatchOptions {
        progress: true,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Prefix(b("a/")), opts);
    // The first batch says the watch started (at the next revision).
    let created = w.next().await.unwrap().unwrap();
    assert!(created.events.is_empty());
    for i in 0..30 {
        fake.put(&format!("a/{i:03}"), "v");
        fake.put(&format!("b/{i:03}"), "not watched");
    }
    let events = take(&mut w, 30).await;
    assert_once_in_order(&events, 30);
    assert!(events.iter().all(|e| e.kind == EventKind::Put));
}

#[tokio::test]
async fn a_watch_resumes_on_another_node_without_gap_or_duplicate() {
    let fake = Fake::new();
    let (n1, n2) = (Node::start(&fake).await, Node::start(&fake).await);
    let c = client(&[&n1, &n2]).await;
    let start = fake.put("x", "before") + 1;
    let opts = WatchOptions {
        start_rev: start,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Prefix(b("a/")), opts);
    for i in 0..20 {
        fake.put(&format!("a/{i:03}"), "v");
    }
    let mut events = take(&mut w, 20).await;
    n1.kill();
    for i in 20..40 {
        fake.put(&format!("a/{i:03}"), "v");
    }
    events.extend(take(&mut w, 20).await);
    assert_once_in_order(&events, 40);
    // The second node was asked for the revisions after those delivered.
    let resumed = n2.watches.lock().unwrap().clone();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert!(resumed[0].start_rev > start);
    assert!(resumed[0].start_rev <= events[20].revision());
}

#[tokio::test]
async fn a_watch_resumes_after_a_slow_consumer_end_and_a_cancel() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let opts = WatchOptions {
        start_rev: 2,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Prefix(b("a/")), opts);
    let mut events = Vec::new();
    for (round, code) in [ErrorCode::SlowConsumer, ErrorCode::Cancelled]
        .into_iter()
        .enumerate()
    {
        for i in round * 10..round * 10 + 10 {
            fake.put(&format!("a/{i:03}"), "v");
        }
        events.extend(take(&mut w, 10).await);
        node.end_watches(code);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while node.watches.lock().unwrap().len() < round + 2 {
            assert!(tokio::time::Instant::now() < deadline, "not resumed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for i in 20..25 {
        fake.put(&format!("a/{i:03}"), "v");
    }
    events.extend(take(&mut w, 5).await);
    assert_once_in_order(&events, 25);
    assert_eq!(node.watches.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_compacted_start_is_a_typed_error_with_the_oldest_revision() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    for i in 0..10 {
        fake.put(&format!("k{i}"), "v");
    }
    fake.model.lock().unwrap().oldest = 8;
    let c = client(&[&node]).await;
    let opts = WatchOptions {
        start_rev: 3,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Prefix(Bytes::new()), opts);
    match w.next().await {
        Some(Err(ClientError::Compacted {
            requested_rev: 3,
            oldest_rev: 8,
        })) => {}
        other => panic!("{other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn dropping_a_watch_cancels_it_on_the_node() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let opts = WatchOptions {
        progress: true,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Key(b("k")), opts);
    assert!(w.next().await.unwrap().unwrap().events.is_empty());
    drop(w);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while node.cancels.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_keeper_renews_many_leases_with_one_request_and_reports_a_lost_one() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let keeper = c.lease_keeper();
    let mut lost = keeper.lost().unwrap();
    let ttl = Duration::from_millis(150);
    let mut ids = Vec::new();
    for _ in 0..100 {
        let l = c.lease_grant(ttl).await.unwrap();
        keeper.add(l.id, ttl);
        ids.push(l.id);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rounds = fake.model.lock().unwrap().keep_alives;
    // About one round per 50 ms, each for all hundred leases.
    assert!((3..=12).contains(&rounds), "{rounds} keep-alive requests");
    assert!(fake.revoke(ids[7]));
    let l = tokio::time::timeout(Duration::from_secs(2), lost.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((l.id, l.why), (ids[7], LeaseLoss::Gone));
    assert_eq!(keeper.ids().len(), 99);
}

#[tokio::test]
async fn set_with_lease_keys_go_with_their_lease() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let l = c.lease_grant(Duration::from_secs(5)).await.unwrap();
    c.set_with_lease("k", "v", l.id).await.unwrap();
    assert_eq!(c.lease_ttl(l.id, false).await.unwrap().ttl_ms, 5_000);
    assert_eq!(c.lease_list().await.unwrap().len(), 1);
    c.lease_revoke(l.id).await.unwrap();
    assert!(c.get_entry("k").await.unwrap().is_none());
    assert!(c.lease_revoke(l.id).await.unwrap_err().is_lease_not_found());
    let e = c.set_with_lease("k", "v", l.id).await.unwrap_err();
    assert!(e.is_lease_not_found(), "{e}");
}

#[tokio::test]
async fn a_lock_waits_for_the_holder_and_fences_the_former_one() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let ttl = Duration::from_secs(5);
    let first = c.lock("job", ttl).await.unwrap();
    assert!(first.key.starts_with(b"job/"));
    let c2 = c.clone();
    let mut second = tokio::spawn(async move { c2.lock("job", ttl).await });
    let waited = tokio::time::timeout(Duration::from_millis(200), &mut second).await;
    assert!(waited.is_err(), "the second contender got the lock early");
    let put = |v: &str| Batch {
        guards: vec![],
        ops: vec![Op::Set(b("out"), b(v))],
    };
    c.fenced(put("1"), "job", first.token).await.unwrap();
    let token = first.token;
    first.unlock().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.token > token);
    let e = c.fenced(put("2"), "job", token).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    c.fenced(put("3"), "job", second.token).await.unwrap();
    assert_eq!(c.get_entry("out").await.unwrap().unwrap().value, b("3"));
}

#[tokio::test]
async fn a_lock_whose_holder_lost_its_lease_passes_on() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let ttl = Duration::from_secs(5);
    let mut first = c.lock("l", ttl).await.unwrap();
    let c2 = c.clone();
    let second = tokio::spawn(async move { c2.lock("l", ttl).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The lease expires (here: revoked behind the holder's back).
    assert!(fake.revoke(first.lease));
    let lost = tokio::time::timeout(Duration::from_secs(5), first.lost()).await;
    assert!(matches!(lost, Ok(ClientError::LeaseLost { .. })));
    let s = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(s.token > first.token);
}

async fn leader_value(s: &mut crate::LeaderStream) -> String {
    let e = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&e.value).into_owned()
}

#[tokio::test]
async fn an_election_elects_the_oldest_and_observers_see_each_leader() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let ttl = Duration::from_secs(5);
    let a = c.campaign("e", "a", ttl).await.unwrap();
    let mut seen = c.observe("e");
    assert_eq!(leader_value(&mut seen).await, "a");
    let c2 = c.clone();
    let bee = tokio::spawn(async move { c2.campaign("e", "b", ttl).await });
    a.proclaim("a2").await.unwrap();
    assert_eq!(leader_value(&mut seen).await, "a2");
    let leader = c.leader("e").await.unwrap().unwrap();
    assert_eq!(leader.key, a.key);
    a.resign().await.unwrap();
    assert_eq!(leader_value(&mut seen).await, "b");
    let bee = bee.await.unwrap().unwrap();
    assert_eq!(c.leader("e").await.unwrap().unwrap().key, bee.key);
}

#[tokio::test]
async fn get_wait_for_a_key_returns_once_it_is_written() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let f2 = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        f2.put("other", "x");
        f2.put("k", "here");
    });
    let long = Duration::from_secs(5);
    let e = c
        .get_wait("k", WaitFor::KeyExists, long, Consistency::Any)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.value, b("here"));
    // Present already: at once.
    let again = c
        .get_wait(
            "k",
            WaitFor::KeyExists,
            Duration::from_millis(500),
            Consistency::Consistent,
        )
        .await
        .unwrap();
    assert_eq!(again.unwrap().rev, e.rev);
    // A change after the revision seen.
    let f3 = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        f3.put("k", "newer");
    });
    let after = c
        .get_wait(
            "k",
            WaitFor::Revision(e.rev.mod_rev),
            long,
            Consistency::Any,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.value, b("newer"));
    assert!(after.rev.mod_rev > e.rev.mod_rev);
}

#[tokio::test]
async fn a_waiting_read_times_out_with_a_typed_error() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let t = std::time::Instant::now();
    let e = c
        .get_wait(
            "nope",
            WaitFor::KeyExists,
            Duration::from_millis(150),
            Consistency::Consistent,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::WaitTimedOut { after_ms: 150 }),
        "{e}"
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    let now = fake.put("p/1", "v");
    let e = c
        .span_wait(
            KeySpan::Prefix(b("p/")),
            WaitFor::Revision(now),
            Duration::from_millis(100),
            Consistency::Consistent,
            10,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::WaitTimedOut { .. }), "{e}");
}

#[tokio::test]
async fn a_consumer_that_falls_behind_the_connection_loses_nothing() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let opts = WatchOptions {
        start_rev: 2,
        buffer_batches: 1,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Prefix(b("a/")), opts);
    // One frame per put, and nobody reading: the connection's buffer for
    // the watch fills, the watch is dropped there and resumed.
    for i in 0..600 {
        fake.put(&format!("a/{i:03}"), "v");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let events = take(&mut w, 600).await;
    assert_once_in_order(&events, 600);
    assert!(node.cancels.load(Ordering::SeqCst) >= 1);
    assert!(node.watches.lock().unwrap().len() >= 2);
}

#[tokio::test]
async fn a_dropped_guard_or_a_cancelled_lock_call_revokes_its_lease() {
    let fake = Fake::new();
    let node = Node::start(&fake).await;
    let c = client(&[&node]).await;
    let ttl = Duration::from_secs(60);
    let first = c.lock("d", ttl).await.unwrap();
    // A contender that gives up waiting leaves nothing behind.
    let waited = tokio::time::timeout(Duration::from_millis(100), c.lock("d", ttl)).await;
    assert!(waited.is_err());
    drop(first);
    // The fake never expires leases: only a revoke lets this one in.
    let second = tokio::time::timeout(Duration::from_secs(5), c.lock("d", ttl))
        .await
        .expect("the dropped guard's lease was revoked")
        .unwrap();
    let keys = c
        .read_span(&KeySpan::Prefix(b("d/")), Consistency::Consistent, 10)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "only the holder's key is left");
    assert_eq!(keys[0].key, second.key);
}
