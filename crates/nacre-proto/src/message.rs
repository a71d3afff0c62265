//! Requests and replies: what travels inside a frame.

use bytes::Bytes;

use crate::types::{Batch, Consistency, Guard, KeyEntry, Op, Session};
use crate::wire::{bytes_len, opt_bytes_len, Reader, Writer};
use crate::DecodeError;

/// A key range: optional first and last keys, each inclusive or not, at
/// most `max` results (a server clamps `max` to its own limit; page on by
/// asking again from the last key returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeQuery {
    pub first: Option<Bytes>,
    pub first_inclusive: bool,
    pub last: Option<Bytes>,
    pub last_inclusive: bool,
    pub max: u32,
    /// Newest key first.
    pub reverse: bool,
}

impl RangeQuery {
    fn encoded_len(&self) -> usize {
        opt_bytes_len(self.first.as_deref()) + 1 + opt_bytes_len(self.last.as_deref()) + 1 + 4 + 1
    }

    fn encode(&self, w: &mut Writer) {
        w.opt_bytes(self.first.as_deref());
        w.bool(self.first_inclusive);
        w.opt_bytes(self.last.as_deref());
        w.bool(self.last_inclusive);
        w.u32(self.max);
        w.bool(self.reverse);
    }

    fn decode(r: &mut Reader) -> Result<RangeQuery, DecodeError> {
        Ok(RangeQuery {
            first: r.opt_bytes("first")?,
            first_inclusive: r.bool("first_inclusive")?,
            last: r.opt_bytes("last")?,
            last_inclusive: r.bool("last_inclusive")?,
            max: r.u32("max")?,
            reverse: r.bool("reverse")?,
        })
    }
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
    /// Makes a learner a voter.
    Promote {
        name: String,
    },
    /// Removes a member (voter or learner).
    RemoveNode {
        name: String,
    },
    /// Asks the leader to hand leadership to this member.
    TransferLeader {
        name: String,
    },
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
            Request::Call { .. } => 50,
            Request::ScriptPut { .. } => 51,
            Request::ScriptList => 52,
            Request::ScriptShow { .. } => 53,
            Request::ScriptHistory { .. } => 54,
            Request::ScriptRollback { .. } => 55,
            Request::ScriptDelete { .. } => 56,
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
        self.is_write() || matches!(self.opcode(), 50 | 51 | 55 | 56)
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

    /// Bytes [`Request::encode`] writes, opcode included.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Request::Ping
            | Request::Version
            | Request::WhoMaster
            | Request::Statistics
            | Request::GetTxid
            | Request::Nop => 0,
            Request::Get { consistency, key }
            | Request::GetEntry { consistency, key }
            | Request::Exists { consistency, key } => consistency.encoded_len() + bytes_len(key),
            Request::MultiGet { consistency, keys }
            | Request::MultiGetOption { consistency, keys } => {
                consistency.encoded_len() + 4 + keys.iter().map(|k| bytes_len(k)).sum::<usize>()
            }
            Request::Range { consistency, query }
            | Request::RangeEntries { consistency, query } => {
                consistency.encoded_len() + query.encoded_len()
            }
            Request::PrefixKeys {
                consistency,
                prefix,
                ..
            } => consistency.encoded_len() + bytes_len(prefix) + 4,
            Request::KeyCount { consistency } => consistency.encoded_len(),
            Request::Set { key, value } | Request::Confirm { key, value } => {
                bytes_len(key) + bytes_len(value)
            }
            Request::Delete { key } => bytes_len(key),
            Request::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                bytes_len(key)
                    + opt_bytes_len(expected.as_deref())
                    + opt_bytes_len(wanted.as_deref())
            }
            Request::Replace { key, wanted } => bytes_len(key) + opt_bytes_len(wanted.as_deref()),
            Request::DeletePrefix { prefix } => bytes_len(prefix),
            Request::Batch(b) => b.encoded_len(),
            Request::Session { request, .. } => 16 + request.encoded_len(),
            Request::ClusterStatus => 0,
            Request::AddLearner { name, client, peer } => {
                bytes_len(name.as_bytes())
                    + bytes_len(client.as_bytes())
                    + bytes_len(peer.as_bytes())
            }
            Request::Promote { name }
            | Request::RemoveNode { name }
            | Request::TransferLeader { name } => bytes_len(name.as_bytes()),
            Request::Call {
                script,
                function,
                args,
                version,
                consistency,
            } => {
                bytes_len(script.as_bytes())
                    + bytes_len(function.as_bytes())
                    + 4
                    + args.iter().map(|a| bytes_len(a)).sum::<usize>()
                    + 1
                    + version.map_or(0, |_| 8)
                    + consistency.encoded_len()
            }
            Request::ScriptPut { name, source } => bytes_len(name.as_bytes()) + bytes_len(source),
            Request::ScriptList => 0,
            Request::ScriptShow { name, version } => {
                bytes_len(name.as_bytes()) + 1 + version.map_or(0, |_| 8)
            }
            Request::ScriptHistory { name } | Request::ScriptDelete { name } => {
                bytes_len(name.as_bytes())
            }
            Request::ScriptRollback { name, .. } => bytes_len(name.as_bytes()) + 8,
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.opcode());
        match self {
            Request::Ping
            | Request::Version
            | Request::WhoMaster
            | Request::Statistics
            | Request::GetTxid
            | Request::Nop => {}
            Request::Get { consistency, key }
            | Request::GetEntry { consistency, key }
            | Request::Exists { consistency, key } => {
                consistency.encode(w);
                w.bytes(key);
            }
            Request::MultiGet { consistency, keys }
            | Request::MultiGetOption { consistency, keys } => {
                consistency.encode(w);
                w.u32(keys.len() as u32);
                for k in keys {
                    w.bytes(k);
                }
            }
            Request::Range { consistency, query }
            | Request::RangeEntries { consistency, query } => {
                consistency.encode(w);
                query.encode(w);
            }
            Request::PrefixKeys {
                consistency,
                prefix,
                max,
            } => {
                consistency.encode(w);
                w.bytes(prefix);
                w.u32(*max);
            }
            Request::KeyCount { consistency } => consistency.encode(w),
            Request::Set { key, value } | Request::Confirm { key, value } => {
                w.bytes(key);
                w.bytes(value);
            }
            Request::Delete { key } => w.bytes(key),
            Request::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                w.bytes(key);
                w.opt_bytes(expected.as_deref());
                w.opt_bytes(wanted.as_deref());
            }
            Request::Replace { key, wanted } => {
                w.bytes(key);
                w.opt_bytes(wanted.as_deref());
            }
            Request::DeletePrefix { prefix } => w.bytes(prefix),
            Request::Batch(b) => b.encode(w),
            Request::Session { session, request } => {
                w.u64(session.client_id);
                w.u64(session.seq);
                request.encode(w);
            }
            Request::ClusterStatus => {}
            Request::AddLearner { name, client, peer } => {
                w.str(name);
                w.str(client);
                w.str(peer);
            }
            Request::Promote { name }
            | Request::RemoveNode { name }
            | Request::TransferLeader { name } => w.str(name),
            Request::Call {
                script,
                function,
                args,
                version,
                consistency,
            } => {
                w.str(script);
                w.str(function);
                w.u32(args.len() as u32);
                for a in args {
                    w.bytes(a);
                }
                opt_u64(w, *version);
                consistency.encode(w);
            }
            Request::ScriptPut { name, source } => {
                w.str(name);
                w.bytes(source);
            }
            Request::ScriptList => {}
            Request::ScriptShow { name, version } => {
                w.str(name);
                opt_u64(w, *version);
            }
            Request::ScriptHistory { name } | Request::ScriptDelete { name } => w.str(name),
            Request::ScriptRollback { name, version } => {
                w.str(name);
                w.u64(*version);
            }
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Request, DecodeError> {
        let op = r.u8("opcode")?;
        let req = match op {
            1 => Request::Ping,
            2 => Request::Version,
            3 => Request::WhoMaster,
            4 => Request::Statistics,
            5 => Request::GetTxid,
            10..=12 => {
                let consistency = Consistency::decode(r)?;
                let key = r.bytes("key")?;
                match op {
                    10 => Request::Get { consistency, key },
                    11 => Request::GetEntry { consistency, key },
                    _ => Request::Exists { consistency, key },
                }
            }
            13 | 14 => {
                let consistency = Consistency::decode(r)?;
                let n = r.count("keys", 4)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes("key")?);
                }
                if op == 13 {
                    Request::MultiGet { consistency, keys }
                } else {
                    Request::MultiGetOption { consistency, keys }
                }
            }
            15 | 16 => {
                let consistency = Consistency::decode(r)?;
                let query = RangeQuery::decode(r)?;
                if op == 15 {
                    Request::Range { consistency, query }
                } else {
                    Request::RangeEntries { consistency, query }
                }
            }
            17 => Request::PrefixKeys {
                consistency: Consistency::decode(r)?,
                prefix: r.bytes("prefix")?,
                max: r.u32("max")?,
            },
            18 => Request::KeyCount {
                consistency: Consistency::decode(r)?,
            },
            30 => Request::Set {
                key: r.bytes("key")?,
                value: r.bytes("value")?,
            },
            31 => Request::Delete {
                key: r.bytes("key")?,
            },
            32 => Request::Confirm {
                key: r.bytes("key")?,
                value: r.bytes("value")?,
            },
            33 => Request::TestAndSet {
                key: r.bytes("key")?,
                expected: r.opt_bytes("expected")?,
                wanted: r.opt_bytes("wanted")?,
            },
            34 => Request::Replace {
                key: r.bytes("key")?,
                wanted: r.opt_bytes("wanted")?,
            },
            35 => Request::DeletePrefix {
                prefix: r.bytes("prefix")?,
            },
            36 => Request::Batch(Batch::decode(r)?),
            37 => Request::Nop,
            38 => {
                let session = Session {
                    client_id: r.u64("client_id")?,
                    seq: r.u64("seq")?,
                };
                let request = Request::decode(r)?;
                // One level only: this also bounds the decoder's recursion.
                if !request.may_write() || matches!(request, Request::Session { .. }) {
                    return Err(DecodeError::BadTag {
                        what: "session request",
                        tag: request.opcode() as u32,
                    });
                }
                Request::Session {
                    session,
                    request: Box::new(request),
                }
            }
            40 => Request::ClusterStatus,
            41 => Request::AddLearner {
                name: r.string("name")?,
                client: r.string("client address")?,
                peer: r.string("peer address")?,
            },
            42 => Request::Promote {
                name: r.string("name")?,
            },
            43 => Request::RemoveNode {
                name: r.string("name")?,
            },
            44 => Request::TransferLeader {
                name: r.string("name")?,
            },
            50 => {
                let script = r.string("script")?;
                let function = r.string("function")?;
                let n = r.count("args", 4)?;
                let mut args = Vec::with_capacity(n);
                for _ in 0..n {
                    args.push(r.bytes("arg")?);
                }
                Request::Call {
                    script,
                    function,
                    args,
                    version: read_opt_u64(r, "script version")?,
                    consistency: Consistency::decode(r)?,
                }
            }
            51 => Request::ScriptPut {
                name: r.string("script name")?,
                source: r.bytes("script source")?,
            },
            52 => Request::ScriptList,
            53 => Request::ScriptShow {
                name: r.string("script name")?,
                version: read_opt_u64(r, "script version")?,
            },
            54 => Request::ScriptHistory {
                name: r.string("script name")?,
            },
            55 => Request::ScriptRollback {
                name: r.string("script name")?,
                version: r.u64("script version")?,
            },
            56 => Request::ScriptDelete {
                name: r.string("script name")?,
            },
            t => {
                return Err(DecodeError::BadTag {
                    what: "opcode",
                    tag: t as u32,
                })
            }
        };
        Ok(req)
    }
}

/// An optional u64: a presence byte, then the value if present.
fn opt_u64(w: &mut Writer, v: Option<u64>) {
    match v {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            w.u64(v);
        }
    }
}

fn read_opt_u64(r: &mut Reader, what: &'static str) -> Result<Option<u64>, DecodeError> {
    Ok(if r.bool(what)? {
        Some(r.u64(what)?)
    } else {
        None
    })
}

/// Typed error codes. Unknown codes from a newer peer decode as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A key that must exist does not (get, multi_get, delete).
    NotFound,
    /// A guard or assertion failed; the reply names the key.
    AssertionFailed,
    /// This node is not the leader; the reply hints who is, if known.
    NotMaster,
    /// The node has not applied the index an `at_least` read asked for.
    InconsistentRead,
    /// The request is malformed or breaks a rule.
    BadInput,
    /// A key, value, batch, frame or range is over its limit.
    TooLarge,
    /// The node is shutting down.
    GoingDown,
    /// No quorum: the cluster cannot make progress now.
    Unavailable,
    /// Too many connections or requests in flight.
    Busy,
    /// The handshake named another cluster.
    WrongCluster,
    /// The handshake asked for a protocol version this node does not speak.
    UnsupportedVersion,
    /// The request did not complete in time; it may or may not have applied.
    Timeout,
    /// Stored data failed its checksum; the node refuses to serve it.
    Corruption,
    /// Anything else that went wrong inside the node.
    Internal,
    /// A script call kept losing to concurrent writes: its reads changed
    /// before its effects applied, on every retry.
    Conflict,
    /// A script failed: syntax error at install, runtime error (the
    /// message names the line), or a bad return value.
    ScriptError,
    /// A script call ran over its instruction or memory budget.
    BudgetExceeded,
    Unknown(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotFound => 1,
            ErrorCode::AssertionFailed => 2,
            ErrorCode::NotMaster => 3,
            ErrorCode::InconsistentRead => 4,
            ErrorCode::BadInput => 5,
            ErrorCode::TooLarge => 6,
            ErrorCode::GoingDown => 7,
            ErrorCode::Unavailable => 8,
            ErrorCode::Busy => 9,
            ErrorCode::WrongCluster => 10,
            ErrorCode::UnsupportedVersion => 11,
            ErrorCode::Timeout => 12,
            ErrorCode::Corruption => 13,
            ErrorCode::Internal => 14,
            ErrorCode::Conflict => 15,
            ErrorCode::ScriptError => 16,
            ErrorCode::BudgetExceeded => 17,
            ErrorCode::Unknown(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::AssertionFailed,
            3 => ErrorCode::NotMaster,
            4 => ErrorCode::InconsistentRead,
            5 => ErrorCode::BadInput,
            6 => ErrorCode::TooLarge,
            7 => ErrorCode::GoingDown,
            8 => ErrorCode::Unavailable,
            9 => ErrorCode::Busy,
            10 => ErrorCode::WrongCluster,
            11 => ErrorCode::UnsupportedVersion,
            12 => ErrorCode::Timeout,
            13 => ErrorCode::Corruption,
            14 => ErrorCode::Internal,
            15 => ErrorCode::Conflict,
            16 => ErrorCode::ScriptError,
            17 => ErrorCode::BudgetExceeded,
            c => ErrorCode::Unknown(c),
        }
    }

    /// A stable lower-case name, used by the CLI's JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AssertionFailed => "assertion_failed",
            ErrorCode::NotMaster => "not_master",
            ErrorCode::InconsistentRead => "inconsistent_read",
            ErrorCode::BadInput => "bad_input",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::GoingDown => "going_down",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::WrongCluster => "wrong_cluster",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Corruption => "corruption",
            ErrorCode::Internal => "internal",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ScriptError => "script_error",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Unknown(c) => write!(f, "unknown error code {c}"),
            c => f.write_str(c.name()),
        }
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    /// The key the error is about (NotFound, AssertionFailed).
    pub key: Option<Bytes>,
    /// For NotMaster: the leader's client address, when known.
    pub leader: Option<String>,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
            key: None,
            leader: None,
        }
    }

    pub fn with_key(mut self, key: Bytes) -> ErrorReply {
        self.key = Some(key);
        self
    }

    pub fn with_leader(mut self, leader: Option<String>) -> ErrorReply {
        self.leader = leader;
        self
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

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
            Response::Error(_) => 255,
        }
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
            Response::Values(vs) | Response::Keys(vs) => {
                w.u32(vs.len() as u32);
                for v in vs {
                    w.bytes(v);
                }
            }
            Response::OptValues(vs) => {
                w.u32(vs.len() as u32);
                for v in vs {
                    w.opt_bytes(v.as_deref());
                }
            }
            Response::Entries(es) => {
                w.u32(es.len() as u32);
                for e in es {
                    e.encode(w);
                }
            }
            Response::Text(s) => w.str(s),
            Response::Master(m) => w.opt_str(m.as_deref()),
            Response::Version(v) => {
                w.u32(v.major);
                w.u32(v.minor);
                w.u32(v.patch);
                w.str(&v.info);
            }
            Response::Stats(kv) => {
                w.u32(kv.len() as u32);
                for (k, v) in kv {
                    w.str(k);
                    w.str(v);
                }
            }
            Response::Members(ms) => {
                w.u32(ms.len() as u32);
                for m in ms {
                    m.encode(w);
                }
            }
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
            Response::Scripts(ss) => {
                w.u32(ss.len() as u32);
                for s in ss {
                    w.str(&s.name);
                    w.u64(s.live);
                    w.u64(s.latest);
                }
            }
            Response::Script(s) => {
                w.str(&s.name);
                w.u64(s.version);
                w.u64(s.index);
                w.bool(s.live);
                w.bytes(&s.source);
            }
            Response::ScriptVersions(vs) => {
                w.u32(vs.len() as u32);
                for v in vs {
                    w.u64(v.version);
                    w.u64(v.index);
                    w.u64(v.size_bytes);
                    w.bool(v.live);
                }
            }
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
            t @ (5 | 7) => {
                let n = r.count("values", 4)?;
                let mut vs = Vec::with_capacity(n);
                for _ in 0..n {
                    vs.push(r.bytes("value")?);
                }
                if t == 5 {
                    Response::Values(vs)
                } else {
                    Response::Keys(vs)
                }
            }
            6 => {
                let n = r.count("values", 1)?;
                let mut vs = Vec::with_capacity(n);
                for _ in 0..n {
                    vs.push(r.opt_bytes("value")?);
                }
                Response::OptValues(vs)
            }
            8 => {
                let n = r.count("entries", KeyEntry::ENCODED_MIN_BYTES)?;
                let mut es = Vec::with_capacity(n);
                for _ in 0..n {
                    es.push(KeyEntry::decode(r)?);
                }
                Response::Entries(es)
            }
            9 => Response::Text(r.string("text")?),
            10 => Response::Master(r.opt_string("master")?),
            11 => Response::Version(VersionInfo {
                major: r.u32("major")?,
                minor: r.u32("minor")?,
                patch: r.u32("patch")?,
                info: r.string("info")?,
            }),
            12 => {
                let n = r.count("stats", 8)?;
                let mut kv = Vec::with_capacity(n);
                for _ in 0..n {
                    kv.push((r.string("stat name")?, r.string("stat value")?));
                }
                Response::Stats(kv)
            }
            14 => {
                // Smallest member: id, three empty strings, flags, index.
                let n = r.count("members", 8 + 12 + 2 + 8)?;
                let mut ms = Vec::with_capacity(n);
                for _ in 0..n {
                    ms.push(Member::decode(r)?);
                }
                Response::Members(ms)
            }
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
            16 => {
                let n = r.count("scripts", 4 + 16)?;
                let mut ss = Vec::with_capacity(n);
                for _ in 0..n {
                    ss.push(ScriptSummary {
                        name: r.string("script name")?,
                        live: r.u64("live version")?,
                        latest: r.u64("latest version")?,
                    });
                }
                Response::Scripts(ss)
            }
            17 => Response::Script(ScriptSource {
                name: r.string("script name")?,
                version: r.u64("version")?,
                index: r.u64("index")?,
                live: r.bool("live")?,
                source: r.bytes("script source")?,
            }),
            18 => {
                let n = r.count("script versions", 25)?;
                let mut vs = Vec::with_capacity(n);
                for _ in 0..n {
                    vs.push(ScriptVersionInfo {
                        version: r.u64("version")?,
                        index: r.u64("index")?,
                        size_bytes: r.u64("size")?,
                        live: r.bool("live")?,
                    });
                }
                Response::ScriptVersions(vs)
            }
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
