//! `nacre-raft`: Nacre's replicated log.
//!
//! * [`Tlog`]: the durable Raft log — segmented, append-only, a CRC32C per
//!   record, group commit (many appends, one `sync`). The on-disk format and
//!   the crash-safety argument are in `docs/tlog-format.md`.
//! * [`TlogStorage`]: raft-rs's [`raft::Storage`] over a shared tlog.
//!
//! All file I/O goes through [`nacre_vfs::Vfs`], so crash tests run it
//! on the fault-injecting simulator.

mod error;
mod record;
mod storage;
mod tlog;

pub use error::TlogError;
pub use storage::{SnapshotProvider, TlogStorage};
pub use tlog::{segment_name, Tlog, TlogOptions};

#[cfg(test)]
mod tests;
