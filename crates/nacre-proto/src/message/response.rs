//! Replies: every answer a server gives, and their wire encoding (a tag
//! byte, then the fields; docs/protocol.md has the layout of each).

use bytes::Bytes;

use crate::backup::BackupFrame;
use crate::coord::CoordResponse;
use crate::types::KeyEntry;
use crate::wire::{bytes_len, opt_bytes_len, Reader, Writer};
use crate::DecodeError;

use super::error::{ErrorCode, ErrorReply};

/// One member of the cluster, as the leader knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Raft id, unique for the cluster's lifetime.
    pub id: u64,
    pub name: String,
    /// Address for clients.
    pub client: String,
    /// Address for peers.
    pub peer: String,
    /// A voter (else a learner).
    pub voter: bool,
    pub leader: bool,
    /// Highest log index known replicated to it (0: unknown).
    pub match_index: u64,
}

impl Member {
    fn encoded_len(&self) -> usize {
        8 + bytes_len(self.name.as_bytes())
            + bytes_len(self.client.as_bytes())
            + bytes_len(self.peer.as_bytes())
            + 2
            + 8
    }

    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.str(&self.name);
        w.str(&self.client);
        w.str(&self.peer);
        w.bool(self.voter);
        w.bool(self.leader);
        w.u64(self.match_index);
    }

    fn decode(r: &mut Reader) -> Result<Member, DecodeError> {
        Ok(Member {
            id: r.u64("member id")?,
            name: r.string("member name")?,
            client: r.string("client address")?,
            peer: r.string("peer address")?,
            voter: r.bool("voter")?,
            leader: r.bool("leader")?,
            match_index: r.u64("match index")?,
        })
    }
}

/// The leader and server version, as `who_master` and `version` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub info: String,
}

/// One installed script, as `ScriptList` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSummary {
    pub name: String,
    /// The live version; 0 once deleted.
    pub live: u64,
    /// The highest version ever installed.
    pub latest: u64,
}

/// One installed version, as `ScriptHistory` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptVersionInfo {
    pub version: u64,
    /// The log index that installed it.
    pub index: u64,
    pub size_bytes: u64,
    pub live: bool,
}

/// A version's source, as `ScriptShow` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSource {
    pub name: String,
    pub version: u64,
    pub index: u64,
    pub live: bool,
    pub source: Bytes,
}

/// Frame `length` (request id and body) of a reply that is a tag and one
/// list whose items take `items_bytes` on the wire: what
/// `frame_size_max_bytes` bounds, for a server that fills a reply item by
/// item and must stop (or refuse) before it would go over.
pub const fn list_reply_frame_length(items_bytes: usize) -> usize {
    8 + 1 + 4 + items_bytes
}

/// What one result of a range or prefix read is on the wire, and the key
/// a next page continues after.
pub trait PageItem {
    /// The result's key.
    fn key(&self) -> &Bytes;
    /// Bytes the result takes in a page reply.
    fn encoded_len(&self) -> usize;
}

impl PageItem for Bytes {
    fn key(&self) -> &Bytes {
        self
    }

    fn encoded_len(&self) -> usize {
        bytes_len(self)
    }
}

impl PageItem for KeyEntry {
    fn key(&self) -> &Bytes {
        &self.key
    }

    fn encoded_len(&self) -> usize {
        KeyEntry::encoded_len(self)
    }
}

/// One reply's worth of a range or prefix read, in scan order. `more`
/// says whether at least one more key of the range follows the last item
/// (it was left out by the asked `max`, by the server's
/// `range_results_max` or because the reply would not fit in a frame);
/// the next page starts after the last item's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

impl<T: PageItem> Page<T> {
    /// Frame `length` of a page reply whose items take `items_bytes`: a
    /// list reply and the `more` flag.
    pub const fn frame_length(items_bytes: usize) -> usize {
        list_reply_frame_length(items_bytes) + 1
    }

    /// The key the next page starts after, when there is more to read.
    pub fn next_after(&self) -> Option<&Bytes> {
        self.items.last().filter(|_| self.more).map(PageItem::key)
    }

    fn encoded_len(&self) -> usize {
        4 + self.items.iter().map(PageItem::encoded_len).sum::<usize>() + 1
    }
}

/// Every reply. Which variant answers which request is in docs/protocol.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Unit,
    Bool(bool),
    U64(u64),
    Value(Option<Bytes>),
    Entry(Option<KeyEntry>),
    Values(Vec<Bytes>),
    OptValues(Vec<Option<Bytes>>),
    Keys(Vec<Bytes>),
    Entries(Vec<KeyEntry>),
    Text(String),
    Master(Option<String>),
    Version(VersionInfo),
    /// Named counters and facts, in a stable order.
    Stats(Vec<(String, String)>),
    /// A write's result: the log index it applied at, the previous value
    /// (test_and_set, replace) and a count (delete_prefix).
    /// Cluster members (`ClusterStatus`).
    Members(Vec<Member>),
    Written {
        index: u64,
        prev: Option<Bytes>,
        count: u64,
    },
    /// A script call's result: the version that ran, the log index its
    /// effects applied at (a read-only call: the index it read at), and
    /// what the function returned (nil: none).
    Called {
        version: u64,
        index: u64,
        value: Option<Bytes>,
    },
    Scripts(Vec<ScriptSummary>),
    Script(ScriptSource),
    ScriptVersions(Vec<ScriptVersionInfo>),
    /// Keys of a range or prefix read (protocol 2; version 1 gets `Keys`).
    KeyPage(Page<Bytes>),
    /// Entries of a range read (protocol 2; version 1 gets `Entries`).
    EntryPage(Page<KeyEntry>),
    /// Watches and leases (protocol 2).
    Coord(CoordResponse),
    /// One frame of a backup stream (`Request::Backup`).
    Backup(BackupFrame),
    Error(ErrorReply),
}

impl Response {
    fn tag(&self) -> u8 {
        match self {
            Response::Unit => 0,
            Response::Bool(_) => 1,
            Response::U64(_) => 2,
            Response::Value(_) => 3,
            Response::Entry(_) => 4,
            Response::Values(_) => 5,
            Response::OptValues(_) => 6,
            Response::Keys(_) => 7,
            Response::Entries(_) => 8,
            Response::Text(_) => 9,
            Response::Master(_) => 10,
            Response::Version(_) => 11,
            Response::Stats(_) => 12,
            Response::Written { .. } => 13,
            Response::Members(_) => 14,
            Response::Called { .. } => 15,
            Response::Scripts(_) => 16,
            Response::Script(_) => 17,
            Response::ScriptVersions(_) => 18,
            Response::KeyPage(_) => 19,
            Response::EntryPage(_) => 20,
            Response::Coord(_) => 21,
            Response::Backup(_) => 22,
            Response::Error(_) => 255,
        }
    }

    /// This reply as a peer speaking protocol `version` can read it.
    /// Version 1 has no page replies: a page goes as the plain list, its
    /// `more` flag dropped, which is what version 1 promised (a range
    /// reply may hold fewer results than asked; page on from the last
    /// key). Everything else is the same in both versions.
    pub fn for_version(self, version: u16) -> Response {
        match self {
            Response::KeyPage(p) if version < 2 => Response::Keys(p.items),
            Response::EntryPage(p) if version < 2 => Response::Entries(p.items),
            r => r,
        }
    }

    /// Frame `length` (request id and body) of this reply: what
    /// `frame_size_max_bytes` bounds.
    pub fn frame_length(&self) -> usize {
        8 + self.encoded_len()
    }

    /// Bytes [`Response::encode`] writes, tag included.
    pub fn encoded_len(&self) -> usize {
        let opt_str = |s: Option<&str>| opt_bytes_len(s.map(str::as_bytes));
        1 + match self {
            Response::Unit => 0,
            Response::Bool(_) => 1,
            Response::U64(_) => 8,
            Response::Value(v) => opt_bytes_len(v.as_deref()),
            Response::Entry(e) => 1 + e.as_ref().map_or(0, KeyEntry::encoded_len),
            Response::Values(vs) | Response::Keys(vs) => {
                4 + vs.iter().map(|v| bytes_len(v)).sum::<usize>()
            }
            Response::OptValues(vs) => {
                4 + vs
                    .iter()
                    .map(|v| opt_bytes_len(v.as_deref()))
                    .sum::<usize>()
            }
            Response::Entries(es) => 4 + es.iter().map(KeyEntry::encoded_len).sum::<usize>(),
            Response::Text(s) => bytes_len(s.as_bytes()),
            Response::Master(m) => opt_str(m.as_deref()),
            Response::Version(v) => 12 + bytes_len(v.info.as_bytes()),
            Response::Stats(kv) => {
                4 + kv
                    .iter()
                    .map(|(k, v)| bytes_len(k.as_bytes()) + bytes_len(v.as_bytes()))
                    .sum::<usize>()
            }
            Response::Written { prev, .. } => 8 + opt_bytes_len(prev.as_deref()) + 8,
            Response::Members(ms) => 4 + ms.iter().map(Member::encoded_len).sum::<usize>(),
            Response::Called { value, .. } => 16 + opt_bytes_len(value.as_deref()),
            Response::Scripts(ss) => {
                4 + ss
                    .iter()
                    .map(|s| bytes_len(s.name.as_bytes()) + 16)
                    .sum::<usize>()
            }
            Response::Script(s) => bytes_len(s.name.as_bytes()) + 17 + bytes_len(&s.source),
            Response::ScriptVersions(vs) => 4 + vs.len() * 25,
            Response::KeyPage(p) => p.encoded_len(),
            Response::EntryPage(p) => p.encoded_len(),
            Response::Coord(c) => c.encoded_len(),
            Response::Backup(b) => b.encoded_len(),
            Response::Error(e) => {
                2 + bytes_len(e.message.as_bytes())
                    + opt_bytes_len(e.key.as_deref())
                    + opt_str(e.leader.as_deref())
            }
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Response::Unit => {}
            Response::Bool(b) => w.bool(*b),
            Response::U64(v) => w.u64(*v),
            Response::Value(v) => w.opt_bytes(v.as_deref()),
            Response::Entry(e) => match e {
                None => w.u8(0),
                Some(e) => {
                    w.u8(1);
                    e.encode(w);
                }
            },
            Response::Values(vs) | Response::Keys(vs) => w.list(vs, |w, v| w.bytes(v)),
            Response::OptValues(vs) => w.list(vs, |w, v| w.opt_bytes(v.as_deref())),
            Response::Entries(es) => w.list(es, |w, e| e.encode(w)),
            Response::Text(s) => w.str(s),
            Response::Master(m) => w.opt_str(m.as_deref()),
            Response::Version(v) => {
                w.u32(v.major);
                w.u32(v.minor);
                w.u32(v.patch);
                w.str(&v.info);
            }
            Response::Stats(kv) => w.list(kv, |w, (k, v)| {
                w.str(k);
                w.str(v);
            }),
            Response::Members(ms) => w.list(ms, |w, m| m.encode(w)),
            Response::Written { index, prev, count } => {
                w.u64(*index);
                w.opt_bytes(prev.as_deref());
                w.u64(*count);
            }
            Response::Called {
                version,
                index,
                value,
            } => {
                w.u64(*version);
                w.u64(*index);
                w.opt_bytes(value.as_deref());
            }
            Response::Scripts(ss) => w.list(ss, |w, s| {
                w.str(&s.name);
                w.u64(s.live);
                w.u64(s.latest);
            }),
            Response::Script(s) => {
                w.str(&s.name);
                w.u64(s.version);
                w.u64(s.index);
                w.bool(s.live);
                w.bytes(&s.source);
            }
            Response::ScriptVersions(vs) => w.list(vs, |w, v| {
                w.u64(v.version);
                w.u64(v.index);
                w.u64(v.size_bytes);
                w.bool(v.live);
            }),
            Response::KeyPage(p) => {
                w.list(&p.items, |w, k| w.bytes(k));
                w.bool(p.more);
            }
            Response::EntryPage(p) => {
                w.list(&p.items, |w, e| e.encode(w));
                w.bool(p.more);
            }
            Response::Coord(c) => c.encode(w),
            Response::Backup(b) => b.encode(w),
            Response::Error(e) => {
                w.u16(e.code.to_u16());
                w.str(&e.message);
                w.opt_bytes(e.key.as_deref());
                w.opt_str(e.leader.as_deref());
            }
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Response, DecodeError> {
        Ok(match r.u8("response")? {
            0 => Response::Unit,
            1 => Response::Bool(r.bool("bool")?),
            2 => Response::U64(r.u64("u64")?),
            3 => Response::Value(r.opt_bytes("value")?),
            4 => Response::Entry(if r.bool("entry")? {
                Some(KeyEntry::decode(r)?)
            } else {
                None
            }),
            5 => Response::Values(r.list("values", 4, |r| r.bytes("value"))?),
            7 => Response::Keys(r.list("values", 4, |r| r.bytes("value"))?),
            6 => Response::OptValues(r.list("values", 1, |r| r.opt_bytes("value"))?),
            8 => Response::Entries(r.list(
                "entries",
                KeyEntry::ENCODED_MIN_BYTES,
                KeyEntry::decode,
            )?),
            9 => Response::Text(r.string("text")?),
            10 => Response::Master(r.opt_string("master")?),
            11 => Response::Version(VersionInfo {
                major: r.u32("major")?,
                minor: r.u32("minor")?,
                patch: r.u32("patch")?,
                info: r.string("info")?,
            }),
            12 => Response::Stats(r.list("stats", 8, |r| {
                Ok((r.string("stat name")?, r.string("stat value")?))
            })?),
            // Smallest member: id, three empty strings, flags, index.
            14 => Response::Members(r.list("members", 8 + 12 + 2 + 8, Member::decode)?),
            13 => Response::Written {
                index: r.u64("index")?,
                prev: r.opt_bytes("prev")?,
                count: r.u64("count")?,
            },
            15 => Response::Called {
                version: r.u64("version")?,
                index: r.u64("index")?,
                value: r.opt_bytes("value")?,
            },
            16 => Response::Scripts(r.list("scripts", 4 + 16, |r| {
                Ok(ScriptSummary {
                    name: r.string("script name")?,
                    live: r.u64("live version")?,
                    latest: r.u64("latest version")?,
                })
            })?),
            17 => Response::Script(ScriptSource {
                name: r.string("script name")?,
                version: r.u64("version")?,
                index: r.u64("index")?,
                live: r.bool("live")?,
                source: r.bytes("script source")?,
            }),
            18 => Response::ScriptVersions(r.list("script versions", 25, |r| {
                Ok(ScriptVersionInfo {
                    version: r.u64("version")?,
                    index: r.u64("index")?,
                    size_bytes: r.u64("size")?,
                    live: r.bool("live")?,
                })
            })?),
            19 => Response::KeyPage(Page {
                items: r.list("keys", 4, |r| r.bytes("key"))?,
                more: r.bool("more")?,
            }),
            20 => Response::EntryPage(Page {
                items: r.list("entries", KeyEntry::ENCODED_MIN_BYTES, KeyEntry::decode)?,
                more: r.bool("more")?,
            }),
            21 => Response::Coord(CoordResponse::decode(r)?),
            22 => Response::Backup(BackupFrame::decode(r)?),
            255 => Response::Error(ErrorReply {
                code: ErrorCode::from_u16(r.u16("error code")?),
                message: r.string("message")?,
                key: r.opt_bytes("key")?,
                leader: r.opt_string("leader")?,
            }),
            t => {
                return Err(DecodeError::BadTag {
                    what: "response",
                    tag: t as u32,
                })
            }
        })
    }
}
