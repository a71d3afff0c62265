//! Randomized model test: every operation of the store against a `BTreeMap`,
//! with aborts, snapshots, cleaning and reopening, from fixed seeds.

mod common;

use std::collections::HashMap;
use std::ops::Bound;

use common::*;
use nacre_store::{Error, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn run(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let space = if seed.is_multiple_of(2) { 300 } else { 3000 };
    let mut store = Store::open(dir.path(), small_options()).unwrap();
    let mut model = Model::new();
    let mut snaps: HashMap<String, Model> = HashMap::new();
    for step in 0..steps {
        match rng.random_range(0..100) {
            0..=59 => {
                let mut txn = store.begin_write().unwrap();
                let mut local = model.clone();
                for _ in 0..rng.random_range(1..60) {
                    match rng.random_range(0..100) {
                        0..=64 => {
                            let (k, v) = (key(&mut rng, space), value(&mut rng));
                            txn.put(&k, &v).unwrap();
                            local.insert(k, v);
                        }
                        65..=89 => {
                            let k = key(&mut rng, space);
                            assert_eq!(txn.delete(&k).unwrap(), local.remove(&k).is_some());
                        }
                        90..=94 => {
                            let lo = key(&mut rng, space);
                            let hi = key(&mut rng, space);
                            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                            let gone: Vec<_> = local
                                .range(lo.clone()..=hi.clone())
                                .map(|(k, _)| k.clone())
                                .collect();
                            for k in &gone {
                                local.remove(k);
                            }
                            let n = txn
                                .delete_range(Bound::Included(&lo), Bound::Included(&hi))
                                .unwrap();
                            assert_eq!(n, gone.len() as u64, "delete_range count");
                        }
                        95..=97 => {
                            let p = format!("k{:03}", rng.random_range(0..space / 100 + 1))
                                .into_bytes();
                            let gone: Vec<_> = local
                                .keys()
                                .filter(|k| k.starts_with(&p))
                                .cloned()
                                .collect();
                            for k in &gone {
                                local.remove(k);
                            }
                            assert_eq!(txn.delete_prefix(&p).unwrap(), gone.len() as u64);
                        }
                        _ => {
                            let k = key(&mut rng, space);
                            assert_eq!(txn.get(&k).unwrap(), local.get(&k).cloned(), "txn get");
                        }
                    }
                    assert_eq!(txn.count(), local.len() as u64, "txn count");
                }
                if rng.random_bool(0.1) {
                    txn.abort();
                } else {
                    txn.commit().unwrap();
                    model = local;
                }
            }
            60..=79 => check_reads(&store.begin_read(), &model, &mut rng, space),
            80..=84 => {
                let name = format!("s{}", rng.random_range(0..6));
                match store.create_snapshot(&name) {
                    Ok(info) => {
                        assert_eq!(info.key_count, model.len() as u64);
                        snaps.insert(name, model.clone());
                    }
                    Err(Error::SnapshotExists(n)) => {
                        assert!(snaps.contains_key(&n));
                        store.drop_snapshot(&n).unwrap();
                        snaps.remove(&n);
                    }
                    Err(e) => panic!("create_snapshot: {e}"),
                }
            }
            85..=89 => {
                for (name, m) in &snaps {
                    let txn = store.snapshot(name).unwrap();
                    check_reads(&txn, m, &mut rng, space);
                }
                let mut names: Vec<_> =
                    store.list_snapshots().into_iter().map(|s| s.name).collect();
                names.sort();
                let mut want: Vec<_> = snaps.keys().cloned().collect();
                want.sort();
                assert_eq!(names, want);
            }
            90..=93 => {
                // A reader opened before cleaning must still see its state.
                let before = store.begin_read();
                store.clean().unwrap();
                check_all(&before, &model);
                check_all(&store.begin_read(), &model);
            }
            94..=96 => {
                store.close().unwrap();
                store = Store::open(dir.path(), small_options()).unwrap();
                check_all(&store.begin_read(), &model);
            }
            _ => check_all(&store.begin_read(), &model),
        }
        if step % 50 == 0 {
            check_all(&store.begin_read(), &model);
        }
    }
    check_all(&store.begin_read(), &model);
    for (name, m) in &snaps {
        check_all(&store.snapshot(name).unwrap(), m);
    }
    store.close().unwrap();
}

#[test]
fn model_seeds() {
    let seeds: u64 = std::env::var("NACRE_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        run(seed, 300);
    }
}
