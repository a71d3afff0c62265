//! A node that has stopped answers every request it still gets with
//! `GoingDown` (the write may or may not have applied: for a client
//! without a session that is the honest answer), and its listener closes
//! connections that were open when it stopped.

use std::sync::Arc;

use nacre_proto::ErrorCode;
mod common;

use nacre_server::node::Node;
use nacre_server::state::StateMachine;
use nacre_vfs::OsVfs;

#[tokio::test]
async fn a_stopped_node_answers_going_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = nacre_store::Store::open(dir.path().join("store"), nacre_store::Options::default())
        .unwrap();
    let tlog = nacre_raft::Tlog::open(
        Arc::new(OsVfs::default()),
        &dir.path().join("tlog"),
        Default::default(),
    )
    .unwrap();
    let sm = StateMachine::open(store).unwrap();
    let (mut node, handle) = Node::new(
        nacre_raft::TlogStorage::new(tlog),
        sm,
        common::node_options(dir.path()),
        None,
        None,
    )
    .unwrap();
    // Driven by hand, as the simulator does: a proposal is answered once
    // the loop has processed it.
    let data = nacre_proto::Command {
        session: None,
        batch: nacre_proto::Batch::default(),
    }
    .encode();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    node.step(nacre_server::node::Msg::Propose {
        data: data.clone(),
        reply: tx,
    })
    .unwrap();
    for _ in 0..50 {
        node.process().unwrap();
        if let Ok(r) = rx.try_recv() {
            assert!(r.is_ok(), "{r:?}");
            break;
        }
        node.tick();
    }
    assert!(
        node.status()
            .applied
            .load(std::sync::atomic::Ordering::Acquire)
            > 0
    );
    drop(node);
    let e = handle.propose(data).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::GoingDown);
    let e = handle.read_barrier().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::GoingDown);
}
