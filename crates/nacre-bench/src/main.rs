//! `nacre-bench store`: runs the same workloads on nacre-store, redb, fjall
//! and (when the system library is there) RocksDB, each with durable
//! commits, and compares them.
//!
//! ```text
//! cargo run --release -p nacre-bench -- store [--quick] [--json]
//!     [--engines nacre,redb,fjall,rocksdb] [--sets a,b,c] [--dir DIR]
//!     [--cache-mb 64] [--writers 4] [--seed N] [--rounds N]
//! ```
//!
//! Each engine runs each workload set in a fresh temporary directory, which
//! is removed afterwards. Sets A and B run one engine after the other; set C
//! loads every engine at once and has them read and commit in turns.
//! Progress goes to stderr; results to stdout, as tables or (with `--json`)
//! one JSON object per line. The exit status is
//! non-zero if any read missed or returned a wrong value, or an engine
//! failed or panicked.
//!
//! Clusters (Nacre against etcd) are compared by nacre-etcd-bench, a crate
//! of its own so that this one builds without gRPC.

mod data;
mod engine;
mod engines;
mod report;
mod side_by_side;
mod workloads;

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{BenchResult, EngineConfig, Opener};
use crate::report::{Failure, Measurement};
use crate::workloads::{Datasets, Run, Setup, Sizes};

/// Seed of every key, value and choice, so that runs repeat exactly.
const DEFAULT_SEED: u64 = 0x6e61_6372_6500_0001;

#[derive(Parser)]
#[command(name = "nacre-bench", about = "Benchmarks for Nacre")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare storage engines on the same workloads, all with durable
    /// commits.
    Store(StoreArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Set {
    /// redb's benchmark shape: 24-byte keys, 150-byte values.
    A,
    /// kivaloo's benchmarks: 2^20 pairs of 40-byte keys and values.
    B,
    /// Every engine loaded with set B at once, then point reads (random
    /// and hotspot) and durable commits (single puts and batches) in turns
    /// of a few milliseconds, so that the host's drift falls on all engines
    /// alike (src/side_by_side.rs).
    C,
}

#[derive(Args)]
struct StoreArgs {
    /// Scale the workloads down about 16 times (well under a minute in all).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per line instead of tables.
    #[arg(long)]
    json: bool,
    /// Engines to run, comma-separated [default: all built in].
    #[arg(long, value_delimiter = ',')]
    engines: Option<Vec<String>>,
    /// Directory under which each engine gets a fresh temporary directory
    /// [default: the system's temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Workload sets to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["a", "b", "c"])]
    sets: Vec<Set>,
    /// Cache size given to every engine, in MiB (nacre's default is 64).
    #[arg(long, default_value_t = 64)]
    cache_mb: usize,
    /// Writer threads in the concurrent workloads of set B.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Seed for keys, values and choices.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Run everything this many times. Each round runs every set on every
    /// engine, set by set, rotating the engines' order; the tables show each
    /// engine's median round, and nacre's ratios are also printed round by
    /// round. On a VM whose speed drifts by a third within minutes, one
    /// round's ratios are not a verdict.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Store(args) => match store(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("nacre-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// What went wrong in a set's run, if anything: its error or its panic.
fn failure_of(outcome: std::thread::Result<BenchResult<()>>) -> Option<String> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("error: {e}")),
        Err(panic) => Some(panic_message(&*panic)),
    }
}

/// Runs the benchmarks; returns whether every engine ran without errors.
fn store(args: &StoreArgs) -> BenchResult<bool> {
    let selected = select_engines(args.engines.as_deref())?;
    for (name, why) in engines::MISSING {
        eprintln!("note: engine {name} is not in this build: {why}");
    }

    let sizes = if args.quick {
        Sizes::quick(args.writers)
    } else {
        Sizes::full(args.writers)
    };
    let cfg = EngineConfig {
        cache_bytes: args.cache_mb << 20,
    };
    let base_dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => std::env::temp_dir(),
    };

    eprintln!("generating data (seed {:#x}) ...", args.seed);
    let data = Datasets::generate(args.seed, &sizes);
    let setup = Setup {
        base_dir: &base_dir,
        cfg: &cfg,
        sizes: &sizes,
        data: &data,
        seed: args.seed,
    };

    let mut results: Vec<Measurement> = Vec::new();
    let json = args.json;
    let mut sink = |m: Measurement| {
        if json {
            let line = serde_json::to_string(&m).expect("a measurement serializes");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        results.push(m);
    };
    let failures = run_rounds(args, &selected, &setup, &mut sink);

    let errors: u64 = results.iter().map(|m| m.errors).sum();
    if !json {
        print_summary(args, &selected, &sizes, &results, &failures, errors);
    }
    Ok(errors == 0 && failures.is_empty())
}

/// The engines `--engines` names (all, without it), or why one is not
/// available.
fn select_engines(names: Option<&[String]>) -> BenchResult<Vec<(&'static str, Opener)>> {
    let Some(names) = names else {
        return Ok(engines::ALL.to_vec());
    };
    let mut picked = Vec::new();
    for name in names {
        let name = name.trim().to_ascii_lowercase();
        match engines::ALL.iter().find(|(n, _)| *n == name) {
            Some(e) => picked.push(*e),
            None => {
                let why = engines::MISSING
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, why)| why.to_string())
                    .unwrap_or_else(|| "no such engine".to_string());
                let known: Vec<&str> = engines::ALL.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "engine {name:?} is not available: {why} (available: {})",
                    known.join(",")
                )
                .into());
            }
        }
    }
    Ok(picked)
}

/// Every round of every set, all engines back to back, so that the figures
/// compared are minutes apart rather than a whole run apart. A set that
/// fails or panics is reported and the run goes on; returns the failures.
fn run_rounds(
    args: &StoreArgs,
    selected: &[(&'static str, Opener)],
    setup: &Setup<'_>,
    sink: &mut dyn FnMut(Measurement),
) -> Vec<Failure> {
    let mut failures = Vec::new();
    for round in 0..args.rounds {
        for &set in &args.sets {
            let mut order = selected.to_vec();
            let turn = round as usize % order.len().max(1);
            order.rotate_left(turn);
            if set == Set::C {
                let Some(message) = failure_of(catch_unwind(AssertUnwindSafe(|| {
                    side_by_side::run_set_c(&order, setup, round, &mut *sink)
                }))) else {
                    continue;
                };
                eprintln!("set C (all engines at once) FAILED: {message}");
                // Every engine took part, so every engine's column says so.
                for &(name, _) in &order {
                    failures.push(Failure {
                        engine: name.to_string(),
                        set: "C".to_string(),
                        message: message.clone(),
                    });
                }
                continue;
            }
            for &(name, open) in &order {
                let set_name = format!("{set:?}");
                let Some(message) = failure_of(catch_unwind(AssertUnwindSafe(|| {
                    run_one(name, open, set, setup, round, &mut *sink)
                }))) else {
                    continue;
                };
                eprintln!("[{name}] set {set_name} FAILED: {message}");
                failures.push(Failure {
                    engine: name.to_string(),
                    set: set_name,
                    message,
                });
            }
        }
    }
    failures
}

/// The tables (and ratios by round) of a run, for people.
fn print_summary(
    args: &StoreArgs,
    selected: &[(&'static str, Opener)],
    sizes: &Sizes,
    results: &[Measurement],
    failures: &[Failure],
    errors: u64,
) {
    let names: Vec<&str> = selected.iter().map(|(n, _)| *n).collect();
    let descriptions: BTreeMap<String, String> = sizes.descriptions();
    println!(
        "nacre-bench store{}: durable commits everywhere, cache {} MiB per engine",
        if args.quick { " --quick" } else { "" },
        args.cache_mb
    );
    report::print_tables(results, failures, &names, &descriptions);
    if args.rounds > 1 {
        report::print_ratios_by_round(results, &names, args.rounds);
    }
    if errors > 0 {
        println!();
        println!("{errors} read ERRORS (missing or wrong values) — see the rows marked ERRORS");
    }
}

fn run_one(
    name: &str,
    open: Opener,
    set: Set,
    setup: &Setup<'_>,
    round: u32,
    sink: &mut dyn FnMut(Measurement),
) -> BenchResult<()> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("nacre-bench-{name}-{set:?}-"))
        .tempdir_in(setup.base_dir)?;
    eprintln!("[{name}] set {set:?} in {}", dir.path().display());
    let mut engine = open(dir.path(), setup.cfg)?;
    let mut run = Run {
        engine: name,
        dir: dir.path(),
        seed: setup.seed,
        round,
        sink,
    };
    match set {
        Set::A => workloads::run_set_a(&mut engine, &mut run, setup.sizes, &setup.data.a)?,
        Set::B => workloads::run_set_b(&mut engine, &mut run, setup.sizes, setup.data)?,
        Set::C => unreachable!("set C runs every engine at once (run_set_c)"),
    }
    engine.close()?;
    dir.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Sizes {
        Sizes {
            a_load: 3_000,
            a_single_commits: 5,
            a_batch_commits: 3,
            a_batch_len: 100,
            a_reads: 2_000,
            a_ranges: 300,
            b_pairs: 4_096,
            b_batch_len: 256,
            b_sorted_run: 512,
            b_random_inserts: 1_024,
            b_concurrent_ops: 64,
            b_writers: 2,
        }
    }

    /// Tiny sizes, their data, small caches and a base directory.
    struct Fixture {
        sizes: Sizes,
        data: Datasets,
        cfg: EngineConfig,
        base: tempfile::TempDir,
        seed: u64,
    }

    impl Fixture {
        fn new(seed: u64) -> Fixture {
            let sizes = tiny();
            Fixture {
                data: Datasets::generate(seed, &sizes),
                sizes,
                cfg: EngineConfig {
                    cache_bytes: 8 << 20,
                },
                base: tempfile::tempdir().unwrap(),
                seed,
            }
        }

        fn setup(&self) -> Setup<'_> {
            Setup {
                base_dir: self.base.path(),
                cfg: &self.cfg,
                sizes: &self.sizes,
                data: &self.data,
                seed: self.seed,
            }
        }
    }

    /// Every engine in this build runs both sets end to end, and every read
    /// the workloads check (values, range order, spot checks after removal
    /// and compaction) comes back right.
    #[test]
    fn every_engine_runs_both_sets_without_a_wrong_read() {
        let f = Fixture::new(7);
        for &(name, open) in engines::ALL {
            for set in [Set::A, Set::B] {
                let mut results = Vec::new();
                let mut sink = |m: Measurement| results.push(m);
                run_one(name, open, set, &f.setup(), 0, &mut sink)
                    .unwrap_or_else(|e| panic!("{name} set {set:?}: {e}"));
                assert!(!results.is_empty(), "{name} set {set:?} measured nothing");
                for m in &results {
                    assert_eq!(
                        m.errors, 0,
                        "{name} {}: {} wrong reads",
                        m.workload, m.errors
                    );
                }
            }
        }
    }

    /// Set C works on every engine at once: each takes every turn, every
    /// read (and every committed put, read back) is right, and nacre's
    /// measurements carry its ratio to each other engine over all the
    /// slices.
    #[test]
    fn set_c_reads_on_every_engine_in_turns() {
        let f = Fixture::new(11);
        let sizes = &f.sizes;
        let mut results = Vec::new();
        let mut sink = |m: Measurement| results.push(m);
        side_by_side::run_set_c(engines::ALL, &f.setup(), 0, &mut sink).unwrap();
        let per_slice = sizes.b_pairs / side_by_side::SLICES;
        // tiny(): 5 single commits spread over 64 slices is one a slice;
        // batches take what fresh keys are left, 15 a slice.
        let slices = side_by_side::SLICES;
        let left = sizes.b_random_inserts - slices;
        let expected_ops = [
            ("C.random_read", per_slice * slices),
            ("C.hotspot_read", per_slice * slices),
            ("C.single_commits", slices),
            ("C.batch_commits", left / slices * slices),
        ];
        for (workload, ops) in expected_ops {
            for &(name, _) in engines::ALL {
                let m = results
                    .iter()
                    .find(|m| m.engine == name && m.workload == workload)
                    .unwrap_or_else(|| panic!("{name} has no {workload}"));
                assert_eq!(m.errors, 0, "{name} {workload}: wrong reads");
                assert_eq!(m.ops, ops as u64, "{name} {workload}");
                assert!(m.ops_per_s.unwrap() > 0.0);
                let others: Vec<&str> = m.by_slice.iter().map(|r| r.other.as_str()).collect();
                if name == "nacre" {
                    let expected: Vec<&str> = engines::ALL
                        .iter()
                        .map(|(n, _)| *n)
                        .filter(|&n| n != "nacre")
                        .collect();
                    assert_eq!(others, expected, "{workload}");
                    for r in &m.by_slice {
                        assert_eq!(r.slices, side_by_side::SLICES);
                        assert!(r.q1 <= r.median && r.median <= r.q3 && r.q1 > 0.0);
                    }
                } else {
                    assert!(others.is_empty(), "only nacre's rows carry ratios");
                }
            }
        }
        // Nothing left behind in the base directory.
        assert_eq!(std::fs::read_dir(f.base.path()).unwrap().count(), 0);
    }
}
