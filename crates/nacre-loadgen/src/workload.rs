//! Workload definitions: which operations, on which keys, with which
//! values. Everything is derived from a seed, so two systems (or two runs)
//! see the same sequence of keys.

use nacre_client::{Bytes, Consistency};

use crate::WorkloadError;

/// The operation mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every operation writes one key.
    Put,
    /// Every operation reads one (preloaded) key.
    Get,
    /// Reads and writes, `read_percent` of them reads.
    Mixed,
    /// Every operation writes `sequence_len` keys in one transaction.
    Sequence,
    /// Every operation calls a Lua function that increments one key (the
    /// `arith64` example; Nacre only).
    Call,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Get => "get",
            Kind::Mixed => "mixed",
            Kind::Sequence => "sequence",
            Kind::Call => "call",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, WorkloadError> {
        match s {
            "put" => Ok(Kind::Put),
            "get" => Ok(Kind::Get),
            "mixed" => Ok(Kind::Mixed),
            "sequence" => Ok(Kind::Sequence),
            "call" => Ok(Kind::Call),
            _ => Err(WorkloadError::UnknownKind(s.to_string())),
        }
    }

    /// Whether the keys must exist before the run.
    pub fn reads(self) -> bool {
        matches!(self, Kind::Get | Kind::Mixed)
    }
}

/// `consistent`, `any` or `at-least:N`, as the CLI spells them.
pub fn consistency_name(c: Consistency) -> String {
    match c {
        Consistency::Consistent => "consistent".into(),
        Consistency::Any => "any".into(),
        Consistency::AtLeast(n) => format!("at-least:{n}"),
    }
}

/// A workload: the same definition runs against every target.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: Kind,
    /// Key length in bytes (at least one more than the digits of `keys`).
    pub key_size: usize,
    pub value_size: usize,
    /// Keys are drawn uniformly from `0..keys`.
    pub keys: u64,
    /// The consistency of reads.
    pub consistency: Consistency,
    /// Mixed: the share of reads, 0..=100.
    pub read_percent: u8,
    /// Sequence: keys per transaction.
    pub sequence_len: usize,
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            kind: Kind::Put,
            key_size: 16,
            value_size: 256,
            keys: 10_000,
            consistency: Consistency::Consistent,
            read_percent: 50,
            sequence_len: 10,
            seed: 0x6e61_6372_6562_656e,
        }
    }
}

impl Workload {
    /// Checks the sizes before anything is sent.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.keys == 0 {
            return Err(WorkloadError::NoKeys);
        }
        let digits = KeyGen::digits(self.keys);
        if self.key_size < digits + 1 {
            return Err(WorkloadError::KeySizeTooSmall {
                key_size: self.key_size,
                keys: self.keys,
                min: digits + 1,
            });
        }
        if self.read_percent > 100 {
            return Err(WorkloadError::ReadPercent);
        }
        if self.kind == Kind::Sequence && self.sequence_len == 0 {
            return Err(WorkloadError::EmptySequence);
        }
        Ok(())
    }

    /// A short label: `put`, `get(consistent)`, `mixed(50% any)`, `sequence(10)`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Put => "put".into(),
            Kind::Get => format!("get({})", consistency_name(self.consistency)),
            Kind::Mixed => format!(
                "mixed({}% {})",
                self.read_percent,
                consistency_name(self.consistency)
            ),
            Kind::Sequence => format!("sequence({})", self.sequence_len),
            Kind::Call => "call(arith64.incr)".into(),
        }
    }
}

/// Key `i` of a workload: `k` and `i` in decimal, zero-padded to the key
/// size, so keys sort in index order and all have the same length.
#[derive(Debug, Clone)]
pub struct KeyGen {
    key_size: usize,
}

impl KeyGen {
    pub fn new(key_size: usize) -> KeyGen {
        KeyGen { key_size }
    }

    /// Decimal digits of the largest index below `keys`.
    pub fn digits(keys: u64) -> usize {
        let mut n = keys.saturating_sub(1);
        let mut d = 1;
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    }

    pub fn key(&self, i: u64) -> Bytes {
        let width = self.key_size.saturating_sub(1);
        Bytes::from(format!("k{i:0width$}"))
    }
}

/// An operation to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put(Bytes, Bytes),
    Get(Bytes),
    Sequence(Vec<(Bytes, Bytes)>),
    /// Increment this key through a script.
    Call(Bytes),
}

/// splitmix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias is negligible).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// The operations of one client: a deterministic stream from the seed and
/// the client's number.
#[derive(Debug, Clone)]
pub struct OpGen {
    w: Workload,
    keys: KeyGen,
    rng: Rng,
    /// One buffer of value bytes; values are slices of it (no copy).
    values: Bytes,
}

impl OpGen {
    pub fn new(w: &Workload, client: u64) -> OpGen {
        let mut rng = Rng(w.seed ^ client.wrapping_mul(0xa076_1d64_78bd_642f));
        // Random bytes, so that no one compresses them away.
        let len = w.value_size + 64;
        let mut buf = Vec::with_capacity(len + 8);
        while buf.len() < len {
            buf.extend_from_slice(&rng.next().to_le_bytes());
        }
        buf.truncate(len);
        OpGen {
            keys: KeyGen::new(w.key_size),
            w: w.clone(),
            rng,
            values: Bytes::from(buf),
        }
    }

    fn value(&mut self) -> Bytes {
        let at = self.rng.below(64) as usize;
        self.values.slice(at..at + self.w.value_size)
    }

    fn key(&mut self) -> Bytes {
        let i = self.rng.below(self.w.keys);
        self.keys.key(i)
    }

    /// The pair for key `i` (preloading).
    pub fn pair(&mut self, i: u64) -> (Bytes, Bytes) {
        (self.keys.key(i), self.value())
    }

    pub fn next_op(&mut self) -> Op {
        match self.w.kind {
            Kind::Put => Op::Put(self.key(), self.value()),
            Kind::Get => Op::Get(self.key()),
            Kind::Mixed => {
                if self.rng.below(100) < u64::from(self.w.read_percent) {
                    Op::Get(self.key())
                } else {
                    Op::Put(self.key(), self.value())
                }
            }
            Kind::Sequence => {
                let n = self.w.sequence_len;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.key();
                    // A transaction may not name a key twice (etcd refuses).
                    if pairs.iter().any(|(p, _)| *p == k) {
                        continue;
                    }
                    let v = self.value();
                    pairs.push((k, v));
                }
                Op::Sequence(pairs)
            }
            Kind::Call => Op::Call(self.key()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_size_asked_and_sort_by_index() {
        let g = KeyGen::new(16);
        assert_eq!(&g.key(0)[..], b"k000000000000000");
        assert_eq!(&g.key(12345)[..], b"k000000000012345");
        assert!(g.key(9) < g.key(10));
        assert_eq!(KeyGen::digits(1), 1);
        assert_eq!(KeyGen::digits(10), 1);
        assert_eq!(KeyGen::digits(11), 2);
        assert_eq!(KeyGen::digits(1_000_000), 6);
    }

    #[test]
    fn key_size_must_hold_the_largest_index() {
        let w = Workload {
            keys: 1000,
            key_size: 3,
            ..Workload::default()
        };
        assert!(w.validate().is_err());
        let w = Workload { key_size: 4, ..w };
        assert!(w.validate().is_ok());
        assert!(Workload {
            keys: 0,
            ..Workload::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn streams_repeat_per_client_and_differ_between_clients() {
        let w = Workload::default();
        let a: Vec<Op> = {
            let mut g = OpGen::new(&w, 3);
            (0..50).map(|_| g.next_op()).collect()
        };
        let b: Vec<Op> = {
            let mut g = OpGen::new(&w, 3);
            (0..50).map(|_| g.next_op()).collect()
        };
        let c: Vec<Op> = {
            let mut g = OpGen::new(&w, 4);
            (0..50).map(|_| g.next_op()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        for op in &a {
            let Op::Put(k, v) = op else { panic!("{op:?}") };
            assert_eq!(k.len(), 16);
            assert_eq!(v.len(), 256);
        }
    }

    #[test]
    fn keys_stay_in_range_and_cover_it() {
        let w = Workload {
            kind: Kind::Get,
            keys: 20,
            key_size: 3,
            ..Workload::default()
        };
        let mut g = OpGen::new(&w, 0);
        let kg = KeyGen::new(3);
        let all: std::collections::BTreeSet<Bytes> = (0..20).map(|i| kg.key(i)).collect();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let Op::Get(k) = g.next_op() else { panic!() };
            assert!(all.contains(&k), "{k:?}");
            seen.insert(k);
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn mixed_follows_the_read_share() {
        let w = Workload {
            kind: Kind::Mixed,
            read_percent: 80,
            ..Workload::default()
        };
        let mut g = OpGen::new(&w, 1);
        let reads = (0..10_000)
            .filter(|_| matches!(g.next_op(), Op::Get(_)))
            .count();
        assert!((7_700..8_300).contains(&reads), "{reads}");
    }

    #[test]
    fn sequences_name_each_key_once() {
        let w = Workload {
            kind: Kind::Sequence,
            keys: 5,
            key_size: 2,
            sequence_len: 5,
            ..Workload::default()
        };
        let mut g = OpGen::new(&w, 0);
        for _ in 0..100 {
            let Op::Sequence(pairs) = g.next_op() else {
                panic!()
            };
            assert!(!pairs.is_empty() && pairs.len() <= 5);
            let mut ks: Vec<_> = pairs.iter().map(|p| p.0.clone()).collect();
            ks.sort();
            ks.dedup();
            assert_eq!(ks.len(), pairs.len());
        }
    }

    #[test]
    fn labels() {
        let mut w = Workload::default();
        assert_eq!(w.label(), "put");
        w.kind = Kind::Get;
        w.consistency = Consistency::AtLeast(7);
        assert_eq!(w.label(), "get(at-least:7)");
        w.kind = Kind::Mixed;
        w.consistency = Consistency::Any;
        assert_eq!(w.label(), "mixed(50% any)");
        assert_eq!(Kind::parse("sequence"), Ok(Kind::Sequence));
        assert!(Kind::parse("scan").is_err());
    }
}
