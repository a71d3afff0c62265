//! The coordination workloads, written once over [`CoordTarget`]: watch
//! fan-out (events delivered and notification latency), idle watchers and
//! kept-alive leases (server memory and CPU), and lock cycles. Each system
//! (`coord_etcd`, `coord_nacre`) implements the target with its own client
//! recipe; what is timed and counted is the same code for both.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nacre_loadgen::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Keys of a fan-out run: `<prefix><seq>`, `seq` in decimal.
pub fn seq_key(prefix: &[u8], seq: u64) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(seq.to_string().as_bytes());
    Bytes::from(k)
}

/// The sequence number of a fan-out key (`None` for any other key).
pub fn key_seq(prefix: &[u8], key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(prefix)?)
        .ok()?
        .parse()
        .ok()
}

/// When each put of a fan-out run was sent, on the one clock the writer
/// and the watchers share.
pub struct Sent {
    base: Instant,
    /// Nanoseconds after `base` plus one (0: not sent), by sequence number.
    at_ns: Vec<AtomicU64>,
    /// Nanoseconds after `base` at which the measured window ends.
    window_end_ns: AtomicU64,
    /// Events recorded so far, all receivers.
    delivered: AtomicU64,
}

impl Sent {
    pub fn new(puts: usize) -> Sent {
        Sent {
            base: Instant::now(),
            at_ns: (0..puts).map(|_| AtomicU64::new(0)).collect(),
            window_end_ns: AtomicU64::new(u64::MAX),
            delivered: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn mark(&self, seq: u64) {
        if let Some(a) = usize::try_from(seq).ok().and_then(|i| self.at_ns.get(i)) {
            a.store(self.now_ns() + 1, Ordering::Release);
        }
    }

    pub fn end_window(&self) {
        self.window_end_ns.store(self.now_ns(), Ordering::Release);
    }
}

/// What one receiving task saw: events, how many of them arrived before
/// the writer stopped, and put-to-delivery latencies in microseconds.
pub struct Tally {
    pub events: u64,
    pub in_window: u64,
    pub unknown: u64,
    pub latency_us: Histogram<u64>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            events: 0,
            in_window: 0,
            unknown: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
        }
    }

    /// One event of key `seq`, delivered now.
    pub fn record(&mut self, sent: &Sent, seq: Option<u64>) {
        let now = sent.now_ns();
        let at = seq
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|i| sent.at_ns.get(i))
            .map_or(0, |a| a.load(Ordering::Acquire));
        if at == 0 {
            self.unknown += 1;
            return;
        }
        self.events += 1;
        sent.delivered.fetch_add(1, Ordering::Relaxed);
        if now <= sent.window_end_ns.load(Ordering::Acquire) {
            self.in_window += 1;
        }
        let us = now.saturating_sub(at - 1) / 1000;
        self.latency_us.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, o: &Tally) {
        self.events += o.events;
        self.in_window += o.in_window;
        self.unknown += o.unknown;
        self.latency_us.add(&o.latency_us).expect("same bounds");
    }
}

/// Something kept open on a system (watchers, kept-alive leases) until
/// it is dropped or ended.
pub type Holder = Box<dyn Send>;

/// A system under test, through its own client.
pub trait CoordTarget: Clone + Send + Sync + 'static {
    /// What a held lock is.
    type Guard: Send;

    fn name(&self) -> &'static str;

    /// One durable put.
    fn put(&self, key: Bytes, value: Bytes) -> impl Future<Output = Result<(), String>> + Send;

    /// Starts `n` watchers of `prefix` and returns once all are
    /// established; their receiving tasks record every event into their
    /// tally until `stop` turns true, then return it.
    fn watchers(
        &self,
        prefix: Bytes,
        n: usize,
        sent: Arc<Sent>,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Vec<JoinHandle<Tally>>, String>> + Send;

    /// `n` watchers, one on each key `<prefix><i>`, that see no change.
    fn idle_watchers(
        &self,
        prefix: Bytes,
        n: usize,
    ) -> impl Future<Output = Result<Holder, String>> + Send;

    /// Grants `n` leases of `ttl` and keeps them alive, as the system's
    /// client does, until the holder is dropped. Returns the lease ids too.
    fn kept_leases(
        &self,
        n: usize,
        ttl: Duration,
    ) -> impl Future<Output = Result<(Holder, Vec<i64>), String>> + Send;

    fn revoke(&self, lease: i64) -> impl Future<Output = Result<(), String>> + Send;

    /// Takes the lock `name` with a session lease of `ttl`.
    fn lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Self::Guard, String>> + Send;

    /// Deletes the lock's key and revokes its lease.
    fn unlock(&self, guard: Self::Guard) -> impl Future<Output = Result<(), String>> + Send;
}

/// Latency percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// Settings of the fan-out workload.
#[derive(Debug, Clone, Copy)]
pub struct FanoutSpec {
    pub watchers: usize,
    pub rate_per_s: u32,
    pub duration: Duration,
    /// How long to wait after the last put for the events still coming.
    pub drain: Duration,
    pub value_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub bench: &'static str,
    pub target: &'static str,
    pub watchers: usize,
    pub rate_per_s: u32,
    pub duration_s: f64,
    pub puts_sent: u64,
    pub put_errors: u64,
    /// Events the watchers should get: puts acknowledged × watchers.
    pub events_expected: u64,
    /// Events delivered, all watchers, by the end of the drain.
    pub events: u64,
    /// Events delivered while the writer ran, per second of the run.
    pub events_per_s: f64,
    pub latency: Percentiles,
    /// Put sent → acknowledged, the writer's puts.
    pub put_latency: Percentiles,
    pub setup_s: f64,
}

/// Puts `<prefix><seq>` at a fixed rate (each on its own task, so a slow
/// put does not hold the next back) for `duration`; returns the number
/// sent, the number that failed, and the acknowledged puts' latencies.
async fn write_at_rate<T: CoordTarget>(
    t: &T,
    prefix: &Bytes,
    spec: &FanoutSpec,
    sent: &Arc<Sent>,
) -> (u64, u64, Histogram<u64>) {
    let period = Duration::from_secs_f64(1.0 / f64::from(spec.rate_per_s.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = tokio::time::Instant::now() + spec.duration;
    let value = Bytes::from(vec![b'v'; spec.value_size]);
    let mut puts = Vec::new();
    let mut seq = 0;
    while tokio::time::Instant::now() < end && (seq as usize) < sent.at_ns.len() {
        tick.tick().await;
        let (t, key, value, sent) = (t.clone(), seq_key(prefix, seq), value.clone(), sent.clone());
        puts.push(tokio::spawn(async move {
            sent.mark(seq);
            let start = Instant::now();
            t.put(key, value).await.map(|()| start.elapsed())
        }));
        seq += 1;
    }
    sent.end_window();
    let mut errors = 0;
    let mut h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    for p in puts {
        match p.await {
            Ok(Ok(d)) => {
                h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1))
            }
            _ => errors += 1,
        }
    }
    (seq, errors, h)
}

/// One fan-out run: `spec.watchers` watchers of a fresh prefix, a writer
/// at `spec.rate_per_s` for `spec.duration`.
pub async fn fanout<T: CoordTarget>(
    t: &T,
    run: u64,
    spec: &FanoutSpec,
) -> Result<FanoutResult, String> {
    let prefix = Bytes::from(format!("fan/{run}/"));
    let puts_max = (f64::from(spec.rate_per_s) * spec.duration.as_secs_f64()) as usize + 16;
    let sent = Arc::new(Sent::new(puts_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let setup = Instant::now();
    let tasks = t
        .watchers(prefix.clone(), spec.watchers, sent.clone(), stop_rx)
        .await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let started = Instant::now();
    let (puts_sent, put_errors, put_us) = write_at_rate(t, &prefix, spec, &sent).await;
    let window_s = started.elapsed().as_secs_f64();
    let expected = (puts_sent - put_errors) * spec.watchers as u64;
    // Wait for the events still on their way, up to the drain time.
    let drain_end = Instant::now() + spec.drain;
    while sent.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut total = Tally::new();
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| format!("a watcher task failed: {e}"))?;
        total.merge(&tally);
    }
    Ok(FanoutResult {
        bench: "fanout",
        target: t.name(),
        watchers: spec.watchers,
        rate_per_s: spec.rate_per_s,
        duration_s: window_s,
        puts_sent,
        put_errors,
        events_expected: expected,
        events: total.events,
        events_per_s: total.in_window as f64 / window_s,
        latency: Percentiles::of(&total.latency_us),
        put_latency: Percentiles::of(&put_us),
        setup_s,
    })
}

/// A process's resident memory and CPU time, from /proc.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    pub rss_kb: u64,
    /// utime + stime, in clock ticks (USER_HZ, 100 on Linux/x86).
    pub cpu_ticks: u64,
}

/// USER_HZ: the unit of /proc/<pid>/stat's times on Linux.
pub const TICKS_PER_S: f64 = 100.0;

pub fn proc_sample(pid: u32) -> Result<ProcSample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    Ok(ProcSample {
        rss_kb,
        cpu_ticks: stat_cpu_ticks(&stat).ok_or_else(|| format!("bad /proc/{pid}/stat"))?,
    })
}

/// utime (field 14) + stime (field 15) of a /proc/<pid>/stat line; the
/// command name (field 2) may hold spaces, so count after its `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 is f[0], so field n is f[n - 3].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The server's CPU seconds per second over `interval`, and its RSS at
/// the end.
async fn measure(pid: u32, interval: Duration) -> Result<(f64, u64), String> {
    let a = proc_sample(pid)?;
    let t = Instant::now();
    tokio::time::sleep(interval).await;
    let b = proc_sample(pid)?;
    let cpu_s = (b.cpu_ticks - a.cpu_ticks) as f64 / TICKS_PER_S;
    Ok((cpu_s / t.elapsed().as_secs_f64(), b.rss_kb))
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub bench: &'static str,
    pub target: &'static str,
    pub watchers: usize,
    pub leases: usize,
    pub lease_ttl_s: u64,
    pub interval_s: f64,
    pub settle_s: f64,
    pub rss_kb: [u64; 3],
    /// Server CPU seconds per second: idle, with the watchers, with the
    /// watchers and the kept-alive leases.
    pub cpu_per_s: [f64; 3],
    pub bytes_per_watcher: f64,
    pub bytes_per_lease: f64,
    /// Server CPU microseconds per second for each watcher / lease.
    pub cpu_us_per_s_per_watcher: f64,
    pub cpu_us_per_s_per_lease: f64,
    pub setup_watchers_s: f64,
    pub setup_leases_s: f64,
}

/// Settings of the idle workload.
#[derive(Debug, Clone, Copy)]
pub struct IdleSpec {
    pub pid: u32,
    pub watchers: usize,
    pub leases: usize,
    pub lease_ttl: Duration,
    pub interval: Duration,
    pub settle: Duration,
}

/// Idle server, then `watchers` idle watchers, then `leases` kept-alive
/// leases on top: RSS and CPU after each step. Revokes the leases after.
pub async fn idle<T: CoordTarget>(t: &T, run: u64, s: &IdleSpec) -> Result<IdleResult, String> {
    tokio::time::sleep(s.settle).await;
    let (cpu0, rss0) = measure(s.pid, s.interval).await?;
    let start = Instant::now();
    let watchers = t
        .idle_watchers(Bytes::from(format!("idle/{run}/")), s.watchers)
        .await?;
    let setup_watchers_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(s.settle).await;
    let (cpu1, rss1) = measure(s.pid, s.interval).await?;
    let start = Instant::now();
    let (kept, ids) = t.kept_leases(s.leases, s.lease_ttl).await?;
    let setup_leases_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(s.settle).await;
    let (cpu2, rss2) = measure(s.pid, s.interval).await?;
    drop(watchers);
    drop(kept);
    revoke_all(t, ids).await?;
    let per = |a: u64, b: u64, n: usize| (b as f64 - a as f64) * 1024.0 / n.max(1) as f64;
    let per_cpu = |a: f64, b: f64, n: usize| (b - a) * 1e6 / n.max(1) as f64;
    Ok(IdleResult {
        bench: "idle",
        target: t.name(),
        watchers: s.watchers,
        leases: s.leases,
        lease_ttl_s: s.lease_ttl.as_secs(),
        interval_s: s.interval.as_secs_f64(),
        settle_s: s.settle.as_secs_f64(),
        rss_kb: [rss0, rss1, rss2],
        cpu_per_s: [cpu0, cpu1, cpu2],
        bytes_per_watcher: per(rss0, rss1, s.watchers),
        bytes_per_lease: per(rss1, rss2, s.leases),
        cpu_us_per_s_per_watcher: per_cpu(cpu0, cpu1, s.watchers),
        cpu_us_per_s_per_lease: per_cpu(cpu1, cpu2, s.leases),
        setup_watchers_s,
        setup_leases_s,
    })
}

/// Runs `f` over `items` with at most `width` in flight.
pub async fn bounded<I, F, Fut, R>(items: Vec<I>, width: usize, f: F) -> Result<Vec<R>, String>
where
    I: Send + 'static,
    R: Send + 'static,
    F: Fn(I) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, String>> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(
        items.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let n = queue.lock().expect("not poisoned").len();
    let mut tasks = Vec::new();
    for _ in 0..width.max(1) {
        let (queue, f) = (queue.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().expect("not poisoned").pop();
                let Some((i, item)) = next else { break };
                out.push((i, f(item).await?));
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for task in tasks {
        for (i, r) in task.await.map_err(|e| e.to_string())?? {
            all[i] = Some(r);
        }
    }
    Ok(all.into_iter().flatten().collect())
}

async fn revoke_all<T: CoordTarget>(t: &T, ids: Vec<i64>) -> Result<(), String> {
    let t = t.clone();
    bounded(ids, 64, move |id| {
        let t = t.clone();
        async move { t.revoke(id).await }
    })
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, Serialize)]
pub struct LockResult {
    pub bench: &'static str,
    pub target: &'static str,
    pub contenders: usize,
    pub duration_s: f64,
    pub cycles: u64,
    pub cycles_per_s: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Times two contenders held the lock at once (must be 0).
    pub overlaps: u64,
    /// From the start of `lock` to holding it.
    pub acquire: Percentiles,
}

struct LockShared {
    held: AtomicBool,
    overlaps: AtomicU64,
    stop: AtomicBool,
}

/// One contender: lock, check it alone holds it, unlock, until stopped.
async fn contender<T: CoordTarget>(
    t: T,
    name: String,
    ttl: Duration,
    shared: Arc<LockShared>,
) -> (u64, u64, Option<String>, Histogram<u64>) {
    let mut h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let (mut cycles, mut errors, mut first) = (0, 0, None);
    while !shared.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let r = match t.lock(&name, ttl).await {
            Ok(g) => {
                h.saturating_record((start.elapsed().as_micros() as u64).max(1));
                if shared.held.swap(true, Ordering::AcqRel) {
                    shared.overlaps.fetch_add(1, Ordering::Relaxed);
                }
                shared.held.store(false, Ordering::Release);
                t.unlock(g).await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => cycles += 1,
            Err(e) => {
                errors += 1;
                first.get_or_insert(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (cycles, errors, first, h)
}

/// `contenders` tasks taking and releasing one lock for `duration`.
pub async fn lock_cycles<T: CoordTarget>(
    t: &T,
    run: u64,
    contenders: usize,
    duration: Duration,
    ttl: Duration,
) -> Result<LockResult, String> {
    let shared = Arc::new(LockShared {
        held: AtomicBool::new(false),
        overlaps: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let name = format!("lock/{run}");
    let start = Instant::now();
    let tasks: Vec<_> = (0..contenders)
        .map(|_| tokio::spawn(contender(t.clone(), name.clone(), ttl, shared.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let (mut cycles, mut errors, mut first_error) = (0, 0, None);
    for task in tasks {
        let (c, e, f, th) = task.await.map_err(|e| format!("a contender failed: {e}"))?;
        cycles += c;
        errors += e;
        first_error = first_error.or(f);
        h.add(&th).expect("same bounds");
    }
    // The last cycles finish after the stop: count the whole time.
    let duration_s = start.elapsed().as_secs_f64();
    Ok(LockResult {
        bench: "lock",
        target: t.name(),
        contenders,
        duration_s,
        cycles,
        cycles_per_s: cycles as f64 / duration_s,
        errors,
        first_error,
        overlaps: shared.overlaps.load(Ordering::Relaxed),
        acquire: Percentiles::of(&h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_keys_carry_their_sequence_number() {
        let k = seq_key(b"fan/3/", 1234);
        assert_eq!(&k[..], b"fan/3/1234");
        assert_eq!(key_seq(b"fan/3/", &k), Some(1234));
        assert_eq!(key_seq(b"fan/4/", &k), None);
        assert_eq!(key_seq(b"fan/3/", b"fan/3/x"), None);
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 36 0 0 20 0 9 0";
        assert_eq!(stat_cpu_ticks(stat), Some(286));
        assert_eq!(stat_cpu_ticks("nonsense"), None);
    }

    #[test]
    fn tallies_count_known_events_in_and_after_the_window() {
        let sent = Sent::new(4);
        sent.mark(0);
        let mut t = Tally::new();
        t.record(&sent, Some(0));
        t.record(&sent, Some(1)); // never sent
        t.record(&sent, None);
        sent.end_window();
        t.record(&sent, Some(0));
        assert_eq!((t.events, t.in_window, t.unknown), (2, 1, 2));
        let mut all = Tally::new();
        all.merge(&t);
        assert_eq!(all.latency_us.len(), 2);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = proc_sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0);
    }
}
