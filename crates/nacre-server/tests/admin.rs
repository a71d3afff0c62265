//! The admin HTTP listener's health and status: `/health`, `/ready` and
//! `/status` of a single node that leads, of a node that waits for the
//! rest of its cluster, and of a member whose peers are gone; `ping`
//! telling the same.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nacre_proto::{Request, Response};
use nacre_server::{RunningServer, ServerConfig};

mod common;
use common::http::get_json;
use common::wire::Conn;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        listen: "127.0.0.1:0".into(),
        peer_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        tick_ms: 20,
        ..Default::default()
    }
}

fn admin(s: &RunningServer) -> SocketAddr {
    s.admin_addr().expect("the admin listener is on")
}

async fn ping(addr: SocketAddr) -> String {
    match Conn::open(addr).await.call(Request::Ping).await {
        Response::Text(t) => t,
        other => panic!("ping answered {other:?}"),
    }
}

/// Polls `path` until `want` holds of its answer, at most 10 s.
async fn wait_for(
    addr: SocketAddr,
    path: &str,
    want: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let mut last = None;
    for _ in 0..500 {
        let (code, json) = get_json(addr, path).await;
        if want(code, &json) {
            return (code, json);
        }
        last = Some((code, json));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never answered as wanted; last: {last:?}");
}

#[tokio::test]
async fn a_leading_node_is_healthy_ready_and_reports_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut c = Conn::open(server.local_addr()).await;
    for i in 0..3 {
        let key = Bytes::from(format!("k{i}"));
        let value = Bytes::from_static(b"v");
        let r = c.call(Request::Set { key, value }).await;
        assert!(!matches!(r, Response::Error(_)), "{r:?}");
    }
    let a = admin(&server);
    let (code, health) = wait_for(a, "/health", |code, _| code == 200).await;
    assert_eq!(code, 200);
    assert!(health["reason"].is_null(), "{health}");
    assert_eq!(health["role"], "leader");
    let (code, ready) = get_json(a, "/ready").await;
    assert_eq!(code, 200, "{ready}");

    let (code, status) = get_json(a, "/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["node"], "nacre0");
    assert_eq!(status["role"], "leader");
    assert_eq!(status["store"]["user_keys"], 3, "{status}");
    let applied = status["applied_index"]
        .as_u64()
        .expect("a number, not a string");
    assert!(applied >= 4, "{status}");
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{status}");
    assert_eq!(members[0]["leader"], true);
    assert_eq!(members[0]["lag_entries"], 0, "{status}");
    assert!(status["store"]["bytes_on_disk"].as_u64().unwrap() > 0);

    let line = ping(server.local_addr()).await;
    assert!(line.contains(" healthy; role leader"), "{line}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_waiting_for_its_cluster_is_unhealthy_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<nacre_server::NodeConfig> = (0..3)
        .map(|i| nacre_server::NodeConfig {
            name: format!("n{i}"),
            id: None,
            client: format!("127.0.0.1:{}", common::free_port()),
            peer: format!("127.0.0.1:{}", common::free_port()),
            etcd: None,
            admin: Some("127.0.0.1:0".into()),
            data_dir: dir.path().join(format!("n{i}")),
        })
        .collect();
    // Only n0 starts: it waits for the others before the cluster exists.
    let mut c = ServerConfig {
        nodes,
        ..config(dir.path())
    };
    c.select_node("n0").unwrap();
    let server = nacre_server::start(c).await.unwrap();
    let a = admin(&server);
    let (code, health) = get_json(a, "/health").await;
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["reason"], "creating", "{health}");
    let (code, _) = get_json(a, "/ready").await;
    assert_eq!(code, 503);
    let line = ping(server.local_addr()).await;
    assert!(line.contains("unhealthy (creating)"), "{line}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_member_that_loses_its_peers_becomes_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = common::three_etcd_nodes(dir.path(), config).await;
    let addrs: Vec<SocketAddr> = servers.iter().map(admin).collect();
    for a in &addrs {
        wait_for(*a, "/health", |code, _| code == 200).await;
    }
    // The leader's /status knows every member's lag.
    let mut leader = None;
    for (i, a) in addrs.iter().enumerate() {
        let (_, s) = get_json(*a, "/status").await;
        if s["role"] == "leader" {
            let members = s["members"].as_array().unwrap();
            assert_eq!(members.len(), 3, "{s}");
            assert!(members.iter().all(|m| m["lag_entries"].is_u64()), "{s}");
            leader = Some(i);
        }
    }
    let leader = leader.expect("one member leads");
    // Stop the two others: the one left hears from no quorum, so it
    // either steps down (no leader) or hears from no leader.
    let last = (leader + 1) % 3;
    let kept = servers.remove(last);
    for s in servers {
        s.shutdown().await.unwrap();
    }
    let (code, health) = wait_for(addrs[last], "/health", |code, _| code == 503).await;
    assert_eq!(code, 503);
    let reason = health["reason"].as_str().unwrap();
    assert!(["no_leader", "leader_silent"].contains(&reason), "{health}");
    let line = ping(kept.local_addr()).await;
    assert!(line.contains(" unhealthy ("), "{line}");
    kept.shutdown().await.unwrap();
}
