//! Online backup and restore against real `nacre` processes: a backup
//! saved while writers keep writing restores into a new 3-node cluster
//! with every key, value and revision it held at its index; damaged
//! backups and used directories are refused; the etcd API's snapshot is
//! the same file and restores too.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, nacre, wait_for, ServerProc};
use nacre_client::{Bytes, Client, ClientOptions, KeyEntry, RangeQuery};
use serde_json::Value;

/// Every write a test made and was told the index of, per key: (index,
/// the value set, or `None` for a delete).
type History = BTreeMap<Vec<u8>, Vec<(u64, Option<Vec<u8>>)>>;

/// What a key is at `at` by its history: value, create, mod, version
/// (`None`: absent).
fn expected_at(history: &History, at: u64) -> BTreeMap<Vec<u8>, (Vec<u8>, u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for (key, writes) in history {
        let mut state: Option<(Vec<u8>, u64, u64, u64)> = None;
        let mut sorted = writes.clone();
        sorted.sort_by_key(|w| w.0);
        for (index, value) in sorted.into_iter().filter(|w| w.0 <= at) {
            state = match (value, state) {
                (None, _) => None,
                (Some(v), None) => Some((v, index, index, 1)),
                (Some(v), Some((_, create, _, version))) => Some((v, create, index, version + 1)),
            };
        }
        if let Some(s) = state {
            out.insert(key.clone(), s);
        }
    }
    out
}

fn as_map(entries: Vec<KeyEntry>) -> BTreeMap<Vec<u8>, (Vec<u8>, u64, u64, u64)> {
    entries
        .into_iter()
        .map(|e| {
            let r = e.rev;
            (
                e.key.to_vec(),
                (e.value.to_vec(), r.create_rev, r.mod_rev, r.version),
            )
        })
        .collect()
}

fn endpoints(cfg: &nacre_server::ServerConfig) -> String {
    let eps: Vec<&str> = cfg.nodes.iter().map(|n| n.client.as_str()).collect();
    eps.join(",")
}

async fn client(eps: &str) -> Client {
    let mut opts = ClientOptions::new(eps.split(','));
    opts.request_timeout_ms = 20_000;
    Client::connect(opts).await.unwrap()
}

async fn all_entries(c: &Client) -> Vec<KeyEntry> {
    let all = RangeQuery {
        first: None,
        first_inclusive: true,
        last: None,
        last_inclusive: false,
        max: 0,
        reverse: false,
    };
    c.range_entries_pages(all, None).collect().await.unwrap()
}

/// `nacre ARGS...` off the runtime's threads: exit code, stdout, stderr.
async fn nacre_async(eps: &str, args: &[&str]) -> (i32, String, String) {
    let eps = eps.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nacre(&eps, &args)
    })
    .await
    .unwrap()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Writes the seed: keys with several versions, deletes, a leased key.
async fn seed(c: &Client) -> History {
    let mut h = History::new();
    for round in 0..3u32 {
        for i in 0..60u32 {
            if round > 0 && i % (round + 1) != 0 {
                continue;
            }
            let key = format!("seed/{i:03}").into_bytes();
            let value = format!("v{round}-{i}").into_bytes();
            let index = c.set(key.clone(), value.clone()).await.unwrap();
            h.entry(key).or_default().push((index, Some(value)));
        }
    }
    for i in (0..60u32).step_by(7) {
        let key = format!("seed/{i:03}").into_bytes();
        let index = c.delete(key.clone()).await.unwrap();
        h.entry(key).or_default().push((index, None));
    }
    // Deleted, then set again: a new create revision and version 1.
    let key = b"seed/007".to_vec();
    let index = c.set(key.clone(), b"again".to_vec()).await.unwrap();
    h.entry(key)
        .or_default()
        .push((index, Some(b"again".to_vec())));
    let lease = c.lease_grant(Duration::from_secs(600)).await.unwrap();
    let key = b"leased".to_vec();
    let index = c
        .set_with_lease(key.clone(), b"held".to_vec(), lease.id)
        .await
        .unwrap();
    h.entry(key)
        .or_default()
        .push((index, Some(b"held".to_vec())));
    h
}

/// Writes until `stop`, recording every acknowledged write. A write in
/// flight is let finish (and recorded): one cut off might still apply.
async fn writer(c: Client, id: u32, history: Arc<Mutex<History>>, stop: Arc<AtomicBool>) {
    for n in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let key = format!("load/{id}/{:02}", n % 40).into_bytes();
        let (index, value) = if n % 9 == 8 {
            // A delete of a key already deleted is NotFound: no write.
            (c.delete(key.clone()).await.ok(), None)
        } else {
            let value = format!("w{id}-{n}").into_bytes();
            (
                Some(c.set(key.clone(), value.clone()).await.unwrap()),
                Some(value),
            )
        };
        if let Some(index) = index {
            history
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .push((index, value));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_new_cluster_with_the_same_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(&dir.path().join("old"), 3, "");
    let old: Vec<ServerProc> = cfg
        .nodes
        .iter()
        .map(|n| ServerProc::start_member(&config, &n.name, &[]))
        .collect();
    let eps = endpoints(&cfg);
    let c = client(&eps).await;
    let history = Arc::new(Mutex::new(seed(&c).await));

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|id| tokio::spawn(writer(c.clone(), id, history.clone(), stop.clone())))
        .collect();
    // Let the writers get going, so that the backup lands among them.
    wait_for("writes under way", || history.lock().unwrap().len() > 80);
    let acked_before = history
        .lock()
        .unwrap()
        .values()
        .flatten()
        .map(|w| w.0)
        .max()
        .unwrap();
    let file = dir.path().join("backup.nbk");
    let file_s = file.display().to_string();
    let (code, out, err) = nacre_async(&eps, &["--json", "snapshot", "save", &file_s]).await;
    assert_eq!(code, 0, "snapshot save: {err}");
    let saved = json(&out);
    let at = saved["applied"].as_u64().unwrap();
    // Writes went on while it streamed, and go on a while after.
    let acked_after = history.lock().unwrap().values().flatten().count();
    wait_for("writes after the backup", || {
        history.lock().unwrap().values().flatten().count() > acked_after + 50
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    // At least as new as every write acknowledged before the save.
    assert!(
        at >= acked_before,
        "backup at {at}, a write acknowledged at {acked_before}"
    );
    let history = history.lock().unwrap().clone();
    let last = history.values().flatten().map(|w| w.0).max().unwrap();
    assert!(last > at, "no write after the backup's index {at}");
    assert!(!file.with_extension("nbk.part").exists());

    // What the old cluster holds now, for the keys that did not change
    // since the backup, agrees with the history: the model is right.
    let want = expected_at(&history, at);
    let now = as_map(all_entries(&c).await);
    assert_eq!(now, expected_at(&history, last));
    let unchanged = want
        .iter()
        .filter(|(k, _)| history[*k].iter().all(|w| w.0 <= at))
        .count();
    assert!(
        unchanged > 20 && unchanged < want.len(),
        "{unchanged} of {}",
        want.len()
    );

    let (code, out, err) = nacre_async(&eps, &["--json", "snapshot", "status", &file_s]).await;
    assert_eq!(code, 0, "snapshot status: {err}");
    let status = json(&out);
    assert_eq!(status["verified"], Value::Bool(true));
    assert_eq!(status["applied"], saved["applied"]);
    assert_eq!(status["sha256"], saved["sha256"]);
    assert_eq!(status["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(status["user_keys"].as_u64().unwrap(), want.len() as u64);
    assert_eq!(
        status["size_bytes"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );

    // A new cluster: new directories, new ports, every member from the file.
    let (config2, cfg2) = common::init_cluster(&dir.path().join("new"), 3, "");
    let config2_s = config2.display().to_string();
    for n in &cfg2.nodes {
        let args = [
            "--json", "snapshot", "restore", &file_s, "--config", &config2_s, "--node", &n.name,
        ];
        let (code, out, err) = nacre_async("127.0.0.1:1", &args).await;
        assert_eq!(code, 0, "restore {}: {err}", n.name);
        let r = json(&out);
        assert_eq!(r["applied"].as_u64().unwrap(), at);
        assert_eq!(r["members"].as_array().unwrap().len(), 3);
        assert!(n.data_dir.join("store").exists() && n.data_dir.join("tlog").exists());
    }
    let new: Vec<ServerProc> = cfg2
        .nodes
        .iter()
        .map(|n| ServerProc::start_member(&config2, &n.name, &[]))
        .collect();
    let eps2 = endpoints(&cfg2);
    let c2 = client(&eps2).await;
    let restored = as_map(all_entries(&c2).await);
    assert_eq!(restored.len(), want.len());
    for (k, v) in &want {
        assert_eq!(
            restored.get(k),
            Some(v),
            "key {}",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(restored, want);
    // The lease came along: its key is still attached.
    let leases = c2.lease_list().await.unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let info = c2.lease_ttl(leases[0].id, true).await.unwrap();
    assert_eq!(info.keys, vec![Bytes::from_static(b"leased")]);

    // New writes get revisions above the backup's.
    let index = c2.set("after/restore", "x").await.unwrap();
    assert!(index > at, "a write at {index}, the backup at {at}");
    let e = c2.get_entry("seed/001").await.unwrap().unwrap();
    assert_eq!(e.rev.mod_rev, want[&b"seed/001".to_vec()].2);
    // Each member started from its own restored state: none was sent one.
    for p in &new {
        let log = p.log();
        assert!(
            !log.contains("installed a snapshot from the leader"),
            "{log}"
        );
        assert!(!log.contains("waiting for the leader to send"), "{log}");
    }
    // Every member reaches the same state (all three replicate).
    for n in &cfg2.nodes {
        wait_for("the member to apply the write", || {
            let (code, out, _) = nacre(&n.client, &["get-txid"]);
            code == 0 && out.trim().parse::<u64>().is_ok_and(|t| t >= index)
        });
    }
    drop(old);
}

/// A single node with some keys; returns it and its endpoint.
fn one_node(dir: &Path) -> (ServerProc, String, String) {
    let etcd = format!("127.0.0.1:{}", free_port());
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.join("data");
    let data_s = data.display().to_string();
    let p = ServerProc::start_args(
        &[
            "serve",
            "--data-dir",
            &data_s,
            "--listen",
            &addr,
            "--etcd-listen",
            &etcd,
        ],
        &addr,
        data,
        dir.join("server.log"),
    );
    for i in 0..30 {
        let (code, _, err) = nacre(&addr, &["set", &format!("k{i:02}"), &format!("v{i}")]);
        assert_eq!(code, 0, "{err}");
    }
    (p, addr, etcd)
}

#[test]
fn damaged_backups_and_used_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr, _) = one_node(dir.path());
    let file = dir.path().join("b.nbk");
    let file_s = file.display().to_string();
    let (code, _, err) = nacre(&addr, &["snapshot", "save", &file_s]);
    assert_eq!(code, 0, "{err}");
    let good = std::fs::read(&file).unwrap();
    assert_eq!(good.len() % 512, 32);
    let (code, out, _) = nacre(&addr, &["snapshot", "status", &file_s]);
    assert_eq!(code, 0);
    assert!(
        out.contains("user keys: 30") && out.contains("verified: yes"),
        "{out}"
    );

    let damaged = dir.path().join("damaged.nbk");
    let damaged_s = damaged.display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit", {
            let mut b = good.clone();
            b[good.len() / 2] ^= 0x04;
            b
        }),
        ("a cut", good[..good.len() - 100].to_vec()),
        ("a flipped checksum bit", {
            let mut b = good.clone();
            b[good.len() - 1] ^= 0x80;
            b
        }),
    ];
    for (what, bytes) in cases {
        std::fs::write(&damaged, &bytes).unwrap();
        let (code, out, err) = nacre(&addr, &["--json", "snapshot", "status", &damaged_s]);
        assert_eq!(code, 65, "status of {what}: {out} {err}");
        assert_eq!(json(&out)["error"]["code"], "corrupt", "{what}");
        let target = dir.path().join("restored-damaged");
        let target_s = target.display().to_string();
        let args = [
            "snapshot",
            "restore",
            &damaged_s,
            "--data-dir",
            &target_s,
            "--name",
            "r1",
        ];
        let (code, _, err) = nacre(&addr, &args);
        assert_eq!(code, 65, "restore of {what}: {err}");
        assert!(!target.exists(), "a damaged backup left {target_s} behind");
    }

    // A directory with anything in it is not restored into.
    let used = dir.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("keep"), b"mine").unwrap();
    let used_s = used.display().to_string();
    let args = [
        "snapshot",
        "restore",
        &file_s,
        "--data-dir",
        &used_s,
        "--name",
        "r1",
    ];
    let (code, _, err) = nacre(&addr, &args);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read(used.join("keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&used).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_snapshot_restores_into_a_single_node() {
    use nacre_etcd_proto::etcdserverpb as pb;
    let dir = tempfile::tempdir().unwrap();
    let (node, addr, etcd) = one_node(dir.path());
    let before = as_map(all_entries(&client(&addr).await).await);
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{etcd}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stream = pb::maintenance_client::MaintenanceClient::new(ch)
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&r.blob);
    }
    let file = dir.path().join("etcd.snap");
    std::fs::write(&file, &bytes).unwrap();
    drop(node);
    let file_s = file.display().to_string();
    let (code, out, err) = nacre_async(&addr, &["--json", "snapshot", "status", &file_s]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["user_keys"].as_u64().unwrap(), 30);

    let target = dir.path().join("restored");
    let target_s = target.display().to_string();
    let args = [
        "snapshot",
        "restore",
        &file_s,
        "--data-dir",
        &target_s,
        "--name",
        "solo",
    ];
    let (code, _, err) = nacre_async(&addr, &args).await;
    assert_eq!(code, 0, "{err}");
    let addr2 = format!("127.0.0.1:{}", free_port());
    let _restored = ServerProc::start_args(
        &[
            "serve",
            "--data-dir",
            &target_s,
            "--node-name",
            "solo",
            "--listen",
            &addr2,
        ],
        &addr2,
        target.clone(),
        dir.path().join("restored.log"),
    );
    let c = client(&addr2).await;
    assert_eq!(as_map(all_entries(&c).await), before);
    let last = before.values().map(|v| v.2).max().unwrap();
    assert!(c.set("k-new", "x").await.unwrap() > last);
}
