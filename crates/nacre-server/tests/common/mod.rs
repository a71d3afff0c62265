//! What the server's tests share: a node driven by hand, and a bare
//! protocol connection (`wire.rs`). Each test file uses a part of it.
#![allow(dead_code)]

pub mod http;
pub mod wire;

use nacre_server::node::{InitialClusterState, NodeOptions};
use nacre_server::state::MemberRecord;

/// A one-member cluster (id 1) in `dir`, with fast ticks; nothing listens
/// (the tests drive the node themselves).
pub fn node_options(dir: &std::path::Path) -> NodeOptions {
    NodeOptions {
        id: 1,
        initial_members: vec![(
            1,
            MemberRecord {
                name: "n1".into(),
                client: "127.0.0.1:1".into(),
                peer: "127.0.0.1:2".into(),
            },
        )],
        initial_cluster_state: InitialClusterState::New,
        preferred_leader: None,
        cluster_id: "c".into(),
        peer_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        tick_ms: 10,
        election_ticks: 10,
        heartbeat_ticks: 1,
        reads_by_lease: true,
        clock: nacre_server::clock::HostClock::shared(),
        proposals_pending_max: 16,
        checkpoint_entries: 100,
        checkpoint_bytes: u64::MAX,
        tlog_tail_entries: 0,
        tlog_tail_bytes: u64::MAX,
        promote_lag_max_entries: 1_000,
        watches: Default::default(),
        // The field exists only when a build turns on the `sim` feature
        // (nacre-sim does, so a workspace build has it).
        #[cfg(feature = "sim")]
        planted: Default::default(),
    }
}

/// A port free now (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three members started together, each with its etcd API where the
/// others know it (`etcd` in `[[nodes]]`), from `config`'s settings for a
/// data directory (but the default tick). Each waits for the others
/// before the cluster exists.
pub async fn three_etcd_nodes(
    dir: &std::path::Path,
    config: impl Fn(&std::path::Path) -> nacre_server::ServerConfig,
) -> Vec<nacre_server::RunningServer> {
    let nodes: Vec<nacre_server::NodeConfig> = (0..3)
        .map(|i| nacre_server::NodeConfig {
            name: format!("n{i}"),
            id: None,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            etcd: Some(format!("127.0.0.1:{}", free_port())),
            admin: Some("127.0.0.1:0".into()),
            data_dir: dir.join(format!("n{i}")),
        })
        .collect();
    let handles: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut c = nacre_server::ServerConfig {
                nodes: nodes.clone(),
                // The default 500 ms election timeout: CI runs many
                // clusters at once on two cores, and a shorter one lets a
                // stalled leader lose its term in the middle of a test.
                tick_ms: 50,
                ..config(&n.data_dir)
            };
            c.select_node(&n.name).unwrap();
            tokio::spawn(nacre_server::start(c))
        })
        .collect();
    let mut servers = Vec::new();
    for h in handles {
        servers.push(h.await.unwrap().expect("a node starts"));
    }
    servers
}
