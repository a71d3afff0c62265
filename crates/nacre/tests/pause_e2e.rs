//! A leader's process stopped (SIGSTOP) and resumed (SIGCONT) while the
//! others elect a new leader and take a write: a consistent read sent to
//! the old leader after that write was acknowledged must return the new
//! value or fail with a typed error, never the value from before.
//! (Issue: the lease counted in ticks, which stop with the process, so a
//! resumed leader answered from its old state within a millisecond.)

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use nacre_client::{ClientError, Consistency};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;

/// What one round's read of the old leader came back with.
enum Seen {
    New,
    Refused,
    Stale(String),
}

fn judge(got: Result<Option<Bytes>, ClientError>, after: &Bytes) -> Seen {
    match got {
        Ok(Some(v)) if v == *after => Seen::New,
        Ok(v) => Seen::Stale(format!("{v:?}")),
        // A typed refusal: not the leader, no quorum, or out of time.
        Err(e) if e.is_not_master() || e.is_unavailable() || e.is_timeout() => Seen::Refused,
        Err(e) => panic!("an untyped failure: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_leader_never_answers_with_an_overwritten_value() {
    let cl = Cluster::start(3, "").await;
    // Default timing: elections after 10 ticks of 50 ms without a leader.
    let election_ms = cl.cfg.tick_ms * cl.cfg.election_ticks as u64;
    let seed: u64 = std::env::var("NACRE_PAUSE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("NACRE_PAUSE_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let all = cl.client(cl.endpoints()).await;
    let (mut new, mut refused, mut during) = (0, 0, 0);
    for round in 0..ROUNDS {
        let key = Bytes::from(format!("k{round}"));
        let before = Bytes::from(format!("before-{round}"));
        let after = Bytes::from(format!("after-{round}"));
        all.set(key.clone(), before.clone()).await.unwrap();
        // 1. Client A reads k from the leader L and gets `before`.
        let (leader, a) = loop {
            let l = cl.leader().await;
            let a = cl.local(&l, Consistency::Consistent).await;
            if a.get(key.clone()).await.ok() == Some(before.clone()) {
                break (l, a);
            }
        };
        // 2. L is stopped for 0.5 to 3 election timeouts.
        let pause = Duration::from_millis(rng.random_range(election_ms / 2..=3 * election_ms));
        cl.pause(&leader);
        let resume_at = Instant::now() + pause;
        // 3. The others elect a leader and acknowledge B's write.
        // B asks the two others in turn and follows no redirect: until
        // they elect a new leader they name L, which would hold the write.
        let mut bs = Vec::new();
        for n in cl.names().into_iter().filter(|n| *n != leader) {
            bs.push(cl.local(&n, Consistency::Consistent).await);
        }
        let (k, v) = (key.clone(), after.clone());
        let mut write = tokio::spawn(async move {
            for b in bs.iter().cycle() {
                match b.set(k.clone(), v.clone()).await {
                    Ok(index) => return index,
                    Err(e) if e.is_not_master() || matches!(e, ClientError::NoLeader(_)) => {}
                    Err(e) => panic!("B's write failed: {e:?}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            unreachable!("cycle never ends")
        });
        let acked = tokio::time::timeout_at(resume_at.into(), &mut write).await;
        let seen = if let Ok(w) = acked {
            w.unwrap();
            during += 1;
            // 4. After the acknowledgement, A asks L, still stopped.
            let (a2, k) = (a.clone(), key.clone());
            let read = tokio::spawn(async move { a2.get_option(k).await });
            // 5. L resumes (at least a little later, so the read waits).
            tokio::time::sleep_until(
                (resume_at.max(Instant::now() + Duration::from_millis(20))).into(),
            )
            .await;
            cl.resume(&leader);
            judge(read.await.unwrap(), &after)
        } else {
            // The pause ended first, and L may still lead: B's write goes
            // through whoever leads now (it writes the same value if the
            // loop's last try landed after all); A reads after.
            cl.resume(&leader);
            write.abort();
            all.set(key.clone(), after.clone()).await.unwrap();
            judge(a.get_option(key.clone()).await, &after)
        };
        match seen {
            Seen::New => new += 1,
            Seen::Refused => refused += 1,
            Seen::Stale(v) => panic!(
                "round {round} (seed {seed}, pause {pause:?}): the old leader {leader} answered \
                 {v} after {after:?} was acknowledged"
            ),
        }
    }
    eprintln!("{ROUNDS} rounds: {during} writes acknowledged during the pause; reads: {new} new, {refused} refused");
    // The dangerous case must have happened, or the test proved nothing.
    assert!(
        during >= 3,
        "only {during} of {ROUNDS} writes landed during a pause"
    );
}
