//! Durable commits of 1,000 random puts each: a target for `perf record`.
//! `cargo run --release -p nacre-store --example write_profile [keys] [commits]`
//! Knobs, all environment variables: `NACRE_NO_CLEANER`, `NACRE_INSERT`,
//! `NACRE_NODE_SIZE`, `NACRE_SORTED_RUN` (see below).

use nacre_store::{Options, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let keys = args.next().unwrap_or(65_536);
    let commits = args.next().unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::default();
    // NACRE_NO_CLEANER=1: no background cleaner, so that the bytes the
    // commits write can be counted alone.
    if std::env::var_os("NACRE_NO_CLEANER").is_some() {
        opts.cleaner.background = false;
    }
    // NACRE_NODE_SIZE=N: split nodes past N bytes instead of the default,
    // to see what node size does to the bytes and time per put.
    if let Ok(n) = std::env::var("NACRE_NODE_SIZE") {
        opts.node_size_bytes = n.parse().expect("NACRE_NODE_SIZE: a number of bytes");
        opts.value_inline_max_bytes = opts.value_inline_max_bytes.min(opts.node_size_bytes / 2);
    }
    let store = Store::open(dir.path(), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut ks: Vec<[u8; 40]> = (0..keys).map(|_| rng.random()).collect();
    // NACRE_SORTED_RUN=N: sort the keys in runs of N, as kivaloo's `mkpairs`
    // does with N = 65,536, so that inserts arrive in sorted runs.
    if let Ok(n) = std::env::var("NACRE_SORTED_RUN") {
        let n: usize = n.parse().expect("NACRE_SORTED_RUN: a number of keys");
        for run in ks.chunks_mut(n.max(1)) {
            run.sort_unstable();
        }
    }
    // NACRE_INSERT=1: start empty and insert the keys 1,000 per commit
    // (kivaloo's bulk insert) instead of loading them first.
    let insert = std::env::var_os("NACRE_INSERT").is_some();
    if !insert {
        let mut w = store.begin_write().unwrap();
        for k in &ks {
            w.put(k, &[7u8; 40]).unwrap();
        }
        w.commit().unwrap();
    }
    let mut next = 0;
    let cpu0 = thread_cpu_ns();
    let written0 = bytes_written();
    let t = std::time::Instant::now();
    let mut peak_ratio = 0f64;
    for _ in 0..commits {
        let mut w = store.begin_write().unwrap();
        for _ in 0..1000 {
            let k = if insert {
                next += 1;
                &ks[(next - 1) % ks.len()]
            } else {
                &ks[rng.random_range(0..ks.len())]
            };
            w.put(k, &rng.random::<[u8; 40]>()).unwrap();
        }
        w.commit().unwrap();
        let st = store.stats();
        peak_ratio = peak_ratio.max(st.bytes_on_disk as f64 / st.live_bytes.max(1) as f64);
    }
    let s = t.elapsed().as_secs_f64();
    let cpu_s = (thread_cpu_ns() - cpu0) as f64 / 1e9;
    let written_mib = (bytes_written() - written0) as f64 / 1048576.0;
    let st = store.stats();
    let files: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!("file sizes in the directory: {} MiB", files >> 20);
    println!(
        "{commits} commits of 1000 puts in {s:.3}s: {:.0} puts/s; {} MiB on disk, {} MiB live, \
         {} segments cleaned; peak ratio {peak_ratio:.2}; {} stalls, {} ms stalled; \
         writer thread on CPU {cpu_s:.3}s ({:.1} us per put); \
         {written_mib:.0} MiB handed to write(2) by the process",
        commits as f64 * 1000.0 / s,
        st.bytes_on_disk >> 20,
        st.live_bytes >> 20,
        st.cleaned_segments,
        st.stalls,
        st.stalled_ms,
        cpu_s * 1e6 / (commits as f64 * 1000.0)
    );
    // Then let the background cleaner catch up, and report where the space
    // ratio settles.
    let t = std::time::Instant::now();
    let mut last = store.stats().bytes_on_disk;
    let mut still = 0;
    while t.elapsed().as_secs() < 120 && still < 20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = store.stats().bytes_on_disk;
        still = if now < last { 0 } else { still + 1 };
        last = now;
    }
    let st = store.stats();
    println!(
        "settled after {:.1}s idle: {:.1} MiB on disk for {:.1} MiB live: ratio {:.2}",
        t.elapsed().as_secs_f64(),
        st.bytes_on_disk as f64 / 1048576.0,
        st.live_bytes as f64 / 1048576.0,
        st.bytes_on_disk as f64 / st.live_bytes as f64
    );
}

/// Time this thread has spent on a CPU, in nanoseconds (Linux schedstat);
/// wall time on a shared VM swings by a third, CPU time much less.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Bytes this process has passed to write calls (`wchar` in /proc/self/io):
/// records, zero fill and, with the cleaner on, relocations.
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
