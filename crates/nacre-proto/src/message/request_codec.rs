//! The wire encoding of requests: an opcode byte, then the fields of that
//! request in order (docs/protocol.md has the layout of each).
//!
//! Decoding goes by opcode family (reads, writes, cluster administration,
//! scripts), each family in its own function; an opcode no family knows is
//! a `BadTag`.

use crate::coord::CoordRequest;
use crate::types::{Batch, Consistency, Session};
use crate::wire::{bytes_len, opt_bytes_len, Reader, Writer};
use crate::DecodeError;

use super::request::{RangeQuery, Request};

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

impl Request {
    /// Bytes [`Request::encode`] writes, opcode included.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Request::Ping
            | Request::Version
            | Request::WhoMaster
            | Request::Statistics
            | Request::GetTxid
            | Request::Nop
            | Request::ClusterStatus
            | Request::Backup
            | Request::ScriptList => 0,
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
            Request::AddLearner { name, client, peer } => {
                bytes_len(name.as_bytes())
                    + bytes_len(client.as_bytes())
                    + bytes_len(peer.as_bytes())
            }
            Request::Promote { name, .. } => bytes_len(name.as_bytes()) + 1,
            Request::RemoveNode { name } | Request::TransferLeader { name } => {
                bytes_len(name.as_bytes())
            }
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
            Request::ScriptShow { name, version } => {
                bytes_len(name.as_bytes()) + 1 + version.map_or(0, |_| 8)
            }
            Request::ScriptHistory { name } | Request::ScriptDelete { name } => {
                bytes_len(name.as_bytes())
            }
            Request::ScriptRollback { name, .. } => bytes_len(name.as_bytes()) + 8,
            Request::Coord(c) => c.encoded_len(),
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
            | Request::Nop
            | Request::ClusterStatus
            | Request::Backup
            | Request::ScriptList => {}
            Request::Get { consistency, key }
            | Request::GetEntry { consistency, key }
            | Request::Exists { consistency, key } => {
                consistency.encode(w);
                w.bytes(key);
            }
            Request::MultiGet { consistency, keys }
            | Request::MultiGetOption { consistency, keys } => {
                consistency.encode(w);
                w.list(keys, |w, k| w.bytes(k));
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
            Request::Delete { key } | Request::DeletePrefix { prefix: key } => w.bytes(key),
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
            Request::Batch(b) => b.encode(w),
            Request::Session { session, request } => {
                w.u64(session.client_id);
                w.u64(session.seq);
                request.encode(w);
            }
            Request::AddLearner { .. }
            | Request::Promote { .. }
            | Request::RemoveNode { .. }
            | Request::TransferLeader { .. }
            | Request::ScriptHistory { .. }
            | Request::ScriptDelete { .. } => self.encode_named(w),
            Request::Call {
                script,
                function,
                args,
                version,
                consistency,
            } => {
                w.str(script);
                w.str(function);
                w.list(args, |w, a| w.bytes(a));
                opt_u64(w, *version);
                consistency.encode(w);
            }
            Request::ScriptPut { name, source } => {
                w.str(name);
                w.bytes(source);
            }
            Request::ScriptShow { name, version } => {
                w.str(name);
                opt_u64(w, *version);
            }
            Request::ScriptRollback { name, version } => {
                w.str(name);
                w.u64(*version);
            }
            Request::Coord(c) => c.encode(w),
        }
    }

    /// The fields of the requests that name a member or a script.
    fn encode_named(&self, w: &mut Writer) {
        match self {
            Request::AddLearner { name, client, peer } => {
                w.str(name);
                w.str(client);
                w.str(peer);
            }
            Request::Promote { name, force } => {
                w.str(name);
                w.bool(*force);
            }
            Request::RemoveNode { name }
            | Request::TransferLeader { name }
            | Request::ScriptHistory { name }
            | Request::ScriptDelete { name } => w.str(name),
            _ => unreachable!("encode_named is called for named requests only"),
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Request, DecodeError> {
        match r.u8("opcode")? {
            op @ 1..=18 => decode_read(op, r),
            op @ 30..=38 => decode_write(op, r),
            op @ 40..=45 => decode_admin(op, r),
            op @ 50..=56 => decode_script(op, r),
            op @ 60..=66 => Ok(Request::Coord(CoordRequest::decode(op, r)?)),
            op => Err(bad_opcode(op)),
        }
    }
}

fn bad_opcode(op: u8) -> DecodeError {
    DecodeError::BadTag {
        what: "opcode",
        tag: op as u32,
    }
}

/// Status requests and reads of user data (opcodes 1 to 18).
fn decode_read(op: u8, r: &mut Reader) -> Result<Request, DecodeError> {
    Ok(match op {
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
            let keys = r.list("keys", 4, |r| r.bytes("key"))?;
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
        op => return Err(bad_opcode(op)),
    })
}

/// Writes of user data through the log (opcodes 30 to 38).
fn decode_write(op: u8, r: &mut Reader) -> Result<Request, DecodeError> {
    Ok(match op {
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
        38 => decode_session(r)?,
        op => return Err(bad_opcode(op)),
    })
}

/// A write stamped with a session: the stamp, then the write itself.
fn decode_session(r: &mut Reader) -> Result<Request, DecodeError> {
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
    Ok(Request::Session {
        session,
        request: Box::new(request),
    })
}

/// Membership, leadership and backups (opcodes 40 to 45).
fn decode_admin(op: u8, r: &mut Reader) -> Result<Request, DecodeError> {
    Ok(match op {
        40 => Request::ClusterStatus,
        41 => Request::AddLearner {
            name: r.string("name")?,
            client: r.string("client address")?,
            peer: r.string("peer address")?,
        },
        42 => Request::Promote {
            name: r.string("name")?,
            force: r.bool("force")?,
        },
        43 => Request::RemoveNode {
            name: r.string("name")?,
        },
        44 => Request::TransferLeader {
            name: r.string("name")?,
        },
        45 => Request::Backup,
        op => return Err(bad_opcode(op)),
    })
}

/// Script calls and script management (opcodes 50 to 56).
fn decode_script(op: u8, r: &mut Reader) -> Result<Request, DecodeError> {
    Ok(match op {
        50 => Request::Call {
            script: r.string("script")?,
            function: r.string("function")?,
            args: r.list("args", 4, |r| r.bytes("arg"))?,
            version: read_opt_u64(r, "script version")?,
            consistency: Consistency::decode(r)?,
        },
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
        op => return Err(bad_opcode(op)),
    })
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
