//! Regenerates the fixed corpus of the `frame_decoder` fuzz target,
//! fuzz/seeds/frame_decoder/ (deterministic: the same code writes the same
//! bytes). Run it after changing the encoding, and commit the files:
//!
//! ```sh
//! cargo run -p nacre-proto --example write_frame_fuzz_seeds
//! ```
//!
//! `cargo test -p nacre-proto --test fuzz_seeds` checks that every file
//! still holds what its name says. Every seed starts with the byte the
//! target takes its chunk sizes from.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use nacre_proto::{encode_request, encode_response};
use proptest::collection::vec;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/frame_decoder")
}

/// One value drawn from `strategy`.
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S) -> S::Value {
    strategy.new_tree(runner).unwrap().current()
}

fn main() -> std::io::Result<()> {
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir)?;
    let mut runner = TestRunner::deterministic();
    let write = |name: String, chunk: u8, bytes: &[u8]| {
        let mut data = vec![chunk];
        data.extend_from_slice(bytes);
        std::fs::write(dir.join(name), data)
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
        write(format!("frames-{i:02}"), i * 21, &out)?;
    }
    for i in 0..4u8 {
        let cmd = draw(&mut runner, common::command());
        write(format!("command-{i:02}"), 255, &cmd.encode())?;
    }
    let mut out = Vec::new();
    draw(&mut runner, common::client_hello()).encode(&mut out);
    write("client-hello".into(), 255, &out)?;
    out.clear();
    draw(&mut runner, common::server_hello()).encode(&mut out);
    write("server-hello".into(), 255, &out)?;
    println!("wrote {}", dir.display());
    Ok(())
}
