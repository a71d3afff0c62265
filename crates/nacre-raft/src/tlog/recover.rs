//! Recovery: rebuilding the log from its segment files when it is opened.
//! The ordering rules it relies on are in `tlog.rs`'s documentation and in
//! docs/tlog-format.md. `Tlog::recover` runs the steps in order, one
//! function each.

use std::collections::VecDeque;
use std::path::Path;

use nacre_vfs::VFile;
use raft::eraftpb::{Entry, SnapshotMetadata};

use super::{parse_segment_name, segment_name, Loc, Segment, Tlog};
use crate::error::TlogError;
use crate::record::{self, align_up, Framed, Kind, LogState, SegHeader, ALIGN, HEADER_LEN};

/// Replay state while recovering: the window of live entries may start above
/// the log start until a later compaction record explains the gap (older
/// segments were deleted), which `finish` checks.
struct Replay {
    state: LogState,
    last: u64,
    window_first: u64,
    index: VecDeque<Loc>,
}

impl Replay {
    fn from_header(h: &SegHeader) -> Replay {
        Replay {
            state: h.state.clone(),
            last: h.last_index,
            window_first: h.last_index + 1,
            index: VecDeque::new(),
        }
    }

    fn entry(&mut self, e: &Entry, loc: Loc) -> Result<(), &'static str> {
        if e.index <= self.state.start_index {
            return Err("entry at or below the log start");
        }
        if e.index > self.last + 1 {
            return Err("entry leaves a gap after the last index");
        }
        if self.index.is_empty() || e.index < self.window_first {
            // Either the first entry seen, or a truncation reaching below
            // the entries seen so far (which lie in deleted segments).
            self.index.clear();
            self.window_first = e.index;
        } else {
            self.index.truncate((e.index - self.window_first) as usize);
        }
        self.index.push_back(loc);
        self.last = e.index;
        Ok(())
    }

    fn compact(&mut self, index: u64, term: u64) {
        if index <= self.state.start_index {
            return;
        }
        self.state.start_index = index;
        self.state.start_term = term;
        while self.window_first <= index && !self.index.is_empty() {
            self.index.pop_front();
            self.window_first += 1;
        }
        if self.index.is_empty() {
            self.window_first = self.window_first.max(index + 1);
        }
        self.last = self.last.max(index);
    }

    fn snapshot(&mut self, meta: SnapshotMetadata) {
        self.index.clear();
        self.last = meta.index;
        self.window_first = meta.index + 1;
        self.state.start_index = meta.index;
        self.state.start_term = meta.term;
        self.state.conf_state = meta.get_conf_state().clone();
        self.state.snapshot = meta;
    }

    /// Every live entry must be accounted for.
    fn finish(self) -> Result<(LogState, VecDeque<Loc>), &'static str> {
        let complete = if self.index.is_empty() {
            self.last == self.state.start_index
        } else {
            self.window_first == self.state.start_index + 1
        };
        if !complete {
            return Err("live entries are missing (a segment was lost)");
        }
        Ok((self.state, self.index))
    }
}

fn read_all(file: &dyn VFile, len: u64, path: &Path) -> Result<Vec<u8>, TlogError> {
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(TlogError::io("read segment", path))?;
    Ok(bytes)
}

/// The first intact record at an aligned offset after a damaged record at
/// `from` that vouches for it, as (offset, synced_end): one written when its
/// segment was durable past `from`, which proves the damaged bytes had been
/// synced. Every record carries `synced_end`, and sync points are record
/// boundaries, so `synced_end > from` covers the whole damaged record.
///
/// Intact records that do not vouch are the rest of an unsynced write that a
/// power cut persisted out of order (a disk may keep later sectors of a write
/// and lose earlier ones): a torn tail, never acknowledged. The scan skips
/// over the body of each intact record it finds, so data inside an entry
/// cannot pose as a record and recovery stays linear.
fn vouching_record_after(bytes: &[u8], seq: u64, from: u64) -> Option<(u64, u64)> {
    let mut at = from + ALIGN;
    while at + HEADER_LEN as u64 <= bytes.len() as u64 {
        match record::unframe(bytes, at as usize, seq, at) {
            Some(f) if f.synced_end > from => return Some((at, f.synced_end)),
            Some(f) => at += align_up(u64::from(f.len)),
            None => at += ALIGN,
        }
    }
    None
}

/// The error for a damaged record at `offset` that a later record vouches
/// was synced.
fn damage(path: &Path, offset: u64, (later, synced_end): (u64, u64)) -> TlogError {
    TlogError::corrupt(
        path,
        offset,
        format!(
            "invalid record in synced data (the record at {later} was written when \
             {synced_end} bytes of the segment were synced)"
        ),
    )
}

fn decode_header_at0(bytes: &[u8], seq: u64, path: &Path) -> Result<Option<SegHeader>, TlogError> {
    let Some(f) = record::unframe(bytes, 0, seq, 0) else {
        return Ok(None);
    };
    if f.kind != Kind::Header {
        return Err(TlogError::corrupt(
            path,
            0,
            "segment does not start with a header",
        ));
    }
    match record::decode_header(f.payload) {
        Ok(h) if h.seq == seq => Ok(Some(h)),
        Ok(h) => Err(TlogError::corrupt(
            path,
            0,
            format!("segment header names segment {} instead", h.seq),
        )),
        Err(Ok(version)) => Err(TlogError::Format(format!(
            "{} has format version {version}, this build reads {}",
            path.display(),
            record::FORMAT_VERSION
        ))),
        Err(Err(e)) => Err(TlogError::corrupt(path, 0, e.0)),
    }
}

/// One segment of the chain recovery replays, with its header.
struct Link {
    seq: u64,
    seg: Segment,
    hdr: SegHeader,
}

impl Tlog {
    /// Rebuild the log from the segments in the directory: drop a newest
    /// segment torn at creation, follow the chain of headers, replay every
    /// record in order, zero a torn tail, then append after what is valid.
    pub(super) fn recover(&mut self) -> Result<(), TlogError> {
        let mut seqs = self.segment_seqs()?;
        if let Some(&newest) = seqs.last() {
            if self.remove_if_torn_at_creation(newest)? {
                seqs.pop();
            }
        }
        if seqs.is_empty() {
            return self.create_segment(1, 0, 0);
        }
        let chain = self.header_chain(&seqs)?;
        let mut replay = Replay::from_header(&chain[0].hdr);
        let mut valid_end = 0;
        for (k, link) in chain.iter().enumerate() {
            let end = chain.get(k + 1).map(|next| next.hdr.prev_end);
            valid_end = replay_segment(&mut replay, link, k > 0, end)?;
        }
        let (state, index) = replay
            .finish()
            .map_err(|what| TlogError::corrupt(&chain[0].seg.path, 0, what))?;
        self.install(chain, state, index, valid_end)
    }

    /// The numbers of the segment files in the directory, oldest first.
    fn segment_seqs(&self) -> Result<Vec<u64>, TlogError> {
        let mut seqs: Vec<u64> = self
            .vfs
            .list(&self.dir)
            .map_err(TlogError::io("list tlog directory", &self.dir))?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The newest segment may have been torn while it was being created:
    /// its header was never synced, so nothing in it ever was. Its header
    /// is synced before any other record goes in, so every later record
    /// vouches for it (synced_end > 0): one that does makes it corruption.
    /// Returns whether the segment was removed.
    fn remove_if_torn_at_creation(&self, newest: u64) -> Result<bool, TlogError> {
        let seg = self.open_segment(newest)?;
        let len = seg
            .file
            .len()
            .map_err(TlogError::io("stat segment", &seg.path))?;
        let bytes = read_all(&*seg.file, len, &seg.path)?;
        if decode_header_at0(&bytes, newest, &seg.path)?.is_some() {
            return Ok(false);
        }
        if let Some(later) = vouching_record_after(&bytes, newest, 0) {
            return Err(damage(&seg.path, 0, later));
        }
        tracing::warn!(path = %seg.path.display(), "removing a tlog segment torn while it was created");
        self.vfs
            .remove(&seg.path)
            .map_err(TlogError::io("remove torn segment", &seg.path))?;
        self.sync_dir()?;
        Ok(true)
    }

    /// Walk the chain of headers from the newest back. A segment whose
    /// successor does not name it as predecessor is left over from an
    /// interrupted compaction (a removal of a later one became durable
    /// first): the chain, and replay, start after it, and it is removed.
    /// Returns the chain oldest first; it is never empty.
    fn header_chain(&self, seqs: &[u64]) -> Result<Vec<Link>, TlogError> {
        let mut chain: Vec<Link> = Vec::new();
        let mut start = 0;
        for i in (0..seqs.len()).rev() {
            let link = self.read_header(seqs[i])?;
            let linked = i > 0 && link.hdr.prev_seq == seqs[i - 1];
            chain.push(link);
            if i > 0 && !linked {
                start = i;
                break;
            }
        }
        chain.reverse();
        if start > 0 {
            for &seq in &seqs[..start] {
                let path = self.dir.join(segment_name(seq));
                tracing::warn!(path = %path.display(), "removing a tlog segment left over from an interrupted compaction");
                self.vfs
                    .remove(&path)
                    .map_err(TlogError::io("remove old segment", &path))?;
            }
            self.sync_dir()?;
        }
        Ok(chain)
    }

    /// Open segment `seq` and read its header record, and nothing more.
    fn read_header(&self, seq: u64) -> Result<Link, TlogError> {
        let seg = self.open_segment(seq)?;
        let len = seg
            .file
            .len()
            .map_err(TlogError::io("stat segment", &seg.path))?;
        let mut head = vec![0u8; (HEADER_LEN as u64).min(len) as usize];
        seg.file
            .read_exact_at(&mut head, 0)
            .map_err(TlogError::io("read segment", &seg.path))?;
        // The payload length; a file too short to hold it fails below.
        let payload_len = head
            .get(8..12)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
        let want = (HEADER_LEN as u64 + payload_len).min(len);
        let bytes = read_all(&*seg.file, want, &seg.path)?;
        let hdr = decode_header_at0(&bytes, seq, &seg.path)?
            .ok_or_else(|| TlogError::corrupt(&seg.path, 0, "damaged segment header"))?;
        Ok(Link { seq, seg, hdr })
    }

    /// Make the recovered state current and append after `valid_end` in the
    /// newest segment. After a process crash the page cache may hold writes
    /// that are not durable yet; the recovered prefix is made durable before
    /// any record claims it is (synced_end), and the newest file's name
    /// with it.
    fn install(
        &mut self,
        mut chain: Vec<Link>,
        state: LogState,
        index: VecDeque<Loc>,
        valid_end: u64,
    ) -> Result<(), TlogError> {
        // `header_chain` never returns an empty chain.
        let last = chain.pop().expect("a segment");
        last.seg
            .file
            .sync_data()
            .map_err(TlogError::io("sync segment", &last.seg.path))?;
        self.sync_dir()?;
        for link in chain {
            self.segments.insert(link.seq, link.seg);
        }
        self.segments.insert(last.seq, last.seg);
        self.cur_seq = last.seq;
        self.cur_header_bytes =
            align_up(HEADER_LEN as u64 + record::encode_header(&last.hdr).len() as u64);
        self.flushed_bytes = valid_end;
        self.synced_bytes = valid_end;
        self.zeroed_bytes = valid_end;
        self.state = state;
        self.index = index;
        Ok(())
    }
}

/// Replay the records of one segment, up to `end` (where its successor's
/// header says its valid records end) or, for the newest segment (`None`),
/// to the end of its file, whose torn tail is zeroed. A segment that
/// `follows` another must have a header that agrees with the replay so
/// far. Returns where its valid records end.
fn replay_segment(
    replay: &mut Replay,
    link: &Link,
    follows: bool,
    end: Option<u64>,
) -> Result<u64, TlogError> {
    let seg = &link.seg;
    let file_len = seg
        .file
        .len()
        .map_err(TlogError::io("stat segment", &seg.path))?;
    let end_or_len = end.unwrap_or(file_len);
    if end_or_len > file_len {
        return Err(TlogError::corrupt(
            &seg.path,
            file_len,
            format!("segment is shorter than the {end_or_len} bytes its successor records"),
        ));
    }
    if follows
        && (link.hdr.last_index != replay.last
            || link.hdr.state.start_index != replay.state.start_index)
    {
        return Err(TlogError::corrupt(
            &seg.path,
            0,
            "segment header disagrees with the log before it",
        ));
    }
    let bytes = read_all(&*seg.file, end_or_len, &seg.path)?;
    let mut at = 0u64;
    while at < end_or_len {
        let Some(f) = record::unframe(&bytes, at as usize, link.seq, at) else {
            break;
        };
        replay_record(replay, link, at, &f)?;
        at += align_up(u64::from(f.len));
    }
    match end {
        Some(_) if at != end_or_len => Err(TlogError::corrupt(
            &seg.path,
            at,
            "invalid record inside a completed segment",
        )),
        Some(_) => Ok(at),
        None => {
            zero_torn_tail(link, &bytes, at)?;
            Ok(at)
        }
    }
}

/// Apply one record, found at `at` in `link`'s segment, to the replay.
fn replay_record(
    replay: &mut Replay,
    link: &Link,
    at: u64,
    f: &Framed<'_>,
) -> Result<(), TlogError> {
    let bad = |what: &str| TlogError::corrupt(&link.seg.path, at, what.to_string());
    match f.kind {
        Kind::Header if at == 0 => replay.state = link.hdr.state.clone(),
        Kind::Header => return Err(bad("segment header in the middle of a segment")),
        _ if at == 0 => return Err(bad("segment does not start with a header")),
        Kind::Entry => {
            let e = record::decode_entry(f.payload).map_err(|e| bad(e.0))?;
            let loc = Loc {
                term: e.term,
                seq: link.seq,
                offset: at,
                len: f.len,
            };
            replay.entry(&e, loc).map_err(bad)?;
        }
        Kind::HardState => {
            replay.state.hard_state = record::decode_hard_state(f.payload).map_err(|e| bad(e.0))?;
        }
        Kind::ConfState => {
            replay.state.conf_state = record::decode_conf_state(f.payload).map_err(|e| bad(e.0))?;
        }
        Kind::Snapshot => {
            replay.snapshot(record::decode_snapshot(f.payload).map_err(|e| bad(e.0))?);
        }
        Kind::Compact => {
            let (index, term) = record::decode_compact(f.payload).map_err(|e| bad(e.0))?;
            if index > replay.last {
                return Err(bad("compaction past the last entry"));
            }
            replay.compact(index, term);
        }
    }
    Ok(())
}

/// The newest segment past its last valid record, at `at`: zeros are the
/// zero-fill ahead of the head (or an earlier torn tail, zeroed), the
/// clean end of the log. Anything else is corruption if a later record
/// vouches for it, and otherwise a torn tail: writes that were never
/// synced, possibly with intact records of the same write after the
/// damage. It is zeroed all, so that no stale record past the new end can
/// ever line up with records written from here on.
fn zero_torn_tail(link: &Link, bytes: &[u8], at: u64) -> Result<(), TlogError> {
    // The last record's padding may reach past the end of the file.
    let tail = bytes.get(at as usize..).unwrap_or(&[]);
    if tail.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let path = &link.seg.path;
    if let Some(later) = vouching_record_after(bytes, link.seq, at) {
        return Err(damage(path, at, later));
    }
    tracing::warn!(path = %path.display(), offset = at, "discarding the torn tail of the tlog");
    link.seg
        .file
        .write_all_at(&vec![0u8; tail.len()], at)
        .map_err(TlogError::io("zero torn tail", path))
}
