//! Encode then decode gives back the same value: messages, frames, streams
//! of frames cut at arbitrary points, replicated commands and handshakes.

mod common;

use common::Msg;
use nacre_proto::wire::{Reader, Writer};
use nacre_proto::{
    decode_request, decode_response, encode_request, encode_response, split_frame, Bytes, BytesMut,
    ClientHello, Command, Limits, Request, Response, ServerHello,
};
use proptest::collection::vec;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_body_round_trips(req in common::request()) {
        let mut w = Writer::new();
        req.encode(&mut w);
        let buf = w.into_inner();
        prop_assert_eq!(buf.len(), req.encoded_len());
        let mut r = Reader::new(Bytes::from(buf));
        prop_assert_eq!(Request::decode(&mut r).unwrap(), req);
        prop_assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn response_body_round_trips(resp in common::response()) {
        let mut w = Writer::new();
        resp.encode(&mut w);
        let buf = w.into_inner();
        prop_assert_eq!(buf.len(), resp.encoded_len());
        let mut r = Reader::new(Bytes::from(buf));
        prop_assert_eq!(Response::decode(&mut r).unwrap(), resp);
        prop_assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn request_frame_round_trips(id in any::<u64>(), req in common::request()) {
        let mut out = Vec::new();
        encode_request(id, &req, &mut out);
        prop_assert_eq!(out.len(), 12 + req.encoded_len());
        let mut buf = BytesMut::from(&out[..]);
        let (got_id, body) = split_frame(&mut buf, MAX).unwrap().expect("a whole frame");
        prop_assert_eq!(got_id, id);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode_request(body).unwrap(), req);
    }

    #[test]
    fn response_frame_round_trips(id in any::<u64>(), resp in common::response()) {
        let mut out = Vec::new();
        encode_response(id, &resp, &mut out);
        prop_assert_eq!(out.len(), 12 + resp.encoded_len());
        let mut buf = BytesMut::from(&out[..]);
        let (got_id, body) = split_frame(&mut buf, MAX).unwrap().expect("a whole frame");
        prop_assert_eq!(got_id, id);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode_response(body).unwrap(), resp);
    }

    /// Several frames appended to one buffer, then fed to the decoder in
    /// arbitrary chunks, as a socket would deliver them.
    #[test]
    fn frame_stream_in_chunks(
        msgs in vec((any::<u64>(), common::msg()), 1..8),
        chunks in vec(1usize..64, 1..32),
    ) {
        let mut wire = Vec::new();
        for (id, m) in &msgs {
            match m {
                Msg::Req(r) => encode_request(*id, r, &mut wire),
                Msg::Resp(r) => encode_response(*id, r, &mut wire),
            }
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = chunks[i % chunks.len()].min(wire.len() - pos);
            i += 1;
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some((id, body)) = split_frame(&mut buf, MAX).unwrap() {
                got.push((id, body));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), msgs.len());
        for ((id, m), (got_id, body)) in msgs.iter().zip(got) {
            prop_assert_eq!(*id, got_id);
            match m {
                Msg::Req(r) => prop_assert_eq!(&decode_request(body).unwrap(), r),
                Msg::Resp(r) => prop_assert_eq!(&decode_response(body).unwrap(), r),
            }
        }
    }

    #[test]
    fn command_round_trips(cmd in common::command()) {
        let buf = cmd.encode();
        // The oldest format that carries the ops: 3 for a batch with a
        // lease op or a fenced guard, else 2 for one with a test_and_set
        // step, else 1.
        use nacre_proto::{Guard, Op};
        let fenced = |g: &Guard| matches!(g, Guard::LockHeld { .. });
        let v3 = cmd.batch.guards.iter().any(fenced)
            || cmd.batch.ops.iter().any(|o| match o {
                Op::SetLeased { .. } | Op::LeaseGrant { .. } | Op::LeaseRevoke(_) => true,
                Op::Check(g) => fenced(g),
                _ => false,
            });
        let v2 = cmd.batch.ops.iter().any(|o| matches!(o, Op::TestAndSet { .. }));
        let want = if v3 { 3 } else if v2 { 2 } else { 1 };
        prop_assert_eq!(buf[0], want, "format byte");
        prop_assert_eq!(Command::decode(Bytes::from(buf)).unwrap(), cmd);
    }

    /// A write's batch survives the log: what `to_batch` yields for any
    /// write request is a valid command.
    #[test]
    fn write_batches_round_trip_as_commands(req in common::request()) {
        if let Some(batch) = req.to_batch() {
            prop_assert!(req.is_write());
            let cmd = Command { session: None, batch };
            prop_assert_eq!(Command::decode(Bytes::from(cmd.encode())).unwrap(), cmd);
        }
    }

    #[test]
    fn client_hello_round_trips(h in common::client_hello(), tail in vec(any::<u8>(), 0..8)) {
        let mut out = Vec::new();
        h.encode(&mut out);
        let len = out.len();
        // Every strict prefix is incomplete, never an error.
        for cut in 0..len {
            prop_assert_eq!(ClientHello::decode(&out[..cut]).unwrap(), None);
        }
        out.extend_from_slice(&tail);
        prop_assert_eq!(ClientHello::decode(&out).unwrap(), Some((h, len)));
    }

    #[test]
    fn server_hello_round_trips(h in common::server_hello(), tail in vec(any::<u8>(), 0..8)) {
        let mut out = Vec::new();
        h.encode(&mut out);
        let len = out.len();
        for cut in 0..len {
            prop_assert_eq!(ServerHello::decode(&out[..cut]).unwrap(), None);
        }
        out.extend_from_slice(&tail);
        prop_assert_eq!(ServerHello::decode(&out).unwrap(), Some((h, len)));
    }

    /// Names over the limit are cut at a character boundary, so the hello
    /// still decodes (to the longest valid prefix that fits).
    #[test]
    fn long_hello_names_are_cut_to_valid_utf8(name in common::text(300)) {
        let h = ServerHello::ok(&name, &name);
        let mut out = Vec::new();
        h.encode(&mut out);
        let (got, n) = ServerHello::decode(&out).unwrap().expect("complete");
        prop_assert_eq!(n, out.len());
        prop_assert!(got.cluster_id.len() <= nacre_proto::NAME_SIZE_MAX_BYTES);
        prop_assert!(name.starts_with(&got.cluster_id));
        if name.len() <= nacre_proto::NAME_SIZE_MAX_BYTES {
            prop_assert_eq!(&got.cluster_id, &name);
        } else {
            // At most one character (up to 3 of its 4 bytes) is lost.
            prop_assert!(got.cluster_id.len() + 3 >= nacre_proto::NAME_SIZE_MAX_BYTES);
        }
        prop_assert_eq!(got.node, got.cluster_id);
    }

    #[test]
    fn primitives_round_trip(
        a in any::<u8>(), b in any::<bool>(), c in any::<u16>(), d in any::<u32>(), e in any::<u64>(),
        f in common::bytes(40), g in proptest::option::of(common::bytes(40)), s in common::text(20),
        o in proptest::option::of(common::text(20)),
    ) {
        let mut w = Writer::new();
        w.u8(a);
        w.bool(b);
        w.u16(c);
        w.u32(d);
        w.u64(e);
        w.bytes(&f);
        w.opt_bytes(g.as_deref());
        w.str(&s);
        w.opt_str(o.as_deref());
        let mut r = Reader::new(Bytes::from(w.into_inner()));
        prop_assert_eq!(r.u8("a").unwrap(), a);
        prop_assert_eq!(r.bool("b").unwrap(), b);
        prop_assert_eq!(r.u16("c").unwrap(), c);
        prop_assert_eq!(r.u32("d").unwrap(), d);
        prop_assert_eq!(r.u64("e").unwrap(), e);
        prop_assert_eq!(r.bytes("f").unwrap(), f);
        prop_assert_eq!(r.opt_bytes("g").unwrap(), g);
        prop_assert_eq!(r.string("s").unwrap(), s);
        prop_assert_eq!(r.opt_string("o").unwrap(), o);
        prop_assert!(r.finish("all").is_ok());
    }

    #[test]
    fn revision_round_trips(rev in common::revision()) {
        let mut out = [0u8; 24];
        rev.encode_into(&mut out);
        prop_assert_eq!(nacre_proto::Revision::decode_from(&out), Some(rev));
        prop_assert_eq!(nacre_proto::Revision::decode_from(&out[..23]), None);
    }

    /// Every generated request is small, so the default limits accept it.
    #[test]
    fn default_limits_accept_small_requests(req in common::request()) {
        prop_assert!(Limits::default().check_request(&req).is_ok());
    }
}
