//! etcd's Lease service over Nacre's leases (lease_requests.rs,
//! node/leases.rs): etcd's TTLs are seconds, Nacre's milliseconds; grants
//! and revokes are replicated, keep-alives and the time a lease has left
//! are the leader's, so a follower sends those calls to the leader.
//!
//! A keep-alive stream is served where it arrives: each request is
//! renewed here when this node leads, else sent on to the leader as a
//! one-request stream of its own (keep-alives come every TTL/3 per lease,
//! and a stream per request stays correct across leader changes).

use std::sync::Arc;
use std::time::Duration;

use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use nacre_proto::{Consistency, CoordRequest, CoordResponse, ErrorCode, ErrorReply, LeaseInfo};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::errors::{is_not_leader, NO_LEADER};
use super::{is_forwarded, marked, status, Api};
use crate::lease_requests::execute;
use crate::server::{off_the_workers, wait_for};
use crate::state::{read_leases, read_revision};

/// etcd's messages (rpctypes), which clients turn back into typed errors.
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// Keep-alive answers queued to one stream before its task waits for the
/// client to read.
const OUT_QUEUE: usize = 16;
/// Grants tried for a server-picked id that clients took already.
const AUTO_ID_TRIES: u32 = 3;

pub(crate) struct LeaseService(pub Arc<Api>, watch::Receiver<bool>);

/// The Lease service, with the message bounds of the API. `stop` ends
/// open keep-alive streams when the node stops.
pub(super) fn service(
    api: &Arc<Api>,
    stop: &watch::Receiver<bool>,
) -> pb::lease_server::LeaseServer<LeaseService> {
    pb::lease_server::LeaseServer::from_arc(Arc::new(LeaseService(api.clone(), stop.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |g| grant(api, g).await,
            async |c, r| LeaseClient::new(c).lease_grant(r).await,
        )
        .await
        .map_err(etcd_code)
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |r| revoke(api, r).await,
            async |c, r| LeaseClient::new(c).lease_revoke(r).await,
        )
        .await
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let forwarded = is_forwarded(&req);
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        tokio::spawn(keep_alive_stream(
            self.0.clone(),
            req.into_inner(),
            out,
            forwarded,
            self.1.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |t| time_to_live(api, t).await,
            async |c, r| LeaseClient::new(c).lease_time_to_live(r).await,
        )
        .await
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let api = &self.0;
        api.here_or_leader(
            req,
            async |_| leases(api).await,
            async |c, r| LeaseClient::new(c).lease_leases(r).await,
        )
        .await
    }
}

/// etcd's codes for the two lease errors whose words `errors::status`
/// does not know (it keeps etcd's words, under InvalidArgument).
fn etcd_code(s: Status) -> Status {
    match s.message() {
        LEASE_EXISTS => Status::failed_precondition(LEASE_EXISTS),
        TTL_TOO_LARGE => Status::out_of_range(TTL_TOO_LARGE),
        _ => s,
    }
}

/// etcd's store revision now, for a header.
fn current_revision(api: &Api) -> Result<u64, ErrorReply> {
    Ok(read_revision(&api.shared.store.begin_read())?.0)
}

/// Milliseconds as etcd's whole seconds, rounded up: a lease granted in
/// etcd's seconds reads back exactly, and one of Nacre's (any ms) never
/// reads as 0, which etcd clients take for "gone".
fn secs_up(ms: u64) -> i64 {
    ms.div_ceil(1_000) as i64
}

fn unexpected() -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "a lease reply of another kind")
}

/// A grant in whole seconds: below Nacre's shortest TTL it is raised to
/// it, as etcd raises a TTL below its minimum, and the response says the
/// TTL granted.
async fn grant(api: &Api, g: &pb::LeaseGrantRequest) -> Result<pb::LeaseGrantResponse, ErrorReply> {
    let config = &api.shared.config;
    let floor_s = config.lease_ttl_floor_ms().div_ceil(1_000);
    let ttl_s = u64::try_from(g.ttl).unwrap_or(0).max(floor_s);
    if ttl_s > config.lease_ttl_max_ms / 1_000 {
        return Err(ErrorReply::new(ErrorCode::BadInput, TTL_TOO_LARGE));
    }
    let req = CoordRequest::LeaseGrant {
        id: g.id as u64,
        ttl_ms: ttl_s * 1_000,
    };
    // A server-picked id is the grant's log index, which a client may
    // have chosen before: like etcd, pick again (the next grant has
    // another index).
    let mut tries = if g.id == 0 { AUTO_ID_TRIES } else { 1 };
    let id = loop {
        tries -= 1;
        match execute(&api.shared, req.clone(), None).await {
            Ok(nacre_proto::Response::Coord(CoordResponse::Lease(l))) => break l.id,
            Ok(_) => return Err(unexpected()),
            Err(e) if e.code == ErrorCode::Conflict && tries == 0 => {
                return Err(ErrorReply::new(ErrorCode::Conflict, LEASE_EXISTS))
            }
            Err(e) if e.code == ErrorCode::Conflict => {}
            Err(e) => return Err(e),
        }
    };
    Ok(pb::LeaseGrantResponse {
        header: Some(api.header(current_revision(api)?)),
        id: id as i64,
        ttl: ttl_s as i64,
        error: String::new(),
    })
}

async fn revoke(
    api: &Api,
    r: &pb::LeaseRevokeRequest,
) -> Result<pb::LeaseRevokeResponse, ErrorReply> {
    let req = CoordRequest::LeaseRevoke { id: r.id as u64 };
    execute(&api.shared, req, None).await?;
    Ok(pb::LeaseRevokeResponse {
        header: Some(api.header(current_revision(api)?)),
    })
}

/// A lease's time left (whole seconds, truncated as etcd's are), its TTL
/// and, if asked, its keys; a lease that does not exist is no error in
/// etcd: TTL -1.
async fn time_to_live(
    api: &Api,
    t: &pb::LeaseTimeToLiveRequest,
) -> Result<pb::LeaseTimeToLiveResponse, ErrorReply> {
    let req = CoordRequest::LeaseTtl {
        id: t.id as u64,
        keys: t.keys,
    };
    let mut resp = pb::LeaseTimeToLiveResponse {
        id: t.id,
        ..Default::default()
    };
    match execute(&api.shared, req, None).await {
        Ok(nacre_proto::Response::Coord(CoordResponse::Lease(l))) => {
            resp.ttl = (l.remaining_ms / 1_000) as i64;
            resp.granted_ttl = secs_up(l.ttl_ms);
            resp.keys = l.keys;
        }
        Ok(_) => return Err(unexpected()),
        Err(e) if e.code == ErrorCode::LeaseNotFound => resp.ttl = -1,
        Err(e) => return Err(e),
    }
    resp.header = Some(api.header(current_revision(api)?));
    Ok(resp)
}

/// Every lease's id. etcd answers from any member's own lessor; here
/// from the store after a consistent-read barrier.
async fn leases(api: &Api) -> Result<pb::LeaseLeasesResponse, ErrorReply> {
    wait_for(&api.shared, Consistency::Consistent).await?;
    let store = api.shared.store.clone();
    let (revision, ids) = off_the_workers(&api.shared, move || {
        let txn = store.begin_read();
        let (revision, _) = read_revision(&txn)?;
        let ids: Vec<u64> = read_leases(&txn)?.into_iter().map(|r| r.id).collect();
        Ok((revision, ids))
    })
    .await?;
    Ok(pb::LeaseLeasesResponse {
        header: Some(api.header(revision)),
        leases: ids
            .into_iter()
            .map(|id| pb::LeaseStatus { id: id as i64 })
            .collect(),
    })
}

/// Answers a keep-alive stream's requests in order until the client
/// stops sending or leaves, or the node stops. An error (no leader, a
/// timeout) is the stream's last answer, as in etcd.
async fn keep_alive_stream(
    api: Arc<Api>,
    mut inbound: Streaming<pb::LeaseKeepAliveRequest>,
    out: mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>,
    forwarded: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            r = inbound.message() => r,
            () = out.closed() => return,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok(Some(req)) = next else {
            return;
        };
        let resp = keep_alive(&api, req.id, forwarded).await;
        let failed = resp.is_err();
        if out.send(resp).await.is_err() || failed {
            return;
        }
    }
}

/// One keep-alive: the lease's TTL in seconds once renewed, 0 if it does
/// not exist. The header is read before the renewal, as etcd does: a
/// lease revoked at some revision is never reported renewed at a later
/// one.
async fn keep_alive(
    api: &Api,
    id: i64,
    forwarded: bool,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let revision = current_revision(api).map_err(status)?;
    let req = CoordRequest::LeaseKeepAlive {
        ids: vec![id as u64],
    };
    let ttl_ms = match execute(&api.shared, req, None).await {
        Ok(nacre_proto::Response::Coord(CoordResponse::Leases(ls))) => {
            ls.first().map_or(0, |l: &LeaseInfo| l.ttl_ms)
        }
        Ok(_) => return Err(status(unexpected())),
        Err(e) if is_not_leader(&e) && !forwarded => return keep_alive_at_leader(api, id).await,
        Err(e) => return Err(status(e)),
    };
    Ok(pb::LeaseKeepAliveResponse {
        header: Some(api.header(revision)),
        id,
        ttl: secs_up(ttl_ms),
    })
}

/// A keep-alive sent on to the leader, as a stream of one request.
async fn keep_alive_at_leader(api: &Api, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let channel = api.forwarder.leader(&api.shared.node.status)?;
    let timeout = Duration::from_millis(api.shared.config.request_timeout_ms);
    let call = async {
        let one = tokio_stream::once(pb::LeaseKeepAliveRequest { id });
        let mut replies = LeaseClient::new(channel)
            .lease_keep_alive(marked(one))
            .await?
            .into_inner();
        replies
            .message()
            .await?
            .ok_or_else(|| Status::unavailable(NO_LEADER))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(Status::unavailable(super::errors::TIMED_OUT)),
    }
}
