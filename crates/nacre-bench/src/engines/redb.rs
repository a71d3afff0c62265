//! redb with its default durability, `Durability::Immediate`: a commit
//! returns once the file is synced. One writer at a time, so concurrent
//! committers are serialized. `compact` is `Database::compact`, repeated
//! until it reports that nothing more can be done.

use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, TableDefinition};

use crate::engine::{BenchResult, Engine, EngineConfig, Op, Reader};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

pub struct RedbEngine {
    db: Database,
}

pub fn open(dir: &Path, cfg: &EngineConfig) -> BenchResult<Box<dyn Engine>> {
    let db = Database::builder()
        .set_cache_size(cfg.cache_bytes)
        .create(dir.join("redb.db"))?;
    // Create the table up front, so that readers never find it missing.
    let txn = db.begin_write()?;
    txn.open_table(TABLE)?;
    txn.commit()?;
    Ok(Box::new(RedbEngine { db }))
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn commit(&self, ops: &[Op<'_>]) -> BenchResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for op in ops {
                match *op {
                    Op::Put(k, v) => {
                        table.insert(k, v)?;
                    }
                    Op::Delete(k) => {
                        table.remove(k)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn reader(&self) -> BenchResult<Box<dyn Reader + '_>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        Ok(Box::new(RedbReader { table, _txn: txn }))
    }

    fn compact(&mut self) -> BenchResult<Option<String>> {
        let mut rounds = 0;
        while self.db.compact()? {
            rounds += 1;
            if rounds >= 100 {
                break;
            }
        }
        Ok(Some(format!(
            "Database::compact() made progress {rounds} time(s)"
        )))
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        self.db.close()?;
        Ok(())
    }
}

struct RedbReader {
    // Fields drop in order: the table before the transaction it reads.
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    _txn: ReadTransaction,
}

impl Reader for RedbReader {
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> BenchResult<bool> {
        match self.table.get(key)? {
            Some(guard) => {
                out.clear();
                out.extend_from_slice(guard.value());
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
        for item in self.table.range(start..)?.take(n) {
            let (k, v) = item?;
            visit(k.value(), v.value());
            seen += 1;
        }
        Ok(seen)
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> BenchResult<u64> {
        let mut seen = 0;
        for item in self.table.range::<&[u8]>(..)? {
            let (k, v) = item?;
            visit(k.value(), v.value());
            seen += 1;
        }
        Ok(seen)
    }
}
