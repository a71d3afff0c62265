//! Crash tests through the fault-injecting file layer.
//!
//! A deterministic workload runs against `SimVfs`; the power is cut at every
//! mutating file operation in turn (with unsynced writes then kept, dropped
//! or torn at random), and the store is reopened. It must come back to a
//! state that was committed, no older than the last commit acknowledged as
//! durable. Bit flips in durable data must be reported as corruption, never
//! served.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use nacre_store::{Durability, Error, Options, Store};
use nacre_vfs::sim::SimVfs;
use nacre_vfs::{VFile, Vfs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = "/db";

fn sim_options(sim: &SimVfs) -> Options {
    Options {
        vfs: Arc::new(sim.clone()),
        segment_size_bytes: 64 << 10,
        value_size_max_bytes: 16 << 10,
        ..small_options()
    }
}

/// What the workload knows about the states it produced.
#[derive(Default)]
struct History {
    /// (seq, state) for every commit that changed data, in order; the last
    /// one may be a commit that was in flight when the power went.
    states: Vec<(u64, Model)>,
    /// Highest seq acknowledged durable.
    durable: u64,
    /// Highest seq any started operation could have reached.
    max_seq: u64,
}

impl History {
    /// The data a recovered store at `seq` must hold: that of the last
    /// data-changing commit at or before it (later commits of the cleaner
    /// and of snapshots keep the data as it was).
    fn at(&self, seq: u64) -> &Model {
        &self
            .states
            .iter()
            .rev()
            .find(|(s, _)| *s <= seq)
            .expect("history starts at seq 0")
            .1
    }
}

/// Run the workload until it ends or the simulated power cut makes an
/// operation fail. Deterministic for a given seed.
fn workload(sim: &SimVfs, seed: u64, h: &mut History) -> Result<(), Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let store = Store::open(DIR, sim_options(sim))?;
    let mut model = Model::new();
    h.states.push((store.begin_read().seq(), model.clone()));
    for step in 0..40 {
        match rng.random_range(0..10) {
            0..=6 => {
                let mut txn = store.begin_write()?;
                for _ in 0..rng.random_range(1..30) {
                    let k = key(&mut rng, 400);
                    if rng.random_bool(0.75) {
                        let v = value(&mut rng);
                        txn.put(&k, &v)?;
                        model.insert(k, v);
                    } else {
                        txn.delete(&k)?;
                        model.remove(&k);
                    }
                }
                let seq = txn.base_seq() + 1;
                h.max_seq = seq;
                h.states.push((seq, model.clone()));
                let d = if rng.random_bool(0.5) {
                    Durability::Immediate
                } else {
                    Durability::Lazy
                };
                let info = txn.commit_with(d)?;
                if info.seq + 1 == seq {
                    // Nothing changed (say, deletes of absent keys): no new
                    // commit, and the state is the one before.
                    let (_, unchanged) = h.states.pop().unwrap();
                    assert!(&unchanged == h.at(info.seq), "a no-op commit changed data");
                } else {
                    assert_eq!(info.seq, seq);
                }
                if d == Durability::Immediate {
                    h.durable = info.seq;
                }
            }
            7 => {
                h.max_seq = store.begin_read().seq() + 1;
                store.create_snapshot(&format!("snap{step}"))?;
            }
            8 => {
                // Cleaning commits several times; allow for them all.
                h.max_seq = u64::MAX;
                store.clean()?;
                // Cleaning syncs before it deletes a segment, which makes
                // every commit so far durable.
                h.max_seq = store.begin_read().seq();
                h.durable = h.max_seq;
            }
            _ => {
                let seq = store.begin_read().seq();
                store.sync()?;
                h.durable = seq;
            }
        }
        h.max_seq = h.max_seq.max(store.begin_read().seq());
    }
    Ok(())
}

/// Reopen after a crash and check the recovered state against the history.
fn check_recovery(sim: &SimVfs, h: &History, what: &str) {
    let store =
        Store::open(DIR, sim_options(sim)).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let txn = store.begin_read();
    let seq = txn.seq();
    assert!(
        seq >= h.durable,
        "{what}: recovered seq {seq} is older than durable seq {}",
        h.durable
    );
    assert!(
        seq <= h.max_seq,
        "{what}: recovered seq {seq} was never committed (max {})",
        h.max_seq
    );
    check_all(&txn, h.at(seq));
    for s in store.list_snapshots() {
        check_all(&store.snapshot(&s.name).unwrap(), h.at(s.seq));
    }
    drop(txn);
    // The recovered store must take new writes and keep them.
    let mut w = store.begin_write().unwrap();
    w.put(b"after-crash", b"ok").unwrap();
    w.commit_with(Durability::Immediate).unwrap();
    store.close().unwrap();
    let store = Store::open(DIR, sim_options(sim)).unwrap();
    assert_eq!(
        store.begin_read().get(b"after-crash").unwrap().as_deref(),
        Some(&b"ok"[..])
    );
}

#[test]
fn crash_at_every_write_and_sync_point() {
    let seeds: u64 = std::env::var("NACRE_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let start: u64 = std::env::var("NACRE_CRASH_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in start..start + seeds {
        let total = {
            let sim = SimVfs::new(seed);
            let mut h = History::default();
            workload(&sim, seed, &mut h).expect("workload without faults");
            sim.ops()
        };
        assert!(
            total > 50,
            "workload too small to be interesting: {total} ops"
        );
        for point in 0..total {
            let sim = SimVfs::new(seed ^ (point << 20));
            sim.set_crash_after(Some(point));
            let mut h = History::default();
            let r = workload(&sim, seed, &mut h);
            assert!(
                r.is_err() || point >= sim.ops(),
                "seed {seed} point {point}: the crash did not stop the workload"
            );
            if h.states.is_empty() {
                // The crash came before the store was ever created.
                h.states.push((0, Model::new()));
            }
            if point.is_multiple_of(2) {
                sim.crash();
            } else {
                sim.crash_lose_all_unsynced();
            }
            check_recovery(
                &sim,
                &h,
                &format!("seed {seed} crash point {point}/{total}"),
            );
        }
    }
}

#[test]
fn bit_flips_are_reported_never_served() {
    let seed = 7;
    let sim = SimVfs::new(seed);
    let mut h = History::default();
    workload(&sim, seed, &mut h).unwrap();
    // A clean close: the final root vouches for everything before it.
    Store::open(DIR, sim_options(&sim))
        .unwrap()
        .close()
        .unwrap();
    let model = h.at(u64::MAX).clone();
    let files: Vec<_> = sim
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "nacre"))
        .collect();
    assert!(!files.is_empty());
    let mut rng = StdRng::seed_from_u64(99);
    let (mut detected, mut harmless) = (0, 0);
    for trial in 0..300 {
        let path = &files[rng.random_range(0..files.len())];
        // Aim at bytes that hold data: zero padding and the zero fill ahead
        // of the head carry no meaning, so flips there are harmless.
        let contents = sim.contents(path).unwrap();
        let offset = loop {
            let o = rng.random_range(0..contents.len());
            if contents[o] != 0 {
                break o as u64;
            }
        };
        let bit = rng.random_range(0..8u8);
        sim.flip_bit(path, offset, bit);
        match flipped_outcome(&sim, &model) {
            Outcome::Detected => detected += 1,
            Outcome::Harmless => harmless += 1,
        }
        sim.flip_bit(path, offset, bit);
        // Each open starts a new segment; remove them so that every trial
        // sees the same files.
        for p in sim.paths() {
            if !files.contains(&p) && p.extension().is_some_and(|e| e == "nacre") {
                sim.remove(&p).unwrap();
            }
        }
        let _ = trial;
    }
    // Most of a segment is live records: most flips must be caught.
    assert!(
        detected > 100,
        "only {detected} of 300 flips detected ({harmless} harmless)"
    );
}

enum Outcome {
    Detected,
    Harmless,
}

/// Open and read everything; each answer must be the true data or a
/// corruption error.
fn flipped_outcome(sim: &SimVfs, model: &Model) -> Outcome {
    let opts = Options {
        cleaner: nacre_store::CleanerOptions {
            background: false,
            ..Default::default()
        },
        ..sim_options(sim)
    };
    let store = match Store::open(DIR, opts) {
        Ok(s) => s,
        Err(Error::Corruption { .. } | Error::Format(_)) => return Outcome::Detected,
        Err(e) => panic!("open after a bit flip failed with a non-corruption error: {e}"),
    };
    let txn = store.begin_read();
    let mut got = Vec::new();
    for item in txn.iter() {
        match item {
            Ok(kv) => got.push(kv),
            Err(Error::Corruption { .. }) => return Outcome::Detected,
            Err(e) => panic!("scan after a bit flip: {e}"),
        }
    }
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert!(got == want, "a bit flip changed the data served");
    assert_eq!(txn.count(), model.len() as u64);
    Outcome::Harmless
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    let sim = SimVfs::new(3);
    let store = Store::open(DIR, sim_options(&sim)).unwrap();
    let mut w = store.begin_write().unwrap();
    w.put(b"a", b"1").unwrap();
    w.commit_with(Durability::Immediate).unwrap();

    sim.fail_next_sync(true);
    let mut w = store.begin_write().unwrap();
    w.put(b"b", b"2").unwrap();
    let err = w.commit_with(Durability::Immediate).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "got {err}");
    // The store prefers to stop: no more writes until reopened.
    assert!(matches!(
        store.begin_write().err(),
        Some(Error::Poisoned(_))
    ));
    assert!(store.stats().poisoned.is_some());
    drop(store);

    sim.crash_lose_all_unsynced();
    let store = Store::open(DIR, sim_options(&sim)).unwrap();
    let r = store.begin_read();
    assert_eq!(r.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(r.get(b"b").unwrap(), None);
}

/// A file layer whose fsync takes 2 ms, so that concurrent committers
/// overlap and group commit has something to group.
struct SlowSync {
    inner: SimVfs,
    syncs: Arc<AtomicU64>,
}

struct SlowFile {
    inner: Arc<dyn VFile>,
    syncs: Arc<AtomicU64>,
}

impl VFile for SlowFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for SlowSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.open(path, create)?,
            syncs: self.syncs.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn Send + Sync>> {
        self.inner.lock(path)
    }
}

#[test]
fn concurrent_immediate_commits_share_fsyncs() {
    let sim = SimVfs::new(5);
    let syncs = Arc::new(AtomicU64::new(0));
    let opts = Options {
        vfs: Arc::new(SlowSync {
            inner: sim.clone(),
            syncs: syncs.clone(),
        }),
        durability: Durability::Immediate,
        ..sim_options(&sim)
    };
    let store = Store::open(DIR, opts).unwrap();
    let before = syncs.load(Ordering::Relaxed);
    let threads = 8;
    let per_thread = 25;
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let mut w = store.begin_write().unwrap();
                    w.put(format!("t{t}-{i}").as_bytes(), b"v").unwrap();
                    w.commit().unwrap();
                }
            });
        }
    });
    let fsyncs = syncs.load(Ordering::Relaxed) - before;
    let commits = threads * per_thread;
    assert_eq!(store.begin_read().count(), commits as u64);
    assert!(
        fsyncs * 2 <= commits as u64,
        "{commits} immediate commits took {fsyncs} fsyncs: group commit is not grouping"
    );
    // And every one of them is durable.
    drop(store);
    sim.crash_lose_all_unsynced();
    let store = Store::open(DIR, sim_options(&sim)).unwrap();
    assert_eq!(store.begin_read().count(), commits as u64);
}
