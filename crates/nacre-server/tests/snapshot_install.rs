//! A snapshot from the leader is installed in two steps: the store takes
//! its contents, then the tlog records it. A node that stops between the
//! two (a crash, a disk error) finishes the install when it restarts; a
//! node whose tlog is simply gone is still refused.

mod common;

use std::path::Path;
use std::sync::Arc;

use nacre_raft::{Tlog, TlogStorage};
use nacre_server::node::Node;
use nacre_server::state::{Reader, StateMachine};
use nacre_vfs::OsVfs;
use raft::eraftpb::ConfState;

fn open(dir: &Path) -> (TlogStorage, StateMachine) {
    let store =
        nacre_store::Store::open(dir.join("store"), nacre_store::Options::default()).unwrap();
    let tlog = Tlog::open(
        Arc::new(OsVfs::default()),
        &dir.join("tlog"),
        Default::default(),
    )
    .unwrap();
    (TlogStorage::new(tlog), StateMachine::open(store).unwrap())
}

/// A node started once (its tlog holds the cluster's initial snapshot),
/// then the store's half of installing a leader's snapshot at index 50,
/// term 3: the tlog never hears of it.
fn interrupted_install(dir: &Path) {
    {
        let (tlog, sm) = open(dir);
        let (node, _handle) = Node::new(tlog, sm, common::node_options(dir), None, None).unwrap();
        drop(node);
    }
    let (_tlog, mut sm) = open(dir);
    let conf = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    // A user record as the store holds it: its revision, then the value.
    let mut stored = vec![0u8; nacre_proto::Revision::ENCODED_BYTES];
    stored.extend_from_slice(b"value");
    let pairs = vec![Ok((b"u/key".to_vec(), stored))];
    sm.install_snapshot(pairs.into_iter(), 50, 3, &conf)
        .unwrap();
    assert_eq!(sm.applied(), (50, 3));
}

#[test]
fn a_restart_finishes_an_interrupted_snapshot_install() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_install(dir.path());
    let (tlog, sm) = open(dir.path());
    let (node, _handle) = Node::new(
        tlog.clone(),
        sm,
        common::node_options(dir.path()),
        None,
        None,
    )
    .expect("the restart finishes the install");
    {
        let log = tlog.read();
        assert_eq!(log.last_index(), 50);
        assert_eq!(log.first_index(), 51);
        assert!(log.hard_state().term >= 3, "{:?}", log.hard_state());
        assert!(log.hard_state().commit >= 50, "{:?}", log.hard_state());
        assert_eq!(log.conf_state().voters, vec![1]);
    }
    assert_eq!(
        Reader::new(node.store()).get(b"/key").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    // The tlog's snapshot provider holds the store: drop both handles.
    drop((node, tlog));
    // And it stays finished: the next start is an ordinary one.
    let (tlog, sm) = open(dir.path());
    Node::new(
        tlog.clone(),
        sm,
        common::node_options(dir.path()),
        None,
        None,
    )
    .expect("a second restart");
    assert_eq!(tlog.read().last_index(), 50);
}

#[test]
fn a_lost_tlog_is_still_refused_after_an_install() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_install(dir.path());
    std::fs::remove_dir_all(dir.path().join("tlog")).unwrap();
    let (tlog, sm) = open(dir.path());
    let err = Node::new(tlog, sm, common::node_options(dir.path()), None, None)
        .err()
        .expect("a store with applied entries beside an empty tlog is refused");
    assert!(err.to_string().contains("the tlog was lost"), "{err}");
}
