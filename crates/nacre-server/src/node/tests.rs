//! The loop stops when a thread or task it cannot work without has ended.

use std::sync::Arc;

use nacre_raft::{Tlog, TlogStorage};
use nacre_vfs::OsVfs;

use super::*;

/// A sink that delivers nothing and may report its task stopped.
struct Sink(Option<&'static str>);

impl PeerSink for Sink {
    fn send(&mut self, _msgs: Vec<raft::eraftpb::Message>) {}
    fn set_peer(&mut self, _id: u64, _addr: String) {}
    fn remove_peer(&mut self, _id: u64) {}
    fn stopped_task(&self) -> Option<&'static str> {
        self.0
    }
}

fn node(dir: &std::path::Path, sink: Sink) -> Node {
    let store =
        nacre_store::Store::open(dir.join("store"), nacre_store::Options::default()).unwrap();
    let tlog = Tlog::open(
        Arc::new(OsVfs::default()),
        &dir.join("tlog"),
        Default::default(),
    )
    .unwrap();
    let opts = NodeOptions {
        id: 1,
        initial_members: vec![(
            1,
            MemberRecord {
                name: "n1".into(),
                client: "127.0.0.1:1".into(),
                peer: "127.0.0.1:2".into(),
            },
        )],
        join: false,
        preferred_leader: None,
        cluster_id: "c".into(),
        peer_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        tick_ms: 10,
        election_ticks: 10,
        heartbeat_ticks: 1,
        reads_by_lease: true,
        clock: crate::clock::HostClock::shared(),
        proposals_pending_max: 16,
        checkpoint_entries: 100,
        checkpoint_bytes: u64::MAX,
        tlog_tail_entries: 0,
        tlog_tail_bytes: u64::MAX,
        #[cfg(feature = "sim")]
        planted: Default::default(),
    };
    let sm = StateMachine::open(store).unwrap();
    Node::new(TlogStorage::new(tlog), sm, opts, None, Some(Box::new(sink)))
        .unwrap()
        .0
}

#[test]
fn a_peer_in_thread_that_panicked_stops_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node(dir.path(), Sink(None));
    node.check_helpers().expect("all helpers run");
    let dead = std::thread::spawn(|| panic!("boom in peer-in"));
    while !dead.is_finished() {
        std::thread::yield_now();
    }
    node.peer_in = Some(dead);
    match node.check_helpers() {
        Err(ServerError::Stopped { thread, why }) => {
            assert_eq!(thread, "peer-in thread");
            assert!(why.contains("boom in peer-in"), "{why}");
        }
        other => panic!("expected the loop to stop, got {other:?}"),
    }
}

#[test]
fn a_peer_sink_whose_task_ended_stops_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node(dir.path(), Sink(Some("peer listener task")));
    match node.check_helpers() {
        Err(ServerError::Stopped { thread, .. }) => assert_eq!(thread, "peer listener task"),
        other => panic!("expected the loop to stop, got {other:?}"),
    }
}
