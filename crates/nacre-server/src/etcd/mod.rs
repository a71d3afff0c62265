//! etcd's v3 gRPC API on every node (docs/etcd.md), beside the native
//! protocol and over the same code: writes are proposed to the same log
//! as [`Op::Etcd`](nacre_proto::Op::Etcd) and applied by the state machine
//! with etcd's meaning (state/etcd.rs); reads wait for the same
//! consistency and read the same snapshots; watches, leases, locks and
//! elections are the coordination layer's.
//!
//! | module | one job |
//! |---|---|
//! | `auth.rs` | Auth: `Unimplemented`, with the reason |
//! | `errors.rs` | Nacre's errors as etcd's gRPC statuses and messages |
//! | `forward.rs` | a follower's calls to the leader |
//! | `kv.rs` | KV: Range, Put, DeleteRange, Txn, Compact |
//! | `read.rs` | Ranges and read-only Txns from a snapshot |
//! | `history.rs` | a Range at an older revision, from the watch history |
//! | `watch.rs` | Watch: etcd's watch streams over the node's watch hub |
//! | `lease.rs` | Lease: grants, revokes, keep-alives, TTLs over Nacre's leases |
//! | `cluster.rs` | Cluster: the member list and membership changes |
//! | `maintenance.rs` | Maintenance: status, hashes, backups, leadership moves |
//! | `lock.rs` | Lock (v3lock), and the waiting it shares with Election |
//! | `election.rs` | Election (v3election): campaigns, leaders, observers |
//! | `observe.rs` | every call timed into the node's metrics, by method and code |

mod auth;
mod cluster;
mod election;
mod errors;
mod forward;
mod history;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod observe;
mod read;
mod watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_proto::{Batch, ErrorCode, ErrorReply, Op};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::server::Shared;
use crate::state::Outcome;

pub(crate) use errors::status;
pub(crate) use forward::{is_forwarded, marked, Forwarder};

/// What every etcd service shares: the node, and the way to its leader.
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub forwarder: Forwarder,
    /// etcd's numeric cluster id: a hash of Nacre's `cluster_id`.
    pub cluster_id: u64,
}

impl Api {
    pub(crate) fn new(shared: Arc<Shared>, own: std::net::SocketAddr) -> Api {
        let my_id = shared.node.status.id.load(Ordering::Relaxed);
        Api {
            forwarder: Forwarder::new(&shared.config, my_id, own),
            cluster_id: crate::node::name_id(&shared.config.cluster_id),
            shared,
        }
    }

    /// The largest request message a service decodes: a frame's worth.
    pub(crate) fn request_bytes_max(&self) -> usize {
        self.shared.limits.frame_size_max_bytes
    }

    /// The largest response message a service encodes.
    pub(crate) fn response_bytes_max(&self) -> usize {
        let config = &self.shared.config;
        config.etcd_response_bytes_max.max(self.request_bytes_max())
    }

    /// etcd's response header at `revision`.
    pub(crate) fn header(&self, revision: u64) -> pb::ResponseHeader {
        let status = &self.shared.node.status;
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: status.id.load(Ordering::Relaxed),
            revision: revision as i64,
            raft_term: status.term.load(Ordering::Acquire),
        }
    }

    /// Proposes one etcd op and waits for it to apply: the revision its
    /// client is told and the encoded response.
    pub(crate) async fn propose(&self, payload: Bytes) -> Result<(u64, Bytes), ErrorReply> {
        let batch = Batch {
            guards: Vec::new(),
            ops: vec![Op::Etcd(payload)],
        };
        match crate::server::propose(&self.shared, batch, None).await? {
            (_, Outcome::Etcd { revision, response }) => Ok((revision, response)),
            (_, Outcome::Failed { code, message, .. }) => Err(ErrorReply::new(code, message)),
            (_, Outcome::Applied { .. }) => Err(ErrorReply::new(
                ErrorCode::Internal,
                "a Nacre outcome for an etcd request",
            )),
        }
    }

    /// Runs `local` here; if this node is not the leader, sends the call
    /// to the leader with `remote` instead (once: a forwarded call that
    /// finds no leader either fails with etcd's "no leader").
    pub(crate) async fn here_or_leader<Q, A>(
        &self,
        req: Request<Q>,
        local: impl AsyncFnOnce(&Q) -> Result<A, ErrorReply>,
        remote: impl AsyncFnOnce(Channel, Request<Q>) -> Result<Response<A>, Status>,
    ) -> Result<Response<A>, Status> {
        let forwarded = is_forwarded(&req);
        let message = req.into_inner();
        match local(&message).await {
            Ok(a) => Ok(Response::new(a)),
            Err(e) if errors::is_not_leader(&e) && !forwarded => {
                let channel = self.forwarder.leader(&self.shared.node.status)?;
                remote(channel, marked(message)).await
            }
            Err(e) => Err(status(e)),
        }
    }
}

/// Serves the etcd API on `listener` until `stop` turns true.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    own: std::net::SocketAddr,
    // Spelled out: `watch` here is the etcd Watch service's module.
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let api = Arc::new(Api::new(shared, own));
    // Replies are small and latency is what clients wait on: without
    // TCP_NODELAY a reply can sit out a delayed ACK (40 ms on Linux).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            let s = s?;
            s.set_nodelay(true)?;
            Ok::<_, std::io::Error>(s)
        },
    );
    let observe = observe::ObserveLayer(api.shared.node.status.clone());
    Server::builder()
        .layer(observe)
        .add_service(kv::service(&api))
        .add_service(auth::service())
        .add_service(watch::service(&api, &stop))
        .add_service(lease::service(&api, &stop))
        .add_service(cluster::service(&api))
        .add_service(maintenance::service(&api))
        .add_service(lock::service(&api))
        .add_service(election::service(&api))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
