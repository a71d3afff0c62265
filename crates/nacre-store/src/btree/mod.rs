//! The copy-on-write B+tree: page formats (`page`), lookups and cursors over
//! clean trees (`read`), and the transaction-local dirty tree (`write`).

pub mod leaf;
pub mod page;
pub mod read;
pub mod seps;
pub mod write;
