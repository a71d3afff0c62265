//! Opening a log: read every segment's header, find the newest root record
//! the rules of docs/store-format.md let us trust, and start a fresh head
//! segment after it. Each step has a function of its own; `Log::open` runs
//! them in order.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nacre_vfs::{VFile, Vfs};

use super::format::{parse_segment_name, read_header_any_size, segment_name, RootRec, SegHeader};
use super::scan::{has_valid_records, scan_segment};
use super::{Log, Recovered, SegTable, Segment, SEG_HEADER_PAYLOAD};
use crate::error::{Error, Result};
use crate::record::{align_up, HEADER_LEN};

/// A segment file found on open, with its checked header.
struct Found {
    id: u64,
    file: Arc<dyn VFile>,
    hdr: SegHeader,
}

/// The newest trusted root, where it lives, and where the valid records of
/// the newest segment end.
struct RootFound {
    root: Option<(u64, RootRec)>,
    newest_valid_end: u64,
}

impl Log {
    /// Open the log in `dir`, creating a new store if it holds no segments.
    pub fn open(dir: &Path, vfs: Arc<dyn Vfs>, seg_size_new: u64) -> Result<Recovered> {
        let ids = segment_ids(dir, &*vfs)?;
        if ids.is_empty() {
            return Self::create(dir, vfs, seg_size_new);
        }
        let segments = read_headers(dir, &*vfs, &ids, seg_size_new)?;
        if segments.is_empty() {
            // The only segment was torn while the store was being created:
            // nothing was ever committed.
            return Self::create(dir, vfs, seg_size_new);
        }
        let seg_size = segments[0].hdr.seg_size;
        let store_id = segments[0].hdr.store_id;
        let found = find_root(&segments, seg_size)?;
        if found.root.is_none() && creation_was_interrupted(&segments, found.newest_valid_end) {
            // The store was being created when the process stopped: its
            // first segment never got its first root. Nothing was committed.
            tracing::warn!("store creation was interrupted; creating it again");
            drop(segments);
            vfs.remove(&dir.join(segment_name(1)))
                .map_err(Error::io("remove unfinished segment"))?;
            return Self::create(dir, vfs, seg_size_new);
        }
        let (root_addr, root) = found
            .root
            .ok_or_else(|| Error::corrupt(0, "no valid root record in the log"))?;
        let table: SegTable = segments
            .into_iter()
            .map(|s| {
                let seg = Segment {
                    id: s.id,
                    file: s.file,
                    prev_end: s.hdr.prev_end,
                };
                (s.id, Arc::new(seg))
            })
            .collect();
        // `segments` was not empty, so neither is the table.
        let last = table.values().next_back().expect("a segment").clone();
        let head_end = found.newest_valid_end;
        let log = Log::with_head(dir, vfs, seg_size, store_id, table, last, head_end);
        log.resume_after(root_addr)?;
        Ok(Recovered { log, root })
    }

    /// Trust everything up to the root at `root_addr`, and start a fresh
    /// head segment: never append after a possibly torn tail.
    fn resume_after(&self, root_addr: u64) -> Result<()> {
        self.synced_upto.store(root_addr, Ordering::Release);
        self.sync.lock().synced_upto = root_addr;
        let mut app = self.app.lock();
        self.roll(&mut app)
    }
}

/// The ids of the segment files in `dir`, oldest first.
fn segment_ids(dir: &Path, vfs: &dyn Vfs) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = vfs
        .list(dir)
        .map_err(Error::io("list store directory"))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Open every segment and read its header. Only the newest may be
/// unreadable: it was being created when the process stopped and holds
/// nothing durable, so it is removed; any other bad header is corruption.
fn read_headers(dir: &Path, vfs: &dyn Vfs, ids: &[u64], seg_size_new: u64) -> Result<Vec<Found>> {
    let mut segments: Vec<Found> = Vec::new();
    let newest = ids.last().copied();
    for &id in ids {
        let path = dir.join(segment_name(id));
        let file = vfs.open(&path, false).map_err(Error::io("open segment"))?;
        // The header's own position is id * seg_size, which needs the
        // segment size; take it from the header itself, then check.
        let hdr = match read_header_any_size(&*file, id) {
            Ok(h) => h,
            Err(e @ Error::Corruption { .. })
                if Some(id) == newest
                    && !has_valid_records(
                        &*file,
                        id,
                        segments.first().map_or(seg_size_new, |s| s.hdr.seg_size),
                    )? =>
            {
                tracing::warn!(segment = id, error = %e, "dropping newest segment with a torn header");
                drop(file);
                vfs.remove(&path)
                    .map_err(Error::io("remove torn segment"))?;
                vfs.sync_dir(dir)
                    .map_err(Error::io("sync store directory"))?;
                continue;
            }
            Err(e) => return Err(e),
        };
        check_header(dir, id, &hdr, segments.first().map(|s| &s.hdr))?;
        segments.push(Found { id, file, hdr });
    }
    Ok(segments)
}

/// A header must name its own file and agree with the first segment's on
/// the store and the segment size.
fn check_header(dir: &Path, id: u64, hdr: &SegHeader, first: Option<&SegHeader>) -> Result<()> {
    if hdr.seg_id != id {
        return Err(Error::corrupt(
            0,
            format!("segment file {id} claims id {}", hdr.seg_id),
        ));
    }
    if let Some(first) = first {
        if first.store_id != hdr.store_id || first.seg_size != hdr.seg_size {
            return Err(Error::Format(format!(
                "segment {id} belongs to another store (mixed files in {})",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Find the newest trusted root, from the newest segment backwards.
fn find_root(segments: &[Found], seg_size: u64) -> Result<RootFound> {
    let mut newest_valid_end = 0u64;
    for i in (0..segments.len()).rev() {
        let is_newest = i + 1 == segments.len();
        // A completed segment's valid records end where the next one's
        // header says; the newest one's, wherever its scan stops.
        let end = segments.get(i + 1).map(|next| next.hdr.prev_end);
        let (valid_end, last_root) = scan_one(&segments[i], seg_size, end)?;
        if is_newest {
            newest_valid_end = valid_end;
        }
        if let Some(r) = last_root {
            return Ok(RootFound {
                root: Some(r),
                newest_valid_end,
            });
        }
    }
    Ok(RootFound {
        root: None,
        newest_valid_end,
    })
}

/// Scan one segment up to `end` (the newest segment: `None`, its whole
/// file) and check that its damage, if any, is a torn tail: returns where
/// its valid records end and its last root.
fn scan_one(seg: &Found, seg_size: u64, end: Option<u64>) -> Result<(u64, Option<(u64, RootRec)>)> {
    let base = seg.id * seg_size;
    let file_len = seg.file.len().map_err(Error::io("stat segment"))?;
    let end_or_len = end.unwrap_or(file_len);
    if end_or_len > file_len || end_or_len > seg_size {
        return Err(Error::corrupt(
            base,
            "segment shorter than its recorded end",
        ));
    }
    let mut bytes = vec![0u8; end_or_len as usize];
    seg.file
        .read_exact_at(&mut bytes, 0)
        .map_err(Error::io("read segment"))?;
    let scan = scan_segment(&bytes, base)?;
    match end {
        None => {
            // A root past the torn point that vouches for bytes beyond it
            // proves those bytes were once durable: this is corruption,
            // not a torn tail.
            if let Some(bad) = scan.late_root_synced_upto {
                if bad > base + scan.valid_end {
                    return Err(Error::corrupt(
                        base + scan.valid_end,
                        "invalid record inside data a later root says was synced",
                    ));
                }
            }
        }
        Some(end) if scan.valid_end != end => {
            return Err(Error::corrupt(
                base + scan.valid_end,
                "invalid record inside a completed segment",
            ));
        }
        Some(_) => {}
    }
    Ok((scan.valid_end, scan.last_root))
}

/// No root anywhere, one segment, the first, holding nothing past its
/// header: the store's creation stopped before its first root was durable.
fn creation_was_interrupted(segments: &[Found], newest_valid_end: u64) -> bool {
    let header_end = align_up((HEADER_LEN + SEG_HEADER_PAYLOAD) as u64);
    segments.len() == 1 && segments[0].id == 1 && newest_valid_end <= header_end
}
