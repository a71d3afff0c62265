//! Single-put durable commits on a store of `keys` keys: a target for
//! `perf` and `strace -c`.
//! `cargo run --release -p nacre-store --example commit_profile [keys] [commits]`

use nacre_store::{Options, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let keys = args.next().unwrap_or(1_000_000);
    let commits = args.next().unwrap_or(1000);
    let dir =
        tempfile::tempdir_in(std::env::var("NACRE_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let mut opts = Options::default();
    // NACRE_NO_CLEANER=1 isolates the commit path from background cleaning.
    opts.cleaner.background = std::env::var_os("NACRE_NO_CLEANER").is_none();
    let store = Store::open(dir.path(), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut w = store.begin_write().unwrap();
    for _ in 0..keys {
        w.put(&rng.random::<[u8; 24]>(), &[7u8; 150]).unwrap();
    }
    w.commit().unwrap();
    let before = store.stats();
    println!(
        "after loading: {} MiB on disk, {} MiB live",
        before.bytes_on_disk >> 20,
        before.live_bytes >> 20
    );
    let t = std::time::Instant::now();
    for _ in 0..commits {
        let mut w = store.begin_write().unwrap();
        w.put(&rng.random::<[u8; 24]>(), &[9u8; 150]).unwrap();
        w.commit().unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    let after = store.stats();
    println!(
        "{commits} single durable commits in {s:.3}s: {:.0}/s, {} fsyncs, {:.1} KiB written per commit",
        commits as f64 / s,
        after.fsyncs - before.fsyncs,
        (after.bytes_on_disk as f64 - before.bytes_on_disk as f64) / commits as f64 / 1024.0
    );
}
