//! The loop stops when a thread or task it cannot work without has ended;
//! a node on an empty data directory creates the cluster only once every
//! other initial member is new, else waits for the leader without voting.

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
    node_of(dir, sink, 1)
}

fn node_of(dir: &std::path::Path, sink: Sink, members: u64) -> Node {
    node_with(dir, sink, members, InitialClusterState::New)
}

/// Node n1 (id 1) of a cluster whose initial members are n1..n`members`.
fn node_with(dir: &std::path::Path, sink: Sink, members: u64, state: InitialClusterState) -> Node {
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
        initial_members: (1..=members)
            .map(|i| {
                let m = MemberRecord {
                    name: format!("n{i}"),
                    client: format!("127.0.0.1:{}", 2 * i),
                    peer: format!("127.0.0.1:{}", 2 * i + 1),
                };
                (i, m)
            })
            .collect(),
        initial_cluster_state: state,
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
        promote_lag_max_entries: 1_000,
        watches: Default::default(),
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

/// A vote request from member `from` at `term`, with a log as long as
/// anyone's.
fn vote_request(from: u64, term: u64) -> Msg {
    Msg::Peer(Inbound::Raft(raft::eraftpb::Message {
        msg_type: raft::eraftpb::MessageType::MsgRequestVote,
        from,
        to: 1,
        term,
        log_term: term,
        index: 1_000,
        ..Default::default()
    }))
}

#[test]
fn an_empty_node_creates_the_cluster_once_every_other_member_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_of(dir.path(), Sink(None), 3);
    assert!(node.is_creating());
    assert_eq!(node.sm.applied().0, 0);
    // One member new (never started, or bootstrapped and nothing since):
    // not enough, the other may hold the cluster's log.
    node.step(Msg::PeerState {
        id: 2,
        term: 1,
        last_index: 1,
    })
    .unwrap();
    assert!(node.is_creating());
    node.step(Msg::PeerState {
        id: 3,
        term: 0,
        last_index: 0,
    })
    .unwrap();
    assert!(!node.is_creating());
    assert_eq!(node.sm.applied().0, 1);
    assert_eq!(node.raw.raft.prs().conf().voters().ids().len(), 3);
}

#[test]
fn an_empty_node_whose_cluster_exists_waits_without_voting() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_of(dir.path(), Sink(None), 3);
    // Member 3 has been part of a running cluster: this node lost its
    // data (or the others created the cluster first).
    node.step(Msg::PeerState {
        id: 3,
        term: 4,
        last_index: 57,
    })
    .unwrap();
    assert!(!node.is_creating());
    assert_eq!(node.sm.applied().0, 0);
    // Answers that come later change nothing.
    node.step(Msg::PeerState {
        id: 2,
        term: 0,
        last_index: 0,
    })
    .unwrap();
    assert_eq!(node.sm.applied().0, 0);
    // It votes for no one, however good the candidate's log.
    node.ticks = 100;
    node.step(vote_request(2, 5)).unwrap();
    node.process().unwrap();
    assert_eq!(node.raw.raft.vote, 0);
    assert_eq!(node.tlog.read().hard_state().vote, 0);
}

#[test]
fn an_empty_node_told_the_cluster_exists_waits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), Sink(None), 3, InitialClusterState::Existing);
    assert!(!node.is_creating());
    assert_eq!(node.sm.applied().0, 0);
    assert!(node.raw.raft.prs().conf().voters().ids().is_empty());
}
