//! Finds Debian's (or any system) librocksdb, so that the RocksDB engine is
//! built only when the library is there to link against. Set
//! `ROCKSDB_LIB_DIR` to point at another directory holding `librocksdb.so`,
//! or `NACRE_BENCH_NO_ROCKSDB=1` to leave the engine out.

use std::env;
use std::path::{Path, PathBuf};

const CANDIDATE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

fn main() {
    println!("cargo:rustc-check-cfg=cfg(nacre_bench_rocksdb)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=NACRE_BENCH_NO_ROCKSDB");

    if env::var_os("NACRE_BENCH_NO_ROCKSDB").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = env::var_os("ROCKSDB_LIB_DIR") {
        dirs.push(dir.into());
    }
    dirs.extend(CANDIDATE_DIRS.iter().map(PathBuf::from));

    let found = dirs
        .iter()
        .map(|d| d.join("librocksdb.so"))
        .find(|lib| lib.exists());
    match found {
        Some(lib) => {
            let dir = lib.parent().unwrap_or(Path::new("/"));
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rerun-if-changed={}", lib.display());
            println!("cargo:rustc-cfg=nacre_bench_rocksdb");
        }
        None => {
            // Look again when the library may have been installed since
            // (cargo scans a watched directory recursively, so skip the big
            // /usr/lib tree).
            for dir in dirs
                .iter()
                .filter(|d| d.is_dir() && d.as_path() != Path::new("/usr/lib"))
            {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
            println!(
                "cargo:warning=librocksdb.so not found (apt-get install librocksdb-dev): \
                 nacre-bench is built without the rocksdb engine"
            );
        }
    }
}
