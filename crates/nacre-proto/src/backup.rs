//! Online backup (opcode 45, `Request::Backup`): the frames a node streams
//! in answer, under the request's id. Every frame but the last is a
//! [`BackupFrame::Chunk`] of the backup file's bytes, in order; the last
//! is a [`BackupFrame::End`] that says what the file holds (or an error
//! reply, which ends the stream too). The file's layout is the server's
//! (docs/backup-format.md); the wire only carries its bytes.

use bytes::Bytes;

use crate::wire::{bytes_len, Reader, Writer};
use crate::DecodeError;

/// What a complete backup holds: the figures of its header and its
/// checksum, for the client to compare with the bytes it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The raft index the backup's store snapshot had applied.
    pub applied: u64,
    /// etcd's store revision at that index.
    pub revision: u64,
    /// Stored pairs in the backup (all namespaces).
    pub pairs: u64,
    /// Bytes of the whole file, checksum included.
    pub size_bytes: u64,
    /// SHA-256 of the file's bytes before the checksum (32 bytes).
    pub sha256: Bytes,
}

/// One frame of a backup stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupFrame {
    /// The next bytes of the file.
    Chunk(Bytes),
    /// The stream is complete.
    End(BackupSummary),
}

impl BackupFrame {
    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            BackupFrame::Chunk(b) => bytes_len(b),
            BackupFrame::End(s) => 32 + bytes_len(&s.sha256),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            BackupFrame::Chunk(b) => {
                w.u8(0);
                w.bytes(b);
            }
            BackupFrame::End(s) => {
                w.u8(1);
                w.u64(s.applied);
                w.u64(s.revision);
                w.u64(s.pairs);
                w.u64(s.size_bytes);
                w.bytes(&s.sha256);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<BackupFrame, DecodeError> {
        Ok(match r.u8("backup frame")? {
            0 => BackupFrame::Chunk(r.bytes("backup chunk")?),
            1 => BackupFrame::End(BackupSummary {
                applied: r.u64("backup applied index")?,
                revision: r.u64("backup revision")?,
                pairs: r.u64("backup pairs")?,
                size_bytes: r.u64("backup size")?,
                sha256: r.bytes("backup sha256")?,
            }),
            t => {
                return Err(DecodeError::BadTag {
                    what: "backup frame",
                    tag: u32::from(t),
                })
            }
        })
    }
}
