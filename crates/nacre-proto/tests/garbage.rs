//! Arbitrary bytes never make a decoder panic, and never make it allocate
//! more than a small multiple of the bytes it was given: every length and
//! count is checked against what remains before anything is reserved.
//!
//! A counting global allocator records, for the current thread only and
//! only while armed, the largest single allocation and the total.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use nacre_proto::{
    decode_request, decode_response, encode_request, split_frame, Bytes, BytesMut, ClientHello,
    Command, DecodeError, Request, ServerHello,
};
use proptest::collection::vec;
use proptest::prelude::*;

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: thread-locals may be gone while a thread exits.
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let _ = TOTAL.try_with(|t| t.set(t.get() + size));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with (largest allocation, total bytes
/// allocated) on this thread while it ran.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get), TOTAL.with(Cell::get))
}

/// The worst case is a vector of `Option<Bytes>` (32 bytes each) whose
/// elements take one byte on the wire; anything above is a wild allocation.
fn bound(input: usize) -> usize {
    64 * input + 256
}

/// Bytes that look like the start of a message more often than uniform
/// noise does: a plausible tag, then small or huge lengths and counts.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        Just(vec![0u8, 0, 0, 0]),
        Just(vec![1u8, 0, 0, 0]),
        Just(vec![0xff, 0xff, 0xff, 0xff]),
        Just(vec![0xff, 0xff, 0xff, 0x0f]),
        vec(any::<u8>(), 1..5),
    ];
    (
        prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![1u8, 5, 6, 8, 12, 13, 14, 33, 36, 255])
        ],
        vec(word, 0..12),
    )
        .prop_map(|(tag, words)| {
            let mut v = vec![tag];
            for w in words {
                v.extend_from_slice(&w);
            }
            v
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2048,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decode_request_survives_garbage(data in prop_oneof![body(), vec(any::<u8>(), 0..200)]) {
        let n = data.len();
        let b = Bytes::from(data);
        let (_, largest, total) = measure(|| decode_request(b.clone()));
        prop_assert!(largest <= bound(n), "largest allocation {largest} for {n} bytes");
        prop_assert!(total <= 4 * bound(n), "total allocation {total} for {n} bytes");
    }

    #[test]
    fn decode_response_survives_garbage(data in prop_oneof![body(), vec(any::<u8>(), 0..200)]) {
        let n = data.len();
        let b = Bytes::from(data);
        let (_, largest, total) = measure(|| decode_response(b.clone()));
        prop_assert!(largest <= bound(n), "largest allocation {largest} for {n} bytes");
        prop_assert!(total <= 4 * bound(n), "total allocation {total} for {n} bytes");
    }

    #[test]
    fn command_decode_survives_garbage(
        session in prop_oneof![Just(vec![1u8, 0]), Just(vec![1u8, 1]), vec(any::<u8>(), 0..3)],
        data in prop_oneof![body(), vec(any::<u8>(), 0..200)],
    ) {
        let mut buf = session;
        buf.extend_from_slice(&data);
        let n = buf.len();
        let b = Bytes::from(buf);
        let (_, largest, total) = measure(|| Command::decode(b.clone()));
        prop_assert!(largest <= bound(n), "largest allocation {largest} for {n} bytes");
        prop_assert!(total <= 4 * bound(n), "total allocation {total} for {n} bytes");
    }

    #[test]
    fn hello_decode_survives_garbage(
        magic in prop_oneof![Just(b"NACR".to_vec()), vec(any::<u8>(), 0..6)],
        data in vec(any::<u8>(), 0..300),
    ) {
        let mut buf = magic;
        buf.extend_from_slice(&data);
        let ((c, s), largest, _) = measure(|| (ClientHello::decode(&buf), ServerHello::decode(&buf)));
        prop_assert!(largest <= bound(buf.len()));
        if let Ok(Some((_, n))) = c {
            prop_assert!(n <= buf.len());
        }
        if let Ok(Some((_, n))) = s {
            prop_assert!(n <= buf.len());
        }
        if !buf.is_empty() && !b"NACR".starts_with(&buf[..buf.len().min(4)]) {
            prop_assert_eq!(c, Err(DecodeError::BadMagic));
            prop_assert_eq!(s, Err(DecodeError::BadMagic));
        }
    }

    /// A stream of arbitrary bytes, valid frames mixed in, fed in chunks:
    /// split_frame never panics, never hands out more than was fed, and
    /// reserves no more than a small multiple of what arrived, whatever
    /// lengths the headers claim.
    #[test]
    fn split_frame_survives_garbage(
        parts in vec(prop_oneof![
            vec(any::<u8>(), 0..40),
            // A header claiming a huge frame, body never sent.
            any::<u32>().prop_map(|l| (l | 0x0100_0000).to_le_bytes().to_vec()),
            common::request().prop_map(|r| { let mut v = Vec::new(); encode_request(7, &r, &mut v); v }),
        ], 1..6),
        chunks in vec(1usize..50, 1..10),
        max in prop_oneof![Just(usize::MAX), Just(u32::MAX as usize), 0usize..1000],
    ) {
        let wire: Vec<u8> = parts.concat();
        let mut buf = BytesMut::new();
        let mut pos = 0;
        let mut i = 0;
        let mut handed_out = 0;
        'feed: while pos < wire.len() {
            let n = chunks[i % chunks.len()].min(wire.len() - pos);
            i += 1;
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            loop {
                let (r, largest, _) = measure(|| split_frame(&mut buf, max));
                prop_assert!(largest <= 2 * pos + (128 << 10),
                    "split_frame allocated {largest} after {pos} bytes fed");
                match r {
                    Ok(Some((_, body))) => {
                        handed_out += 12 + body.len();
                        prop_assert!(handed_out <= pos);
                        let _ = decode_request(body.clone());
                        let _ = decode_response(body);
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

#[test]
fn hostile_counts_are_rejected_before_allocating() {
    // MultiGet claiming 2^32-1 keys in a 10-byte body.
    let mut b = vec![13u8, 0];
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let (r, largest, _) = measure(|| decode_request(Bytes::from(b.clone())));
    assert_eq!(r, Err(DecodeError::Truncated { what: "keys" }));
    assert!(largest < 1024, "allocated {largest}");

    // Entries response claiming 1,000 entries with 100 bytes of body.
    let mut b = vec![8u8];
    b.extend_from_slice(&1000u32.to_le_bytes());
    b.extend_from_slice(&[0; 100]);
    let (r, largest, _) = measure(|| decode_response(Bytes::from(b.clone())));
    assert_eq!(r, Err(DecodeError::Truncated { what: "entries" }));
    assert!(largest < 1024, "allocated {largest}");

    // A value claiming 4 GiB.
    let mut b = vec![30u8];
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    let (r, largest, _) = measure(|| decode_request(Bytes::from(b.clone())));
    assert_eq!(r, Err(DecodeError::Truncated { what: "value" }));
    assert!(largest < 1024, "allocated {largest}");
}

#[test]
fn a_stalled_huge_header_reserves_little() {
    // 16 MiB announced, within the limit, then nothing.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(16u32 << 20).to_le_bytes());
    let (r, largest, _) = measure(|| split_frame(&mut buf, 24 << 20));
    assert_eq!(r, Ok(None));
    assert!(
        largest <= 128 << 10,
        "reserved {largest} bytes for a 4-byte header"
    );
}

#[test]
fn a_large_frame_arriving_in_pieces_reassembles() {
    let req = Request::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from(vec![7u8; 3 << 20]),
    };
    let mut wire = Vec::new();
    encode_request(9, &req, &mut wire);
    let mut buf = BytesMut::new();
    let mut got = None;
    for chunk in wire.chunks(100_000) {
        buf.extend_from_slice(chunk);
        if let Some(f) = split_frame(&mut buf, 24 << 20).unwrap() {
            got = Some(f);
        }
    }
    let (id, body) = got.expect("frame");
    assert_eq!(id, 9);
    assert_eq!(decode_request(body).unwrap(), req);
}
