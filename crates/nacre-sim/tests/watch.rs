//! Watchers in the simulator: on fixed seeds the correct build's watches
//! deliver exactly the committed changes of their spans through crashes,
//! snapshots, moves between nodes and slow readers; a hub that loses the
//! first revision of a resumed watch, or sends the one before it again,
//! is caught.

use nacre_sim::{run_seed, Bug, Report, SimConfig};

fn short() -> SimConfig {
    SimConfig {
        workload_ms: 5_000,
        heal_ms: 3_000,
        ..SimConfig::default()
    }
}

fn describe(r: &Report) -> String {
    format!(
        "seed {}: {:?}\n{}\nreplay: cargo run --release -p nacre-sim -- --seeds 1 --start {} \
         --workload-ms 5000 --trace",
        r.seed,
        r.stats,
        r.failures.join("\n"),
        r.seed
    )
}

#[test]
fn watchers_get_every_committed_change_on_fixed_seeds() {
    let (mut started, mut resumed, mut events) = (0, 0, 0);
    for seed in 1..=4 {
        let r = run_seed(seed, short());
        assert!(r.passed(), "{}", describe(&r));
        started += r.stats.watches_started;
        resumed += r.stats.watches_resumed;
        events += r.stats.watch_events;
    }
    // Watchers must really watch, move and resume, or passing means
    // nothing.
    assert!(started > 20, "only {started} watches registered");
    assert!(resumed > 0, "no watch resumed after its node went down");
    assert!(events > 1000, "only {events} events received");
}

#[test]
fn a_watch_that_skips_a_resumed_revision_is_caught() {
    caught_within(Bug::WatchSkipsEvent, 10);
}

#[test]
fn a_watch_that_repeats_a_revision_on_resuming_is_caught() {
    caught_within(Bug::WatchRepeatsRevision, 10);
}

/// Runs seeds until `bug` is caught by the watch check (at most
/// `seeds_max`), then checks the correct build passes that seed.
fn caught_within(bug: Bug, seeds_max: u64) {
    for seed in 1..=seeds_max {
        let planted = SimConfig {
            planted: Some(bug),
            ..short()
        };
        let r = run_seed(seed, planted);
        if !r.passed() {
            assert!(
                r.failures.iter().any(|f| f.starts_with("watcher")),
                "caught by another check: {}",
                describe(&r)
            );
            let clean = run_seed(seed, short());
            assert!(clean.passed(), "{}", describe(&clean));
            return;
        }
    }
    panic!("{bug:?} was not caught within {seeds_max} seeds");
}
