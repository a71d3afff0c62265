//! Requests: every operation a client can ask for, and what each means
//! (its opcode, whether it writes, the batch it compiles to). The wire
//! encoding is in `request_codec.rs`.

use bytes::Bytes;

use crate::coord::CoordRequest;
use crate::types::{Batch, Consistency, Guard, Op, Session};

/// A key range: optional first and last keys, each inclusive or not, at
/// most `max` results (a server clamps `max` to its own limit and its page
/// says whether more follow; [`RangeQuery::after`] asks for the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeQuery {
    pub first: Option<Bytes>,
    pub first_inclusive: bool,
    pub last: Option<Bytes>,
    pub last_inclusive: bool,
    pub max: u32,
    /// Descending: the scan starts at `last` and ends at `first` (`first`
    /// is always the low end).
    pub reverse: bool,
}

impl RangeQuery {
    /// The keys that start with `prefix` (all keys for an empty one), at
    /// most `max`: the range a `PrefixKeys` read covers.
    pub fn prefix(prefix: Bytes, max: u32) -> RangeQuery {
        let last = prefix_end(&prefix);
        RangeQuery {
            first: Some(prefix),
            first_inclusive: true,
            last,
            last_inclusive: false,
            max,
            reverse: false,
        }
    }

    /// The rest of this range after `key` (excluded), in the same
    /// direction: what to ask next after a page whose last key is `key`
    /// and whose `more` flag is set.
    pub fn after(&self, key: Bytes) -> RangeQuery {
        let mut q = self.clone();
        if q.reverse {
            q.last = Some(key);
            q.last_inclusive = false;
        } else {
            q.first = Some(key);
            q.first_inclusive = false;
        }
        q
    }
}

/// The first key after every key that starts with `prefix`: the prefix
/// with its last byte below `FF` incremented and what follows dropped;
/// `None` (no end) if there is no such byte.
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let keep = prefix.iter().rposition(|&b| b < 0xff)?;
    let mut end = prefix[..=keep].to_vec();
    end[keep] += 1;
    Some(Bytes::from(end))
}

/// Every operation a client can ask for. Opcodes are in [`Request::opcode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Version,
    WhoMaster,
    Statistics,
    GetTxid,
    Get {
        consistency: Consistency,
        key: Bytes,
    },
    /// Get with revisions.
    GetEntry {
        consistency: Consistency,
        key: Bytes,
    },
    Exists {
        consistency: Consistency,
        key: Bytes,
    },
    MultiGet {
        consistency: Consistency,
        keys: Vec<Bytes>,
    },
    MultiGetOption {
        consistency: Consistency,
        keys: Vec<Bytes>,
    },
    /// Keys only.
    Range {
        consistency: Consistency,
        query: RangeQuery,
    },
    /// Keys, values and revisions.
    RangeEntries {
        consistency: Consistency,
        query: RangeQuery,
    },
    PrefixKeys {
        consistency: Consistency,
        prefix: Bytes,
        max: u32,
    },
    KeyCount {
        consistency: Consistency,
    },
    Set {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    Confirm {
        key: Bytes,
        value: Bytes,
    },
    TestAndSet {
        key: Bytes,
        expected: Option<Bytes>,
        wanted: Option<Bytes>,
    },
    Replace {
        key: Bytes,
        wanted: Option<Bytes>,
    },
    DeletePrefix {
        prefix: Bytes,
    },
    /// A sequence or any guarded batch; all or nothing.
    Batch(Batch),
    Nop,
    /// A write stamped with the client's session: retried with the same
    /// stamp after a failover, it applies at most once. `request` must be
    /// a write and not itself a `Session`.
    Session {
        session: Session,
        request: Box<Request>,
    },
    /// Membership and replication progress, as the leader sees it.
    ClusterStatus,
    /// Adds a non-voting member that receives the log (a learner).
    AddLearner {
        name: String,
        client: String,
        peer: String,
    },
    /// Makes a learner a voter. The leader refuses one that lags it by
    /// more than its bound (`LearnerBehind`) unless `force`.
    Promote {
        name: String,
        force: bool,
    },
    /// Removes a member (voter or learner).
    RemoveNode {
        name: String,
    },
    /// Asks the leader to hand leadership to this member.
    TransferLeader {
        name: String,
    },
    /// Streams a consistent backup of the whole store (protocol 2; opcode
    /// 45): the node answers with `Response::Backup` frames under this
    /// request's id, chunks of the file then its end (docs/protocol.md).
    Backup,
    /// Calls a function of a Lua script (docs/scripts.md). `version`
    /// pins a version, else the live one runs. A function that writes
    /// is proposed by the leader as a guarded batch; one that only reads
    /// answers at `consistency`.
    Call {
        script: String,
        function: String,
        args: Vec<Bytes>,
        version: Option<u64>,
        consistency: Consistency,
    },
    /// Installs a new version of a script and makes it live.
    ScriptPut {
        name: String,
        source: Bytes,
    },
    ScriptList,
    /// The source of a version (default: the live one).
    ScriptShow {
        name: String,
        version: Option<u64>,
    },
    ScriptHistory {
        name: String,
    },
    /// Makes an earlier (or later) installed version live again.
    ScriptRollback {
        name: String,
        version: u64,
    },
    ScriptDelete {
        name: String,
    },
    /// Watches and leases (opcodes 60 to 66; protocol 2).
    Coord(CoordRequest),
}

impl Request {
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Ping => 1,
            Request::Version => 2,
            Request::WhoMaster => 3,
            Request::Statistics => 4,
            Request::GetTxid => 5,
            Request::Get { .. } => 10,
            Request::GetEntry { .. } => 11,
            Request::Exists { .. } => 12,
            Request::MultiGet { .. } => 13,
            Request::MultiGetOption { .. } => 14,
            Request::Range { .. } => 15,
            Request::RangeEntries { .. } => 16,
            Request::PrefixKeys { .. } => 17,
            Request::KeyCount { .. } => 18,
            Request::Set { .. } => 30,
            Request::Delete { .. } => 31,
            Request::Confirm { .. } => 32,
            Request::TestAndSet { .. } => 33,
            Request::Replace { .. } => 34,
            Request::DeletePrefix { .. } => 35,
            Request::Batch(_) => 36,
            Request::Nop => 37,
            Request::Session { .. } => 38,
            Request::ClusterStatus => 40,
            Request::AddLearner { .. } => 41,
            Request::Promote { .. } => 42,
            Request::RemoveNode { .. } => 43,
            Request::TransferLeader { .. } => 44,
            Request::Backup => 45,
            Request::Call { .. } => 50,
            Request::ScriptPut { .. } => 51,
            Request::ScriptList => 52,
            Request::ScriptShow { .. } => 53,
            Request::ScriptHistory { .. } => 54,
            Request::ScriptRollback { .. } => 55,
            Request::ScriptDelete { .. } => 56,
            Request::Coord(c) => c.opcode(),
        }
    }

    /// Writes of user data through the replicated log (membership changes
    /// also go through the log but are administrative requests).
    pub fn is_write(&self) -> bool {
        matches!(self.opcode(), 30..=38)
    }

    /// Requests that may change state and so must not be re-sent blindly
    /// after a lost connection: writes, calls (a function may write) and
    /// script installs.
    pub fn may_write(&self) -> bool {
        self.is_write()
            || matches!(self.opcode(), 50 | 51 | 55 | 56)
            || matches!(self, Request::Coord(c) if c.may_write())
    }

    /// The consistency a read asks for (writes and admin requests: none).
    pub fn consistency(&self) -> Option<Consistency> {
        match self {
            Request::Session { request, .. } => request.consistency(),
            Request::Get { consistency, .. }
            | Request::GetEntry { consistency, .. }
            | Request::Exists { consistency, .. }
            | Request::MultiGet { consistency, .. }
            | Request::MultiGetOption { consistency, .. }
            | Request::Range { consistency, .. }
            | Request::RangeEntries { consistency, .. }
            | Request::PrefixKeys { consistency, .. }
            | Request::KeyCount { consistency }
            | Request::Call { consistency, .. } => Some(*consistency),
            _ => None,
        }
    }

    /// The guarded batch a write compiles to. `Confirm` is not here: it
    /// writes only when the value differs, which the server decides with a
    /// consistent read before it proposes a plain set.
    pub fn to_batch(&self) -> Option<Batch> {
        let b = match self {
            Request::Set { key, value } => Batch {
                guards: vec![],
                ops: vec![Op::Set(key.clone(), value.clone())],
            },
            Request::Delete { key } => Batch {
                guards: vec![],
                ops: vec![Op::Delete(key.clone())],
            },
            Request::TestAndSet {
                key,
                expected,
                wanted,
            } => Batch {
                guards: vec![match expected {
                    None => Guard::Absent(key.clone()),
                    Some(v) => Guard::ValueEquals(key.clone(), v.clone()),
                }],
                ops: vec![match wanted {
                    None => Op::Remove(key.clone()),
                    Some(v) => Op::Set(key.clone(), v.clone()),
                }],
            },
            Request::Replace { key, wanted } => Batch {
                guards: vec![],
                ops: vec![match wanted {
                    None => Op::Remove(key.clone()),
                    Some(v) => Op::Set(key.clone(), v.clone()),
                }],
            },
            Request::DeletePrefix { prefix } => Batch {
                guards: vec![],
                ops: vec![Op::DeletePrefix(prefix.clone())],
            },
            Request::Batch(b) => b.clone(),
            Request::Nop => Batch::default(),
            Request::Session { request, .. } => return request.to_batch(),
            _ => return None,
        };
        Some(b)
    }
}
