//! One module per engine; `ALL` lists those compiled in.

use crate::engine::Opener;

pub mod fjall;
#[cfg(feature = "nacre")]
pub mod nacre;
pub mod redb;
#[cfg(nacre_bench_rocksdb)]
pub mod rocksdb;

/// Every engine this binary can run, nacre first (the others are compared
/// with it).
pub const ALL: &[(&str, Opener)] = &[
    #[cfg(feature = "nacre")]
    ("nacre", nacre::open),
    ("redb", redb::open),
    ("fjall", fjall::open),
    #[cfg(nacre_bench_rocksdb)]
    ("rocksdb", rocksdb::open),
];

/// Engines that exist but were left out of this build, and why.
pub const MISSING: &[(&str, &str)] = &[
    #[cfg(not(feature = "nacre"))]
    ("nacre", "built without the `nacre` feature"),
    #[cfg(not(nacre_bench_rocksdb))]
    (
        "rocksdb",
        "librocksdb.so was not found when nacre-bench was built \
         (apt-get install librocksdb-dev, then rebuild)",
    ),
];
