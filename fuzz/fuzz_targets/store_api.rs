//! The whole API of nacre-store over the simulated disk, with crash points
//! and failing fsyncs, checked against a model after every fault. The check
//! lives in crates/nacre-store/tests/store_api/ (see its module docs for
//! the input format), which `cargo test -p nacre-store --test fuzz_corpus`
//! also runs over the fixed corpus in fuzz/seeds/store_api/.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/nacre-store/tests/store_api/mod.rs"]
mod store_api;

fuzz_target!(|data: &[u8]| store_api::run(data));
