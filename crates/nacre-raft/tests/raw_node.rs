//! A real raft-rs `RawNode` on top of `TlogStorage`: a single-member group
//! elects itself, commits proposals, and after a restart from the same
//! directory sees the same committed entries and hard state.

use std::path::Path;
use std::sync::Arc;

use nacre_raft::{Tlog, TlogOptions, TlogStorage};
use nacre_vfs::{OsVfs, Vfs};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use raft::{Config, RawNode, StateRole, Storage};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn config() -> Config {
    Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 1,
        ..Default::default()
    }
}

fn open(dir: &Path) -> TlogStorage {
    let vfs: Arc<dyn Vfs> = Arc::new(OsVfs::default());
    let opts = TlogOptions {
        segment_size_bytes: 4096,
        ..TlogOptions::default()
    };
    TlogStorage::new(Tlog::open(vfs, dir, opts).unwrap())
}

/// Persist and apply one `Ready` the way the node's loop does: entries and
/// hard state into the tlog, one sync, then advance. Returns the committed
/// normal entries with data, in order.
fn handle_ready(node: &mut RawNode<TlogStorage>, storage: &TlogStorage) -> Vec<Entry> {
    let mut applied = Vec::new();
    if !node.has_ready() {
        return applied;
    }
    let mut rd = node.ready();
    assert!(rd.messages().is_empty(), "a single member sends nothing");
    assert!(rd.snapshot().is_empty());
    applied.extend(rd.take_committed_entries());
    {
        let mut tlog = storage.write();
        tlog.append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            tlog.set_hard_state(hs).unwrap();
        }
        tlog.sync().unwrap();
    }
    let mut light = node.advance(rd);
    if let Some(commit) = light.commit_index() {
        let mut tlog = storage.write();
        let mut hs = tlog.hard_state();
        hs.commit = commit;
        tlog.set_hard_state(&hs).unwrap();
        tlog.sync().unwrap();
    }
    applied.extend(light.take_committed_entries());
    node.advance_apply();
    applied
        .into_iter()
        .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
        .collect()
}

fn run_until<F: FnMut(&RawNode<TlogStorage>, &[Entry]) -> bool>(
    node: &mut RawNode<TlogStorage>,
    storage: &TlogStorage,
    committed: &mut Vec<Entry>,
    mut done: F,
) {
    for _ in 0..200 {
        committed.extend(handle_ready(node, storage));
        if done(node, committed) {
            return;
        }
        node.tick();
    }
    panic!("raft made no progress");
}

#[test]
fn raw_node_commits_and_restarts_from_the_tlog() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tlog");
    let proposals: Vec<Vec<u8>> = (0..20).map(|i| format!("cmd-{i}").into_bytes()).collect();

    let (hard_state, last_index): (HardState, u64) = {
        let storage = open(&dir);
        {
            let mut tlog = storage.write();
            tlog.set_conf_state(&ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap();
            tlog.sync().unwrap();
        }
        let mut node = RawNode::new(&config(), storage.clone(), &logger()).unwrap();
        node.campaign().unwrap();
        let mut committed = Vec::new();
        run_until(&mut node, &storage, &mut committed, |n, _| {
            n.raft.state == StateRole::Leader
        });
        for p in &proposals {
            node.propose(vec![], p.clone()).unwrap();
        }
        run_until(&mut node, &storage, &mut committed, |_, c| {
            c.len() == proposals.len()
        });
        let data: Vec<&[u8]> = committed.iter().map(|e| &e.data[..]).collect();
        assert_eq!(data, proposals.iter().map(|p| &p[..]).collect::<Vec<_>>());
        let tlog = storage.read();
        let hs = tlog.hard_state();
        assert_eq!(hs.commit, tlog.last_index(), "everything is committed");
        assert_eq!(hs.vote, 1);
        assert!(tlog.segment_count() >= 1);
        (hs, tlog.last_index())
    };

    // Restart: a new tlog from the same directory, a new RawNode.
    let storage = open(&dir);
    assert_eq!(storage.initial_state().unwrap().hard_state, hard_state);
    assert_eq!(storage.last_index().unwrap(), last_index);
    let mut node = RawNode::new(&config(), storage.clone(), &logger()).unwrap();
    assert_eq!(node.raft.raft_log.committed, hard_state.commit);
    assert_eq!(node.raft.term, hard_state.term);
    // With applied = 0 the committed entries are delivered again.
    let mut replayed = Vec::new();
    run_until(&mut node, &storage, &mut replayed, |_, c| {
        c.len() == proposals.len()
    });
    let data: Vec<&[u8]> = replayed.iter().map(|e| &e.data[..]).collect();
    assert_eq!(data, proposals.iter().map(|p| &p[..]).collect::<Vec<_>>());

    // And the group keeps working: it elects itself again and commits more.
    node.campaign().unwrap();
    let mut more = Vec::new();
    run_until(&mut node, &storage, &mut more, |n, _| {
        n.raft.state == StateRole::Leader
    });
    node.propose(vec![], b"after restart".to_vec()).unwrap();
    run_until(&mut node, &storage, &mut more, |_, c| !c.is_empty());
    assert_eq!(&more[0].data[..], b"after restart");
    assert!(storage.read().hard_state().term > hard_state.term);
}
