//! What reading through file mappings gains over `pread`, measured in one
//! process so that the machine's drift falls on both sides alike: two stores
//! with the same pairs, one on `OsVfs::new()` and one on
//! `OsVfs::pread_only()`, read in alternating chunks of random gets.
//! `cargo run --release -p nacre-store --example mapped_reads [keys] [rounds]`
//! Pairs are set B's (40-byte keys and values), loaded 1,000 per durable
//! commit; the background cleaner is off so that both stores hold the same
//! files. `NACRE_HOT=1` reads only the first 1% of the keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_store::{Options, OsVfs, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHUNK_GETS: usize = 250_000;

fn open(dir: &std::path::Path, vfs: OsVfs, ks: &[Vec<u8>]) -> Store {
    let mut opts = Options::default();
    opts.cleaner.background = false;
    opts.vfs = Arc::new(vfs);
    let store = Store::open(dir, opts).unwrap();
    for chunk in ks.chunks(1000) {
        let mut w = store.begin_write().unwrap();
        for k in chunk {
            w.put(k, &[7u8; 40]).unwrap();
        }
        w.commit().unwrap();
    }
    store
}

fn gets(store: &Store, ks: &[Vec<u8>], hot: usize, rng: &mut StdRng) -> Duration {
    let r = store.begin_read();
    let mut out = Vec::new();
    let t = Instant::now();
    for _ in 0..CHUNK_GETS {
        let k = &ks[rng.random_range(0..hot)];
        let found = r.get_with(k, |v| {
            out.clear();
            out.extend_from_slice(v)
        });
        assert_eq!(found.unwrap().map(|_| out.len()), Some(40));
    }
    t.elapsed()
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let keys = args.next().unwrap_or(1 << 20);
    let rounds = args.next().unwrap_or(8);
    let mut rng = StdRng::seed_from_u64(1);
    let ks: Vec<Vec<u8>> = (0..keys)
        .map(|_| (0..40).map(|_| rng.random()).collect())
        .collect();
    let hot = if std::env::var_os("NACRE_HOT").is_some() {
        (keys / 100).max(1)
    } else {
        keys
    };
    let (dir_m, dir_p) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mapped = open(dir_m.path(), OsVfs::new(), &ks);
    let pread = open(dir_p.path(), OsVfs::pread_only(), &ks);
    // One chunk each first, so that both caches are warm and the mapping's
    // first page faults are not in the rounds.
    gets(&mapped, &ks, hot, &mut rng);
    gets(&pread, &ks, hot, &mut rng);
    let (mut total_m, mut total_p) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        let (m, p) = if round % 2 == 0 {
            let m = gets(&mapped, &ks, hot, &mut rng);
            (m, gets(&pread, &ks, hot, &mut rng))
        } else {
            let p = gets(&pread, &ks, hot, &mut rng);
            (gets(&mapped, &ks, hot, &mut rng), p)
        };
        total_m += m;
        total_p += p;
        println!(
            "round {round}: mapped {:.0} gets/s, pread {:.0} gets/s, mapped / pread {:.2}",
            CHUNK_GETS as f64 / m.as_secs_f64(),
            CHUNK_GETS as f64 / p.as_secs_f64(),
            p.as_secs_f64() / m.as_secs_f64()
        );
    }
    let n = (rounds * CHUNK_GETS) as f64;
    println!(
        "all rounds: mapped {:.0} gets/s, pread {:.0} gets/s, mapped / pread {:.2}",
        n / total_m.as_secs_f64(),
        n / total_p.as_secs_f64(),
        total_p.as_secs_f64() / total_m.as_secs_f64()
    );
}
