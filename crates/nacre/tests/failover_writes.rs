//! Writes across fail-overs: a 3-node cluster takes writes from 8
//! concurrent writers, each with a client of its own over all endpoints
//! with the default options, while its leader is killed (`kill -9`) again
//! and again, and restarted after each new leader has taken a write from
//! every writer. A write may fail only if an election outlasted its
//! timeout, so with the default timeout (10 s) none may fail; every
//! acknowledged write is read back at the end. The write latencies across
//! the fail-overs are reported, not asserted.
//!
//! `NACRE_FAILOVER_KILLS` kills (3 by default);
//! `NACRE_FAILOVER_TIMEOUT_MS` sets the writers' timeout, to see which
//! failures a shorter one brings. The measurement for docs/benchmarks.md:
//! `NACRE_FAILOVER_KILLS=20 cargo test --release -p nacre --test failover_writes -- --nocapture`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{wait_applied, Cluster};
use nacre_client::{Client, ClientError, ClientOptions};

const WRITERS: usize = 8;

/// One write as a writer saw it.
struct Write {
    writer: usize,
    n: u64,
    start: Instant,
    end: Instant,
    result: Result<u64, ClientError>,
}

type Log = Arc<Mutex<Vec<Write>>>;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn key(writer: usize, n: u64) -> Bytes {
    Bytes::from(format!("w{writer}/{n:08}"))
}

async fn writer(i: usize, opts: ClientOptions, stop: Arc<AtomicBool>, log: Log) {
    let c = Client::connect(opts).await.unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let result = c.set(key(i, n), n.to_string()).await;
        let end = Instant::now();
        log.lock().unwrap().push(Write {
            writer: i,
            n,
            start,
            end,
            result,
        });
        n += 1;
    }
}

/// Waits until every writer has had a write acknowledged that it started
/// after `at`: the cluster has a leader again and every client found it.
async fn every_writer_acknowledged_after(log: &Log, at: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let log = log.lock().unwrap();
            (0..WRITERS).all(|i| {
                log.iter()
                    .any(|w| w.writer == i && w.start > at && w.result.is_ok())
            })
        };
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no write acknowledged by every writer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_fails_across_leader_kills() {
    let kills = env("NACRE_FAILOVER_KILLS").unwrap_or(3) as usize;
    let mut cl = Cluster::start(3, "").await;
    let mut opts = ClientOptions::new(cl.endpoints());
    let default_timeout = opts.request_timeout_ms;
    opts.request_timeout_ms = env("NACRE_FAILOVER_TIMEOUT_MS").unwrap_or(default_timeout);
    // The first election is not a fail-over: writing starts after it.
    cl.leader().await;
    let stop = Arc::new(AtomicBool::new(false));
    let log: Log = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| tokio::spawn(writer(i, opts.clone(), stop.clone(), log.clone())))
        .collect();

    let mut killed_at = Vec::new();
    for k in 0..kills {
        // Writes flow through the current leader before it dies.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = cl.leader().await;
        cl.kill9(&leader);
        let at = Instant::now();
        killed_at.push(at);
        every_writer_acknowledged_after(&log, at).await;
        eprintln!("kill {k}: {leader} killed; every writer has written since");
        // Back, and caught up, before the next kill: a cluster with one
        // node behind would lose its quorum with the next leader.
        cl.restart(&leader);
        let index = (log.lock().unwrap().iter())
            .filter_map(|w| w.result.as_ref().ok().copied())
            .max()
            .unwrap_or(0);
        wait_applied(&cl.client_addr(&leader), index).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    report(&log, &killed_at, opts.request_timeout_ms);
    check_failures(&log, &killed_at, opts.request_timeout_ms);
    if opts.request_timeout_ms == default_timeout {
        let failed = log.iter().filter(|w| w.result.is_err()).count();
        assert_eq!(failed, 0, "writes failed with the default timeout");
    }
    read_back(&cl, &log).await;
}

/// For each kill, when the first write started after it was acknowledged:
/// until then the cluster took no write.
fn windows(log: &[Write], killed_at: &[Instant]) -> Vec<(Instant, Instant)> {
    killed_at
        .iter()
        .map(|&k| {
            let first = log
                .iter()
                .filter(|w| w.start > k && w.result.is_ok())
                .map(|w| w.end)
                .min()
                .expect("a write after every kill");
            (k, first)
        })
        .collect()
}

/// A failure is explained only by an election longer than the call's
/// timeout: a timeout, during a window without a leader that lasted longer
/// than that.
fn check_failures(log: &[Write], killed_at: &[Instant], timeout_ms: u64) {
    let timeout = Duration::from_millis(timeout_ms);
    let windows = windows(log, killed_at);
    let unexplained: Vec<String> = log
        .iter()
        .filter_map(|w| Some((w, w.result.as_ref().err()?)))
        .filter(|(w, e)| {
            let long_election = windows
                .iter()
                .any(|&(k, f)| w.start < f && w.end > k && f - k > timeout);
            !(matches!(e, ClientError::Timeout { .. }) && long_election)
        })
        .map(|(w, e)| {
            // Where the write started relative to the last kill before its
            // end (negative: before it).
            let kill = killed_at.iter().filter(|&&k| k <= w.end).max();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let when = kill.map_or("before any kill".to_string(), |&k| {
                let offset = ms(w.start.saturating_duration_since(k))
                    - ms(k.saturating_duration_since(w.start));
                format!("{offset:+.0} ms from the kill before it ended")
            });
            format!(
                "writer {} write {}: failed after {:.0} ms, started {when}: {e}",
                w.writer,
                w.n,
                ms(w.end - w.start),
            )
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "{} writes failed with no election longer than their timeout; the first ones:\n{}",
        unexplained.len(),
        unexplained[..unexplained.len().min(20)].join("\n")
    );
}

fn percentiles(mut ms: Vec<f64>) -> String {
    if ms.is_empty() {
        return "none".into();
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    format!(
        "p50 {:.1} ms, p99 {:.0} ms, max {:.0} ms",
        at(0.50),
        at(0.99),
        ms[ms.len() - 1]
    )
}

fn report(log: &[Write], killed_at: &[Instant], timeout_ms: u64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let windows = windows(log, killed_at);
    let failed = log.iter().filter(|w| w.result.is_err()).count();
    let all: Vec<f64> = log.iter().map(|w| ms(w.end - w.start)).collect();
    // The writes a fail-over held up: in flight at some point between a
    // kill and the first acknowledgement after it.
    let held: Vec<f64> = log
        .iter()
        .filter(|w| windows.iter().any(|&(k, f)| w.start < f && w.end > k))
        .map(|w| ms(w.end - w.start))
        .collect();
    let gaps: Vec<f64> = windows.iter().map(|&(k, f)| ms(f - k)).collect();
    eprintln!(
        "{} kills, {} writers, timeout {timeout_ms} ms: {failed} of {} writes failed",
        killed_at.len(),
        WRITERS,
        log.len()
    );
    eprintln!("  every write: {}", percentiles(all));
    eprintln!(
        "  the {} writes in flight during a fail-over: {}",
        held.len(),
        percentiles(held)
    );
    eprintln!(
        "  kill to the first acknowledged write: {}",
        percentiles(gaps)
    );
}

/// Every acknowledged write is there, with its value.
async fn read_back(cl: &Cluster, log: &[Write]) {
    let c = cl.client(cl.endpoints()).await;
    let acked: Vec<&Write> = log.iter().filter(|w| w.result.is_ok()).collect();
    for chunk in acked.chunks(500) {
        let keys = chunk.iter().map(|w| key(w.writer, w.n)).collect();
        let values = c.multi_get_option(keys).await.unwrap();
        for (w, v) in chunk.iter().zip(values) {
            assert_eq!(
                v,
                Some(Bytes::from(w.n.to_string())),
                "writer {} write {} was acknowledged",
                w.writer,
                w.n
            );
        }
    }
}
