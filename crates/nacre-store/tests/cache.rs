//! What the page cache keeps: a commit drops the pages it superseded, an
//! aborted transaction drops nothing, and old versions still read right.

use nacre_store::{Options, Store};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

/// Reads `k` through `r` and returns how many cache misses that took.
fn misses_of(store: &Store, r: &nacre_store::ReadTxn, k: &[u8], want: &[u8]) -> u64 {
    let before = store.stats().cache_misses;
    assert_eq!(r.get(k).unwrap().as_deref(), Some(want));
    store.stats().cache_misses - before
}

/// Small nodes make a tree four levels deep from a few thousand keys, so
/// that leaves are reached through the cache (a version pins its root and
/// the root's children). No background cleaner: these tests count misses.
fn small_nodes() -> Options {
    let mut opts = Options {
        node_size_bytes: 512,
        value_inline_max_bytes: 128,
        ..Options::default()
    };
    opts.cleaner.background = false;
    opts
}

#[test]
fn a_commit_drops_the_pages_it_superseded_and_an_abort_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_nodes();
    let store = Store::open(dir.path(), opts).unwrap();
    let mut w = store.begin_write().unwrap();
    for i in 0..5000 {
        w.put(&key(i), b"old").unwrap();
    }
    w.commit().unwrap();

    let k = key(2500);
    let old = store.begin_read();
    misses_of(&store, &old, &k, b"old");
    assert_eq!(misses_of(&store, &old, &k, b"old"), 0, "path not cached");

    // Copied on write, then aborted: the pages are still current and stay.
    let mut w = store.begin_write().unwrap();
    w.put(&k, b"new").unwrap();
    w.abort();
    assert_eq!(
        misses_of(&store, &old, &k, b"old"),
        0,
        "abort evicted pages"
    );

    // Committed: the old path is superseded and leaves the cache, but the
    // old version still reads it, from the log.
    let mut w = store.begin_write().unwrap();
    w.put(&k, b"new").unwrap();
    w.commit().unwrap();
    assert!(
        misses_of(&store, &old, &k, b"old") >= 2,
        "superseded leaf and branch still cached"
    );
    assert_eq!(misses_of(&store, &old, &k, b"old"), 0, "read back, cached");
    // The new path was cached as it was written.
    let new = store.begin_read();
    assert_eq!(
        misses_of(&store, &new, &k, b"new"),
        0,
        "written path not cached"
    );
}

#[test]
fn the_cleaner_caches_what_it_moves_only_where_the_old_copy_was_cached() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_nodes();
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let mut w = store.begin_write().unwrap();
        for i in 0..5000 {
            w.put(&key(i), b"v").unwrap();
        }
        w.commit().unwrap();
    }
    // Reopened, the cache is empty; reading one key caches one path.
    let store = Store::open(dir.path(), opts).unwrap();
    let k = key(4321);
    misses_of(&store, &store.begin_read(), &k, b"v");
    let before = store.stats().cache_bytes;
    let cleaned = store.clean().unwrap();
    assert!(
        cleaned.bytes_relocated > 100 * 1024,
        "the test needs the cleaner to move the tree: {cleaned:?}"
    );
    // Every node moved, and the cold leaves stayed out of the cache (the
    // cleaner's liveness checks do cache the branches they descend, about
    // one node in ten here; a cached page weighs at least 4 KiB, the
    // size of a pooled buffer)...
    let after = store.stats().cache_bytes;
    assert!(
        after - before < cleaned.records_relocated * 4096 / 4,
        "cleaning cached cold pages: {before} -> {after} bytes for {cleaned:?}"
    );
    // ...while the path that was cached moved with its place in the cache.
    assert_eq!(misses_of(&store, &store.begin_read(), &k, b"v"), 0);
    assert!(
        misses_of(&store, &store.begin_read(), &key(17), b"v") > 0,
        "a cold leaf came from the cache"
    );
}
