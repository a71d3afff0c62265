//! Fail-over time of a 3-node cluster with default settings: from kill -9
//! of the leader to the first acknowledged write. Each trial kills the
//! current leader, measures, restarts it and waits for the cluster to
//! converge. By default two trials run (to show that fail-over works);
//! the measurement for docs/benchmarks.md is
//! `NACRE_FAILOVER_TRIALS=20 cargo test --release -p nacre --test failover_time -- --nocapture`.
//! No timing is asserted: speed is reported, not tested.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ServerProc;
use nacre_client::{Client, ClientOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_fail_over_time() {
    let trials: usize = std::env::var("NACRE_FAILOVER_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "");
    let endpoints: Vec<String> = cfg.nodes.iter().map(|n| n.client.clone()).collect();
    let mut procs: BTreeMap<String, ServerProc> = cfg
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                ServerProc::start_member(&config, &n.name, &[]),
            )
        })
        .collect();
    let mut opts = ClientOptions::new(endpoints.clone());
    // Short per-attempt timeouts so a write stuck on the dead leader is
    // retried at once; the loop below retries until one is acknowledged.
    opts.request_timeout_ms = 300;
    opts.retries_max = 2;
    let mut samples_ms = Vec::new();
    for trial in 0..trials {
        let c = Client::connect(opts.clone()).await.unwrap();
        // A leader that has taken writes.
        let leader = loop {
            if c.set("warm", trial.to_string()).await.is_ok() {
                if let Ok(Some(l)) = c.who_master().await {
                    break l;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        procs.remove(&leader).unwrap().kill9();
        let killed = Instant::now();
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            if c.set(format!("after-{trial}"), attempt.to_string())
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no write acknowledged after the kill"
            );
        }
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "trial {trial}: leader {leader} killed, first write acknowledged after {ms:.0} ms"
        );
        samples_ms.push(ms);
        procs.insert(
            leader.clone(),
            ServerProc::start_member(&config, &leader, &[]),
        );
        // Let the restarted node catch up before the next trial.
        let idx = c.nop().await.unwrap();
        let back = &cfg.nodes.iter().find(|n| n.name == leader).unwrap().client;
        common::cluster::wait_applied(back, idx).await;
    }
    samples_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        samples_ms[((samples_ms.len() as f64 * p).ceil() as usize).clamp(1, samples_ms.len()) - 1]
    };
    eprintln!(
        "fail-over over {} trials: p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        samples_ms.len(),
        pct(0.50),
        pct(0.99),
        samples_ms[0],
        samples_ms[samples_ms.len() - 1]
    );
    assert_eq!(samples_ms.len(), trials);
}
