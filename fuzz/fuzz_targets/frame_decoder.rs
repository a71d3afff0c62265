//! Feeds arbitrary bytes to the frame decoder the way a socket would: in
//! chunks whose sizes come from the input itself. Every frame that splits
//! off is decoded as a request and as a response; whatever decodes is
//! re-encoded and must decode to the same value. The handshake decoders
//! and the replicated command decoder get the raw input too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_proto::{
    decode_request, decode_response, encode_request, encode_response, split_frame, Bytes, BytesMut, ClientHello,
    Command, ServerHello,
};

/// Small enough that the fuzzer reaches "frame too large" often.
const FRAME_MAX: usize = 64 << 10;

fn check_frame(id: u64, body: Bytes) {
    if let Ok(req) = decode_request(body.clone()) {
        assert_eq!(req.encoded_len(), body.len());
        let mut out = Vec::new();
        encode_request(id, &req, &mut out);
        let mut buf = BytesMut::from(&out[..]);
        let (id2, body2) = split_frame(&mut buf, usize::MAX).unwrap().unwrap();
        assert_eq!(id2, id);
        assert!(buf.is_empty());
        // A canonical encoding: the same bytes come back.
        assert_eq!(body2, body);
        assert_eq!(decode_request(body2).unwrap(), req);
    }
    if let Ok(resp) = decode_response(body.clone()) {
        assert_eq!(resp.encoded_len(), body.len());
        let mut out = Vec::new();
        encode_response(id, &resp, &mut out);
        let mut buf = BytesMut::from(&out[..]);
        let (id2, body2) = split_frame(&mut buf, usize::MAX).unwrap().unwrap();
        assert_eq!(id2, id);
        assert_eq!(body2, body);
        assert_eq!(decode_response(body2).unwrap(), resp);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    // Chunk sizes cycle through 1..=seed+1.
    let step = seed as usize + 1;
    let mut buf = BytesMut::new();
    let mut pos = 0;
    let mut i = 0;
    'feed: while pos < rest.len() {
        let n = (i % step + 1).min(rest.len() - pos);
        i += 1;
        buf.extend_from_slice(&rest[pos..pos + n]);
        pos += n;
        loop {
            match split_frame(&mut buf, FRAME_MAX) {
                Ok(Some((id, body))) => check_frame(id, body),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }

    if let Ok(cmd) = Command::decode(Bytes::copy_from_slice(rest)) {
        let enc = cmd.encode();
        assert_eq!(enc, rest);
        assert_eq!(Command::decode(Bytes::from(enc)).unwrap(), cmd);
    }
    if let Ok(Some((h, n))) = ClientHello::decode(rest) {
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(&out[..], &rest[..n]);
    }
    if let Ok(Some((h, n))) = ServerHello::decode(rest) {
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(&out[..], &rest[..n]);
    }
});
