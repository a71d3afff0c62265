//! etcd v3 writes applied with etcd's meaning (docs/etcd.md): Put,
//! DeleteRange, Txn (compares, either branch, nested Txns, Ranges that see
//! the Txn's own writes) and Compact. They travel in the log as
//! [`Op::Etcd`](nacre_proto::Op::Etcd): a kind byte, then the request in
//! etcd's protobuf encoding, so the log holds exactly what the client
//! asked and every replica decides the same way.
//!
//! A request either applies whole or changes nothing: a failure part-way
//! (a lease that does not exist, `ignore_value` on a missing key) rolls
//! the batch back from its undo log, as a failed Nacre batch does.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes};
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::mvccpb::KeyValue;
use nacre_proto::{ErrorCode, Revision};
use nacre_store::{ReadTxn, WriteTxn};
use prost::Message;

use super::etcd_range::{compare_holds, etcd_bounds, shape_range};
use super::kv::{decode_stored, remove, set, user_key, Effects, Undo};
use super::{leases, Outcome, StateError};

/// Kind byte of an etcd op: a `RequestOp` (Put, DeleteRange or Txn).
const KIND_REQUEST: u8 = 1;
/// Kind byte of an etcd op: a `CompactionRequest`.
const KIND_COMPACT: u8 = 2;

/// The revision etcd clients see as the store's: the last log index that
/// changed a user key (u64 LE). Replicated, so every member decides a
/// Compact against the same number.
pub(super) const REVISION_KEY: &[u8] = b"m/etcd/revision";
/// The revision of the last Compact (u64 LE); 0: none.
pub(super) const COMPACTED_KEY: &[u8] = b"m/etcd/compacted";

/// The payload of an [`Op::Etcd`](nacre_proto::Op::Etcd) carrying `op`.
pub fn encode_request(op: &pb::RequestOp) -> Bytes {
    let mut buf = Vec::with_capacity(1 + op.encoded_len());
    buf.put_u8(KIND_REQUEST);
    op.encode(&mut buf)
        .expect("a Vec grows to hold any message");
    buf.into()
}

/// The payload of an [`Op::Etcd`](nacre_proto::Op::Etcd) compacting at `revision`.
pub fn encode_compact(revision: i64) -> Bytes {
    let req = pb::CompactionRequest {
        revision,
        physical: false,
    };
    let mut buf = Vec::with_capacity(1 + req.encoded_len());
    buf.put_u8(KIND_COMPACT);
    req.encode(&mut buf)
        .expect("a Vec grows to hold any message");
    buf.into()
}

/// Why an etcd request applied nothing: the code Nacre reports it with and
/// etcd's own message, which clients match on.
pub(super) struct Refused {
    code: ErrorCode,
    message: String,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

type Applied<T> = Result<Result<T, Refused>, StateError>;

/// User keys (without the namespace byte) and their stored records.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One of the two replicated records etcd's meaning needs; 0 if absent.
fn decode_u64(key: &[u8], raw: Option<Vec<u8>>) -> Result<u64, StateError> {
    match raw {
        Some(raw) => match <[u8; 8]>::try_from(&raw[..]) {
            Ok(b) => Ok(u64::from_le_bytes(b)),
            Err(_) => {
                Err(super::Corruption::new(key, "etcd revision record", "not 8 bytes").into())
            }
        },
        None => Ok(0),
    }
}

fn read_u64(txn: &WriteTxn<'_>, key: &[u8]) -> Result<u64, StateError> {
    decode_u64(key, txn.get(key)?)
}

/// etcd's store revision and the last compaction's, in a snapshot. A
/// store no write has changed is at revision 1, as a new etcd is.
pub fn read_revision(txn: &ReadTxn) -> Result<(u64, u64), StateError> {
    Ok((
        decode_u64(REVISION_KEY, txn.get(REVISION_KEY)?)?.max(1),
        decode_u64(COMPACTED_KEY, txn.get(COMPACTED_KEY)?)?,
    ))
}

/// Checks an etcd record of a snapshot: 8 bytes.
pub(super) fn check_etcd_record(key: &[u8], value: &[u8]) -> Result<(), super::Corruption> {
    if value.len() == 8 {
        Ok(())
    } else {
        Err(super::Corruption::new(
            key,
            "etcd revision record",
            "not 8 bytes",
        ))
    }
}

pub(super) fn is_etcd_key(key: &[u8]) -> bool {
    key == REVISION_KEY || key == COMPACTED_KEY
}

/// Applies one etcd op. `Outcome::Etcd` carries the revision the client
/// is told (this index if a key changed, else the store's revision) and
/// the encoded `ResponseOp`; a refused request is `Outcome::Failed` with
/// etcd's message, and left nothing behind.
pub(super) fn apply_etcd(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    payload: &Bytes,
) -> Result<Outcome, StateError> {
    let Some((&kind, body)) = payload.split_first() else {
        return Ok(bad("an empty etcd op"));
    };
    let events_before = fx.events.len();
    let mut undo = Undo::new();
    let result = match kind {
        KIND_REQUEST => match pb::RequestOp::decode(body) {
            Ok(op) => {
                let mut path = VecDeque::new();
                if let Some(pb::request_op::Request::RequestTxn(t)) = &op.request {
                    decide(txn, fx, t, &mut path)?;
                    let path: Vec<bool> = path.iter().copied().collect();
                    for step in [Check::Puts, Check::Ranges] {
                        if let Err(r) = precheck(txn, fx, t, &path, &mut 0, step)? {
                            return Ok(failed_outcome(r));
                        }
                    }
                }
                request_op(txn, fx, &op, &mut undo, &mut path)?.map(|r| r.encode_to_vec())
            }
            Err(e) => return Ok(bad(&format!("an undecodable etcd request: {e}"))),
        },
        KIND_COMPACT => match pb::CompactionRequest::decode(body) {
            Ok(c) => compact(txn, c.revision, fx.revision, &mut undo)?.map(|()| Vec::new()),
            Err(e) => return Ok(bad(&format!("an undecodable etcd compaction: {e}"))),
        },
        k => return Ok(bad(&format!("an etcd op of unknown kind {k}"))),
    };
    match result {
        Ok(response) => {
            let revision = fx.revision_now();
            Ok(Outcome::Etcd {
                revision,
                response: response.into(),
            })
        }
        Err(r) => {
            super::kv::rollback(txn, undo)?;
            fx.events.truncate(events_before);
            Ok(failed_outcome(r))
        }
    }
}

fn failed_outcome(r: Refused) -> Outcome {
    Outcome::Failed {
        code: r.code,
        key: Bytes::new(),
        current: None,
        message: r.message,
    }
}

/// What [`precheck`] looks at in one pass.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    Puts,
    Ranges,
}

/// etcd checks the ops a Txn will run before it runs any, against the
/// state before it: every put's lease and `ignore_*` key first, then
/// every range's revision; the first refusal fails the Txn.
fn precheck(
    txn: &mut WriteTxn<'_>,
    fx: &Effects<'_>,
    t: &pb::TxnRequest,
    path: &[bool],
    at: &mut usize,
    step: Check,
) -> Applied<()> {
    use pb::request_op::Request as Rq;
    let succeeded = path.get(*at).copied().unwrap_or(false);
    *at += 1;
    for op in if succeeded { &t.success } else { &t.failure } {
        let refusal = match (&op.request, step) {
            (Some(Rq::RequestPut(p)), Check::Puts) => check_put(txn, p)?,
            (Some(Rq::RequestRange(r)), Check::Ranges) => check_range(txn, fx, r)?,
            (Some(Rq::RequestTxn(nested)), _) => precheck(txn, fx, nested, path, at, step)?.err(),
            _ => None,
        };
        if let Some(r) = refusal {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

fn check_put(txn: &mut WriteTxn<'_>, p: &pb::PutRequest) -> Result<Option<Refused>, StateError> {
    if p.lease != 0 && !leases::exists(txn, p.lease as u64)? {
        return Ok(Some(refused(ErrorCode::LeaseNotFound, LEASE_NOT_FOUND)));
    }
    if (p.ignore_value || p.ignore_lease) && !txn.exists(&user_key(&p.key))? {
        return Ok(Some(refused(
            ErrorCode::BadInput,
            "etcdserver: key not found",
        )));
    }
    Ok(None)
}

/// A range's own revision: not past the store's, not compacted.
fn check_range(
    txn: &mut WriteTxn<'_>,
    fx: &Effects<'_>,
    r: &pb::RangeRequest,
) -> Result<Option<Refused>, StateError> {
    let Ok(rev @ 1..) = u64::try_from(r.revision) else {
        return Ok(None);
    };
    if rev > fx.revision {
        return Ok(Some(refused(ErrorCode::BadInput, FUTURE_REV)));
    }
    if rev < read_u64(txn, COMPACTED_KEY)? {
        return Ok(Some(refused(ErrorCode::Compacted, COMPACTED)));
    }
    Ok(None)
}

fn bad(why: &str) -> Outcome {
    Outcome::Failed {
        code: ErrorCode::BadInput,
        key: Bytes::new(),
        current: None,
        message: why.to_string(),
    }
}

fn compact(txn: &mut WriteTxn<'_>, revision: i64, current: u64, undo: &mut Undo) -> Applied<()> {
    let compacted = read_u64(txn, COMPACTED_KEY)?;
    let Ok(rev) = u64::try_from(revision) else {
        return Ok(Err(refused(
            ErrorCode::BadInput,
            "etcdserver: mvcc: required revision is negative",
        )));
    };
    if rev > current {
        return Ok(Err(refused(ErrorCode::BadInput, FUTURE_REV)));
    }
    if rev <= compacted {
        return Ok(Err(refused(ErrorCode::Compacted, COMPACTED)));
    }
    super::kv::put_undoable(txn, COMPACTED_KEY.to_vec(), &rev.to_le_bytes(), undo)?;
    Ok(Ok(()))
}

/// etcd's message for a revision it no longer has.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's message for a revision it does not have yet.
pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
/// etcd's message for a lease that does not exist.
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// Applies one op; `path`: the branches its Txns take ([`decide`]).
fn request_op(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    op: &pb::RequestOp,
    undo: &mut Undo,
    path: &mut VecDeque<bool>,
) -> Applied<pb::ResponseOp> {
    use pb::request_op::Request as Rq;
    use pb::response_op::Response as Rs;
    let response = match &op.request {
        Some(Rq::RequestPut(p)) => put(txn, fx, p, undo)?.map(Rs::ResponsePut),
        Some(Rq::RequestDeleteRange(d)) => {
            delete_range(txn, fx, d, undo)?.map(Rs::ResponseDeleteRange)
        }
        Some(Rq::RequestTxn(t)) => txn_request(txn, fx, t, undo, path)?.map(Rs::ResponseTxn),
        Some(Rq::RequestRange(r)) => range(txn, fx, r)?.map(Rs::ResponseRange),
        None => Err(refused(
            ErrorCode::BadInput,
            "etcdserver: an empty request op",
        )),
    };
    Ok(response.map(|r| pb::ResponseOp { response: Some(r) }))
}

/// A key's stored record as etcd's `KeyValue` (its lease looked up only
/// when leases exist).
fn key_value(
    txn: &WriteTxn<'_>,
    fx: &Effects<'_>,
    key: &[u8],
    raw: &[u8],
) -> Result<KeyValue, StateError> {
    let uk = user_key(key);
    let (rev, value) = decode_stored(&uk, raw)?;
    let lease = if fx.leases {
        leases::lease_of(txn, key)?
    } else {
        0
    };
    Ok(to_key_value(key, rev, value, lease))
}

/// etcd's `KeyValue` of a stored record.
pub fn to_key_value(key: &[u8], rev: Revision, value: &[u8], lease: u64) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key),
        create_revision: rev.create_rev as i64,
        mod_revision: rev.mod_rev as i64,
        version: rev.version as i64,
        value: Bytes::copy_from_slice(value),
        lease: lease as i64,
    }
}

fn put(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    p: &pb::PutRequest,
    undo: &mut Undo,
) -> Applied<pb::PutResponse> {
    // etcd looks for the lease before it looks at the key.
    if p.lease != 0 && !leases::exists(txn, p.lease as u64)? {
        return Ok(Err(refused(ErrorCode::LeaseNotFound, LEASE_NOT_FOUND)));
    }
    let uk = user_key(&p.key);
    let prev = match txn.get(&uk)? {
        Some(raw) => Some(key_value(txn, fx, &p.key, &raw)?),
        None => None,
    };
    let value = match (&prev, p.ignore_value) {
        (Some(kv), true) => kv.value.clone(),
        (None, true) => {
            return Ok(Err(refused(
                ErrorCode::BadInput,
                "etcdserver: key not found",
            )))
        }
        (_, false) => p.value.clone(),
    };
    let lease = match (&prev, p.ignore_lease) {
        (Some(kv), true) => kv.lease as u64,
        (None, true) => {
            return Ok(Err(refused(
                ErrorCode::BadInput,
                "etcdserver: key not found",
            )))
        }
        (_, false) => p.lease as u64,
    };
    set(txn, fx, &p.key, &value, undo)?;
    if lease != 0 {
        if let Err((_, _)) = leases::attach(txn, &p.key, lease, undo)? {
            return Ok(Err(refused(ErrorCode::LeaseNotFound, LEASE_NOT_FOUND)));
        }
        fx.leased(lease);
    }
    Ok(Ok(pb::PutResponse {
        header: Some(revision_header(fx)),
        prev_kv: if p.prev_kv { prev } else { None },
    }))
}

fn delete_range(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    d: &pb::DeleteRangeRequest,
    undo: &mut Undo,
) -> Applied<pb::DeleteRangeResponse> {
    let found = matching(txn, &d.key, &d.range_end)?;
    let mut prev_kvs = Vec::new();
    for (key, raw) in &found {
        if d.prev_kv {
            prev_kvs.push(key_value(txn, fx, key, raw)?);
        }
        remove(txn, fx, key, undo)?;
    }
    Ok(Ok(pb::DeleteRangeResponse {
        header: Some(revision_header(fx)),
        deleted: found.len() as i64,
        prev_kvs,
    }))
}

/// The user keys in etcd's `[key, range_end)` and their stored records.
fn matching(txn: &mut WriteTxn<'_>, key: &[u8], range_end: &[u8]) -> Result<Pairs, StateError> {
    let Some((start, end)) = etcd_bounds(key, range_end) else {
        let uk = user_key(key);
        return Ok(txn
            .get(&uk)?
            .map(|raw| (key.to_vec(), raw))
            .into_iter()
            .collect());
    };
    let end_bound = end
        .as_deref()
        .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let found = txn.range(std::ops::Bound::Included(&start[..]), end_bound)?;
    Ok(found
        .into_iter()
        .map(|(k, v)| (k[1..].to_vec(), v))
        .collect())
}

fn range(
    txn: &mut WriteTxn<'_>,
    fx: &Effects<'_>,
    r: &pb::RangeRequest,
) -> Applied<pb::RangeResponse> {
    // A Range in a Txn reads the Txn's state as it stands. One at an
    // older revision reads history the Txn cannot change: the server
    // answers it after the Txn applied (etcd/kv.rs); `precheck` refused
    // the Txn if etcd would refuse that revision.
    let kvs = interval_kvs(txn, fx, &r.key, &r.range_end)?;
    let mut resp = shape_range(kvs, r);
    resp.header = Some(revision_header(fx));
    Ok(Ok(resp))
}

/// The pairs of etcd's interval `[key, range_end)` as the Txn stands.
fn interval_kvs(
    txn: &mut WriteTxn<'_>,
    fx: &Effects<'_>,
    key: &[u8],
    range_end: &[u8],
) -> Result<Vec<KeyValue>, StateError> {
    let found = matching(txn, key, range_end)?;
    found
        .iter()
        .map(|(key, raw)| key_value(txn, fx, key, raw))
        .collect()
}

/// A response's header inside the state machine: only the revision (the
/// server fills in the rest of the outermost one).
fn revision_header(fx: &Effects<'_>) -> pb::ResponseHeader {
    pb::ResponseHeader {
        revision: fx.revision_now() as i64,
        ..Default::default()
    }
}

/// Which branch each Txn takes, the outermost first, then its nested
/// Txns in the order they run: etcd decides every compare, nested ones
/// too, against the state before the Txn changes anything.
fn decide(
    txn: &mut WriteTxn<'_>,
    fx: &Effects<'_>,
    t: &pb::TxnRequest,
    path: &mut VecDeque<bool>,
) -> Result<(), StateError> {
    let mut succeeded = true;
    for c in &t.compare {
        let kvs = interval_kvs(txn, fx, &c.key, &c.range_end)?;
        if !compare_holds(c, &kvs) {
            succeeded = false;
            break;
        }
    }
    path.push_back(succeeded);
    let branch = if succeeded { &t.success } else { &t.failure };
    for op in branch {
        if let Some(pb::request_op::Request::RequestTxn(nested)) = &op.request {
            decide(txn, fx, nested, path)?;
        }
    }
    Ok(())
}

fn txn_request(
    txn: &mut WriteTxn<'_>,
    fx: &mut Effects<'_>,
    t: &pb::TxnRequest,
    undo: &mut Undo,
    path: &mut VecDeque<bool>,
) -> Applied<pb::TxnResponse> {
    let succeeded = path.pop_front().unwrap_or(false);
    let branch = if succeeded { &t.success } else { &t.failure };
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        match request_op(txn, fx, op, undo, path)? {
            Ok(r) => responses.push(r),
            Err(e) => return Ok(Err(e)),
        }
    }
    // etcd leaves a Txn's own header empty; the server fills in the
    // outermost one.
    Ok(Ok(pb::TxnResponse {
        header: Some(pb::ResponseHeader::default()),
        succeeded,
        responses,
    }))
}
