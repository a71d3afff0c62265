//! Change events, leases and fenced guards in the state machine.

use bytes::Bytes;
use nacre_proto::{Batch, Command, ErrorCode, EventKind, Guard, Op};
use nacre_store::Store;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn open_at(path: &std::path::Path) -> StateMachine {
    let store = Store::open(path.join("s"), nacre_store::Options::default()).unwrap();
    StateMachine::open(store).unwrap()
}

fn apply(sm: &mut StateMachine, index: u64, guards: Vec<Guard>, ops: Vec<Op>) -> Outcome {
    let data = Command {
        session: None,
        batch: Batch { guards, ops },
    }
    .encode();
    let e = Committed {
        index,
        term: 1,
        data: &data,
    };
    sm.apply(&[e]).unwrap().pop().unwrap()
}

fn code(o: &Outcome) -> Option<ErrorCode> {
    match o {
        Outcome::Failed { code, .. } => Some(*code),
        Outcome::Applied { .. } | Outcome::Etcd { .. } => None,
    }
}

#[test]
fn every_change_is_one_event_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    apply(
        &mut sm,
        1,
        vec![],
        vec![Op::Set(b("a/1"), b("x")), Op::Set(b("a/2"), b("y"))],
    );
    apply(&mut sm, 2, vec![], vec![Op::Set(b("a/1"), b("z"))]);
    apply(&mut sm, 3, vec![], vec![Op::DeletePrefix(b("a/"))]);
    let ev = sm.take_events();
    // (kind, key, revision, version, previous value)
    type Seen<'a> = (EventKind, &'a [u8], u64, u64, Option<&'a [u8]>);
    let seen: Vec<Seen<'_>> = ev
        .iter()
        .map(|e| {
            (
                e.kind,
                &e.key[..],
                e.revision(),
                e.rev.version,
                e.prev.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Put, &b"a/1"[..], 1, 1, None),
            (EventKind::Put, &b"a/2"[..], 1, 1, None),
            (EventKind::Put, &b"a/1"[..], 2, 2, Some(&b"x"[..])),
            (EventKind::Delete, &b"a/1"[..], 3, 0, Some(&b"z"[..])),
            (EventKind::Delete, &b"a/2"[..], 3, 0, Some(&b"y"[..])),
        ]
    );
    assert!(sm.take_events().is_empty(), "taken events are gone");
}

#[test]
fn a_failed_batch_has_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    let o = apply(
        &mut sm,
        1,
        vec![],
        vec![Op::Set(b("k"), b("v")), Op::Delete(b("missing"))],
    );
    assert_eq!(code(&o), Some(ErrorCode::NotFound));
    assert!(sm.take_events().is_empty());
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    let granted = apply(
        &mut sm,
        1,
        vec![],
        vec![Op::LeaseGrant {
            id: 0,
            ttl_ms: 5000,
        }],
    );
    assert_eq!(
        granted,
        Outcome::Applied {
            prev: None,
            count: 1
        },
        "id is the index"
    );
    let leased = |k: &str| Op::SetLeased {
        key: b(k),
        value: b("v"),
        lease: 1,
    };
    apply(
        &mut sm,
        2,
        vec![],
        vec![leased("e/1"), leased("e/2"), leased("e/3")],
    );
    // A plain set detaches e/3: it outlives the lease.
    apply(&mut sm, 3, vec![], vec![Op::Set(b("e/3"), b("mine"))]);
    assert_eq!(sm.lease_keys(1, 10).unwrap(), vec![b("e/1"), b("e/2")]);
    sm.take_events();
    let revoked = apply(&mut sm, 4, vec![], vec![Op::LeaseRevoke(1)]);
    assert_eq!(
        revoked,
        Outcome::Applied {
            prev: None,
            count: 2
        }
    );
    let ev = sm.take_events();
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.revision() == 4));
    let r = Reader::new(sm.store());
    assert_eq!(r.get(b"e/1").unwrap(), None);
    assert_eq!(r.get(b"e/3").unwrap(), Some(b("mine")));
    assert!(sm.lease(1).unwrap().is_none());
    let again = apply(&mut sm, 5, vec![], vec![Op::LeaseRevoke(1)]);
    assert_eq!(code(&again), Some(ErrorCode::LeaseNotFound));
}

#[test]
fn leases_survive_a_reopen_and_attach_only_to_live_leases() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = open_at(dir.path());
        apply(
            &mut sm,
            1,
            vec![],
            vec![Op::LeaseGrant {
                id: 7,
                ttl_ms: 3000,
            }],
        );
        let dup = apply(
            &mut sm,
            2,
            vec![],
            vec![Op::LeaseGrant { id: 7, ttl_ms: 1 }],
        );
        assert_eq!(code(&dup), Some(ErrorCode::Conflict));
        let set = |lease| Op::SetLeased {
            key: b("k"),
            value: b("v"),
            lease,
        };
        let bad = apply(&mut sm, 3, vec![], vec![set(8)]);
        assert_eq!(code(&bad), Some(ErrorCode::LeaseNotFound));
        assert_eq!(Reader::new(sm.store()).get(b"k").unwrap(), None, "undone");
        apply(&mut sm, 4, vec![], vec![set(7)]);
        sm.checkpoint().unwrap();
    }
    let mut sm = open_at(dir.path());
    let rec = sm.leases().unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        (rec[0].id, rec[0].ttl_ms, rec[0].granted_index),
        (7, 3000, 1)
    );
    // The reopened machine knows a lease exists: a delete detaches.
    apply(&mut sm, 5, vec![], vec![Op::Delete(b("k"))]);
    assert!(sm.lease_keys(7, 10).unwrap().is_empty());
}

#[test]
fn a_fenced_write_applies_only_for_the_lowest_create_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_at(dir.path());
    apply(&mut sm, 1, vec![], vec![Op::Set(b("lock/a"), b(""))]);
    apply(&mut sm, 2, vec![], vec![Op::Set(b("lock/b"), b(""))]);
    let fenced = |token| Guard::LockHeld {
        prefix: b("lock/"),
        token,
    };
    let w = |v: &str| vec![Op::Set(b("data"), b(v))];
    assert_eq!(code(&apply(&mut sm, 3, vec![fenced(1)], w("by a"))), None);
    let refused = apply(&mut sm, 4, vec![fenced(2)], w("by b"));
    assert_eq!(code(&refused), Some(ErrorCode::Fenced));
    // a lets go: b holds the lock, a's token is refused, also as a step.
    apply(&mut sm, 5, vec![], vec![Op::Delete(b("lock/a"))]);
    assert_eq!(code(&apply(&mut sm, 6, vec![fenced(2)], w("by b"))), None);
    let late = apply(
        &mut sm,
        7,
        vec![],
        vec![Op::Check(fenced(1)), Op::Set(b("data"), b("a"))],
    );
    assert_eq!(code(&late), Some(ErrorCode::Fenced));
    assert_eq!(
        Reader::new(sm.store()).get(b"data").unwrap(),
        Some(b("by b"))
    );
}

#[test]
fn fenced_guards_and_lease_ops_need_format_3() {
    let cmd = |guards, ops| {
        Command {
            session: None,
            batch: Batch { guards, ops },
        }
        .format()
    };
    let fence = Guard::LockHeld {
        prefix: b("l/"),
        token: 1,
    };
    assert_eq!(cmd(vec![fence.clone()], vec![]), Command::FORMAT_V3);
    assert_eq!(cmd(vec![], vec![Op::Check(fence)]), Command::FORMAT_V3);
    assert_eq!(cmd(vec![], vec![Op::LeaseRevoke(1)]), Command::FORMAT_V3);
    assert_eq!(
        cmd(vec![], vec![Op::Set(b("k"), b("v"))]),
        Command::FORMAT_V1
    );
}
