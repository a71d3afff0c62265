//! Proptest strategies for every protocol value, shared by the test files.
#![allow(dead_code)]

use nacre_proto::{
    BackupFrame, BackupSummary, Batch, Bytes, ClientHello, Command, Consistency, CoordRequest,
    CoordResponse, ErrorCode, ErrorReply, EventKind, Guard, KeyEntry, KeySpan, LeaseInfo, Member,
    Op, Page, RangeQuery, Request, Response, Revision, ScriptSource, ScriptSummary,
    ScriptVersionInfo, ServerHello, Session, VersionInfo, WatchEvent, WatchSpec,
    NAME_SIZE_MAX_BYTES,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

pub fn key() -> impl Strategy<Value = Bytes> {
    bytes(24)
}

pub fn value() -> impl Strategy<Value = Bytes> {
    bytes(64)
}

pub fn keys() -> impl Strategy<Value = Vec<Bytes>> {
    vec(key(), 0..6)
}

/// Any UTF-8 text, multi-byte characters included.
pub fn text(max_chars: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max_chars).prop_map(|cs| cs.into_iter().collect())
}

/// A handshake name: valid UTF-8 of at most `NAME_SIZE_MAX_BYTES` bytes.
pub fn name() -> impl Strategy<Value = String> {
    text(80).prop_filter("name over the handshake limit", |s| {
        s.len() <= NAME_SIZE_MAX_BYTES
    })
}

pub fn consistency() -> impl Strategy<Value = Consistency> {
    prop_oneof![
        Just(Consistency::Consistent),
        Just(Consistency::Any),
        any::<u64>().prop_map(Consistency::AtLeast),
    ]
}

pub fn revision() -> impl Strategy<Value = Revision> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(create_rev, mod_rev, version)| Revision {
        create_rev,
        mod_rev,
        version,
    })
}

pub fn entry() -> impl Strategy<Value = KeyEntry> {
    (key(), value(), revision()).prop_map(|(key, value, rev)| KeyEntry { key, value, rev })
}

pub fn guard() -> impl Strategy<Value = Guard> {
    prop_oneof![
        key().prop_map(Guard::Absent),
        key().prop_map(Guard::Present),
        (key(), value()).prop_map(|(k, v)| Guard::ValueEquals(k, v)),
        (key(), any::<u64>()).prop_map(|(k, v)| Guard::VersionEquals(k, v)),
        (key(), keys()).prop_map(|(prefix, keys)| Guard::PrefixKeysEqual { prefix, keys }),
        (key(), any::<u64>()).prop_map(|(prefix, token)| Guard::LockHeld { prefix, token }),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), value()).prop_map(|(k, v)| Op::Set(k, v)),
        key().prop_map(Op::Delete),
        key().prop_map(Op::DeletePrefix),
        guard().prop_map(Op::Check),
        key().prop_map(Op::Remove),
        (key(), value()).prop_map(|(name, source)| Op::ScriptPut { name, source }),
        (key(), any::<u64>()).prop_map(|(name, version)| Op::ScriptActivate { name, version }),
        key().prop_map(Op::ScriptDelete),
        (key(), any::<u64>()).prop_map(|(name, version)| Op::ScriptLive { name, version }),
        (key(), option::of(value()), option::of(value())).prop_map(|(key, expected, wanted)| {
            Op::TestAndSet {
                key,
                expected,
                wanted,
            }
        }),
        (key(), value(), any::<u64>()).prop_map(|(key, value, lease)| Op::SetLeased {
            key,
            value,
            lease
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, ttl_ms)| Op::LeaseGrant { id, ttl_ms }),
        any::<u64>().prop_map(Op::LeaseRevoke),
    ]
}

pub fn key_span() -> impl Strategy<Value = KeySpan> {
    prop_oneof![
        key().prop_map(KeySpan::Key),
        key().prop_map(KeySpan::Prefix),
        (key(), option::of(key())).prop_map(|(start, end)| KeySpan::Range { start, end }),
    ]
}

pub fn coord_request() -> impl Strategy<Value = CoordRequest> {
    prop_oneof![
        (key_span(), any::<u64>(), any::<bool>()).prop_map(|(span, start_rev, prev_value)| {
            CoordRequest::Watch(WatchSpec {
                span,
                start_rev,
                prev_value,
            })
        }),
        any::<u64>().prop_map(|watch_id| CoordRequest::WatchCancel { watch_id }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, ttl_ms)| CoordRequest::LeaseGrant { id, ttl_ms }),
        any::<u64>().prop_map(|id| CoordRequest::LeaseRevoke { id }),
        vec(any::<u64>(), 0..5).prop_map(|ids| CoordRequest::LeaseKeepAlive { ids }),
        (any::<u64>(), any::<bool>()).prop_map(|(id, keys)| CoordRequest::LeaseTtl { id, keys }),
        Just(CoordRequest::LeaseList),
    ]
}

pub fn watch_event() -> impl Strategy<Value = WatchEvent> {
    (
        any::<bool>(),
        key(),
        value(),
        revision(),
        option::of(value()),
    )
        .prop_map(|(put, key, value, rev, prev)| WatchEvent {
            kind: if put {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            key,
            value,
            rev,
            prev,
            etcd: Default::default(),
        })
}

pub fn lease_info() -> impl Strategy<Value = LeaseInfo> {
    (any::<u64>(), any::<u64>(), any::<u64>(), keys()).prop_map(
        |(id, ttl_ms, remaining_ms, keys)| LeaseInfo {
            id,
            ttl_ms,
            remaining_ms,
            keys,
        },
    )
}

pub fn coord_response() -> impl Strategy<Value = CoordResponse> {
    prop_oneof![
        (vec(watch_event(), 0..4), any::<u64>())
            .prop_map(|(events, revision)| CoordResponse::Watched { events, revision }),
        (error_code(), text(20), any::<u64>()).prop_map(|(code, message, revision)| {
            CoordResponse::WatchEnd {
                code,
                message,
                revision,
            }
        }),
        lease_info().prop_map(CoordResponse::Lease),
        vec(lease_info(), 0..4).prop_map(CoordResponse::Leases),
    ]
}

pub fn batch() -> impl Strategy<Value = Batch> {
    (vec(guard(), 0..4), vec(op(), 0..6)).prop_map(|(guards, ops)| Batch { guards, ops })
}

pub fn command() -> impl Strategy<Value = Command> {
    (
        option::of(
            (any::<u64>(), any::<u64>()).prop_map(|(client_id, seq)| Session { client_id, seq }),
        ),
        batch(),
    )
        .prop_map(|(session, batch)| Command { session, batch })
}

pub fn range_query() -> impl Strategy<Value = RangeQuery> {
    (
        option::of(key()),
        any::<bool>(),
        option::of(key()),
        any::<bool>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(first, first_inclusive, last, last_inclusive, max, reverse)| RangeQuery {
                first,
                first_inclusive,
                last,
                last_inclusive,
                max,
                reverse,
            },
        )
}

pub fn request() -> impl Strategy<Value = Request> {
    let c = consistency;
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Version),
        Just(Request::WhoMaster),
        Just(Request::Statistics),
        Just(Request::GetTxid),
        (c(), key()).prop_map(|(consistency, key)| Request::Get { consistency, key }),
        (c(), key()).prop_map(|(consistency, key)| Request::GetEntry { consistency, key }),
        (c(), key()).prop_map(|(consistency, key)| Request::Exists { consistency, key }),
        (c(), keys()).prop_map(|(consistency, keys)| Request::MultiGet { consistency, keys }),
        (c(), keys()).prop_map(|(consistency, keys)| Request::MultiGetOption { consistency, keys }),
        (c(), range_query()).prop_map(|(consistency, query)| Request::Range { consistency, query }),
        (c(), range_query())
            .prop_map(|(consistency, query)| Request::RangeEntries { consistency, query }),
        (c(), key(), any::<u32>()).prop_map(|(consistency, prefix, max)| Request::PrefixKeys {
            consistency,
            prefix,
            max
        }),
        c().prop_map(|consistency| Request::KeyCount { consistency }),
        (key(), value()).prop_map(|(key, value)| Request::Set { key, value }),
        key().prop_map(|key| Request::Delete { key }),
        (key(), value()).prop_map(|(key, value)| Request::Confirm { key, value }),
        (key(), option::of(value()), option::of(value())).prop_map(|(key, expected, wanted)| {
            Request::TestAndSet {
                key,
                expected,
                wanted,
            }
        }),
        (key(), option::of(value())).prop_map(|(key, wanted)| Request::Replace { key, wanted }),
        key().prop_map(|prefix| Request::DeletePrefix { prefix }),
        batch().prop_map(Request::Batch),
        Just(Request::Nop),
        (any::<u64>(), any::<u64>(), key(), value()).prop_map(|(client_id, seq, key, value)| {
            Request::Session {
                session: Session { client_id, seq },
                request: Box::new(Request::Set { key, value }),
            }
        }),
        (any::<u64>(), any::<u64>(), batch()).prop_map(|(client_id, seq, b)| Request::Session {
            session: Session { client_id, seq },
            request: Box::new(Request::Batch(b)),
        }),
        Just(Request::ClusterStatus),
        (text(10), text(20), text(20)).prop_map(|(name, client, peer)| Request::AddLearner {
            name,
            client,
            peer
        }),
        (text(10), any::<bool>()).prop_map(|(name, force)| Request::Promote { name, force }),
        text(10).prop_map(|name| Request::RemoveNode { name }),
        text(10).prop_map(|name| Request::TransferLeader { name }),
        Just(Request::Backup),
        (
            text(10),
            text(10),
            vec(value(), 0..4),
            option::of(any::<u64>()),
            c()
        )
            .prop_map(|(script, function, args, version, consistency)| {
                Request::Call {
                    script,
                    function,
                    args,
                    version,
                    consistency,
                }
            }),
        (text(10), value()).prop_map(|(name, source)| Request::ScriptPut { name, source }),
        Just(Request::ScriptList),
        (text(10), option::of(any::<u64>()))
            .prop_map(|(name, version)| Request::ScriptShow { name, version }),
        text(10).prop_map(|name| Request::ScriptHistory { name }),
        (text(10), any::<u64>())
            .prop_map(|(name, version)| Request::ScriptRollback { name, version }),
        text(10).prop_map(|name| Request::ScriptDelete { name }),
        coord_request().prop_map(Request::Coord),
    ]
}

/// Known codes, and unknown ones outside the known range (an `Unknown(c)`
/// with a known `c` cannot survive the wire: it decodes as the known code).
pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        (1u16..=23).prop_map(ErrorCode::from_u16),
        prop_oneof![Just(0u16), 24u16..].prop_map(ErrorCode::Unknown),
    ]
}

pub fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (
        error_code(),
        text(30),
        option::of(key()),
        option::of(text(20)),
    )
        .prop_map(|(code, message, key, leader)| ErrorReply {
            code,
            message,
            key,
            leader,
        })
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Unit),
        any::<bool>().prop_map(Response::Bool),
        any::<u64>().prop_map(Response::U64),
        option::of(value()).prop_map(Response::Value),
        option::of(entry()).prop_map(Response::Entry),
        vec(value(), 0..6).prop_map(Response::Values),
        vec(option::of(value()), 0..6).prop_map(Response::OptValues),
        keys().prop_map(Response::Keys),
        vec(entry(), 0..6).prop_map(Response::Entries),
        text(40).prop_map(Response::Text),
        option::of(text(20)).prop_map(Response::Master),
        (any::<u32>(), any::<u32>(), any::<u32>(), text(20)).prop_map(
            |(major, minor, patch, info)| {
                Response::Version(VersionInfo {
                    major,
                    minor,
                    patch,
                    info,
                })
            }
        ),
        vec((text(10), text(10)), 0..6).prop_map(Response::Stats),
        (any::<u64>(), option::of(value()), any::<u64>())
            .prop_map(|(index, prev, count)| Response::Written { index, prev, count }),
        error_reply().prop_map(Response::Error),
        (any::<u64>(), any::<u64>(), option::of(value())).prop_map(|(version, index, value)| {
            Response::Called {
                version,
                index,
                value,
            }
        }),
        vec((text(10), any::<u64>(), any::<u64>()), 0..4).prop_map(|ss| Response::Scripts(
            ss.into_iter()
                .map(|(name, live, latest)| ScriptSummary { name, live, latest })
                .collect()
        )),
        (text(10), any::<u64>(), any::<u64>(), any::<bool>(), value()).prop_map(
            |(name, version, index, live, source)| Response::Script(ScriptSource {
                name,
                version,
                index,
                live,
                source,
            })
        ),
        vec(
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()),
            0..4
        )
        .prop_map(|vs| {
            Response::ScriptVersions(
                vs.into_iter()
                    .map(|(version, index, size_bytes, live)| ScriptVersionInfo {
                        version,
                        index,
                        size_bytes,
                        live,
                    })
                    .collect(),
            )
        }),
        vec(
            (
                any::<u64>(),
                text(10),
                text(20),
                text(20),
                any::<bool>(),
                any::<bool>(),
                any::<u64>()
            ),
            0..4
        )
        .prop_map(|ms| Response::Members(
            ms.into_iter()
                .map(
                    |(id, name, client, peer, voter, leader, match_index)| Member {
                        id,
                        name,
                        client,
                        peer,
                        voter,
                        leader,
                        match_index,
                    }
                )
                .collect()
        )),
        (keys(), any::<bool>()).prop_map(|(items, more)| Response::KeyPage(Page { items, more })),
        (vec(entry(), 0..6), any::<bool>())
            .prop_map(|(items, more)| Response::EntryPage(Page { items, more })),
        coord_response().prop_map(Response::Coord),
        backup_frame().prop_map(Response::Backup),
    ]
}

pub fn backup_frame() -> impl Strategy<Value = BackupFrame> {
    prop_oneof![
        bytes(64).prop_map(BackupFrame::Chunk),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            bytes(32)
        )
            .prop_map(|(applied, revision, pairs, size_bytes, sha256)| {
                BackupFrame::End(BackupSummary {
                    applied,
                    revision,
                    pairs,
                    size_bytes,
                    sha256,
                })
            }),
    ]
}

pub fn client_hello() -> impl Strategy<Value = ClientHello> {
    (any::<u16>(), name()).prop_map(|(version, cluster_id)| ClientHello {
        version,
        cluster_id,
    })
}

pub fn server_hello() -> impl Strategy<Value = ServerHello> {
    (any::<u16>(), any::<u16>(), name(), name(), name()).prop_map(
        |(version, status, cluster_id, node, message)| ServerHello {
            version,
            status,
            cluster_id,
            node,
            message,
        },
    )
}

/// A request or a response, to mix both in one stream of frames.
#[derive(Debug, Clone)]
pub enum Msg {
    Req(Request),
    Resp(Response),
}

pub fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![request().prop_map(Msg::Req), response().prop_map(Msg::Resp)]
}
