use super::shortest_separator;

#[test]
fn separators_are_short_and_bound_both_sides() {
    let cases: [(&[u8], &[u8], &[u8]); 5] = [
        (b"apple", b"banana", b"b"),
        (b"abc", b"abd", b"abd"),
        (b"ab", b"abc", b"abc"),
        (b"ab\xff", b"ac", b"ac"),
        (b"", b"\x00", b"\x00"),
    ];
    for (left, right, want) in cases {
        let s = shortest_separator(left, right);
        assert_eq!(s, want, "between {left:?} and {right:?}");
        assert!(left < s.as_slice() && s.as_slice() <= right);
    }
    // Random 24-byte keys: a separator of a few bytes, never more than
    // the right key, always strictly above the left.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut key = || {
        let mut k = [0u8; 24];
        for b in k.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        k
    };
    for _ in 0..1000 {
        let (a, b) = (key(), key());
        let (l, r) = if a < b { (a, b) } else { (b, a) };
        if l == r {
            continue;
        }
        let s = shortest_separator(&l, &r);
        assert!(l.as_slice() < s.as_slice() && s.as_slice() <= r.as_slice());
        assert!(s.len() <= 8, "random keys part within a few bytes");
    }
}
