//! Inputs for the `store_api` check (tests/store_api/): hand-written
//! scenarios for the cases that matter most, and random sequences of
//! operations. The fixed corpus in fuzz/seeds/store_api/ is made of both
//! (examples/write_store_fuzz_seeds.rs writes it); tests/fuzz_corpus.rs checks
//! that random inputs survive encoding.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::store_api::ops::{Config, Cut, End, KeyBound, Op, ReadOp, TxnOp};

/// The whole fixed corpus, in order: the scenarios, then random inputs of
/// growing length drawn from a fixed seed.
pub fn seed_corpus() -> Vec<(Config, Vec<Op>)> {
    let mut inputs = scenarios();
    let mut rng = StdRng::seed_from_u64(20);
    for len in [10, 20, 40, 80, 120].into_iter().cycle().take(24) {
        inputs.push(random_input(&mut rng, len));
    }
    inputs
}

fn puts(keys: std::ops::Range<u8>, value: u8) -> Vec<TxnOp> {
    keys.map(|key| TxnOp::Put { key, value }).collect()
}

fn commit(ops: Vec<TxnOp>, durability: nacre_store::Durability) -> Op {
    let end = End::Commit(Some(durability));
    Op::Write { ops, end }
}

/// Hand-written inputs for the cases that matter most.
fn scenarios() -> Vec<(Config, Vec<Op>)> {
    use nacre_store::Durability::{Immediate, Lazy};
    let config = |shape| Config { seed: 7, shape };
    let full = || Op::Read(ReadOp::Full);
    vec![
        // An immediate commit survives losing everything unsynced; a lazy
        // one after it may go.
        (
            config(0),
            vec![
                commit(puts(0..30, 9), Immediate),
                commit(puts(30..40, 250), Lazy),
                Op::PowerCut { cut: Cut::LoseAll },
                full(),
            ],
        ),
        // A snapshot outlives overwrites, cleaning and a reopen.
        (
            config(2),
            vec![
                commit(puts(0..40, 240), Lazy),
                commit(puts(40..60, 240), Lazy),
                Op::CreateSnapshot { name: 0 },
                Op::Hold { snapshot: Some(0) },
                commit(puts(20..60, 7), Lazy),
                Op::Clean,
                Op::ReadHeld {
                    slot: 0,
                    read: ReadOp::Full,
                },
                Op::Reopen,
                Op::ReadSnapshot {
                    name: 0,
                    read: ReadOp::Full,
                },
            ],
        ),
        // A failed fsync under an immediate commit, then a restart.
        (
            config(1),
            vec![
                commit(puts(0..20, 3), Immediate),
                Op::FailNextSync { then: Cut::Restart },
                commit(puts(20..40, 3), Immediate),
                full(),
            ],
        ),
        // The disk dies a few operations into a large transaction.
        (
            config(8),
            vec![
                Op::ArmCrash {
                    after: 6,
                    cut: Cut::Random,
                },
                commit(puts(0..40, 230), Lazy),
                full(),
            ],
        ),
        // Range deletes inside a transaction, read back through it.
        (
            config(4),
            vec![
                commit(puts(100..140, 20), Lazy),
                Op::Write {
                    ops: vec![
                        TxnOp::DeleteRange {
                            lo: KeyBound::Included(110),
                            hi: KeyBound::Excluded(120),
                        },
                        TxnOp::DeletePrefix { prefix: 13 },
                        TxnOp::Range {
                            lo: KeyBound::Unbounded,
                            hi: KeyBound::Unbounded,
                        },
                    ],
                    end: End::Commit(None),
                },
                Op::Sync,
                Op::PowerCut { cut: Cut::Random },
                full(),
            ],
        ),
    ]
}

fn random_bound(rng: &mut StdRng) -> KeyBound {
    match rng.random_range(0..3) {
        0 => KeyBound::Unbounded,
        1 => KeyBound::Included(rng.random()),
        _ => KeyBound::Excluded(rng.random()),
    }
}

fn random_read(rng: &mut StdRng) -> ReadOp {
    let (lo, hi) = (random_bound(rng), random_bound(rng));
    let (limit, rev) = (rng.random_range(0..40), rng.random());
    match rng.random_range(0..5) {
        0 => ReadOp::Get { key: rng.random() },
        1 => ReadOp::Range { lo, hi, limit, rev },
        2 => ReadOp::Scan { lo, hi, limit, rev },
        3 => ReadOp::Prefix {
            prefix: rng.random(),
        },
        _ => ReadOp::Full,
    }
}

fn random_txn_op(rng: &mut StdRng) -> TxnOp {
    match rng.random_range(0..20) {
        0..=11 => TxnOp::Put {
            key: rng.random(),
            value: rng.random(),
        },
        12..=14 => TxnOp::Delete { key: rng.random() },
        15 => TxnOp::DeleteRange {
            lo: random_bound(rng),
            hi: random_bound(rng),
        },
        16 => TxnOp::DeletePrefix {
            prefix: rng.random(),
        },
        17 | 18 => TxnOp::Get { key: rng.random() },
        _ => TxnOp::Range {
            lo: random_bound(rng),
            hi: random_bound(rng),
        },
    }
}

fn random_cut(rng: &mut StdRng) -> Cut {
    [Cut::Restart, Cut::Random, Cut::LoseAll][rng.random_range(0..3)]
}

fn random_op(rng: &mut StdRng) -> Op {
    match rng.random_range(0..100) {
        0..=39 => {
            let ops = (0..rng.random_range(0..=30))
                .map(|_| random_txn_op(rng))
                .collect();
            let end = [
                End::Commit(None),
                End::Commit(Some(nacre_store::Durability::Immediate)),
                End::Commit(Some(nacre_store::Durability::Lazy)),
                End::Abort,
            ][rng.random_range(0..4)];
            Op::Write { ops, end }
        }
        40..=49 => Op::Read(random_read(rng)),
        50..=53 => Op::Hold {
            snapshot: rng.random_bool(0.5).then(|| rng.random_range(0..8)),
        },
        54..=58 => Op::ReadHeld {
            slot: rng.random(),
            read: random_read(rng),
        },
        59..=62 => Op::Sync,
        63..=68 => Op::CreateSnapshot { name: rng.random() },
        69..=71 => Op::DropSnapshot { name: rng.random() },
        72..=76 => Op::ReadSnapshot {
            name: rng.random(),
            read: random_read(rng),
        },
        77..=80 => Op::Clean,
        81..=83 => Op::Reopen,
        84..=89 => {
            let cut = if rng.random() {
                Cut::Random
            } else {
                Cut::LoseAll
            };
            Op::ArmCrash {
                after: rng.random(),
                cut,
            }
        }
        90..=93 => Op::FailNextSync {
            then: random_cut(rng),
        },
        _ => Op::PowerCut {
            cut: random_cut(rng),
        },
    }
}

pub fn random_input(rng: &mut StdRng, len: usize) -> (Config, Vec<Op>) {
    let config = Config {
        seed: rng.random(),
        shape: rng.random(),
    };
    (config, (0..len).map(|_| random_op(rng)).collect())
}
