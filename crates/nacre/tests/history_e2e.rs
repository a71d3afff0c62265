//! The simulator's linearizability checker over real processes: three
//! `nacre serve` processes, real clients doing guarded writes and
//! consistent reads of a few keys, and a nemesis that kills nodes with
//! `kill -9`, stops and resumes them (SIGSTOP/SIGCONT) and cuts them off
//! through the peer proxy. Every call is recorded with its real start and
//! end; the history must be linearizable, and the replicas must agree at
//! the end. A stale read planted into the recorded history must be caught,
//! so the check is shown able to fail on what real clients record.
//!
//! `NACRE_HISTORY_SECS` (default 20) sets how long the workload runs;
//! `NACRE_HISTORY_SEED` replays the nemesis's and the clients' choices.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use nacre_client::{Client, ClientError, Consistency};
use nacre_proto::{Batch, ErrorCode, Guard, Op};
use nacre_sim::checker::{self, Call, OpKind, OpValue, Verdict};
use nacre_sim::model::WriteResult;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 5;
const CLIENTS: u64 = 4;

/// Calls as clients saw them, in microseconds since the test began.
struct Recorder {
    t0: Instant,
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    fn push(&self, call: Call) {
        self.calls.lock().push(call);
    }
}

fn keys() -> Vec<Bytes> {
    (0..KEYS).map(|i| Bytes::from(format!("k{i}"))).collect()
}

/// What a write's reply says happened. A refusal with a key (a guard that
/// did not hold, a delete of nothing) is definite; any other failure may
/// or may not have applied, so the write stays open.
fn write_result(r: Result<nacre_client::Written, ClientError>) -> Option<WriteResult> {
    match r {
        Ok(w) => Some(WriteResult::Applied {
            prev: w.prev,
            count: w.count,
        }),
        Err(ClientError::Server(e))
            if matches!(e.code, ErrorCode::AssertionFailed | ErrorCode::NotFound) =>
        {
            e.key.map(|key| WriteResult::Refused { code: e.code, key })
        }
        Err(_) => None,
    }
}

/// A random guarded batch over the keys, as the simulator's workload sends.
fn random_batch(rng: &mut StdRng, seen: &BTreeMap<Bytes, Option<Bytes>>, v: Bytes) -> Batch {
    let ks = keys();
    let k = ks[rng.random_range(0..KEYS)].clone();
    match rng.random_range(0..100) {
        0..=49 => Batch {
            guards: vec![],
            ops: vec![Op::Set(k, v)],
        },
        50..=69 => Batch {
            guards: vec![],
            ops: vec![Op::Remove(k)],
        },
        _ => {
            let guard = match seen.get(&k).cloned().flatten() {
                Some(value) => Guard::ValueEquals(k, value),
                None => Guard::Absent(k),
            };
            let (k2, k3) = (
                ks[rng.random_range(0..KEYS)].clone(),
                ks[rng.random_range(0..KEYS)].clone(),
            );
            Batch {
                guards: vec![guard],
                ops: vec![Op::Set(k2, v), Op::Remove(k3)],
            }
        }
    }
}

/// One client: writes and consistent reads until `until`, each recorded.
async fn client_loop(id: u64, c: Client, rec: Arc<Recorder>, until: Instant, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ id);
    let mut seen: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    let mut done = 0;
    for seq in 0u64.. {
        if Instant::now() >= until {
            break;
        }
        let ks = keys();
        let k = ks[rng.random_range(0..KEYS)].clone();
        let invoke_us = rec.now_us();
        let (kind, value) = if rng.random_bool(0.5) {
            let batch = random_batch(&mut rng, &seen, Bytes::from(format!("c{id}-{seq}")));
            let r = write_result(c.batch(batch.clone()).await);
            (OpKind::Write(batch), r.map(OpValue::Write))
        } else {
            let got = c.get_option(k.clone()).await.ok();
            if let Some(v) = &got {
                seen.insert(k.clone(), v.clone());
            }
            (OpKind::Get(k), got.map(OpValue::Get))
        };
        let is_read = matches!(kind, OpKind::Get(_));
        if value.is_none() && is_read {
            continue; // A failed read changed nothing and says nothing.
        }
        done += u64::from(value.is_some());
        let complete_us = value.as_ref().map(|_| rec.now_us());
        rec.push(Call {
            client: id as usize,
            invoke_us,
            complete_us,
            kind,
            value,
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
    done
}

#[derive(Debug, Default)]
struct Faults {
    kills: u32,
    pauses: u32,
    partitions: u32,
}

/// One fault at a time, healed before the next, so a majority is up
/// between faults: kill -9 and restart, SIGSTOP and SIGCONT (the leader
/// half the time, for 0.5–3 election timeouts), or a node cut off.
async fn nemesis(cl: &mut Cluster, until: Instant, rng: &mut StdRng) -> Faults {
    let election_ms = cl.cfg.tick_ms * cl.cfg.election_ticks as u64;
    let mut f = Faults::default();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_200))).await;
        let names = cl.names();
        let mut victim = names[rng.random_range(0..names.len())].clone();
        match rng.random_range(0..3) {
            0 => {
                cl.kill9(&victim);
                f.kills += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
                cl.restart(&victim);
            }
            1 => {
                if rng.random_bool(0.5) {
                    victim = cl.leader().await;
                }
                cl.pause(&victim);
                f.pauses += 1;
                let ms = rng.random_range(election_ms / 2..=3 * election_ms);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                cl.resume(&victim);
            }
            _ => {
                cl.isolate(&victim);
                f.partitions += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
                cl.heal();
            }
        }
    }
    f
}

/// Every node reaches the leader's last index and holds the same pairs.
async fn assert_converged(cl: &Cluster) {
    let all = cl.client(cl.endpoints()).await;
    let last = all.nop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dumps = Vec::new();
    for name in cl.names() {
        let c = cl.local(&name, Consistency::Any).await;
        while c.get_txid().await.unwrap_or(0) < last {
            assert!(
                Instant::now() < deadline,
                "{name} did not catch up to {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dumps.push(
            c.range_entries(None, true, None, true, 10_000)
                .await
                .unwrap(),
        );
    }
    assert!(dumps.iter().all(|d| d == &dumps[0]), "replicas differ");
}

/// A copy of `calls` in which one read returns the value from before a
/// write that completed before the read began: never linearizable (every
/// written value is unique, so nothing else could have put it back).
fn plant_stale_read(calls: &[Call]) -> Option<Vec<Call>> {
    let mut out = calls.to_vec();
    for (i, read) in calls.iter().enumerate() {
        let (OpKind::Get(k), Some(OpValue::Get(Some(v)))) = (&read.kind, &read.value) else {
            continue;
        };
        let earlier = calls.iter().find_map(|w| match (&w.kind, &w.value) {
            (
                OpKind::Write(b),
                Some(OpValue::Write(WriteResult::Applied { prev: Some(p), .. })),
            ) if b.guards.is_empty()
                && b.ops == [Op::Set(k.clone(), v.clone())]
                && w.complete_us.is_some_and(|t| t < read.invoke_us) =>
            {
                Some(p.clone())
            }
            _ => None,
        });
        if let Some(prev) = earlier {
            out[i].value = Some(OpValue::Get(Some(prev)));
            return Some(out);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_under_kills_pauses_and_partitions_see_a_linearizable_history() {
    let secs: u64 = std::env::var("NACRE_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("NACRE_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("NACRE_HISTORY_SEED={seed} NACRE_HISTORY_SECS={secs}");
    let mut cl = Cluster::start(3, "request_timeout_ms = 5000").await;
    cl.leader().await;
    let rec = Arc::new(Recorder {
        t0: Instant::now(),
        calls: Mutex::new(Vec::new()),
    });
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let c = cl.client(cl.endpoints()).await;
        tasks.push(tokio::spawn(client_loop(id, c, rec.clone(), until, seed)));
    }
    let faults = nemesis(&mut cl, until, &mut StdRng::seed_from_u64(seed)).await;
    let mut completed = 0;
    for t in tasks {
        completed += t.await.unwrap();
    }
    cl.heal();
    assert_converged(&cl).await;
    let calls = rec.calls.lock().clone();
    eprintln!("{faults:?}; {} calls, {completed} completed", calls.len());
    assert!(faults.kills + faults.pauses + faults.partitions > 0);
    assert!(completed > 100, "only {completed} calls completed");
    let verdict = checker::check(&calls, &keys(), 5_000_000);
    assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
    let planted = plant_stale_read(&calls).expect("a read of a plain set");
    let verdict = checker::check(&planted, &keys(), 5_000_000);
    assert!(
        matches!(verdict, Verdict::Violation(_)),
        "a planted stale read was not caught: {verdict:?}"
    );
}
