//! The workloads, written once against [`Engine`].
//!
//! Set A follows the shape of redb's benchmark: 24-byte keys, 150-byte
//! values, one big load, small and medium durable commits, point and range
//! reads, removal of half the keys, and the footprint before and after
//! compaction.
//!
//! Set B follows kivaloo's benchmarks: 2^20 pairs of 40-byte keys and
//! values. kivaloo keeps many requests in flight; here that is modelled two
//! ways: batches of 1000 operations per durable commit, and several writer
//! threads each committing one operation at a time with immediate
//! durability, which is where group commit shows. The bulk insert and
//! update take the pairs in the order kivaloo's `mkpairs` writes them:
//! random keys sorted in runs of 65,536. Inserts in fully random order,
//! the harder case for a copy-on-write tree, are measured as well
//! (`B.random_insert`). Set B's runs are in `workloads/set_b.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rand::Rng;

use crate::data::{chooser, sorted_runs, Pairs, Records};
use crate::engine::{BenchError, BenchResult, Engine, EngineConfig, Op, Reader};
use crate::report::{dir_size, human_bytes, human_rate, Measurement};
use crate::side_by_side::SLICES;

mod set_b;

pub use set_b::run_set_b;

pub const KEY_LEN_A: usize = 24;
pub const VALUE_LEN_A: usize = 150;
pub const KEY_LEN_B: usize = 40;
pub const VALUE_LEN_B: usize = 40;
const RANGE_LEN: usize = 10;
/// Keys checked for presence or absence after the removal and compaction.
const SPOT_CHECKS: usize = 1000;

/// How big each workload is.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub a_load: usize,
    pub a_single_commits: usize,
    pub a_batch_commits: usize,
    pub a_batch_len: usize,
    pub a_reads: usize,
    pub a_ranges: usize,
    pub b_pairs: usize,
    pub b_batch_len: usize,
    /// Set B's bulk insert comes in runs of this many keys, each sorted:
    /// kivaloo's `mkpairs` uses 65,536.
    pub b_sorted_run: usize,
    /// Puts in fully random key order into the full set-B tree.
    pub b_random_inserts: usize,
    /// Total single-operation commits in each multi-writer workload.
    pub b_concurrent_ops: usize,
    pub b_writers: usize,
}

impl Sizes {
    pub fn full(writers: usize) -> Sizes {
        Sizes {
            a_load: 1_000_000,
            a_single_commits: 1_000,
            a_batch_commits: 100,
            a_batch_len: 1_000,
            a_reads: 1_000_000,
            a_ranges: 500_000,
            b_pairs: 1 << 20,
            b_batch_len: 1_000,
            b_sorted_run: 65_536,
            b_random_inserts: 1 << 18,
            b_concurrent_ops: 16_384,
            b_writers: writers,
        }
    }

    /// Everything divided by 16 (batch sizes kept), for a run of well under
    /// a minute. The counts of durable commits in set A are cut less (to a
    /// quarter and a tenth), since a few dozen fsyncs on a virtual disk are
    /// too noisy to compare.
    pub fn quick(writers: usize) -> Sizes {
        let full = Sizes::full(writers);
        let d = |n: usize| (n / 16).max(1);
        Sizes {
            a_load: d(full.a_load),
            a_single_commits: full.a_single_commits / 4,
            a_batch_commits: full.a_batch_commits / 10,
            a_batch_len: full.a_batch_len,
            a_reads: d(full.a_reads),
            a_ranges: d(full.a_ranges),
            b_pairs: d(full.b_pairs),
            b_batch_len: full.b_batch_len,
            b_sorted_run: d(full.b_sorted_run),
            b_random_inserts: d(full.b_random_inserts),
            b_concurrent_ops: d(full.b_concurrent_ops),
            b_writers: writers,
        }
    }

    pub fn a_total_keys(&self) -> usize {
        self.a_load + self.a_single_commits + self.a_batch_commits * self.a_batch_len
    }

    /// A line describing each workload, for the table headers.
    pub fn descriptions(&self) -> BTreeMap<String, String> {
        let sets = [
            self.set_a_descriptions(),
            self.set_b_descriptions(),
            self.set_c_descriptions(),
        ];
        sets.into_iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn set_a_descriptions(&self) -> Vec<(&'static str, String)> {
        let n = |x: usize| human_rate(x as f64);
        vec![
            (
                "A.bulk_load",
                format!("{} puts in one durable txn", n(self.a_load)),
            ),
            (
                "A.single_commits",
                format!("{} durable txns of 1 put", n(self.a_single_commits)),
            ),
            (
                "A.batch_commits",
                format!(
                    "{} durable txns of {} puts",
                    n(self.a_batch_commits),
                    n(self.a_batch_len)
                ),
            ),
            (
                "A.random_read",
                format!("{} gets of existing keys", n(self.a_reads)),
            ),
            (
                "A.range_read",
                format!("{} ranges of {RANGE_LEN} entries", n(self.a_ranges)),
            ),
            (
                "A.remove_half",
                format!("{} deletes in one durable txn", n(self.a_total_keys() / 2)),
            ),
            (
                "A.compact",
                "engine's own compaction/cleaning; secs and footprint after".to_string(),
            ),
        ]
    }

    fn set_b_descriptions(&self) -> Vec<(&'static str, String)> {
        let n = |x: usize| human_rate(x as f64);
        let w = self.b_writers;
        let c = n(self.b_concurrent_ops);
        let bb = n(self.b_batch_len);
        vec![
            (
                "B.bulk_insert",
                format!(
                    "{} puts in sorted runs of {} (kivaloo's order), {bb} per durable txn",
                    n(self.b_pairs),
                    n(self.b_sorted_run)
                ),
            ),
            (
                "B.insert_concurrent",
                format!("{c} new keys, {w} writers, 1 put per durable txn"),
            ),
            (
                "B.bulk_update",
                format!(
                    "{} overwrites in the bulk insert's order, {bb} per durable txn",
                    n(self.b_pairs)
                ),
            ),
            (
                "B.update_concurrent",
                format!("{c} overwrites, {w} writers, 1 put per durable txn"),
            ),
            ("B.bulk_extract", "full scan; ops = entries".to_string()),
            ("B.random_read", format!("{} gets", n(self.b_pairs))),
            (
                "B.random_mixed",
                format!(
                    "{} ops, 50% get / 50% put, {bb} ops per durable txn",
                    n(self.b_pairs)
                ),
            ),
            (
                "B.mixed_concurrent",
                format!("{c} ops, {w} threads, 50% get / 50% put in its own durable txn"),
            ),
            (
                "B.hotspot_read",
                format!("{} gets within the hottest 1% of keys", n(self.b_pairs)),
            ),
            (
                "B.random_insert",
                format!(
                    "{} new keys in random order, {bb} per durable txn",
                    n(self.b_random_inserts)
                ),
            ),
        ]
    }

    fn set_c_descriptions(&self) -> Vec<(&'static str, String)> {
        let n = |x: usize| human_rate(x as f64);
        let bb = n(self.b_batch_len);
        vec![
            (
                "C.random_read",
                format!(
                    "{} gets, every engine loaded with set B, in turns",
                    n(self.b_pairs)
                ),
            ),
            (
                "C.hotspot_read",
                format!(
                    "{} gets within the hottest 1% of keys, in turns",
                    n(self.b_pairs)
                ),
            ),
            (
                "C.single_commits",
                format!(
                    "{} durable txns of 1 new put, in turns",
                    n((self.a_single_commits / SLICES).max(1) * SLICES)
                ),
            ),
            (
                "C.batch_commits",
                format!("{SLICES} durable txns of up to {bb} new puts, in turns"),
            ),
        ]
    }
}

/// The data every engine gets, generated once.
pub struct Datasets {
    pub a: Pairs,
    pub b: Pairs,
    /// Second values for set B's updates.
    pub b_updates: Records,
    /// Keys (and values) added by set B's concurrent inserts.
    pub b_extra: Pairs,
    /// The order of set B's bulk insert and update: indices of `b`.
    pub b_order: Vec<u32>,
    /// Keys (and values) added in random order at the end of set B.
    pub b_random: Pairs,
}

impl Datasets {
    pub fn generate(seed: u64, sizes: &Sizes) -> Datasets {
        let b = Pairs::random(seed + 1, sizes.b_pairs, KEY_LEN_B, VALUE_LEN_B);
        let b_order = sorted_runs(&b.keys, sizes.b_sorted_run);
        Datasets {
            a: Pairs::random(seed, sizes.a_total_keys(), KEY_LEN_A, VALUE_LEN_A),
            b,
            b_updates: Records::random(seed + 2, sizes.b_pairs, VALUE_LEN_B),
            b_extra: Pairs::random(seed + 3, sizes.b_concurrent_ops, KEY_LEN_B, VALUE_LEN_B),
            b_order,
            b_random: Pairs::random(seed + 4, sizes.b_random_inserts, KEY_LEN_B, VALUE_LEN_B),
        }
    }
}

/// What every set's run shares: where engines get their directories, their
/// settings, the sizes, the data and the seed of every choice.
pub struct Setup<'a> {
    pub base_dir: &'a Path,
    pub cfg: &'a EngineConfig,
    pub sizes: &'a Sizes,
    pub data: &'a Datasets,
    pub seed: u64,
}

/// Hands each finished measurement to the caller and reports progress.
pub struct Run<'a> {
    pub engine: &'a str,
    pub dir: &'a Path,
    pub seed: u64,
    /// Which round of `--rounds` this is (from 0).
    pub round: u32,
    pub sink: &'a mut dyn FnMut(Measurement),
}

impl Run<'_> {
    /// Times `body`, which returns (operations done, errors seen).
    fn measure(
        &mut self,
        workload: &str,
        body: impl FnOnce() -> BenchResult<(u64, u64)>,
    ) -> BenchResult<()> {
        eprintln!("[{}] {workload} ...", self.engine);
        let start = Instant::now();
        let (ops, errors) = body()?;
        let secs = start.elapsed().as_secs_f64();
        self.record(workload, ops, secs, errors, None, true)
    }

    /// Reports `ops` done in `secs` (a rate when `is_rate`), with the
    /// directory's footprint now.
    pub fn record(
        &mut self,
        workload: &str,
        ops: u64,
        secs: f64,
        errors: u64,
        note: Option<String>,
        is_rate: bool,
    ) -> BenchResult<()> {
        let disk = dir_size(self.dir);
        let ops_per_s = is_rate.then(|| ops as f64 / secs.max(1e-9));
        eprintln!(
            "[{}] {workload}: {ops} ops in {secs:.3} s{}, {} on disk ({} allocated){}",
            self.engine,
            ops_per_s
                .map(|r| format!(" ({} ops/s)", human_rate(r)))
                .unwrap_or_default(),
            human_bytes(disk.apparent),
            human_bytes(disk.allocated),
            if errors > 0 {
                format!(", {errors} ERRORS")
            } else {
                String::new()
            }
        );
        (self.sink)(Measurement {
            engine: self.engine.to_string(),
            workload: workload.to_string(),
            ops_per_s,
            bytes_on_disk: disk.apparent,
            bytes_allocated: disk.allocated,
            ops,
            secs,
            errors,
            note,
            round: self.round,
            by_slice: Vec::new(),
        });
        Ok(())
    }
}

/// True when `reader` has `key` with exactly `value`.
fn holds(reader: &dyn Reader, key: &[u8], value: &[u8], buf: &mut Vec<u8>) -> BenchResult<bool> {
    Ok(reader.get(key, buf)? && buf.as_slice() == value)
}

/// Spot-checks that keys `0..removed` are gone and the rest still hold
/// their values. Returns the number of keys found wrong.
fn check_after_removal(
    engine: &dyn Engine,
    data: &Pairs,
    removed: usize,
    seed: u64,
    what: &str,
) -> BenchResult<u64> {
    let reader = engine.reader()?;
    let mut rng = chooser(seed, what);
    let mut buf = Vec::new();
    let mut wrong = 0;
    for _ in 0..SPOT_CHECKS {
        let gone = rng.random_range(0..removed);
        if reader.get(data.key(gone), &mut buf)? {
            wrong += 1;
        }
        let kept = rng.random_range(removed..data.len());
        if !holds(&*reader, data.key(kept), data.value(kept), &mut buf)? {
            wrong += 1;
        }
    }
    if wrong > 0 {
        eprintln!("[{}] {what}: {wrong} spot checks failed", engine.name());
    }
    Ok(wrong)
}

pub fn run_set_a(
    engine: &mut Box<dyn Engine>,
    run: &mut Run<'_>,
    sizes: &Sizes,
    data: &Pairs,
) -> BenchResult<()> {
    let seed = run.seed;
    let name = run.engine;
    let total = data.len();
    let put = |i: usize| Op::Put(data.key(i), data.value(i));

    // 1. One transaction with the whole initial load. The operation list is
    //    built before the clock starts.
    let ops: Vec<Op<'_>> = (0..sizes.a_load).map(put).collect();
    run.measure("A.bulk_load", || {
        engine.commit(&ops)?;
        Ok((ops.len() as u64, 0))
    })?;
    drop(ops);

    // 2. Small durable commits.
    let first = sizes.a_load;
    run.measure("A.single_commits", || {
        for i in first..first + sizes.a_single_commits {
            engine.commit(&[put(i)])?;
        }
        Ok((sizes.a_single_commits as u64, 0))
    })?;

    // 3. Medium durable commits.
    let first = first + sizes.a_single_commits;
    run.measure("A.batch_commits", || {
        let mut ops = Vec::with_capacity(sizes.a_batch_len);
        for b in 0..sizes.a_batch_commits {
            let base = first + b * sizes.a_batch_len;
            ops.clear();
            ops.extend((base..base + sizes.a_batch_len).map(put));
            engine.commit(&ops)?;
        }
        Ok(((sizes.a_batch_commits * sizes.a_batch_len) as u64, 0))
    })?;

    // 4. Point reads of existing keys, in one read transaction; every value
    //    must come back intact.
    run.measure("A.random_read", || {
        let reader = engine.reader()?;
        let mut rng = chooser(seed, "A.random_read");
        let mut buf = Vec::with_capacity(VALUE_LEN_A);
        let mut errors = 0;
        for _ in 0..sizes.a_reads {
            let i = rng.random_range(0..total);
            if !holds(&*reader, data.key(i), data.value(i), &mut buf)? {
                errors += 1;
            }
        }
        Ok((sizes.a_reads as u64, errors))
    })?;

    // 5. Short forward ranges from existing keys. The first entry must be
    //    the start key itself and the keys must ascend.
    run.measure("A.range_read", || {
        let reader = engine.reader()?;
        let mut rng = chooser(seed, "A.range_read");
        let mut errors = 0u64;
        let mut entries = 0u64;
        let mut prev = Vec::with_capacity(KEY_LEN_A);
        for _ in 0..sizes.a_ranges {
            let start = data.key(rng.random_range(0..total));
            let mut bad = false;
            prev.clear();
            let n = reader.range(start, RANGE_LEN, &mut |k, v| {
                let in_order = if prev.is_empty() {
                    k == start
                } else {
                    k > prev.as_slice()
                };
                bad |= !in_order || v.len() != VALUE_LEN_A;
                prev.clear();
                prev.extend_from_slice(k);
            })?;
            entries += n as u64;
            if bad || n == 0 {
                errors += 1;
            }
        }
        eprintln!("[{name}] A.range_read: {entries} entries read");
        Ok((sizes.a_ranges as u64, errors))
    })?;

    // 6. Remove half the keys (a random half, since keys are random) in one
    //    transaction.
    let removed = total / 2;
    let ops: Vec<Op<'_>> = (0..removed).map(|i| Op::Delete(data.key(i))).collect();
    run.measure("A.remove_half", || {
        engine.commit(&ops)?;
        let wrong = check_after_removal(&**engine, data, removed, seed, "A.remove_half check")?;
        Ok((ops.len() as u64, wrong))
    })?;
    drop(ops);

    // 7. Compaction, in the foreground, then the same spot checks.
    eprintln!("[{}] A.compact ...", run.engine);
    let start = Instant::now();
    let note = engine.compact()?;
    let secs = start.elapsed().as_secs_f64();
    let wrong = check_after_removal(&**engine, data, removed, seed, "A.compact check")?;
    if let Some(note) = &note {
        eprintln!("[{}] A.compact: {note}", run.engine);
    }
    run.record("A.compact", 1, secs, wrong, note, false)
}

/// Runs `per_thread(t)` on `threads` threads at once and adds up their
/// (operations, errors).
fn on_threads(
    threads: usize,
    per_thread: impl Fn(usize) -> BenchResult<(u64, u64)> + Sync,
) -> BenchResult<(u64, u64)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &per_thread;
                s.spawn(move || f(t))
            })
            .collect();
        let mut total = (0, 0);
        for h in handles {
            let (ops, errors) = match h.join() {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            total.0 += ops;
            total.1 += errors;
        }
        Ok::<_, BenchError>(total)
    })
}

/// The share of `total` operations that thread `t` of `threads` does.
fn share(total: usize, threads: usize, t: usize) -> std::ops::Range<usize> {
    let per = total / threads;
    let extra = total % threads;
    let start = t * per + t.min(extra);
    start..start + per + usize::from(t < extra)
}

/// Commits `ops` in durable transactions of `batch_len` (the last one
/// shorter); returns how many operations were committed.
fn commit_in_batches(
    engine: &dyn Engine,
    batch_len: usize,
    ops: &mut dyn Iterator<Item = Op<'_>>,
) -> BenchResult<u64> {
    assert!(batch_len > 0, "a batch holds at least one operation");
    let mut batch = Vec::with_capacity(batch_len);
    let mut done = 0u64;
    for op in ops {
        batch.push(op);
        if batch.len() == batch_len {
            engine.commit(&batch)?;
            done += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        engine.commit(&batch)?;
        done += batch.len() as u64;
    }
    Ok(done)
}

/// Set B's bulk insert: every base pair, in kivaloo's order, in durable
/// transactions of `b_batch_len` puts. Returns the puts made.
pub fn load_b(engine: &dyn Engine, sizes: &Sizes, data: &Datasets) -> BenchResult<u64> {
    let base = &data.b;
    let mut ops = data
        .b_order
        .iter()
        .map(|&i| Op::Put(base.key(i as usize), base.value(i as usize)));
    commit_in_batches(engine, sizes.b_batch_len, &mut ops)
}
