//! The cleaner under load, snapshots holding space, and data sets larger
//! than the page cache.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nacre_store::{CleanerOptions, Options, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn val_for(key: &[u8], version: u64) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(120, b'.');
    v
}

/// Wait (a minute at most) for the background cleaner to bring the files
/// within 1.5x the live data, plus the head segment, which is never cleaned
/// while it is written.
fn wait_for_cleaner(store: &Store, seg: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = store.stats();
        if st.bytes_on_disk as f64 <= 1.5 * st.live_bytes as f64 + seg as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "background cleaner did not catch up: {} bytes on disk for {} live; {st:?}",
            st.bytes_on_disk,
            st.live_bytes
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cleaner_keeps_up_with_writers_and_spares_old_readers() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        cleaner: CleanerOptions {
            background: true,
            interval_ms: 2,
            batch_bytes_max: 32 << 10,
            // Slow enough that the cleaner is usually mid-segment, and
            // yielding to the writer, when the writes stop: it must still
            // finish afterwards.
            rate_bytes_per_s_max: 2 << 20,
            ..CleanerOptions::default()
        },
        ..small_options()
    };
    let seg = opts.segment_size_bytes;
    let store = Store::open(dir.path(), opts).unwrap();
    let keys: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("key{i:05}").into_bytes())
        .collect();
    let mut model = Model::new();
    let mut w = store.begin_write().unwrap();
    for k in &keys {
        w.put(k, &val_for(k, 0)).unwrap();
        model.insert(k.clone(), val_for(k, 0));
    }
    w.commit().unwrap();
    // An old reader and a named snapshot, both of the initial state.
    let old_reader = store.begin_read();
    store.create_snapshot("start").unwrap();
    let initial = model.clone();

    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for r in 0..2 {
            let store = store.clone();
            let done = &done;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(r);
                while !done.load(Ordering::Relaxed) {
                    // Each read view is internally consistent: every value
                    // belongs to its key, and the scan length matches count.
                    let txn = store.begin_read();
                    let mut n = 0;
                    for kv in txn.iter() {
                        let (k, v) = kv.unwrap();
                        assert!(v.starts_with(&k), "value of another key under {k:?}");
                        n += 1;
                    }
                    assert_eq!(n, txn.count());
                    let k = format!("key{:05}", rng.random_range(0..3000));
                    assert!(txn.get(k.as_bytes()).unwrap().is_some());
                }
            });
        }
        let mut rng = StdRng::seed_from_u64(1);
        for round in 1..=150u64 {
            let mut w = store.begin_write().unwrap();
            for _ in 0..40 {
                let k = &keys[rng.random_range(0..keys.len())];
                w.put(k, &val_for(k, round)).unwrap();
                model.insert(k.clone(), val_for(k, round));
            }
            w.commit().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    assert!(
        store.stats().cleaned_segments > 0,
        "the background cleaner never ran"
    );
    check_all(&old_reader, &initial);
    check_all(&store.snapshot("start").unwrap(), &initial);
    check_all(&store.begin_read(), &model);
    drop(old_reader);

    // Without the snapshot, cleaning must get within the ratio (plus the
    // head segment, which is never cleaned while being written).
    store.drop_snapshot("start").unwrap();
    wait_for_cleaner(&store, seg);
    assert!(store.stats().cleaner_error.is_none());
    check_all(&store.begin_read(), &model);
    store.close().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    check_all(&store.begin_read(), &model);
}

#[test]
fn snapshot_holds_space_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    let keys: Vec<Vec<u8>> = (0..4000)
        .map(|i| format!("key{i:05}").into_bytes())
        .collect();
    for version in 0..2u64 {
        let mut w = store.begin_write().unwrap();
        for k in &keys {
            w.put(k, &val_for(k, version)).unwrap();
        }
        w.commit().unwrap();
        if version == 0 {
            store.create_snapshot("v0").unwrap();
        }
    }
    store.clean().unwrap();
    let held = store.stats();
    // Both versions are live: the snapshot keeps the old one.
    assert!(
        held.bytes_on_disk as f64 > 1.8 * held.live_bytes as f64,
        "snapshot data was lost or not counted: {held:?}"
    );
    assert_eq!(
        store.snapshot("v0").unwrap().get(b"key00001").unwrap(),
        Some(val_for(b"key00001", 0))
    );

    store.drop_snapshot("v0").unwrap();
    store.clean().unwrap();
    let freed = store.stats();
    // The store's byte count is the files' (but for the zero fill ahead of
    // the head segment, at most a segment here).
    let files: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let seg = small_options().segment_size_bytes;
    assert!(
        files >= freed.bytes_on_disk && files - freed.bytes_on_disk <= seg,
        "stats say {} bytes on disk, the files hold {files}",
        freed.bytes_on_disk
    );
    assert!(
        (freed.bytes_on_disk as f64) < 1.5 * freed.live_bytes as f64,
        "space not released after drop: {freed:?}"
    );
    assert!(freed.bytes_on_disk < held.bytes_on_disk * 2 / 3);
    assert_eq!(
        store.begin_read().get(b"key00001").unwrap(),
        Some(val_for(b"key00001", 1))
    );
}

#[test]
fn data_set_ten_times_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = 256 << 10;
    let opts = Options {
        cache_size_bytes: cache,
        segment_size_bytes: 4 << 20,
        ..small_options()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut model = Model::new();
    let mut w = store.begin_write().unwrap();
    while model.values().map(|v| v.len() + 10).sum::<usize>() < 10 * cache + (cache / 2) {
        let k = format!("k{:08}", rng.random_range(0..10_000_000)).into_bytes();
        let v: Vec<u8> = (0..rng.random_range(50..400))
            .map(|_| rng.random())
            .collect();
        w.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.commit().unwrap();
    let live = store.stats().live_bytes;
    assert!(live > 10 * cache as u64, "data set too small: {live} bytes");
    store.close().unwrap();

    let store = Store::open(dir.path(), opts).unwrap();
    let txn = store.begin_read();
    check_all(&txn, &model);
    for (k, v) in model.iter().step_by(7) {
        assert_eq!(txn.get(k).unwrap().as_ref(), Some(v));
    }
    let st = store.stats();
    assert!(
        st.cache_bytes <= cache as u64,
        "cache grew past its bound: {st:?}"
    );
    assert!(st.cache_misses > 1000, "reads did not go to disk: {st:?}");
}

#[test]
fn cleaner_finishes_after_the_last_write() {
    // Paced slowly, so that the cleaner is mid-segment, yielding to the
    // writer, when the last commit lands. Nothing is committed afterwards:
    // the cleaner must still catch up on its own.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        cleaner: CleanerOptions {
            background: true,
            interval_ms: 2,
            // A batch rewrites the path above what it moves; batches much
            // smaller than this would make cleaning reclaim nothing.
            batch_bytes_max: 64 << 10,
            rate_bytes_per_s_max: 1 << 20,
            ..CleanerOptions::default()
        },
        ..small_options()
    };
    let seg = opts.segment_size_bytes;
    let store = Store::open(dir.path(), opts).unwrap();
    let keys: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("key{i:05}").into_bytes())
        .collect();
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = Model::new();
    for round in 0..120u64 {
        let mut w = store.begin_write().unwrap();
        for _ in 0..50 {
            let k = &keys[rng.random_range(0..keys.len())];
            w.put(k, &val_for(k, round)).unwrap();
            model.insert(k.clone(), val_for(k, round));
        }
        w.commit().unwrap();
        // Pauses long enough for the cleaner to see the writers idle and
        // start catching up gently, so that the next commit makes it yield.
        let pause = if round >= 80 { 15 } else { 1 };
        std::thread::sleep(Duration::from_millis(pause));
    }
    wait_for_cleaner(&store, seg);
    check_all(&store.begin_read(), &model);
}

/// Heavy random overwrites; returns the peak of (bytes on disk - bound)
/// seen after any commit, and the store's stats. With `stall`, writers stall
/// past 2x the live data; without, the stall (and the cleaner's urgency) is
/// out of reach.
fn peak_over_bound(stall: bool) -> (i64, nacre_store::Stats) {
    let dir = tempfile::tempdir().unwrap();
    let ratio = if stall { 2.0 } else { 1000.0 };
    let opts = Options {
        cleaner: CleanerOptions {
            background: true,
            interval_ms: 5,
            space_ratio_max: 1.5,
            space_ratio_busy_max: ratio,
            space_ratio_stall: ratio,
            ..CleanerOptions::default()
        },
        ..small_options()
    };
    let seg = opts.segment_size_bytes as i64;
    let store = Store::open(dir.path(), opts).unwrap();
    let keys: Vec<Vec<u8>> = (0..8000)
        .map(|i| format!("key{i:05}").into_bytes())
        .collect();
    let mut rng = StdRng::seed_from_u64(9);
    let mut peak = i64::MIN;
    for round in 0..150u64 {
        let mut w = store.begin_write().unwrap();
        for _ in 0..200 {
            let k = &keys[rng.random_range(0..keys.len())];
            w.put(k, &val_for(k, round)).unwrap();
        }
        w.commit().unwrap();
        let st = store.stats();
        // The documented bound: past 2x live, once over four segments. On
        // top of it, what lands between a stall check and the end of a
        // commit: the commit itself, a segment's worth of relocation in
        // flight, and the head segment. Four segments cover them; without
        // the stall the same run ends up some 30 MB past (measured).
        let bound = ((2.0 * st.live_bytes as f64) as i64).max(4 * seg) + 4 * seg;
        peak = peak.max(st.bytes_on_disk as i64 - bound);
    }
    (peak, store.stats())
}

#[test]
fn writers_stall_to_keep_space_bounded() {
    let (peak, st) = peak_over_bound(true);
    assert!(
        peak <= 0,
        "files exceeded the stall bound by {peak} bytes: {st:?}"
    );
    assert!(st.stalls > 0, "no writer ever stalled: {st:?}");
    // Without the stall the same writes run past the bound: the assertion
    // above measures something.
    let (peak, st) = peak_over_bound(false);
    assert!(peak > 0, "the workload never pressed the cleaner: {st:?}");
}

#[test]
fn dropping_the_last_handle_releases_the_store() {
    // With the background cleaner busy, the last handle going away must stop
    // it, so that the directory can be opened again at once.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        cleaner: CleanerOptions {
            background: true,
            interval_ms: 1,
            ..CleanerOptions::default()
        },
        ..small_options()
    };
    for round in 0..20u64 {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let copy = store.clone();
        let mut w = copy.begin_write().unwrap();
        for i in 0..500u32 {
            let k = format!("k{i:04}").into_bytes();
            w.put(&k, &val_for(&k, round)).unwrap();
        }
        w.commit().unwrap();
        drop(store);
        drop(copy);
    }
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(
        store.begin_read().get(b"k0001").unwrap(),
        Some(val_for(b"k0001", 19))
    );
}

#[test]
fn foreground_and_background_cleaning_together() {
    // `clean()` while the background cleaner works on the same segments:
    // neither may fail, and the data must be intact.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        cleaner: CleanerOptions {
            background: true,
            interval_ms: 1,
            space_ratio_max: 1.05,
            space_ratio_busy_max: 1.05,
            rate_bytes_per_s_max: 0,
            ..CleanerOptions::default()
        },
        ..small_options()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let keys: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("key{i:05}").into_bytes())
        .collect();
    let mut rng = StdRng::seed_from_u64(21);
    let mut model = Model::new();
    for round in 0..60u64 {
        let mut w = store.begin_write().unwrap();
        for _ in 0..150 {
            let k = &keys[rng.random_range(0..keys.len())];
            w.put(k, &val_for(k, round)).unwrap();
            model.insert(k.clone(), val_for(k, round));
        }
        w.commit().unwrap();
        if round % 3 == 0 {
            store
                .clean()
                .unwrap_or_else(|e| panic!("clean() beside the background cleaner: {e}"));
        }
    }
    assert!(store.stats().cleaner_error.is_none(), "{:?}", store.stats());
    check_all(&store.begin_read(), &model);
}

#[test]
fn writers_never_wait_for_a_stopped_cleaner() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size_bytes: 64 << 10,
        value_size_max_bytes: 16 << 10,
        cleaner: CleanerOptions {
            background: true,
            space_ratio_max: 1.5,
            space_ratio_busy_max: 1.5,
            space_ratio_stall: 1.5,
            // Were a writer to wait for the stopped cleaner, it would wait
            // for an hour.
            stall_ms_max: 3_600_000,
            ..CleanerOptions::default()
        },
        ..small_options()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    // Closing one handle stops the cleaner for all of them.
    store.clone().close().unwrap();
    // All the writing happens in a thread that reports back, so that a
    // writer waiting for the stopped cleaner fails the test, not hangs it.
    let (tx, rx) = std::sync::mpsc::channel();
    let s = store.clone();
    std::thread::spawn(move || {
        let keys: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("key{i:05}").into_bytes())
            .collect();
        for round in 0..40u64 {
            let mut w = s.begin_write().unwrap();
            for k in &keys {
                w.put(k, &val_for(k, round)).unwrap();
            }
            w.commit().unwrap();
        }
        // Past the stall ratio now, with nobody to clean.
        let st = s.stats();
        let over = st.bytes_on_disk as f64 > 1.5 * st.live_bytes as f64
            && st.bytes_on_disk > 4 * (64 << 10);
        let mut w = s.begin_write().unwrap();
        w.put(b"late", b"write").unwrap();
        w.commit().unwrap();
        tx.send((over, st)).unwrap();
    });
    let (over, st) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a writer waited for a cleaner that was stopped");
    assert!(over, "the files never passed the stall ratio: {st:?}");
    assert_eq!(
        store.begin_read().get(b"late").unwrap().as_deref(),
        Some(&b"write"[..])
    );
}
