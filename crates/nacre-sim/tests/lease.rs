//! The leader lease against its clock assumption: a leader whose clock
//! runs slow is cut off from the others while clients keep reading from it
//! (`Scenario::SlowLeaderCutOff`, docs/testing.md). Past the documented
//! bound (clock rates within 2x) it serves stale reads and the checker says
//! so; inside the bound, or with quorum read-index rounds, it does not.

use nacre_sim::{run_seed, Report, Scenario, SimConfig};

const SEEDS: std::ops::RangeInclusive<u64> = 1..=SEEDS_MAX;
const SEEDS_MAX: u64 = 8;

fn cutoff(slowdown_permille: u64, lease: bool) -> SimConfig {
    SimConfig {
        workload_ms: 2_500,
        heal_ms: 2_000,
        faults: false,
        reads_by_lease: Some(lease),
        scenario: Some(Scenario::SlowLeaderCutOff {
            leader_clock_slowdown_permille: slowdown_permille,
        }),
        ..SimConfig::default()
    }
}

fn describe(r: &Report, slowdown_permille: u64, lease: bool) -> String {
    format!(
        "seed {}: {:?}\n{}\nreplay: cargo run --release -p nacre-sim -- --seeds 1 --start {} \
         --workload-ms 2500 --lease {lease} --slow-leader-cutoff {slowdown_permille} --trace",
        r.seed,
        r.stats,
        r.failures.join("\n"),
        r.seed
    )
}

/// The scenario ran: the leader was cut off and the majority went on
/// acknowledging writes without it.
fn assert_cut_happened(r: &Report, slowdown_permille: u64, lease: bool) {
    assert!(
        r.stats.cutoff_at_ms > 0 && r.stats.cutoff_writes_acked > 0,
        "{}",
        describe(r, slowdown_permille, lease)
    );
}

#[test]
fn a_slow_leader_past_the_bound_serves_stale_reads() {
    let mut caught = Vec::new();
    for seed in SEEDS {
        let r = run_seed(seed, cutoff(4_000, true));
        assert_cut_happened(&r, 4_000, true);
        if !r.passed() {
            // The stale read is what fails, not anything else.
            assert!(
                r.failures.len() == 1 && r.failures[0].starts_with("not linearizable"),
                "{}",
                describe(&r, 4_000, true)
            );
            assert!(r.stats.cutoff_reads_after_new_write > 0);
            caught.push(seed);
        }
    }
    eprintln!("4x slow leader: stale reads caught on seeds {caught:?}");
    assert!(
        !caught.is_empty(),
        "no stale read within {SEEDS_MAX} seeds with the leader's clock 4x slow"
    );
}

#[test]
fn a_slow_leader_inside_the_bound_stays_safe() {
    for seed in SEEDS {
        let r = run_seed(seed, cutoff(1_500, true));
        assert!(r.passed(), "{}", describe(&r, 1_500, true));
        assert_cut_happened(&r, 1_500, true);
        // The old leader did answer from its lease during the cut, but
        // only before the new leader acknowledged anything.
        assert!(
            r.stats.cutoff_reads_answered > 0,
            "{}",
            describe(&r, 1_500, true)
        );
        assert_eq!(r.stats.cutoff_reads_after_new_write, 0);
    }
}

#[test]
fn read_index_rounds_stay_safe_whatever_the_clock() {
    for seed in SEEDS {
        let r = run_seed(seed, cutoff(4_000, false));
        assert!(r.passed(), "{}", describe(&r, 4_000, false));
        assert_cut_happened(&r, 4_000, false);
        assert_eq!(r.stats.cutoff_reads_after_new_write, 0);
    }
}
