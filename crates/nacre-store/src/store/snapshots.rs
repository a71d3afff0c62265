//! Named snapshots: the catalog that lists them (a record of its own, kind
//! 6; its layout is in docs/store-format.md), and the store's calls that
//! create, drop, list and open them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Inner, Store};
use crate::btree::page::ChildInfo;
use crate::error::{Error, Result};
use crate::record::{put_ptr, put_u16, put_u32, put_u64, Kind, Ptr, Reader};
use crate::txn::ReadTxn;

/// A named snapshot: the store as it was at commit `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// The commit whose state the snapshot holds.
    pub seq: u64,
    pub key_count: u64,
    /// Log bytes reachable from the snapshot's root (shared pages included).
    pub live_bytes: u64,
    pub created_unix_ms: u64,
    pub(crate) root: Option<ChildInfo>,
}

/// The snapshot catalog and where it was last written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub ptr: Ptr,
    pub snapshots: Vec<SnapshotInfo>,
}

impl Catalog {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u32(&mut out, self.snapshots.len() as u32);
        for s in &self.snapshots {
            put_u16(&mut out, s.name.len() as u16);
            out.extend_from_slice(s.name.as_bytes());
            put_u64(&mut out, s.seq);
            let r = s.root.unwrap_or(ChildInfo {
                ptr: Ptr::NULL,
                count: 0,
                bytes: 0,
            });
            put_ptr(&mut out, r.ptr);
            put_u64(&mut out, r.count);
            put_u64(&mut out, r.bytes);
            put_u64(&mut out, s.created_unix_ms);
        }
        out
    }

    pub fn decode(ptr: Ptr, payload: &[u8]) -> Result<Catalog> {
        let mut r = Reader::new(payload, ptr.addr);
        let n = r.u32()? as usize;
        let mut snapshots = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let len = r.u16()? as usize;
            let name = String::from_utf8(r.bytes(len)?.to_vec())
                .map_err(|_| Error::corrupt(ptr.addr, "snapshot name is not UTF-8"))?;
            let seq = r.u64()?;
            let rp = r.ptr()?;
            let count = r.u64()?;
            let bytes = r.u64()?;
            let created_unix_ms = r.u64()?;
            snapshots.push(SnapshotInfo {
                name,
                seq,
                key_count: count,
                live_bytes: bytes,
                created_unix_ms,
                root: (!rp.is_null()).then_some(ChildInfo {
                    ptr: rp,
                    count,
                    bytes,
                }),
            });
        }
        if !r.done() {
            return Err(Error::corrupt(ptr.addr, "catalog has trailing bytes"));
        }
        Ok(Catalog { ptr, snapshots })
    }
}

impl Inner {
    pub fn write_catalog(&self, snapshots: Vec<SnapshotInfo>) -> Result<Arc<Catalog>> {
        if snapshots.is_empty() {
            return Ok(Arc::new(Catalog::default()));
        }
        let mut cat = Catalog {
            ptr: Ptr::NULL,
            snapshots,
        };
        cat.ptr = self.log.append(Kind::Catalog, &cat.encode())?;
        Ok(Arc::new(cat))
    }
}

fn validate_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::InvalidSnapshotName(name.to_string()));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Store {
    /// Create a named snapshot of the latest committed state, in O(1).
    ///
    /// Takes the writer slot: do not call it while this thread holds a
    /// [`WriteTxn`] (it would wait for itself).
    pub fn create_snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        let guard = self.inner.begin_write_guard()?;
        let base = self.inner.current.load_full();
        if base.catalog.snapshots.iter().any(|s| s.name == name) {
            return Err(Error::SnapshotExists(name.to_string()));
        }
        if base.catalog.snapshots.len() >= self.inner.opts.snapshots_max {
            return Err(Error::TooManySnapshots {
                max: self.inner.opts.snapshots_max,
            });
        }
        let info = SnapshotInfo {
            name: name.to_string(),
            seq: base.seq,
            key_count: base.root.map_or(0, |r| r.count),
            live_bytes: base.root.map_or(0, |r| r.bytes),
            created_unix_ms: now_ms(),
            root: base.root,
        };
        let mut snaps = base.catalog.snapshots.clone();
        snaps.push(info.clone());
        let catalog = self.inner.write_catalog(snaps)?;
        self.inner
            .commit_root(guard, base.root, catalog, self.inner.opts.durability)?;
        Ok(info)
    }

    /// Drop a snapshot; the cleaner releases the space only it held.
    ///
    /// Takes the writer slot: do not call it while this thread holds a
    /// [`WriteTxn`] (it would wait for itself).
    pub fn drop_snapshot(&self, name: &str) -> Result<()> {
        let guard = self.inner.begin_write_guard()?;
        let base = self.inner.current.load_full();
        let mut snaps = base.catalog.snapshots.clone();
        let before = snaps.len();
        snaps.retain(|s| s.name != name);
        if snaps.len() == before {
            return Err(Error::SnapshotNotFound(name.to_string()));
        }
        let catalog = self.inner.write_catalog(snaps)?;
        self.inner
            .commit_root(guard, base.root, catalog, self.inner.opts.durability)?;
        Ok(())
    }

    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        self.inner.current.load().catalog.snapshots.clone()
    }

    /// A read transaction on a named snapshot: the full read API, while
    /// writes go on.
    pub fn snapshot(&self, name: &str) -> Result<ReadTxn> {
        let v = self.inner.current.load_full();
        let s = v
            .catalog
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::SnapshotNotFound(name.to_string()))?;
        let at = (s.root, s.seq);
        Ok(ReadTxn::new(self.inner.clone(), v, Some(at)))
    }
}
