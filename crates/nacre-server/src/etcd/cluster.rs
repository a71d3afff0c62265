//! etcd's Cluster service over Nacre's membership (docs/replication.md):
//! MemberList, MemberAdd, MemberRemove, MemberPromote, and a MemberUpdate
//! that Nacre cannot do.
//!
//! An etcd member is a Nacre member: its ID is Nacre's raft id (a hash of
//! the node name), its peer URL `http://` + its peer address, its client
//! URLs the etcd addresses the configuration gives (none for a member the
//! configuration does not list), and it is a learner while raft's
//! configuration says so.
//!
//! Where Nacre differs, and why:
//! - **MemberAdd names the member.** Nacre identifies a member by name
//!   (its raft id is the name's hash), and etcd's request has none, so the
//!   name is derived from the peer URL: `http://HOST:PORT` becomes
//!   `etcd-HOST-PORT`. The new node must be started with that
//!   `node_name` (the response's member carries it), with `--join`. Until
//!   the leader has heard from it, MemberList shows it without a name, as
//!   etcd shows a member that never started.
//! - **MemberList comes from the leader** when it answers (only it knows
//!   which learners have started), else from the node asked.
//! - **Members join as learners.** Nacre adds a voter only by promoting a
//!   learner that has caught up (a voter that holds nothing counts towards
//!   the quorum but cannot help commit), so a MemberAdd without
//!   `isLearner` is refused with FailedPrecondition, saying to add it as a
//!   learner and promote it.
//! - **One peer URL, plain `http`.** Nacre's peer transport listens at one
//!   address and has no TLS.
//! - **No native client address.** A member added here has no Nacre
//!   client address on record (etcd's request carries none), so Nacre's
//!   own clients are not redirected to it; `nacre cluster add-learner`
//!   records one.
//! - **MemberUpdate is Unimplemented**: the replicated member table has no
//!   way to change a member's peer address; remove the member and add it
//!   again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::cluster_client::ClusterClient;
use nacre_proto::{ErrorCode, ErrorReply};
use tonic::{Code, Request, Response, Status};

use super::Api;
use crate::node::Membership;
use crate::state::MemberRecord;

/// etcd's messages for membership errors (clientv3's `rpctypes` match
/// them exactly), each with etcd's code in [`etcd_code`].
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const MEMBER_EXIST: &str = "etcdserver: member ID already exist";
const PEER_URL_EXIST: &str = "etcdserver: Peer URLs already exists";
const MEMBER_BAD_URLS: &str = "etcdserver: given member URLs are invalid";
const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
/// Nacre's own refusals, each a FailedPrecondition.
const NACRE_REFUSES: &str = "nacre: ";

/// How long a change's answer waits for the member list to show it: the
/// raft loop publishes the configuration at the end of the turn that
/// applied the change.
const LIST_SETTLE_MS: u64 = 1_000;

pub(crate) struct ClusterService(pub Arc<Api>);

/// The Cluster service, with the message bounds of the API.
pub(super) fn service(api: &Arc<Api>) -> pb::cluster_server::ClusterServer<ClusterService> {
    pb::cluster_server::ClusterServer::from_arc(Arc::new(ClusterService(api.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let api = &self.0;
        let (name, peer) = check_add(api, req.get_ref())?;
        let id = crate::node::name_id(&name);
        let member = pb::Member {
            id,
            name: name.clone(),
            peer_ur_ls: vec![format!("http://{peer}")],
            client_ur_ls: Vec::new(),
            is_learner: true,
        };
        let record = MemberRecord {
            name,
            client: String::new(),
            peer,
        };
        api.here_or_leader(
            req,
            async |_| {
                change(api, Membership::AddLearner(id, record), |l| has(l, id)).await?;
                Ok(pb::MemberAddResponse {
                    header: Some(api.header(0)),
                    member: Some(member),
                    members: member_list(api),
                })
            },
            async |c, r| ClusterClient::new(c).member_add(r).await,
        )
        .await
        .map_err(etcd_code)
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let api = &self.0;
        let id = req.get_ref().id;
        known(api, id)?;
        api.here_or_leader(
            req,
            async |_| {
                change(api, Membership::Remove(id), |l| !has(l, id)).await?;
                Ok(pb::MemberRemoveResponse {
                    header: Some(api.header(0)),
                    members: member_list(api),
                })
            },
            async |c, r| ClusterClient::new(c).member_remove(r).await,
        )
        .await
        .map_err(etcd_code)
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        known(&self.0, req.get_ref().id)?;
        Err(Status::unimplemented(
            "nacre: a member's peer address cannot be changed; remove the member and add it \
             again with the new address",
        ))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let api = &self.0;
        // The leader's list when it answers: only it knows which learners
        // have never started. Otherwise this node's own view, as etcd
        // serves it.
        let status = &api.shared.node.status;
        if !status.is_leader.load(Ordering::Acquire) && !super::is_forwarded(&req) {
            if let Ok(channel) = api.forwarder.leader(status) {
                let forwarded = super::marked(*req.get_ref());
                if let Ok(resp) = ClusterClient::new(channel).member_list(forwarded).await {
                    return Ok(resp);
                }
            }
        }
        Ok(Response::new(pb::MemberListResponse {
            header: Some(api.header(0)),
            members: member_list(api),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let api = &self.0;
        let id = req.get_ref().id;
        if known(api, id)? {
            return Err(Status::failed_precondition(NOT_LEARNER));
        }
        api.here_or_leader(
            req,
            async |_| {
                let voter = |l: &[pb::Member]| l.iter().any(|m| m.id == id && !m.is_learner);
                change(api, Membership::Promote(id, false), voter).await?;
                Ok(pb::MemberPromoteResponse {
                    header: Some(api.header(0)),
                    members: member_list(api),
                })
            },
            async |c, r| ClusterClient::new(c).member_promote(r).await,
        )
        .await
        .map_err(etcd_code)
    }
}

fn has(list: &[pb::Member], id: u64) -> bool {
    list.iter().any(|m| m.id == id)
}

/// Every member of the configuration this node applied, in id order.
///
/// etcd lists a member that has never started without a name (etcdctl
/// shows it "unstarted"). Only the leader can tell: a learner whose log
/// it has never matched has not started; elsewhere every member is named.
pub(super) fn member_list(api: &Api) -> Vec<pb::Member> {
    let status = &api.shared.node.status;
    let leads = status.is_leader.load(Ordering::Acquire);
    let progress = status.progress.lock().clone();
    let records = status.members.read();
    progress
        .into_iter()
        .map(|m| pb::Member {
            id: m.id,
            name: if !leads || m.voter || m.match_index > 0 {
                records.get(&m.id).map_or(m.name, |r| r.name.clone())
            } else {
                String::new()
            },
            peer_ur_ls: records
                .get(&m.id)
                .map(|r| vec![format!("http://{}", r.peer)])
                .unwrap_or_default(),
            client_ur_ls: api.forwarder.client_urls(m.id),
            is_learner: !m.voter,
        })
        .collect()
}

/// Whether member `id` is a voter (`true`) or a learner; NotFound if it
/// is no member.
fn known(api: &Api, id: u64) -> Result<bool, Status> {
    member_list(api)
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| !m.is_learner)
        .ok_or_else(|| Status::not_found(MEMBER_NOT_FOUND))
}

/// The name and peer address of a member to add, checked as etcd checks
/// them (and as Nacre needs them: see the module comment).
fn check_add(api: &Api, r: &pb::MemberAddRequest) -> Result<(String, String), Status> {
    let [url] = &r.peer_ur_ls[..] else {
        return Err(Status::invalid_argument(MEMBER_BAD_URLS));
    };
    let (name, peer) =
        name_from_peer_url(url).ok_or_else(|| Status::invalid_argument(MEMBER_BAD_URLS))?;
    if !r.is_learner {
        return Err(Status::failed_precondition(format!(
            "{NACRE_REFUSES}a member joins as a learner: add it with isLearner \
             (etcdctl member add --learner), start it as node {name:?}, and promote it once it \
             has caught up"
        )));
    }
    let list = member_list(api);
    let id = crate::node::name_id(&name);
    if has(&list, id) {
        return Err(Status::failed_precondition(MEMBER_EXIST));
    }
    let url = format!("http://{peer}");
    if list.iter().any(|m| m.peer_ur_ls.contains(&url)) {
        return Err(Status::failed_precondition(PEER_URL_EXIST));
    }
    Ok((name, peer))
}

/// `http://HOST:PORT` (a trailing `/` allowed) as the Nacre member name
/// `etcd-HOST-PORT` and the peer address `HOST:PORT`; `None` for anything
/// else (another scheme, a path, no port).
pub(super) fn name_from_peer_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let addr = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let bare = bare.unwrap_or(host);
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if bare.is_empty() || !bare.chars().all(valid) || (bare.contains(':') && bare == host) {
        // An IPv6 host must be bracketed, as in any URL.
        return None;
    }
    Some((format!("etcd-{bare}-{port}"), addr.to_string()))
}

/// Proposes a membership change at this node (NotMaster if it does not
/// lead, so the caller forwards), waits for it to apply, then, briefly,
/// for this node's member list to show it (`shows`).
async fn change(
    api: &Api,
    change: Membership,
    shows: impl Fn(&[pb::Member]) -> bool,
) -> Result<(), ErrorReply> {
    let shared = &api.shared;
    let timeout = Duration::from_millis(shared.config.request_timeout_ms);
    match tokio::time::timeout(timeout, shared.node.membership(change)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(etcd_reply(e)),
        Err(_) => {
            return Err(ErrorReply::new(
                ErrorCode::Timeout,
                "the membership change was not applied in time; it may or may not apply",
            ))
        }
    }
    let deadline = Instant::now() + Duration::from_millis(LIST_SETTLE_MS);
    while !shows(&member_list(api)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A refused change in etcd's words where etcd has them (the code follows
/// in [`etcd_code`]).
fn etcd_reply(e: ErrorReply) -> ErrorReply {
    let message = match (e.code, e.message.as_str()) {
        (ErrorCode::LearnerBehind, why) => {
            tracing::info!(why, "etcd MemberPromote refused");
            LEARNER_NOT_READY
        }
        (ErrorCode::BadInput, "a member with this name exists already") => MEMBER_EXIST,
        (ErrorCode::BadInput, "not a learner of this cluster") => NOT_LEARNER,
        (ErrorCode::BadInput, "not a member of this cluster") => MEMBER_NOT_FOUND,
        (ErrorCode::BadInput, "cannot remove the last voter") => NOT_ENOUGH_STARTED,
        _ => return e,
    };
    ErrorReply::new(ErrorCode::BadInput, message)
}

/// etcd's code for its membership messages (`errors::status` gives any
/// other `etcdserver:` message InvalidArgument).
fn etcd_code(s: Status) -> Status {
    let code = match s.message() {
        MEMBER_NOT_FOUND => Code::NotFound,
        MEMBER_EXIST | PEER_URL_EXIST | NOT_LEARNER | LEARNER_NOT_READY | NOT_ENOUGH_STARTED => {
            Code::FailedPrecondition
        }
        m if m.starts_with(NACRE_REFUSES) => Code::FailedPrecondition,
        _ => return s,
    };
    Status::new(code, s.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_name_members() {
        let named = |u: &str| name_from_peer_url(u);
        assert_eq!(
            named("http://10.0.0.7:2380"),
            Some(("etcd-10.0.0.7-2380".into(), "10.0.0.7:2380".into()))
        );
        assert_eq!(
            named("http://node-b.example:2380/"),
            Some((
                "etcd-node-b.example-2380".into(),
                "node-b.example:2380".into()
            ))
        );
        assert_eq!(
            named("http://[::1]:2380"),
            Some(("etcd-::1-2380".into(), "[::1]:2380".into()))
        );
        assert_eq!(named("https://10.0.0.7:2380"), None);
        assert_eq!(named("http://10.0.0.7"), None);
        assert_eq!(named("http://10.0.0.7:2380/x"), None);
        assert_eq!(named("http://::1:2380"), None);
        assert_eq!(named("http://:2380"), None);
    }

    #[test]
    fn membership_messages_keep_etcds_codes() {
        let s = etcd_code(Status::invalid_argument(LEARNER_NOT_READY));
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s = etcd_code(Status::invalid_argument(MEMBER_NOT_FOUND));
        assert_eq!(s.code(), Code::NotFound);
        let s = etcd_code(Status::unavailable("etcdserver: no leader"));
        assert_eq!(s.code(), Code::Unavailable);
        let e = etcd_reply(ErrorReply::new(ErrorCode::LearnerBehind, "far behind"));
        assert_eq!(e.message, LEARNER_NOT_READY);
    }
}
