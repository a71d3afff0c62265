//! Coordination: watches (change events of a key span from a revision),
//! leases (state that goes away with its owner), and the requests that
//! manage them. Locks and elections are client recipes over these and
//! the `LockHeld` guard ([`crate::Guard::LockHeld`]).

use bytes::Bytes;

use crate::types::Revision;
use crate::wire::{bytes_len, opt_bytes_len, Reader, Writer};
use crate::DecodeError;

/// The keys a watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpan {
    /// Exactly this key.
    Key(Bytes),
    /// Every key that starts with this prefix (empty: every key).
    Prefix(Bytes),
    /// `start` ≤ key < `end` (`None`: no upper bound).
    Range { start: Bytes, end: Option<Bytes> },
}

impl KeySpan {
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySpan::Key(k) => &k[..] == key,
            KeySpan::Prefix(p) => key.starts_with(p),
            KeySpan::Range { start, end } => {
                key >= &start[..] && end.as_ref().is_none_or(|e| key < &e[..])
            }
        }
    }

    /// Bytes of keys this span carries, for size limits.
    pub fn payload_bytes(&self) -> usize {
        match self {
            KeySpan::Key(k) | KeySpan::Prefix(k) => k.len(),
            KeySpan::Range { start, end } => start.len() + end.as_ref().map_or(0, Bytes::len),
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            KeySpan::Key(k) | KeySpan::Prefix(k) => bytes_len(k),
            KeySpan::Range { start, end } => bytes_len(start) + opt_bytes_len(end.as_deref()),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            KeySpan::Key(k) => {
                w.u8(0);
                w.bytes(k);
            }
            KeySpan::Prefix(p) => {
                w.u8(1);
                w.bytes(p);
            }
            KeySpan::Range { start, end } => {
                w.u8(2);
                w.bytes(start);
                w.opt_bytes(end.as_deref());
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<KeySpan, DecodeError> {
        Ok(match r.u8("key span")? {
            0 => KeySpan::Key(r.bytes("key")?),
            1 => KeySpan::Prefix(r.bytes("prefix")?),
            2 => KeySpan::Range {
                start: r.bytes("range start")?,
                end: r.opt_bytes("range end")?,
            },
            t => {
                return Err(DecodeError::BadTag {
                    what: "key span",
                    tag: u32::from(t),
                })
            }
        })
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key, as applied at `rev.mod_rev`. A delete has an
/// empty value and `create_rev` and `version` zero, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: Bytes,
    pub value: Bytes,
    pub rev: Revision,
    /// The value before this change (only if the watch asked for it and
    /// the key existed).
    pub prev: Option<Bytes>,
    /// What the node knows besides, for etcd's API (docs/etcd.md): the
    /// revision of the value before (if the key existed), and the leases
    /// of the key after and before. Not on the native wire: a decoded
    /// event has none.
    pub etcd: EtcdMeta,
}

/// The part of a [`WatchEvent`] only etcd's API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EtcdMeta {
    pub prev_rev: Option<Revision>,
    pub lease: u64,
    pub prev_lease: u64,
}

impl WatchEvent {
    /// The revision (log index) this change applied at.
    pub fn revision(&self) -> u64 {
        self.rev.mod_rev
    }

    /// Bytes the event takes on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + bytes_len(&self.key)
            + bytes_len(&self.value)
            + Revision::ENCODED_BYTES
            + opt_bytes_len(self.prev.as_deref())
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(match self.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        w.bytes(&self.key);
        w.bytes(&self.value);
        w.u64(self.rev.create_rev);
        w.u64(self.rev.mod_rev);
        w.u64(self.rev.version);
        w.opt_bytes(self.prev.as_deref());
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<WatchEvent, DecodeError> {
        let kind = match r.u8("event kind")? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            t => {
                return Err(DecodeError::BadTag {
                    what: "event kind",
                    tag: u32::from(t),
                })
            }
        };
        Ok(WatchEvent {
            kind,
            key: r.bytes("key")?,
            value: r.bytes("value")?,
            rev: Revision {
                create_rev: r.u64("create_rev")?,
                mod_rev: r.u64("mod_rev")?,
                version: r.u64("version")?,
            },
            prev: r.opt_bytes("previous value")?,
            etcd: EtcdMeta::default(),
        })
    }
}

/// What a watch covers and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub span: KeySpan,
    /// The first revision to report (0: the next one the node applies).
    pub start_rev: u64,
    /// Carry each key's previous value in its events.
    pub prev_value: bool,
}

/// A lease as the leader knows it. `remaining_ms` is the time left on
/// the leader's clock; `keys` is filled only when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: u64,
    /// The granted time to live; 0 in a keep-alive reply means the lease
    /// does not exist (expired or revoked).
    pub ttl_ms: u64,
    pub remaining_ms: u64,
    pub keys: Vec<Bytes>,
}

impl LeaseInfo {
    pub(crate) fn encoded_len(&self) -> usize {
        24 + 4 + self.keys.iter().map(|k| bytes_len(k)).sum::<usize>()
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.u64(self.ttl_ms);
        w.u64(self.remaining_ms);
        w.list(&self.keys, |w, k| w.bytes(k));
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<LeaseInfo, DecodeError> {
        Ok(LeaseInfo {
            id: r.u64("lease id")?,
            ttl_ms: r.u64("lease ttl")?,
            remaining_ms: r.u64("lease remaining")?,
            keys: r.list("lease keys", 4, |r| r.bytes("key"))?,
        })
    }
}

/// Watches and leases (opcodes 60 to 66).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordRequest {
    /// Starts a watch: the server answers with a stream of
    /// `Response::Watched` frames under this request's id, until the
    /// client cancels it, the connection closes, or a
    /// `Response::WatchEnd` says why it ended.
    Watch(WatchSpec),
    /// Ends the watch started by the request with this id.
    WatchCancel {
        watch_id: u64,
    },
    /// Grants a lease of `ttl_ms` (id 0: the server picks one, the log
    /// index of the grant).
    LeaseGrant {
        id: u64,
        ttl_ms: u64,
    },
    /// Ends a lease now: its keys are deleted in one replicated command.
    LeaseRevoke {
        id: u64,
    },
    /// Renews these leases to their full time to live (at the leader).
    LeaseKeepAlive {
        ids: Vec<u64>,
    },
    /// A lease's time to live (and its keys, if asked).
    LeaseTtl {
        id: u64,
        keys: bool,
    },
    LeaseList,
}

impl CoordRequest {
    pub fn opcode(&self) -> u8 {
        match self {
            CoordRequest::Watch(_) => 60,
            CoordRequest::WatchCancel { .. } => 61,
            CoordRequest::LeaseGrant { .. } => 62,
            CoordRequest::LeaseRevoke { .. } => 63,
            CoordRequest::LeaseKeepAlive { .. } => 64,
            CoordRequest::LeaseTtl { .. } => 65,
            CoordRequest::LeaseList => 66,
        }
    }

    /// Grants and revokes change replicated state.
    pub fn may_write(&self) -> bool {
        matches!(
            self,
            CoordRequest::LeaseGrant { .. } | CoordRequest::LeaseRevoke { .. }
        )
    }

    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            CoordRequest::Watch(s) => s.span.encoded_len() + 8 + 1,
            CoordRequest::WatchCancel { .. } | CoordRequest::LeaseRevoke { .. } => 8,
            CoordRequest::LeaseGrant { .. } => 16,
            CoordRequest::LeaseKeepAlive { ids } => 4 + 8 * ids.len(),
            CoordRequest::LeaseTtl { .. } => 9,
            CoordRequest::LeaseList => 0,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            CoordRequest::Watch(s) => {
                s.span.encode(w);
                w.u64(s.start_rev);
                w.bool(s.prev_value);
            }
            CoordRequest::WatchCancel { watch_id: id } | CoordRequest::LeaseRevoke { id } => {
                w.u64(*id)
            }
            CoordRequest::LeaseGrant { id, ttl_ms } => {
                w.u64(*id);
                w.u64(*ttl_ms);
            }
            CoordRequest::LeaseKeepAlive { ids } => w.list(ids, |w, id| w.u64(*id)),
            CoordRequest::LeaseTtl { id, keys } => {
                w.u64(*id);
                w.bool(*keys);
            }
            CoordRequest::LeaseList => {}
        }
    }

    pub(crate) fn decode(op: u8, r: &mut Reader) -> Result<CoordRequest, DecodeError> {
        Ok(match op {
            60 => CoordRequest::Watch(WatchSpec {
                span: KeySpan::decode(r)?,
                start_rev: r.u64("start revision")?,
                prev_value: r.bool("prev_value")?,
            }),
            61 => CoordRequest::WatchCancel {
                watch_id: r.u64("watch id")?,
            },
            62 => CoordRequest::LeaseGrant {
                id: r.u64("lease id")?,
                ttl_ms: r.u64("lease ttl")?,
            },
            63 => CoordRequest::LeaseRevoke {
                id: r.u64("lease id")?,
            },
            64 => CoordRequest::LeaseKeepAlive {
                ids: r.list("lease ids", 8, |r| r.u64("lease id"))?,
            },
            65 => CoordRequest::LeaseTtl {
                id: r.u64("lease id")?,
                keys: r.bool("keys")?,
            },
            66 => CoordRequest::LeaseList,
            t => {
                return Err(DecodeError::BadTag {
                    what: "opcode",
                    tag: u32::from(t),
                })
            }
        })
    }
}

/// Replies to coordination requests (all under `Response::Coord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordResponse {
    /// Every change of the watch's span up to and including `revision`
    /// has now been delivered; `events` are the ones not delivered before
    /// (whole revisions, in order). Empty `events`: the watch started
    /// (the first frame) or a progress notification.
    Watched {
        events: Vec<WatchEvent>,
        revision: u64,
    },
    /// The watch ended. `Compacted`: `revision` is the oldest revision the
    /// node still has; otherwise (`SlowConsumer`, `Cancelled`, a
    /// restarted node...) the last revision delivered, to resume after.
    WatchEnd {
        code: crate::ErrorCode,
        message: String,
        revision: u64,
    },
    Lease(LeaseInfo),
    Leases(Vec<LeaseInfo>),
}

impl CoordResponse {
    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            CoordResponse::Watched { events, .. } => {
                4 + events.iter().map(WatchEvent::encoded_len).sum::<usize>() + 8
            }
            CoordResponse::WatchEnd { message, .. } => 2 + bytes_len(message.as_bytes()) + 8,
            CoordResponse::Lease(l) => l.encoded_len(),
            CoordResponse::Leases(ls) => 4 + ls.iter().map(LeaseInfo::encoded_len).sum::<usize>(),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            CoordResponse::Watched { events, revision } => {
                w.u8(0);
                w.list(events, |w, e| e.encode(w));
                w.u64(*revision);
            }
            CoordResponse::WatchEnd {
                code,
                message,
                revision,
            } => {
                w.u8(1);
                w.u16(code.to_u16());
                w.str(message);
                w.u64(*revision);
            }
            CoordResponse::Lease(l) => {
                w.u8(2);
                l.encode(w);
            }
            CoordResponse::Leases(ls) => {
                w.u8(3);
                w.list(ls, |w, l| l.encode(w));
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<CoordResponse, DecodeError> {
        // Smallest event: kind, two empty byte strings, the revision, no
        // previous value; smallest lease: three u64 and no keys.
        const EVENT_MIN_BYTES: usize = 1 + 4 + 4 + 24 + 1;
        Ok(match r.u8("coordination reply")? {
            0 => CoordResponse::Watched {
                events: r.list("events", EVENT_MIN_BYTES, WatchEvent::decode)?,
                revision: r.u64("revision")?,
            },
            1 => CoordResponse::WatchEnd {
                code: crate::ErrorCode::from_u16(r.u16("error code")?),
                message: r.string("message")?,
                revision: r.u64("revision")?,
            },
            2 => CoordResponse::Lease(LeaseInfo::decode(r)?),
            3 => CoordResponse::Leases(r.list("leases", 28, LeaseInfo::decode)?),
            t => {
                return Err(DecodeError::BadTag {
                    what: "coordination reply",
                    tag: u32::from(t),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_contain_what_they_say() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert!(KeySpan::Key(b("a")).contains(b"a"));
        assert!(!KeySpan::Key(b("a")).contains(b"ab"));
        assert!(KeySpan::Prefix(b("a/")).contains(b"a/b"));
        assert!(!KeySpan::Prefix(b("a/")).contains(b"a"));
        assert!(KeySpan::Prefix(Bytes::new()).contains(b""));
        let r = KeySpan::Range {
            start: b("b"),
            end: Some(b("d")),
        };
        assert!(r.contains(b"b") && r.contains(b"cz") && !r.contains(b"d") && !r.contains(b"a"));
        let open = KeySpan::Range {
            start: b("b"),
            end: None,
        };
        assert!(open.contains(b"\xff\xff") && !open.contains(b"a"));
    }
}
