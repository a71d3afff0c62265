//! The fixed corpus of the `frame_decoder` fuzz target
//! (fuzz/seeds/frame_decoder/): valid frames, commands and handshakes, so
//! that a fuzz run starts from inputs that decode rather than from nothing.
//! `write_seed_corpus` generates it (run it with `--ignored` after changing
//! the encoding, and commit the files); the other test checks that every
//! file still holds what its name says, so a format change shows up here
//! instead of silently leaving the fuzzer with stale seeds.
//!
//! Every seed starts with the byte the target takes its chunk sizes from.

mod common;

use std::path::{Path, PathBuf};

use nacre_proto::{
    decode_request, decode_response, encode_request, encode_response, split_frame, Bytes, BytesMut,
    ClientHello, Command, ServerHello,
};
use proptest::collection::vec;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

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

/// One value drawn from `strategy`.
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S) -> S::Value {
    strategy.new_tree(runner).unwrap().current()
}

/// Regenerate fuzz/seeds/frame_decoder/ (deterministic).
#[test]
#[ignore = "writes the fixed corpus into the source tree"]
fn write_seed_corpus() {
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut runner = TestRunner::deterministic();
    let write = |name: String, chunk: u8, bytes: &[u8]| {
        let mut data = vec![chunk];
        data.extend_from_slice(bytes);
        std::fs::write(dir.join(name), data).unwrap();
    };
    for i in 0..12u8 {
        let mut out = Vec::new();
        for (id, msg) in draw(&mut runner, vec(common::msg(), 1..4))
            .iter()
            .enumerate()
        {
            match msg {
                common::Msg::Req(req) => encode_request(id as u64, req, &mut out),
                common::Msg::Resp(resp) => encode_response(id as u64, resp, &mut out),
            }
        }
        // Chunks of 1 byte up to whole frames at once.
        write(format!("frames-{i:02}"), i * 21, &out);
    }
    for i in 0..4u8 {
        let cmd = draw(&mut runner, common::command());
        write(format!("command-{i:02}"), 255, &cmd.encode());
    }
    let mut out = Vec::new();
    draw(&mut runner, common::client_hello()).encode(&mut out);
    write("client-hello".into(), 255, &out);
    out.clear();
    draw(&mut runner, common::server_hello()).encode(&mut out);
    write("server-hello".into(), 255, &out);
}
