//! Leases under the random faults (docs/testing.md, "Leases"): holders
//! grant leases, attach keys, keep some alive and drop others; no lease
//! may end before its TTL since its last acknowledged renewal, and every
//! lease nobody renews must end once the cluster is healthy. The planted
//! bug that cuts deadlines short must be caught.

use nacre_sim::{run_seed, Bug, Report, SimConfig};

fn with_leases() -> SimConfig {
    SimConfig {
        workload_ms: 3_000,
        heal_ms: 3_000,
        leases: true,
        ..SimConfig::default()
    }
}

fn describe(r: &Report) -> String {
    format!(
        "seed {}: {:?}\n{}\nreplay: cargo run --release -p nacre-sim -- --seeds 1 --start {} \
         --workload-ms 3000 --leases --trace",
        r.seed,
        r.stats,
        r.failures.join("\n"),
        r.seed
    )
}

#[test]
fn leases_end_neither_early_nor_late_through_faults() {
    let (mut granted, mut renewed, mut expired, mut attached) = (0, 0, 0, 0);
    for seed in 1..=6 {
        let r = run_seed(seed, with_leases());
        assert!(r.passed(), "{}", describe(&r));
        granted += r.stats.leases_granted;
        renewed += r.stats.lease_keep_alives_acked;
        expired += r.stats.leases_expired;
        attached += r.stats.lease_keys_attached;
    }
    // Passing means something only if leases were granted, kept alive,
    // held keys, and expired.
    assert!(granted >= 30, "only {granted} leases granted");
    assert!(renewed >= 60, "only {renewed} keep-alives acknowledged");
    assert!(attached >= 30, "only {attached} keys attached");
    assert!(expired >= 20, "only {expired} leases expired");
}

#[test]
fn deadlines_cut_short_are_caught() {
    let cfg = SimConfig {
        planted: Some(Bug::LeaseShortTtl),
        ..with_leases()
    };
    let caught = (1..=5).find_map(|seed| {
        let r = run_seed(seed, cfg.clone());
        (!r.passed()).then_some(r)
    });
    let r = caught.expect("lease-short-ttl not caught in seeds 1..=5");
    assert!(
        r.failures.iter().any(|f| f.contains("early")),
        "{}",
        describe(&r)
    );
    // The correct build passes the seed that caught it.
    let fixed = run_seed(r.seed, with_leases());
    assert!(fixed.passed(), "{}", describe(&fixed));
}
