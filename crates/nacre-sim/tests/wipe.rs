//! Raft's amnesia case (docs/testing.md, "A node that lost its data"):
//! writes acknowledged by a bare quorum while the other voters lag, then a
//! follower of that quorum loses its disk and restarts with its config
//! while the leader is down. The correct build must lose nothing, and the
//! seeds must really produce that situation; the planted bug that brings
//! the wiped node back as a voter with an empty log must be caught.

use nacre_sim::{run_seed, Bug, Report, Scenario, SimConfig};

fn wipe() -> SimConfig {
    SimConfig {
        workload_ms: 3_000,
        heal_ms: 3_000,
        scenario: Some(Scenario::WipeWithLaggingVoter),
        ..SimConfig::default()
    }
}

fn describe(r: &Report) -> String {
    format!(
        "seed {}: {:?}\n{}\nreplay: cargo run --release -p nacre-sim -- --seeds 1 --start {} \
         --workload-ms 3000 --wipe-lagging --trace",
        r.seed,
        r.stats,
        r.failures.join("\n"),
        r.seed
    )
}

#[test]
fn a_wiped_node_waits_for_the_leader_and_no_write_is_lost() {
    let (mut wipes, mut lagging_writes) = (0, 0);
    for seed in 1..=8 {
        let r = run_seed(seed, wipe());
        assert!(r.passed(), "{}", describe(&r));
        wipes += r.stats.wipes;
        lagging_writes += r.stats.lagging_writes_acked;
    }
    // Passing means something only if every seed wiped a node after
    // writes that lived on a bare quorum.
    assert_eq!(wipes, 8, "not every seed wiped a node");
    assert!(lagging_writes >= 8, "only {lagging_writes} writes at risk");
}

#[test]
fn a_wiped_node_that_bootstraps_anyway_is_caught() {
    for seed in 1..=20 {
        let cfg = SimConfig {
            planted: Some(Bug::BootstrapAnyway),
            ..wipe()
        };
        let r = run_seed(seed, cfg);
        if r.passed() {
            continue;
        }
        assert!(
            r.failures
                .iter()
                .any(|f| f.starts_with("acknowledged write lost")
                    || f.starts_with("committed entry")),
            "caught, but not as a lost write: {}",
            describe(&r)
        );
        let clean = run_seed(seed, wipe());
        assert!(clean.passed(), "{}", describe(&clean));
        return;
    }
    panic!("BootstrapAnyway was not caught within 20 seeds");
}
