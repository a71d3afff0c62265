//! Loads keys (1,000 per durable commit, as the benchmark's bulk inserts
//! do), then does random point reads: a target for `perf record`.
//! `cargo run --release -p nacre-store --example read_profile [keys] [reads]`
//! Knobs, all environment variables: `NACRE_KEY_LEN`, `NACRE_VALUE_LEN`,
//! `NACRE_NO_CLEANER`, `NACRE_OVERWRITE`, `NACRE_HOT`, `NACRE_PREAD`,
//! `NACRE_THREADS` (see
//! below).

use nacre_store::{Options, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let keys = args.next().unwrap_or(62_500);
    let reads = args.next().unwrap_or(2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::default();
    // NACRE_NO_CLEANER=1: no background cleaner, to see what its work
    // during the reads costs them.
    if std::env::var_os("NACRE_NO_CLEANER").is_some() {
        opts.cleaner.background = false;
    }
    // NACRE_PREAD=1: every read a pread, none through the file mapping, to
    // measure what the mapping gains.
    if std::env::var_os("NACRE_PREAD").is_some() {
        opts.vfs = std::sync::Arc::new(nacre_store::OsVfs::pread_only());
    }
    let store = Store::open(dir.path(), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    // NACRE_KEY_LEN / NACRE_VALUE_LEN: 40 and 40 give the benchmark's set B
    // (kivaloo's pairs); the defaults are set A's.
    let env_len = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map_or(default, |n| n.parse().expect("a length in bytes"))
    };
    let key_len = env_len("NACRE_KEY_LEN", 24);
    let value_len = env_len("NACRE_VALUE_LEN", 150);
    let ks: Vec<Vec<u8>> = (0..keys)
        .map(|_| (0..key_len).map(|_| rng.random()).collect())
        .collect();
    for chunk in ks.chunks(1000) {
        let mut w = store.begin_write().unwrap();
        for k in chunk {
            w.put(k, &vec![7u8; value_len]).unwrap();
        }
        w.commit().unwrap();
    }
    // NACRE_OVERWRITE=N: then N commits of 1,000 random overwrites, so that
    // the background cleaner has garbage to collect while the reads run (as
    // in the benchmark's read phases).
    let overwrites: usize = std::env::var("NACRE_OVERWRITE")
        .ok()
        .map_or(0, |n| n.parse().expect("NACRE_OVERWRITE: a number"));
    for _ in 0..overwrites {
        let mut w = store.begin_write().unwrap();
        for _ in 0..1000 {
            w.put(&ks[rng.random_range(0..ks.len())], &vec![8u8; value_len])
                .unwrap();
        }
        w.commit().unwrap();
    }
    let before = store.stats();
    println!(
        "loaded: {} keys, {} MiB live, {} MiB on disk",
        before.key_count,
        before.live_bytes >> 20,
        before.bytes_on_disk >> 20
    );
    let r = store.begin_read();
    let mut out = Vec::new();
    // NACRE_HOT=1: read only the first 1% of the keys (the benchmark's
    // hotspot reads), so that every page comes from the cache.
    let hot = if std::env::var_os("NACRE_HOT").is_some() {
        (ks.len() / 100).max(1)
    } else {
        ks.len()
    };
    // NACRE_THREADS=N: the reads split over N threads, each with its own
    // read transaction of the same version, as a server's connections are.
    let threads: usize = std::env::var("NACRE_THREADS")
        .ok()
        .map_or(1, |n| n.parse().expect("NACRE_THREADS: a number"));
    assert!(threads >= 1, "NACRE_THREADS: at least 1");
    let reads = reads / threads * threads;
    let t = std::time::Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (store, ks) = (&store, &ks);
            scope.spawn(move || {
                let r = store.begin_read();
                let mut rng = StdRng::seed_from_u64(100 + thread as u64);
                let mut out = Vec::new();
                for _ in 0..reads / threads {
                    let k = &ks[rng.random_range(0..hot)];
                    let found = r.get_with(k, |v| {
                        out.clear();
                        out.extend_from_slice(v)
                    });
                    assert!(found.unwrap().is_some());
                }
            });
        }
    });
    let s = t.elapsed().as_secs_f64();
    let after = store.stats();
    println!(
        "{reads} reads in {s:.3}s: {:.0} reads/s; {} cache misses; the cleaner took {} MiB off the files meanwhile",
        reads as f64 / s,
        after.cache_misses - before.cache_misses,
        (before.bytes_on_disk.saturating_sub(after.bytes_on_disk)) >> 20
    );
    let ranges = reads / 4;
    let t = std::time::Instant::now();
    let mut total = 0u64;
    for _ in 0..ranges {
        let k = &ks[rng.random_range(0..ks.len())];
        let mut n = 0;
        total += r
            .scan(
                std::ops::Bound::Included(&k[..]),
                std::ops::Bound::Unbounded,
                false,
                |_, v| {
                    out.clear();
                    out.extend_from_slice(v);
                    n += 1;
                    n < 10
                },
            )
            .unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{ranges} ranges of 10 ({total} entries) in {s:.3}s: {:.0} ranges/s",
        ranges as f64 / s
    );
}
