use super::search::{cmp_keys, LINEAR_SLOTS_MAX};
use super::*;

#[test]
fn cmp_keys_is_lexicographic() {
    let keys: Vec<&[u8]> = vec![
        b"",
        b"a",
        b"ab",
        b"abcdefgh",
        b"abcdefgh\0",
        b"abcdefghi",
        b"abcdefgi",
        b"b",
        &[0xff; 9],
        &[0xff; 8],
        &[0x7f, 0xff, 0, 0, 0, 0, 0, 0, 1],
    ];
    for a in &keys {
        for b in &keys {
            assert_eq!(cmp_keys(a, b), a.cmp(b), "{a:?} vs {b:?}");
        }
    }
}

/// The cache's budget is bytes of memory, so a page's weight must cover
/// what it holds once searched: its buffer, its built slots (a pooled
/// vector larger than its key count) and the page struct itself.
#[test]
fn a_page_weighs_at_least_what_it_holds() {
    for n in [1usize, 17, 35, 100] {
        let entries: Vec<(Vec<u8>, Val)> = (0..n)
            .map(|i| (format!("key-{i:04}").into_bytes(), Val::Inline(vec![7; 8])))
            .collect();
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
        let before = p.weight();
        for _ in 0..2 {
            assert_eq!(p.search(b"key-0000"), Ok(0));
        }
        let slots = p.search.get().expect("slots built on the second search");
        let held = p.buf.capacity() + 8 * slots.slots.capacity() + std::mem::size_of::<Page>();
        assert!(
            p.weight() as usize >= held,
            "{n} keys: weight {} under the {held} bytes held",
            p.weight()
        );
        assert_eq!(
            p.weight(),
            before,
            "the weight changed when slots were built"
        );
    }
}

#[test]
fn leaf_round_trip_and_search() {
    let entries: Vec<(Vec<u8>, Val)> = vec![
        (b"a".to_vec(), Val::Inline(b"1".to_vec())),
        (
            b"c".to_vec(),
            Val::Ext {
                vlen: 5000,
                ptr: Ptr {
                    addr: 64,
                    len: 5020,
                },
            },
        ),
        (b"e".to_vec(), Val::Inline(vec![])),
    ];
    let mut buf = Vec::new();
    encode_leaf(&entries, &mut buf);
    let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p.key(1), b"c");
    assert_eq!(p.search(b"c"), Ok(1));
    assert_eq!(p.search(b"d"), Err(2));
    assert_eq!(p.search(b"0"), Err(0));
    assert!(matches!(p.value(1), ValRef::Ext { vlen: 5000, ptr } if ptr.addr == 64));
    assert!(matches!(p.value(0), ValRef::Inline(b"1")));
}

#[test]
fn search_agrees_with_a_plain_search_for_prefixes_of_every_length() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(3);
    // Pages searched by counting and by binary search, respectively.
    let (mut counted, mut halved) = (0, 0);
    for round in 0..300 {
        // Keys that share a prefix of 0 to 20 bytes, over a small
        // alphabet so that they also share bytes after it.
        let shared: Vec<u8> = (0..rng.random_range(0..=20))
            .map(|_| rng.random_range(0..3))
            .collect();
        // Up to 300 keys: pages of many keys, as well as few.
        let mut raw: Vec<Vec<u8>> = (0..rng.random_range(1..300))
            .map(|_| {
                let mut k = shared.clone();
                k.extend((0..rng.random_range(0..12)).map(|_| rng.random_range(0..3u8)));
                k
            })
            .collect();
        raw.sort();
        raw.dedup();
        let entries: Vec<(Vec<u8>, Val)> = raw
            .iter()
            .map(|k| (k.clone(), Val::Inline(vec![1])))
            .collect();
        let mut buf = Vec::new();
        encode_leaf(&entries, &mut buf);
        let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
        // Built here, so that every probe below searches with the aids.
        assert!(p.shared().len() >= shared.len());
        if raw.len() <= LINEAR_SLOTS_MAX {
            counted += 1;
        } else {
            halved += 1;
        }
        // Probes: every key, every prefix of one, and each with its
        // last byte moved up or down.
        let mut probes: Vec<Vec<u8>> = Vec::new();
        for k in &raw {
            probes.extend((0..=k.len()).map(|n| k[..n].to_vec()));
            if let Some((&last, head)) = k.split_last() {
                for b in [last.wrapping_sub(1), last.wrapping_add(1)] {
                    probes.push([head, &[b]].concat());
                }
            }
            probes.push([k.as_slice(), &[0]].concat());
        }
        for q in &probes {
            assert_eq!(
                p.search(q),
                raw.binary_search(q),
                "round {round}: probe {q:?} among {raw:?}"
            );
        }
    }
    assert!(counted > 20 && halved > 20, "{counted} and {halved} pages");
}

#[test]
fn search_agrees_with_a_plain_search_for_shared_and_short_keys() {
    let raw: Vec<&[u8]> = vec![
        b"/cfg/a",
        b"/cfg/a/",
        b"/cfg/a/x",
        b"/cfg/aaaaaaaaaaaa",
        b"/cfg/aaaaaaaaaaab",
        b"/cfg/b",
        b"/cfg/b\0",
        b"/cfg/b\0\0\0\0\0\0\0\0\x01",
        b"/cfg/c",
    ];
    let entries: Vec<(Vec<u8>, Val)> = raw
        .iter()
        .map(|k| (k.to_vec(), Val::Inline(vec![])))
        .collect();
    let mut buf = Vec::new();
    encode_leaf(&entries, &mut buf);
    let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
    assert_eq!(p.shared(), b"/cfg/");
    let probes: Vec<&[u8]> = vec![
        b"",
        b"/",
        b"/cfg",
        b"/cfg/",
        b"/cfg/a",
        b"/cfg/a\0",
        b"/cfg/aa",
        b"/cfg/aaaaaaaaaaaa",
        b"/cfg/aaaaaaaaaaaa\0",
        b"/cfg/b\0\0\0\0\0\0\0\0",
        b"/cfg/b\0\0\0\0\0\0\0\0\x01",
        b"/cfg/c",
        b"/cfg/d",
        b"/cfh",
        b"/cfa/zzz",
        b"\xff",
    ];
    for q in probes {
        let want = raw.binary_search(&q);
        assert_eq!(p.search(q), want, "probe {q:?}");
        // A fresh page's first search goes without the aids, its second
        // builds and uses them.
        let fresh = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Leaf, &buf).unwrap();
        assert_eq!(fresh.search(q), want, "first search, probe {q:?}");
        assert!(fresh.search.get().is_none());
        assert_eq!(fresh.search(q), want, "second search, probe {q:?}");
        assert!(fresh.search.get().is_some());
    }
    let keys: Vec<Vec<u8>> = raw[1..].iter().map(|k| k.to_vec()).collect();
    let ch = |a| ChildInfo {
        ptr: Ptr { addr: a, len: 10 },
        count: 1,
        bytes: 1,
    };
    let children: Vec<_> = (0..raw.len() as u64).map(|i| ch(8 * (i + 1))).collect();
    encode_branch(1, &keys, &children, &mut buf);
    let b = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Branch, &buf).unwrap();
    for q in [
        &b"/cfg/a"[..],
        b"/cfg/a/",
        b"/cfg/a/w",
        b"/cfg/b\0",
        b"/a",
        b"/z",
        b"/cfg/c",
    ] {
        let want = keys.partition_point(|k| k.as_slice() <= q);
        assert_eq!(b.child_index(q), want, "probe {q:?}");
    }
}

#[test]
fn probe_finds_level_and_first_key() {
    let entries: Vec<(Vec<u8>, Val)> = vec![
        (b"first".to_vec(), Val::Inline(b"v".to_vec())),
        (b"second".to_vec(), Val::Inline(vec![])),
    ];
    let mut buf = Vec::new();
    encode_leaf(&entries, &mut buf);
    assert_eq!(
        probe(&buf, Kind::Leaf, 0).unwrap(),
        (0, Some(&b"first"[..]))
    );
    let keys = vec![b"m".to_vec()];
    let ch = ChildInfo {
        ptr: Ptr { addr: 8, len: 10 },
        count: 1,
        bytes: 1,
    };
    encode_branch(3, &keys, &[ch, ch], &mut buf);
    assert_eq!(probe(&buf, Kind::Branch, 0).unwrap(), (3, Some(&b"m"[..])));
    assert!(probe(&buf[..9], Kind::Branch, 0).is_err());
}

#[test]
fn branch_round_trip_and_child_index() {
    let keys = vec![b"g".to_vec(), b"p".to_vec()];
    let ch = |a| ChildInfo {
        ptr: Ptr { addr: a, len: 10 },
        count: a,
        bytes: 2 * a,
    };
    let children = vec![ch(8), ch(16), ch(24)];
    let mut buf = Vec::new();
    encode_branch(2, &keys, &children, &mut buf);
    let p = Page::decode(Ptr { addr: 8, len: 0 }, Kind::Branch, &buf).unwrap();
    assert_eq!(p.level, 2);
    assert_eq!(p.child(2), ch(24));
    assert_eq!(p.child_index(b"a"), 0);
    assert_eq!(p.child_index(b"g"), 1);
    assert_eq!(p.child_index(b"h"), 1);
    assert_eq!(p.child_index(b"p"), 2);
    assert_eq!(p.child_index(b"z"), 2);
}

#[test]
fn entries_out_of_place_are_corrupt() {
    let entries: Vec<(Vec<u8>, Val)> = ["a", "b", "c"]
        .iter()
        .map(|k| (k.as_bytes().to_vec(), Val::Inline(b"v".to_vec())))
        .collect();
    let mut buf = Vec::new();
    encode_leaf(&entries, &mut buf);
    assert!(Page::decode(Ptr::NULL, Kind::Leaf, &buf).is_ok());
    // Each offset still leads to a whole entry, but the entries no
    // longer lie packed in table order.
    let mut swapped = buf.clone();
    let (a, b) = (rd_u32(&buf, 8), rd_u32(&buf, 12));
    swapped[8..12].copy_from_slice(&b.to_le_bytes());
    swapped[12..16].copy_from_slice(&a.to_le_bytes());
    assert!(matches!(
        Page::decode(Ptr::NULL, Kind::Leaf, &swapped),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn malformed_offsets_are_errors_not_panics() {
    let entries: Vec<(Vec<u8>, Val)> = vec![(b"key".to_vec(), Val::Inline(b"v".to_vec()))];
    let mut buf = Vec::new();
    encode_leaf(&entries, &mut buf);
    for i in 0..buf.len() {
        for b in [0u8, 0xff, 0x7f] {
            let mut bad = buf.clone();
            bad[i] = b;
            // Must never panic, whatever the bytes.
            let _ = Page::decode(Ptr::NULL, Kind::Leaf, &bad);
        }
    }
    buf.truncate(buf.len() - 1);
    assert!(Page::decode(Ptr::NULL, Kind::Leaf, &buf).is_err());
}
