//! Codec micro-benchmarks (current figure: docs/benchmarks.md; the runs:
//! docs/benchmarks-history.md, "Protocol codec").
//!
//! `cargo bench -p nacre-proto --bench codec`
//!
//! - `u32_round_trip`: store N u32s through `Writer` and load them back
//!   through `Reader`, next to a plain `to_le_bytes`/`from_le_bytes` loop
//!   over a buffer of the same size (the memory-speed baseline).
//! - `frame`: encode a request frame, append it to the receive buffer as a
//!   socket read would, split it off and decode it: a Get with a 16-byte
//!   key, a Set with a 256-byte value.
//! - `entries`: decode (and encode) an Entries reply of 100 entries.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nacre_proto::wire::{Reader, Writer};
use nacre_proto::{
    decode_request, decode_response, encode_request, encode_response, split_frame, Bytes, BytesMut,
    Consistency, KeyEntry, Request, Response, Revision,
};

const N: usize = 4096;
const FRAME_MAX: usize = 24 << 20;

fn u32_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("u32_round_trip");
    g.throughput(Throughput::Elements(N as u64));

    // Writer/Reader: the buffer is recycled, so no allocation per round.
    let mut spare = Vec::with_capacity(4 * N);
    g.bench_function("writer_reader", |b| {
        b.iter(|| {
            let mut buf = std::mem::take(&mut spare);
            buf.clear();
            let mut w = Writer::with_buf(buf);
            for i in 0..N as u32 {
                w.u32(black_box(i));
            }
            let mut r = Reader::new(Bytes::from(w.into_inner()));
            let mut sum = 0u32;
            for _ in 0..N {
                sum = sum.wrapping_add(r.u32("x").unwrap());
            }
            black_box(sum);
            spare = Vec::from(r.into_inner());
        })
    });

    // The baseline: the same stores and loads on a plain byte array.
    let mut buf = vec![0u8; 4 * N];
    g.bench_function("le_bytes_baseline", |b| {
        b.iter(|| {
            for (i, slot) in buf.chunks_exact_mut(4).enumerate() {
                slot.copy_from_slice(&black_box(i as u32).to_le_bytes());
            }
            let mut sum = 0u32;
            for slot in buf.chunks_exact(4) {
                sum = sum.wrapping_add(u32::from_le_bytes(slot.try_into().unwrap()));
            }
            black_box(sum);
        })
    });
    g.finish();
}

fn frame_round_trip(c: &mut Criterion, name: &str, req: Request) {
    let mut out = Vec::new();
    let mut rx = BytesMut::with_capacity(64 << 10);
    let mut id = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            id += 1;
            out.clear();
            encode_request(id, black_box(&req), &mut out);
            rx.extend_from_slice(&out);
            let (got, body) = split_frame(&mut rx, FRAME_MAX).unwrap().unwrap();
            let decoded = decode_request(body).unwrap();
            black_box((got, decoded));
        })
    });
}

fn frames(c: &mut Criterion) {
    frame_round_trip(
        c,
        "frame/get_16B_key",
        Request::Get {
            consistency: Consistency::Consistent,
            key: Bytes::from(vec![b'k'; 16]),
        },
    );
    frame_round_trip(
        c,
        "frame/set_16B_key_256B_value",
        Request::Set {
            key: Bytes::from(vec![b'k'; 16]),
            value: Bytes::from(vec![b'v'; 256]),
        },
    );
}

fn entries(c: &mut Criterion) {
    let resp = Response::Entries(
        (0..100u64)
            .map(|i| KeyEntry {
                key: Bytes::from(format!("key-{i:012}")),
                value: Bytes::from(vec![i as u8; 100]),
                rev: Revision {
                    create_rev: i,
                    mod_rev: i + 1,
                    version: 1,
                },
            })
            .collect(),
    );
    let mut out = Vec::new();
    encode_response(1, &resp, &mut out);
    let body = Bytes::copy_from_slice(&out[12..]);

    let mut g = c.benchmark_group("entries_100");
    g.throughput(Throughput::Elements(100));
    // Decode and drop, as a client does with each reply.
    g.bench_function("decode", |b| {
        b.iter(|| {
            let resp = decode_response(black_box(&body).clone()).unwrap();
            black_box(&resp);
        })
    });
    let mut out = Vec::new();
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_response(1, black_box(&resp), &mut out);
            black_box(out.len());
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = u32_round_trip, frames, entries
}
criterion_main!(benches);
