//! Deterministic key and value sets, stored flat to keep a million small
//! records cheap to hold and to hand out as slices.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// `n` records of `width` random bytes each, back to back.
pub struct Records {
    bytes: Vec<u8>,
    width: usize,
}

impl Records {
    /// Fill `n` records of `width` bytes from a generator seeded with `seed`.
    pub fn random(seed: u64, n: usize, width: usize) -> Records {
        let mut bytes = vec![0u8; n * width];
        StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        Records { bytes, width }
    }

    pub fn len(&self) -> usize {
        self.bytes.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.width..(i + 1) * self.width]
    }
}

/// Keys and values that go together: `keys.get(i)` maps to `values.get(i)`.
pub struct Pairs {
    pub keys: Records,
    pub values: Records,
}

impl Pairs {
    pub fn random(seed: u64, n: usize, key_len: usize, value_len: usize) -> Pairs {
        Pairs {
            keys: Records::random(seed, n, key_len),
            values: Records::random(seed ^ 0x05ee_d0f7_a1e5, n, value_len),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn key(&self, i: usize) -> &[u8] {
        self.keys.get(i)
    }

    pub fn value(&self, i: usize) -> &[u8] {
        self.values.get(i)
    }
}

/// A seeded generator for the choices a workload makes (which key to read
/// next), so that every engine sees the same sequence.
pub fn chooser(seed: u64, workload: &str) -> StdRng {
    let mut h = seed;
    for b in workload.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    StdRng::seed_from_u64(h)
}
