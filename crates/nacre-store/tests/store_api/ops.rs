//! The operations an input stands for, and their byte encoding.
//!
//! Decoding is total: any bytes make a valid sequence of operations (every
//! choice is a byte taken modulo the number of choices; past the end of the
//! input every byte reads as 0), so the fuzzer never wastes an input on a
//! parse error. `encode` writes the canonical bytes of an operation; it is
//! what the fixed corpus is generated with, and `decode(encode(x)) == x`.

use std::ops::Bound;

use nacre_store::Durability;

/// Top-level operations per input: bounds the time of one run.
pub const OPS_MAX: usize = 200;
/// Operations inside one write transaction.
pub const TXN_OPS_MAX: u8 = 40;

/// The bytes of one input, read front to back.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// The next byte; 0 past the end, so that an operation cut short by the
    /// end of the input still decodes whole.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// How the store is set up: the seed of the simulated disk's random
/// choices (torn writes, which unsynced writes survive a crash) and a few
/// option bits, so that inputs reach small and large nodes, inline and
/// separate values, early spills and both default durabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub seed: u16,
    pub shape: u8,
}

/// A key bound over the key space of [`crate::store_api::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBound {
    Unbounded,
    Included(u8),
    Excluded(u8),
}

impl KeyBound {
    pub fn to_bound(self) -> Bound<Vec<u8>> {
        match self {
            KeyBound::Unbounded => Bound::Unbounded,
            KeyBound::Included(k) => Bound::Included(super::key(k)),
            KeyBound::Excluded(k) => Bound::Excluded(super::key(k)),
        }
    }
}

/// What a write transaction does before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: u8,
        value: u8,
    },
    Delete {
        key: u8,
    },
    DeleteRange {
        lo: KeyBound,
        hi: KeyBound,
    },
    DeletePrefix {
        prefix: u8,
    },
    Get {
        key: u8,
    },
    /// `WriteTxn::range`, which spills the dirty tree first.
    Range {
        lo: KeyBound,
        hi: KeyBound,
    },
}

/// How a write transaction ends. `Commit(None)` uses the store's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Commit(Option<Durability>),
    Abort,
}

/// A read, checked against the model of the state it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOp {
    /// `get`, `exists` and `get_with` of one key.
    Get {
        key: u8,
    },
    /// `range` or `range_rev`, stopped after `limit` entries (0: all).
    Range {
        lo: KeyBound,
        hi: KeyBound,
        limit: u8,
        rev: bool,
    },
    /// `scan`, whose visitor stops after `limit` entries.
    Scan {
        lo: KeyBound,
        hi: KeyBound,
        limit: u8,
        rev: bool,
    },
    Prefix {
        prefix: u8,
    },
    /// `iter` over everything, plus `count`.
    Full,
}

/// How power comes back after a fault: a restart of the process only, or
/// a power cut that keeps, drops or tears each unsynced write at random, or
/// one that loses every unsynced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Restart,
    Random,
    LoseAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write {
        ops: Vec<TxnOp>,
        end: End,
    },
    /// A read of the latest state.
    Read(ReadOp),
    /// Open a read transaction (on the latest state, or on a snapshot) and
    /// keep it while later operations write, clean and snapshot.
    Hold {
        snapshot: Option<u8>,
    },
    /// A read through a held transaction.
    ReadHeld {
        slot: u8,
        read: ReadOp,
    },
    Sync,
    CreateSnapshot {
        name: u8,
    },
    DropSnapshot {
        name: u8,
    },
    ReadSnapshot {
        name: u8,
        read: ReadOp,
    },
    Clean,
    /// `close` and `open` again.
    Reopen,
    /// The crash countdown: the disk dies at its `after`-th mutating
    /// operation from now, whichever store call makes it; power then comes
    /// back as `cut` says (never `Restart`).
    ArmCrash {
        after: u8,
        cut: Cut,
    },
    /// The next fsync fails; once the failure surfaces, power comes back as
    /// `then` says.
    FailNextSync {
        then: Cut,
    },
    /// Power loss right now.
    PowerCut {
        cut: Cut,
    },
}

fn decode_bound(input: &mut Input) -> KeyBound {
    let kind = input.byte() % 3;
    let key = input.byte();
    match kind {
        0 => KeyBound::Unbounded,
        1 => KeyBound::Included(key),
        _ => KeyBound::Excluded(key),
    }
}

fn encode_bound(b: KeyBound, out: &mut Vec<u8>) {
    match b {
        KeyBound::Unbounded => out.extend([0, 0]),
        KeyBound::Included(k) => out.extend([1, k]),
        KeyBound::Excluded(k) => out.extend([2, k]),
    }
}

fn decode_cut(b: u8) -> Cut {
    match b % 3 {
        0 => Cut::Restart,
        1 => Cut::Random,
        _ => Cut::LoseAll,
    }
}

fn encode_cut(c: Cut) -> u8 {
    match c {
        Cut::Restart => 0,
        Cut::Random => 1,
        Cut::LoseAll => 2,
    }
}

fn decode_txn_op(input: &mut Input) -> TxnOp {
    match input.byte() % 10 {
        0..=3 => TxnOp::Put {
            key: input.byte(),
            value: input.byte(),
        },
        4 | 5 => TxnOp::Delete { key: input.byte() },
        6 => TxnOp::DeleteRange {
            lo: decode_bound(input),
            hi: decode_bound(input),
        },
        7 => TxnOp::DeletePrefix {
            prefix: input.byte(),
        },
        8 => TxnOp::Get { key: input.byte() },
        _ => TxnOp::Range {
            lo: decode_bound(input),
            hi: decode_bound(input),
        },
    }
}

fn encode_txn_op(op: &TxnOp, out: &mut Vec<u8>) {
    match *op {
        TxnOp::Put { key, value } => out.extend([0, key, value]),
        TxnOp::Delete { key } => out.extend([4, key]),
        TxnOp::DeleteRange { lo, hi } => {
            out.push(6);
            encode_bound(lo, out);
            encode_bound(hi, out);
        }
        TxnOp::DeletePrefix { prefix } => out.extend([7, prefix]),
        TxnOp::Get { key } => out.extend([8, key]),
        TxnOp::Range { lo, hi } => {
            out.push(9);
            encode_bound(lo, out);
            encode_bound(hi, out);
        }
    }
}

fn decode_end(b: u8) -> End {
    match b % 4 {
        0 => End::Commit(None),
        1 => End::Commit(Some(Durability::Immediate)),
        2 => End::Commit(Some(Durability::Lazy)),
        _ => End::Abort,
    }
}

fn encode_end(e: End) -> u8 {
    match e {
        End::Commit(None) => 0,
        End::Commit(Some(Durability::Immediate)) => 1,
        End::Commit(Some(Durability::Lazy)) => 2,
        End::Abort => 3,
    }
}

fn decode_read(input: &mut Input) -> ReadOp {
    let kind = input.byte() % 5;
    match kind {
        0 => ReadOp::Get { key: input.byte() },
        1 | 2 => {
            let (lo, hi) = (decode_bound(input), decode_bound(input));
            let flags = input.byte();
            let (limit, rev) = (flags >> 1, flags & 1 == 1);
            if kind == 1 {
                ReadOp::Range { lo, hi, limit, rev }
            } else {
                ReadOp::Scan { lo, hi, limit, rev }
            }
        }
        3 => ReadOp::Prefix {
            prefix: input.byte(),
        },
        _ => ReadOp::Full,
    }
}

fn encode_read(r: &ReadOp, out: &mut Vec<u8>) {
    match *r {
        ReadOp::Get { key } => out.extend([0, key]),
        ReadOp::Range { lo, hi, limit, rev } | ReadOp::Scan { lo, hi, limit, rev } => {
            out.push(if matches!(r, ReadOp::Range { .. }) {
                1
            } else {
                2
            });
            encode_bound(lo, out);
            encode_bound(hi, out);
            // The limit has 7 bits.
            out.push((limit << 1) | rev as u8);
        }
        ReadOp::Prefix { prefix } => out.extend([3, prefix]),
        ReadOp::Full => out.push(4),
    }
}

fn decode_write(input: &mut Input) -> Op {
    let n = input.byte() % (TXN_OPS_MAX + 1);
    let ops = (0..n).map(|_| decode_txn_op(input)).collect();
    let end = decode_end(input.byte());
    Op::Write { ops, end }
}

/// Opcodes are a byte modulo 32; writes own the most values, so that a
/// random input is mostly writes.
fn decode_op(input: &mut Input) -> Op {
    match input.byte() % 32 {
        0..=11 => decode_write(input),
        12..=15 => Op::Read(decode_read(input)),
        16 => {
            let b = input.byte();
            let snapshot = (b & 0x80 != 0).then_some(b & 0x7f);
            Op::Hold { snapshot }
        }
        17 | 18 => Op::ReadHeld {
            slot: input.byte(),
            read: decode_read(input),
        },
        19 => Op::Sync,
        20 | 21 => Op::CreateSnapshot { name: input.byte() },
        22 => Op::DropSnapshot { name: input.byte() },
        23 | 24 => Op::ReadSnapshot {
            name: input.byte(),
            read: decode_read(input),
        },
        25 => Op::Clean,
        26 => Op::Reopen,
        27 | 28 => {
            let after = input.byte();
            // A countdown always ends in a power cut.
            let cut = if input.byte() & 1 == 0 {
                Cut::Random
            } else {
                Cut::LoseAll
            };
            Op::ArmCrash { after, cut }
        }
        29 => Op::FailNextSync {
            then: decode_cut(input.byte()),
        },
        _ => Op::PowerCut {
            cut: decode_cut(input.byte()),
        },
    }
}

fn encode_op(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Write { ops, end } => {
            assert!(ops.len() <= TXN_OPS_MAX as usize, "too many operations");
            out.extend([0, ops.len() as u8]);
            ops.iter().for_each(|o| encode_txn_op(o, out));
            out.push(encode_end(*end));
        }
        Op::Read(r) => {
            out.push(12);
            encode_read(r, out);
        }
        Op::Hold { snapshot } => out.extend([16, snapshot.map_or(0, |s| 0x80 | s)]),
        Op::ReadHeld { slot, read } => {
            out.extend([17, *slot]);
            encode_read(read, out);
        }
        Op::Sync => out.push(19),
        Op::CreateSnapshot { name } => out.extend([20, *name]),
        Op::DropSnapshot { name } => out.extend([22, *name]),
        Op::ReadSnapshot { name, read } => {
            out.extend([23, *name]);
            encode_read(read, out);
        }
        Op::Clean => out.push(25),
        Op::Reopen => out.push(26),
        Op::ArmCrash { after, cut } => out.extend([27, *after, (*cut == Cut::LoseAll) as u8]),
        Op::FailNextSync { then } => out.extend([29, encode_cut(*then)]),
        Op::PowerCut { cut } => out.extend([30, encode_cut(*cut)]),
    }
}

/// The set-up and the operations `data` stands for.
pub fn decode(data: &[u8]) -> (Config, Vec<Op>) {
    let mut input = Input::new(data);
    let seed = u16::from_le_bytes([input.byte(), input.byte()]);
    let config = Config {
        seed,
        shape: input.byte(),
    };
    let mut ops = Vec::new();
    while !input.exhausted() && ops.len() < OPS_MAX {
        ops.push(decode_op(&mut input));
    }
    (config, ops)
}

/// The canonical bytes of an input.
pub fn encode(config: Config, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(config.seed.to_le_bytes());
    out.push(config.shape);
    ops.iter().for_each(|op| encode_op(op, &mut out));
    out
}
