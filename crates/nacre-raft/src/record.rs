//! Record framing and payload codecs of the tlog.
//!
//! Every byte of a segment file travels in one envelope:
//!
//! ```text
//! offset size field
//!  0      4   magic        0x314C_544E ("NTL1" as little-endian bytes)
//!  4      1   kind         see `Kind`
//!  5      3   reserved     zero
//!  8      4   payload_len  bytes of payload after this header
//! 12      8   synced_end   bytes of this segment known durable when the
//!                          record was written (recovery uses it to tell a
//!                          torn tail from corruption)
//! 20      4   crc32c       over (segment number u64 LE) ++ (offset u64 LE)
//!                          ++ bytes 0..20 ++ payload
//! 24      -   payload
//! ```
//!
//! Records start at 8-byte aligned offsets; the gap to the next record is
//! zero padding. The checksum covers the segment's number and the record's
//! own offset, so a record copied or misdirected to another place fails it,
//! and stale bytes left in a file cannot pass for a record written later.
//! Payloads use our own little-endian encoding (not protobuf), so the format
//! does not move when the raft crate's message definitions do.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, SnapshotMetadata};

pub const MAGIC: u32 = 0x314C_544E;
pub const HEADER_LEN: usize = 24;
pub const ALIGN: u64 = 8;
pub const FORMAT_VERSION: u32 = 1;
/// Fixed part of an entry payload: index, term, type, two lengths.
pub const ENTRY_FIXED_BYTES: u64 = 8 + 8 + 1 + 4 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// First record of every segment: chain links and a full copy of the
    /// log's state, so deleting older segments never loses it.
    Header = 1,
    Entry = 2,
    HardState = 3,
    ConfState = 4,
    /// A snapshot was installed: every entry is dropped.
    Snapshot = 5,
    /// Entries up to an index are no longer needed.
    Compact = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Entry,
            3 => Kind::HardState,
            4 => Kind::ConfState,
            5 => Kind::Snapshot,
            6 => Kind::Compact,
            _ => return None,
        })
    }
}

pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn checksum(seq: u64, offset: u64, head: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    let c = crc32c::crc32c_append(c, &offset.to_le_bytes());
    let c = crc32c::crc32c_append(c, head);
    crc32c::crc32c_append(c, payload)
}

/// Append one framed record (header, payload, padding) to `out`, whose first
/// byte sits at `base` in segment `seq`. Returns the record's offset and its
/// length without padding.
pub fn frame(
    out: &mut Vec<u8>,
    base: u64,
    seq: u64,
    kind: Kind,
    synced_end: u64,
    payload: &[u8],
) -> (u64, u32) {
    debug_assert_eq!(align_up(base + out.len() as u64), base + out.len() as u64);
    let offset = base + out.len() as u64;
    let mut head = [0u8; HEADER_LEN];
    head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    head[4] = kind as u8;
    head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[12..20].copy_from_slice(&synced_end.to_le_bytes());
    let crc = checksum(seq, offset, &head[0..20], payload);
    head[20..24].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let len = HEADER_LEN + payload.len();
    let padded = align_up(len as u64) as usize;
    out.resize(out.len() + padded - len, 0);
    (offset, len as u32)
}

/// A record whose header and checksum are intact.
#[derive(Debug)]
pub struct Framed<'a> {
    pub kind: Kind,
    pub synced_end: u64,
    pub payload: &'a [u8],
    /// Header plus payload, without padding.
    pub len: u32,
}

/// Check the record at `offset` of `bytes` (a whole segment image, or a
/// buffer holding exactly one record when `offset` names its position):
/// `None` if anything is off, so the caller decides whether that is a torn
/// tail or corruption.
pub fn unframe(bytes: &[u8], at: usize, seq: u64, offset: u64) -> Option<Framed<'_>> {
    let head = bytes.get(at..at.checked_add(HEADER_LEN)?)?;
    if u32::from_le_bytes(head[0..4].try_into().ok()?) != MAGIC || head[5..8] != [0, 0, 0] {
        return None;
    }
    let kind = Kind::from_u8(head[4])?;
    let payload_len = u32::from_le_bytes(head[8..12].try_into().ok()?);
    let start = at + HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(payload_len as usize)?)?;
    let stored = u32::from_le_bytes(head[20..24].try_into().ok()?);
    if checksum(seq, offset, &head[0..20], payload) != stored {
        return None;
    }
    Some(Framed {
        kind,
        synced_end: u64::from_le_bytes(head[12..20].try_into().ok()?),
        payload,
        len: (HEADER_LEN as u32).checked_add(payload_len)?,
    })
}

/// The decoded first record of a segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegHeader {
    pub seq: u64,
    /// Number of the segment this one follows, 0 for the first ever.
    pub prev_seq: u64,
    /// Where the valid records of segment `prev_seq` end.
    pub prev_end: u64,
    /// The log's last index when this segment was started.
    pub last_index: u64,
    pub state: LogState,
}

/// Everything besides entries that the log remembers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogState {
    /// The last discarded index and its term: entries start after it.
    pub start_index: u64,
    pub start_term: u64,
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub snapshot: SnapshotMetadata,
}

/// A malformed payload inside a record whose checksum is intact.
#[derive(Debug)]
pub struct DecodeError(pub &'static str);

/// Bounds-checked little-endian cursor, so a malformed payload is an error
/// rather than a panic.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError("payload shorter than its fields"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }

    fn u64s(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.u32()? as usize;
        // The count is checked against the bytes present before allocating.
        if n > (self.buf.len() - self.pos) / 8 {
            return Err(DecodeError("list longer than its payload"));
        }
        (0..n).map(|_| self.u64()).collect()
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError("payload has trailing bytes"))
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64s(out: &mut Vec<u8>, vs: &[u64]) {
    put_u32(out, vs.len() as u32);
    for &v in vs {
        put_u64(out, v);
    }
}

/// Bytes `encode_entry` produces for `e`.
pub fn entry_payload_bytes(e: &Entry) -> u64 {
    ENTRY_FIXED_BYTES + e.data.len() as u64 + e.context.len() as u64
}

pub fn encode_entry(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.index);
    put_u64(out, e.term);
    out.push(e.entry_type as u8);
    put_u32(out, e.data.len() as u32);
    out.extend_from_slice(&e.data);
    put_u32(out, e.context.len() as u32);
    out.extend_from_slice(&e.context);
}

pub fn decode_entry(payload: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader::new(payload);
    let mut e = Entry {
        index: r.u64()?,
        term: r.u64()?,
        ..Default::default()
    };
    e.entry_type = match r.u8()? {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(DecodeError("unknown entry type")),
    };
    let n = r.u32()? as usize;
    e.data = r.bytes(n)?.to_vec().into();
    let n = r.u32()? as usize;
    e.context = r.bytes(n)?.to_vec().into();
    r.finish()?;
    Ok(e)
}

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    put_u64(out, hs.term);
    put_u64(out, hs.vote);
    put_u64(out, hs.commit);
}

fn read_hard_state(r: &mut Reader<'_>) -> Result<HardState, DecodeError> {
    Ok(HardState {
        term: r.u64()?,
        vote: r.u64()?,
        commit: r.u64()?,
        ..Default::default()
    })
}

fn put_conf_state(out: &mut Vec<u8>, cs: &ConfState) {
    put_u64s(out, &cs.voters);
    put_u64s(out, &cs.learners);
    put_u64s(out, &cs.voters_outgoing);
    put_u64s(out, &cs.learners_next);
    out.push(u8::from(cs.auto_leave));
}

fn read_conf_state(r: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    Ok(ConfState {
        voters: r.u64s()?,
        learners: r.u64s()?,
        voters_outgoing: r.u64s()?,
        learners_next: r.u64s()?,
        auto_leave: match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError("auto_leave is not a bool")),
        },
        ..Default::default()
    })
}

fn put_snapshot(out: &mut Vec<u8>, meta: &SnapshotMetadata) {
    put_u64(out, meta.index);
    put_u64(out, meta.term);
    put_conf_state(out, meta.get_conf_state());
}

fn read_snapshot(r: &mut Reader<'_>) -> Result<SnapshotMetadata, DecodeError> {
    let index = r.u64()?;
    let term = r.u64()?;
    Ok(snapshot_meta(index, term, read_conf_state(r)?))
}

/// Snapshot metadata in the one form the tlog keeps: protobuf tells an absent
/// conf state from an empty one, the encoding does not, so an empty one is
/// always absent.
pub fn snapshot_meta(index: u64, term: u64, cs: ConfState) -> SnapshotMetadata {
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    if cs != ConfState::default() {
        meta.set_conf_state(cs);
    }
    meta
}

pub fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    put_hard_state(&mut out, hs);
    out
}

pub fn decode_hard_state(payload: &[u8]) -> Result<HardState, DecodeError> {
    let mut r = Reader::new(payload);
    let hs = read_hard_state(&mut r)?;
    r.finish()?;
    Ok(hs)
}

pub fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    let mut out = Vec::new();
    put_conf_state(&mut out, cs);
    out
}

pub fn decode_conf_state(payload: &[u8]) -> Result<ConfState, DecodeError> {
    let mut r = Reader::new(payload);
    let cs = read_conf_state(&mut r)?;
    r.finish()?;
    Ok(cs)
}

pub fn encode_snapshot(meta: &SnapshotMetadata) -> Vec<u8> {
    let mut out = Vec::new();
    put_snapshot(&mut out, meta);
    out
}

pub fn decode_snapshot(payload: &[u8]) -> Result<SnapshotMetadata, DecodeError> {
    let mut r = Reader::new(payload);
    let meta = read_snapshot(&mut r)?;
    r.finish()?;
    Ok(meta)
}

pub fn encode_compact(index: u64, term: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_u64(&mut out, index);
    put_u64(&mut out, term);
    out
}

pub fn decode_compact(payload: &[u8]) -> Result<(u64, u64), DecodeError> {
    let mut r = Reader::new(payload);
    let v = (r.u64()?, r.u64()?);
    r.finish()?;
    Ok(v)
}

pub fn encode_header(h: &SegHeader) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, FORMAT_VERSION);
    put_u32(&mut out, 0);
    put_u64(&mut out, h.seq);
    put_u64(&mut out, h.prev_seq);
    put_u64(&mut out, h.prev_end);
    put_u64(&mut out, h.last_index);
    put_u64(&mut out, h.state.start_index);
    put_u64(&mut out, h.state.start_term);
    put_hard_state(&mut out, &h.state.hard_state);
    put_conf_state(&mut out, &h.state.conf_state);
    put_snapshot(&mut out, &h.state.snapshot);
    out
}

/// Decode a header payload; a version other than ours is `Err(Ok(v))`.
pub fn decode_header(payload: &[u8]) -> Result<SegHeader, Result<u32, DecodeError>> {
    let mut r = Reader::new(payload);
    let version = r.u32().map_err(Err)?;
    if version != FORMAT_VERSION {
        return Err(Ok(version));
    }
    let inner = |r: &mut Reader<'_>| -> Result<SegHeader, DecodeError> {
        if r.u32()? != 0 {
            return Err(DecodeError("reserved header field is not zero"));
        }
        let h = SegHeader {
            seq: r.u64()?,
            prev_seq: r.u64()?,
            prev_end: r.u64()?,
            last_index: r.u64()?,
            state: LogState {
                start_index: r.u64()?,
                start_term: r.u64()?,
                hard_state: read_hard_state(r)?,
                conf_state: read_conf_state(r)?,
                snapshot: read_snapshot(r)?,
            },
        };
        r.finish()?;
        Ok(h)
    };
    inner(&mut r).map_err(Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_every_bit_flip_is_caught() {
        let mut out = Vec::new();
        let (off, len) = frame(&mut out, 64, 7, Kind::Compact, 40, b"some payload");
        assert_eq!(off, 64);
        assert_eq!(len as usize, HEADER_LEN + 12);
        assert_eq!(out.len() % ALIGN as usize, 0);
        let f = unframe(&out, 0, 7, 64).unwrap();
        assert_eq!(
            (f.kind, f.synced_end, f.payload),
            (Kind::Compact, 40, &b"some payload"[..])
        );
        // Another position or segment fails the checksum.
        assert!(unframe(&out, 0, 8, 64).is_none());
        assert!(unframe(&out, 0, 7, 72).is_none());
        for bit in 0..len as usize * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(unframe(&bad, 0, 7, 64).is_none(), "bit {bit}");
        }
        // Truncation anywhere is caught.
        for cut in 0..len as usize {
            assert!(unframe(&out[..cut], 0, 7, 64).is_none());
        }
    }

    #[test]
    fn payload_codecs_round_trip() {
        let mut e = Entry {
            index: 5,
            term: 3,
            entry_type: EntryType::EntryConfChangeV2,
            ..Default::default()
        };
        e.data = b"data".to_vec().into();
        e.context = b"ctx".to_vec().into();
        let mut buf = Vec::new();
        encode_entry(&mut buf, &e);
        assert_eq!(buf.len() as u64, entry_payload_bytes(&e));
        assert_eq!(decode_entry(&buf).unwrap(), e);
        assert!(decode_entry(&buf[..buf.len() - 1]).is_err());

        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: vec![1],
            learners_next: vec![5, 6],
            auto_leave: true,
            ..Default::default()
        };
        assert_eq!(decode_conf_state(&encode_conf_state(&cs)).unwrap(), cs);
        let mut meta = SnapshotMetadata {
            index: 9,
            term: 2,
            ..Default::default()
        };
        meta.set_conf_state(cs.clone());
        assert_eq!(decode_snapshot(&encode_snapshot(&meta)).unwrap(), meta);
        let hs = HardState {
            term: 1,
            vote: 2,
            commit: 3,
            ..Default::default()
        };
        assert_eq!(decode_hard_state(&encode_hard_state(&hs)).unwrap(), hs);
        assert_eq!(decode_compact(&encode_compact(4, 5)).unwrap(), (4, 5));
        let h = SegHeader {
            seq: 10,
            prev_seq: 3,
            prev_end: 4096,
            last_index: 12,
            state: LogState {
                start_index: 8,
                start_term: 2,
                hard_state: hs,
                conf_state: cs,
                snapshot: meta,
            },
        };
        let enc = encode_header(&h);
        assert_eq!(decode_header(&enc).unwrap(), h);
        let mut v2 = enc.clone();
        v2[0] = 2;
        assert!(matches!(decode_header(&v2), Err(Ok(2))));
        // A huge list count is refused without allocating.
        let mut bogus = Vec::new();
        put_u32(&mut bogus, u32::MAX);
        assert!(decode_conf_state(&bogus).is_err());
    }
}
