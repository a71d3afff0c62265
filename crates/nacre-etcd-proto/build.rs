//! Compiles proto/ into Rust (prost messages, tonic clients and servers).
//!
//! protoc comes from the protoc-bin-vendored crate, so that building the
//! workspace needs nothing but Rust: no system protoc, no install step in
//! CI. `PROTOC` still wins when it is set, as prost-build documents, for a
//! platform the vendored binaries do not cover.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/v3lockpb/v3lock.proto",
    "proto/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        let protoc: PathBuf = protoc_bin_vendored::protoc_bin_path()?;
        config.protoc_executable(protoc);
    }
    // prost-build emits no rerun-if-changed of its own; without these a
    // changed field number would keep the old generated code.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    // Keys and values become `bytes::Bytes`: a server can hand them to the
    // store, and a client take them from nacre-loadgen, without a copy.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
