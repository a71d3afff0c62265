//! The small interface every storage engine under test implements, so that
//! each workload is written once.

use std::error::Error;
use std::path::Path;

/// Errors from any engine, boxed so that one signature fits them all.
pub type BenchError = Box<dyn Error + Send + Sync>;
pub type BenchResult<T> = Result<T, BenchError>;

/// One mutation inside a write transaction.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
}

/// Settings shared by every engine, so that they run on equal terms.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Bytes of cache each engine may use for its own data (page or block
    /// cache). The operating system's page cache comes on top, for all.
    pub cache_bytes: usize,
}

/// A storage engine opened in its own directory.
///
/// Every write goes through [`Engine::commit`], which applies a set of
/// operations atomically and returns once they are durable by the engine's
/// own definition (fsync or fdatasync of its log or file).
pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;

    /// Apply `ops` in one atomic transaction and make it durable before
    /// returning. Safe to call from several threads at once: an engine with a
    /// single writer lock serializes the callers, one with group commit may
    /// share a sync between them.
    fn commit(&self, ops: &[Op<'_>]) -> BenchResult<()>;

    /// A consistent read view of the latest committed state.
    fn reader(&self) -> BenchResult<Box<dyn Reader + '_>>;

    /// Reclaim space as far as the engine can (a major compaction or a full
    /// cleaning pass), in the foreground. Returns a note when the engine has
    /// nothing that fits, or something about how it went.
    fn compact(&mut self) -> BenchResult<Option<String>>;

    /// Close cleanly, making everything durable.
    fn close(self: Box<Self>) -> BenchResult<()>;
}

/// A read transaction or snapshot.
pub trait Reader {
    /// Copy the value of `key` into `out` and return true, or return false
    /// when the key is absent.
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> BenchResult<bool>;

    /// Visit up to `n` entries in key order, starting at the first key at or
    /// after `start`. Returns how many were visited.
    fn range(
        &self,
        start: &[u8],
        n: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> BenchResult<usize>;

    /// Visit every entry in key order. Returns how many were visited.
    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> BenchResult<u64>;
}

/// Opens one engine in a fresh directory.
pub type Opener = fn(dir: &Path, cfg: &EngineConfig) -> BenchResult<Box<dyn Engine>>;
