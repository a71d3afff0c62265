//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;

use nacre_store::{CleanerOptions, Durability, Options, ReadTxn};
use rand::rngs::StdRng;
use rand::Rng;

pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Small nodes and segments, so that a few thousand keys already exercise
/// splits, merges, segment rolls and cleaning.
pub fn small_options() -> Options {
    Options {
        cache_size_bytes: 64 << 10,
        segment_size_bytes: 256 << 10,
        durability: Durability::Lazy,
        node_size_bytes: 512,
        value_inline_max_bytes: 128,
        key_size_max_bytes: 1024,
        value_size_max_bytes: 64 << 10,
        txn_dirty_max_bytes: 32 << 10,
        cleaner: CleanerOptions {
            background: false,
            ..CleanerOptions::default()
        },
        ..Options::default()
    }
}

pub fn key(rng: &mut StdRng, space: u32) -> Vec<u8> {
    let n = rng.random_range(0..space);
    let mut k = format!("k{n:05}").into_bytes();
    if rng.random_bool(0.1) {
        // Some longer keys, to vary node fill.
        k.extend(std::iter::repeat_n(b'x', rng.random_range(0..200)));
    }
    k
}

pub fn value(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.random_bool(0.05) {
        rng.random_range(129..6000)
    } else {
        rng.random_range(0..100)
    };
    (0..len).map(|_| rng.random::<u8>()).collect()
}

pub fn bound(rng: &mut StdRng, space: u32) -> Bound<Vec<u8>> {
    match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(rng, space)),
        _ => Bound::Excluded(key(rng, space)),
    }
}

pub fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

/// Compare every read the store offers with the model.
pub fn check_reads(txn: &ReadTxn, model: &Model, rng: &mut StdRng, space: u32) {
    assert_eq!(txn.count(), model.len() as u64, "count");
    for _ in 0..20 {
        let k = key(rng, space);
        assert_eq!(txn.get(&k).unwrap(), model.get(&k).cloned(), "get {k:?}");
        assert_eq!(txn.exists(&k).unwrap(), model.contains_key(&k));
    }
    for _ in 0..5 {
        let (lo, hi) = (bound(rng, space), bound(rng, space));
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (&lo, &hi)
        {
            if a > b
                || (a == b
                    && (matches!(lo, Bound::Excluded(_)) || matches!(hi, Bound::Excluded(_))))
            {
                // BTreeMap::range panics on such ranges; the store must
                // return nothing.
                assert_eq!(txn.range(as_ref(&lo), as_ref(&hi)).count(), 0);
                assert_eq!(txn.range_rev(as_ref(&lo), as_ref(&hi)).count(), 0);
                continue;
            }
        }
        let limit = rng.random_range(0..50);
        let want: Vec<_> = model
            .range((lo.clone(), hi.clone()))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let got: Vec<_> = txn
            .range(as_ref(&lo), as_ref(&hi))
            .take(limit)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "range {lo:?}..{hi:?} limit {limit}");
        let want: Vec<_> = model
            .range((lo.clone(), hi.clone()))
            .rev()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let got: Vec<_> = txn
            .range_rev(as_ref(&lo), as_ref(&hi))
            .take(limit)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "range_rev {lo:?}..{hi:?} limit {limit}");
        // The visitor API, stopped after `limit` entries (at least one is
        // always offered).
        for reverse in [false, true] {
            let mut want: Vec<_> = model
                .range((lo.clone(), hi.clone()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if reverse {
                want.reverse();
            }
            want.truncate(limit.max(1));
            let mut got = Vec::new();
            let seen = txn
                .scan(as_ref(&lo), as_ref(&hi), reverse, |k, v| {
                    got.push((k.to_vec(), v.to_vec()));
                    got.len() < limit
                })
                .unwrap();
            assert_eq!(
                got, want,
                "scan {lo:?}..{hi:?} reverse {reverse} limit {limit}"
            );
            assert_eq!(seen as usize, got.len());
        }
    }
    let p = format!("k{:03}", rng.random_range(0..space / 100 + 1)).into_bytes();
    let want: Vec<_> = model
        .iter()
        .filter(|(k, _)| k.starts_with(&p))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let got: Vec<_> = txn.prefix(&p).map(Result::unwrap).collect();
    assert_eq!(got, want, "prefix {p:?}");
}

pub fn check_all(txn: &ReadTxn, model: &Model) {
    let got: Vec<_> = txn.iter().map(Result::unwrap).collect();
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(got.len(), want.len(), "full scan length");
    assert!(got == want, "full scan differs from the model");
}
