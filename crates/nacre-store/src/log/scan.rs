//! Reading segments back whole: the scan that recovery runs over the newest
//! segments, and the parse the cleaner runs over completed ones.

use nacre_vfs::VFile;

use super::format::RootRec;
use super::SEG_HEADER_PAYLOAD;
use crate::error::{Error, Result};
use crate::record::{self, align_up, Kind, Ptr, ALIGN, HEADER_LEN};

/// Does the file hold any intact record after the header's place? A torn
/// header can only belong to a segment that never had anything synced; one
/// followed by intact records was damaged later, which is corruption.
pub(super) fn has_valid_records(file: &dyn VFile, id: u64, seg_size: u64) -> Result<bool> {
    let len = file.len().map_err(Error::io("stat segment"))?.min(seg_size);
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(Error::io("read segment"))?;
    let base = id.saturating_mul(seg_size);
    let after_header = align_up((HEADER_LEN + SEG_HEADER_PAYLOAD) as u64) as usize;
    let found = intact_records(&bytes, base, after_header).next().is_some();
    Ok(found)
}

/// Every intact record at an aligned offset from `from` on, found by
/// trying each boundary (so records past a damaged one are found too):
/// (offset, kind, payload).
fn intact_records(
    bytes: &[u8],
    base: u64,
    from: usize,
) -> impl Iterator<Item = (usize, Kind, &[u8])> {
    (from..bytes.len().saturating_sub(HEADER_LEN - 1))
        .step_by(ALIGN as usize)
        .filter_map(move |p| {
            let (_, len) = record::peek_header(&bytes[p..])?;
            let end = p + HEADER_LEN + len as usize;
            let (kind, payload) = record::open(bytes.get(p..end)?, base + p as u64).ok()?;
            Some((p, kind, payload))
        })
}

/// What a sequential scan of one segment found.
pub struct Scan {
    /// Offset just past the last record that parsed and passed its checksum.
    pub valid_end: u64,
    /// The last root record in the valid prefix, with its position.
    pub last_root: Option<(u64, RootRec)>,
    /// The largest `synced_upto` claimed by any intact root after the valid
    /// prefix (found by resynchronising on 8-byte boundaries).
    pub late_root_synced_upto: Option<u64>,
}

/// Scan a segment image (`bytes` starts at offset 0 of the segment whose
/// first position is `base`).
pub fn scan_segment(bytes: &[u8], base: u64) -> Result<Scan> {
    let mut pos = 0usize;
    let mut last_root = None;
    let mut first = true;
    while let Some((kind, len)) = record::peek_header(&bytes[pos..]) {
        let end = pos + HEADER_LEN + len as usize;
        if end > bytes.len() {
            break;
        }
        let Ok((kind2, payload)) = record::open(&bytes[pos..end], base + pos as u64) else {
            break;
        };
        debug_assert_eq!(kind, kind2);
        if first && kind != Kind::SegmentHeader {
            break;
        }
        first = false;
        if kind == Kind::Root {
            let r = RootRec::decode(payload, base + pos as u64)?;
            last_root = Some((base + pos as u64, r));
        }
        pos = align_up(end as u64) as usize;
        if pos >= bytes.len() {
            pos = bytes.len().min(pos);
            break;
        }
    }
    let valid_end = pos as u64;
    let late = intact_records(bytes, base, pos + ALIGN as usize)
        .filter(|(_, kind, _)| *kind == Kind::Root)
        .filter_map(|(p, _, payload)| RootRec::decode(payload, base + p as u64).ok())
        .map(|r| r.synced_upto)
        .max();
    Ok(Scan {
        valid_end,
        last_root,
        late_root_synced_upto: late,
    })
}

/// A record of a completed segment, for the cleaner: its pointer and where
/// its payload lies in the buffer it was parsed from.
pub struct ScannedRecord {
    pub ptr: Ptr,
    pub kind: Kind,
    pub payload: std::ops::Range<usize>,
}

/// Parse the whole records at the start of `bytes` (a slice of segment
/// `base` starting at offset `from`). Every record must be valid; a record
/// cut off by the end of the slice ends the parse. Returns the records and
/// the bytes they (with padding) take.
pub fn parse_records(bytes: &[u8], base: u64, from: u64) -> Result<(Vec<ScannedRecord>, u64)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= bytes.len() {
        let position = base + from + pos as u64;
        let (_, len) = record::peek_header(&bytes[pos..])
            .ok_or_else(|| Error::corrupt(position, "bad record header in a completed segment"))?;
        let end = pos + HEADER_LEN + len as usize;
        if end > bytes.len() {
            break;
        }
        let (kind, _) = record::open(&bytes[pos..end], position)?;
        out.push(ScannedRecord {
            ptr: Ptr {
                addr: position,
                len: (HEADER_LEN + len as usize) as u32,
            },
            kind,
            payload: pos + HEADER_LEN..end,
        });
        pos = align_up(end as u64) as usize;
    }
    // `pos` may pass the slice's end by the last record's padding: the next
    // record starts there all the same.
    Ok((out, pos as u64))
}
