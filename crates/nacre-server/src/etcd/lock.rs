//! etcd's Lock service (v3lock), and what it shares with Election: the
//! recipe of etcd's `concurrency` package (and of Nacre's own client,
//! docs/coordination.md), run by the node a client calls.
//!
//! A contender writes the key `NAME/<lease in hex>` (etcd's format: Go's
//! `%x` of the lease id) attached to its lease, if that key does not exist
//! yet (the same lease locking twice is one acquisition), and holds the
//! lock once no key under `NAME/` has a lower create revision: it reads
//! the newest older key and waits, on this node's watch hub, for its
//! deletion, then reads again. Each write and read is an etcd KV call,
//! made here or at the leader (a follower forwards each one), so the wait
//! survives a change of leader.
//!
//! Where Nacre differs from etcd 3.4, and why:
//! - **A waiter whose key goes away stops waiting**, with Aborted: its
//!   lease expired or was revoked, or the key was deleted. etcd 3.4 goes
//!   on and answers as if it held the lock.
//! - **Lease 0 means no lease**: the key stays until Unlock. etcd grants a
//!   60 s lease nobody keeps alive.
//! - **A call that gives up withdraws only its own key**: an error, or a
//!   client that cancels or times out, deletes the key if this call wrote
//!   it (guarded by its create revision); a key the same lease already had
//!   is left to its holder.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
use nacre_etcd_proto::mvccpb::KeyValue;
use nacre_etcd_proto::v3lockpb as lockpb;
use nacre_proto::{CoordResponse, ErrorCode, ErrorReply, EventKind, KeySpan, WatchSpec};
use tonic::{Request, Response, Status};

use super::{status, Api};
use crate::watch::{Registration, WatchHub};

pub(crate) struct LockService(pub Arc<Api>);

/// The Lock service, with the message bounds of the API.
pub(super) fn service(api: &Arc<Api>) -> lockpb::lock_server::LockServer<LockService> {
    lockpb::lock_server::LockServer::from_arc(Arc::new(LockService(api.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl lockpb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        req: Request<lockpb::LockRequest>,
    ) -> Result<Response<lockpb::LockResponse>, Status> {
        let r = req.into_inner();
        let api = &self.0;
        let prefix = prefix_of(&r.name);
        let key = contender_key(&prefix, r.lease);
        let enter = pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, Bytes::new(), r.lease), first_created(&prefix)],
            failure: vec![range_op(&key), first_created(&prefix)],
        };
        let resp = kv_txn(api, enter).await?;
        let (my_rev, withdraw) = entered(api, &key, &resp)?;
        let owner = range_kvs(&resp, 1).first().map(|kv| kv.create_revision);
        let header = match owner {
            Some(rev) if rev != my_rev => wait_turn(api, &prefix, &key, my_rev).await?,
            _ => resp.header.unwrap_or_default(),
        };
        withdraw.keep();
        Ok(Response::new(lockpb::LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<lockpb::UnlockRequest>,
    ) -> Result<Response<lockpb::UnlockResponse>, Status> {
        let api = &self.0;
        let d = pb::DeleteRangeRequest {
            key: req.into_inner().key,
            ..Default::default()
        };
        let resp = api
            .here_or_leader(
                Request::new(d),
                async |d| super::kv::delete_range(api, d).await,
                async |c, r| KvClient::new(c).delete_range(r).await,
            )
            .await?
            .into_inner();
        Ok(Response::new(lockpb::UnlockResponse {
            header: resp.header,
        }))
    }
}

/// The prefix of a lock's or an election's keys: `NAME/`.
pub(super) fn prefix_of(name: &[u8]) -> Bytes {
    let mut p = Vec::with_capacity(name.len() + 1);
    p.extend_from_slice(name);
    p.push(b'/');
    p.into()
}

/// A contender's key: the prefix and the lease id as Go's `%x` writes an
/// int64 (a negative one as `-` and the magnitude).
pub(super) fn contender_key(prefix: &[u8], lease: i64) -> Bytes {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = prefix.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k.into()
}

/// A Txn here or at the leader.
pub(super) async fn kv_txn(api: &Api, t: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    api.here_or_leader(
        Request::new(t),
        async |t| super::kv::txn(api, t).await,
        async |c, r| KvClient::new(c).txn(r).await,
    )
    .await
    .map(Response::into_inner)
}

/// A Range here or at the leader.
pub(super) async fn kv_range(api: &Api, r: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    api.here_or_leader(
        Request::new(r),
        async |r| super::kv::range(api, r).await,
        async |c, r| KvClient::new(c).range(r).await,
    )
    .await
    .map(Response::into_inner)
}

/// Compares `key`'s create revision with `rev` (0: the key is absent).
pub(super) fn created_at(key: &Bytes, rev: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub(super) fn put_op(key: &Bytes, value: Bytes, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub(super) fn delete_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )),
    }
}

pub(super) fn range_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

/// The keys under `prefix` by create revision: the first one (`Ascend`)
/// or the last one (`Descend`) at or below `max_create` (0: any).
pub(super) fn by_create(
    prefix: &Bytes,
    order: pb::range_request::SortOrder,
    max_create: i64,
) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.clone(),
        range_end: crate::state::prefix_end(prefix)
            .unwrap_or_else(|| vec![0])
            .into(),
        limit: 1,
        sort_order: order as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

/// The current holder (the oldest key under `prefix`), as a Txn op.
fn first_created(prefix: &Bytes) -> pb::RequestOp {
    let r = by_create(prefix, pb::range_request::SortOrder::Ascend, 0);
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(r)),
    }
}

/// The pairs of the `i`th response of a Txn, if it is a Range.
pub(super) fn range_kvs(t: &pb::TxnResponse, i: usize) -> &[KeyValue] {
    match t.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// After the Txn that enters a contender (put if absent, else read the
/// key first): its create revision, and the guard that withdraws it if
/// this call wrote it and gives up.
pub(super) fn entered(
    api: &Arc<Api>,
    key: &Bytes,
    resp: &pb::TxnResponse,
) -> Result<(i64, Withdraw), Status> {
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    if resp.succeeded {
        return Ok((revision, Withdraw::armed(api, key, revision)));
    }
    match range_kvs(resp, 0).first() {
        Some(kv) => Ok((kv.create_revision, Withdraw::disarmed())),
        None => Err(Status::internal(
            "the contender's key vanished inside its Txn",
        )),
    }
}

/// Why a waiter stops: its key is gone.
fn lost() -> Status {
    Status::aborted(
        "nacre: the key was deleted while waiting (its lease expired or was revoked, or it \
         was unlocked)",
    )
}

/// Waits until no key under `prefix` was created before `my_rev` (the
/// create revision of `mine`); the header of the read that found none.
/// Fails once `mine` is gone.
pub(super) async fn wait_turn(
    api: &Api,
    prefix: &Bytes,
    mine: &Bytes,
    my_rev: i64,
) -> Result<pb::ResponseHeader, Status> {
    let older = by_create(prefix, pb::range_request::SortOrder::Descend, my_rev - 1);
    loop {
        let t = pb::TxnRequest {
            compare: Vec::new(),
            success: vec![
                range_op(mine),
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(older.clone())),
                },
            ],
            failure: Vec::new(),
        };
        let resp = kv_txn(api, t).await?;
        if !range_kvs(&resp, 0)
            .iter()
            .any(|kv| kv.create_revision == my_rev)
        {
            return Err(lost());
        }
        let header = resp.header.unwrap_or_default();
        let Some(before) = range_kvs(&resp, 1).first() else {
            return Ok(header);
        };
        let after = u64::try_from(header.revision).unwrap_or(0);
        let gone = |e: &nacre_proto::WatchEvent| {
            e.kind == EventKind::Delete && (e.key == before.key || e.key == *mine)
        };
        let mut watch = Watching::start(api, prefix, after)?;
        while let Some(events) = watch.next(api).await? {
            if events.iter().any(gone) {
                break;
            }
        }
    }
}

/// A watch on this node's hub over a prefix, ended when dropped.
pub(super) struct Watching {
    hub: Arc<WatchHub>,
    reg: Registration,
}

impl Watching {
    /// Watches `prefix` from the revision after `after`.
    pub(super) fn start(api: &Api, prefix: &Bytes, after: u64) -> Result<Watching, Status> {
        let hub = api.shared.node.watches.clone();
        let spec = WatchSpec {
            span: KeySpan::Prefix(prefix.clone()),
            start_rev: after + 1,
            prev_value: false,
        };
        let reg = hub.register(&spec).map_err(status)?;
        Ok(Watching { hub, reg })
    }

    /// The next events; `None` when the watch ended in a way that only
    /// means "read again" (the history no longer reaches back, or it fell
    /// behind); an error when the node stops.
    pub(super) async fn next(
        &mut self,
        api: &Api,
    ) -> Result<Option<Vec<nacre_proto::WatchEvent>>, Status> {
        loop {
            match self.reg.rx.recv().await {
                Some(CoordResponse::Watched { events, .. }) if events.is_empty() => {}
                Some(CoordResponse::Watched { events, .. }) => return Ok(Some(events)),
                Some(CoordResponse::WatchEnd {
                    code: code @ (ErrorCode::Cancelled | ErrorCode::GoingDown),
                    message,
                    ..
                }) => return Err(status(ErrorReply::new(code, message))),
                Some(CoordResponse::WatchEnd { .. }) | None => {
                    // Read again, but not in a tight loop: a history that
                    // starts after the revision read needs the node to
                    // apply more first.
                    let tick = api.shared.config.tick_ms.max(1);
                    tokio::time::sleep(Duration::from_millis(tick)).await;
                    return Ok(None);
                }
                Some(_) => {}
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.hub
            .end_watch(self.reg.id, ErrorCode::Cancelled, "its waiter is done");
    }
}

/// Deletes the key a contender wrote if its call ends without what it
/// asked for: an error, or a dropped call (the client cancelled or its
/// deadline passed). Only the key this call created: its create revision
/// guards the delete.
pub(super) struct Withdraw {
    what: Option<(Arc<Api>, Bytes, i64)>,
}

impl Withdraw {
    fn armed(api: &Arc<Api>, key: &Bytes, rev: i64) -> Withdraw {
        Withdraw {
            what: Some((api.clone(), key.clone(), rev)),
        }
    }

    fn disarmed() -> Withdraw {
        Withdraw { what: None }
    }

    /// The call got what it asked for: the key stays.
    pub(super) fn keep(mut self) {
        self.what = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some((api, key, rev)) = self.what.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let t = pb::TxnRequest {
                compare: vec![created_at(&key, rev)],
                success: vec![delete_op(&key)],
                failure: Vec::new(),
            };
            if let Err(e) = kv_txn(&api, t).await {
                tracing::info!(error = %e, "could not withdraw an abandoned lock or election key");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_etcds_format() {
        assert_eq!(
            &contender_key(&prefix_of(b"L"), 0x694d_77aa)[..],
            b"L/694d77aa"
        );
        assert_eq!(&contender_key(&prefix_of(b"L"), 0)[..], b"L/0");
        assert_eq!(&contender_key(&prefix_of(b"L"), -26)[..], b"L/-1a");
    }
}
