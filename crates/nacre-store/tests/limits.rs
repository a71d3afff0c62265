//! Every named limit is enforced with a clear, typed error, and values up
//! to the limit work.

mod common;

use std::ops::Bound;

use common::*;
use nacre_store::{Error, Options, Store};

fn open(opts: Options) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    (dir, store)
}

#[test]
fn key_size_limit() {
    let (_d, store) = open(Options::default());
    let max = Options::default().key_size_max_bytes;
    assert!(max >= 4096);
    let mut w = store.begin_write().unwrap();
    let at_limit = vec![b'k'; max];
    w.put(&at_limit, b"ok").unwrap();
    let err = w.put(&vec![b'k'; max + 1], b"no").unwrap_err();
    assert!(matches!(err, Error::KeyTooLarge { size, max: m } if size == max + 1 && m == max));
    assert!(err.to_string().contains("key_size_max"), "message: {err}");
    assert!(matches!(
        w.delete(&vec![b'k'; max + 1]),
        Err(Error::KeyTooLarge { .. })
    ));
    w.commit().unwrap();
    assert_eq!(
        store.begin_read().get(&at_limit).unwrap().as_deref(),
        Some(&b"ok"[..])
    );
}

#[test]
fn many_maximum_size_keys_split_correctly() {
    let (_d, store) = open(Options::default());
    let mut w = store.begin_write().unwrap();
    let mut model = Model::new();
    for i in 0..300u32 {
        let mut k = vec![b'a' + (i % 26) as u8; 4096];
        k[4092..].copy_from_slice(&i.to_be_bytes());
        w.put(&k, &i.to_le_bytes()).unwrap();
        model.insert(k, i.to_le_bytes().to_vec());
    }
    w.commit().unwrap();
    check_all(&store.begin_read(), &model);
}

#[test]
fn value_size_limit_and_large_values_stay_out_of_nodes() {
    let (_d, store) = open(Options::default());
    let max = Options::default().value_size_max_bytes;
    assert!(max >= 16 << 20);
    let big: Vec<u8> = (0..max).map(|i| (i * 31 % 251) as u8).collect();
    let mut w = store.begin_write().unwrap();
    w.put(b"big", &big).unwrap();
    for i in 0..100u32 {
        w.put(format!("small{i}").as_bytes(), b"v").unwrap();
    }
    let err = w.put(b"too-big", &vec![0u8; max + 1]).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }));
    assert!(err.to_string().contains("value_size_max"), "message: {err}");
    w.commit().unwrap();
    let r = store.begin_read();
    assert!(r.get(b"big").unwrap().unwrap() == big);
    // The leaf holds a pointer, not the value: a scan of the small keys
    // touches no more than a few KiB of nodes.
    let live = store.stats().live_bytes;
    assert!(
        live < max as u64 + 64 * 1024,
        "large value bloated the tree: {live} live bytes"
    );
    assert_eq!(r.prefix(b"small").count(), 100);
}

#[test]
fn transaction_size_limit() {
    let opts = Options {
        txn_size_max_bytes: 64 << 10,
        ..small_options()
    };
    let (_d, store) = open(opts);
    let mut w = store.begin_write().unwrap();
    let mut err = None;
    for i in 0..10_000u32 {
        if let Err(e) = w.put(format!("k{i}").as_bytes(), &[7u8; 100]) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the transaction limit was never hit");
    assert!(
        matches!(err, Error::TxnTooLarge { max, .. } if max == 64 << 10),
        "got {err}"
    );
    assert!(err.to_string().contains("txn_size_max"));
    w.abort();
    // Nothing of the aborted transaction is visible, and the store works.
    assert_eq!(store.begin_read().count(), 0);
    let mut w = store.begin_write().unwrap();
    w.put(b"after", b"ok").unwrap();
    w.commit().unwrap();
    assert_eq!(store.begin_read().count(), 1);
}

#[test]
fn snapshot_limits_and_names() {
    let opts = Options {
        snapshots_max: 3,
        ..small_options()
    };
    let (_d, store) = open(opts);
    for i in 0..3 {
        store.create_snapshot(&format!("s{i}")).unwrap();
    }
    assert!(matches!(
        store.create_snapshot("s9"),
        Err(Error::TooManySnapshots { max: 3 })
    ));
    assert!(matches!(
        store.create_snapshot("s0"),
        Err(Error::SnapshotExists(_))
    ));
    assert!(matches!(
        store.create_snapshot(""),
        Err(Error::InvalidSnapshotName(_))
    ));
    assert!(matches!(
        store.create_snapshot(&"x".repeat(256)),
        Err(Error::InvalidSnapshotName(_))
    ));
    assert!(matches!(
        store.snapshot("nope"),
        Err(Error::SnapshotNotFound(_))
    ));
    assert!(matches!(
        store.drop_snapshot("nope"),
        Err(Error::SnapshotNotFound(_))
    ));
    store.drop_snapshot("s1").unwrap();
    store.create_snapshot("s9").unwrap();
    assert_eq!(store.list_snapshots().len(), 3);
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        Options {
            segment_size_bytes: 1000,
            ..Options::default()
        },
        Options {
            node_size_bytes: 100,
            ..Options::default()
        },
        Options {
            value_inline_max_bytes: 4000,
            ..Options::default()
        },
        Options {
            value_size_max_bytes: 1 << 30,
            ..Options::default()
        },
        Options {
            key_size_max_bytes: 0,
            ..Options::default()
        },
    ];
    for opts in cases {
        let dbg = format!("{opts:?}");
        assert!(
            matches!(Store::open(dir.path(), opts), Err(Error::InvalidOptions(_))),
            "accepted {dbg}"
        );
    }
}

#[test]
fn one_process_one_store() {
    let (d, store) = open(small_options());
    assert!(matches!(
        Store::open(d.path(), small_options()),
        Err(Error::Locked(_))
    ));
    drop(store);
    Store::open(d.path(), small_options()).unwrap();
}

#[test]
fn empty_and_inverted_ranges() {
    let (_d, store) = open(small_options());
    let mut w = store.begin_write().unwrap();
    for k in [&b"a"[..], b"b", b"c"] {
        w.put(k, k).unwrap();
    }
    assert_eq!(
        w.delete_range(Bound::Included(&b"c"[..]), Bound::Included(&b"a"[..]))
            .unwrap(),
        0
    );
    w.commit().unwrap();
    let r = store.begin_read();
    assert_eq!(
        r.range(Bound::Excluded(&b"b"[..]), Bound::Excluded(&b"b"[..]))
            .count(),
        0
    );
    assert_eq!(
        r.range(Bound::Included(&b"b"[..]), Bound::Included(&b"b"[..]))
            .count(),
        1
    );
    assert_eq!(
        r.range_rev(Bound::Included(&b"a"[..]), Bound::Excluded(&b"c"[..]))
            .map(|e| e.unwrap().0)
            .collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"a".to_vec()]
    );
    assert_eq!(r.prefix(b"").count(), 3);
    assert_eq!(r.prefix(&[0xff]).count(), 0);
}

#[test]
fn reopening_keeps_the_segment_size_and_checks_limits_against_it() {
    let dir = tempfile::tempdir().unwrap();
    // Created with small segments...
    Store::open(dir.path(), small_options())
        .unwrap()
        .close()
        .unwrap();
    // ...and reopened asking for large ones and 16 MiB values: the store's
    // own segments cannot hold such values, which is an error, not a crash.
    let err = Store::open(dir.path(), Options::default())
        .err()
        .expect("accepted values larger than a segment");
    assert!(matches!(err, Error::InvalidOptions(_)), "got {err}");
    // With limits that fit, it opens and keeps its small segments.
    let opts = Options {
        value_size_max_bytes: 64 << 10,
        ..Options::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut w = store.begin_write().unwrap();
    w.put(b"v", &vec![1u8; 64 << 10]).unwrap();
    w.commit().unwrap();
    assert_eq!(
        store.begin_read().get(b"v").unwrap().map(|v| v.len()),
        Some(64 << 10)
    );
}
