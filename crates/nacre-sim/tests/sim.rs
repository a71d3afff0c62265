//! The simulator end to end: the correct build passes a fixed set of
//! seeds, each planted bug is caught within a bounded number of seeds, and
//! a seed replays exactly.

use nacre_sim::{run_seed, Bug, Report, SimConfig};

/// Short runs keep the debug-build test time low; faults come every
/// 0.2–1.5 simulated seconds, so each run still sees several.
fn short() -> SimConfig {
    SimConfig {
        workload_ms: 5_000,
        heal_ms: 3_000,
        ..SimConfig::default()
    }
}

fn describe(r: &Report) -> String {
    format!(
        "seed {}: {:?}\n{}\nreplay: cargo run --release -p nacre-sim -- --seeds 1 --start {} --workload-ms 5000 --trace",
        r.seed,
        r.stats,
        r.failures.join("\n"),
        r.seed
    )
}

#[test]
fn correct_build_passes_fixed_seeds() {
    let (mut crashes, mut partitions, mut acked, mut open) = (0, 0, 0, 0);
    let (mut snapshots, mut removed, mut promoted, mut layer) = (0, 0, 0, 0);
    let (mut fenced, mut refused) = (0, 0);
    for seed in 1..=8 {
        let r = run_seed(seed, short());
        assert!(r.passed(), "{}", describe(&r));
        crashes += r.stats.crashes;
        partitions += r.stats.partitions;
        acked += r.stats.writes_acked;
        open += r.stats.writes_open;
        snapshots += r.stats.snapshots_installed;
        removed += r.stats.members_removed;
        promoted += r.stats.learners_promoted;
        layer += r.stats.answers_via_server;
        fenced += r.stats.fenced_writes_acked;
        refused += r.stats.fenced_writes_refused;
    }
    // The seeds must actually exercise faults and produce a real history,
    // or passing them would mean nothing.
    assert!(crashes > 5, "only {crashes} crashes");
    assert!(partitions > 3, "only {partitions} partitions");
    assert!(acked > 1000, "only {acked} acknowledged writes");
    assert!(open > 0, "no write with an unknown outcome");
    // The tlog is compacted, so nodes that fall behind catch up by
    // snapshot: that path must be exercised too.
    assert!(snapshots > 0, "no snapshot was installed");
    // Members are removed, wiped, added back and promoted among the faults,
    // and half the requests go through the request layer.
    assert!(
        removed > 0 && promoted > 0,
        "{removed} removed, {promoted} promoted"
    );
    assert!(
        layer > 1000,
        "only {layer} answers through the request layer"
    );
    // Lock holders write under their fence, and stalled ones are refused.
    assert!(
        fenced > 100 && refused > 10,
        "{fenced} fenced writes acknowledged, {refused} refused"
    );
}

#[test]
fn a_fence_the_state_machine_skips_is_caught_by_the_fence_check() {
    let planted = SimConfig {
        planted: Some(Bug::SkipFence),
        ..short()
    };
    let r = run_seed(1, planted);
    assert!(
        r.failures.iter().any(|f| f.contains("interleaved")),
        "skip-fence not caught by the fence check on seed 1: {:?}",
        r.failures
    );
    caught_within(Bug::SkipFence, 5);
}

/// Runs seeds until `bug` is caught (at most `seeds_max`), then checks the
/// correct build passes that same seed.
fn caught_within(bug: Bug, seeds_max: u64) {
    caught_within_config(bug, seeds_max, short());
}

fn caught_within_config(bug: Bug, seeds_max: u64, cfg: SimConfig) {
    for seed in 1..=seeds_max {
        let r = run_seed(
            seed,
            SimConfig {
                planted: Some(bug),
                ..cfg.clone()
            },
        );
        if !r.passed() {
            let clean = run_seed(seed, cfg);
            assert!(clean.passed(), "{}", describe(&clean));
            return;
        }
    }
    panic!("{bug:?} was not caught within {seeds_max} seeds");
}

#[test]
fn follower_reads_are_caught() {
    caught_within(Bug::FollowerReads, 50);
}

#[test]
fn ack_before_fsync_is_caught() {
    caught_within(Bug::AckBeforeFsync, 50);
}

#[test]
fn skipped_guard_is_caught() {
    caught_within(Bug::SkipGuard, 50);
}

#[test]
fn skipped_session_deduplication_is_caught() {
    // It needs a write that applied and whose answer was lost, then a
    // retry: the rarest of the planted bugs to meet (seed 58 of this
    // configuration, 2026-12-07). The coordination traffic (fenced writes,
    // leases, watches) is left out: it changes what every seed runs, and
    // this search is about the client's writes alone.
    let writes_only = SimConfig {
        fencers: 0,
        ..short()
    };
    caught_within_config(Bug::SkipSessions, 80, writes_only);
}

#[test]
fn follower_reads_fail_the_linearizability_check_itself() {
    // The replay check cannot see a stale read (the state was real, just
    // old): only the linearizability search can.
    let r = run_seed(
        3,
        SimConfig {
            planted: Some(Bug::FollowerReads),
            faults: false,
            ..short()
        },
    );
    assert!(
        r.failures.iter().any(|f| f.starts_with("not linearizable")),
        "{}",
        describe(&r)
    );
}

#[test]
fn a_seed_replays_identically() {
    let cfg = SimConfig {
        trace: true,
        ..short()
    };
    let a = run_seed(11, cfg.clone());
    let b = run_seed(11, cfg);
    assert!(a.passed(), "{}", describe(&a));
    assert!(!a.history.is_empty() && a.trace.len() > 100);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.history, b.history);
    let other = run_seed(12, short());
    assert_ne!(a.fingerprint, other.fingerprint);
}

#[test]
fn requests_through_the_request_layer_are_checked() {
    // Half the requests go through the node's request layer by default:
    // they must have been answered, and the history still passes.
    let r = run_seed(5, short());
    assert!(r.passed(), "{}", describe(&r));
    assert!(
        r.stats.answers_via_server > 100,
        "only {} of {} requests through the layer answered",
        r.stats.answers_via_server,
        r.stats.requests_via_server
    );
    // A layer that skips the read barrier is caught, by the
    // linearizability search ...
    caught_within(Bug::LayerSkipsBarrier, 10);
    let planted = SimConfig {
        planted: Some(Bug::LayerSkipsBarrier),
        faults: false,
        ..short()
    };
    let caught = run_seed(1, planted.clone());
    assert!(
        caught
            .failures
            .iter()
            .any(|f| f.starts_with("not linearizable")),
        "{}",
        describe(&caught)
    );
    // ... and only because requests go through the layer: sent straight
    // to the nodes, the same seed passes.
    let direct = run_seed(
        1,
        SimConfig {
            via_server_permille: 0,
            ..planted
        },
    );
    assert!(direct.passed(), "{}", describe(&direct));
    assert_eq!(direct.stats.requests_via_server, 0);
}
