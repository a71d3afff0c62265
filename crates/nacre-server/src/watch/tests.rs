use bytes::Bytes;
use nacre_proto::{CoordResponse, ErrorCode, EventKind, KeySpan, Revision, WatchEvent, WatchSpec};

use super::{Registration, WatchHub, WatchOptions};

fn put(key: &str, rev: u64) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from(format!("v{rev}")),
        rev: Revision {
            create_rev: rev,
            mod_rev: rev,
            version: 1,
        },
        prev: Some(Bytes::from_static(b"old")),
        etcd: Default::default(),
    }
}

fn spec(span: KeySpan, start_rev: u64) -> WatchSpec {
    WatchSpec {
        span,
        start_rev,
        prev_value: false,
    }
}

fn prefix(p: &str) -> KeySpan {
    KeySpan::Prefix(Bytes::copy_from_slice(p.as_bytes()))
}

fn frames(reg: &mut Registration) -> Vec<CoordResponse> {
    let mut out = Vec::new();
    while let Ok(f) = reg.rx.try_recv() {
        out.push(f);
    }
    out
}

/// The revisions of every event in `frames`, in order.
fn revisions(frames: &[CoordResponse]) -> Vec<u64> {
    frames
        .iter()
        .flat_map(|f| match f {
            CoordResponse::Watched { events, .. } => events.iter().map(|e| e.revision()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn hub_at(applied: u64) -> WatchHub {
    let hub = WatchHub::default();
    hub.reset(applied);
    hub
}

#[test]
fn a_watch_from_now_gets_live_changes_of_its_span_only() {
    let hub = hub_at(10);
    let mut reg = hub.register(&spec(prefix("a/"), 0)).unwrap();
    hub.publish(vec![put("a/1", 11), put("b/1", 11), put("a/2", 12)], 13);
    let got = frames(&mut reg);
    assert_eq!(
        got[0],
        CoordResponse::Watched {
            events: vec![],
            revision: 10
        }
    );
    // One frame per publish, saying everything up to the applied index.
    assert_eq!(got.len(), 2);
    match &got[1] {
        CoordResponse::Watched { events, revision } => {
            assert_eq!(*revision, 13);
            let keys: Vec<&[u8]> = events.iter().map(|e| &e.key[..]).collect();
            assert_eq!(keys, vec![&b"a/1"[..], &b"a/2"[..]]);
            assert!(events.iter().all(|e| e.prev.is_none()), "prev stripped");
        }
        f => panic!("expected events, got {f:?}"),
    }
}

#[test]
fn replay_then_live_has_no_gap_and_no_duplicate() {
    let hub = hub_at(1);
    for rev in 2..=20 {
        hub.publish(vec![put("k", rev)], rev);
    }
    let mut reg = hub.register(&spec(prefix(""), 5)).unwrap();
    for rev in 21..=25 {
        hub.publish(vec![put("k", rev)], rev);
    }
    let got = frames(&mut reg);
    assert_eq!(
        got[0],
        CoordResponse::Watched {
            events: vec![],
            revision: 4
        }
    );
    assert_eq!(revisions(&got), (5..=25).collect::<Vec<u64>>());
}

#[test]
fn a_start_older_than_the_history_is_compacted_with_the_oldest_kept() {
    let opts = WatchOptions {
        history_revisions: 3,
        ..Default::default()
    };
    let hub = WatchHub::new(opts);
    hub.reset(1);
    for rev in 2..=10 {
        hub.publish(vec![put("k", rev)], rev);
    }
    assert_eq!(hub.oldest(), 8);
    let mut old = hub.register(&spec(prefix(""), 7)).unwrap();
    match frames(&mut old).as_slice() {
        [CoordResponse::WatchEnd { code, revision, .. }] => {
            assert_eq!(*code, ErrorCode::Compacted);
            assert_eq!(*revision, 8);
        }
        f => panic!("expected Compacted, got {f:?}"),
    }
    let mut kept = hub.register(&spec(prefix(""), 8)).unwrap();
    assert_eq!(revisions(&frames(&mut kept)), vec![8, 9, 10]);
}

#[test]
fn a_snapshot_ends_watches_behind_it_and_restarts_the_history() {
    let hub = hub_at(1);
    hub.publish(vec![put("k", 2)], 2);
    let mut behind = hub.register(&spec(prefix(""), 0)).unwrap();
    let mut ahead = hub.register(&spec(prefix(""), 50)).unwrap();
    hub.reset(40);
    let got = frames(&mut behind);
    match got.last() {
        Some(CoordResponse::WatchEnd { code, revision, .. }) => {
            assert_eq!(*code, ErrorCode::Compacted);
            assert_eq!(*revision, 41);
        }
        f => panic!("expected Compacted, got {f:?}"),
    }
    assert_eq!(hub.oldest(), 41);
    assert_eq!(hub.applied(), 40);
    hub.publish(vec![put("k", 50)], 50);
    assert_eq!(revisions(&frames(&mut ahead)), vec![50]);
    assert_eq!(hub.active(), 1);
}

#[test]
fn a_reader_that_falls_behind_is_ended_and_memory_stays_bounded() {
    let opts = WatchOptions {
        buffer_frames: 4,
        ..Default::default()
    };
    let hub = WatchHub::new(opts);
    hub.reset(1);
    let mut reg = hub.register(&spec(prefix(""), 0)).unwrap();
    for rev in 2..=100 {
        hub.publish(vec![put("k", rev)], rev);
    }
    let got = frames(&mut reg);
    // The start frame, three event frames, then the end in the kept slot.
    assert_eq!(got.len(), 5, "{got:?}");
    match got.last() {
        Some(CoordResponse::WatchEnd { code, revision, .. }) => {
            assert_eq!(*code, ErrorCode::SlowConsumer);
            assert_eq!(*revision, 4);
        }
        f => panic!("expected SlowConsumer, got {f:?}"),
    }
    assert_eq!(revisions(&got), vec![2, 3, 4]);
    assert_eq!(hub.active(), 0);
    assert_eq!(
        hub.counters
            .ended_slow
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn spans_pick_their_keys() {
    let hub = hub_at(1);
    let key = KeySpan::Key(Bytes::from_static(b"b"));
    let range = KeySpan::Range {
        start: Bytes::from_static(b"b"),
        end: Some(Bytes::from_static(b"d")),
    };
    let open = KeySpan::Range {
        start: Bytes::from_static(b"c"),
        end: None,
    };
    let mut regs: Vec<Registration> = [key, range, open]
        .into_iter()
        .map(|s| hub.register(&spec(s, 0)).unwrap())
        .collect();
    hub.publish(
        vec![
            put("a", 2),
            put("b", 3),
            put("bb", 4),
            put("c", 5),
            put("d", 6),
        ],
        6,
    );
    let got: Vec<Vec<u64>> = regs.iter_mut().map(|r| revisions(&frames(r))).collect();
    assert_eq!(got, vec![vec![3], vec![3, 4, 5], vec![5, 6]]);
}

#[test]
fn prev_values_are_sent_only_when_asked_for() {
    let hub = hub_at(1);
    let mut with = hub
        .register(&WatchSpec {
            prev_value: true,
            ..spec(prefix(""), 0)
        })
        .unwrap();
    let mut without = hub.register(&spec(prefix(""), 0)).unwrap();
    hub.publish(vec![put("k", 2)], 2);
    let prev = |reg: &mut Registration| match frames(reg).pop() {
        Some(CoordResponse::Watched { events, .. }) => events[0].prev.clone(),
        f => panic!("expected an event, got {f:?}"),
    };
    assert_eq!(prev(&mut with), Some(Bytes::from_static(b"old")));
    assert_eq!(prev(&mut without), None);
}

#[test]
fn a_revision_over_the_frame_limit_ends_the_watch_naming_it() {
    let opts = WatchOptions {
        frame_size_max_bytes: 200,
        ..Default::default()
    };
    let hub = WatchHub::new(opts);
    hub.reset(1);
    let mut reg = hub.register(&spec(prefix(""), 0)).unwrap();
    hub.publish(vec![put("small", 2)], 2);
    let mut big = put("big", 3);
    big.value = Bytes::from(vec![b'x'; 300]);
    hub.publish(vec![big], 3);
    let got = frames(&mut reg);
    assert_eq!(revisions(&got), vec![2]);
    match got.last() {
        Some(CoordResponse::WatchEnd {
            code,
            message,
            revision,
        }) => {
            assert_eq!(*code, ErrorCode::TooLarge);
            assert!(message.contains("revision 3"), "{message}");
            assert_eq!(*revision, 2);
        }
        f => panic!("expected TooLarge, got {f:?}"),
    }
}

#[test]
fn progress_and_bounds_and_close() {
    let opts = WatchOptions {
        watches_max: 1,
        ..Default::default()
    };
    let hub = WatchHub::new(opts);
    hub.reset(5);
    let mut reg = hub.register(&spec(prefix("x"), 0)).unwrap();
    let refused = hub
        .register(&spec(prefix("x"), 0))
        .err()
        .expect("over watches_max");
    assert_eq!(refused.code, ErrorCode::Busy);
    assert!(
        refused.message.contains("watches_max"),
        "{}",
        refused.message
    );
    hub.publish(vec![put("other", 6)], 7);
    hub.progress(reg.id);
    hub.close("the node is shutting down");
    let got = frames(&mut reg);
    assert_eq!(
        got[1],
        CoordResponse::Watched {
            events: vec![],
            revision: 7
        }
    );
    match &got[2] {
        CoordResponse::WatchEnd { code, revision, .. } => {
            assert_eq!(*code, ErrorCode::Cancelled);
            assert_eq!(*revision, 7);
        }
        f => panic!("expected Cancelled, got {f:?}"),
    }
    assert_eq!(
        hub.register(&spec(prefix(""), 0)).err().unwrap().code,
        ErrorCode::GoingDown
    );
}

#[test]
fn watch_options_come_from_the_config_and_zero_is_refused() {
    let c = crate::ServerConfig::from_toml(
        "watch_history_revisions = 7\nwatch_buffer_frames = 3\nwatches_max = 9\n",
    )
    .unwrap();
    let o = c.watch_options();
    assert_eq!(
        (o.history_revisions, o.buffer_frames, o.watches_max),
        (7, 3, 9)
    );
    assert_eq!(o.frame_size_max_bytes, c.frame_size_max_bytes);
    for name in [
        "watch_buffer_frames",
        "watches_per_connection_max",
        "watch_progress_ms",
    ] {
        let c = crate::ServerConfig::from_toml(&format!("{name} = 0\n")).unwrap();
        let e = c.validate().expect_err("0 is refused").to_string();
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn a_watch_whose_reader_left_is_dropped() {
    let opts = WatchOptions {
        watches_max: 1,
        ..Default::default()
    };
    let hub = WatchHub::new(opts);
    hub.reset(1);
    drop(hub.register(&spec(prefix(""), 0)).unwrap());
    // At the bound, the watch nobody reads makes room.
    let reg = hub.register(&spec(prefix(""), 0)).unwrap();
    assert_eq!(hub.active(), 1);
    drop(reg);
    hub.publish(vec![put("k", 2)], 2);
    assert_eq!(hub.active(), 0);
}
