//! `kill -9` of the leader of a 3-node cluster while 100 watchers and 100
//! leases are active: every watcher gets every write once and in order
//! (across its resumption, wherever it was), and no lease expires, since
//! keep-alives went on through the fail-over and a new leader extends
//! the leases it takes over.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use nacre_client::{Bytes, Client, ClientOptions, KeySpan, WatchEvent, WatchOptions, WatchStream};

const WATCHERS: usize = 100;
const LEASES: usize = 100;
const WRITES: usize = 300;
/// Three election timeouts of the cluster's defaults: a fail-over (one
/// election timeout to notice, one to elect) fits in it with room.
const LEASE_TTL: Duration = Duration::from_secs(3);

/// Takes events until `n` came (90 s at most).
async fn take(w: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    common::watch::take(w, n, Duration::from_secs(90)).await
}

/// Writes `w/NNNN` for `range`; their log indexes.
async fn write(c: Client, range: std::ops::Range<usize>) -> Vec<(String, u64)> {
    let mut done = Vec::new();
    for i in range {
        let k = format!("w/{i:04}");
        let index = c.set(k.clone(), "v").await.expect("the write goes through");
        done.push((k, index));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    done
}

/// Clients whose first endpoint differs, so that their watches spread
/// over the three nodes (the leader among them).
async fn spread_clients(cl: &Cluster, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut eps = cl.endpoints();
        let by = i % eps.len();
        eps.rotate_left(by);
        out.push(
            Client::connect(ClientOptions::new(eps))
                .await
                .expect("connect"),
        );
    }
    out
}

/// 100 leases, a key attached to each, all kept alive by one keeper.
async fn leases(c: &Client) -> (nacre_client::LeaseKeeper, Vec<u64>) {
    let keeper = c.lease_keeper();
    let mut ids = Vec::new();
    for i in 0..LEASES {
        let l = c.lease_grant(LEASE_TTL).await.expect("grant");
        c.set_with_lease(format!("leased/{i:03}"), "held", l.id)
            .await
            .expect("attach");
        keeper.add(l.id, LEASE_TTL);
        ids.push(l.id);
    }
    (keeper, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_killed_under_100_watchers_and_100_leases_loses_no_event_and_no_lease() {
    let mut cl = Cluster::start(3, "").await;
    let admin = cl.client(cl.endpoints()).await;
    let (keeper, lease_ids) = leases(&admin).await;
    let mut lost = keeper.lost().expect("the keeper's loss channel");
    let from = admin.set("start", "x").await.unwrap() + 1;
    let clients = spread_clients(&cl, WATCHERS / 5).await;
    let opts = WatchOptions {
        start_rev: from,
        ..WatchOptions::default()
    };
    let mut watches: Vec<WatchStream> = (0..WATCHERS)
        .map(|i| clients[i % clients.len()].watch(KeySpan::Prefix(Bytes::from("w/")), opts.clone()))
        .collect();
    let writer = tokio::spawn(write(cl.client(cl.endpoints()).await, 0..WRITES));
    // A third of the writes, seen by the first watcher; then the leader dies.
    let mut first = take(&mut watches[0], WRITES / 3).await;
    let leader = cl.leader().await;
    cl.kill9(&leader);
    first.extend(take(&mut watches[0], WRITES - first.len()).await);
    let writes = writer.await.expect("the writer");
    let mut want = writes.clone();
    want.sort_by_key(|w| w.1);
    let got = |events: &[WatchEvent]| -> Vec<(String, u64)> {
        events
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.key).into_owned(), e.revision()))
            .collect()
    };
    assert_eq!(
        got(&first),
        want,
        "watcher 0: a gap, a duplicate or a reorder"
    );
    for (i, w) in watches.iter_mut().enumerate().skip(1) {
        let events = take(w, WRITES).await;
        assert_eq!(
            got(&events),
            want,
            "watcher {i}: a gap, a duplicate or a reorder"
        );
    }
    // Keep-alives went on through the fail-over: a lease lost now would
    // have expired early. Give the keeper one more round to report.
    tokio::time::sleep(LEASE_TTL / 2).await;
    assert!(
        lost.try_recv().is_err(),
        "a lease was lost across the fail-over"
    );
    let listed: Vec<u64> = admin
        .lease_list()
        .await
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    for id in &lease_ids {
        assert!(
            listed.contains(id),
            "lease {id} is gone after the fail-over"
        );
    }
    let held = admin.prefix_keys("leased/", 1000).await.unwrap();
    assert_eq!(
        held.len(),
        LEASES,
        "leased keys deleted across the fail-over"
    );
}
