//! `nacre-store`: Nacre's storage engine.
//!
//! A durable, log-structured, copy-on-write B+tree in the lineage of kivaloo,
//! with cheap named snapshots in the spirit of Acunu's versioned dictionaries.
//!
//! * Pages are only ever appended to segment files; a commit appends the
//!   changed path of the tree and a root record. Every record carries a
//!   CRC32C; a bad record is reported as [`Error::Corruption`], never served.
//! * One writer at a time ([`Store::begin_write`]); any number of readers
//!   ([`Store::begin_read`]), each seeing one consistent snapshot without
//!   blocking the writer or being blocked by it.
//! * [`Durability::Immediate`] commits from concurrent writers share one
//!   fsync (group commit); [`Durability::Lazy`] commits are crash-consistent
//!   and durable at the next sync.
//! * A cleaner rewrites the live records of the oldest segments and deletes
//!   them, keeping the files within `cleaner.space_ratio_max` of the live data.
//! * Named snapshots are O(1): an old root kept in the snapshot catalog.
//!
//! The on-disk format and the argument for each crash case are in
//! `docs/store-format.md`.
//!
//! ```
//! use nacre_store::{Options, Store};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path(), Options::default()).unwrap();
//! let mut txn = store.begin_write().unwrap();
//! txn.put(b"hello", b"world").unwrap();
//! txn.commit().unwrap();
//! assert_eq!(store.begin_read().get(b"hello").unwrap().as_deref(), Some(&b"world"[..]));
//! ```

mod btree;
mod bufpool;
mod cache;
mod cleaner;
mod error;
mod log;
mod options;
mod record;
mod store;
mod txn;

pub use error::{Error, Result};
/// The file layer, from `nacre-vfs`: part of this API through [`Options::vfs`].
pub use nacre_vfs::{OsVfs, VFile, Vfs};
pub use options::{CleanerOptions, Durability, Options};
pub use store::{CleanStats, CommitInfo, SnapshotInfo, Stats, Store};
pub use txn::{prefix_end, Iter, ReadTxn, WriteTxn};
