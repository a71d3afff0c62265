//! The lease requests (docs/coordination.md, "Leases"). Grants and
//! revokes are replicated commands proposed by the server (their ops are
//! service ops, which a client batch may not carry); keep-alives and the
//! time a lease has left are the leader's business, answered by its loop
//! from its clock (`node/leases.rs`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use nacre_proto::{
    Batch, Consistency, CoordRequest, CoordResponse, ErrorCode, ErrorReply, LeaseInfo, Op,
    Response, Session,
};

use crate::server::{propose, wait_for, Shared};
use crate::state::{read_lease, read_lease_keys, read_leases, Outcome};

pub(crate) async fn execute(
    shared: &Shared,
    req: CoordRequest,
    session: Option<Session>,
) -> Result<Response, ErrorReply> {
    match req {
        CoordRequest::LeaseGrant { id, ttl_ms } => grant(shared, id, ttl_ms, session).await,
        CoordRequest::LeaseRevoke { id } => {
            propose_lease_op(shared, Op::LeaseRevoke(id), session).await?;
            Ok(Response::Unit)
        }
        CoordRequest::LeaseKeepAlive { ids } => {
            // Leadership confirmed as for a consistent read: a deposed
            // leader that does not know it yet would renew a lease whose
            // deadline the new leader already set (node/leases.rs).
            wait_for(shared, Consistency::Consistent).await?;
            let timeout = Duration::from_millis(shared.config.request_timeout_ms);
            match tokio::time::timeout(timeout, shared.node.lease_keep_alive(ids)).await {
                Ok(r) => r.map(Response::Coord),
                Err(_) => Err(ErrorReply::new(
                    ErrorCode::Timeout,
                    "the leader did not answer the keep-alive in time",
                )),
            }
        }
        CoordRequest::LeaseTtl { id, keys } => ttl(shared, id, keys).await,
        CoordRequest::LeaseList => list(shared).await,
        _ => Err(ErrorReply::new(ErrorCode::BadInput, "not a lease request")),
    }
}

/// Checks the TTL and the number of leases, then proposes the grant.
async fn grant(
    shared: &Shared,
    id: u64,
    ttl_ms: u64,
    session: Option<Session>,
) -> Result<Response, ErrorReply> {
    let (min, max) = (
        shared.config.lease_ttl_floor_ms(),
        shared.config.lease_ttl_max_ms,
    );
    if !(min..=max).contains(&ttl_ms) {
        return Err(ErrorReply::new(
            ErrorCode::BadInput,
            format!(
                "a lease's ttl_ms must lie between lease_ttl_min_ms {min} and \
                 lease_ttl_max_ms {max}, not {ttl_ms}"
            ),
        ));
    }
    // The leader's count: a follower refuses the proposal anyway.
    let tracked = shared.node.status.leases_tracked.load(Ordering::Relaxed);
    if tracked >= shared.config.leases_max as u64 {
        return Err(ErrorReply::new(
            ErrorCode::Busy,
            format!(
                "{tracked} leases exist, the most leases_max allows; revoke some or let them expire"
            ),
        ));
    }
    let id = propose_lease_op(shared, Op::LeaseGrant { id, ttl_ms }, session).await?;
    Ok(Response::Coord(CoordResponse::Lease(LeaseInfo {
        id,
        ttl_ms,
        remaining_ms: ttl_ms,
        keys: Vec::new(),
    })))
}

/// Proposes one lease op as a batch of its own; its outcome's count.
async fn propose_lease_op(
    shared: &Shared,
    op: Op,
    session: Option<Session>,
) -> Result<u64, ErrorReply> {
    let batch = Batch {
        guards: vec![],
        ops: vec![op],
    };
    match propose(shared, batch, session).await? {
        (_, Outcome::Applied { count, .. }) => Ok(count),
        (_, Outcome::Failed { code, message, .. }) => Err(ErrorReply::new(code, message)),
        (_, Outcome::Etcd { .. }) => Err(Outcome::not_a_batch()),
    }
}

fn lease_not_found(id: u64) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::LeaseNotFound,
        format!("lease {id} does not exist"),
    )
}

/// A lease's TTL, remaining time and (if asked) keys: at the leader, whose
/// clock the remaining time is measured on.
async fn ttl(shared: &Shared, id: u64, keys: bool) -> Result<Response, ErrorReply> {
    wait_for(shared, Consistency::Consistent).await?;
    let remaining = shared.node.lease_remaining(vec![id]).await?;
    let txn = shared.store.begin_read();
    let record = read_lease(&txn, id)?.ok_or_else(|| lease_not_found(id))?;
    let keys = if keys {
        read_lease_keys(&txn, id, shared.limits.range_results_max as usize)?
    } else {
        Vec::new()
    };
    Ok(Response::Coord(CoordResponse::Lease(LeaseInfo {
        id,
        ttl_ms: record.ttl_ms,
        // Applied here but not yet seen by the loop: it has its full TTL.
        remaining_ms: remaining
            .first()
            .copied()
            .flatten()
            .unwrap_or(record.ttl_ms),
        keys,
    })))
}

/// Every lease, with the time it has left on the leader's clock.
async fn list(shared: &Shared) -> Result<Response, ErrorReply> {
    wait_for(shared, Consistency::Consistent).await?;
    let records = read_leases(&shared.store.begin_read())?;
    let ids = records.iter().map(|r| r.id).collect();
    let remaining = shared.node.lease_remaining(ids).await?;
    Ok(Response::Coord(CoordResponse::Leases(
        records
            .into_iter()
            .zip(remaining)
            .map(|(r, left)| LeaseInfo {
                id: r.id,
                ttl_ms: r.ttl_ms,
                remaining_ms: left.unwrap_or(r.ttl_ms),
                keys: Vec::new(),
            })
            .collect(),
    )))
}
