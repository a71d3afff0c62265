//! Regenerates the fixed corpus of the `store_api` fuzz target,
//! fuzz/seeds/store_api/ (deterministic: the same code writes the same
//! bytes). Run it after changing the input format (tests/store_api/ops.rs),
//! and commit the files:
//!
//! ```sh
//! cargo run -p nacre-store --example write_store_fuzz_seeds
//! ```
//!
//! `cargo test -p nacre-store --test fuzz_corpus` runs every input of the
//! corpus through the check.

#[path = "../tests/store_api/mod.rs"]
mod store_api;
#[path = "../tests/store_api_inputs/mod.rs"]
mod store_api_inputs;

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/store_api");
    std::fs::create_dir_all(&dir)?;
    for (i, (config, steps)) in store_api_inputs::seed_corpus().iter().enumerate() {
        let path = dir.join(format!("seed-{i:02}"));
        std::fs::write(path, store_api::ops::encode(*config, steps))?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}
