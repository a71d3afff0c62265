//! Lua user functions on a 3-node cluster of real processes: 64 clients
//! incrementing one counter through `arith64.incr` get an exact count
//! although the leader is killed half way (calls carry the client's
//! session, so a retried call applies once), and the time from a script
//! install being acknowledged to it being live on every node.
//!
//! Defaults keep CI fast; the figures:
//! `NACRE_SCRIPT_INCREMENTS=1000 NACRE_SCRIPT_LIVE_TRIALS=50 cargo test --release -p nacre --test scripts_cluster_e2e -- --nocapture`

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ServerProc;
use nacre_client::{Client, ClientOptions, Request, Response};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn arith64() -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../examples/scripts/arith64.lua",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Cluster {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    nodes: Vec<nacre_server::NodeConfig>,
    procs: BTreeMap<String, ServerProc>,
}

fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "");
    let nodes = cfg.nodes;
    let procs = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                ServerProc::start_member(&config, &n.name, &[]),
            )
        })
        .collect();
    Cluster {
        _dir: dir,
        config,
        nodes,
        procs,
    }
}

async fn client(endpoints: Vec<String>) -> Client {
    let mut o = ClientOptions::new(endpoints);
    o.request_timeout_ms = 30_000;
    Client::connect(o).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_is_exact_across_a_leader_failover() {
    let mut cl = start_cluster();
    let endpoints: Vec<String> = cl.nodes.iter().map(|n| n.client.clone()).collect();
    let c = client(endpoints.clone()).await;
    c.script_put("arith64", arith64()).await.unwrap();
    let clients = 64u64;
    let per_client = env_or("NACRE_SCRIPT_INCREMENTS", 10);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (endpoints, done) = (endpoints.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = client(endpoints).await;
            for _ in 0..per_client {
                c.call("arith64", "incr", vec![Bytes::from("counter")], None)
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let total = clients * per_client;
    while done.load(Ordering::Relaxed) < total / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = c.who_master().await.unwrap().unwrap();
    cl.procs.remove(&leader).unwrap().kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let v = c.get("counter").await.unwrap();
    assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), total);
    drop(cl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_is_live_on_every_node_soon_after_its_acknowledgement() {
    let cl = start_cluster();
    let endpoints: Vec<String> = cl.nodes.iter().map(|n| n.client.clone()).collect();
    let c = client(endpoints).await;
    let mut followers = Vec::new();
    for n in &cl.nodes {
        let mut o = ClientOptions::new([n.client.clone()]);
        o.retries_max = 0;
        followers.push(Client::connect(o).await.unwrap());
    }
    let trials = env_or("NACRE_SCRIPT_LIVE_TRIALS", 5);
    let mut samples_ms = Vec::new();
    for t in 0..trials {
        let source = format!("function v() return {t} end\n");
        let index = match c
            .execute(Request::ScriptPut {
                name: "probe".into(),
                source: Bytes::from(source),
            })
            .await
            .unwrap()
        {
            Response::Written { index, .. } => index,
            r => panic!("{r:?}"),
        };
        let acked = Instant::now();
        // A node runs the version it has applied: live there once its
        // applied index reaches the install's.
        for f in &followers {
            loop {
                if f.get_txid().await.unwrap() >= index {
                    break;
                }
                assert!(
                    acked.elapsed() < Duration::from_secs(10),
                    "install never applied"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        samples_ms.push(acked.elapsed().as_secs_f64() * 1000.0);
        // Every node now answers with the new version, read-only and local.
        for f in &followers {
            let r = f
                .with_consistency(nacre_client::Consistency::AtLeast(index))
                .call("probe", "v", vec![], None)
                .await
                .unwrap();
            assert_eq!(r.value, Some(Bytes::from(t.to_string())));
        }
    }
    samples_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        samples_ms[((samples_ms.len() as f64 * p).ceil() as usize).clamp(1, samples_ms.len()) - 1]
    };
    eprintln!(
        "install to live on all 3 nodes over {} installs: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        samples_ms.len(),
        pct(0.5),
        pct(0.9),
        samples_ms[samples_ms.len() - 1]
    );
    let _ = &cl.config;
}
