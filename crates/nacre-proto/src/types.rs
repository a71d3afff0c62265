//! The data types shared by requests, replies and the replicated log:
//! consistency levels, versioned entries and the guarded batch.

use bytes::Bytes;

use crate::wire::{bytes_len, opt_bytes_len, Reader, Writer};
use crate::DecodeError;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Linearizable: served by the leader while its lease (or a read-index
    /// round) proves it is still the leader.
    #[default]
    Consistent,
    /// Dirty: whatever the node that answers has applied.
    Any,
    /// Any node that has applied at least this log index, else an
    /// `InconsistentRead` error. Gives read-your-writes on followers.
    AtLeast(u64),
}

impl Consistency {
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Consistency::AtLeast(_) => 9,
            _ => 1,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match *self {
            Consistency::Consistent => w.u8(0),
            Consistency::Any => w.u8(1),
            Consistency::AtLeast(i) => {
                w.u8(2);
                w.u64(i);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Consistency, DecodeError> {
        match r.u8("consistency")? {
            0 => Ok(Consistency::Consistent),
            1 => Ok(Consistency::Any),
            2 => Ok(Consistency::AtLeast(r.u64("consistency index")?)),
            t => Err(DecodeError::BadTag {
                what: "consistency",
                tag: t as u32,
            }),
        }
    }
}

/// Per-key revision data, as etcd keeps it. `mod_rev` and `create_rev` are
/// log indexes; `version` counts modifications since the key was created
/// (it restarts at 1 after a delete and re-create).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revision {
    pub create_rev: u64,
    pub mod_rev: u64,
    pub version: u64,
}

impl Revision {
    pub const ENCODED_BYTES: usize = 24;

    pub fn encode_into(&self, out: &mut [u8; 24]) {
        out[0..8].copy_from_slice(&self.create_rev.to_le_bytes());
        out[8..16].copy_from_slice(&self.mod_rev.to_le_bytes());
        out[16..24].copy_from_slice(&self.version.to_le_bytes());
    }

    pub fn decode_from(b: &[u8]) -> Option<Revision> {
        if b.len() < 24 {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Revision {
            create_rev: u(0),
            mod_rev: u(8),
            version: u(16),
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.u64(self.create_rev);
        w.u64(self.mod_rev);
        w.u64(self.version);
    }

    fn decode(r: &mut Reader) -> Result<Revision, DecodeError> {
        Ok(Revision {
            create_rev: r.u64("create_rev")?,
            mod_rev: r.u64("mod_rev")?,
            version: r.u64("version")?,
        })
    }
}

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: Bytes,
    pub value: Bytes,
    pub rev: Revision,
}

impl KeyEntry {
    pub(crate) const ENCODED_MIN_BYTES: usize = 4 + 4 + Revision::ENCODED_BYTES;

    /// Bytes the entry takes on the wire.
    pub fn encoded_len(&self) -> usize {
        bytes_len(&self.key) + bytes_len(&self.value) + Revision::ENCODED_BYTES
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.key);
        w.bytes(&self.value);
        self.rev.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<KeyEntry, DecodeError> {
        Ok(KeyEntry {
            key: r.bytes("key")?,
            value: r.bytes("value")?,
            rev: Revision::decode(r)?,
        })
    }
}

/// A condition a batch checks before (guards) or while (`Op::Check`) it
/// applies. A failed condition aborts the whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The key does not exist.
    Absent(Bytes),
    /// The key exists (any value).
    Present(Bytes),
    /// The key exists and holds exactly this value.
    ValueEquals(Bytes, Bytes),
    /// The key's version equals this one; 0 means the key is absent. With
    /// the version from a read, this is optimistic concurrency control.
    VersionEquals(Bytes, u64),
    /// The keys that start with `prefix` are exactly `keys`, in order
    /// (Arakoon's `assert_range ... ContainsExactly`).
    PrefixKeysEqual { prefix: Bytes, keys: Vec<Bytes> },
    /// Fencing: the key under `prefix` with the lowest create revision (the
    /// lock's holder, or the election's leader) was created at `token`.
    /// A holder that paused past its lease finds its writes refused
    /// (`Fenced`). Needs command format 3.
    LockHeld { prefix: Bytes, token: u64 },
}

impl Guard {
    /// The key a failure of this guard is reported against.
    pub fn key(&self) -> &Bytes {
        match self {
            Guard::Absent(k)
            | Guard::Present(k)
            | Guard::ValueEquals(k, _)
            | Guard::VersionEquals(k, _) => k,
            Guard::PrefixKeysEqual { prefix, .. } | Guard::LockHeld { prefix, .. } => prefix,
        }
    }

    /// The oldest command format that can carry this guard.
    pub fn command_format(&self) -> u8 {
        match self {
            Guard::LockHeld { .. } => Command::FORMAT_V3,
            _ => Command::FORMAT_V1,
        }
    }

    /// Bytes of keys and values this guard carries, for size limits.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Guard::Absent(k)
            | Guard::Present(k)
            | Guard::VersionEquals(k, _)
            | Guard::LockHeld { prefix: k, .. } => k.len(),
            Guard::ValueEquals(k, v) => k.len() + v.len(),
            Guard::PrefixKeysEqual { prefix, keys } => {
                prefix.len() + keys.iter().map(Bytes::len).sum::<usize>()
            }
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            Guard::Absent(k) | Guard::Present(k) => bytes_len(k),
            Guard::ValueEquals(k, v) => bytes_len(k) + bytes_len(v),
            Guard::VersionEquals(k, _) | Guard::LockHeld { prefix: k, .. } => bytes_len(k) + 8,
            Guard::PrefixKeysEqual { prefix, keys } => {
                bytes_len(prefix) + 4 + keys.iter().map(|k| bytes_len(k)).sum::<usize>()
            }
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Guard::Absent(k) => {
                w.u8(1);
                w.bytes(k);
            }
            Guard::Present(k) => {
                w.u8(2);
                w.bytes(k);
            }
            Guard::ValueEquals(k, v) => {
                w.u8(3);
                w.bytes(k);
                w.bytes(v);
            }
            Guard::VersionEquals(k, ver) => {
                w.u8(4);
                w.bytes(k);
                w.u64(*ver);
            }
            Guard::PrefixKeysEqual { prefix, keys } => {
                w.u8(5);
                w.bytes(prefix);
                w.u32(keys.len() as u32);
                for k in keys {
                    w.bytes(k);
                }
            }
            Guard::LockHeld { prefix, token } => {
                w.u8(6);
                w.bytes(prefix);
                w.u64(*token);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Guard, DecodeError> {
        Ok(match r.u8("guard")? {
            1 => Guard::Absent(r.bytes("key")?),
            2 => Guard::Present(r.bytes("key")?),
            3 => Guard::ValueEquals(r.bytes("key")?, r.bytes("value")?),
            4 => Guard::VersionEquals(r.bytes("key")?, r.u64("version")?),
            5 => {
                let prefix = r.bytes("prefix")?;
                let n = r.count("keys", 4)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes("key")?);
                }
                Guard::PrefixKeysEqual { prefix, keys }
            }
            6 => Guard::LockHeld {
                prefix: r.bytes("lock prefix")?,
                token: r.u64("fencing token")?,
            },
            t => {
                return Err(DecodeError::BadTag {
                    what: "guard",
                    tag: t as u32,
                })
            }
        })
    }
}

/// One step of a batch, applied in order; later steps see earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set(Bytes, Bytes),
    /// Deletes the key; a missing key fails the batch with `NotFound`
    /// (Arakoon's meaning).
    Delete(Bytes),
    /// Deletes every key with this prefix; reports how many.
    DeletePrefix(Bytes),
    /// An assertion at this point of the sequence.
    Check(Guard),
    /// Deletes the key if it exists; never fails.
    Remove(Bytes),
    /// Arakoon's `test_and_set` step of a sequence: if the key holds
    /// `expected` (`None`: is absent), it becomes `wanted` (`None`: is
    /// removed); otherwise nothing changes. Either way the batch goes on:
    /// a mismatch is not a failure (an `assert` step is how a sequence
    /// aborts). Needs command format 2 ([`Command`]).
    TestAndSet {
        key: Bytes,
        expected: Option<Bytes>,
        wanted: Option<Bytes>,
    },
    /// Service metadata (Lua scripts, see docs/scripts.md): installs
    /// `source` as the next version of script `name` and makes it live.
    /// The state machine numbers versions so that concurrent installs
    /// cannot pick the same one. Only the server proposes these four; a
    /// client's batch that carries one is refused.
    ScriptPut {
        name: Bytes,
        source: Bytes,
    },
    /// Makes an existing version of a script the live one (rollback).
    ScriptActivate {
        name: Bytes,
        version: u64,
    },
    /// Makes a script uncallable; its history stays, so version numbers
    /// are never reused.
    ScriptDelete(Bytes),
    /// Fails the batch unless `version` is the script's live version: a
    /// call's effects never land after another version went live.
    ScriptLive {
        name: Bytes,
        version: u64,
    },
    /// Sets the key and attaches it to a lease: the key is deleted when
    /// the lease ends. A plain `Set` of a leased key detaches it (etcd's
    /// meaning). A lease that does not exist fails the batch
    /// (`LeaseNotFound`). Needs command format 3.
    SetLeased {
        key: Bytes,
        value: Bytes,
        lease: u64,
    },
    /// Creates a lease (server only). `id` 0: the lease's id is the log
    /// index of this command. Needs command format 3.
    LeaseGrant {
        id: u64,
        ttl_ms: u64,
    },
    /// Ends a lease and deletes every key attached to it (server only:
    /// a revoke request, or the leader's expiry). Needs format 3.
    LeaseRevoke(u64),
    /// A request of the etcd v3 API (server only): a kind byte, then the
    /// request in etcd's protobuf encoding (docs/etcd.md, "In the log").
    /// The state machine applies it with etcd's meaning. Needs format 4.
    Etcd(Bytes),
}

impl Op {
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Set(k, v) => k.len() + v.len(),
            Op::Delete(k) | Op::DeletePrefix(k) | Op::Remove(k) => k.len(),
            Op::Check(g) => g.payload_bytes(),
            Op::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                key.len()
                    + expected.as_ref().map_or(0, Bytes::len)
                    + wanted.as_ref().map_or(0, Bytes::len)
            }
            Op::ScriptPut { name, source } => name.len() + source.len(),
            Op::ScriptActivate { name, .. } | Op::ScriptLive { name, .. } => name.len(),
            Op::ScriptDelete(name) => name.len(),
            Op::SetLeased { key, value, .. } => key.len() + value.len(),
            Op::LeaseGrant { .. } | Op::LeaseRevoke(_) => 0,
            Op::Etcd(request) => request.len(),
        }
    }

    /// Service metadata ops, which only the server may propose.
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Op::ScriptPut { .. }
                | Op::ScriptActivate { .. }
                | Op::ScriptDelete(_)
                | Op::ScriptLive { .. }
                | Op::LeaseGrant { .. }
                | Op::LeaseRevoke(_)
                | Op::Etcd(_)
        )
    }

    /// The op's tag on the wire (docs/protocol.md, section 4).
    fn tag(&self) -> u8 {
        match self {
            Op::Set(..) => 1,
            Op::Delete(_) => 2,
            Op::DeletePrefix(_) => 3,
            Op::Check(_) => 4,
            Op::Remove(_) => 5,
            Op::ScriptPut { .. } => 6,
            Op::ScriptActivate { .. } => 7,
            Op::ScriptDelete(_) => 8,
            Op::ScriptLive { .. } => 9,
            Op::TestAndSet { .. } => 10,
            Op::SetLeased { .. } => 11,
            Op::LeaseGrant { .. } => 12,
            Op::LeaseRevoke(_) => 13,
            Op::Etcd(_) => 14,
        }
    }

    /// The oldest command format that can carry this op: a node that
    /// only knows format 1 must never be handed an op it cannot apply.
    pub fn command_format(&self) -> u8 {
        match self {
            Op::TestAndSet { .. } => Command::FORMAT_V2,
            Op::SetLeased { .. } | Op::LeaseGrant { .. } | Op::LeaseRevoke(_) => Command::FORMAT_V3,
            Op::Etcd(_) => Command::FORMAT_V4,
            Op::Check(g) => g.command_format(),
            _ => Command::FORMAT_V1,
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            Op::Set(k, v) => bytes_len(k) + bytes_len(v),
            Op::Delete(k) | Op::DeletePrefix(k) | Op::Remove(k) => bytes_len(k),
            Op::Check(g) => g.encoded_len(),
            Op::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                bytes_len(key)
                    + opt_bytes_len(expected.as_deref())
                    + opt_bytes_len(wanted.as_deref())
            }
            Op::ScriptPut { name, source } => bytes_len(name) + bytes_len(source),
            Op::ScriptActivate { name, .. } | Op::ScriptLive { name, .. } => bytes_len(name) + 8,
            Op::ScriptDelete(name) | Op::Etcd(name) => bytes_len(name),
            Op::SetLeased { key, value, .. } => bytes_len(key) + bytes_len(value) + 8,
            Op::LeaseGrant { .. } => 16,
            Op::LeaseRevoke(_) => 8,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Op::Set(k, v) => {
                w.bytes(k);
                w.bytes(v);
            }
            Op::Delete(k)
            | Op::DeletePrefix(k)
            | Op::Remove(k)
            | Op::ScriptDelete(k)
            | Op::Etcd(k) => {
                w.bytes(k);
            }
            Op::Check(g) => g.encode(w),
            Op::ScriptPut { name, source } => {
                w.bytes(name);
                w.bytes(source);
            }
            Op::ScriptActivate { name, version } | Op::ScriptLive { name, version } => {
                w.bytes(name);
                w.u64(*version);
            }
            Op::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                w.bytes(key);
                w.opt_bytes(expected.as_deref());
                w.opt_bytes(wanted.as_deref());
            }
            Op::SetLeased { key, value, lease } => {
                w.bytes(key);
                w.bytes(value);
                w.u64(*lease);
            }
            Op::LeaseGrant { id, ttl_ms } => {
                w.u64(*id);
                w.u64(*ttl_ms);
            }
            Op::LeaseRevoke(id) => w.u64(*id),
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Op, DecodeError> {
        Ok(match r.u8("op")? {
            1 => Op::Set(r.bytes("key")?, r.bytes("value")?),
            2 => Op::Delete(r.bytes("key")?),
            3 => Op::DeletePrefix(r.bytes("prefix")?),
            4 => Op::Check(Guard::decode(r)?),
            5 => Op::Remove(r.bytes("key")?),
            6 => Op::ScriptPut {
                name: r.bytes("script name")?,
                source: r.bytes("script source")?,
            },
            7 => Op::ScriptActivate {
                name: r.bytes("script name")?,
                version: r.u64("script version")?,
            },
            8 => Op::ScriptDelete(r.bytes("script name")?),
            9 => Op::ScriptLive {
                name: r.bytes("script name")?,
                version: r.u64("script version")?,
            },
            10 => Op::TestAndSet {
                key: r.bytes("key")?,
                expected: r.opt_bytes("expected value")?,
                wanted: r.opt_bytes("wanted value")?,
            },
            11 => Op::SetLeased {
                key: r.bytes("key")?,
                value: r.bytes("value")?,
                lease: r.u64("lease id")?,
            },
            12 => Op::LeaseGrant {
                id: r.u64("lease id")?,
                ttl_ms: r.u64("lease ttl")?,
            },
            13 => Op::LeaseRevoke(r.u64("lease id")?),
            14 => Op::Etcd(r.bytes("etcd request")?),
            t => {
                return Err(DecodeError::BadTag {
                    what: "op",
                    tag: t as u32,
                })
            }
        })
    }
}

/// The one replicated write: all guards hold and every op applies, or
/// nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub guards: Vec<Guard>,
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn payload_bytes(&self) -> usize {
        self.guards.iter().map(Guard::payload_bytes).sum::<usize>()
            + self.ops.iter().map(Op::payload_bytes).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.guards.is_empty() && self.ops.is_empty()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        4 + self.guards.iter().map(Guard::encoded_len).sum::<usize>()
            + 4
            + self.ops.iter().map(Op::encoded_len).sum::<usize>()
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.guards.len() as u32);
        for g in &self.guards {
            g.encode(w);
        }
        w.u32(self.ops.len() as u32);
        for o in &self.ops {
            o.encode(w);
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Batch, DecodeError> {
        // Smallest guard/op: a tag and an empty key.
        let n = r.count("guards", 5)?;
        let mut guards = Vec::with_capacity(n);
        for _ in 0..n {
            guards.push(Guard::decode(r)?);
        }
        let n = r.count("ops", 5)?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(Op::decode(r)?);
        }
        Ok(Batch { guards, ops })
    }
}

/// A client session stamp: the state machine remembers the highest `seq`
/// applied per `client_id` so a write retried after a failover applies
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub client_id: u64,
    pub seq: u64,
}

/// What a Raft log entry carries: the guarded batch and its session.
///
/// The first byte is the format: 1 for a batch of the ops every node has
/// always known, 2 for one that uses an op added later
/// ([`Op::command_format`]). A command is written in the oldest format
/// that can carry it, so whatever format 1 could say is still written, and
/// read, byte for byte as before; a node that knows only format 1 refuses
/// a format-2 entry as undecodable instead of misreading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub session: Option<Session>,
    pub batch: Batch,
}

impl Command {
    pub const FORMAT_V1: u8 = 1;
    /// Adds [`Op::TestAndSet`].
    pub const FORMAT_V2: u8 = 2;
    /// Adds leases ([`Op::SetLeased`], [`Op::LeaseGrant`],
    /// [`Op::LeaseRevoke`]) and [`Guard::LockHeld`].
    pub const FORMAT_V3: u8 = 3;
    /// Adds [`Op::Etcd`].
    pub const FORMAT_V4: u8 = 4;
    /// The newest format this build reads and writes.
    pub const FORMAT_NEWEST: u8 = Self::FORMAT_V4;

    /// The format this command is written in: the oldest that carries
    /// every op of its batch.
    pub fn format(&self) -> u8 {
        let ops = self.batch.ops.iter().map(Op::command_format);
        let guards = self.batch.guards.iter().map(Guard::command_format);
        ops.chain(guards).max().unwrap_or(Self::FORMAT_V1)
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = 2 + if self.session.is_some() { 16 } else { 0 } + self.batch.encoded_len();
        let mut w = Writer::with_buf(Vec::with_capacity(len));
        w.u8(self.format());
        match self.session {
            None => w.u8(0),
            Some(s) => {
                w.u8(1);
                w.u64(s.client_id);
                w.u64(s.seq);
            }
        }
        self.batch.encode(&mut w);
        w.into_inner()
    }

    pub fn decode(buf: Bytes) -> Result<Command, DecodeError> {
        let mut r = Reader::new(buf);
        let v = r.u8("command format")?;
        if !(Self::FORMAT_V1..=Self::FORMAT_NEWEST).contains(&v) {
            return Err(DecodeError::BadTag {
                what: "command format",
                tag: v as u32,
            });
        }
        let session = if r.bool("session")? {
            Some(Session {
                client_id: r.u64("client_id")?,
                seq: r.u64("seq")?,
            })
        } else {
            None
        };
        let batch = Batch::decode(&mut r)?;
        r.finish("command")?;
        let cmd = Command { session, batch };
        // Each format is one set of ops: an op newer than the format
        // byte says was not written by this code.
        if let Some(op) = cmd.batch.ops.iter().find(|o| o.command_format() > v) {
            return Err(DecodeError::BadTag {
                what: "op newer than its command's format",
                tag: u32::from(op.tag()),
            });
        }
        if cmd.batch.guards.iter().any(|g| g.command_format() > v) {
            return Err(DecodeError::BadTag {
                what: "guard newer than its command's format",
                tag: u32::from(v),
            });
        }
        // Nor was a newer format byte than the ops need: every command has
        // one encoding, so a log entry decodes and encodes to the same bytes.
        if cmd.format() != v {
            return Err(DecodeError::BadTag {
                what: "command format (newer than its ops need)",
                tag: u32::from(v),
            });
        }
        Ok(cmd)
    }
}
