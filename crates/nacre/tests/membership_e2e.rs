//! Membership as an operator does it, with real processes and the CLI: a
//! node started with `--join ENDPOINTS` and no config file says it waits to
//! be added, is added as a learner, catches up and is promoted; a learner
//! that has not caught up is promoted only with `--force`; a member removed
//! while cut off finds out, stops and exits with its own code.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{local_client, Cluster};
use common::{free_port, nacre, ok, ServerProc};
use nacre_client::Consistency;

/// The index a write command printed (`index: N`).
fn index(out: &str) -> u64 {
    out.trim().trim_start_matches("index: ").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_without_a_config_and_catches_up() {
    let c = Cluster::start(3, "tick_ms = 50").await;
    let eps = c.endpoints().join(",");
    c.leader().await;
    for i in 0..50 {
        ok(&eps, &["set", &format!("k{i}"), "v"]);
    }

    // n4: its name and addresses as flags, the members to ask after --join.
    let dir = tempfile::tempdir().unwrap();
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("n4");
    let data_s = data.display().to_string();
    let n4 = ServerProc::start_args(
        &[
            "serve",
            "--join",
            &eps,
            "--node-name",
            "n4",
            "--listen",
            &client,
            "--peer-listen",
            &peer,
            "--data-dir",
            &data_s,
        ],
        &client,
        data,
        dir.path().join("n4.log"),
    );
    n4.wait_log("waiting to be added", Duration::from_secs(20));
    assert!(n4.log().contains("cluster add-learner n4"), "{}", n4.log());
    // Without the cluster's state it serves nothing, not even `any` reads.
    let (code, _, err) = nacre(&client, &["get", "k1", "--consistency", "any"]);
    assert_eq!(code, 4, "{err}");

    ok(
        &eps,
        &[
            "cluster",
            "add-learner",
            "n4",
            "--client",
            &client,
            "--peer",
            &peer,
        ],
    );
    let last = index(&ok(&eps, &["nop"]));
    let view = local_client(&client, Consistency::AtLeast(last), 2_000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while view.get("k49").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "n4 did not catch up:\n{}",
            n4.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n4.wait_log("caught up", Duration::from_secs(20));
    ok(&eps, &["cluster", "promote", "n4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_learner_that_has_not_caught_up_unless_forced() {
    let c = Cluster::start(3, "tick_ms = 50").await;
    let eps = c.endpoints().join(",");
    c.leader().await;
    ok(&eps, &["set", "k", "v"]);
    // n5 is added, but nothing listens at its addresses: the leader never
    // hears from it, so its match index stays 0.
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    ok(
        &eps,
        &[
            "cluster",
            "add-learner",
            "n5",
            "--client",
            &client,
            "--peer",
            &peer,
        ],
    );
    let (code, _, err) = nacre(&eps, &["cluster", "promote", "n5"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[learner_behind]"), "{err}");
    assert!(err.contains("--force"), "{err}");
    let admin = c.client(c.endpoints()).await;
    let has_n5 = |voter: bool| {
        let admin = &admin;
        async move {
            // The node asked may be a follower that applies the latest
            // change a moment after the leader answered.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let members = admin.cluster_status().await.unwrap();
                if members.iter().any(|m| m.name == "n5" && m.voter == voter) {
                    return;
                }
                assert!(Instant::now() < deadline, "n5 voter={voter}? {members:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    has_n5(false).await;

    ok(&eps, &["cluster", "promote", "n5", "--force"]);
    has_n5(true).await;
    // Four voters, three of them up: still a quorum.
    ok(&eps, &["cluster", "remove", "n5"]);
    ok(&eps, &["set", "k", "w"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_cut_off_stops_with_its_own_exit_code() {
    let mut c = Cluster::start(3, "tick_ms = 50").await;
    let leader = c.leader().await;
    let victim = c.names().into_iter().find(|n| *n != leader).unwrap();
    let eps: Vec<String> = c
        .names()
        .into_iter()
        .filter(|n| *n != victim)
        .map(|n| c.client_addr(&n))
        .collect();
    let eps = eps.join(",");
    ok(&eps, &["set", "k", "v"]);
    // Cut off, it cannot hear that its removal committed: the leader
    // stops sending to it once it has applied the change.
    c.isolate(&victim);
    ok(&eps, &["cluster", "remove", &victim]);
    c.heal();
    ok(&eps, &["set", "k", "w"]);

    let p = c.procs.get_mut(&victim).unwrap();
    let code = p.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(78), "{}", p.log());
    let log = p.log();
    assert!(log.contains("removed from the cluster"), "{log}");
    assert!(log.contains("no longer lists it as a member"), "{log}");
}
