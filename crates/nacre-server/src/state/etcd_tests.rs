//! etcd's writes in the state machine (state/etcd.rs): all or nothing,
//! the store revision, compaction, nested Txns decided up front.

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_proto::{Batch, Command, ErrorCode, Op};
use nacre_store::Store;
use prost::Message;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn open_at(path: &std::path::Path) -> StateMachine {
    let store = Store::open(path.join("s"), nacre_store::Options::default()).unwrap();
    StateMachine::open(store).unwrap()
}

fn apply(sm: &mut StateMachine, index: u64, op: Op) -> Outcome {
    let data = Command {
        session: None,
        batch: Batch {
            guards: vec![],
            ops: vec![op],
        },
    }
    .encode();
    let e = Committed {
        index,
        term: 1,
        data: &data,
    };
    sm.apply(&[e]).unwrap().pop().unwrap()
}

fn put(key: &str, value: &str, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: b(key),
            value: b(value),
            lease,
            ..Default::default()
        })),
    }
}

fn txn(
    compare: Vec<pb::Compare>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
            compare,
            success,
            failure,
        })),
    }
}

fn absent(key: &str) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Version as i32,
        key: b(key),
        target_union: Some(pb::compare::TargetUnion::Version(0)),
        range_end: Bytes::new(),
    }
}

fn etcd(sm: &mut StateMachine, index: u64, op: &pb::RequestOp) -> (u64, pb::ResponseOp) {
    match apply(sm, index, Op::Etcd(encode_request(op))) {
        Outcome::Etcd { revision, response } => {
            (revision, pb::ResponseOp::decode(response).unwrap())
        }
        other => panic!("not an etcd outcome: {other:?}"),
    }
}

fn value(sm: &StateMachine, key: &str) -> Option<Bytes> {
    Reader::new(sm.store()).get(key.as_bytes()).unwrap()
}

#[test]
fn a_put_moves_the_revision_and_a_write_of_nothing_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    let (rev, _) = etcd(&mut sm, 5, &put("a", "1", 0));
    assert_eq!((rev, sm.kv_revision()), (5, 5));
    // A Txn whose compare fails and whose failure branch is empty
    // changes nothing: etcd's revision stays.
    let (rev, resp) = etcd(
        &mut sm,
        6,
        &txn(vec![absent("a")], vec![put("b", "2", 0)], vec![]),
    );
    assert_eq!((rev, sm.kv_revision()), (5, 5));
    let Some(pb::response_op::Response::ResponseTxn(t)) = resp.response else {
        panic!("a Txn's response");
    };
    assert!(!t.succeeded);
    assert_eq!(value(&sm, "b"), None);
    // A native write moves it too: one keyspace, one revision.
    let set = Op::Set(b("c"), b("3"));
    assert!(matches!(apply(&mut sm, 7, set), Outcome::Applied { .. }));
    assert_eq!(sm.kv_revision(), 7);
    // And it survives a reopen (replicated, in the store).
    sm.checkpoint().unwrap();
    drop(sm);
    assert_eq!(open_at(dir.path()).kv_revision(), 7);
}

#[test]
fn a_txn_that_fails_part_way_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    let t = txn(vec![], vec![put("a", "1", 0), put("b", "2", 99)], vec![]);
    match apply(&mut sm, 3, Op::Etcd(encode_request(&t))) {
        Outcome::Failed { code, message, .. } => {
            assert_eq!(code, ErrorCode::LeaseNotFound);
            assert_eq!(message, LEASE_NOT_FOUND);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(value(&sm, "a"), None, "the first put was undone");
    assert!(sm.take_events().is_empty(), "and so were its events");
    assert_eq!(sm.kv_revision(), 1, "a new store's revision, as etcd's");
}

#[test]
fn nested_compares_are_decided_before_the_txn_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    // The outer Txn creates `a`; its nested Txn asks whether `a` is
    // absent: true before the outer Txn ran, so etcd takes `success`.
    let nested = txn(
        vec![absent("a")],
        vec![put("x", "then", 0)],
        vec![put("x", "now", 0)],
    );
    etcd(
        &mut sm,
        4,
        &txn(vec![], vec![put("a", "1", 0), nested], vec![]),
    );
    assert_eq!(value(&sm, "x"), Some(b("then")));
}

#[test]
fn compaction_refuses_the_future_and_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    etcd(&mut sm, 3, &put("a", "1", 0));
    etcd(&mut sm, 8, &put("a", "2", 0));
    let compact = |rev| Op::Etcd(encode_compact(rev));
    let fails = |o: Outcome, want: &str| match o {
        Outcome::Failed { message, .. } => assert_eq!(message, want),
        other => panic!("expected {want:?}, got {other:?}"),
    };
    fails(apply(&mut sm, 9, compact(20)), FUTURE_REV);
    assert!(matches!(
        apply(&mut sm, 10, compact(3)),
        Outcome::Etcd { .. }
    ));
    fails(apply(&mut sm, 11, compact(3)), COMPACTED);
    let (revision, compacted) = read_revision(&sm.store().begin_read()).unwrap();
    assert_eq!((revision, compacted), (8, 3));
}
