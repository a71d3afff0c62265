//! Set C: every engine loaded with set B's pairs at once, then reads and
//! durable commits in turns.
//!
//! In sets A and B each engine runs a workload in one stretch, a minute or
//! more away from the others' stretches. This VM's speed (CPU, memory and
//! disk) drifts within seconds, and a workload of under a second
//! (all-cached hotspot reads, a thousand fdatasyncs) moves by 2× from one
//! stretch to the next, for every engine: the ratio of two such stretches
//! says more about the host than about the engines. Here every engine is
//! loaded first, then compacted in the foreground (so that none has
//! background work that would run in another's turn), and then each
//! workload runs in `SLICES` turns per engine: in every slice each engine
//! does the same work, one engine after the other (whoever starts
//! rotates), a few milliseconds each. Drift then falls on all engines
//! alike. An engine's rate is its operations over the sum of its turns'
//! times, and nacre's ratio to every other engine is also taken slice by
//! slice: the median of those is the figure to quote.
//!
//! Workloads: random gets over all of set B's keys, gets within the
//! hottest 1%, durable commits of one fresh put each, and durable commits
//! of a batch of fresh puts (one per slice).

use std::time::Instant;

use rand::Rng;

use crate::data::chooser;
use crate::engine::{BenchResult, Engine, Op, Opener, Reader};
use crate::report::{Measurement, SliceRatios};
use crate::workloads::{load_b, Datasets, Run, Setup, Sizes, VALUE_LEN_B};

/// Turns each engine takes per workload.
pub const SLICES: usize = 64;

/// The read workloads of set C: name, and the share of set B's keys read
/// (the first `n / divisor` keys).
const READS: &[(&str, usize)] = &[("C.random_read", 1), ("C.hotspot_read", 100)];

struct Loaded<'a> {
    name: &'a str,
    engine: Box<dyn Engine>,
    dir: tempfile::TempDir,
}

/// Runs set C on `engines` (all of them at once) and hands one measurement
/// per engine and workload to `sink`.
pub fn run_set_c(
    engines: &[(&str, Opener)],
    setup: &Setup<'_>,
    round: u32,
    sink: &mut dyn FnMut(Measurement),
) -> BenchResult<()> {
    let (sizes, data, seed) = (setup.sizes, setup.data, setup.seed);
    let mut loaded = Vec::with_capacity(engines.len());
    for &(name, open) in engines {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nacre-bench-{name}-C-"))
            .tempdir_in(setup.base_dir)?;
        eprintln!(
            "[{name}] set C in {}: loading set B's pairs",
            dir.path().display()
        );
        let mut engine = open(dir.path(), setup.cfg)?;
        let puts = load_b(&*engine, sizes, data)?;
        assert_eq!(puts, data.b.len() as u64, "every pair loaded");
        engine.compact()?;
        loaded.push(Loaded { name, engine, dir });
    }
    for &(workload, divisor) in READS {
        eprintln!("[side by side] {workload} ...");
        let keys = (data.b.len() / divisor).max(1);
        let turns = read_in_turns(&loaded, data, keys, seed, workload)?;
        record(&loaded, workload, &turns, setup, round, sink)?;
    }
    // Then durable commits of fresh keys, in turns as well: the disk's
    // rate drifts as much as the CPU's.
    let fresh = &data.b_random;
    let shape = CommitShape::of(sizes, fresh.len());
    let mut next = 0;
    for (workload, puts, one_per_commit) in [
        ("C.single_commits", shape.single_per_slice, true),
        ("C.batch_commits", shape.batch_len, false),
    ] {
        eprintln!("[side by side] {workload} ...");
        let first = next;
        next += SLICES * puts;
        // Slice `s` puts the same fresh keys into every engine.
        let mut turns = in_turns(loaded.len(), |slice, e| {
            let engine = &loaded[e].engine;
            let keys = first + slice * puts..first + (slice + 1) * puts;
            if one_per_commit {
                for i in keys {
                    engine.commit(&[Op::Put(fresh.key(i), fresh.value(i))])?;
                }
            } else {
                let ops: Vec<Op<'_>> = keys
                    .map(|i| Op::Put(fresh.key(i), fresh.value(i)))
                    .collect();
                engine.commit(&ops)?;
            }
            Ok(puts as u64)
        })?;
        // Every put reads back (checked after the timed turns).
        for (l, t) in loaded.iter().zip(&mut turns) {
            let reader = l.engine.reader()?;
            let mut buf = Vec::with_capacity(VALUE_LEN_B);
            for i in first..next {
                if !(reader.get(fresh.key(i), &mut buf)? && buf.as_slice() == fresh.value(i)) {
                    t.errors += 1;
                }
            }
        }
        record(&loaded, workload, &turns, setup, round, sink)?;
    }
    for l in loaded {
        l.engine.close()?;
        l.dir.close()?;
    }
    Ok(())
}

/// How big set C's commit workloads are: single-put commits per slice
/// (set A's count spread over the slices) and puts per batch commit (one a
/// slice, set B's batch size, or less when there are not enough fresh keys).
struct CommitShape {
    single_per_slice: usize,
    batch_len: usize,
}

impl CommitShape {
    fn of(sizes: &Sizes, fresh: usize) -> CommitShape {
        let single_per_slice = (sizes.a_single_commits / SLICES).max(1);
        let left = fresh.saturating_sub(SLICES * single_per_slice);
        let batch_len = sizes.b_batch_len.min(left / SLICES);
        assert!(
            batch_len > 0,
            "set C needs {} fresh keys or more, has {fresh}",
            SLICES * (single_per_slice + 1)
        );
        CommitShape {
            single_per_slice,
            batch_len,
        }
    }
}

/// One engine's share of a workload done in turns.
struct Turns {
    /// Seconds of each of its slices, in slice order.
    secs: Vec<f64>,
    ops: u64,
    errors: u64,
}

/// Runs `SLICES` slices; in each, every engine takes one turn,
/// `turn(slice, engine)`, which returns the operations it did. The engine
/// that starts slice `s` is `s` modulo the number of engines, so that none
/// always follows the same one.
fn in_turns(
    engines: usize,
    mut turn: impl FnMut(usize, usize) -> BenchResult<u64>,
) -> BenchResult<Vec<Turns>> {
    let mut turns: Vec<Turns> = (0..engines)
        .map(|_| Turns {
            secs: Vec::with_capacity(SLICES),
            ops: 0,
            errors: 0,
        })
        .collect();
    for slice in 0..SLICES {
        for k in 0..engines {
            let e = (slice + k) % engines;
            let start = Instant::now();
            let ops = turn(slice, e)?;
            let t = &mut turns[e];
            t.secs.push(start.elapsed().as_secs_f64());
            t.ops += ops;
        }
    }
    for t in &turns {
        assert_eq!(t.secs.len(), SLICES, "every engine took every turn");
    }
    Ok(turns)
}

/// Gets among the first `keys` of set B's keys, in turns; slice `s` reads
/// the same keys on every engine. Wrong or missing values count as errors.
fn read_in_turns(
    loaded: &[Loaded<'_>],
    data: &Datasets,
    keys: usize,
    seed: u64,
    workload: &str,
) -> BenchResult<Vec<Turns>> {
    let base = &data.b;
    assert!(keys > 0 && keys <= base.len());
    let per_slice = (base.len() / SLICES).max(1);
    // One read transaction per engine for the whole workload, as set B's
    // reads use.
    let readers: Vec<Box<dyn Reader + '_>> = loaded
        .iter()
        .map(|l| l.engine.reader())
        .collect::<BenchResult<_>>()?;
    let mut errors = vec![0u64; loaded.len()];
    let mut buf = Vec::with_capacity(VALUE_LEN_B);
    let mut turns = in_turns(loaded.len(), |slice, e| {
        let mut rng = chooser(seed, &format!("{workload}/{slice}"));
        for _ in 0..per_slice {
            let i = rng.random_range(0..keys);
            if !(readers[e].get(base.key(i), &mut buf)? && buf.as_slice() == base.value(i)) {
                errors[e] += 1;
            }
        }
        Ok(per_slice as u64)
    })?;
    for (t, n) in turns.iter_mut().zip(errors) {
        t.errors = n;
    }
    Ok(turns)
}

/// Hands one measurement per engine to `sink` (through [`Run::record`], as
/// sets A and B do); nacre's carries its ratio to every other engine slice
/// by slice.
fn record(
    loaded: &[Loaded<'_>],
    workload: &str,
    turns: &[Turns],
    setup: &Setup<'_>,
    round: u32,
    sink: &mut dyn FnMut(Measurement),
) -> BenchResult<()> {
    let nacre = loaded.iter().position(|l| l.name == "nacre");
    for (i, l) in loaded.iter().enumerate() {
        let t = &turns[i];
        let mut by_slice: Vec<SliceRatios> = match nacre {
            Some(me) if me == i => loaded
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != me)
                .map(|(j, other)| SliceRatios::of(other.name, &turns[me].secs, &turns[j].secs))
                .collect(),
            _ => Vec::new(),
        };
        for r in &by_slice {
            eprintln!("[nacre] {workload}: {r}");
        }
        let mut attach = |mut m: Measurement| {
            m.by_slice = std::mem::take(&mut by_slice);
            sink(m)
        };
        let mut run = Run {
            engine: l.name,
            dir: l.dir.path(),
            seed: setup.seed,
            round,
            sink: &mut attach,
        };
        run.record(workload, t.ops, t.secs.iter().sum(), t.errors, None, true)?;
    }
    Ok(())
}
