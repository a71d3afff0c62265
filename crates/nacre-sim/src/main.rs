//! Soak runner: many seeds, and for each failure the command that replays
//! it with a trace.

use std::time::Instant;

use clap::Parser;
use nacre_sim::{run_seed, Bug, Report, Scenario, SimConfig};

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
    /// skip-sessions,
    /// tick-lease, stalled-links, layer-skips-barrier, bootstrap-anyway,
    /// skip-fence, watch-skips-event, watch-repeats-revision,
    /// lease-short-ttl (with --leases).
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
    #[arg(long, conflicts_with_all = ["follower_cuts", "wipe_lagging"])]
    leader_pause: bool,
    /// Run the follower-cuts scenario instead of random faults: one
    /// follower at a time is cut off while the leader keeps the others,
    /// and the leader must never step down.
    #[arg(long, conflicts_with = "slow_leader_cutoff")]
    follower_cuts: bool,
    /// Of the client requests, how many per mille go through the node's
    /// request layer rather than straight to the node.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=1000))]
    via_server_permille: u32,
    /// Run the wipe scenario instead of random faults: with voters lagging,
    /// a follower of the bare quorum loses its disk and restarts with its
    /// config while the leader is down.
    #[arg(long, conflicts_with_all = ["slow_leader_cutoff", "follower_cuts"])]
    wipe_lagging: bool,
    /// Lease holders in the workload (grants, keys attached, keep-alives,
    /// revokes) and the lease checks.
    #[arg(long)]
    leases: bool,
}

/// The scenario the flags ask for, if any.
fn scenario(args: &Args) -> Option<Scenario> {
    if let Some(p) = args.slow_leader_cutoff {
        return Some(Scenario::SlowLeaderCutOff {
            leader_clock_slowdown_permille: p,
        });
    }
    if args.leader_pause {
        return Some(Scenario::LeaderPause);
    }
    if args.wipe_lagging {
        return Some(Scenario::WipeWithLaggingVoter);
    }
    args.follower_cuts.then_some(Scenario::FollowerCuts)
}

/// What the seeds of one soak add up to.
#[derive(Default)]
struct Totals {
    failed: u64,
    unknown: u64,
    sim_ms: u64,
    ops: u64,
    /// Slow-leader cut-off: seeds with a cut, reads the cut-off leader
    /// answered, those after a newer write, and seeds with any.
    cuts: u64,
    cut_reads: u64,
    late_reads: u64,
    late_seeds: u64,
    /// Pauses: in all, with a write acknowledged elsewhere meanwhile, and
    /// reads sent to the paused leader after it, answered.
    pauses: u64,
    pauses_new: u64,
    pause_reads: u64,
    pause_answered: u64,
    /// Requests through the request layer, and of those answered.
    via_server: u64,
    via_answered: u64,
    /// Follower cuts: rounds, links that stalled, the longest stretch
    /// without an acknowledged write (and its seed), step-downs.
    follower_cuts: u64,
    stalls: u64,
    gap_ms: u64,
    gap_seed: u64,
    step_downs: u64,
    /// Wipes, and writes acknowledged by the bare quorum before them.
    wipes: u64,
    lagging_writes: u64,
    /// Membership changes: removed, added back, promoted, sent again.
    removed: u64,
    added: u64,
    promoted: u64,
    looked_up: u64,
    /// Fenced writes: acknowledged, refused (`Fenced`), lock expiries.
    fenced_acked: u64,
    fenced_refused: u64,
    lock_expiries: u64,
    /// Watches: registered, resumed after a node went down, ended
    /// `Compacted` or `SlowConsumer`; events received.
    watches: u64,
    watches_resumed: u64,
    watches_compacted: u64,
    watches_slow: u64,
    watch_events: u64,
    /// Leases: granted, keep-alives acknowledged, keys attached, ended by
    /// expiry and by revoke.
    leases_granted: u64,
    keep_alives: u64,
    lease_keys: u64,
    leases_expired: u64,
    leases_revoked: u64,
}

impl Totals {
    fn add(&mut self, seed: u64, r: &Report) {
        let st = &r.stats;
        self.sim_ms += r.sim_ms;
        self.ops += r.history.len() as u64;
        self.failed += u64::from(!r.passed());
        self.unknown += u64::from(!r.unknown.is_empty());
        self.cuts += u64::from(st.cutoff_at_ms > 0);
        self.cut_reads += st.cutoff_reads_answered;
        self.late_reads += st.cutoff_reads_after_new_write;
        self.late_seeds += u64::from(st.cutoff_reads_after_new_write > 0);
        self.pauses += st.pauses;
        self.pauses_new += st.pauses_with_new_write;
        self.pause_reads += st.pause_reads_sent;
        self.pause_answered += st.pause_reads_answered;
        self.via_server += st.requests_via_server;
        self.via_answered += st.answers_via_server;
        self.follower_cuts += st.follower_cuts;
        self.stalls += st.links_stalled;
        self.step_downs += st.leader_step_downs;
        if st.longest_write_gap_ms > self.gap_ms {
            (self.gap_ms, self.gap_seed) = (st.longest_write_gap_ms, seed);
        }
        self.wipes += st.wipes;
        self.lagging_writes += st.lagging_writes_acked;
        self.removed += st.members_removed;
        self.added += st.learners_added;
        self.promoted += st.learners_promoted;
        self.looked_up += st.membership_retried;
        self.fenced_acked += st.fenced_writes_acked;
        self.fenced_refused += st.fenced_writes_refused;
        self.lock_expiries += st.lock_expiries;
        self.watches += st.watches_started;
        self.watches_resumed += st.watches_resumed;
        self.watches_compacted += st.watches_compacted;
        self.watches_slow += st.watches_slow;
        self.watch_events += st.watch_events;
        self.leases_granted += st.leases_granted;
        self.keep_alives += st.lease_keep_alives_acked;
        self.lease_keys += st.lease_keys_attached;
        self.leases_expired += st.leases_expired;
        self.leases_revoked += st.leases_revoked;
    }

    /// The summary lines: the seeds, then what the scenario asked for
    /// found.
    fn print(&self, args: &Args, elapsed_s: f64) {
        let t = self;
        println!(
            "{} seeds ({}..{}), {} failed, {} undecided; {} operations; \
             {:.2} simulated hours in {elapsed_s:.1}s",
            args.seeds,
            args.start,
            args.start + args.seeds,
            t.failed,
            t.unknown,
            t.ops,
            t.sim_ms as f64 / 3_600_000.0,
        );
        if args.slow_leader_cutoff.is_some() {
            println!(
                "slow-leader cut-off: {} cuts; the cut-off leader answered {} consistent \
                 reads during them, {} of them after another node acknowledged a write \
                 (in {} seeds)",
                t.cuts, t.cut_reads, t.late_reads, t.late_seeds
            );
        }
        println!("pauses: {}", t.pauses);
        println!(
            "membership: {} members removed, {} added back as learners, {} promoted; {} changes \
             sent again",
            t.removed, t.added, t.promoted, t.looked_up
        );
        println!(
            "through the request layer: {} requests, {} answered",
            t.via_server, t.via_answered
        );
        println!(
            "fenced writes: {} acknowledged, {} refused as fenced; {} lock expiries",
            t.fenced_acked, t.fenced_refused, t.lock_expiries
        );
        println!(
            "watches: {} registered, {} resumed after their node went down, {} ended \
             compacted, {} ended slow; {} events received and checked",
            t.watches, t.watches_resumed, t.watches_compacted, t.watches_slow, t.watch_events
        );
        if args.leader_pause {
            println!(
                "leader pause: {} pauses with a write acknowledged elsewhere; {} reads of it \
                 sent to the paused leader, {} answered",
                t.pauses_new, t.pause_reads, t.pause_answered
            );
        }
        if args.follower_cuts {
            println!(
                "follower cuts: {} followers cut off, {} stalled links redialled, {} \
                 step-downs; longest stretch without an acknowledged write {} ms (seed {})",
                t.follower_cuts, t.stalls, t.step_downs, t.gap_ms, t.gap_seed
            );
        }
        if args.leases {
            println!(
                "leases: {} granted, {} keep-alives acknowledged, {} keys attached; {} ended \
                 by expiry, {} by revoke",
                t.leases_granted, t.keep_alives, t.lease_keys, t.leases_expired, t.leases_revoked
            );
        }
        if args.wipe_lagging {
            println!(
                "wipe with a lagging voter: {} disks wiped, after {} writes acknowledged by \
                 the bare quorum",
                t.wipes, t.lagging_writes
            );
        }
    }
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let mut totals = Totals::default();
    for seed in args.start..args.start + args.seeds {
        let cfg = SimConfig {
            trace: args.trace,
            workload_ms: args.workload_ms,
            planted: args.planted,
            nodes: args.nodes,
            reads_by_lease: args.lease,
            clock_drift_permille_max: args.drift_permille,
            scenario: scenario(&args),
            via_server_permille: args.via_server_permille,
            leases: args.leases,
            ..SimConfig::default()
        };
        let r = run_seed(seed, cfg);
        totals.add(seed, &r);
        if args.trace {
            for line in &r.trace {
                println!("{line}");
            }
            println!("seed {seed}: {:?}", r.stats);
        }
        if !r.unknown.is_empty() {
            println!("seed {seed}: undecided: {}", r.unknown.join("; "));
        }
        if !r.passed() {
            println!("seed {seed}: FAILED");
            for f in &r.failures {
                println!("  {f}");
            }
            println!("  replay: {}", replay_command(&args, seed));
        }
    }
    totals.print(&args, started.elapsed().as_secs_f64());
    if totals.failed > 0 {
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
    if args.follower_cuts {
        extra.push_str(" --follower-cuts");
    }
    if args.wipe_lagging {
        extra.push_str(" --wipe-lagging");
    }
    if args.leases {
        extra.push_str(" --leases");
    }
    format!(
        "cargo run --release -p nacre-sim -- --seeds 1 --start {seed} --workload-ms {}{planted}{extra} --trace",
        args.workload_ms
    )
}
