//! Reads of the etcd API, from one snapshot of the store: a Range (at the
//! newest revision, or an older one from the watch history) and a Txn
//! whose every op is a Range (it changes nothing, so it needs no log
//! entry: its compares and ranges read one snapshot, as etcd's do).

use nacre_etcd_proto::etcdserverpb as pb;
use nacre_proto::{ErrorCode, ErrorReply};
use nacre_store::{ReadTxn, Store};

use crate::state::{
    compare_holds, read_applied, read_interval, read_revision, shape_range, COMPACTED, FUTURE_REV,
};
use crate::watch::WatchHub;

fn too_large(bytes_max: usize) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Busy,
        format!(
            "the response would be over etcd_response_bytes_max {bytes_max}; \
             ask for fewer keys with a limit"
        ),
    )
}

/// The pairs of etcd's interval in a snapshot, or `Busy` naming the
/// limit once they would pass `bytes_max`.
fn interval(
    snapshot: &ReadTxn,
    key: &[u8],
    range_end: &[u8],
    bytes_max: usize,
) -> Result<Vec<nacre_etcd_proto::mvccpb::KeyValue>, ErrorReply> {
    read_interval(snapshot, key, range_end, bytes_max)?.ok_or_else(|| too_large(bytes_max))
}

/// A Range from a fresh snapshot: the store revision it read at, and the
/// response (its header left to the caller).
pub(super) fn range(
    store: &Store,
    hub: &WatchHub,
    r: &pb::RangeRequest,
    bytes_max: usize,
) -> Result<(u64, pb::RangeResponse), ErrorReply> {
    let txn = store.begin_read();
    let (revision, compacted) = read_revision(&txn)?;
    let kvs = interval(&txn, &r.key, &r.range_end, bytes_max)?;
    let kvs = match u64::try_from(r.revision) {
        Ok(0) | Err(_) => kvs,
        Ok(rev) if rev > revision => return Err(ErrorReply::new(ErrorCode::BadInput, FUTURE_REV)),
        Ok(rev) if rev < compacted => return Err(ErrorReply::new(ErrorCode::Compacted, COMPACTED)),
        Ok(rev) if rev == revision => kvs,
        Ok(rev) => super::history::as_of(hub, read_applied(&txn)?, rev, r, kvs)?,
    };
    Ok((revision, shape_range(kvs, r)))
}

/// A Txn of ranges only, from a fresh snapshot.
pub(super) fn txn(
    store: &Store,
    hub: &WatchHub,
    t: &pb::TxnRequest,
    bytes_max: usize,
) -> Result<(u64, pb::TxnResponse), ErrorReply> {
    let snapshot = store.begin_read();
    let (revision, _) = read_revision(&snapshot)?;
    let mut resp = txn_at(&snapshot, revision, t, bytes_max)?;
    past_ranges(store, hub, t, &mut resp, bytes_max)?;
    Ok((revision, resp))
}

/// Whether a Txn holds a Range at a revision of its own.
pub(super) fn has_past_range(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Rq;
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Rq::RequestRange(r)) => r.revision > 0,
            Some(Rq::RequestTxn(nested)) => has_past_range(nested),
            _ => false,
        })
}

/// Answers the Ranges of a Txn's branch that asked for an older revision
/// than the one they were read at: history no Txn changes, so reading it
/// after the Txn applied gives what etcd reads inside it.
pub(super) fn past_ranges(
    store: &Store,
    hub: &WatchHub,
    t: &pb::TxnRequest,
    resp: &mut pb::TxnResponse,
    bytes_max: usize,
) -> Result<(), ErrorReply> {
    use pb::request_op::Request as Rq;
    use pb::response_op::Response as Rs;
    let branch = if resp.succeeded {
        &t.success
    } else {
        &t.failure
    };
    for (op, answer) in branch.iter().zip(resp.responses.iter_mut()) {
        match (&op.request, &mut answer.response) {
            (Some(Rq::RequestRange(r)), Some(Rs::ResponseRange(got))) if r.revision > 0 => {
                let read_at = got.header.as_ref().map_or(0, |h| h.revision);
                if r.revision < read_at {
                    let header = got.header.take();
                    *got = range(store, hub, r, bytes_max)?.1;
                    got.header = header;
                }
            }
            (Some(Rq::RequestTxn(nested)), Some(Rs::ResponseTxn(got))) => {
                past_ranges(store, hub, nested, got, bytes_max)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn txn_at(
    snapshot: &ReadTxn,
    revision: u64,
    t: &pb::TxnRequest,
    bytes_max: usize,
) -> Result<pb::TxnResponse, ErrorReply> {
    use pb::request_op::Request as Rq;
    use pb::response_op::Response as Rs;
    let mut succeeded = true;
    for c in &t.compare {
        let kvs = interval(snapshot, &c.key, &c.range_end, bytes_max)?;
        if !compare_holds(c, &kvs) {
            succeeded = false;
            break;
        }
    }
    let header = || pb::ResponseHeader {
        revision: revision as i64,
        ..Default::default()
    };
    let branch = if succeeded { &t.success } else { &t.failure };
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        let response = match &op.request {
            Some(Rq::RequestRange(r)) => {
                if u64::try_from(r.revision).is_ok_and(|rev| rev > revision) {
                    return Err(ErrorReply::new(ErrorCode::BadInput, FUTURE_REV));
                }
                let kvs = interval(snapshot, &r.key, &r.range_end, bytes_max)?;
                let mut resp = shape_range(kvs, r);
                resp.header = Some(header());
                Rs::ResponseRange(resp)
            }
            Some(Rq::RequestTxn(nested)) => {
                let mut resp = txn_at(snapshot, revision, nested, bytes_max)?;
                // etcd leaves a nested Txn's header empty.
                resp.header = Some(pb::ResponseHeader::default());
                Rs::ResponseTxn(resp)
            }
            _ => {
                return Err(ErrorReply::new(
                    ErrorCode::Internal,
                    "a write in a Txn served as a read",
                ))
            }
        };
        responses.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    Ok(pb::TxnResponse {
        header: Some(header()),
        succeeded,
        responses,
    })
}
