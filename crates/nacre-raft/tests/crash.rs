//! Crash tests of the tlog on the fault-injecting simulated file system.
//!
//! A seeded workload (appends with conflicting suffixes, hard and conf
//! states, syncs, segment rolls, compactions, snapshot installs) runs against
//! a model. Each record the tlog writes is one model "step"; after a crash
//! the recovered log must equal the model after some prefix of steps that
//! includes everything synced before the crash and nothing never appended.
//!
//! `NACRE_TLOG_CRASH_SEEDS=n` runs n seeds instead of the default few.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nacre_raft::{Tlog, TlogError, TlogOptions};
use nacre_vfs::sim::SimVfs;
use nacre_vfs::Vfs;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn dir() -> &'static Path {
    Path::new("/node/tlog")
}

fn opts() -> TlogOptions {
    TlogOptions {
        segment_size_bytes: 2048,
        entry_size_max_bytes: 1024,
        cache_bytes_max: 1024,
        // Small, so crashes land in and around the zero-filled region.
        zero_fill_ahead_bytes: 256,
    }
}

fn seeds() -> u64 {
    std::env::var("NACRE_TLOG_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Entry>),
    HardState(HardState),
    ConfState(ConfState),
    Sync,
    Compact(u64),
    Snapshot(SnapshotMetadata),
}

/// What the log should hold.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    start_index: u64,
    start_term: u64,
    /// Entries `start_index + 1 ..`.
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
}

impl Model {
    fn last(&self) -> u64 {
        self.start_index + self.entries.len() as u64
    }

    fn term(&self, idx: u64) -> u64 {
        if idx == self.start_index {
            self.start_term
        } else {
            self.entries[(idx - self.start_index - 1) as usize].term
        }
    }

    /// Apply `op`, pushing the state after each record it writes.
    fn apply(&mut self, op: &Op, steps: &mut Vec<Model>) {
        match op {
            Op::Append(es) => {
                for e in es {
                    self.entries
                        .truncate((e.index - self.start_index - 1) as usize);
                    self.entries.push(e.clone());
                    steps.push(self.clone());
                }
            }
            Op::HardState(hs) => {
                self.hard_state = hs.clone();
                steps.push(self.clone());
            }
            Op::ConfState(cs) => {
                self.conf_state = cs.clone();
                steps.push(self.clone());
            }
            Op::Sync => {}
            Op::Compact(idx) => {
                if *idx > self.start_index {
                    let term = self.term(*idx);
                    self.entries.drain(..(idx - self.start_index) as usize);
                    self.start_index = *idx;
                    self.start_term = term;
                    steps.push(self.clone());
                }
            }
            Op::Snapshot(meta) => {
                self.entries.clear();
                self.start_index = meta.index;
                self.start_term = meta.term;
                self.conf_state = meta.get_conf_state().clone();
                self.snapshot = meta.clone();
                steps.push(self.clone());
            }
        }
    }

    fn of(t: &Tlog) -> Result<Model, TlogError> {
        Ok(Model {
            start_index: t.first_index() - 1,
            start_term: t.term(t.first_index() - 1)?,
            entries: t.entries(t.first_index(), t.last_index() + 1, None)?,
            hard_state: t.hard_state(),
            conf_state: t.conf_state(),
            snapshot: t.snapshot_meta(),
        })
    }
}

fn entry(rng: &mut StdRng, index: u64, term: u64) -> Entry {
    let mut e = Entry {
        index,
        term,
        ..Default::default()
    };
    let len = rng.random_range(0..300);
    e.data = (0..len).map(|_| rng.random()).collect::<Vec<u8>>().into();
    if rng.random_bool(0.2) {
        e.context = vec![index as u8; 5].into();
    }
    e
}

fn conf_state(rng: &mut StdRng) -> ConfState {
    ConfState {
        voters: (1..rng.random_range(2..6)).collect(),
        learners: vec![rng.random_range(10..20)],
        ..Default::default()
    }
}

/// A deterministic workload and the model state after every step.
fn workload(seed: u64, ops_len: usize) -> (Vec<Op>, Vec<Model>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut steps = vec![Model::default()];
    let mut ops = Vec::new();
    let mut term = 1;
    for _ in 0..ops_len {
        let last = model.last();
        let roll: u32 = rng.random_range(0..100);
        let op = match roll {
            0..=44 => {
                if rng.random_bool(0.1) {
                    term += 1;
                }
                // Mostly extend the log; sometimes replace a suffix.
                let lo = if last > model.start_index && rng.random_bool(0.2) {
                    rng.random_range(model.start_index + 1..=last)
                } else {
                    last + 1
                };
                let n = rng.random_range(1..=4);
                Op::Append((lo..lo + n).map(|i| entry(&mut rng, i, term)).collect())
            }
            45..=59 => Op::HardState(HardState {
                term,
                vote: rng.random_range(0..4),
                commit: rng.random_range(0..=last),
                ..Default::default()
            }),
            60..=62 => Op::ConfState(conf_state(&mut rng)),
            63..=89 => Op::Sync,
            90..=97 if last > model.start_index => {
                Op::Compact(rng.random_range(model.start_index + 1..=last))
            }
            98..=99 => {
                let mut meta = SnapshotMetadata {
                    index: last + rng.random_range(0..5),
                    term,
                    ..Default::default()
                };
                meta.set_conf_state(conf_state(&mut rng));
                Op::Snapshot(meta)
            }
            _ => Op::Sync,
        };
        model.apply(&op, &mut steps);
        ops.push(op);
    }
    ops.push(Op::Sync);
    (ops, steps)
}

/// How far a run got: steps made durable by a completed sync, and steps of
/// every operation started (whose records may have reached the disk).
struct Progress {
    durable: usize,
    started: usize,
}

fn run(vfs: &SimVfs, ops: &[Op], progress: &mut Progress) -> Result<Tlog, TlogError> {
    let mut t = Tlog::open(Arc::new(vfs.clone()), dir(), opts())?;
    let mut scratch = Model::default();
    let mut steps = Vec::new();
    for op in ops {
        scratch.apply(op, &mut steps);
        progress.started = steps.len();
        match op {
            Op::Append(es) => t.append(es)?,
            Op::HardState(hs) => t.set_hard_state(hs)?,
            Op::ConfState(cs) => t.set_conf_state(cs)?,
            Op::Sync => t.sync()?,
            Op::Compact(idx) => t.compact(*idx)?,
            Op::Snapshot(meta) => t.apply_snapshot(meta)?,
        }
        if matches!(op, Op::Sync | Op::Snapshot(_)) {
            progress.durable = steps.len();
        }
    }
    Ok(t)
}

fn segment_files(vfs: &SimVfs) -> Vec<PathBuf> {
    vfs.paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect()
}

/// The recovered log must be the model after a prefix of steps within
/// `lo..=hi`; returns which.
fn check_prefix(t: &Tlog, steps: &[Model], lo: usize, hi: usize, what: &str) -> usize {
    let got = Model::of(t).unwrap_or_else(|e| panic!("{what}: reading back: {e}"));
    (lo..=hi.min(steps.len() - 1))
        .rev()
        .find(|&k| steps[k] == got)
        .unwrap_or_else(|| {
            let anywhere = steps.iter().position(|s| *s == got);
            panic!(
                "{what}: recovered log (start {}, last {}, hs {:?}) matches no step in \
                 {lo}..={hi} (matches step {anywhere:?})",
                got.start_index,
                got.last(),
                got.hard_state
            )
        })
}

/// After recovery the log must keep working: append, sync, reopen.
fn extend_and_reopen(vfs: &SimVfs, mut t: Tlog, what: &str) {
    let mut rng = StdRng::seed_from_u64(99);
    let before = Model::of(&t).unwrap();
    let next = t.last_index() + 1;
    let more: Vec<Entry> = (next..next + 3).map(|i| entry(&mut rng, i, 1000)).collect();
    t.append(&more).unwrap();
    t.sync().unwrap();
    drop(t);
    vfs.crash_lose_all_unsynced();
    let t = Tlog::open(Arc::new(vfs.clone()), dir(), opts()).unwrap();
    let mut want = before;
    want.entries.extend(more);
    assert_eq!(
        Model::of(&t).unwrap(),
        want,
        "{what}: after recovery and more appends"
    );
}

#[test]
fn crash_at_every_operation_recovers_a_synced_prefix() {
    for seed in 0..seeds() {
        let (ops, steps) = workload(seed, 90);
        let clean = SimVfs::new(seed);
        let mut progress = Progress {
            durable: 0,
            started: 0,
        };
        let t = run(&clean, &ops, &mut progress).unwrap();
        // The workload must exercise what it claims to.
        assert_eq!(
            Model::of(&t).unwrap(),
            *steps.last().unwrap(),
            "seed {seed}"
        );
        let files = segment_files(&clean);
        assert!(
            !files.contains(&dir().join(nacre_raft::segment_name(1))),
            "seed {seed}: nothing was compacted away"
        );
        drop(t);
        let total = clean.ops();

        for n in 0..total {
            for lose_all in [false, true] {
                let what = format!("seed {seed}, crash at op {n}/{total}, lose_all {lose_all}");
                let vfs = SimVfs::new(seed * 7919 + n);
                vfs.set_crash_after(Some(n));
                let mut progress = Progress {
                    durable: 0,
                    started: 0,
                };
                assert!(run(&vfs, &ops, &mut progress).is_err(), "{what}: no crash");
                if lose_all {
                    vfs.crash_lose_all_unsynced();
                } else {
                    vfs.crash();
                }
                let t = Tlog::open(Arc::new(vfs.clone()), dir(), opts())
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                check_prefix(&t, &steps, progress.durable, progress.started, &what);
                extend_and_reopen(&vfs, t, &what);
            }
        }
    }
}

/// Steps made durable by each explicit sync point (`Sync`, `Snapshot`).
fn durable_points(ops: &[Op]) -> Vec<usize> {
    let mut model = Model::default();
    let mut steps = Vec::new();
    let mut points = vec![0];
    for op in ops {
        model.apply(op, &mut steps);
        if matches!(op, Op::Sync | Op::Snapshot(_)) {
            points.push(steps.len());
        }
    }
    points
}

#[test]
fn bit_flips_in_synced_data_never_yield_wrong_data() {
    let (ops, steps) = workload(1000, 60);
    let last = steps.len() - 1;
    // The records of the last write have no later record to vouch that they
    // were synced, so damage there cannot be told from a torn write: it may
    // cost the log that write (back to the sync point before it), no more.
    let last_batch_from = durable_points(&ops)
        .into_iter()
        .filter(|&d| d < last)
        .max()
        .unwrap();
    assert!(last_batch_from > 0);
    let mut rng = StdRng::seed_from_u64(1000);
    let (mut detected, mut torn, mut harmless) = (0, 0, 0);
    for _ in 0..150 {
        let vfs = SimVfs::new(1);
        let mut progress = Progress {
            durable: 0,
            started: 0,
        };
        drop(run(&vfs, &ops, &mut progress).unwrap());
        let files = segment_files(&vfs);
        let path = &files[rng.random_range(0..files.len())];
        // Past the records the file holds only zero fill, which no
        // record claims: flip bits where the records are.
        let image = vfs.contents(path).unwrap();
        let len = image
            .iter()
            .rposition(|&b| b != 0)
            .map_or(1, |i| i as u64 + 1);
        let offset = rng.random_range(0..len);
        vfs.flip_bit(path, offset, rng.random_range(0..8));
        vfs.crash();
        let what = format!("flip in {} at {offset} of {len}", path.display());
        match Tlog::open(Arc::new(vfs.clone()), dir(), opts()) {
            Err(TlogError::Corruption { .. }) => detected += 1,
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(t) => {
                let k = check_prefix(&t, &steps, last_batch_from, last, &what);
                if k == last {
                    harmless += 1;
                } else {
                    torn += 1;
                }
            }
        }
    }
    assert!(
        detected > 100,
        "detected {detected}, torn {torn}, harmless {harmless}"
    );
}

fn big_opts() -> TlogOptions {
    TlogOptions {
        segment_size_bytes: 1 << 20,
        entry_size_max_bytes: 4096,
        cache_bytes_max: 1 << 20,
        zero_fill_ahead_bytes: 0,
    }
}

/// An entry whose data has no zero byte, so losing any sector it touches
/// damages its record.
fn big_entry(index: u64) -> Entry {
    let mut e = Entry {
        index,
        term: 1,
        ..Default::default()
    };
    e.data = format!("entry-{index:04}|").repeat(50).into_bytes().into();
    e
}

/// Offset and length (without padding) of the records of `es`, written in
/// one batch starting at `at`.
fn entry_records(es: &[Entry], mut at: u64) -> Vec<(u64, u64)> {
    es.iter()
        .map(|e| {
            let len = 24 + 25 + e.data.len() as u64 + e.context.len() as u64;
            let rec = (at, len);
            at += len.div_ceil(8) * 8;
            rec
        })
        .collect()
}

fn hard(commit: u64) -> HardState {
    HardState {
        term: 1,
        vote: 1,
        commit,
        ..Default::default()
    }
}

/// Sync entries 1..=3 and a hard state, then write entries 4..=9 and a hard
/// state whose sync fails: that write sits unsynced in the page cache. Returns
/// the segment, where the synced data ends, and the unsynced records.
fn synced_then_unsynced(vfs: &SimVfs) -> (PathBuf, u64, Vec<(u64, u64)>) {
    let mut t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()).unwrap();
    let synced: Vec<Entry> = (1..=3).map(big_entry).collect();
    t.append(&synced).unwrap();
    t.set_hard_state(&hard(3)).unwrap();
    t.sync().unwrap();
    let path = dir().join(nacre_raft::segment_name(1));
    let synced_end = vfs.file_len(&path).unwrap();
    let unsynced: Vec<Entry> = (4..=9).map(big_entry).collect();
    t.append(&unsynced).unwrap();
    t.set_hard_state(&hard(9)).unwrap();
    vfs.fail_next_sync(true);
    assert!(t.sync().is_err());
    drop(t);
    (path, synced_end, entry_records(&unsynced, synced_end))
}

#[test]
fn power_cut_keeping_later_sectors_of_an_unsynced_write_is_a_torn_tail() {
    // A disk may persist the sectors of an unsynced write in any order. For
    // every sector of the unsynced write, lose that one (it keeps its old
    // content: zeros past the synced end) and persist all the others: the
    // log must end just before the first damaged record, with every synced
    // entry, and nothing of the write after the damage may come back.
    let probe = SimVfs::new(40);
    let (_, synced_end, recs) = synced_then_unsynced(&probe);
    let write_end = recs.last().unwrap().0 + recs.last().unwrap().1;
    let mut cases = 0;
    let mut sector = synced_end / 512 * 512;
    while sector < write_end {
        let (lo, hi) = (sector.max(synced_end), (sector + 512).min(write_end));
        sector += 512;
        let what = format!("sector {lo}..{hi} lost");
        let vfs = SimVfs::new(40);
        let (path, _, _) = synced_then_unsynced(&vfs);
        let image = vfs.contents(&path).unwrap();
        let damaged = recs
            .iter()
            .position(|&(off, len)| {
                let (a, b) = (off.max(lo), (off + len).min(hi));
                a < b && image[a as usize..b as usize].iter().any(|&x| x != 0)
            })
            .unwrap_or_else(|| panic!("{what}: no record damaged"));
        let f = vfs.open(&path, false).unwrap();
        f.write_all_at(&vec![0u8; (hi - lo) as usize], lo).unwrap();
        f.sync_data().unwrap();
        drop(f);
        vfs.crash_lose_all_unsynced();
        if damaged + 1 < recs.len() {
            // Intact records of the write follow the damaged one.
            cases += 1;
        }

        let mut t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts())
            .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        let mut want: Vec<Entry> = (1..=3).map(big_entry).collect();
        want.extend((4..4 + damaged as u64).map(big_entry));
        let got = t.entries(1, t.last_index() + 1, None).unwrap();
        assert_eq!(got, want, "{what}: first damaged record {damaged}");
        // The hard state written after the damaged entries is dropped too.
        assert_eq!(t.hard_state(), hard(3), "{what}");

        // The log keeps working, and nothing past the torn point resurfaces.
        let next = t.last_index() + 1;
        t.append(&[entry(&mut StdRng::seed_from_u64(1), next, 2)])
            .unwrap();
        t.sync().unwrap();
        drop(t);
        vfs.crash_lose_all_unsynced();
        let t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()).unwrap();
        assert_eq!(t.last_index(), next, "{what}");
        assert_eq!(t.hard_state(), hard(3), "{what}");
    }
    assert!(
        cases >= 5,
        "only {cases} cases had intact records after damage"
    );
}

/// Offset of the record of `big_entry(index)` in `image`.
fn record_of(image: &[u8], index: u64) -> u64 {
    let needle = format!("entry-{index:04}|");
    let data = image
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    // Record header, then index, term, type and data length.
    (data - 24 - 21) as u64
}

fn assert_synced_corruption(vfs: &SimVfs, at: u64, what: &str) {
    match Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()) {
        Err(TlogError::Corruption {
            offset, what: why, ..
        }) => {
            assert_eq!(offset, at, "{what}: {why}");
            assert!(why.contains("synced data"), "{what}: {why}");
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
        Ok(t) => panic!("{what}: opened with last index {}", t.last_index()),
    }
}

#[test]
fn damage_in_synced_data_followed_by_later_records_is_corruption() {
    let path = dir().join(nacre_raft::segment_name(1));

    // A later synced write vouches for an earlier one.
    let vfs = SimVfs::new(41);
    let mut t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()).unwrap();
    t.append(&(1..=3).map(big_entry).collect::<Vec<_>>())
        .unwrap();
    t.sync().unwrap();
    t.append(&(4..=6).map(big_entry).collect::<Vec<_>>())
        .unwrap();
    t.sync().unwrap();
    drop(t);
    let at = record_of(&vfs.contents(&path).unwrap(), 2);
    vfs.flip_bit(&path, at + 100, 4);
    vfs.crash();
    assert_synced_corruption(&vfs, at, "flip in entry 2, synced write after");

    // So does an unsynced write that a power cut happened to keep, even when
    // the damage is in the newest synced write.
    let vfs = SimVfs::new(42);
    let (path, synced_end, recs) = synced_then_unsynced(&vfs);
    let f = vfs.open(&path, false).unwrap();
    f.sync_data().unwrap(); // the whole unsynced write reached the medium
    drop(f);
    vfs.crash_lose_all_unsynced();
    let at = record_of(&vfs.contents(&path).unwrap(), 3);
    assert!(at < synced_end && recs[0].0 == synced_end);
    vfs.flip_bit(&path, at + 60, 0);
    assert_synced_corruption(&vfs, at, "flip in entry 3, kept unsynced write after");

    // A damaged header of the newest segment, with records after it.
    let vfs = SimVfs::new(43);
    let mut t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()).unwrap();
    t.append(&[big_entry(1)]).unwrap();
    t.sync().unwrap();
    drop(t);
    vfs.flip_bit(&path, 30, 2);
    assert_synced_corruption(&vfs, 0, "flip in the segment header");

    // The limit: damage in the newest write, with no record after it, cannot
    // be told from a torn write; the log ends before the damaged record.
    let vfs = SimVfs::new(44);
    let mut t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()).unwrap();
    t.append(&(1..=2).map(big_entry).collect::<Vec<_>>())
        .unwrap();
    t.sync().unwrap();
    t.append(&(3..=5).map(big_entry).collect::<Vec<_>>())
        .unwrap();
    t.sync().unwrap();
    drop(t);
    let at = record_of(&vfs.contents(&path).unwrap(), 4);
    vfs.flip_bit(&path, at + 100, 4);
    let t = Tlog::open(Arc::new(vfs.clone()), dir(), big_opts()).unwrap();
    assert_eq!(t.last_index(), 3);
}

#[test]
fn flips_in_older_records_are_caught_when_read() {
    // A tlog that stays open: damage to an entry record after recovery is
    // caught when the entry is read back from disk.
    let vfs = SimVfs::new(3);
    let (ops, _) = workload(3, 60);
    let mut progress = Progress {
        durable: 0,
        started: 0,
    };
    let t = run(&vfs, &ops, &mut progress).unwrap();
    drop(t);
    let no_cache = TlogOptions {
        cache_bytes_max: 0,
        ..opts()
    };
    let t = Tlog::open(Arc::new(vfs.clone()), dir(), no_cache).unwrap();
    let first = t.first_index();
    let last = t.last_index();
    assert!(last >= first, "workload left entries");
    let want = t.entries(first, last + 1, None).unwrap();
    let mut caught = 0;
    // Flip bits all over the segments, one at a time; every read must then
    // fail or return exactly the right entries.
    for path in segment_files(&vfs) {
        let len = vfs.file_len(&path).unwrap();
        for offset in (0..len).step_by(41) {
            vfs.flip_bit(&path, offset, 1);
            match t.entries(first, last + 1, None) {
                Err(TlogError::Corruption { .. }) => caught += 1,
                Err(e) => panic!("unexpected {e}"),
                Ok(es) => assert_eq!(es, want),
            }
            vfs.flip_bit(&path, offset, 1);
        }
    }
    assert!(caught > 0);
    assert_eq!(
        t.entries(first, last + 1, None).unwrap().len() as u64,
        last - first + 1
    );
}
