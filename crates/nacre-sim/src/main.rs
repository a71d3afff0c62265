//! Soak runner: many seeds, and for each failure the command that replays
//! it with a trace.

use std::time::Instant;

use clap::Parser;
use nacre_sim::{run_seed, Bug, Scenario, SimConfig};

#[derive(Parser)]
#[command(about = "Runs simulated Nacre clusters, one per seed, and checks them")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// Print each run's trace (use with one seed to replay a failure).
    #[arg(long)]
    trace: bool,
    /// Simulated milliseconds of workload per seed.
    #[arg(long, default_value_t = 10_000)]
    workload_ms: u64,
    /// Switch on a planted bug: follower-reads, ack-before-fsync, skip-guard,
    /// tick-lease, bootstrap-anyway.
    #[arg(long)]
    planted: Option<Bug>,
    /// Cluster size (default: 3 or 5, chosen by the seed).
    #[arg(long)]
    nodes: Option<usize>,
    /// Consistent reads by lease (true) or read index (false); default:
    /// chosen by the seed.
    #[arg(long)]
    lease: Option<bool>,
    /// Largest clock drift of a node, per mille.
    #[arg(long, default_value_t = 20)]
    drift_permille: u64,
    /// Run the slow-leader cut-off scenario instead of random faults: the
    /// leader's clock slows by this factor, per mille (4000: 4x slow).
    #[arg(long, conflicts_with_all = ["leader_pause", "wipe_lagging"])]
    slow_leader_cutoff: Option<u64>,
    /// Run the leader-pause scenario instead of random faults: the leader
    /// is paused again and again while reads of what the others wrote
    /// queue up at it.
    #[arg(long, conflicts_with = "wipe_lagging")]
    leader_pause: bool,
    /// Run the wipe scenario instead of random faults: with voters lagging,
    /// a follower of the bare quorum loses its disk and restarts with its
    /// config while the leader is down.
    #[arg(long)]
    wipe_lagging: bool,
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let (mut failed, mut unknown, mut sim_ms) = (0u64, 0u64, 0u64);
    let mut ops = 0u64;
    // Slow-leader cut-off: seeds with a cut, reads the cut-off leader
    // answered, those after a newer write, and seeds with any.
    let (mut cuts, mut cut_reads, mut late_reads, mut late_seeds) = (0u64, 0u64, 0u64, 0u64);
    // Pauses: in all, with a write acknowledged elsewhere meanwhile, and
    // reads sent to the paused leader after it, answered.
    let (mut pauses, mut pauses_new, mut pause_reads, mut pause_answered) = (0u64, 0, 0, 0);
    // Wipes, and writes acknowledged by the bare quorum before them.
    let (mut wipes, mut lagging_writes) = (0u64, 0u64);
    for seed in args.start..args.start + args.seeds {
        let cfg = SimConfig {
            trace: args.trace,
            workload_ms: args.workload_ms,
            planted: args.planted,
            nodes: args.nodes,
            reads_by_lease: args.lease,
            clock_drift_permille_max: args.drift_permille,
            scenario: match args.slow_leader_cutoff {
                Some(p) => Some(Scenario::SlowLeaderCutOff {
                    leader_clock_slowdown_permille: p,
                }),
                None if args.wipe_lagging => Some(Scenario::WipeWithLaggingVoter),
                None => args.leader_pause.then_some(Scenario::LeaderPause),
            },
            ..SimConfig::default()
        };
        let r = run_seed(seed, cfg);
        sim_ms += r.sim_ms;
        cuts += u64::from(r.stats.cutoff_at_ms > 0);
        cut_reads += r.stats.cutoff_reads_answered;
        late_reads += r.stats.cutoff_reads_after_new_write;
        late_seeds += u64::from(r.stats.cutoff_reads_after_new_write > 0);
        pauses += r.stats.pauses;
        pauses_new += r.stats.pauses_with_new_write;
        pause_reads += r.stats.pause_reads_sent;
        pause_answered += r.stats.pause_reads_answered;
        wipes += r.stats.wipes;
        lagging_writes += r.stats.lagging_writes_acked;
        ops += r.history.len() as u64;
        if args.trace {
            for line in &r.trace {
                println!("{line}");
            }
            println!("seed {seed}: {:?}", r.stats);
        }
        if !r.unknown.is_empty() {
            unknown += 1;
            println!("seed {seed}: undecided: {}", r.unknown.join("; "));
        }
        if !r.passed() {
            failed += 1;
            println!("seed {seed}: FAILED");
            for f in &r.failures {
                println!("  {f}");
            }
            println!("  replay: {}", replay_command(&args, seed));
        }
    }
    println!(
        "{} seeds ({}..{}), {failed} failed, {unknown} undecided; {ops} operations; \
         {:.2} simulated hours in {:.1}s",
        args.seeds,
        args.start,
        args.start + args.seeds,
        sim_ms as f64 / 3_600_000.0,
        started.elapsed().as_secs_f64()
    );
    if args.slow_leader_cutoff.is_some() {
        println!(
            "slow-leader cut-off: {cuts} cuts; the cut-off leader answered {cut_reads} \
             consistent reads during them, {late_reads} of them after another node \
             acknowledged a write (in {late_seeds} seeds)"
        );
    }
    println!("pauses: {pauses}");
    if args.leader_pause {
        println!(
            "leader pause: {pauses_new} pauses with a write acknowledged elsewhere; \
             {pause_reads} reads of it sent to the paused leader, {pause_answered} answered"
        );
    }
    if args.wipe_lagging {
        println!(
            "wipe with a lagging voter: {wipes} disks wiped, after {lagging_writes} writes \
             acknowledged by the bare quorum"
        );
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The command that replays `seed` with a trace, with this run's flags.
fn replay_command(args: &Args, seed: u64) -> String {
    let planted = args
        .planted
        .map(|_| {
            format!(
                " --planted {}",
                std::env::args()
                    .skip_while(|a| a != "--planted")
                    .nth(1)
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mut extra = args
        .nodes
        .map(|n| format!(" --nodes {n}"))
        .unwrap_or_default();
    if let Some(l) = args.lease {
        extra.push_str(&format!(" --lease {l}"));
    }
    extra.push_str(&format!(" --drift-permille {}", args.drift_permille));
    if let Some(p) = args.slow_leader_cutoff {
        extra.push_str(&format!(" --slow-leader-cutoff {p}"));
    }
    if args.leader_pause {
        extra.push_str(" --leader-pause");
    }
    if args.wipe_lagging {
        extra.push_str(" --wipe-lagging");
    }
    format!(
        "cargo run --release -p nacre-sim -- --seeds 1 --start {seed} --workload-ms {}{planted}{extra} --trace",
        args.workload_ms
    )
}
