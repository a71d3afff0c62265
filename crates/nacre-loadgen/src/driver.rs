//! The closed-loop driver: N client tasks, each with one operation in
//! flight, over M connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nacre_client::Consistency;
use tokio::time::Instant;

use crate::histogram::Latencies;
use crate::report::Report;
use crate::workload::{consistency_name, Kind, Op, OpGen, Workload};
use crate::{RunError, Target, TargetError};

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long (plus the warm-up).
    Duration(Duration),
    /// After this many operations in all.
    Ops(u64),
}

/// Whether to draw a progress bar on stderr (only drawn on a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Hidden,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Client tasks (each keeps one operation in flight).
    pub clients: usize,
    pub stop: Stop,
    /// With `Stop::Duration`: operations that start in this first stretch
    /// are not measured.
    pub warmup: Duration,
    pub progress: Progress,
    /// Points of the latency distribution to keep in the report (0: none).
    pub cdf_points: usize,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            clients: 1,
            stop: Stop::Duration(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            progress: Progress::Bar,
            cdf_points: 0,
        }
    }
}

#[derive(Default)]
struct Shared {
    issued: AtomicU64,
    done: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<TargetError>>,
}

impl Shared {
    fn fail(&self, e: TargetError) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let mut f = self.first_error.lock().expect("lock");
        if f.is_none() {
            *f = Some(e);
        }
        // A target that only fails (down, misconfigured) ends the run
        // rather than spinning on errors.
        if n >= 1_000 && self.ok.load(Ordering::Relaxed) < n {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

async fn exec<T: Target>(t: &T, op: Op, c: Consistency) -> Result<bool, TargetError> {
    match op {
        Op::Put(k, v) => t.put(k, v).await.map(|_| true),
        Op::Get(k) => t.get(k, c).await,
        Op::Sequence(pairs) => t.sequence(pairs).await.map(|_| true),
        Op::Call(k) => t.call(k).await.map(|_| true),
    }
}

fn bar(progress: Progress, len: u64, unit: &str) -> ProgressBar {
    if progress == Progress::Hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let tmpl =
        format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&tmpl) {
        pb.set_style(style);
    }
    pb
}

/// Writes keys `0..w.keys` (in transactions of up to 100 keys, with up to
/// `concurrency` in flight) so that reads find them. Not measured.
pub async fn preload<T: Target>(
    targets: &[T],
    w: &Workload,
    concurrency: usize,
    progress: Progress,
) -> Result<(), RunError> {
    w.validate()?;
    if targets.is_empty() {
        return Err(RunError::NoConnections);
    }
    const CHUNK: u64 = 100;
    let chunks = w.keys.div_ceil(CHUNK);
    let next = Arc::new(AtomicU64::new(0));
    let pb = bar(progress, w.keys, "keys preloaded");
    let mut tasks = Vec::new();
    for i in 0..concurrency.clamp(1, chunks.max(1) as usize) {
        let t = targets[i % targets.len()].clone();
        let next = next.clone();
        let pb = pb.clone();
        let mut gen = OpGen::new(w, u64::MAX - i as u64);
        let keys = w.keys;
        tasks.push(tokio::spawn(async move {
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    return Ok::<(), RunError>(());
                }
                let pairs: Vec<_> = (c * CHUNK..((c + 1) * CHUNK).min(keys))
                    .map(|k| gen.pair(k))
                    .collect();
                let n = pairs.len() as u64;
                t.sequence(pairs).await.map_err(RunError::Preload)?;
                pb.inc(n);
            }
        }));
    }
    let mut result = Ok(());
    for task in tasks {
        let r = task.await.map_err(|source| RunError::Task {
            what: "preload",
            source,
        })?;
        if result.is_ok() {
            result = r;
        }
    }
    pb.finish_and_clear();
    result
}

/// Runs the workload and reports what it measured. Reads expect their keys
/// to exist: call [`preload`] first (misses are counted, not errors).
pub async fn run<T: Target>(
    targets: &[T],
    w: &Workload,
    opts: &RunOptions,
) -> Result<Report, RunError> {
    w.validate()?;
    if targets.is_empty() {
        return Err(RunError::NoConnections);
    }
    let clients = opts.clients.max(1);
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let clock = match opts.stop {
        Stop::Duration(d) => Clock {
            measure_from: start + opts.warmup,
            deadline: Some(start + opts.warmup + d),
            total: None,
        },
        Stop::Ops(n) => Clock {
            measure_from: start,
            deadline: None,
            total: Some(n),
        },
    };
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let target = targets[i % targets.len()].clone();
            let gen = OpGen::new(w, i as u64);
            tokio::spawn(client_loop(
                target,
                gen,
                w.consistency,
                clock,
                shared.clone(),
            ))
        })
        .collect();
    let pb = match opts.stop {
        Stop::Duration(d) => bar(opts.progress, (opts.warmup + d).as_secs(), "s"),
        Stop::Ops(n) => bar(opts.progress, n, "ops"),
    };
    let ticker = tokio::spawn(tick(shared.clone(), pb.clone(), start, clock.deadline));

    let mut m = Measured {
        from: clock.measure_from,
        lat: Latencies::new(),
        misses: 0,
        end: clock.measure_from,
    };
    for task in tasks {
        let one = task.await.map_err(|source| RunError::Task {
            what: "client",
            source,
        })?;
        m.lat.merge(&one.lat);
        m.misses += one.misses;
        m.end = m.end.max(one.end);
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    pb.finish_and_clear();

    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().expect("lock").take();
    if m.lat.count() == 0 {
        // Errors were counted, so the first one was kept.
        if let Some(e) = first_error {
            return Err(RunError::AllFailed(e));
        }
    }
    let first_error = first_error.map(|e| e.to_string());
    Ok(m.into_report(
        targets[0].name(),
        w,
        opts,
        targets.len(),
        errors,
        first_error,
    ))
}

/// When a run measures and when it ends, as each client task sees it.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Operations that start before this (the warm-up) are not measured.
    measure_from: Instant,
    /// A timed run's end.
    deadline: Option<Instant>,
    /// An operation-counted run's number of operations.
    total: Option<u64>,
}

/// What one client task measured, or all of them merged.
struct Measured {
    /// When measuring started (after the warm-up).
    from: Instant,
    lat: Latencies,
    misses: u64,
    /// When the last measured operation ended.
    end: Instant,
}

/// One client: one operation in flight, until the clock or a failing
/// target stops the run.
async fn client_loop<T: Target>(
    target: T,
    mut gen: OpGen,
    consistency: Consistency,
    clock: Clock,
    shared: Arc<Shared>,
) -> Measured {
    let mut m = Measured {
        from: clock.measure_from,
        lat: Latencies::new(),
        misses: 0,
        end: clock.measure_from,
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(n) = clock.total {
            if shared.issued.fetch_add(1, Ordering::Relaxed) >= n {
                break;
            }
        }
        let op = gen.next_op();
        let t0 = Instant::now();
        if clock.deadline.is_some_and(|d| t0 >= d) {
            break;
        }
        let r = exec(&target, op, consistency).await;
        let t1 = Instant::now();
        match r {
            Ok(found) => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if t0 >= clock.measure_from {
                    m.lat.record(t1 - t0);
                    m.misses += u64::from(!found);
                    m.end = t1;
                }
            }
            Err(e) => shared.fail(e),
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    m
}

/// The progress bar, and the clock of a timed run: every 200 ms, stop the
/// run once past the deadline and show the rate so far.
async fn tick(shared: Arc<Shared>, pb: ProgressBar, start: Instant, deadline: Option<Instant>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let (mut prev_n, mut prev_t) = (0u64, Instant::now());
    loop {
        tick.tick().await;
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let n = shared.done.load(Ordering::Relaxed);
        let rate = (n - prev_n) as f64 / (now - prev_t).as_secs_f64().max(1e-9);
        (prev_n, prev_t) = (n, now);
        pb.set_position(if deadline.is_some() {
            (now - start).as_secs()
        } else {
            n
        });
        let errors = shared.errors.load(Ordering::Relaxed);
        pb.set_message(format!("{n} ops, {rate:.0} ops/s, {errors} errors"));
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

impl Measured {
    /// The report of a finished run on `connections` connections of
    /// `target`.
    fn into_report(
        self,
        target: &str,
        w: &Workload,
        opts: &RunOptions,
        connections: usize,
        errors: u64,
        first_error: Option<String>,
    ) -> Report {
        let m = self;
        let clients = opts.clients.max(1);
        let ops = m.lat.count();
        let elapsed_s = (m.end - m.from).as_secs_f64();
        Report {
            target: target.to_string(),
            workload: w.kind.name().to_string(),
            label: w.label(),
            consistency: if w.kind.reads() {
                consistency_name(w.consistency)
            } else {
                "-".into()
            },
            clients,
            connections: connections.min(clients),
            key_size: w.key_size,
            value_size: w.value_size,
            keys: w.keys,
            read_percent: match w.kind {
                Kind::Mixed => w.read_percent,
                Kind::Get => 100,
                _ => 0,
            },
            sequence_len: if w.kind == Kind::Sequence {
                w.sequence_len
            } else {
                1
            },
            ops,
            errors,
            misses: m.misses,
            elapsed_s,
            ops_per_s: if elapsed_s > 0.0 {
                ops as f64 / elapsed_s
            } else {
                0.0
            },
            latency_us: m.lat.summary(),
            first_error,
            cdf: m.lat.cdf(opts.cdf_points),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use nacre_client::Bytes;

    /// An in-memory target that can be told to fail.
    #[derive(Clone, Default)]
    struct Mem {
        map: Arc<Mutex<HashMap<Bytes, Bytes>>>,
        fail: bool,
    }

    impl Target for Mem {
        fn name(&self) -> &'static str {
            "mem"
        }
        async fn put(&self, k: Bytes, v: Bytes) -> Result<(), TargetError> {
            if self.fail {
                return Err(TargetError::Unexpected("down"));
            }
            self.map.lock().unwrap().insert(k, v);
            Ok(())
        }
        async fn get(&self, k: Bytes, _: Consistency) -> Result<bool, TargetError> {
            Ok(self.map.lock().unwrap().contains_key(&k))
        }
        async fn sequence(&self, pairs: Vec<(Bytes, Bytes)>) -> Result<(), TargetError> {
            let mut m = self.map.lock().unwrap();
            for (k, v) in pairs {
                m.insert(k, v);
            }
            Ok(())
        }
    }

    fn quiet(clients: usize, stop: Stop) -> RunOptions {
        RunOptions {
            clients,
            stop,
            progress: Progress::Hidden,
            ..RunOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ops_mode_runs_exactly_that_many() {
        let t = vec![Mem::default(), Mem::default()];
        let w = Workload::default();
        let r = run(&t, &w, &quiet(8, Stop::Ops(1_000))).await.unwrap();
        assert_eq!(r.ops, 1_000);
        assert_eq!(r.errors, 0);
        assert_eq!(r.clients, 8);
        assert_eq!(r.connections, 2);
        assert_eq!(r.latency_us.count, 1_000);
        assert!(r.ops_per_s > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn preloaded_keys_are_all_found() {
        let t = vec![Mem::default()];
        let w = Workload {
            kind: Kind::Get,
            keys: 1_234,
            ..Workload::default()
        };
        preload(&t, &w, 4, Progress::Hidden).await.unwrap();
        assert_eq!(t[0].map.lock().unwrap().len(), 1_234);
        let r = run(&t, &w, &quiet(4, Stop::Ops(500))).await.unwrap();
        assert_eq!((r.ops, r.misses, r.errors), (500, 0, 0));
        assert_eq!(r.consistency, "consistent");
        // Without a preload every read misses.
        let r = run(&[Mem::default()], &w, &quiet(1, Stop::Ops(10)))
            .await
            .unwrap();
        assert_eq!(r.misses, 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timed_runs_stop_and_warmup_is_not_measured() {
        let t = vec![Mem::default()];
        let opts = RunOptions {
            warmup: Duration::from_millis(100),
            cdf_points: 20,
            ..quiet(2, Stop::Duration(Duration::from_millis(300)))
        };
        let began = std::time::Instant::now();
        let r = run(&t, &Workload::default(), &opts).await.unwrap();
        assert!(began.elapsed() < Duration::from_secs(3));
        assert!(r.elapsed_s > 0.2 && r.elapsed_s < 1.0, "{}", r.elapsed_s);
        assert!(r.ops > 0);
        assert!(!r.cdf.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_target_ends_the_run_with_its_error() {
        let t = vec![Mem {
            fail: true,
            ..Mem::default()
        }];
        let e = run(
            &t,
            &Workload::default(),
            &quiet(4, Stop::Duration(Duration::from_secs(30))),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, RunError::AllFailed(TargetError::Unexpected("down"))),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "down");
    }
}
