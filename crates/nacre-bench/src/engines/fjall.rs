//! fjall with one keyspace. Every commit is a `WriteBatch` with durability
//! `PersistMode::SyncData` (fdatasync of the journal, which is what fjall's
//! docs name for ACID use; nacre, redb and RocksDB also use fdatasync).
//! The journal writer is held through the sync, so concurrent committers
//! are serialized. `compact` is `Keyspace::major_compact` (public, though
//! hidden from fjall's docs), after rotating the memtable out so that the
//! tombstones take part.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};

use crate::engine::{BenchResult, Engine, EngineConfig, Op, Reader};

pub struct FjallEngine {
    // The keyspace handle before the database: fields drop in order.
    ks: Keyspace,
    db: Database,
}

pub fn open(dir: &Path, cfg: &EngineConfig) -> BenchResult<Box<dyn Engine>> {
    let db = Database::builder(dir.join("fjall"))
        .cache_size(cfg.cache_bytes as u64)
        .open()?;
    let ks = db.keyspace("bench", KeyspaceCreateOptions::default)?;
    Ok(Box::new(FjallEngine { ks, db }))
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn commit(&self, ops: &[Op<'_>]) -> BenchResult<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for op in ops {
            match *op {
                Op::Put(k, v) => batch.insert(&self.ks, k, v),
                Op::Delete(k) => batch.remove(&self.ks, k),
            }
        }
        batch.commit()?;
        Ok(())
    }

    fn reader(&self) -> BenchResult<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader {
            snap: self.db.snapshot(),
            ks: &self.ks,
        }))
    }

    fn compact(&mut self) -> BenchResult<Option<String>> {
        self.ks.rotate_memtable_and_wait()?;
        self.ks.major_compact()?;
        Ok(Some(
            "Keyspace::rotate_memtable_and_wait + Keyspace::major_compact".to_string(),
        ))
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

struct FjallReader<'a> {
    snap: Snapshot,
    ks: &'a Keyspace,
}

impl Reader for FjallReader<'_> {
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> BenchResult<bool> {
        match self.snap.get(self.ks, key)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn range(
        &self,
        start: &[u8],
        n: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> BenchResult<usize> {
        let mut seen = 0;
        for guard in self.snap.range(self.ks, start..).take(n) {
            let (k, v) = guard.into_inner()?;
            visit(&k, &v);
            seen += 1;
        }
        Ok(seen)
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> BenchResult<u64> {
        let mut seen = 0;
        for guard in self.snap.iter(self.ks) {
            let (k, v) = guard.into_inner()?;
            visit(&k, &v);
            seen += 1;
        }
        Ok(seen)
    }
}
