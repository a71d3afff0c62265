//! etcd's Election service (v3election): the lock's recipe (lock.rs),
//! where the holder is the leader and its key's value is what it
//! proclaims.
//!
//! - **Campaign** writes `NAME/<lease in hex>` with the value (or, if the
//!   lease already campaigns, proclaims the new value on its key), waits
//!   until no older key is left, and answers with the leader key: name,
//!   key, create revision and lease. Its header is the write's, as etcd's.
//! - **Proclaim** and **Resign** act only while the key still has the
//!   leader key's create revision (a Txn compares it): a Proclaim that
//!   finds another key fails with etcd's "election: not leader"; a Resign
//!   that finds another key changes nothing and succeeds, as etcd's does.
//! - **Leader** is the oldest key under `NAME/` ("election: no leader" if
//!   there is none).
//! - **Observe** streams the leader: the current one, then each new value
//!   it proclaims, and the next leader once it is gone (waiting, if there
//!   is none, for the first campaign). A value is sent once.
//!
//! The errors etcd returns as plain strings (its gRPC code Unknown) keep
//! their words, with the code that says what happened: "election: no
//! leader" NotFound, "election: not leader" FailedPrecondition, a missing
//! leader key InvalidArgument.

use std::sync::Arc;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::mvccpb::KeyValue;
use nacre_etcd_proto::v3electionpb as epb;
use nacre_proto::{EventKind, WatchEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::lock::{
    by_create, contender_key, created_at, delete_op, entered, kv_range, kv_txn, prefix_of, put_op,
    range_kvs, range_op, wait_turn, Watching,
};
use super::Api;

pub(crate) const NO_LEADER: &str = "election: no leader";
pub(crate) const NOT_LEADER: &str = "election: not leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// Leader changes an Observe stream holds for a slow reader; past that the
/// stream waits (and its watch may fall behind, after which it reads the
/// leader afresh).
const OBSERVE_AHEAD: usize = 16;

pub(crate) struct ElectionService(pub Arc<Api>);

/// The Election service, with the message bounds of the API.
pub(super) fn service(api: &Arc<Api>) -> epb::election_server::ElectionServer<ElectionService> {
    epb::election_server::ElectionServer::from_arc(Arc::new(ElectionService(api.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let r = req.into_inner();
        let api = &self.0;
        let prefix = prefix_of(&r.name);
        let key = contender_key(&prefix, r.lease);
        let enter = pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, r.value.clone(), r.lease)],
            failure: vec![range_op(&key)],
        };
        let resp = kv_txn(api, enter).await?;
        let (my_rev, withdraw) = entered(api, &key, &resp)?;
        let leader = epb::LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev: my_rev,
            lease: r.lease,
        };
        let old_value = range_kvs(&resp, 0).first().map(|kv| kv.value.clone());
        if old_value.is_some_and(|v| v != r.value) {
            // The lease campaigned before, with another value.
            proclaim(api, &leader, r.value).await?;
        }
        wait_turn(api, &prefix, &key, my_rev).await?;
        withdraw.keep();
        Ok(Response::new(epb::CampaignResponse {
            header: resp.header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let r = req.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::invalid_argument(MISSING_LEADER_KEY))?;
        let header = proclaim(&self.0, &leader, r.value).await?;
        Ok(Response::new(epb::ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let prefix = prefix_of(&req.get_ref().name);
        let (header, kv) = leader_of(&self.0, &prefix).await?;
        let kv = kv.ok_or_else(|| Status::not_found(NO_LEADER))?;
        Ok(Response::new(epb::LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ReceiverStream<Result<epb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = prefix_of(&req.get_ref().name);
        let (tx, rx) = mpsc::channel(OBSERVE_AHEAD);
        let api = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = observe(&api, &prefix, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        req: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::invalid_argument(MISSING_LEADER_KEY))?;
        let t = pb::TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![delete_op(&leader.key)],
            failure: Vec::new(),
        };
        let resp = kv_txn(&self.0, t).await?;
        Ok(Response::new(epb::ResignResponse {
            header: resp.header,
        }))
    }
}

/// Puts `value` on the leader key while it is still the one `leader`
/// names (same create revision).
async fn proclaim(
    api: &Api,
    leader: &epb::LeaderKey,
    value: Bytes,
) -> Result<pb::ResponseHeader, Status> {
    let t = pb::TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        success: vec![put_op(&leader.key, value, leader.lease)],
        failure: Vec::new(),
    };
    let resp = kv_txn(api, t).await?;
    if !resp.succeeded {
        return Err(Status::failed_precondition(NOT_LEADER));
    }
    Ok(resp.header.unwrap_or_default())
}

/// The oldest key under `prefix`, if any, with the header of the read.
async fn leader_of(
    api: &Api,
    prefix: &Bytes,
) -> Result<(pb::ResponseHeader, Option<KeyValue>), Status> {
    let r = by_create(prefix, pb::range_request::SortOrder::Ascend, 0);
    let resp = kv_range(api, r).await?;
    Ok((resp.header.unwrap_or_default(), resp.kvs.into_iter().next()))
}

/// An event's pair as etcd's `KeyValue`.
fn kv_of(e: &WatchEvent) -> KeyValue {
    crate::state::to_key_value(&e.key, e.rev, &e.value, e.etcd.lease)
}

/// Sends the leader of `prefix` and each change of it until the client
/// goes away (the send fails) or the node stops (an error).
async fn observe(
    api: &Arc<Api>,
    prefix: &Bytes,
    tx: &mpsc::Sender<Result<epb::LeaderResponse, Status>>,
) -> Result<(), Status> {
    // The last (key, mod revision) sent: a leader read again after a
    // watch had to restart is not sent twice.
    let mut sent: Option<(Bytes, i64)> = None;
    loop {
        let (header, current) = leader_of(api, prefix).await?;
        let after = u64::try_from(header.revision).unwrap_or(0);
        let mut watch = Watching::start(api, prefix, after)?;
        let mut leader = current;
        loop {
            if let Some(kv) = &leader {
                let this = (kv.key.clone(), kv.mod_revision);
                if sent.as_ref() != Some(&this) {
                    let mut h = header;
                    h.revision = h.revision.max(kv.mod_revision);
                    let resp = epb::LeaderResponse {
                        header: Some(h),
                        kv: Some(kv.clone()),
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return Ok(());
                    }
                    sent = Some(this);
                }
            }
            let events = tokio::select! {
                e = watch.next(api) => e?,
                () = tx.closed() => return Ok(()),
            };
            let Some(events) = events else {
                break;
            };
            match next_leader(leader.as_ref(), &events) {
                Step::Same => {}
                Step::Now(kv) => leader = Some(kv),
                // The leader is gone: the next one is the oldest key
                // left, which only a read can tell.
                Step::Gone => break,
            }
        }
    }
}

enum Step {
    Same,
    Now(KeyValue),
    Gone,
}

/// What `events` do to the leader: with none, the first key put becomes
/// it (only a key created now can be the oldest of an empty prefix); with
/// one, its last put is its new value, and its deletion ends it.
fn next_leader(leader: Option<&KeyValue>, events: &[WatchEvent]) -> Step {
    let mut now: Option<KeyValue> = None;
    for e in events {
        let current = now.as_ref().or(leader);
        match (current, e.kind) {
            (None, EventKind::Put) => now = Some(kv_of(e)),
            (Some(kv), EventKind::Put) if kv.key == e.key => now = Some(kv_of(e)),
            (Some(kv), EventKind::Delete) if kv.key == e.key => return Step::Gone,
            _ => {}
        }
    }
    now.map_or(Step::Same, Step::Now)
}
