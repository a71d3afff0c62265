//! Stored bytes this code never wrote — planted, or damage the store's
//! checksums missed — and snapshots holding them: typed errors naming the
//! key, never a panic, never applied over, never installed.

use bytes::Bytes;
use nacre_proto::{Batch, Command, Guard, Op, RangeQuery, Session};
use nacre_store::Store;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn open() -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
    (dir, StateMachine::open(store).unwrap())
}

fn entry(session: Option<Session>, batch: Batch) -> Vec<u8> {
    Command { session, batch }.encode()
}

fn ops(ops: Vec<Op>) -> Batch {
    Batch {
        guards: vec![],
        ops,
    }
}

fn apply(sm: &mut StateMachine, index: u64, data: &[u8]) -> Result<Vec<Outcome>, StateError> {
    sm.apply(&[Committed {
        index,
        term: 1,
        data,
    }])
}

/// Writes `value` under the store key `key` behind the state machine's
/// back, as a planted or damaged record would be.
fn plant(sm: &StateMachine, key: &[u8], value: &[u8]) {
    let mut txn = sm.store().begin_write().unwrap();
    txn.put(key, value).unwrap();
    txn.commit().unwrap();
}

fn names_key(e: &StateError, key: &[u8]) {
    match e {
        StateError::Corruption(c) => assert_eq!(c.key, key, "{e}"),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn a_user_value_shorter_than_its_revision_is_refused_naming_the_key() {
    let (_d, mut sm) = open();
    apply(
        &mut sm,
        1,
        &entry(None, ops(vec![Op::Set(b("ok"), b("1"))])),
    )
    .unwrap();
    let bad = user_key(b"bad");
    plant(&sm, &bad, b"abc");

    let r = Reader::new(sm.store());
    let e = r.get(b"bad").unwrap_err();
    names_key(&e, &bad);
    assert!(e.to_string().contains("user key \"bad\""), "{e}");
    assert!(e.to_string().contains("3 bytes"), "{e}");
    let reply = e.to_reply();
    assert_eq!(reply.code, nacre_proto::ErrorCode::Corruption);
    assert_eq!(reply.key, Some(b("bad")));
    names_key(&r.get_entry(b"bad").unwrap_err(), &bad);
    let all = RangeQuery {
        first: None,
        first_inclusive: true,
        last: None,
        last_inclusive: false,
        max: 100,
        reverse: false,
    };
    names_key(&r.range_entries(&all, 100).unwrap_err(), &bad);
    // A good key next to it still reads.
    assert_eq!(r.get(b"ok").unwrap(), Some(b("1")));
    drop(r);

    // Every op or guard that reads the value fails the whole apply: the
    // applied index stays, nothing of the entries is committed.
    let batches = [
        ops(vec![Op::Set(b("new"), b("n")), Op::Set(b("bad"), b("v"))]),
        ops(vec![Op::Delete(b("bad"))]),
        ops(vec![Op::Remove(b("bad"))]),
        Batch {
            guards: vec![Guard::ValueEquals(b("bad"), b("abc"))],
            ops: vec![Op::Set(b("new"), b("n"))],
        },
        Batch {
            guards: vec![Guard::VersionEquals(b("bad"), 1)],
            ops: vec![Op::Set(b("new"), b("n"))],
        },
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let e = apply(&mut sm, 2, &entry(None, batch)).unwrap_err();
        names_key(&e, &bad);
        assert_eq!(sm.applied().0, 1, "batch {i}");
        let r = Reader::new(sm.store());
        assert_eq!(r.get(b"new").unwrap(), None, "batch {i}");
    }
    // What does not touch the bad value still applies.
    apply(
        &mut sm,
        2,
        &entry(None, ops(vec![Op::Set(b("new"), b("n"))])),
    )
    .unwrap();
    assert_eq!(Reader::new(sm.store()).get(b"new").unwrap(), Some(b("n")));
}

#[test]
fn a_session_record_that_does_not_decode_is_refused_not_applied_again() {
    let (_d, mut sm) = open();
    let session = Some(Session {
        client_id: 7,
        seq: 1,
    });
    let stamped = entry(session, ops(vec![Op::Set(b("k"), b("v"))]));
    apply(&mut sm, 1, &stamped).unwrap();
    // Damage the record the first apply left.
    let mut key = b"m/session/".to_vec();
    for part in [0u64, 7, 1] {
        key.extend_from_slice(&part.to_be_bytes());
    }
    assert!(sm.store().begin_read().get(&key).unwrap().is_some());
    plant(&sm, &key, b"\xff");
    // A retry must not apply twice because its record cannot be read.
    names_key(&apply(&mut sm, 2, &stamped).unwrap_err(), &key);
    let e = Reader::new(sm.store()).get_entry(b"k").unwrap().unwrap();
    assert_eq!(e.rev.version, 1);
}

#[test]
fn an_applied_index_record_of_the_wrong_size_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
    let mut txn = store.begin_write().unwrap();
    txn.put(b"m/applied", b"12345").unwrap();
    txn.commit().unwrap();
    let e = StateMachine::open(store).err().expect("refused");
    names_key(&e, b"m/applied");
}

/// Every non-local pair of a state machine that has user keys, members,
/// sessions and scripts.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn populated() -> (tempfile::TempDir, StateMachine, Pairs) {
    let (d, mut sm) = open();
    let member = MemberRecord {
        name: "n1".into(),
        client: "127.0.0.1:1".into(),
        peer: "127.0.0.1:2".into(),
    };
    sm.apply_members(1, 1, &[(1, Some(member))]).unwrap();
    let session = Some(Session {
        client_id: 3,
        seq: 9,
    });
    apply(
        &mut sm,
        2,
        &entry(session, ops(vec![Op::Set(b("a"), b("1"))])),
    )
    .unwrap();
    let script = Op::ScriptPut {
        name: b("f"),
        source: b("function f() end"),
    };
    apply(&mut sm, 3, &entry(None, ops(vec![script]))).unwrap();
    apply(
        &mut sm,
        4,
        &entry(None, ops(vec![Op::Set(b(""), b("empty key"))])),
    )
    .unwrap();
    let pairs: Pairs = sm
        .store()
        .begin_read()
        .iter()
        .map(|kv| kv.unwrap())
        .filter(|(k, _)| !is_local_key(k))
        .collect();
    (d, sm, pairs)
}

#[test]
fn every_record_the_state_machine_writes_passes_the_snapshot_check() {
    let (_d, _sm, pairs) = populated();
    let namespaces: std::collections::BTreeSet<u8> = pairs.iter().map(|(k, _)| k[0]).collect();
    assert_eq!(namespaces, [META_NS, SCRIPT_NS, USER_NS].into());
    // Applied index, etcd revision, member, session, script head and
    // version, two users.
    assert_eq!(pairs.len(), 8, "{pairs:?}");
    for (k, v) in &pairs {
        check_snapshot_pair(k, v).unwrap_or_else(|e| panic!("{e}"));
    }
    let (_d2, mut other) = open();
    let conf = raft::eraftpb::ConfState::default();
    other
        .install_snapshot(pairs.into_iter().map(Ok), 4, 1, &conf)
        .unwrap();
    assert_eq!(other.applied(), (4, 1));
    assert_eq!(Reader::new(other.store()).get(b"a").unwrap(), Some(b("1")));
}

#[test]
fn a_snapshot_with_a_pair_that_does_not_decode_is_not_installed() {
    let (_d, _sm, good) = populated();
    let find = |prefix: &[u8]| -> (Vec<u8>, Vec<u8>) {
        good.iter()
            .find(|(k, _)| k.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix:?} in {good:?}"))
    };
    let (member, session) = (find(b"m/member/"), find(b"m/session/"));
    let mut bad_pairs: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("short user value", user_key(b"x"), b"abc".to_vec()),
        (
            "member record",
            b"m/member/\0\0\0\0\0\0\0\x05".to_vec(),
            b"\xff".to_vec(),
        ),
        ("member key", b"m/member/5".to_vec(), member.1.clone()),
        ("session record", session.0.clone(), b"\x01".to_vec()),
        (
            "etcd revision record",
            b"m/etcd/revision".to_vec(),
            vec![1; 3],
        ),
        ("script head", b"sname".to_vec(), b"12345".to_vec()),
        (
            "script version",
            b"sname\0\0\0\0\0\0\0\0\x01".to_vec(),
            b"123".to_vec(),
        ),
        ("local record", b"m/local/installed".to_vec(), vec![0; 16]),
        ("unknown service key", b"m/what".to_vec(), vec![]),
        ("no namespace", b"zz".to_vec(), vec![]),
        ("applied record", b"m/applied".to_vec(), vec![1; 3]),
    ];
    for (what, key, value) in bad_pairs.drain(..) {
        let (_d, mut target) = open();
        apply(
            &mut target,
            1,
            &entry(None, ops(vec![Op::Set(b("mine"), b("kept"))])),
        )
        .unwrap();
        let mut pairs = good.clone();
        pairs.insert(3, (key.clone(), value));
        let conf = raft::eraftpb::ConfState::default();
        let e = target
            .install_snapshot(pairs.into_iter().map(Ok), 9, 2, &conf)
            .expect_err(what);
        match &e {
            StateError::BadSnapshot(c) => assert_eq!(c.key, key, "{what}: {e}"),
            other => panic!("{what}: expected a refused snapshot, got {other:?}"),
        }
        // The store keeps what it had.
        assert_eq!(target.applied(), (1, 1), "{what}");
        let r = Reader::new(target.store());
        assert_eq!(r.get(b"mine").unwrap(), Some(b("kept")), "{what}");
        assert_eq!(r.get(b"a").unwrap(), None, "{what}");
        assert!(target.installed_snapshot().unwrap().is_none(), "{what}");
    }
}
