//! Set B: kivaloo's workloads (bulk insert, concurrent inserts, updates,
//! a full scan, random and hot-spot reads, a mixed load, random inserts),
//! one measurement each.

use rand::Rng;

use super::{
    commit_in_batches, holds, load_b, on_threads, share, Datasets, Run, Sizes, KEY_LEN_B,
    SPOT_CHECKS, VALUE_LEN_B,
};
use crate::data::chooser;
use crate::engine::{BenchResult, Engine, Op, Reader};

/// Set B: kivaloo's workloads, over the base pairs loaded by its bulk
/// insert, one measurement each.
pub fn run_set_b(
    engine: &mut Box<dyn Engine>,
    run: &mut Run<'_>,
    sizes: &Sizes,
    data: &Datasets,
) -> BenchResult<()> {
    run.measure("B.bulk_insert", || Ok((load_b(&**engine, sizes, data)?, 0)))?;
    let b = SetB {
        eng: &**engine,
        sizes,
        data,
        seed: run.seed,
        name: run.engine,
    };
    run.measure("B.insert_concurrent", || b.insert_concurrent())?;
    run.measure("B.bulk_update", || b.bulk_update())?;
    run.measure("B.update_concurrent", || b.update_concurrent())?;
    run.measure("B.bulk_extract", || b.bulk_extract())?;
    run.measure("B.random_read", || b.random_read())?;
    run.measure("B.random_mixed", || b.random_mixed())?;
    run.measure("B.mixed_concurrent", || b.mixed_concurrent())?;
    run.measure("B.hotspot_read", || b.hotspot_read())?;
    // Last, as it adds keys the reads above do not expect.
    run.measure("B.random_insert", || b.random_insert())?;
    Ok(())
}

/// What set B's workloads run on. Each returns (operations, errors).
struct SetB<'a> {
    eng: &'a dyn Engine,
    sizes: &'a Sizes,
    data: &'a Datasets,
    seed: u64,
    /// The engine's name, for messages.
    name: &'a str,
}

impl SetB<'_> {
    fn n(&self) -> usize {
        self.data.b.len()
    }

    fn writers(&self) -> usize {
        self.sizes.b_writers.max(1)
    }

    /// A base key holds its first value or its update: which one depends
    /// on which write came last.
    fn valid(&self, i: usize, v: &[u8]) -> bool {
        v == self.data.b.value(i) || v == self.data.b_updates.get(i)
    }

    /// Whether base key `i` reads back with a valid value.
    fn reads_valid(&self, reader: &dyn Reader, i: usize, buf: &mut Vec<u8>) -> BenchResult<bool> {
        Ok(reader.get(self.data.b.key(i), buf)? && self.valid(i, buf))
    }

    /// Indices of the base pairs in the bulk insert's order.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.data.b_order.iter().map(|&i| i as usize)
    }

    fn insert_concurrent(&self) -> BenchResult<(u64, u64)> {
        let (conc, writers, extra) = (
            self.sizes.b_concurrent_ops,
            self.writers(),
            &self.data.b_extra,
        );
        on_threads(writers, |t| {
            let mut ops = 0;
            for i in share(conc, writers, t) {
                self.eng.commit(&[Op::Put(extra.key(i), extra.value(i))])?;
                ops += 1;
            }
            Ok((ops, 0))
        })
    }

    fn bulk_update(&self) -> BenchResult<(u64, u64)> {
        let (base, updates) = (&self.data.b, &self.data.b_updates);
        let mut ops = self.order().map(|i| Op::Put(base.key(i), updates.get(i)));
        let ops = commit_in_batches(self.eng, self.sizes.b_batch_len, &mut ops)?;
        Ok((ops, 0))
    }

    fn update_concurrent(&self) -> BenchResult<(u64, u64)> {
        let (n, base, writers) = (self.n(), &self.data.b, self.writers());
        on_threads(writers, |t| {
            let mut rng = chooser(self.seed, &format!("B.update_concurrent/{t}"));
            let mut ops = 0;
            for _ in share(self.sizes.b_concurrent_ops, writers, t) {
                let i = rng.random_range(0..n);
                self.eng.commit(&[Op::Put(base.key(i), base.value(i))])?;
                ops += 1;
            }
            Ok((ops, 0))
        })
    }

    /// A full scan, in key order; every entry counted, and the count
    /// checked against the keys set B wrote.
    fn bulk_extract(&self) -> BenchResult<(u64, u64)> {
        let reader = self.eng.reader()?;
        let mut prev: Vec<u8> = Vec::with_capacity(KEY_LEN_B);
        let mut out_of_order = 0u64;
        let entries = reader.scan(&mut |k, v| {
            if k <= prev.as_slice() || v.len() != VALUE_LEN_B {
                out_of_order += 1;
            }
            prev.clear();
            prev.extend_from_slice(k);
        })?;
        let expected = (self.n() + self.sizes.b_concurrent_ops) as u64;
        let mut errors = out_of_order;
        if entries != expected {
            let name = self.name;
            eprintln!("[{name}] B.bulk_extract: scanned {entries} entries, expected {expected}");
            errors += entries.abs_diff(expected);
        }
        Ok((entries, errors))
    }

    fn random_read(&self) -> BenchResult<(u64, u64)> {
        let n = self.n();
        let reader = self.eng.reader()?;
        let mut rng = chooser(self.seed, "B.random_read");
        let mut buf = Vec::with_capacity(VALUE_LEN_B);
        let mut errors = 0;
        for _ in 0..n {
            let i = rng.random_range(0..n);
            if !self.reads_valid(&*reader, i, &mut buf)? {
                errors += 1;
            }
        }
        Ok((n as u64, errors))
    }

    /// Half gets, half puts (of either value), the puts of each chunk of
    /// `b_batch_len` operations committed together.
    fn random_mixed(&self) -> BenchResult<(u64, u64)> {
        let (n, base, batch_len) = (self.n(), &self.data.b, self.sizes.b_batch_len);
        let mut rng = chooser(self.seed, "B.random_mixed");
        let mut buf = Vec::with_capacity(VALUE_LEN_B);
        let mut errors = 0;
        let mut done = 0;
        let mut batch = Vec::with_capacity(batch_len);
        while done < n {
            let chunk = batch_len.min(n - done);
            {
                let reader = self.eng.reader()?;
                for _ in 0..chunk {
                    let i = rng.random_range(0..n);
                    if rng.random_bool(0.5) {
                        if !self.reads_valid(&*reader, i, &mut buf)? {
                            errors += 1;
                        }
                    } else {
                        let v = if rng.random_bool(0.5) {
                            base.value(i)
                        } else {
                            self.data.b_updates.get(i)
                        };
                        batch.push(Op::Put(base.key(i), v));
                    }
                }
            }
            if !batch.is_empty() {
                self.eng.commit(&batch)?;
                batch.clear();
            }
            done += chunk;
        }
        Ok((n as u64, errors))
    }

    fn mixed_concurrent(&self) -> BenchResult<(u64, u64)> {
        let (n, base, writers) = (self.n(), &self.data.b, self.writers());
        on_threads(writers, |t| {
            let mut rng = chooser(self.seed, &format!("B.mixed_concurrent/{t}"));
            let mut buf = Vec::with_capacity(VALUE_LEN_B);
            let (mut ops, mut errors) = (0, 0);
            for _ in share(self.sizes.b_concurrent_ops, writers, t) {
                let i = rng.random_range(0..n);
                if rng.random_bool(0.5) {
                    let reader = self.eng.reader()?;
                    if !self.reads_valid(&*reader, i, &mut buf)? {
                        errors += 1;
                    }
                } else {
                    self.eng
                        .commit(&[Op::Put(base.key(i), self.data.b_updates.get(i))])?;
                }
                ops += 1;
            }
            Ok((ops, errors))
        })
    }

    fn hotspot_read(&self) -> BenchResult<(u64, u64)> {
        let n = self.n();
        let reader = self.eng.reader()?;
        let hot = (n / 100).max(1);
        let mut rng = chooser(self.seed, "B.hotspot_read");
        let mut buf = Vec::with_capacity(VALUE_LEN_B);
        let mut errors = 0;
        for _ in 0..n {
            let i = rng.random_range(0..hot);
            if !self.reads_valid(&*reader, i, &mut buf)? {
                errors += 1;
            }
        }
        Ok((n as u64, errors))
    }

    /// New keys in random order. The spot check at the end (SPOT_CHECKS
    /// gets) is timed too; it is under 1% of the work.
    fn random_insert(&self) -> BenchResult<(u64, u64)> {
        let fresh = &self.data.b_random;
        let mut ops = (0..fresh.len()).map(|i| Op::Put(fresh.key(i), fresh.value(i)));
        let ops = commit_in_batches(self.eng, self.sizes.b_batch_len, &mut ops)?;
        let reader = self.eng.reader()?;
        let mut rng = chooser(self.seed, "B.random_insert");
        let mut buf = Vec::with_capacity(VALUE_LEN_B);
        let mut errors = 0;
        for _ in 0..SPOT_CHECKS.min(fresh.len()) {
            let i = rng.random_range(0..fresh.len());
            if !holds(&*reader, fresh.key(i), fresh.value(i), &mut buf)? {
                errors += 1;
            }
        }
        Ok((ops, errors))
    }
}
