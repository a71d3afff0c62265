//! A whole-API check of nacre-store over the simulated disk, driven by
//! bytes: the core of the `store_api` fuzz target (fuzz/fuzz_targets/
//! store_api.rs includes this directory) and of the fixed-corpus test
//! (tests/fuzz_corpus.rs).
//!
//! An input decodes to a set-up and a sequence of operations (`ops.rs`):
//! write transactions (puts, deletes, range and prefix deletes, reads and
//! ranges inside the transaction; committed immediate, lazy or with the
//! default durability, or aborted), reads of every kind on the latest state,
//! on held read transactions and on named snapshots, snapshot creation and
//! removal, syncs, cleaning, clean reopens, power cuts, a crash countdown
//! and failing fsyncs. Every answer is compared with a model (`model.rs`);
//! after every fault the store is reopened and must hold one of the states
//! the history allows: nothing older than the last durable commit, nothing
//! that was never committed, every snapshot as it was taken. A violated
//! invariant panics, which is what the fuzzer reports.

#![allow(dead_code)] // The fuzz target uses only part of what the test uses.

mod harness;
pub mod model;
pub mod ops;
mod reads;

use std::sync::Arc;

use nacre_store::{CleanerOptions, Durability, Options};
use nacre_vfs::sim::SimVfs;

/// Where the store lives on the simulated disk.
pub const DIR: &str = "/store";

/// Snapshot names come from a small set, so that creating an existing one
/// and dropping a missing one happen often; the store takes fewer snapshots
/// than there are names, so that the limit is reached too.
pub const SNAPSHOT_NAMES: u8 = 6;
pub const SNAPSHOTS_MAX: usize = 4;

/// Key `id`: 128 short keys `k000`..`k127`, and for ids with the top bit a
/// long twin of each (sorting right after it), so that nodes fill unevenly.
pub fn key(id: u8) -> Vec<u8> {
    let mut k = format!("k{:03}", id & 0x7f).into_bytes();
    if id & 0x80 != 0 {
        k.extend(std::iter::repeat_n(b'~', 40 + (id & 0x3f) as usize));
    }
    k
}

/// Prefix `id`: `k00`..`k13` (ten short keys each, with their twins),
/// `k` (every key) or the empty prefix.
pub fn prefix(id: u8) -> Vec<u8> {
    match id % 16 {
        14 => b"k".to_vec(),
        15 => Vec::new(),
        n => format!("k{n:02}").into_bytes(),
    }
}

/// Value length for code `code`: 0..=111 bytes (inline) for most codes,
/// 200..=5780 (separate value records) for the top 32.
pub fn value_len(code: u8) -> usize {
    if code < 224 {
        code as usize / 2
    } else {
        200 + (code as usize - 224) * 180
    }
}

/// The value of the `stamp`-th put: every put writes different bytes, so
/// that a stale value never passes for the current one.
pub fn value(code: u8, stamp: u32) -> Vec<u8> {
    let s = stamp.to_le_bytes();
    (0..value_len(code))
        .map(|i| s[i % 4] ^ (i / 4) as u8)
        .collect()
}

pub fn snapshot_name(id: u8) -> String {
    format!("s{}", id % SNAPSHOT_NAMES)
}

/// Small nodes and the smallest segments, so that short inputs already
/// split nodes, roll segments and give the cleaner work; the background
/// cleaner is off, as its timing would make runs irreproducible.
pub fn options(sim: &SimVfs, shape: u8) -> Options {
    Options {
        vfs: Arc::new(sim.clone()),
        cache_size_bytes: 64 << 10,
        segment_size_bytes: 64 << 10,
        durability: if shape & 1 == 0 {
            Durability::Lazy
        } else {
            Durability::Immediate
        },
        node_size_bytes: if shape & 2 == 0 { 512 } else { 1024 },
        value_inline_max_bytes: if shape & 4 == 0 { 128 } else { 32 },
        key_size_max_bytes: 1024,
        value_size_max_bytes: 16 << 10,
        txn_dirty_max_bytes: if shape & 8 == 0 { 64 << 10 } else { 2 << 10 },
        snapshots_max: SNAPSHOTS_MAX,
        cleaner: CleanerOptions {
            background: false,
            ..CleanerOptions::default()
        },
        ..Options::default()
    }
}

/// Run one input; panics if the store breaks an invariant. Set
/// `STORE_API_TRACE` to print each operation as it runs.
pub fn run(data: &[u8]) {
    run_on(data, |_| {});
}

/// [`run`], with `prepare` applied to the simulated disk first (to plant a
/// fault the check must notice).
pub fn run_on(data: &[u8], prepare: impl FnOnce(&SimVfs)) {
    let (config, steps) = ops::decode(data);
    let trace = std::env::var_os("STORE_API_TRACE").is_some();
    if trace {
        eprintln!("{config:?}");
    }
    let sim = SimVfs::new(config.seed.into());
    prepare(&sim);
    let mut h = harness::Harness::new(sim, config.shape);
    for (i, op) in steps.iter().enumerate() {
        if trace {
            eprintln!("{i}: {op:?}");
        }
        h.step(op);
    }
    h.finish();
}
