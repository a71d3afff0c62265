//! RocksDB 7.8 from Debian's `librocksdb-dev`, reached through its C API.
//!
//! Why not the `rocksdb` crate: its `librocksdb-sys` builds RocksDB from C++
//! source unless `ROCKSDB_LIB_DIR` is set in the environment of every build,
//! and even then runs bindgen (needing libclang) over headers of a newer
//! RocksDB (11.x for rocksdb 0.25) than the system library. Building RocksDB
//! from source takes well over five minutes on this 2-core machine. The C
//! API is stable and small, so this module declares the ~40 functions it
//! uses and `build.rs` links the system library when it finds one; without
//! it, this engine is simply left out.
//!
//! Configuration: RocksDB's defaults (level compaction, snappy), plus an LRU
//! block cache of the shared cache size, a 10 bits/key bloom filter and two
//! background threads. Commits are one `WriteBatch` written with
//! `WriteOptions::sync = true` (fdatasync of the WAL; concurrent writers are
//! grouped by RocksDB's write leader). `compact` flushes the memtable and
//! runs `CompactRange` over the whole key space with bottommost-level
//! compaction forced.

use std::ffi::{c_char, c_int, c_uchar, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use crate::engine::{BenchResult, Engine, EngineConfig, Op, Reader};

#[allow(non_camel_case_types)]
mod ffi {
    use std::ffi::{c_char, c_int, c_uchar, c_void};

    macro_rules! opaque {
        ($($name:ident),* $(,)?) => {
            $(
                #[repr(C)]
                pub struct $name {
                    _private: [u8; 0],
                }
            )*
        };
    }

    opaque!(
        rocksdb_t,
        rocksdb_options_t,
        rocksdb_writeoptions_t,
        rocksdb_readoptions_t,
        rocksdb_flushoptions_t,
        rocksdb_compactoptions_t,
        rocksdb_writebatch_t,
        rocksdb_iterator_t,
        rocksdb_snapshot_t,
        rocksdb_cache_t,
        rocksdb_block_based_table_options_t,
        rocksdb_filterpolicy_t,
        rocksdb_pinnableslice_t,
    );

    #[link(name = "rocksdb")]
    extern "C" {
        pub fn rocksdb_options_create() -> *mut rocksdb_options_t;
        pub fn rocksdb_options_destroy(o: *mut rocksdb_options_t);
        pub fn rocksdb_options_set_create_if_missing(o: *mut rocksdb_options_t, v: c_uchar);
        pub fn rocksdb_options_increase_parallelism(o: *mut rocksdb_options_t, threads: c_int);
        pub fn rocksdb_options_set_block_based_table_factory(
            o: *mut rocksdb_options_t,
            t: *mut rocksdb_block_based_table_options_t,
        );

        pub fn rocksdb_block_based_options_create() -> *mut rocksdb_block_based_table_options_t;
        pub fn rocksdb_block_based_options_destroy(t: *mut rocksdb_block_based_table_options_t);
        pub fn rocksdb_block_based_options_set_block_cache(
            t: *mut rocksdb_block_based_table_options_t,
            c: *mut rocksdb_cache_t,
        );
        pub fn rocksdb_block_based_options_set_filter_policy(
            t: *mut rocksdb_block_based_table_options_t,
            f: *mut rocksdb_filterpolicy_t,
        );
        pub fn rocksdb_filterpolicy_create_bloom_full(
            bits_per_key: f64,
        ) -> *mut rocksdb_filterpolicy_t;
        pub fn rocksdb_cache_create_lru(capacity: usize) -> *mut rocksdb_cache_t;
        pub fn rocksdb_cache_destroy(c: *mut rocksdb_cache_t);

        pub fn rocksdb_open(
            o: *const rocksdb_options_t,
            name: *const c_char,
            errptr: *mut *mut c_char,
        ) -> *mut rocksdb_t;
        pub fn rocksdb_close(db: *mut rocksdb_t);

        pub fn rocksdb_writeoptions_create() -> *mut rocksdb_writeoptions_t;
        pub fn rocksdb_writeoptions_destroy(o: *mut rocksdb_writeoptions_t);
        pub fn rocksdb_writeoptions_set_sync(o: *mut rocksdb_writeoptions_t, v: c_uchar);

        pub fn rocksdb_readoptions_create() -> *mut rocksdb_readoptions_t;
        pub fn rocksdb_readoptions_destroy(o: *mut rocksdb_readoptions_t);
        pub fn rocksdb_readoptions_set_snapshot(
            o: *mut rocksdb_readoptions_t,
            s: *const rocksdb_snapshot_t,
        );
        pub fn rocksdb_create_snapshot(db: *mut rocksdb_t) -> *const rocksdb_snapshot_t;
        pub fn rocksdb_release_snapshot(db: *mut rocksdb_t, s: *const rocksdb_snapshot_t);

        pub fn rocksdb_writebatch_create() -> *mut rocksdb_writebatch_t;
        pub fn rocksdb_writebatch_destroy(b: *mut rocksdb_writebatch_t);
        pub fn rocksdb_writebatch_put(
            b: *mut rocksdb_writebatch_t,
            key: *const c_char,
            klen: usize,
            val: *const c_char,
            vlen: usize,
        );
        pub fn rocksdb_writebatch_delete(
            b: *mut rocksdb_writebatch_t,
            key: *const c_char,
            klen: usize,
        );
        pub fn rocksdb_write(
            db: *mut rocksdb_t,
            o: *const rocksdb_writeoptions_t,
            b: *mut rocksdb_writebatch_t,
            errptr: *mut *mut c_char,
        );

        pub fn rocksdb_get_pinned(
            db: *mut rocksdb_t,
            o: *const rocksdb_readoptions_t,
            key: *const c_char,
            klen: usize,
            errptr: *mut *mut c_char,
        ) -> *mut rocksdb_pinnableslice_t;
        pub fn rocksdb_pinnableslice_value(
            s: *const rocksdb_pinnableslice_t,
            vlen: *mut usize,
        ) -> *const c_char;
        pub fn rocksdb_pinnableslice_destroy(s: *mut rocksdb_pinnableslice_t);

        pub fn rocksdb_create_iterator(
            db: *mut rocksdb_t,
            o: *const rocksdb_readoptions_t,
        ) -> *mut rocksdb_iterator_t;
        pub fn rocksdb_iter_destroy(it: *mut rocksdb_iterator_t);
        pub fn rocksdb_iter_seek(it: *mut rocksdb_iterator_t, key: *const c_char, klen: usize);
        pub fn rocksdb_iter_seek_to_first(it: *mut rocksdb_iterator_t);
        pub fn rocksdb_iter_valid(it: *const rocksdb_iterator_t) -> c_uchar;
        pub fn rocksdb_iter_next(it: *mut rocksdb_iterator_t);
        pub fn rocksdb_iter_key(it: *const rocksdb_iterator_t, klen: *mut usize) -> *const c_char;
        pub fn rocksdb_iter_value(it: *const rocksdb_iterator_t, vlen: *mut usize)
            -> *const c_char;
        pub fn rocksdb_iter_get_error(it: *const rocksdb_iterator_t, errptr: *mut *mut c_char);

        pub fn rocksdb_flushoptions_create() -> *mut rocksdb_flushoptions_t;
        pub fn rocksdb_flushoptions_destroy(o: *mut rocksdb_flushoptions_t);
        pub fn rocksdb_flushoptions_set_wait(o: *mut rocksdb_flushoptions_t, v: c_uchar);
        pub fn rocksdb_flush(
            db: *mut rocksdb_t,
            o: *const rocksdb_flushoptions_t,
            errptr: *mut *mut c_char,
        );

        pub fn rocksdb_compactoptions_create() -> *mut rocksdb_compactoptions_t;
        pub fn rocksdb_compactoptions_destroy(o: *mut rocksdb_compactoptions_t);
        pub fn rocksdb_compactoptions_set_bottommost_level_compaction(
            o: *mut rocksdb_compactoptions_t,
            v: c_uchar,
        );
        pub fn rocksdb_compact_range_opt(
            db: *mut rocksdb_t,
            o: *mut rocksdb_compactoptions_t,
            start: *const c_char,
            start_len: usize,
            limit: *const c_char,
            limit_len: usize,
        );

        pub fn rocksdb_free(p: *mut c_void);
    }
}

/// `BottommostLevelCompaction::kForce` in RocksDB's C++ API.
const BOTTOMMOST_FORCE: c_uchar = 2;
const BLOOM_BITS_PER_KEY: f64 = 10.0;
const BACKGROUND_THREADS: c_int = 2;

/// Turns an error string set by the C API into a Rust error, freeing it.
fn check(err: *mut c_char) -> BenchResult<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: the C API sets `err` to a NUL-terminated string it allocated
    // with malloc, which we own and free once copied.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::rocksdb_free(err as *mut c_void) };
    Err(format!("rocksdb: {msg}").into())
}

pub struct RocksEngine {
    db: *mut ffi::rocksdb_t,
    options: *mut ffi::rocksdb_options_t,
    table_options: *mut ffi::rocksdb_block_based_table_options_t,
    cache: *mut ffi::rocksdb_cache_t,
    write_options: *mut ffi::rocksdb_writeoptions_t,
}

// SAFETY: a `rocksdb_t` is safe to use from many threads at once (RocksDB's
// `DB` is thread-safe); the option objects are only read after `open`.
unsafe impl Send for RocksEngine {}
unsafe impl Sync for RocksEngine {}

pub fn open(dir: &Path, cfg: &EngineConfig) -> BenchResult<Box<dyn Engine>> {
    let path = CString::new(dir.join("rocksdb").as_os_str().as_bytes())?;
    // SAFETY: plain calls into the C API; every object created here is owned
    // by the returned engine (or freed on the error path) and destroyed once.
    unsafe {
        let options = ffi::rocksdb_options_create();
        ffi::rocksdb_options_set_create_if_missing(options, 1);
        ffi::rocksdb_options_increase_parallelism(options, BACKGROUND_THREADS);
        let table_options = ffi::rocksdb_block_based_options_create();
        let cache = ffi::rocksdb_cache_create_lru(cfg.cache_bytes);
        ffi::rocksdb_block_based_options_set_block_cache(table_options, cache);
        ffi::rocksdb_block_based_options_set_filter_policy(
            table_options,
            ffi::rocksdb_filterpolicy_create_bloom_full(BLOOM_BITS_PER_KEY),
        );
        ffi::rocksdb_options_set_block_based_table_factory(options, table_options);
        let write_options = ffi::rocksdb_writeoptions_create();
        ffi::rocksdb_writeoptions_set_sync(write_options, 1);

        let mut err = ptr::null_mut();
        let db = ffi::rocksdb_open(options, path.as_ptr(), &mut err);
        let engine = RocksEngine {
            db,
            options,
            table_options,
            cache,
            write_options,
        };
        check(err)?;
        if db.is_null() {
            return Err("rocksdb_open returned no handle".into());
        }
        Ok(Box::new(engine))
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        // SAFETY: each pointer was created in `open`, is destroyed only here,
        // and the database is closed before the options it was opened with.
        unsafe {
            if !self.db.is_null() {
                ffi::rocksdb_close(self.db);
            }
            ffi::rocksdb_writeoptions_destroy(self.write_options);
            ffi::rocksdb_options_destroy(self.options);
            ffi::rocksdb_block_based_options_destroy(self.table_options);
            ffi::rocksdb_cache_destroy(self.cache);
        }
    }
}

impl Engine for RocksEngine {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn commit(&self, ops: &[Op<'_>]) -> BenchResult<()> {
        // SAFETY: the batch lives for this call only; RocksDB copies keys and
        // values into it, so the borrowed slices need not outlive the calls.
        unsafe {
            let batch = ffi::rocksdb_writebatch_create();
            for op in ops {
                match *op {
                    Op::Put(k, v) => ffi::rocksdb_writebatch_put(
                        batch,
                        k.as_ptr().cast(),
                        k.len(),
                        v.as_ptr().cast(),
                        v.len(),
                    ),
                    Op::Delete(k) => {
                        ffi::rocksdb_writebatch_delete(batch, k.as_ptr().cast(), k.len())
                    }
                }
            }
            let mut err = ptr::null_mut();
            ffi::rocksdb_write(self.db, self.write_options, batch, &mut err);
            ffi::rocksdb_writebatch_destroy(batch);
            check(err)
        }
    }

    fn reader(&self) -> BenchResult<Box<dyn Reader + '_>> {
        // SAFETY: the snapshot and read options are released in the reader's
        // Drop, while the engine (and so the database) is still borrowed.
        unsafe {
            let snapshot = ffi::rocksdb_create_snapshot(self.db);
            let read_options = ffi::rocksdb_readoptions_create();
            ffi::rocksdb_readoptions_set_snapshot(read_options, snapshot);
            Ok(Box::new(RocksReader {
                engine: self,
                snapshot,
                read_options,
            }))
        }
    }

    fn compact(&mut self) -> BenchResult<Option<String>> {
        // SAFETY: plain calls on the open database; options freed after use.
        unsafe {
            let flush = ffi::rocksdb_flushoptions_create();
            ffi::rocksdb_flushoptions_set_wait(flush, 1);
            let mut err = ptr::null_mut();
            ffi::rocksdb_flush(self.db, flush, &mut err);
            ffi::rocksdb_flushoptions_destroy(flush);
            check(err)?;

            let compact = ffi::rocksdb_compactoptions_create();
            ffi::rocksdb_compactoptions_set_bottommost_level_compaction(compact, BOTTOMMOST_FORCE);
            ffi::rocksdb_compact_range_opt(self.db, compact, ptr::null(), 0, ptr::null(), 0);
            ffi::rocksdb_compactoptions_destroy(compact);
        }
        Ok(Some(
            "Flush + CompactRange(all keys, bottommost level forced)".to_string(),
        ))
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        // Drop closes the database; every commit was already synced.
        drop(self);
        Ok(())
    }
}

struct RocksReader<'a> {
    engine: &'a RocksEngine,
    snapshot: *const ffi::rocksdb_snapshot_t,
    read_options: *mut ffi::rocksdb_readoptions_t,
}

impl Drop for RocksReader<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `RocksEngine::reader`, released exactly once.
        unsafe {
            ffi::rocksdb_readoptions_destroy(self.read_options);
            ffi::rocksdb_release_snapshot(self.engine.db, self.snapshot);
        }
    }
}

/// An iterator that is destroyed when dropped, even on an early return.
struct Iter(*mut ffi::rocksdb_iterator_t);

impl Drop for Iter {
    fn drop(&mut self) {
        // SAFETY: created by `rocksdb_create_iterator`, destroyed once.
        unsafe { ffi::rocksdb_iter_destroy(self.0) }
    }
}

impl Iter {
    /// Walks forward from the iterator's position, visiting up to `n`
    /// entries.
    ///
    /// # Safety
    /// The iterator must be live and positioned (after a seek).
    unsafe fn walk(&self, n: u64, visit: &mut dyn FnMut(&[u8], &[u8])) -> BenchResult<u64> {
        let mut seen = 0;
        while seen < n && ffi::rocksdb_iter_valid(self.0) != 0 {
            let (mut klen, mut vlen) = (0usize, 0usize);
            let k = ffi::rocksdb_iter_key(self.0, &mut klen);
            let v = ffi::rocksdb_iter_value(self.0, &mut vlen);
            // SAFETY: key and value stay valid until the iterator moves.
            visit(
                std::slice::from_raw_parts(k.cast(), klen),
                std::slice::from_raw_parts(v.cast(), vlen),
            );
            seen += 1;
            ffi::rocksdb_iter_next(self.0);
        }
        let mut err = ptr::null_mut();
        ffi::rocksdb_iter_get_error(self.0, &mut err);
        check(err)?;
        Ok(seen)
    }
}

impl Reader for RocksReader<'_> {
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> BenchResult<bool> {
        // SAFETY: the pinned slice is destroyed right after its bytes are
        // copied out.
        unsafe {
            let mut err = ptr::null_mut();
            let pinned = ffi::rocksdb_get_pinned(
                self.engine.db,
                self.read_options,
                key.as_ptr().cast(),
                key.len(),
                &mut err,
            );
            check(err)?;
            if pinned.is_null() {
                return Ok(false);
            }
            let mut vlen = 0usize;
            let v = ffi::rocksdb_pinnableslice_value(pinned, &mut vlen);
            out.clear();
            out.extend_from_slice(std::slice::from_raw_parts(v.cast(), vlen));
            ffi::rocksdb_pinnableslice_destroy(pinned);
            Ok(true)
        }
    }

    fn range(
        &self,
        start: &[u8],
        n: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> BenchResult<usize> {
        // SAFETY: the iterator is owned by `Iter` and dropped before the
        // snapshot it reads.
        unsafe {
            let it = Iter(ffi::rocksdb_create_iterator(
                self.engine.db,
                self.read_options,
            ));
            ffi::rocksdb_iter_seek(it.0, start.as_ptr().cast(), start.len());
            Ok(it.walk(n as u64, visit)? as usize)
        }
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> BenchResult<u64> {
        // SAFETY: as in `range`.
        unsafe {
            let it = Iter(ffi::rocksdb_create_iterator(
                self.engine.db,
                self.read_options,
            ));
            ffi::rocksdb_iter_seek_to_first(it.0);
            it.walk(u64::MAX, visit)
        }
    }
}
