//! Availability under partial partitions (`Scenario::FollowerCuts`,
//! docs/testing.md): one follower at a time is cut off, half the time just
//! after the leader's link to another follower was cut and healed, over a
//! network that models the transport's connections. The leader keeps a
//! quorum throughout, so it must never step down, and writes must not
//! stall. The transport as it was, which did not notice a stalled
//! connection (`Bug::StalledLinks`), is caught.

use nacre_sim::{run_seed, Bug, Report, Scenario, SimConfig};

fn follower_cuts(planted: Option<Bug>) -> SimConfig {
    SimConfig {
        workload_ms: 3_000,
        heal_ms: 2_000,
        faults: false,
        planted,
        scenario: Some(Scenario::FollowerCuts),
        ..SimConfig::default()
    }
}

fn describe(r: &Report, planted: &str) -> String {
    format!(
        "seed {}: {:?}\n{}\nreplay: cargo run --release -p nacre-sim -- --seeds 1 --start {} \
         --workload-ms 3000 --follower-cuts{planted} --trace",
        r.seed,
        r.stats,
        r.failures.join("\n"),
        r.seed
    )
}

#[test]
fn a_leader_that_keeps_a_quorum_never_steps_down() {
    // A round takes up to 3.6 s, so a seed whose leader came late may
    // have time for one only; the seeds together must cut many.
    let (mut cuts, mut stalled) = (0, 0);
    for seed in 1..=6 {
        let r = run_seed(seed, follower_cuts(None));
        assert!(r.passed(), "{}", describe(&r, ""));
        assert!(
            r.stats.follower_cuts >= 1,
            "the scenario did not run: {}",
            describe(&r, "")
        );
        assert_eq!(r.stats.leader_step_downs, 0);
        cuts += r.stats.follower_cuts;
        stalled += r.stats.links_stalled;
    }
    assert!(
        cuts >= 8 && stalled > 0,
        "{cuts} cuts, {stalled} links stalled"
    );
}

#[test]
fn a_transport_that_misses_stalled_connections_is_caught() {
    let caught = (1..=10).find_map(|seed| {
        let r = run_seed(seed, follower_cuts(Some(Bug::StalledLinks)));
        (!r.passed()).then_some(r)
    });
    let r = caught.expect("the stalled-links bug was not caught within 10 seeds");
    assert!(
        r.failures
            .iter()
            .all(|f| f.contains("follower cuts") && !f.starts_with("not linearizable")),
        "{}",
        describe(&r, " --planted stalled-links")
    );
    assert!(r.stats.leader_step_downs > 0);
    let correct = run_seed(r.seed, follower_cuts(None));
    assert!(correct.passed(), "{}", describe(&correct, ""));
}
