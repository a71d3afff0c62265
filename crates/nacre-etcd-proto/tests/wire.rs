//! The field numbers and service names in proto/ are etcd's wire format: a
//! wrong one compiles fine and then silently talks nonsense to a real etcd.
//! These tests pin them with bytes worked out by hand from etcd's
//! published field numbers (tag = field << 3 | wire type; 0 varint,
//! 2 length-delimited).

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use nacre_etcd_proto::authpb::{permission, Permission};
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::etcdserverpb::{
    alarm_request, auth_client::AuthClient, auth_server, cluster_client::ClusterClient,
    cluster_server, compare, kv_client::KvClient, kv_server, lease_client::LeaseClient,
    lease_server, maintenance_client::MaintenanceClient, maintenance_server, request_op,
    response_op, watch_client::WatchClient, watch_create_request, watch_request, watch_server,
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, AuthRoleGrantPermissionRequest,
    AuthUserGrantRoleRequest, Compare, HashKvResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, Member, MemberAddRequest, MemberListResponse,
    MoveLeaderRequest, PutRequest, RangeRequest, RequestOp, SnapshotResponse, StatusResponse,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use nacre_etcd_proto::mvccpb::{event::EventType, KeyValue};
use nacre_etcd_proto::v3electionpb;
use nacre_etcd_proto::v3electionpb::{
    election_client::ElectionClient, election_server, CampaignRequest, CampaignResponse, LeaderKey,
    LeaderResponse, ProclaimRequest,
};
use nacre_etcd_proto::v3lockpb::{
    lock_client::LockClient, lock_server, LockRequest, LockResponse, UnlockRequest,
};
use prost::bytes::Bytes;
use prost::Message;
use tonic::codegen::{http, tokio_stream, Service, StdError};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn services_have_etcd_s_names() {
    // gRPC paths are /<package>.<service>/<method>.
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(election_server::SERVICE_NAME, "v3electionpb.Election");
}

#[test]
fn put_request_encodes_with_etcd_s_tags() {
    let put = PutRequest {
        key: b("k"),
        value: b("v"),
        lease: 5,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'k', // 1 key
        0x12, 1, b'v', // 2 value
        0x18, 5,       // 3 lease
        0x20, 1,       // 4 prev_kv
        0x28, 1,       // 5 ignore_value
        0x30, 1,       // 6 ignore_lease
    ];
    assert_eq!(put.encode_to_vec(), expected);
}

#[test]
fn range_request_encodes_with_etcd_s_tags() {
    let r = RangeRequest {
        key: b("k"),
        range_end: b("l"),
        limit: 3,
        revision: 4,
        serializable: true,
        count_only: true,
        max_create_revision: 9,
        ..RangeRequest::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'k', // 1 key
        0x12, 1, b'l', // 2 range_end
        0x18, 3,       // 3 limit
        0x20, 4,       // 4 revision
        0x38, 1,       // 7 serializable
        0x48, 1,       // 9 count_only
        0x68, 9,       // 13 max_create_revision
    ];
    assert_eq!(r.encode_to_vec(), expected);
}

#[test]
fn a_transaction_etcd_would_send_decodes() {
    #[rustfmt::skip]
    let compare = [
        0x08, 3,               // 1 result: NOT_EQUAL
        0x10, 3,               // 2 target: VALUE
        0x1a, 1, b'k',         // 3 key
        0x3a, 1, b'v',         // 7 value (in target_union)
        0x82, 0x04, 1, b'z',   // 64 range_end: tag 514, a two-byte varint
    ];
    let put_op = [0x12, 3, 0x0a, 1, b'a']; // RequestOp 2 request_put { 1 key }
    let range_op = [0x0a, 3, 0x0a, 1, b'b']; // RequestOp 1 request_range { 1 key }
    let mut txn = vec![0x0a, compare.len() as u8]; // 1 compare
    txn.extend_from_slice(&compare);
    txn.extend_from_slice(&[0x12, put_op.len() as u8]); // 2 success
    txn.extend_from_slice(&put_op);
    txn.extend_from_slice(&[0x1a, range_op.len() as u8]); // 3 failure
    txn.extend_from_slice(&range_op);

    let t = TxnRequest::decode(txn.as_slice()).unwrap();
    assert_eq!(
        t.compare,
        [Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Value as i32,
            key: b("k"),
            target_union: Some(compare::TargetUnion::Value(b("v"))),
            range_end: b("z"),
        }]
    );
    assert_eq!(
        t.success,
        [RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b("a"),
                ..PutRequest::default()
            })),
        }]
    );
    assert_eq!(
        t.failure,
        [RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b("b"),
                ..RangeRequest::default()
            })),
        }]
    );
}

#[test]
fn a_transaction_response_etcd_would_send_decodes() {
    #[rustfmt::skip]
    let kv = [
        0x0a, 1, b'a', // 1 key
        0x10, 4,       // 2 create_revision
        0x18, 6,       // 3 mod_revision
        0x20, 2,       // 4 version
        0x2a, 1, b'x', // 5 value
        0x30, 9,       // 6 lease
    ];
    let mut put_response = vec![0x12, kv.len() as u8]; // PutResponse 2 prev_kv
    put_response.extend_from_slice(&kv);
    let mut op = vec![0x12, put_response.len() as u8]; // ResponseOp 2 response_put
    op.extend_from_slice(&put_response);
    #[rustfmt::skip]
    let mut bytes = vec![
        0x0a, 4, 0x18, 7, 0x20, 2, // 1 header { 3 revision, 4 raft_term }
        0x10, 1,                   // 2 succeeded
        0x1a, op.len() as u8,      // 3 responses
    ];
    bytes.extend_from_slice(&op);

    let r = TxnResponse::decode(bytes.as_slice()).unwrap();
    let header = r.header.unwrap();
    assert_eq!((header.revision, header.raft_term), (7, 2));
    assert!(r.succeeded);
    let Some(response_op::Response::ResponsePut(put)) = &r.responses[0].response else {
        panic!("not a put response: {:?}", r.responses);
    };
    assert_eq!(
        put.prev_kv,
        Some(KeyValue {
            key: b("a"),
            create_revision: 4,
            mod_revision: 6,
            version: 2,
            value: b("x"),
            lease: 9,
        })
    );
}

#[test]
fn watch_messages_use_etcd_s_tags() {
    let create = WatchRequest {
        request_union: Some(
            nacre_etcd_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b("k"),
                    start_revision: 3,
                    prev_kv: true,
                    watch_id: 2,
                    ..WatchCreateRequest::default()
                },
            ),
        ),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 9,       // 1 create_request
        0x0a, 1, b'k', // 1 key
        0x18, 3,       // 3 start_revision
        0x30, 1,       // 6 prev_kv
        0x38, 2,       // 7 watch_id
    ];
    assert_eq!(create.encode_to_vec(), expected);

    // Events are field 11 (tag 0x5a), after a gap in etcd's numbering.
    #[rustfmt::skip]
    let bytes = [
        0x10, 4,                                  // 2 watch_id
        0x20, 1,                                  // 4 canceled
        0x28, 3,                                  // 5 compact_revision
        0x32, 2, b'n', b'o',                      // 6 cancel_reason
        0x5a, 7, 0x08, 1, 0x12, 3, 0x0a, 1, b'k', // 11 events { DELETE, kv { key } }
    ];
    let w = WatchResponse::decode(&bytes[..]).unwrap();
    assert_eq!((w.watch_id, w.canceled, w.compact_revision), (4, true, 3));
    assert_eq!(w.cancel_reason, "no");
    assert_eq!(w.events.len(), 1);
    assert_eq!(w.events[0].r#type, EventType::Delete as i32);
    assert_eq!(w.events[0].kv.as_ref().unwrap().key, b("k"));
}

#[test]
fn lease_and_status_messages_use_etcd_s_tags() {
    let grant = LeaseGrantRequest { ttl: 10, id: 7 };
    assert_eq!(grant.encode_to_vec(), [0x08, 10, 0x10, 7]); // 1 TTL, 2 ID
    let granted = LeaseGrantResponse::decode(&[0x10, 42, 0x18, 10, 0x22, 1, b'e'][..]).unwrap();
    assert_eq!(
        (granted.id, granted.ttl, granted.error.as_str()),
        (42, 10, "e")
    );

    #[rustfmt::skip]
    let bytes = [
        0x12, 3, b'3', b'.', b'6', // 2 version
        0x20, 5,                   // 4 leader
        0x28, 9,                   // 5 raftIndex
        0x50, 1,                   // 10 isLearner
        0x60, 8,                   // 12 dbSizeQuota
    ];
    let s = StatusResponse::decode(&bytes[..]).unwrap();
    assert_eq!(s.version, "3.6");
    assert_eq!((s.leader, s.raft_index), (5, 9));
    assert!(s.is_learner);
    assert_eq!(s.db_size_quota, 8);
}

/// A gRPC channel that answers nothing: it records the path of each call
/// and fails it.
#[derive(Clone, Default)]
struct Paths(Arc<Mutex<Vec<String>>>);

impl Service<http::Request<tonic::body::Body>> for Paths {
    type Response = http::Response<tonic::body::Body>;
    type Error = StdError;
    type Future = std::future::Ready<Result<Self::Response, StdError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.lock().unwrap().push(request.uri().path().to_owned());
        std::future::ready(Err("recorded".into()))
    }
}

/// Runs a call on [`Paths`], which never waits, to its (failed) end.
fn call<T>(f: impl Future<Output = Result<T, tonic::Status>>) {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(r) => assert!(r.is_err()),
        Poll::Pending => panic!("the recording channel never waits"),
    }
}

#[test]
fn every_method_has_etcd_s_path() {
    let paths = Paths::default();
    let mut kv = KvClient::new(paths.clone());
    call(kv.range(RangeRequest::default()));
    call(kv.put(PutRequest::default()));
    call(kv.delete_range(pb::DeleteRangeRequest::default()));
    call(kv.txn(TxnRequest::default()));
    call(kv.compact(pb::CompactionRequest::default()));
    call(WatchClient::new(paths.clone()).watch(tokio_stream::empty()));
    let mut lease = LeaseClient::new(paths.clone());
    call(lease.lease_grant(LeaseGrantRequest::default()));
    call(lease.lease_revoke(pb::LeaseRevokeRequest::default()));
    call(lease.lease_keep_alive(tokio_stream::empty()));
    call(lease.lease_time_to_live(LeaseTimeToLiveRequest::default()));
    call(lease.lease_leases(pb::LeaseLeasesRequest::default()));
    let mut cluster = ClusterClient::new(paths.clone());
    call(cluster.member_add(MemberAddRequest::default()));
    call(cluster.member_remove(pb::MemberRemoveRequest::default()));
    call(cluster.member_update(pb::MemberUpdateRequest::default()));
    call(cluster.member_list(pb::MemberListRequest::default()));
    call(cluster.member_promote(pb::MemberPromoteRequest::default()));
    let mut maintenance = MaintenanceClient::new(paths.clone());
    call(maintenance.alarm(AlarmRequest::default()));
    call(maintenance.status(pb::StatusRequest::default()));
    call(maintenance.defragment(pb::DefragmentRequest::default()));
    call(maintenance.hash(pb::HashRequest::default()));
    call(maintenance.hash_kv(pb::HashKvRequest::default()));
    call(maintenance.snapshot(pb::SnapshotRequest::default()));
    call(maintenance.move_leader(MoveLeaderRequest::default()));
    let mut auth = AuthClient::new(paths.clone());
    call(auth.auth_enable(pb::AuthEnableRequest::default()));
    call(auth.auth_disable(pb::AuthDisableRequest::default()));
    call(auth.authenticate(pb::AuthenticateRequest::default()));
    call(auth.user_add(pb::AuthUserAddRequest::default()));
    call(auth.user_get(pb::AuthUserGetRequest::default()));
    call(auth.user_list(pb::AuthUserListRequest::default()));
    call(auth.user_delete(pb::AuthUserDeleteRequest::default()));
    call(auth.user_change_password(pb::AuthUserChangePasswordRequest::default()));
    call(auth.user_grant_role(AuthUserGrantRoleRequest::default()));
    call(auth.user_revoke_role(pb::AuthUserRevokeRoleRequest::default()));
    call(auth.role_add(pb::AuthRoleAddRequest::default()));
    call(auth.role_get(pb::AuthRoleGetRequest::default()));
    call(auth.role_list(pb::AuthRoleListRequest::default()));
    call(auth.role_delete(pb::AuthRoleDeleteRequest::default()));
    call(auth.role_grant_permission(AuthRoleGrantPermissionRequest::default()));
    call(auth.role_revoke_permission(pb::AuthRoleRevokePermissionRequest::default()));
    let mut lock = LockClient::new(paths.clone());
    call(lock.lock(LockRequest::default()));
    call(lock.unlock(UnlockRequest::default()));
    let mut election = ElectionClient::new(paths.clone());
    call(election.campaign(CampaignRequest::default()));
    call(election.proclaim(ProclaimRequest::default()));
    call(election.leader(v3electionpb::LeaderRequest::default()));
    call(election.observe(v3electionpb::LeaderRequest::default()));
    call(election.resign(v3electionpb::ResignRequest::default()));

    // etcd 3.4's methods, service by service, in its order.
    let expected = [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Lease/LeaseLeases",
        "/etcdserverpb.Cluster/MemberAdd",
        "/etcdserverpb.Cluster/MemberRemove",
        "/etcdserverpb.Cluster/MemberUpdate",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Cluster/MemberPromote",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Defragment",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Maintenance/MoveLeader",
        "/etcdserverpb.Auth/AuthEnable",
        "/etcdserverpb.Auth/AuthDisable",
        "/etcdserverpb.Auth/Authenticate",
        "/etcdserverpb.Auth/UserAdd",
        "/etcdserverpb.Auth/UserGet",
        "/etcdserverpb.Auth/UserList",
        "/etcdserverpb.Auth/UserDelete",
        "/etcdserverpb.Auth/UserChangePassword",
        "/etcdserverpb.Auth/UserGrantRole",
        "/etcdserverpb.Auth/UserRevokeRole",
        "/etcdserverpb.Auth/RoleAdd",
        "/etcdserverpb.Auth/RoleGet",
        "/etcdserverpb.Auth/RoleList",
        "/etcdserverpb.Auth/RoleDelete",
        "/etcdserverpb.Auth/RoleGrantPermission",
        "/etcdserverpb.Auth/RoleRevokePermission",
        "/v3lockpb.Lock/Lock",
        "/v3lockpb.Lock/Unlock",
        "/v3electionpb.Election/Campaign",
        "/v3electionpb.Election/Proclaim",
        "/v3electionpb.Election/Leader",
        "/v3electionpb.Election/Observe",
        "/v3electionpb.Election/Resign",
    ];
    assert_eq!(*paths.0.lock().unwrap(), expected);
}

#[test]
fn compare_on_a_lease_uses_etcd_s_tags() {
    let c = Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Lease as i32,
        key: b("k"),
        target_union: Some(compare::TargetUnion::Lease(7)),
        range_end: b("l"),
    };
    #[rustfmt::skip]
    let expected = [
        // 1 result: EQUAL is 0, so not sent
        0x10, 4,             // 2 target: LEASE
        0x1a, 1, b'k',       // 3 key
        0x40, 7,             // 8 lease (in target_union)
        0x82, 0x04, 1, b'l', // 64 range_end
    ];
    assert_eq!(c.encode_to_vec(), expected);
}

#[test]
fn watch_filters_and_progress_use_etcd_s_tags() {
    let create = WatchCreateRequest {
        key: b("k"),
        progress_notify: true,
        filters: vec![
            watch_create_request::FilterType::Noput as i32,
            watch_create_request::FilterType::Nodelete as i32,
        ],
        fragment: true,
        ..WatchCreateRequest::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'k',    // 1 key
        0x20, 1,          // 4 progress_notify
        0x2a, 2, 0, 1,    // 5 filters, packed: NOPUT, NODELETE
        0x40, 1,          // 8 fragment
    ];
    assert_eq!(create.encode_to_vec(), expected);
    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    };
    assert_eq!(progress.encode_to_vec(), [0x1a, 0]); // 3 progress_request
    let fragment = WatchResponse::decode(&[0x38, 1][..]).unwrap(); // 7 fragment
    assert!(fragment.fragment);
}

#[test]
fn lease_time_to_live_uses_etcd_s_tags() {
    let ask = LeaseTimeToLiveRequest { id: 3, keys: true };
    assert_eq!(ask.encode_to_vec(), [0x08, 3, 0x10, 1]); // 1 ID, 2 keys
    #[rustfmt::skip]
    let bytes = [
        0x10, 3,             // 2 ID
        0x18, 8,             // 3 TTL
        0x20, 10,            // 4 grantedTTL
        0x2a, 1, b'a',       // 5 keys
        0x2a, 1, b'b',
    ];
    let r = LeaseTimeToLiveResponse::decode(&bytes[..]).unwrap();
    assert_eq!((r.id, r.ttl, r.granted_ttl), (3, 8, 10));
    assert_eq!(r.keys, [b("a"), b("b")]);
}

#[test]
fn lock_messages_use_etcd_s_tags() {
    let lock = LockRequest {
        name: b("m"),
        lease: 9,
    };
    assert_eq!(lock.encode_to_vec(), [0x0a, 1, b'm', 0x10, 9]); // 1 name, 2 lease
    let unlock = UnlockRequest { key: b("m/1") };
    assert_eq!(unlock.encode_to_vec(), [0x0a, 3, b'm', b'/', b'1']); // 1 key
    #[rustfmt::skip]
    let bytes = [
        0x0a, 2, 0x18, 5,          // 1 header { 3 revision }
        0x12, 3, b'm', b'/', b'1', // 2 key
    ];
    let held = LockResponse::decode(&bytes[..]).unwrap();
    assert_eq!(held.header.unwrap().revision, 5);
    assert_eq!(held.key, b("m/1"));
}

#[test]
fn election_messages_use_etcd_s_tags() {
    let campaign = CampaignRequest {
        name: b("e"),
        lease: 4,
        value: b("v"),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'e', // 1 name
        0x10, 4,       // 2 lease
        0x1a, 1, b'v', // 3 value
    ];
    assert_eq!(campaign.encode_to_vec(), expected);

    let leader = LeaderKey {
        name: b("e"),
        key: b("e/1"),
        rev: 6,
        lease: 4,
    };
    #[rustfmt::skip]
    let leader_bytes = [
        0x0a, 1, b'e',             // 1 name
        0x12, 3, b'e', b'/', b'1', // 2 key
        0x18, 6,                   // 3 rev
        0x20, 4,                   // 4 lease
    ];
    assert_eq!(leader.encode_to_vec(), leader_bytes);
    let proclaim = ProclaimRequest {
        leader: Some(leader.clone()),
        value: b("w"),
    };
    let mut expected = vec![0x0a, leader_bytes.len() as u8]; // 1 leader
    expected.extend_from_slice(&leader_bytes);
    expected.extend_from_slice(&[0x12, 1, b'w']); // 2 value
    assert_eq!(proclaim.encode_to_vec(), expected);

    let mut bytes = vec![0x12, leader_bytes.len() as u8]; // CampaignResponse 2 leader
    bytes.extend_from_slice(&leader_bytes);
    assert_eq!(
        CampaignResponse::decode(bytes.as_slice()).unwrap().leader,
        Some(leader)
    );
    // LeaderResponse 2 kv { 1 key, 5 value }
    let bytes = [0x12, 6, 0x0a, 1, b'e', 0x2a, 1, b'v'];
    let kv = LeaderResponse::decode(&bytes[..]).unwrap().kv.unwrap();
    assert_eq!((kv.key, kv.value), (b("e"), b("v")));
}

#[test]
fn cluster_messages_use_etcd_s_tags() {
    let member = Member {
        id: 2,
        name: "n".to_owned(),
        peer_ur_ls: vec!["p".to_owned()],
        client_ur_ls: vec!["c".to_owned()],
        is_learner: true,
    };
    #[rustfmt::skip]
    let member_bytes = [
        0x08, 2,       // 1 ID
        0x12, 1, b'n', // 2 name
        0x1a, 1, b'p', // 3 peerURLs
        0x22, 1, b'c', // 4 clientURLs
        0x28, 1,       // 5 isLearner
    ];
    assert_eq!(member.encode_to_vec(), member_bytes);
    let mut bytes = vec![0x12, member_bytes.len() as u8]; // MemberListResponse 2 members
    bytes.extend_from_slice(&member_bytes);
    assert_eq!(
        MemberListResponse::decode(bytes.as_slice())
            .unwrap()
            .members,
        [member]
    );

    let add = MemberAddRequest {
        peer_ur_ls: vec!["p".to_owned()],
        is_learner: true,
    };
    assert_eq!(add.encode_to_vec(), [0x0a, 1, b'p', 0x10, 1]); // 1 peerURLs, 2 isLearner
}

#[test]
fn maintenance_messages_use_etcd_s_tags() {
    let alarm = AlarmRequest {
        action: alarm_request::AlarmAction::Deactivate as i32,
        member_id: 3,
        alarm: AlarmType::Nospace as i32,
    };
    // 1 action: DEACTIVATE, 2 memberID, 3 alarm: NOSPACE
    assert_eq!(alarm.encode_to_vec(), [0x08, 2, 0x10, 3, 0x18, 1]);
    // 2 alarms { 1 memberID, 2 alarm: CORRUPT }
    let alarms = AlarmResponse::decode(&[0x12, 4, 0x08, 3, 0x10, 2][..]).unwrap();
    assert_eq!(
        alarms.alarms,
        [AlarmMember {
            member_id: 3,
            alarm: AlarmType::Corrupt as i32,
        }]
    );

    #[rustfmt::skip]
    let bytes = [
        0x18, 100,          // 3 dbSize
        0x30, 2,            // 6 raftTerm
        0x38, 8,            // 7 raftAppliedIndex
        0x42, 2, b'n', b'o', // 8 errors
        0x48, 60,           // 9 dbSizeInUse
    ];
    let s = StatusResponse::decode(&bytes[..]).unwrap();
    assert_eq!((s.db_size, s.raft_term, s.raft_applied_index), (100, 2, 8));
    assert_eq!(s.errors, ["no"]);
    assert_eq!(s.db_size_in_use, 60);

    let hash = HashKvResponse::decode(&[0x10, 0x2a, 0x18, 4][..]).unwrap(); // 2 hash, 3 compact_revision
    assert_eq!((hash.hash, hash.compact_revision), (42, 4));
    // 2 remaining_bytes, 3 blob
    let chunk = SnapshotResponse::decode(&[0x10, 7, 0x1a, 2, 1, 2][..]).unwrap();
    assert_eq!((chunk.remaining_bytes, &chunk.blob[..]), (7, &[1, 2][..]));
    let to = MoveLeaderRequest { target_id: 5 };
    assert_eq!(to.encode_to_vec(), [0x08, 5]); // 1 targetID
}

#[test]
fn auth_messages_use_etcd_s_tags() {
    let grant = AuthRoleGrantPermissionRequest {
        name: "r".to_owned(),
        perm: Some(Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: b("a"),
            range_end: b("b"),
        }),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'r',  // 1 name
        0x12, 8,        // 2 perm
        0x08, 2,        // 1 permType: READWRITE
        0x12, 1, b'a',  // 2 key
        0x1a, 1, b'b',  // 3 range_end
    ];
    assert_eq!(grant.encode_to_vec(), expected);
    let user_role = AuthUserGrantRoleRequest {
        user: "u".to_owned(),
        role: "r".to_owned(),
    };
    assert_eq!(user_role.encode_to_vec(), [0x0a, 1, b'u', 0x12, 1, b'r']); // 1 user, 2 role
}
