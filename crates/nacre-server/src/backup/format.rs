//! The backup file (version 1): writing one from a read snapshot of the
//! store, a chunk at a time, and reading one back, checked.
//!
//! Every pair of one read snapshot of the store, in key order, in all
//! namespaces (user keys, scripts, and the replicated records: members,
//! leases, sessions, the applied index, etcd's revisions), but not the
//! node's own records (`m/local/`), which a restored node writes itself.
//! All integers little-endian.
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `NACREBK1` |
//! | 8 | applied index of the snapshot |
//! | 8 | etcd revision of the snapshot |
//! | 8 | number of pairs |
//! | per pair | key length (u32), value length (u32), key, value |
//! | 0 to 511 | zeros, up to a multiple of 512 bytes |
//! | 32 | SHA-256 of everything before it |
//!
//! The padding and the trailing SHA-256 are what `etcdctl snapshot save`
//! checks for (a size of 512·n + 32 bytes), and the same layout etcd's own
//! snapshots have; `etcdctl snapshot restore` cannot use the file (it
//! expects etcd's bbolt database), `nacre snapshot restore` can.

use std::io::Read;

use bytes::Bytes;
use nacre_proto::{ErrorCode, ErrorReply};
use nacre_store::Store;
use sha2::{Digest, Sha256};

use crate::state::{
    check_snapshot_pair, is_local_key, read_applied, read_revision, StateError, USER_NS,
};

/// A chunk the writer hands out is at most this long.
pub const CHUNK_BYTES: usize = 64 << 10;
/// The first bytes of a backup.
pub const BACKUP_MAGIC: &[u8; 8] = b"NACREBK1";
const HEADER_BYTES: u64 = 32;
/// A backup's body is padded to a multiple of this.
const PAD_BYTES: u64 = 512;
/// The trailer: a SHA-256 of the body.
pub const SHA_BYTES: usize = 32;

/// Why a backup could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BackupWriteError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("a stored pair of {0} bytes: over the format's 4 GiB per key or value")]
    PairTooLarge(usize),
    /// A read snapshot never changes: this is a bug (or a broken store).
    #[error("the snapshot changed between sizing the backup and writing it")]
    SnapshotChanged,
}

impl From<BackupWriteError> for ErrorReply {
    fn from(e: BackupWriteError) -> ErrorReply {
        match e {
            BackupWriteError::State(e) => e.to_reply(),
            e => ErrorReply::new(ErrorCode::Internal, e.to_string()),
        }
    }
}

/// Writes a backup of one read snapshot, a chunk at a time: it holds the
/// snapshot and at most one chunk of encoded pairs, never the whole store.
pub struct BackupWriter {
    pairs: nacre_store::Iter,
    sha: Sha256,
    /// The body's length (header, pairs, padding), from a first pass.
    body_bytes: u64,
    /// Bytes encoded into `pending` so far.
    encoded: u64,
    /// Body bytes handed out so far.
    sent: u64,
    /// Encoded and not handed out yet.
    pending: Vec<u8>,
    pairs_done: bool,
    /// The trailer, once the body has all been handed out.
    sha256: Option<[u8; SHA_BYTES]>,
    trailer_sent: bool,
    applied: u64,
    revision: u64,
    count: u64,
}

impl BackupWriter {
    /// Takes the snapshot and sizes the backup (a first pass over it, so
    /// that each chunk can say how many bytes remain, as etcd's do).
    pub fn start(store: &Store) -> Result<BackupWriter, BackupWriteError> {
        let txn = store.begin_read();
        let applied = read_applied(&txn)?;
        let (revision, _) = read_revision(&txn)?;
        let (mut count, mut bytes) = (0u64, 0u64);
        txn.scan(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
            |k, v| {
                if !is_local_key(k) {
                    count += 1;
                    bytes += 8 + k.len() as u64 + v.len() as u64;
                }
                true
            },
        )
        .map_err(StateError::from)?;
        let mut pending = Vec::with_capacity(CHUNK_BYTES + HEADER_BYTES as usize);
        pending.extend_from_slice(BACKUP_MAGIC);
        for n in [applied, revision, count] {
            pending.extend_from_slice(&n.to_le_bytes());
        }
        Ok(BackupWriter {
            pairs: txn.iter(),
            sha: Sha256::new(),
            body_bytes: padded(HEADER_BYTES + bytes),
            encoded: HEADER_BYTES,
            sent: 0,
            pending,
            pairs_done: false,
            sha256: None,
            trailer_sent: false,
            applied,
            revision,
            count,
        })
    }

    /// The applied index of the snapshot.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// etcd's revision at that index.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Pairs the backup holds.
    pub fn pairs(&self) -> u64 {
        self.count
    }

    /// Bytes of the whole file, trailer included.
    pub fn file_bytes(&self) -> u64 {
        self.body_bytes + SHA_BYTES as u64
    }

    /// The trailer, once [`BackupWriter::next_chunk`] has handed it out.
    pub fn sha256(&self) -> Option<[u8; SHA_BYTES]> {
        self.sha256.filter(|_| self.trailer_sent)
    }

    /// The next chunk (at most [`CHUNK_BYTES`]) and the body bytes that
    /// remain after it; after the body, the SHA-256 (remaining 0); then
    /// `None`.
    pub fn next_chunk(&mut self) -> Result<Option<(Bytes, u64)>, BackupWriteError> {
        while self.pending.len() < CHUNK_BYTES && !self.pairs_done {
            self.encode_next()?;
        }
        if self.pending.is_empty() {
            if self.trailer_sent {
                return Ok(None);
            }
            let sha: [u8; SHA_BYTES] = std::mem::take(&mut self.sha).finalize().into();
            self.sha256 = Some(sha);
            self.trailer_sent = true;
            return Ok(Some((Bytes::copy_from_slice(&sha), 0)));
        }
        let n = self.pending.len().min(CHUNK_BYTES);
        let chunk: Vec<u8> = self.pending.drain(..n).collect();
        self.sha.update(&chunk);
        self.sent += n as u64;
        assert!(
            self.sent <= self.body_bytes,
            "handed out more than the body"
        );
        Ok(Some((
            chunk.into(),
            self.body_bytes.saturating_sub(self.sent),
        )))
    }

    /// Encodes the next pair into `pending`, or the padding after the last.
    fn encode_next(&mut self) -> Result<(), BackupWriteError> {
        match self.pairs.next() {
            Some(Ok((k, _))) if is_local_key(&k) => {}
            Some(Ok((k, v))) => {
                let before = self.pending.len();
                for part in [&k, &v] {
                    let len = u32::try_from(part.len())
                        .map_err(|_| BackupWriteError::PairTooLarge(part.len()))?;
                    self.pending.extend_from_slice(&len.to_le_bytes());
                }
                self.pending.extend_from_slice(&k);
                self.pending.extend_from_slice(&v);
                self.encoded += (self.pending.len() - before) as u64;
            }
            Some(Err(e)) => return Err(StateError::from(e).into()),
            None => {
                self.pairs_done = true;
                let pad = padded(self.encoded) - self.encoded;
                self.pending.resize(self.pending.len() + pad as usize, 0);
                self.encoded += pad;
                if self.encoded != self.body_bytes {
                    return Err(BackupWriteError::SnapshotChanged);
                }
            }
        }
        Ok(())
    }
}

pub(super) fn padded(n: u64) -> u64 {
    n.div_ceil(PAD_BYTES) * PAD_BYTES
}

/// What a backup holds, besides its pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupInfo {
    /// The raft index the snapshot had applied: the revision of its
    /// newest write.
    pub applied: u64,
    /// etcd's store revision at that index.
    pub revision: u64,
    /// Stored pairs, all namespaces.
    pub pairs: u64,
    /// Pairs in the user keyspace: the keys a client sees.
    pub user_keys: u64,
    /// Bytes of the whole file, trailer included.
    pub size_bytes: u64,
    /// The trailer, which matched the contents.
    pub sha256: [u8; SHA_BYTES],
}

/// Why a backup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading the backup: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a Nacre backup (it does not start with {BACKUP_MAGIC:?})")]
    NotABackup,
    #[error("the backup ends early, in {0}")]
    Truncated(&'static str),
    #[error("the backup's padding holds data")]
    BadPadding,
    #[error("bytes after the backup's checksum")]
    TrailingBytes,
    #[error("the backup's SHA-256 does not match its contents: it is damaged")]
    Checksum,
    #[error("pair {index}: {why}")]
    BadPair { index: u64, why: String },
}

/// A stored key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Reads a backup pair by pair, hashing as it goes; [`BackupReader::finish`]
/// checks the padding and the checksum. Until `finish` returns `Ok`, the
/// pairs read must be taken as provisional.
pub struct BackupReader<R> {
    inner: R,
    sha: Sha256,
    read: u64,
    applied: u64,
    revision: u64,
    pairs: u64,
    user_keys: u64,
    next: u64,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the header.
    pub fn new(inner: R) -> Result<BackupReader<R>, BackupError> {
        let mut r = BackupReader {
            inner,
            sha: Sha256::new(),
            read: 0,
            applied: 0,
            revision: 0,
            pairs: 0,
            user_keys: 0,
            next: 0,
        };
        let head = r.exact(HEADER_BYTES as usize, "its header")?;
        if &head[..8] != BACKUP_MAGIC {
            return Err(BackupError::NotABackup);
        }
        r.applied = u64_at(&head, 8);
        r.revision = u64_at(&head, 16);
        r.pairs = u64_at(&head, 24);
        Ok(r)
    }

    /// The applied index the header states.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The next pair, checked as a leader's snapshot is
    /// ([`check_snapshot_pair`]); `None` after the last.
    pub fn next_pair(&mut self) -> Result<Option<Pair>, BackupError> {
        if self.next == self.pairs {
            return Ok(None);
        }
        let index = self.next;
        let klen = self.u32("a pair")?;
        let vlen = self.u32("a pair")?;
        let key = self.exact(klen as usize, "a pair")?;
        let value = self.exact(vlen as usize, "a pair")?;
        let bad = |why: String| BackupError::BadPair { index, why };
        check_snapshot_pair(&key, &value).map_err(|e| bad(e.to_string()))?;
        if is_local_key(&key) {
            return Err(bad("a node-local record".into()));
        }
        if key.first() == Some(&USER_NS) {
            self.user_keys += 1;
        }
        self.next += 1;
        Ok(Some((key, value)))
    }

    /// Checks the padding, the checksum and the end of the file, once
    /// every pair has been read.
    pub fn finish(&mut self) -> Result<BackupInfo, BackupError> {
        assert_eq!(self.next, self.pairs, "finish before the last pair");
        let pad = padded(self.read) - self.read;
        if self
            .exact(pad as usize, "its padding")?
            .iter()
            .any(|b| *b != 0)
        {
            return Err(BackupError::BadPadding);
        }
        let want: [u8; SHA_BYTES] = std::mem::take(&mut self.sha).finalize().into();
        let mut got = [0u8; SHA_BYTES];
        self.inner
            .read_exact(&mut got)
            .map_err(|_| BackupError::Truncated("its checksum"))?;
        if got != want {
            return Err(BackupError::Checksum);
        }
        if self.inner.read(&mut [0u8; 1])? != 0 {
            return Err(BackupError::TrailingBytes);
        }
        Ok(BackupInfo {
            applied: self.applied,
            revision: self.revision,
            pairs: self.pairs,
            user_keys: self.user_keys,
            size_bytes: self.read + SHA_BYTES as u64,
            sha256: got,
        })
    }

    fn exact(&mut self, n: usize, what: &'static str) -> Result<Vec<u8>, BackupError> {
        // Read as it arrives: a damaged length does not allocate up front.
        let mut buf = Vec::new();
        (&mut self.inner).take(n as u64).read_to_end(&mut buf)?;
        if buf.len() != n {
            return Err(BackupError::Truncated(what));
        }
        self.sha.update(&buf);
        self.read += n as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BackupError> {
        let b = self.exact(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads a backup, handing each pair to `each` in order, checked as a
/// leader's snapshot is ([`check_snapshot_pair`]). The checksum is at the
/// end: until this returns `Ok`, the pairs handed out must be taken as
/// provisional (a restore writes them into a transaction it commits only
/// then).
pub fn read_backup(
    reader: impl Read,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), String>,
) -> Result<BackupInfo, BackupError> {
    let mut r = BackupReader::new(reader)?;
    while let Some((k, v)) = r.next_pair()? {
        let index = r.next - 1;
        each(&k, &v).map_err(|why| BackupError::BadPair { index, why })?;
    }
    r.finish()
}
