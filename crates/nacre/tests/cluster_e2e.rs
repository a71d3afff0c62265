//! Replication end to end: real `nacre serve` processes on loopback.
//! Kill -9 of the leader under write load, restart of every node, a node
//! wiped clean that comes back through a snapshot, and membership changes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ServerProc;
use nacre_client::{Client, ClientOptions, Consistency};

/// A config for `n` nodes under `dir`, made by `nacre cluster init-config`,
/// with small checkpoints so that the tlog gets compacted and lagging
/// nodes need snapshots.
fn make_config(dir: &Path, n: usize) -> PathBuf {
    let settings =
        "tick_ms = 50\ncheckpoint_entries = 200\ntlog_tail_entries = 50\nrequest_timeout_ms = 5000";
    let (path, _) = common::init_cluster(dir, n, settings);
    LOG_DIR.with(|d| *d.borrow_mut() = Some(dir.to_path_buf()));
    path
}

fn members(config: &Path) -> Vec<nacre_server::NodeConfig> {
    nacre_server::ServerConfig::from_toml(&std::fs::read_to_string(config).unwrap())
        .unwrap()
        .nodes
}

async fn client_of(endpoints: Vec<String>) -> Client {
    let mut opts = ClientOptions::new(endpoints);
    opts.request_timeout_ms = 20_000;
    Client::connect(opts).await.unwrap()
}

/// A client bound to one node, reading whatever it has applied.
async fn local_view(addr: &str) -> Client {
    let mut opts = ClientOptions::new([addr.to_string()]);
    opts.retries_max = 0;
    Client::connect(opts)
        .await
        .unwrap()
        .with_consistency(Consistency::Any)
}

async fn applied(addr: &str) -> Option<u64> {
    let c = local_view(addr).await;
    let stats = c.statistics().await.ok()?;
    stats
        .into_iter()
        .find(|(k, _)| k == "applied_index")?
        .1
        .parse()
        .ok()
}

/// Every user key and value on one node.
async fn dump(addr: &str) -> BTreeMap<Bytes, Bytes> {
    let c = local_view(addr).await;
    let mut out = BTreeMap::new();
    let mut from: Option<Bytes> = None;
    loop {
        let page = c
            .range_entries(from.clone(), from.is_none(), None, true, 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        from = Some(last.key.clone());
        for e in page {
            out.insert(e.key, e.value);
        }
    }
    out
}

thread_local! {
    static LOG_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// The tails of every node's log, for a failure message.
fn logs() -> String {
    let Some(dir) = LOG_DIR.with(|d| d.borrow().clone()) else {
        return String::new();
    };
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {}\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Waits until every node in `addrs` has applied at least `index`.
async fn converge(addrs: &[String], index: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for a in addrs {
        loop {
            if applied(a).await.is_some_and(|i| i >= index) {
                break;
            }
            if Instant::now() > deadline {
                panic!("{a} did not reach index {index}; logs:\n{}", logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn leader_name(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(n)) = c.who_master().await {
            return n;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = make_config(dir.path(), 3);
    let nodes = members(&config);
    let addrs: Vec<String> = nodes.iter().map(|n| n.client.clone()).collect();
    let mut procs: BTreeMap<String, ServerProc> = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                ServerProc::start_member(&config, &n.name, &[]),
            )
        })
        .collect();
    let c = client_of(addrs.clone()).await;
    let first_leader = leader_name(&c).await;

    let acked: Arc<parking_lot::Mutex<BTreeMap<String, String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), addrs.clone());
        writers.push(tokio::spawn(async move {
            let c = client_of(addrs).await;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("w{w}/{:03}", i % 300), format!("{w}-{i}"));
                // A write that fails (during the election) may or may not
                // have applied: only acknowledged ones are checked.
                if c.set(k.clone(), v.clone()).await.is_ok() {
                    acked.lock().insert(k, v);
                }
                i += 1;
            }
        }));
    }
    while acked.lock().len() < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    procs.remove(&first_leader).unwrap().kill9();
    let killed_at = Instant::now();
    // Writes go on under a new leader.
    let before = acked.lock().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().len() < before + 400 {
        assert!(
            Instant::now() < deadline,
            "no progress after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_leader = leader_name(&c).await;
    assert_ne!(new_leader, first_leader);
    eprintln!(
        "writes resumed within {:?} of the kill",
        killed_at.elapsed()
    );
    // The old leader comes back and catches up.
    procs.insert(
        first_leader.clone(),
        ServerProc::start_member(&config, &first_leader, &[]),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let last = c.nop().await.unwrap();
    converge(&addrs, last).await;
    let want = acked.lock().clone();
    let reference = dump(&addrs[0]).await;
    for a in &addrs {
        let got = dump(a).await;
        assert_eq!(got.len(), reference.len(), "{a} differs from {}", addrs[0]);
        assert!(got == reference, "{a} holds different data");
    }
    for (k, v) in &want {
        // The last acknowledged write of each key is what every node holds,
        // unless a later write of the same key raced the end of the test.
        let got = reference
            .get(k.as_bytes())
            .unwrap_or_else(|| panic!("acknowledged {k} lost"));
        let (gw, gi) = got_parts(got);
        let (ww, wi) = got_parts(&Bytes::from(v.clone()));
        assert_eq!(gw, ww);
        assert!(
            gi >= wi,
            "{k}: acknowledged {v} but the cluster holds an older value"
        );
    }
}

fn got_parts(v: &Bytes) -> (u64, u64) {
    let s = std::str::from_utf8(v).unwrap();
    let (w, i) = s.split_once('-').unwrap();
    (w.parse().unwrap(), i.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_all_wipe_one_and_change_membership() {
    let dir = tempfile::tempdir().unwrap();
    let config = make_config(dir.path(), 4);
    let nodes = members(&config);
    // n1..n3 form the cluster; n4 joins later as a learner.
    let addrs: Vec<String> = nodes[..3].iter().map(|n| n.client.clone()).collect();
    let mut text = std::fs::read_to_string(&config).unwrap();
    // Bootstrap from the first three only: n4 is in the file (for its
    // addresses) but starts with --join.
    let n4 = nodes[3].clone();
    let three = config.with_file_name("three.toml");
    let cut = text.rfind("[[nodes]]").unwrap();
    std::fs::write(&three, &text[..cut]).unwrap();
    text.truncate(text.len());
    let mut procs: BTreeMap<String, ServerProc> = nodes[..3]
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                ServerProc::start_member(&three, &n.name, &[]),
            )
        })
        .collect();
    let c = client_of(addrs.clone()).await;
    for i in 0..600 {
        c.set(format!("k{i:04}"), format!("v{i}")).await.unwrap();
    }

    // Restart every node: everything acknowledged is still there.
    for (_, p) in std::mem::take(&mut procs) {
        assert_eq!(p.terminate(), Some(0));
    }
    for n in &nodes[..3] {
        procs.insert(
            n.name.clone(),
            ServerProc::start_member(&three, &n.name, &[]),
        );
    }
    let c = client_of(addrs.clone()).await;
    assert_eq!(c.key_count().await.unwrap(), 600);
    assert_eq!(c.get("k0599").await.unwrap(), Bytes::from("v599"));

    // Wipe a follower; with the log compacted it comes back by snapshot.
    let leader = leader_name(&c).await;
    let victim = nodes[..3]
        .iter()
        .find(|n| n.name != leader)
        .unwrap()
        .clone();
    procs.remove(&victim.name).unwrap().kill9();
    std::fs::remove_dir_all(&victim.data_dir).unwrap();
    for i in 600..1200 {
        c.set(format!("k{i:04}"), format!("v{i}")).await.unwrap();
    }
    // A node that lost its data rejoins with --join: it stays out of
    // elections until the leader's snapshot has restored it.
    procs.insert(
        victim.name.clone(),
        ServerProc::start_member(&three, &victim.name, &["--join"]),
    );
    let last = c.nop().await.unwrap();
    converge(std::slice::from_ref(&victim.client), last).await;
    assert_eq!(dump(&victim.client).await.len(), 1200);

    // A learner joins, catches up, is promoted; then a node is removed.
    procs.insert(
        n4.name.clone(),
        ServerProc::start_member(&config, &n4.name, &["--join"]),
    );
    c.add_learner(&n4.name, &n4.client, &n4.peer).await.unwrap();
    let last = c.nop().await.unwrap();
    converge(std::slice::from_ref(&n4.client), last).await;
    assert_eq!(dump(&n4.client).await.len(), 1200);
    c.promote(&n4.name, false).await.unwrap();
    let status = c.cluster_status().await.unwrap();
    assert!(
        status.iter().any(|m| m.name == n4.name && m.voter),
        "{status:?}"
    );
    c.remove_node(&victim.name).await.unwrap();
    let status = c.cluster_status().await.unwrap();
    assert!(!status.iter().any(|m| m.name == victim.name), "{status:?}");
    assert_eq!(status.iter().filter(|m| m.voter).count(), 3);
    // The cluster still takes writes, and the new member has them.
    let i = c.set("after-changes", "yes").await.unwrap();
    converge(std::slice::from_ref(&n4.client), i).await;
    assert_eq!(
        local_view(&n4.client)
            .await
            .get("after-changes")
            .await
            .unwrap(),
        Bytes::from("yes")
    );
}
