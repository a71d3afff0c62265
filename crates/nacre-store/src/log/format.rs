//! The log's own records and names: segment file names, the segment
//! header (first record of every segment) and the root record (the state
//! of the store at one commit). Byte layouts are in docs/store-format.md.

use nacre_vfs::VFile;

use super::SEG_HEADER_PAYLOAD;
use crate::btree::page::ChildInfo;
use crate::error::{Error, Result};
use crate::record::{self, put_ptr, put_u32, put_u64, Kind, Ptr, Reader, HEADER_LEN};

pub const FORMAT_VERSION: u32 = 1;

pub fn segment_name(id: u64) -> String {
    format!("seg-{id:016x}.nacre")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".nacre")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The root record: the whole state of the store at one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRec {
    pub seq: u64,
    /// `None` for an empty tree.
    pub root: Option<ChildInfo>,
    pub catalog: Ptr,
    /// A log position known durable when this record was written.
    pub synced_upto: u64,
}

impl RootRec {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56);
        put_u64(&mut out, self.seq);
        let r = self.root.unwrap_or(ChildInfo {
            ptr: Ptr::NULL,
            count: 0,
            bytes: 0,
        });
        put_ptr(&mut out, r.ptr);
        put_u64(&mut out, r.count);
        put_u64(&mut out, r.bytes);
        put_ptr(&mut out, self.catalog);
        put_u64(&mut out, self.synced_upto);
        out
    }

    pub fn decode(payload: &[u8], position: u64) -> Result<RootRec> {
        let mut r = Reader::new(payload, position);
        let seq = r.u64()?;
        let ptr = r.ptr()?;
        let count = r.u64()?;
        let bytes = r.u64()?;
        let catalog = r.ptr()?;
        let synced_upto = r.u64()?;
        if !r.done() {
            return Err(Error::corrupt(position, "root record has trailing bytes"));
        }
        Ok(RootRec {
            seq,
            root: (!ptr.is_null()).then_some(ChildInfo { ptr, count, bytes }),
            catalog,
            synced_upto,
        })
    }
}

pub(super) struct SegHeader {
    pub seg_size: u64,
    pub seg_id: u64,
    pub store_id: u64,
    pub prev_end: u64,
}

impl SegHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEG_HEADER_PAYLOAD);
        put_u32(&mut out, FORMAT_VERSION);
        put_u64(&mut out, self.seg_size);
        put_u64(&mut out, self.seg_id);
        put_u64(&mut out, self.store_id);
        put_u64(&mut out, self.prev_end);
        out
    }

    /// Read and check the header at the start of a segment file.
    fn read(file: &dyn VFile, position: u64) -> Result<SegHeader> {
        let mut buf = vec![0u8; HEADER_LEN + SEG_HEADER_PAYLOAD];
        file.read_exact_at(&mut buf, 0)
            .map_err(|_| Error::corrupt(position, "segment shorter than its header"))?;
        let (kind, payload) = record::open(&buf, position)?;
        if kind != Kind::SegmentHeader {
            return Err(Error::corrupt(
                position,
                "segment does not start with a header",
            ));
        }
        let mut r = Reader::new(payload, position);
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::Format(format!(
                "segment format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        Ok(SegHeader {
            seg_size: r.u64()?,
            seg_id: r.u64()?,
            store_id: r.u64()?,
            prev_end: r.u64()?,
        })
    }
}

pub(super) fn read_header_any_size(file: &dyn VFile, id: u64) -> Result<SegHeader> {
    // The checksum covers the position, id * seg_size; peek at the claimed
    // size first, then verify with it.
    let mut buf = vec![0u8; HEADER_LEN + SEG_HEADER_PAYLOAD];
    file.read_exact_at(&mut buf, 0)
        .map_err(|_| Error::corrupt(0, format!("segment {id} shorter than its header")))?;
    let seg_size = u64::from_le_bytes(buf[HEADER_LEN + 4..HEADER_LEN + 12].try_into().unwrap());
    let position = id.checked_mul(seg_size).unwrap_or(0);
    SegHeader::read(file, position)
}
