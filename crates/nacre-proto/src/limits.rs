//! Named limits on what a request may carry. The server enforces them
//! (with a `TooLarge` or `BadInput` reply); the client checks them first so
//! that a caller gets the error without a round trip.

use crate::coord::{CoordRequest, KeySpan};
use crate::message::{ErrorCode, ErrorReply, Request};
use crate::types::{Batch, Guard, Op};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Whole frame, header excluded. Must hold one maximal value and key.
    pub frame_size_max_bytes: usize,
    pub key_size_max_bytes: usize,
    pub value_size_max_bytes: usize,
    /// Guards plus ops in one batch or sequence.
    pub batch_ops_max: usize,
    /// Keys and values in one batch, summed.
    pub batch_size_max_bytes: usize,
    /// Keys in one multi_get.
    pub multi_get_keys_max: usize,
    /// Results in one range or prefix reply; larger `max` values are
    /// clamped to this and the caller pages on from the last key.
    pub range_results_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            frame_size_max_bytes: 24 << 20,
            key_size_max_bytes: 4096,
            value_size_max_bytes: 16 << 20,
            batch_ops_max: 10_000,
            batch_size_max_bytes: 20 << 20,
            multi_get_keys_max: 10_000,
            range_results_max: 10_000,
        }
    }
}

impl Limits {
    pub fn key(&self, k: &[u8]) -> Result<(), ErrorReply> {
        if k.len() > self.key_size_max_bytes {
            return Err(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "key of {} bytes is over key_size_max_bytes {}",
                    k.len(),
                    self.key_size_max_bytes
                ),
            ));
        }
        Ok(())
    }

    pub fn value(&self, v: &[u8]) -> Result<(), ErrorReply> {
        if v.len() > self.value_size_max_bytes {
            return Err(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "value of {} bytes is over value_size_max_bytes {}",
                    v.len(),
                    self.value_size_max_bytes
                ),
            ));
        }
        Ok(())
    }

    fn guard(&self, g: &Guard) -> Result<(), ErrorReply> {
        match g {
            Guard::Absent(k)
            | Guard::Present(k)
            | Guard::VersionEquals(k, _)
            | Guard::LockHeld { prefix: k, .. } => self.key(k),
            Guard::ValueEquals(k, v) => {
                self.key(k)?;
                self.value(v)
            }
            Guard::PrefixKeysEqual { prefix, keys } => {
                self.key(prefix)?;
                keys.iter().try_for_each(|k| self.key(k))
            }
        }
    }

    /// Checks a batch against every limit.
    pub fn check_batch(&self, b: &Batch) -> Result<(), ErrorReply> {
        let n = b.guards.len() + b.ops.len();
        if n > self.batch_ops_max {
            return Err(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "batch of {n} steps is over batch_ops_max {}",
                    self.batch_ops_max
                ),
            ));
        }
        let size = b.payload_bytes();
        if size > self.batch_size_max_bytes {
            return Err(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "batch of {size} bytes is over batch_size_max_bytes {}",
                    self.batch_size_max_bytes
                ),
            ));
        }
        b.guards.iter().try_for_each(|g| self.guard(g))?;
        b.ops.iter().try_for_each(|o| match o {
            Op::Set(k, v)
            | Op::SetLeased {
                key: k, value: v, ..
            } => {
                self.key(k)?;
                self.value(v)
            }
            Op::Delete(k) | Op::DeletePrefix(k) | Op::Remove(k) => self.key(k),
            Op::Check(g) => self.guard(g),
            Op::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                self.key(key)?;
                expected.as_deref().map_or(Ok(()), |v| self.value(v))?;
                wanted.as_deref().map_or(Ok(()), |v| self.value(v))
            }
            Op::ScriptPut { name, source } => {
                self.key(name)?;
                self.value(source)
            }
            Op::ScriptActivate { name, .. }
            | Op::ScriptDelete(name)
            | Op::ScriptLive { name, .. } => self.key(name),
            Op::LeaseGrant { .. } | Op::LeaseRevoke(_) => Ok(()),
            // Checked field by field before the server builds one.
            Op::Etcd(_) => Ok(()),
        })
    }

    /// Checks a request against every limit that applies to it.
    pub fn check_request(&self, req: &Request) -> Result<(), ErrorReply> {
        match req {
            Request::Get { key, .. }
            | Request::GetEntry { key, .. }
            | Request::Exists { key, .. } => self.key(key),
            Request::MultiGet { keys, .. } | Request::MultiGetOption { keys, .. } => {
                if keys.len() > self.multi_get_keys_max {
                    return Err(ErrorReply::new(
                        ErrorCode::TooLarge,
                        format!(
                            "multi_get of {} keys is over multi_get_keys_max {}",
                            keys.len(),
                            self.multi_get_keys_max
                        ),
                    ));
                }
                keys.iter().try_for_each(|k| self.key(k))
            }
            Request::Range { query, .. } | Request::RangeEntries { query, .. } => {
                query.first.as_deref().map_or(Ok(()), |k| self.key(k))?;
                query.last.as_deref().map_or(Ok(()), |k| self.key(k))
            }
            Request::PrefixKeys { prefix, .. } | Request::DeletePrefix { prefix } => {
                self.key(prefix)
            }
            Request::Set { key, value } | Request::Confirm { key, value } => {
                self.key(key)?;
                self.value(value)
            }
            Request::Delete { key } => self.key(key),
            Request::TestAndSet {
                key,
                expected,
                wanted,
            } => {
                self.key(key)?;
                expected.as_deref().map_or(Ok(()), |v| self.value(v))?;
                wanted.as_deref().map_or(Ok(()), |v| self.value(v))
            }
            Request::Replace { key, wanted } => {
                self.key(key)?;
                wanted.as_deref().map_or(Ok(()), |v| self.value(v))
            }
            Request::Batch(b) => self.check_batch(b),
            Request::Session { request, .. } => self.check_request(request),
            Request::Call {
                script,
                function,
                args,
                ..
            } => {
                self.key(script.as_bytes())?;
                self.key(function.as_bytes())?;
                let size: usize = args.iter().map(Bytes::len).sum();
                if size > self.value_size_max_bytes {
                    return Err(ErrorReply::new(
                        ErrorCode::TooLarge,
                        format!(
                            "call arguments of {size} bytes are over value_size_max_bytes {}",
                            self.value_size_max_bytes
                        ),
                    ));
                }
                Ok(())
            }
            Request::ScriptPut { name, source } => {
                self.key(name.as_bytes())?;
                self.value(source)
            }
            Request::ScriptShow { name, .. }
            | Request::ScriptHistory { name }
            | Request::ScriptRollback { name, .. }
            | Request::ScriptDelete { name } => self.key(name.as_bytes()),
            Request::Coord(c) => self.check_coord(c),
            _ => Ok(()),
        }
    }

    fn check_coord(&self, c: &CoordRequest) -> Result<(), ErrorReply> {
        match c {
            CoordRequest::Watch(spec) => match &spec.span {
                KeySpan::Key(k) | KeySpan::Prefix(k) => self.key(k),
                KeySpan::Range { start, end } => {
                    self.key(start)?;
                    end.as_deref().map_or(Ok(()), |k| self.key(k))
                }
            },
            // One keep-alive renews as many leases as a multi_get reads keys.
            CoordRequest::LeaseKeepAlive { ids } if ids.len() > self.multi_get_keys_max => {
                Err(ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "keep-alive of {} leases is over multi_get_keys_max {}",
                        ids.len(),
                        self.multi_get_keys_max
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}
