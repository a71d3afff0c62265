use std::ops::Bound;

use bytes::Bytes;
use nacre_proto::{
    Batch, Command, ErrorCode, Guard, KeyEntry, Op, Page, RangeQuery, Response, Revision,
};
use nacre_store::Store;

use super::sessions::SESSION_PREFIX;
use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn open() -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
    (dir, StateMachine::open(store).unwrap())
}

fn apply(sm: &mut StateMachine, index: u64, batch: Batch) -> Outcome {
    let data = Command {
        session: None,
        batch,
    }
    .encode();
    let mut out = sm
        .apply(&[Committed {
            index,
            term: 1,
            data: &data,
        }])
        .unwrap();
    out.pop().unwrap()
}

fn ops(ops: Vec<Op>) -> Batch {
    Batch {
        guards: vec![],
        ops,
    }
}

#[test]
fn revisions_follow_etcd() {
    let (_d, mut sm) = open();
    apply(&mut sm, 1, ops(vec![Op::Set(b("a"), b("1"))]));
    apply(&mut sm, 2, ops(vec![Op::Set(b("a"), b("2"))]));
    let e = Reader::new(sm.store()).get_entry(b"a").unwrap().unwrap();
    assert_eq!(e.value, b("2"));
    assert_eq!(
        e.rev,
        Revision {
            create_rev: 1,
            mod_rev: 2,
            version: 2
        }
    );
    apply(&mut sm, 3, ops(vec![Op::Delete(b("a"))]));
    apply(&mut sm, 4, ops(vec![Op::Set(b("a"), b("3"))]));
    let e = Reader::new(sm.store()).get_entry(b"a").unwrap().unwrap();
    assert_eq!(
        e.rev,
        Revision {
            create_rev: 4,
            mod_rev: 4,
            version: 1
        }
    );
    assert_eq!(sm.applied(), (4, 1));
}

#[test]
fn failed_batch_leaves_nothing_behind() {
    let (_d, mut sm) = open();
    apply(
        &mut sm,
        1,
        ops(vec![
            Op::Set(b("p/1"), b("x")),
            Op::Set(b("p/2"), b("y")),
            Op::Set(b("k"), b("v")),
        ]),
    );
    let out = apply(
        &mut sm,
        2,
        ops(vec![
            Op::Set(b("k"), b("changed")),
            Op::Set(b("new"), b("n")),
            Op::DeletePrefix(b("p/")),
            Op::Check(Guard::Present(b("p/1"))),
        ]),
    );
    match out {
        Outcome::Failed { code, key, .. } => {
            assert_eq!(code, ErrorCode::AssertionFailed);
            assert_eq!(key, b("p/1"));
        }
        o => panic!("expected a failure, got {o:?}"),
    }
    let r = Reader::new(sm.store());
    assert_eq!(r.get(b"k").unwrap(), Some(b("v")));
    assert_eq!(r.get(b"new").unwrap(), None);
    assert_eq!(r.get(b"p/1").unwrap(), Some(b("x")));
    assert_eq!(r.get(b"p/2").unwrap(), Some(b("y")));
    assert_eq!(r.key_count().unwrap(), 3);
    // The revision of a restored key is the old one, not a new version.
    assert_eq!(r.get_entry(b"k").unwrap().unwrap().rev.version, 1);
    // The failed entry still advances the applied index.
    assert_eq!(sm.applied().0, 2);
}

#[test]
fn delete_of_missing_key_is_not_found_and_remove_is_not() {
    let (_d, mut sm) = open();
    let out = apply(
        &mut sm,
        1,
        ops(vec![Op::Set(b("a"), b("1")), Op::Delete(b("zz"))]),
    );
    assert!(matches!(
        out,
        Outcome::Failed {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    assert_eq!(Reader::new(sm.store()).get(b"a").unwrap(), None);
    let out = apply(&mut sm, 2, ops(vec![Op::Remove(b("zz"))]));
    assert_eq!(
        out,
        Outcome::Applied {
            prev: None,
            count: 0
        }
    );
}

fn tas(key: &str, expected: Option<&str>, wanted: Option<&str>) -> Op {
    Op::TestAndSet {
        key: b(key),
        expected: expected.map(b),
        wanted: wanted.map(b),
    }
}

/// Arakoon's meaning: a test_and_set step that does not match changes
/// nothing and the sequence goes on; one that matches writes (or with no
/// wanted value removes) and later steps see it; an assert later in the
/// sequence still aborts everything, test_and_set writes included.
#[test]
fn a_test_and_set_step_is_a_conditional_write_that_never_aborts() {
    let (_d, mut sm) = open();
    apply(&mut sm, 1, ops(vec![Op::Set(b("a"), b("1"))]));
    let out = apply(
        &mut sm,
        2,
        ops(vec![
            tas("a", Some("other"), Some("x")),
            Op::Set(b("b"), b("2")),
        ]),
    );
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    let r = Reader::new(sm.store());
    assert_eq!(
        r.get(b"a").unwrap(),
        Some(b("1")),
        "a mismatch writes nothing"
    );
    assert_eq!(r.get(b"b").unwrap(), Some(b("2")), "the sequence went on");

    let out = apply(
        &mut sm,
        3,
        ops(vec![
            tas("a", Some("1"), Some("2")),
            Op::Check(Guard::ValueEquals(b("a"), b("2"))),
            tas("b", Some("2"), None),
            tas("c", None, Some("new")),
        ]),
    );
    assert_eq!(
        out,
        Outcome::Applied {
            prev: None,
            count: 0
        },
        "prev is what the last step found (c was absent)"
    );
    let r = Reader::new(sm.store());
    assert_eq!(r.get(b"a").unwrap(), Some(b("2")));
    assert_eq!(r.get(b"b").unwrap(), None);
    assert_eq!(r.get_entry(b"c").unwrap().unwrap().rev.create_rev, 3);

    let out = apply(
        &mut sm,
        4,
        ops(vec![
            tas("a", Some("2"), Some("3")),
            Op::Check(Guard::Absent(b("c"))),
        ]),
    );
    assert!(
        matches!(
            out,
            Outcome::Failed {
                code: ErrorCode::AssertionFailed,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        Reader::new(sm.store()).get(b"a").unwrap(),
        Some(b("2")),
        "the failed assert undid the test_and_set"
    );
}

#[test]
fn guards_check_values_versions_and_prefixes() {
    let (_d, mut sm) = open();
    apply(
        &mut sm,
        1,
        ops(vec![
            Op::Set(b("a"), b("1")),
            Op::Set(b("a/x"), b("")),
            Op::Set(b("a/y"), b("")),
        ]),
    );
    let guarded = |g: Guard| Batch {
        guards: vec![g],
        ops: vec![Op::Set(b("out"), b("1"))],
    };
    let cases = [
        (Guard::Absent(b("a")), false),
        (Guard::Absent(b("b")), true),
        (Guard::Present(b("a")), true),
        (Guard::ValueEquals(b("a"), b("1")), true),
        (Guard::ValueEquals(b("a"), b("2")), false),
        (Guard::VersionEquals(b("a"), 1), true),
        (Guard::VersionEquals(b("a"), 2), false),
        (Guard::VersionEquals(b("b"), 0), true),
        (
            Guard::PrefixKeysEqual {
                prefix: b("a/"),
                keys: vec![b("a/x"), b("a/y")],
            },
            true,
        ),
        (
            Guard::PrefixKeysEqual {
                prefix: b("a/"),
                keys: vec![b("a/x")],
            },
            false,
        ),
    ];
    for (i, (g, ok)) in cases.into_iter().enumerate() {
        let index = 2 + 2 * i as u64;
        let out = apply(&mut sm, index, guarded(g.clone()));
        assert_eq!(matches!(out, Outcome::Applied { .. }), ok, "guard {g:?}");
        apply(&mut sm, index + 1, ops(vec![Op::Remove(b("out"))]));
    }
}

/// Twenty keys k00..k19, each with a 100-byte value.
fn twenty_keys() -> (tempfile::TempDir, StateMachine) {
    let (d, mut sm) = open();
    let sets = (0..20)
        .map(|i| Op::Set(b(&format!("k{i:02}")), Bytes::from(vec![b'v'; 100])))
        .collect();
    apply(&mut sm, 1, ops(sets));
    (d, sm)
}

fn all(reverse: bool, max: u32) -> RangeQuery {
    RangeQuery {
        first: None,
        first_inclusive: true,
        last: None,
        last_inclusive: false,
        max,
        reverse,
    }
}

#[test]
fn a_page_says_whether_more_keys_follow_it() {
    let (_d, sm) = twenty_keys();
    let r = Reader::new(sm.store());
    let limits = |results_max| PageLimits {
        results_max,
        frame_size_max_bytes: 1 << 20,
    };
    // Clamped by the server's limit: the rest is there and said to be.
    let p = r.range_keys_page(&all(false, 100), limits(8)).unwrap();
    assert_eq!((p.items.len(), p.more), (8, true));
    assert_eq!(p.items.last(), Some(&b("k07")));
    // Stopped by the query's own max: still says more follows.
    let p = r.range_keys_page(&all(false, 19), limits(100)).unwrap();
    assert_eq!((p.items.len(), p.more), (19, true));
    // Exactly the rest of the range: a full page, and nothing follows.
    let p = r.range_keys_page(&all(false, 20), limits(20)).unwrap();
    assert_eq!((p.items.len(), p.more), (20, false));
    // Descending, the page ends at the low end it reached.
    let p = r.range_entries_page(&all(true, 100), limits(3)).unwrap();
    let keys: Vec<_> = p.items.iter().map(|e| e.key.clone()).collect();
    assert_eq!((keys, p.more), (vec![b("k19"), b("k18"), b("k17")], true));
    // Prefixes too.
    let p = r.prefix_keys_page(b"k1", 100, limits(10)).unwrap();
    assert_eq!((p.items.len(), p.more), (10, false));
    let p = r.prefix_keys_page(b"k1", 4, limits(10)).unwrap();
    assert_eq!((p.items.len(), p.more), (4, true));
}

#[test]
fn a_page_stops_before_the_reply_would_go_over_the_frame_limit() {
    let (_d, sm) = twenty_keys();
    let r = Reader::new(sm.store());
    let one = r
        .range_entries_page(&all(false, 1), PageLimits::results(1))
        .unwrap();
    let entry_bytes = nacre_proto::PageItem::encoded_len(&one.items[0]);
    // Room for three entries and a little: not four.
    let frame_size_max_bytes = Page::<KeyEntry>::frame_length(3 * entry_bytes + entry_bytes / 2);
    let limits = PageLimits {
        results_max: 10_000,
        frame_size_max_bytes,
    };
    let mut q = all(false, 10_000);
    let mut seen = Vec::new();
    loop {
        let p = r.range_entries_page(&q, limits).unwrap();
        let length = Response::EntryPage(p.clone()).frame_length();
        assert!(length <= frame_size_max_bytes, "{length}");
        assert!(p.items.len() <= 3);
        seen.extend(p.items.iter().map(|e| e.key.clone()));
        let Some(last) = p.next_after() else { break };
        q.first = Some(last.clone());
        q.first_inclusive = false;
    }
    let want: Vec<_> = (0..20).map(|i| b(&format!("k{i:02}"))).collect();
    assert_eq!(seen, want);
}

#[test]
fn a_result_no_reply_can_hold_is_too_large_not_an_empty_page() {
    let (_d, sm) = twenty_keys();
    let r = Reader::new(sm.store());
    let limits = PageLimits {
        results_max: 10,
        frame_size_max_bytes: 100,
    };
    let e = r.range_entries_page(&all(false, 10), limits).unwrap_err();
    assert!(matches!(e, PageError::ResultTooLarge { .. }), "{e}");
    let reply = nacre_proto::ErrorReply::from(e);
    assert_eq!(reply.code, ErrorCode::TooLarge);
    assert!(
        reply.message.contains("frame_size_max_bytes 100"),
        "{}",
        reply.message
    );
}

#[test]
fn delete_prefix_counts_and_ranges_clamp() {
    let (_d, mut sm) = open();
    let sets = (0..20)
        .map(|i| Op::Set(b(&format!("k{i:02}")), b("v")))
        .collect();
    apply(&mut sm, 1, ops(sets));
    let r = Reader::new(sm.store());
    let q = RangeQuery {
        first: Some(b("k05")),
        first_inclusive: false,
        last: Some(b("k10")),
        last_inclusive: true,
        max: 100,
        reverse: false,
    };
    let keys = r.range_keys_page(&q, PageLimits::results(1000)).unwrap();
    assert_eq!(
        keys.items,
        (6..=10).map(|i| b(&format!("k{i:02}"))).collect::<Vec<_>>()
    );
    assert!(!keys.more);
    let clamped = r.range_keys_page(&q, PageLimits::results(2)).unwrap();
    assert_eq!((clamped.items.len(), clamped.more), (2, true));
    let rev = r
        .range_entries(
            &RangeQuery {
                reverse: true,
                ..q.clone()
            },
            1000,
        )
        .unwrap();
    assert_eq!(rev.first().unwrap().key, b("k10"));
    assert_eq!(
        r.prefix_keys(b"k1", 3).unwrap(),
        vec![b("k10"), b("k11"), b("k12")]
    );
    drop(r);
    let out = apply(&mut sm, 2, ops(vec![Op::DeletePrefix(b("k1"))]));
    assert_eq!(
        out,
        Outcome::Applied {
            prev: None,
            count: 10
        }
    );
    assert_eq!(Reader::new(sm.store()).key_count().unwrap(), 10);
}

#[test]
fn applied_index_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
        let mut sm = StateMachine::open(store).unwrap();
        apply(&mut sm, 7, ops(vec![Op::Set(b("a"), b("1"))]));
        assert_eq!(sm.checkpoint().unwrap(), 7);
    }
    let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
    let sm = StateMachine::open(store).unwrap();
    assert_eq!(sm.applied(), (7, 1));
    assert_eq!(Reader::new(sm.store()).key_count().unwrap(), 1);
}

#[test]
fn a_session_retry_applies_once_and_answers_as_the_first_time() {
    let (_d, mut sm) = open();
    let session = Some(nacre_proto::Session {
        client_id: 7,
        seq: 1,
    });
    let set = |v: &str| {
        Command {
            session,
            batch: ops(vec![Op::Set(b("k"), b(v))]),
        }
        .encode()
    };
    let first = sm
        .apply(&[Committed {
            index: 1,
            term: 1,
            data: &set("a"),
        }])
        .unwrap();
    // The same stamp again (a retry after a failover), even with other
    // contents: nothing applies, the first outcome comes back.
    let again = sm
        .apply(&[Committed {
            index: 2,
            term: 1,
            data: &set("b"),
        }])
        .unwrap();
    assert_eq!(first, again);
    // And at the first one's index: the retry's client must be told where
    // its write applied (a watch saw it there), not where the retry went.
    assert_eq!(sm.take_answered_at(), vec![(2, 1)]);
    let e = Reader::new(sm.store()).get_entry(b"k").unwrap().unwrap();
    assert_eq!((e.value, e.rev.version), (b("a"), 1));
    // A failed stamped batch is not remembered: its retry runs afresh.
    let guarded = |seq| {
        Command {
            session: Some(nacre_proto::Session { client_id: 7, seq }),
            batch: Batch {
                guards: vec![Guard::ValueEquals(b("k"), b("b"))],
                ops: vec![Op::Set(b("k"), b("c"))],
            },
        }
        .encode()
    };
    let failed = sm
        .apply(&[Committed {
            index: 3,
            term: 1,
            data: &guarded(2),
        }])
        .unwrap();
    assert!(matches!(failed[0], Outcome::Failed { .. }));
    apply(&mut sm, 4, ops(vec![Op::Set(b("k"), b("b"))]));
    let retried = sm
        .apply(&[Committed {
            index: 5,
            term: 1,
            data: &guarded(2),
        }])
        .unwrap();
    assert!(matches!(retried[0], Outcome::Applied { .. }), "{retried:?}");
    assert_eq!(Reader::new(sm.store()).get(b"k").unwrap(), Some(b("c")));
}

#[test]
fn session_records_are_pruned_after_the_retention_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
    let mut sm = StateMachine::open_with(store, 10).unwrap();
    let stamped = Command {
        session: Some(nacre_proto::Session {
            client_id: 1,
            seq: 1,
        }),
        batch: ops(vec![Op::Set(b("x"), b("1"))]),
    }
    .encode();
    sm.apply(&[Committed {
        index: 5,
        term: 1,
        data: &stamped,
    }])
    .unwrap();
    let sessions = |sm: &StateMachine| {
        let end = prefix_end(SESSION_PREFIX).unwrap();
        sm.store()
            .begin_read()
            .range(Bound::Included(SESSION_PREFIX), Bound::Excluded(&end[..]))
            .count()
    };
    assert_eq!(sessions(&sm), 1);
    // Index 10 starts epoch 1: epoch 0 (index 5) is still kept, and a
    // retry of it is still recognised.
    apply(&mut sm, 10, ops(vec![Op::Set(b("y"), b("1"))]));
    assert_eq!(sessions(&sm), 1);
    let retry = sm
        .apply(&[Committed {
            index: 11,
            term: 1,
            data: &stamped,
        }])
        .unwrap();
    assert!(matches!(retry[0], Outcome::Applied { .. }));
    assert_eq!(
        Reader::new(sm.store())
            .get_entry(b"x")
            .unwrap()
            .unwrap()
            .rev
            .version,
        1
    );
    // Index 20 starts epoch 2: epoch 0 goes.
    apply(&mut sm, 20, ops(vec![Op::Set(b("y"), b("2"))]));
    assert_eq!(sessions(&sm), 0);
}

#[test]
fn prefix_end_handles_ff() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
}

/// An entry in a command format newer than this build reads stops the
/// apply (the node would otherwise fail it while the newer nodes apply
/// it, and differ from them); a malformed command of a known format fails
/// identically everywhere, as before.
#[test]
fn a_newer_command_format_stops_the_apply_a_malformed_one_fails_it() {
    let (_d, mut sm) = open();
    let mut newer = Command {
        session: None,
        batch: ops(vec![Op::Set(b("a"), b("1"))]),
    }
    .encode();
    newer[0] = Command::FORMAT_NEWEST + 1;
    let e = Committed {
        index: 1,
        term: 1,
        data: &newer,
    };
    match sm.apply(&[e]) {
        Err(StateError::NewerCommandFormat {
            index: 1, format, ..
        }) => {
            assert_eq!(format, Command::FORMAT_NEWEST + 1)
        }
        r => panic!("a newer format was applied: {r:?}"),
    }
    assert_eq!(sm.applied().0, 0);
    let malformed = [Command::FORMAT_V1, 0xff, 0xff];
    let e = Committed {
        index: 1,
        term: 1,
        data: &malformed,
    };
    let out = sm.apply(&[e]).unwrap();
    assert!(
        matches!(
            &out[0],
            Outcome::Failed {
                code: ErrorCode::BadInput,
                ..
            }
        ),
        "{out:?}"
    );
}
