//! Unit tests of the tlog and its raft storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nacre_vfs::sim::SimVfs;
use nacre_vfs::{OsVfs, Vfs};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, Storage, StorageError};

use crate::{segment_name, Tlog, TlogError, TlogOptions, TlogStorage};

fn ent(index: u64, term: u64) -> Entry {
    let mut e = Entry {
        index,
        term,
        ..Default::default()
    };
    e.data = format!("data-{index}-{term}").into_bytes().into();
    e
}

fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..hi).map(|i| ent(i, term)).collect()
}

fn dir() -> PathBuf {
    PathBuf::from("/tlog")
}

fn small() -> TlogOptions {
    TlogOptions {
        segment_size_bytes: 512,
        entry_size_max_bytes: 1024,
        cache_bytes_max: 200,
        zero_fill_ahead_bytes: 0,
    }
}

fn sim_open(vfs: &SimVfs, opts: TlogOptions) -> Tlog {
    Tlog::open(Arc::new(vfs.clone()), &dir(), opts).unwrap()
}

fn all(t: &Tlog) -> Vec<Entry> {
    t.entries(t.first_index(), t.last_index() + 1, None)
        .unwrap()
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn segment_files(vfs: &SimVfs) -> Vec<PathBuf> {
    vfs.paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect()
}

#[test]
fn append_read_back_and_reopen_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tlog");
    let vfs: Arc<dyn Vfs> = Arc::new(OsVfs::default());
    {
        let mut t = Tlog::open(vfs.clone(), &path, TlogOptions::default()).unwrap();
        assert_eq!((t.first_index(), t.last_index()), (1, 0));
        assert_eq!(t.term(0).unwrap(), 0);
        t.append(&ents(1, 11, 1)).unwrap();
        t.sync().unwrap();
        assert_eq!(all(&t), ents(1, 11, 1));
        assert_eq!(t.term(10).unwrap(), 1);
        // A second open of the same directory is refused while this lives.
        assert!(matches!(
            Tlog::open(vfs.clone(), &path, TlogOptions::default()),
            Err(TlogError::Io { .. })
        ));
    }
    let t = Tlog::open(vfs, &path, TlogOptions::default()).unwrap();
    assert_eq!((t.first_index(), t.last_index()), (1, 10));
    assert_eq!(all(&t), ents(1, 11, 1));
    assert!(path.join(segment_name(1)).exists());
}

#[test]
fn conflicting_suffix_is_truncated_and_stays_truncated() {
    let vfs = SimVfs::new(1);
    let mut t = sim_open(&vfs, TlogOptions::default());
    t.append(&ents(1, 11, 1)).unwrap();
    t.append(&ents(6, 9, 2)).unwrap();
    assert_eq!(t.last_index(), 8);
    let mut want = ents(1, 6, 1);
    want.extend(ents(6, 9, 2));
    assert_eq!(all(&t), want);
    assert_eq!(
        t.term(9).unwrap_err().to_string(),
        TlogError::Unavailable.to_string()
    );
    // Appending right after the end and rewriting the very first entry.
    t.append(&ents(9, 10, 2)).unwrap();
    want.push(ent(9, 2));
    assert_eq!(all(&t), want);
    t.sync().unwrap();
    drop(t);
    let mut t = sim_open(&vfs, TlogOptions::default());
    assert_eq!(all(&t), want);
    t.append(&ents(1, 3, 3)).unwrap();
    t.sync().unwrap();
    drop(t);
    let t = sim_open(&vfs, TlogOptions::default());
    assert_eq!(all(&t), ents(1, 3, 3));
}

#[test]
fn invalid_appends_are_refused_without_effect() {
    let vfs = SimVfs::new(2);
    let mut t = sim_open(&vfs, TlogOptions::default());
    t.append(&ents(1, 4, 1)).unwrap();
    assert!(matches!(
        t.append(&ents(5, 6, 1)),
        Err(TlogError::InvalidArgument(_))
    ));
    let gap = vec![ent(4, 1), ent(6, 1)];
    assert!(matches!(t.append(&gap), Err(TlogError::InvalidArgument(_))));
    t.append(&[]).unwrap();
    assert_eq!(all(&t), ents(1, 4, 1));
    t.compact(2).unwrap();
    assert!(matches!(
        t.append(&ents(2, 3, 2)),
        Err(TlogError::InvalidArgument(_))
    ));
    assert!(matches!(t.compact(9), Err(TlogError::InvalidArgument(_))));
    assert_eq!(t.last_index(), 3);
}

#[test]
fn entry_size_max_is_enforced() {
    let vfs = SimVfs::new(3);
    let mut t = sim_open(&vfs, small());
    let mut big = ent(2, 1);
    big.data = vec![7u8; 1024].into();
    let err = t.append(&[ent(1, 1), big.clone()]).unwrap_err();
    assert!(
        matches!(err, TlogError::TooLarge { size_bytes, max_bytes: 1024 } if size_bytes > 1024),
        "{err}"
    );
    assert_eq!(t.last_index(), 0, "nothing of a refused batch is appended");
    // Exactly at the limit is accepted.
    big.data = vec![7u8; 1024 - 25].into();
    t.append(&[ent(1, 1), big.clone()]).unwrap();
    t.sync().unwrap();
    drop(t);
    let t = sim_open(&vfs, small());
    assert_eq!(all(&t), vec![ent(1, 1), big]);
}

#[test]
fn hard_state_and_conf_state_are_durable_at_sync() {
    let vfs = SimVfs::new(4);
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..Default::default()
    };
    {
        let mut t = sim_open(&vfs, TlogOptions::default());
        t.append(&ents(1, 3, 1)).unwrap();
        t.set_hard_state(&hs(1, 1, 2)).unwrap();
        t.set_conf_state(&cs).unwrap();
        t.sync().unwrap();
        t.set_hard_state(&hs(2, 3, 2)).unwrap();
        assert_eq!(t.hard_state(), hs(2, 3, 2));
    }
    vfs.crash_lose_all_unsynced();
    let mut t = sim_open(&vfs, TlogOptions::default());
    assert_eq!(
        t.hard_state(),
        hs(1, 1, 2),
        "the unsynced hard state is lost"
    );
    assert_eq!(t.conf_state(), cs);
    t.set_hard_state(&hs(2, 3, 2)).unwrap();
    t.sync().unwrap();
    drop(t);
    vfs.crash_lose_all_unsynced();
    let t = sim_open(&vfs, TlogOptions::default());
    assert_eq!(t.hard_state(), hs(2, 3, 2));
}

#[test]
fn segments_roll_and_state_is_restated_in_each() {
    let vfs = SimVfs::new(5);
    let mut t = sim_open(&vfs, small());
    t.set_hard_state(&hs(1, 1, 0)).unwrap();
    for i in 1..=60 {
        t.append(&[ent(i, 1)]).unwrap();
        if i % 7 == 0 {
            t.set_hard_state(&hs(1, 1, i)).unwrap();
            t.sync().unwrap();
        }
    }
    t.set_hard_state(&hs(1, 1, 60)).unwrap();
    t.sync().unwrap();
    let files = segment_files(&vfs);
    assert!(files.len() > 5, "{files:?}");
    assert_eq!(t.segment_count(), files.len());
    // Names are increasing and name the first index the segment could hold.
    assert_eq!(files[0], dir().join(segment_name(1)));
    drop(t);
    let t = sim_open(&vfs, small());
    assert_eq!(all(&t), ents(1, 61, 1));
    assert_eq!(t.hard_state(), hs(1, 1, 60));
}

#[test]
fn compaction_removes_segments_and_keeps_the_compacted_term() {
    let vfs = SimVfs::new(6);
    let mut t = sim_open(&vfs, small());
    t.append(&ents(1, 31, 1)).unwrap();
    t.append(&ents(31, 61, 2)).unwrap();
    t.set_hard_state(&hs(2, 1, 60)).unwrap();
    t.sync().unwrap();
    let before = segment_files(&vfs).len();
    t.compact(40).unwrap();
    let after = segment_files(&vfs).len();
    assert!(after < before, "{before} -> {after}");
    assert_eq!(t.first_index(), 41);
    assert_eq!(t.term(40).unwrap(), 2);
    assert!(matches!(t.term(39), Err(TlogError::Compacted)));
    assert!(matches!(t.entries(40, 42, None), Err(TlogError::Compacted)));
    assert_eq!(t.entries(41, 61, None).unwrap(), ents(41, 61, 2));
    // Compacting backwards is a no-op.
    t.compact(10).unwrap();
    assert_eq!(t.first_index(), 41);
    drop(t);
    vfs.crash_lose_all_unsynced();
    let mut t = sim_open(&vfs, small());
    assert_eq!((t.first_index(), t.last_index()), (41, 60));
    assert_eq!(t.term(40).unwrap(), 2);
    assert_eq!(all(&t), ents(41, 61, 2));
    assert_eq!(t.hard_state(), hs(2, 1, 60));
    // Compacting everything leaves only the current segment.
    t.compact(60).unwrap();
    assert_eq!(segment_files(&vfs).len(), 1);
    assert_eq!((t.first_index(), t.last_index()), (61, 60));
    drop(t);
    let mut t = sim_open(&vfs, small());
    assert_eq!((t.first_index(), t.last_index()), (61, 60));
    assert_eq!(t.term(60).unwrap(), 2);
    t.append(&ents(61, 63, 3)).unwrap();
    assert_eq!(all(&t), ents(61, 63, 3));
}

/// The byte-bounded tail: entries of 100 and 1,000 bytes of data, and
/// the compaction point that keeps at most so many bytes behind `upto`.
#[test]
fn tail_start_keeps_a_tail_bounded_in_bytes() {
    let vfs = SimVfs::new(8);
    let opts = TlogOptions {
        segment_size_bytes: 1 << 20,
        entry_size_max_bytes: 1 << 20,
        ..small()
    };
    let mut t = sim_open(&vfs, opts);
    let sized = |index: u64, bytes: usize| {
        let mut e = ent(index, 1);
        e.data = vec![7u8; bytes].into();
        e
    };
    let mut es: Vec<Entry> = (1..=10).map(|i| sized(i, 100)).collect();
    es.extend((11..=13).map(|i| sized(i, 1_000)));
    t.append(&es).unwrap();
    // Nothing kept: compact to `upto` itself.
    assert_eq!(t.tail_start(13, 0), 13);
    // A record is its data plus a fixed overhead (header, index, term).
    let small_rec = (1..1_000).find(|&b| t.tail_start(10, b) == 9).unwrap();
    let overhead = small_rec - 100;
    assert!(overhead > 0 && overhead < 100, "{overhead}");
    assert_eq!(t.tail_start(10, 3 * small_rec), 7);
    assert_eq!(t.tail_start(10, 3 * small_rec - 1), 8);
    let large_rec = 1_000 + overhead;
    assert_eq!(t.tail_start(13, 2 * large_rec - 1), 12);
    assert_eq!(t.tail_start(13, 2 * large_rec), 11);
    // Everything fits: nothing to compact on the byte account.
    assert_eq!(t.tail_start(13, 1 << 20), 0);
    // `upto` past the log counts from the last entry.
    assert_eq!(t.tail_start(99, 0), 13);
    t.compact(5).unwrap();
    assert_eq!(t.tail_start(13, 1 << 20), 5, "never below the start");
}

#[test]
fn apply_snapshot_drops_entries_and_is_durable() {
    let vfs = SimVfs::new(7);
    let mut t = sim_open(&vfs, small());
    t.append(&ents(1, 41, 1)).unwrap();
    t.sync().unwrap();
    let cs = ConfState {
        voters: vec![1, 2],
        ..Default::default()
    };
    let mut meta = SnapshotMetadata {
        index: 30,
        term: 4,
        ..Default::default()
    };
    meta.set_conf_state(cs.clone());
    t.apply_snapshot(&meta).unwrap();
    assert_eq!((t.first_index(), t.last_index()), (31, 30));
    assert_eq!(t.term(30).unwrap(), 4);
    assert_eq!(t.snapshot_meta(), meta);
    assert_eq!(t.conf_state(), cs);
    assert_eq!(segment_files(&vfs).len(), 1, "every old segment is dead");
    let old = SnapshotMetadata {
        index: 10,
        ..Default::default()
    };
    assert!(matches!(
        t.apply_snapshot(&old),
        Err(TlogError::InvalidArgument(_))
    ));
    drop(t);
    vfs.crash_lose_all_unsynced();
    let mut t = sim_open(&vfs, small());
    assert_eq!((t.first_index(), t.last_index()), (31, 30));
    assert_eq!(t.snapshot_meta(), meta);
    assert_eq!(t.conf_state(), cs);
    t.append(&ents(31, 35, 4)).unwrap();
    t.sync().unwrap();
    drop(t);
    let t = sim_open(&vfs, small());
    assert_eq!(all(&t), ents(31, 35, 4));
}

#[test]
fn old_entries_are_read_from_disk_and_checked() {
    let vfs = SimVfs::new(8);
    let opts = TlogOptions {
        cache_bytes_max: 0,
        ..TlogOptions::default()
    };
    let mut t = sim_open(&vfs, opts.clone());
    t.append(&ents(1, 6, 1)).unwrap();
    // Unsynced, uncached entries are served from the write buffer.
    assert_eq!(all(&t), ents(1, 6, 1));
    t.sync().unwrap();
    assert_eq!(all(&t), ents(1, 6, 1));
    // Damage the record of entry 3 under the live tlog.
    let path = dir().join(segment_name(1));
    let image = vfs.contents(&path).unwrap();
    let needle = b"data-3-1";
    let at = image
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    vfs.flip_bit(&path, at as u64, 0);
    assert!(matches!(
        t.entries(3, 4, None),
        Err(TlogError::Corruption { .. })
    ));
    assert_eq!(t.entries(4, 6, None).unwrap(), ents(4, 6, 1));
    // A later write vouches that entry 3's record had been synced.
    t.append(&ents(6, 7, 1)).unwrap();
    t.sync().unwrap();
    drop(t);
    // On reopen the damage is inside synced data followed by a record
    // written after it was synced.
    let err = Tlog::open(Arc::new(vfs.clone()), &dir(), opts)
        .err()
        .unwrap();
    assert!(
        matches!(err, TlogError::Corruption { ref what, .. } if what.contains("synced data")),
        "{err}"
    );
}

#[test]
fn cache_holds_recent_entries_within_its_budget() {
    let vfs = SimVfs::new(9);
    let mut t = sim_open(&vfs, small());
    t.append(&ents(1, 51, 1)).unwrap();
    let (len, bytes, newest) = t.cache_stats();
    assert!(
        bytes <= 200 && len > 0 && len < 50,
        "{len} entries, {bytes} bytes"
    );
    assert_eq!(newest, Some(50));
    t.append(&ents(45, 47, 2)).unwrap();
    assert_eq!(t.cache_stats().2, Some(46));
    let mut want = ents(1, 45, 1);
    want.extend(ents(45, 47, 2));
    assert_eq!(all(&t), want);
}

#[test]
fn damage_in_an_older_segment_is_corruption() {
    let vfs = SimVfs::new(10);
    let mut t = sim_open(&vfs, small());
    t.append(&ents(1, 30, 1)).unwrap();
    t.sync().unwrap();
    drop(t);
    let first = dir().join(segment_name(1));
    // Past the records the file is zero-filled; damage the last record.
    let bytes = vfs.contents(&first).unwrap();
    let records_end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    vfs.flip_bit(&first, records_end - 4, 3);
    let err = Tlog::open(Arc::new(vfs.clone()), &dir(), small())
        .err()
        .unwrap();
    assert!(
        matches!(err, TlogError::Corruption { ref path, .. } if path == &first),
        "{err}"
    );
}

#[test]
fn torn_tail_is_dropped_and_overwritten() {
    let vfs = SimVfs::new(11);
    let mut t = sim_open(&vfs, TlogOptions::default());
    t.append(&ents(1, 4, 1)).unwrap();
    t.sync().unwrap();
    drop(t);
    // Garbage after the last record, as a torn write leaves it.
    let path = dir().join(segment_name(1));
    let f = vfs.open(&path, false).unwrap();
    let len = f.len().unwrap();
    f.write_all_at(&[0xA5; 300], len).unwrap();
    f.sync_data().unwrap();
    drop(f);
    let mut t = sim_open(&vfs, TlogOptions::default());
    assert_eq!(all(&t), ents(1, 4, 1));
    t.append(&ents(4, 6, 1)).unwrap();
    t.sync().unwrap();
    drop(t);
    let t = sim_open(&vfs, TlogOptions::default());
    assert_eq!(all(&t), ents(1, 6, 1));
}

#[test]
fn failed_sync_poisons_until_reopen() {
    let vfs = SimVfs::new(12);
    let mut t = sim_open(&vfs, TlogOptions::default());
    t.append(&ents(1, 3, 1)).unwrap();
    vfs.fail_next_sync(true);
    assert!(matches!(t.sync(), Err(TlogError::Io { .. })));
    assert!(matches!(
        t.append(&ents(3, 4, 1)),
        Err(TlogError::Poisoned(_))
    ));
    assert!(matches!(t.sync(), Err(TlogError::Poisoned(_))));
    drop(t);
    let mut t = sim_open(&vfs, TlogOptions::default());
    // The write reached the page cache, so the entries may be there; the
    // reopened tlog made them durable before trusting them.
    assert!(t.last_index() <= 2);
    t.append(&ents(t.last_index() + 1, 4, 1)).unwrap();
    t.sync().unwrap();
    assert_eq!(all(&t), ents(1, 4, 1));
}

#[test]
fn options_are_validated() {
    let vfs = SimVfs::new(13);
    let bad = TlogOptions {
        segment_size_bytes: 0,
        ..TlogOptions::default()
    };
    assert!(matches!(
        Tlog::open(Arc::new(vfs.clone()), &dir(), bad),
        Err(TlogError::InvalidArgument(_))
    ));
    let bad = TlogOptions {
        entry_size_max_bytes: u64::MAX,
        ..TlogOptions::default()
    };
    assert!(matches!(
        Tlog::open(Arc::new(vfs), &dir(), bad),
        Err(TlogError::InvalidArgument(_))
    ));
}

fn store_err(e: raft::Error) -> StorageError {
    match e {
        raft::Error::Store(s) => s,
        other => panic!("not a storage error: {other}"),
    }
}

#[test]
fn raft_storage_contract() {
    let vfs = SimVfs::new(14);
    let storage = TlogStorage::new(sim_open(&vfs, small()));
    let ctx = || GetEntriesContext::empty(false);
    assert_eq!(storage.first_index().unwrap(), 1);
    assert_eq!(storage.last_index().unwrap(), 0);
    assert_eq!(storage.term(0).unwrap(), 0);
    assert!(!storage.initial_state().unwrap().initialized());
    {
        let mut t = storage.write();
        t.append(&ents(1, 11, 1)).unwrap();
        t.set_hard_state(&hs(1, 1, 5)).unwrap();
        t.set_conf_state(&ConfState {
            voters: vec![1],
            ..Default::default()
        })
        .unwrap();
        t.sync().unwrap();
        t.compact(3).unwrap();
    }
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state, hs(1, 1, 5));
    assert_eq!(state.conf_state.voters, vec![1]);
    assert_eq!(storage.first_index().unwrap(), 4);
    assert_eq!(storage.last_index().unwrap(), 10);
    assert_eq!(storage.term(3).unwrap(), 1);
    assert_eq!(
        store_err(storage.term(2).unwrap_err()),
        StorageError::Compacted
    );
    assert_eq!(
        store_err(storage.term(11).unwrap_err()),
        StorageError::Unavailable
    );
    assert_eq!(
        store_err(storage.entries(3, 5, None, ctx()).unwrap_err()),
        StorageError::Compacted
    );
    assert_eq!(
        store_err(storage.entries(4, 12, None, ctx()).unwrap_err()),
        StorageError::Unavailable
    );
    assert_eq!(storage.entries(4, 11, None, ctx()).unwrap(), ents(4, 11, 1));
    assert!(storage.entries(7, 7, None, ctx()).unwrap().is_empty());
    // max_size: always one entry, then as many as fit, like raft's limit_size.
    let one = u64::from(protobuf::Message::compute_size(&ent(4, 1)));
    assert_eq!(
        storage.entries(4, 11, Some(0), ctx()).unwrap(),
        ents(4, 5, 1)
    );
    assert_eq!(
        storage.entries(4, 11, Some(one * 3), ctx()).unwrap(),
        ents(4, 7, 1)
    );
    assert_eq!(
        storage.entries(4, 11, Some(one * 3 - 1), ctx()).unwrap(),
        ents(4, 6, 1)
    );
    for max in [0, 1, one, one * 2 + 5, one * 7, u64::MAX] {
        let mut want = ents(4, 11, 1);
        raft::util::limit_size(&mut want, Some(max));
        assert_eq!(
            storage.entries(4, 11, Some(max), ctx()).unwrap(),
            want,
            "max {max}"
        );
    }

    // Snapshots come from the provider, and only when fresh enough.
    assert_eq!(
        store_err(storage.snapshot(3, 2).unwrap_err()),
        StorageError::SnapshotTemporarilyUnavailable
    );
    storage.set_snapshot_provider(Box::new(|at_least| {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = at_least.max(5);
        snap.mut_metadata().term = 1;
        Ok(snap)
    }));
    let clone = storage.clone();
    assert_eq!(clone.snapshot(3, 2).unwrap().get_metadata().index, 5);
    assert_eq!(clone.snapshot(8, 2).unwrap().get_metadata().index, 8);
    storage.set_snapshot_provider(Box::new(|_| {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 1;
        Ok(snap)
    }));
    assert_eq!(
        store_err(clone.snapshot(3, 2).unwrap_err()),
        StorageError::SnapshotTemporarilyUnavailable
    );
    // Other tlog errors come through as StorageError::Other.
    let e: raft::Error = TlogError::InvalidArgument("x".into()).into();
    assert!(matches!(store_err(e), StorageError::Other(_)));
}

#[test]
fn crash_during_segment_creation_leaves_a_usable_log() {
    // Crash at every operation of a roll; the log must reopen with every
    // synced entry whatever the crash left of the new segment.
    let run = |vfs: &SimVfs| -> Result<(), TlogError> {
        let mut t = Tlog::open(Arc::new(vfs.clone()), Path::new("/tlog"), small())?;
        for i in 1..=12 {
            t.append(&[ent(i, 1)])?;
            t.sync()?;
        }
        Ok(())
    };
    let clean = SimVfs::new(15);
    run(&clean).unwrap();
    let total = clean.ops();
    for n in 0..total {
        for lose_all in [false, true] {
            let vfs = SimVfs::new(15 + n);
            vfs.set_crash_after(Some(n));
            let mut synced = 0;
            {
                let r = (|| -> Result<(), TlogError> {
                    let mut t = Tlog::open(Arc::new(vfs.clone()), &dir(), small())?;
                    for i in 1..=12 {
                        t.append(&[ent(i, 1)])?;
                        t.sync()?;
                        synced = i;
                    }
                    Ok(())
                })();
                assert!(r.is_err(), "n={n}");
            }
            if lose_all {
                vfs.crash_lose_all_unsynced();
            } else {
                vfs.crash();
            }
            let t = sim_open(&vfs, small());
            assert!(
                t.last_index() >= synced && t.last_index() <= synced + 1,
                "n={n}"
            );
            assert_eq!(all(&t), ents(1, t.last_index() + 1, 1), "n={n}");
        }
    }
}

#[test]
fn segments_resurrected_by_an_interrupted_compaction_are_ignored() {
    let vfs = SimVfs::new(16);
    let mut t = sim_open(&vfs, small());
    t.append(&ents(1, 41, 1)).unwrap();
    t.sync().unwrap();
    let files = segment_files(&vfs);
    assert!(files.len() >= 4, "{files:?}");
    let saved: Vec<(PathBuf, Vec<u8>)> = files[..3]
        .iter()
        .map(|p| (p.clone(), vfs.contents(p).unwrap()))
        .collect();
    // Compact so that at least the first three segments are deleted.
    let keep_from = {
        let name = files[3].file_name().unwrap().to_str().unwrap().to_string();
        u64::from_str_radix(&name[5..21], 16).unwrap()
    };
    t.compact(keep_from - 1).unwrap();
    t.set_hard_state(&hs(1, 1, 40)).unwrap();
    t.sync().unwrap();
    drop(t);
    let want = {
        let t = sim_open(&vfs, small());
        (t.first_index(), all(&t), t.hard_state())
    };
    // A crash may undo any subset of unsynced removals. Bring back the first
    // and the third (a gap in the chain) and then the second (chain intact).
    for revive in [vec![0, 2], vec![1], vec![0, 1, 2]] {
        for &i in &revive {
            let (path, bytes) = &saved[i];
            let f = vfs.open(path, true).unwrap();
            f.write_all_at(bytes, 0).unwrap();
            f.sync_data().unwrap();
        }
        vfs.sync_dir(&dir()).unwrap();
        let t = sim_open(&vfs, small());
        assert_eq!(
            (t.first_index(), all(&t), t.hard_state()),
            want,
            "{revive:?}"
        );
        drop(t);
    }
}

#[test]
fn storage_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<TlogStorage>();
    assert_send_sync::<Tlog>();
}

#[test]
fn zero_fill_ahead_reads_as_the_clean_end() {
    let vfs = SimVfs::new(12);
    let opts = TlogOptions {
        zero_fill_ahead_bytes: 4096,
        ..TlogOptions::default()
    };
    let mut t = sim_open(&vfs, opts.clone());
    t.append(&ents(1, 10, 1)).unwrap();
    t.sync().unwrap();
    drop(t);
    let path = dir().join(segment_name(1));
    let image = vfs.contents(&path).unwrap();
    let records_end = image.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(
        image.len() >= records_end + 3000,
        "{} bytes of file for {records_end} bytes of records",
        image.len()
    );
    // The zeros are the end of the log, not a torn tail: nothing is lost,
    // nothing rewritten, and appends go on over them.
    let mut t = sim_open(&vfs, opts.clone());
    assert_eq!(all(&t), ents(1, 10, 1));
    t.append(&ents(10, 20, 1)).unwrap();
    t.sync().unwrap();
    drop(t);
    let t = sim_open(&vfs, opts);
    assert_eq!(all(&t), ents(1, 20, 1));
}

#[test]
fn only_syncs_of_small_appends_zero_fill_ahead() {
    let vfs = SimVfs::new(13);
    let opts = TlogOptions {
        zero_fill_ahead_bytes: 4096,
        ..TlogOptions::default()
    };
    let path = dir().join(segment_name(1));
    // Bytes of the segment file past its last nonzero byte.
    let zeros_past_records = || {
        let image = vfs.contents(&path).unwrap();
        image.len() - (image.iter().rposition(|&b| b != 0).unwrap() + 1)
    };
    let mut t = sim_open(&vfs, opts.clone());
    t.append(&ents(1, 5, 1)).unwrap();
    t.sync().unwrap();
    assert!(zeros_past_records() >= 3000, "{}", zeros_past_records());
    // About 8 KiB of entries in one sync: no zeros after them (a record
    // may end in a few zero bytes of its own).
    let mut big = ents(5, 9, 1);
    for e in &mut big {
        e.data = vec![0xab; 2048].into();
    }
    t.append(&big).unwrap();
    t.sync().unwrap();
    assert!(zeros_past_records() < 64, "{}", zeros_past_records());
    // Small syncs zero-fill again, and the log reads back whole.
    t.append(&ents(9, 12, 1)).unwrap();
    t.sync().unwrap();
    assert!(zeros_past_records() >= 3000, "{}", zeros_past_records());
    drop(t);
    let t = sim_open(&vfs, opts);
    let mut want = ents(1, 5, 1);
    want.extend(big);
    want.extend(ents(9, 12, 1));
    assert_eq!(all(&t), want);
}
