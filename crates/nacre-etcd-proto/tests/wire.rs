//! The field numbers and service names in proto/ are etcd's wire format: a
//! wrong one compiles fine and then silently talks nonsense to a real etcd.
//! These tests pin them with bytes worked out by hand from etcd's
//! published field numbers (tag = field << 3 | wire type; 0 varint,
//! 2 length-delimited).

use nacre_etcd_proto::etcdserverpb::{
    compare, kv_server, lease_server, maintenance_server, request_op, response_op, watch_server,
    Compare, LeaseGrantRequest, LeaseGrantResponse, PutRequest, RangeRequest, RequestOp,
    StatusResponse, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use nacre_etcd_proto::mvccpb::{event::EventType, KeyValue};
use prost::bytes::Bytes;
use prost::Message;

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
