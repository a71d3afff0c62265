//! nacre-store, in its default configuration: immediate durability with
//! group commit, and the background cleaner on. `compact` runs the cleaner
//! to completion in the foreground.

use std::ops::Bound;
use std::path::Path;

use nacre_store::{Options, ReadTxn, Store};

use crate::engine::{BenchResult, Engine, EngineConfig, Op, Reader};

pub struct NacreEngine {
    store: Store,
}

pub fn open(dir: &Path, cfg: &EngineConfig) -> BenchResult<Box<dyn Engine>> {
    let opts = Options {
        cache_size_bytes: cfg.cache_bytes,
        ..Options::default()
    };
    let store = Store::open(dir.join("nacre"), opts)?;
    Ok(Box::new(NacreEngine { store }))
}

impl Engine for NacreEngine {
    fn name(&self) -> &'static str {
        "nacre"
    }

    fn commit(&self, ops: &[Op<'_>]) -> BenchResult<()> {
        let mut txn = self.store.begin_write()?;
        for op in ops {
            match *op {
                Op::Put(k, v) => txn.put(k, v)?,
                Op::Delete(k) => {
                    txn.delete(k)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn reader(&self) -> BenchResult<Box<dyn Reader + '_>> {
        Ok(Box::new(NacreReader {
            txn: self.store.begin_read(),
        }))
    }

    fn compact(&mut self) -> BenchResult<Option<String>> {
        let stats = self.store.clean()?;
        let after = self.store.stats();
        Ok(Some(format!(
            "clean(): {stats:?}; store reports bytes_on_disk={} live_bytes={}",
            after.bytes_on_disk, after.live_bytes
        )))
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        self.store.close()?;
        Ok(())
    }
}

struct NacreReader {
    txn: ReadTxn,
}

impl Reader for NacreReader {
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> BenchResult<bool> {
        let found = self.txn.get_with(key, |v| {
            out.clear();
            out.extend_from_slice(v);
        })?;
        Ok(found.is_some())
    }

    // Ranges and scans use `ReadTxn::scan`, which hands out borrowed keys
    // and values like redb's guards and fjall's slices do; the `range`
    // iterator copies every entry into two vectors.
    fn range(
        &self,
        start: &[u8],
        n: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> BenchResult<usize> {
        if n == 0 {
            return Ok(0);
        }
        let mut seen = 0;
        self.txn
            .scan(Bound::Included(start), Bound::Unbounded, false, |k, v| {
                visit(k, v);
                seen += 1;
                seen < n
            })?;
        Ok(seen)
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> BenchResult<u64> {
        let seen = self
            .txn
            .scan(Bound::Unbounded, Bound::Unbounded, false, |k, v| {
                visit(k, v);
                true
            })?;
        Ok(seen)
    }
}
