//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact, checked
//! here as etcd checks them, then read from a snapshot or proposed to the
//! log as one [`Op::Etcd`](nacre_proto::Op::Etcd) each.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
use nacre_proto::{Consistency, ErrorCode, ErrorReply};
use prost::Message;
use tonic::{Request, Response, Status};

use super::errors::{DUPLICATE_KEY, KEY_NOT_PROVIDED, TOO_MANY_OPS};
use super::Api;
use crate::server::{off_the_workers, wait_for};
use crate::state::{encode_compact, encode_request};

pub(crate) struct KvService(pub Arc<Api>);

/// The KV service, with the message bounds of the API.
pub(super) fn service(api: &Arc<Api>) -> pb::kv_server::KvServer<KvService> {
    pb::kv_server::KvServer::from_arc(Arc::new(KvService(api.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |r| range(api, r).await,
            async |c, r| KvClient::new(c).range(r).await,
        )
        .await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |p| put(api, p).await,
            async |c, r| KvClient::new(c).put(r).await,
        )
        .await
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |d| delete_range(api, d).await,
            async |c, r| KvClient::new(c).delete_range(r).await,
        )
        .await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |t| txn(api, t).await,
            async |c, r| KvClient::new(c).txn(r).await,
        )
        .await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |c| compact(api, c).await,
            async |c, r| KvClient::new(c).compact(r).await,
        )
        .await
    }
}

fn bad(message: &str) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadInput, message)
}

pub(super) async fn range(
    api: &Api,
    r: &pb::RangeRequest,
) -> Result<pb::RangeResponse, ErrorReply> {
    if r.key.is_empty() {
        return Err(bad(KEY_NOT_PROVIDED));
    }
    let c = if r.serializable {
        Consistency::Any
    } else {
        Consistency::Consistent
    };
    wait_for(&api.shared, c).await?;
    let store = api.shared.store.clone();
    let hub = api.shared.node.watches.clone();
    let bytes_max = api.shared.config.etcd_response_bytes_max;
    // A get of one key at the newest revision reads a few pages: here, as
    // the native get does. Anything that may read many pages (an
    // interval, an older revision rebuilt from history) runs off the
    // async workers.
    let (revision, mut resp) = if r.range_end.is_empty() && r.revision == 0 {
        super::read::range(&store, &hub, r, bytes_max)?
    } else {
        let r = r.clone();
        off_the_workers(&api.shared, move || {
            super::read::range(&store, &hub, &r, bytes_max)
        })
        .await?
    };
    resp.header = Some(api.header(revision));
    Ok(resp)
}

/// Proposes one request op and takes its response apart.
async fn apply(
    api: &Api,
    op: pb::RequestOp,
) -> Result<(u64, pb::response_op::Response), ErrorReply> {
    let (revision, bytes) = api.propose(encode_request(&op)).await?;
    let decoded = pb::ResponseOp::decode(bytes).map_err(|e| {
        ErrorReply::new(
            ErrorCode::Internal,
            format!("an undecodable etcd response: {e}"),
        )
    })?;
    let response = decoded
        .response
        .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "an empty etcd response"))?;
    Ok((revision, response))
}

fn wrong_response() -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "an etcd response of another kind")
}

pub(super) async fn put(api: &Api, p: &pb::PutRequest) -> Result<pb::PutResponse, ErrorReply> {
    check_put(api, p)?;
    let op = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(p.clone())),
    };
    match apply(api, op).await? {
        (revision, pb::response_op::Response::ResponsePut(mut resp)) => {
            resp.header = Some(api.header(revision));
            Ok(resp)
        }
        _ => Err(wrong_response()),
    }
}

pub(super) async fn delete_range(
    api: &Api,
    d: &pb::DeleteRangeRequest,
) -> Result<pb::DeleteRangeResponse, ErrorReply> {
    check_key(api, &d.key)?;
    let op = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(d.clone())),
    };
    match apply(api, op).await? {
        (revision, pb::response_op::Response::ResponseDeleteRange(mut resp)) => {
            resp.header = Some(api.header(revision));
            Ok(resp)
        }
        _ => Err(wrong_response()),
    }
}

pub(super) async fn txn(api: &Api, t: &pb::TxnRequest) -> Result<pb::TxnResponse, ErrorReply> {
    check_txn(api, t)?;
    if is_read_only(t) {
        let c = if all_serializable(t) {
            Consistency::Any
        } else {
            Consistency::Consistent
        };
        wait_for(&api.shared, c).await?;
        let store = api.shared.store.clone();
        let hub = api.shared.node.watches.clone();
        let bytes_max = api.shared.config.etcd_response_bytes_max;
        let t = t.clone();
        let (revision, mut resp) = off_the_workers(&api.shared, move || {
            super::read::txn(&store, &hub, &t, bytes_max)
        })
        .await?;
        resp.header = Some(api.header(revision));
        return Ok(resp);
    }
    let op = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(t.clone())),
    };
    let (revision, mut resp) = match apply(api, op).await? {
        (revision, pb::response_op::Response::ResponseTxn(resp)) => (revision, resp),
        _ => return Err(wrong_response()),
    };
    if super::read::has_past_range(t) {
        let store = api.shared.store.clone();
        let hub = api.shared.node.watches.clone();
        let bytes_max = api.shared.config.etcd_response_bytes_max;
        let t = t.clone();
        resp = off_the_workers(&api.shared, move || {
            super::read::past_ranges(&store, &hub, &t, &mut resp, bytes_max)?;
            Ok(resp)
        })
        .await?;
    }
    resp.header = Some(api.header(revision));
    Ok(resp)
}

pub(super) async fn compact(
    api: &Api,
    c: &pb::CompactionRequest,
) -> Result<pb::CompactionResponse, ErrorReply> {
    let (revision, _) = api.propose(encode_compact(c.revision)).await?;
    Ok(pb::CompactionResponse {
        header: Some(api.header(revision)),
    })
}

fn check_key(api: &Api, key: &Bytes) -> Result<(), ErrorReply> {
    if key.is_empty() {
        return Err(bad(KEY_NOT_PROVIDED));
    }
    api.shared.limits.key(key)
}

fn check_put(api: &Api, p: &pb::PutRequest) -> Result<(), ErrorReply> {
    check_key(api, &p.key)?;
    api.shared.limits.value(&p.value)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(bad("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(bad("etcdserver: lease is provided"));
    }
    Ok(())
}

/// etcd's checks of a Txn: at most `etcd_txn_ops_max` compares and ops
/// per branch (nested Txns too), keys given, and no key written twice in
/// a branch (a put of a key another op of the branch also puts or
/// deletes: the outcome would depend on their order).
fn check_txn(api: &Api, t: &pb::TxnRequest) -> Result<(), ErrorReply> {
    let max = api.shared.config.etcd_txn_ops_max;
    if t.compare.len() > max || t.success.len() > max || t.failure.len() > max {
        return Err(bad(TOO_MANY_OPS));
    }
    for branch in [&t.success, &t.failure] {
        branch.iter().try_for_each(|op| check_op(api, op))?;
        branch_writes(branch)?;
    }
    Ok(())
}

fn check_op(api: &Api, op: &pb::RequestOp) -> Result<(), ErrorReply> {
    use pb::request_op::Request as Rq;
    match &op.request {
        Some(Rq::RequestRange(r)) => check_key(api, &r.key),
        Some(Rq::RequestPut(p)) => check_put(api, p),
        Some(Rq::RequestDeleteRange(d)) => check_key(api, &d.key),
        Some(Rq::RequestTxn(t)) => check_txn(api, t),
        None => Err(bad("etcdserver: an empty request op")),
    }
}

/// The keys one branch puts and the intervals it deletes.
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Bytes>,
    deletes: Vec<(Bytes, Bytes)>,
}

impl Writes {
    /// Whether a delete of this branch covers `key`. etcd compares the
    /// interval's bytes as they are here: a `range_end` of "\0" (every
    /// key from `key` on, when deleting) is an empty interval to this
    /// check, so a put under it is not a duplicate.
    fn deletes(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|(start, end)| {
            if end.is_empty() {
                key == &start[..]
            } else {
                key >= &start[..] && key < &end[..]
            }
        })
    }

    /// Adds a put that must not meet another put or a delete.
    fn put(&mut self, key: &Bytes) -> Result<(), ErrorReply> {
        if self.deletes(key) || !self.puts.insert(key.clone()) {
            return Err(bad(DUPLICATE_KEY));
        }
        Ok(())
    }
}

/// etcd's rule for one branch: this level's deletes first; then each
/// nested Txn's puts, which must meet no put or delete seen so far (a key
/// both of its branches put is fine: only one runs), after which its
/// deletes count too; then this level's puts, against all of it.
fn branch_writes(ops: &[pb::RequestOp]) -> Result<Writes, ErrorReply> {
    use pb::request_op::Request as Rq;
    let mut w = Writes::default();
    for op in ops {
        if let Some(Rq::RequestDeleteRange(d)) = &op.request {
            w.deletes.push((d.key.clone(), d.range_end.clone()));
        }
    }
    for op in ops {
        let Some(Rq::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = branch_writes(&t.success)?;
        let other = branch_writes(&t.failure)?;
        for k in &then.puts {
            w.put(k)?;
        }
        for k in other.puts.difference(&then.puts) {
            w.put(k)?;
        }
        for k in other.puts.intersection(&then.puts) {
            if w.deletes(k) {
                return Err(bad(DUPLICATE_KEY));
            }
        }
        w.deletes.extend(then.deletes);
        w.deletes.extend(other.deletes);
    }
    for op in ops {
        if let Some(Rq::RequestPut(p)) = &op.request {
            w.put(&p.key)?;
        }
    }
    Ok(w)
}

fn is_read_only(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Rq;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Rq::RequestRange(_)) => true,
            Some(Rq::RequestTxn(nested)) => is_read_only(nested),
            _ => false,
        })
}

fn all_serializable(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Rq;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Rq::RequestRange(r)) => r.serializable,
            Some(Rq::RequestTxn(nested)) => all_serializable(nested),
            _ => true,
        })
}
