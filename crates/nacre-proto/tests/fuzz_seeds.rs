//! The fixed corpus of the `frame_decoder` fuzz target
//! (fuzz/seeds/frame_decoder/): valid frames, commands and handshakes, so
//! that a fuzz run starts from inputs that decode rather than from nothing.
//! `cargo run -p nacre-proto --example write_frame_fuzz_seeds` generates it (run
//! it after changing the encoding, and commit the files); this test checks
//! that every file still holds what its name says, so a format change shows
//! up here instead of silently leaving the fuzzer with stale seeds.
//!
//! Every seed starts with the byte the target takes its chunk sizes from.

use std::path::{Path, PathBuf};

use nacre_proto::{
    decode_request, decode_response, split_frame, Bytes, BytesMut, ClientHello, Command,
    ServerHello,
};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/frame_decoder")
}

/// `data` is a stream of whole frames, each a request or a response.
fn check_frames(name: &str, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut frames = 0;
    while let Some((_, body)) = split_frame(&mut buf, usize::MAX).unwrap() {
        let ok = decode_request(body.clone()).is_ok() || decode_response(body).is_ok();
        assert!(ok, "{name}: frame {frames} decodes as neither");
        frames += 1;
    }
    assert!(
        frames > 0 && buf.is_empty(),
        "{name}: not a stream of whole frames"
    );
}

#[test]
fn frame_decoder_seeds_still_decode() {
    let mut seeds = 0;
    for entry in std::fs::read_dir(seeds_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let rest = &data[1..];
        if name.starts_with("frames-") {
            check_frames(&name, rest);
        } else if name.starts_with("command-") {
            Command::decode(Bytes::copy_from_slice(rest)).unwrap();
        } else if name == "client-hello" {
            assert!(ClientHello::decode(rest).unwrap().is_some());
        } else if name == "server-hello" {
            assert!(ServerHello::decode(rest).unwrap().is_some());
        } else {
            panic!("{name}: a seed this test does not know");
        }
        seeds += 1;
    }
    assert!(seeds >= 10, "only {seeds} seeds");
}
