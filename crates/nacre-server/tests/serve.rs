//! `serve` (what `nacre serve` runs) ends when the node's raft loop ends:
//! a node whose loop failed exits with that failure, instead of living on
//! with its client port up, answering every request with `GoingDown`.

use std::time::Duration;

use nacre_server::{ServerConfig, ServerError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_the_error_that_stopped_the_raft_loop() {
    let dir = tempfile::tempdir().unwrap();
    // The node's peer port is held by someone else, as when an outgoing
    // connection took it: the loop cannot listen there and stops.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = taken.local_addr().unwrap().to_string();
    let text = format!(
        "cluster_id = \"c\"\n\
         [[nodes]]\nname = \"n1\"\nclient = \"127.0.0.1:0\"\npeer = \"{peer}\"\ndata_dir = {:?}\n\
         [[nodes]]\nname = \"n2\"\nclient = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\ndata_dir = {:?}\n",
        dir.path().join("n1").display().to_string(),
        dir.path().join("n2").display().to_string(),
    );
    let mut cfg = ServerConfig::from_toml(&text).unwrap();
    cfg.select_node("n1").unwrap();
    // Never asked to shut down: only the loop's end can make it return.
    let served = tokio::time::timeout(
        Duration::from_secs(60),
        nacre_server::serve(cfg, std::future::pending()),
    )
    .await
    .expect("serve kept running after its raft loop had stopped");
    let err = served.expect_err("the raft loop failed, so serve must fail");
    assert!(
        matches!(&err, ServerError::Listen { addr, .. } if *addr == peer),
        "expected the peer listen error on {peer}, got: {err}"
    );
    drop(taken);
}
