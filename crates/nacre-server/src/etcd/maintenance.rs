//! etcd's Maintenance service: Status, Alarm, Hash, HashKV, Snapshot,
//! MoveLeader and Defragment, each answered by the node it is sent to
//! (as etcd answers them), except MoveLeader, which the leader carries
//! out.
//!
//! - **Status** reports this node: its raft index (commit) and applied
//!   index, term, leader, whether it is a learner, and the store's size
//!   (`dbSize`: bytes on disk; `dbSizeInUse`: live bytes). Its version is
//!   [`VERSION`]. `errors` holds etcd's "no leader" when none is known, and
//!   any store failure.
//! - **Alarm**: Nacre raises no alarms (it has no space quota). GET lists
//!   none, DEACTIVATE has nothing to clear and succeeds, ACTIVATE is
//!   Unimplemented.
//! - **Hash** and **HashKV**: a CRC-32C (etcd's polynomial) over the user
//!   keyspace of one snapshot, in key order: each key, value, create and
//!   mod revision, version and lease ([`hash_user_keys`]). Replicas at the
//!   same revision hash the same. Nacre keeps only the newest version of a
//!   key, so HashKV answers only for the current revision (0, or the
//!   revision itself); an older one gets etcd's "compacted" error, a
//!   newer one its "future revision" error.
//! - **Snapshot** streams a consistent backup in Nacre's format
//!   (backup/format.rs, docs/backup-format.md), in chunks of at most
//!   64 KiB (`backup::CHUNK_BYTES`): `etcdctl snapshot save` accepts it (512·n + 32
//!   bytes), and `nacre snapshot restore` restores it.
//! - **MoveLeader** is Nacre's leadership transfer; it answers once the
//!   target leads, or fails after `request_timeout_ms`.
//! - **Defragment** succeeds without doing anything: Nacre's store has no
//!   free pages to give back; its cleaner reclaims the space of old
//!   records in the background.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use nacre_proto::{ErrorCode, ErrorReply, Revision};
use nacre_store::ReadTxn;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::errors::NO_LEADER;
use super::{status, Api};
use crate::backup::BackupWriter;
use crate::node::{Membership, Role};
use crate::server::off_the_workers;
use crate::state::{read_leases, read_revision, StateError, COMPACTED, FUTURE_REV, USER_NS};

/// The version Status reports: the etcd API version Nacre serves, with
/// Nacre's own as build metadata (which semver ignores when comparing, so
/// a client that checks for 3.4 finds it).
pub const VERSION: &str = concat!("3.4.0+nacre.", env!("CARGO_PKG_VERSION"));
/// Snapshot chunks read ahead of the client.
const SNAPSHOT_AHEAD_CHUNKS: usize = 2;
const BAD_TRANSFEREE: &str = "etcdserver: bad leader transferee";
const TRANSFER_TIMED_OUT: &str = "etcdserver: request timed out, leader transfer took too long";

pub(crate) struct MaintenanceService(pub Arc<Api>);

/// The Maintenance service, with the message bounds of the API.
pub(super) fn service(
    api: &Arc<Api>,
) -> pb::maintenance_server::MaintenanceServer<MaintenanceService> {
    pb::maintenance_server::MaintenanceServer::from_arc(Arc::new(MaintenanceService(api.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        match AlarmAction::try_from(req.get_ref().action) {
            Ok(AlarmAction::Get | AlarmAction::Deactivate) => {
                Ok(Response::new(pb::AlarmResponse {
                    header: Some(self.0.header(current_revision(&self.0)?)),
                    alarms: Vec::new(),
                }))
            }
            Ok(AlarmAction::Activate) => Err(Status::unimplemented(
                "nacre: Nacre raises no alarms, and cannot be made to",
            )),
            Err(_) => Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        }
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(node_status(&self.0)?))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.0.header(current_revision(&self.0)?)),
        }))
    }

    async fn hash(
        &self,
        _req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (revision, _, hash) = hash_here(&self.0).await.map_err(status)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.0.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let (revision, compacted, hash) = hash_here(&self.0).await.map_err(status)?;
        match u64::try_from(req.get_ref().revision) {
            Ok(0) => {}
            Ok(r) if r == revision => {}
            Ok(r) if r > revision => return Err(Status::out_of_range(FUTURE_REV)),
            // Older (or negative): Nacre has only the newest version.
            _ => return Err(Status::out_of_range(COMPACTED)),
        }
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.0.header(revision)),
            hash,
            compact_revision: compacted as i64,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let api = self.0.clone();
        crate::server::wait_for(&api.shared, nacre_proto::Consistency::Any)
            .await
            .map_err(status)?;
        let store = api.shared.store.clone();
        let writer = off_the_workers(&api.shared, move || {
            BackupWriter::start(&store).map_err(ErrorReply::from)
        })
        .await
        .map_err(status)?;
        let (tx, rx) = mpsc::channel(SNAPSHOT_AHEAD_CHUNKS);
        tokio::spawn(send_backup(api, writer, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let api = &self.0;
        let target = req.get_ref().target_id;
        let voter = super::cluster::member_list(api)
            .iter()
            .any(|m| m.id == target && !m.is_learner);
        if !voter {
            return Err(Status::failed_precondition(BAD_TRANSFEREE));
        }
        api.here_or_leader(
            req,
            async |_| move_leader(api, target).await,
            async |c, r| MaintenanceClient::new(c).move_leader(r).await,
        )
        .await
    }
}

/// The etcd revision of a fresh snapshot.
fn current_revision(api: &Api) -> Result<u64, Status> {
    let txn = api.shared.store.begin_read();
    read_revision(&txn)
        .map(|(r, _)| r)
        .map_err(|e| status(e.into()))
}

fn node_status(api: &Api) -> Result<pb::StatusResponse, Status> {
    let s = &api.shared.node.status;
    let stats = api.shared.store.stats();
    let leader = s.leader_id.load(Ordering::Acquire);
    let mut errors = Vec::new();
    if leader == 0 {
        errors.push(NO_LEADER.to_string());
    }
    if let Some(p) = stats.poisoned {
        errors.push(format!("nacre: the store stopped writing: {p}"));
    }
    if let Some(e) = stats.cleaner_error {
        errors.push(format!("nacre: the store's cleaner failed: {e}"));
    }
    Ok(pb::StatusResponse {
        header: Some(api.header(current_revision(api)?)),
        version: VERSION.to_string(),
        db_size: i64::try_from(stats.bytes_on_disk).unwrap_or(i64::MAX),
        db_size_in_use: i64::try_from(stats.live_bytes).unwrap_or(i64::MAX),
        leader,
        raft_index: s.commit.load(Ordering::Acquire),
        raft_term: s.term.load(Ordering::Acquire),
        raft_applied_index: s.applied.load(Ordering::Acquire),
        errors,
        is_learner: s.role() == Role::Learner,
        ..Default::default()
    })
}

/// Hands leadership to `target` and waits until it leads. NotMaster (so
/// the call is forwarded) if this node does not lead.
async fn move_leader(api: &Api, target: u64) -> Result<pb::MoveLeaderResponse, ErrorReply> {
    let shared = &api.shared;
    let status = &shared.node.status;
    let timeout = Duration::from_millis(shared.config.request_timeout_ms);
    let deadline = Instant::now() + timeout;
    if status.leader_id.load(Ordering::Acquire) != target {
        match tokio::time::timeout(
            timeout,
            shared.node.membership(Membership::TransferLeader(target)),
        )
        .await
        {
            Ok(r) => r.map(drop)?,
            Err(_) => return Err(ErrorReply::new(ErrorCode::Timeout, TRANSFER_TIMED_OUT)),
        }
    }
    // The transfer takes an election round: etcd answers once it is done.
    while status.leader_id.load(Ordering::Acquire) != target {
        if Instant::now() > deadline {
            return Err(ErrorReply::new(ErrorCode::Timeout, TRANSFER_TIMED_OUT));
        }
        tokio::time::sleep(Duration::from_millis(shared.config.tick_ms.max(1))).await;
    }
    Ok(pb::MoveLeaderResponse {
        header: Some(api.header(0)),
    })
}

/// The hash of this node's user keyspace, from one snapshot: (etcd
/// revision, compacted revision, hash).
async fn hash_here(api: &Api) -> Result<(u64, u64, u32), ErrorReply> {
    crate::server::wait_for(&api.shared, nacre_proto::Consistency::Any).await?;
    let store = api.shared.store.clone();
    off_the_workers(&api.shared, move || {
        let txn = store.begin_read();
        let (revision, compacted) = read_revision(&txn)?;
        Ok((revision, compacted, hash_user_keys(&txn)?))
    })
    .await
}

/// CRC-32C over every user pair of `txn` in key order. Each pair adds its
/// key's length (u32 LE) and bytes, its value's length and bytes, then
/// create revision, mod revision, version and lease (u64 LE each): the
/// lengths keep two different keyspaces from hashing the same bytes.
pub fn hash_user_keys(txn: &ReadTxn) -> Result<u32, StateError> {
    let leases = !read_leases(txn)?.is_empty();
    let mut crc = 0u32;
    let mut failed: Option<StateError> = None;
    let start = [USER_NS];
    let end = [USER_NS + 1];
    txn.scan(
        std::ops::Bound::Included(&start[..]),
        std::ops::Bound::Excluded(&end[..]),
        false,
        |k, raw| {
            let step = || -> Result<u32, StateError> {
                let user = &k[1..];
                let (rev, value) = decode_user(k, raw)?;
                let lease = if leases {
                    crate::state::lease_of_read(txn, user)?
                } else {
                    0
                };
                let mut c = crc;
                for part in [user, value] {
                    c = crc32c::crc32c_append(c, &(part.len() as u32).to_le_bytes());
                    c = crc32c::crc32c_append(c, part);
                }
                for n in [rev.create_rev, rev.mod_rev, rev.version, lease] {
                    c = crc32c::crc32c_append(c, &n.to_le_bytes());
                }
                Ok(c)
            };
            match step() {
                Ok(c) => {
                    crc = c;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        },
    )?;
    match failed {
        Some(e) => Err(e),
        None => Ok(crc),
    }
}

/// The revision and value of a stored user record (the state machine
/// writes the revision first).
fn decode_user<'a>(key: &[u8], raw: &'a [u8]) -> Result<(Revision, &'a [u8]), StateError> {
    match (
        Revision::decode_from(raw),
        raw.get(Revision::ENCODED_BYTES..),
    ) {
        (Some(rev), Some(value)) => Ok((rev, value)),
        _ => Err(
            crate::state::Corruption::new(key, "user value", "shorter than its revision").into(),
        ),
    }
}

/// Streams the backup to the client, one chunk at a time off the async
/// workers, until it is all sent or the client goes away.
async fn send_backup(
    api: Arc<Api>,
    mut writer: BackupWriter,
    tx: mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) {
    let mut first = true;
    loop {
        if tx.is_closed() {
            return;
        }
        if api.shared.node.status.stopped.load(Ordering::Acquire) {
            // The store stays readable, but a node that stopped serves no
            // more: the client asks another member.
            let _ = tx
                .send(Err(Status::unavailable("etcdserver: server stopped")))
                .await;
            return;
        }
        let next = off_the_workers(&api.shared, move || {
            let chunk = writer.next_chunk().map_err(ErrorReply::from);
            Ok((writer, chunk))
        })
        .await;
        let chunk = match next {
            Ok((w, Ok(chunk))) => {
                writer = w;
                chunk
            }
            Ok((_, Err(e))) | Err(e) => {
                let _ = tx.send(Err(status(e))).await;
                return;
            }
        };
        let Some((blob, remaining_bytes)) = chunk else {
            return;
        };
        let header = first.then(|| api.header(writer.revision()));
        first = false;
        let resp = pb::SnapshotResponse {
            header,
            remaining_bytes,
            blob,
        };
        if tx.send(Ok(resp)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_semver_with_nacre_as_build_metadata() {
        let (core, meta) = VERSION.split_once('+').unwrap();
        assert_eq!(core, "3.4.0");
        assert!(meta.starts_with("nacre."));
    }
}
