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

/// The order in which kivaloo's `mkpairs` hands out its pairs: the indices
/// `0..keys.len()` in consecutive runs of `run`, each run sorted by key. The
/// keys themselves are random, so every run spans the whole key space.
pub fn sorted_runs(keys: &Records, run: usize) -> Vec<u32> {
    assert!(run > 0, "a run holds at least one key");
    assert!(
        u32::try_from(keys.len()).is_ok(),
        "indices must fit in a u32"
    );
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    for chunk in order.chunks_mut(run) {
        chunk.sort_unstable_by(|&a, &b| keys.get(a as usize).cmp(keys.get(b as usize)));
    }
    debug_assert_eq!(order.len(), keys.len());
    order
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_runs_sort_each_run_and_keep_every_index_once() {
        let keys = Records::random(3, 1000, 8);
        let order = sorted_runs(&keys, 64);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<u32>>());
        for (r, chunk) in order.chunks(64).enumerate() {
            // A run holds the indices of its own block, in key order.
            assert!(chunk
                .iter()
                .all(|&i| (r * 64..(r + 1) * 64).contains(&(i as usize))));
            assert!(chunk
                .windows(2)
                .all(|w| keys.get(w[0] as usize) <= keys.get(w[1] as usize)));
        }
        // Random keys: only the runs are sorted, not the whole order.
        assert!(order
            .windows(2)
            .any(|w| keys.get(w[0] as usize) > keys.get(w[1] as usize)));
    }
}
