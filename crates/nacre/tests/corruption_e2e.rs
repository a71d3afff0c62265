//! A corrupt store is never served: a user value planted in a stopped
//! node's store, too short for the revision every stored value starts
//! with, is reported as corruption naming its key when read; a write on
//! top of it stops the node, and `nacre serve` exits with the corruption
//! exit code (65), its log naming the key — also when it is restarted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{ServerProc, NACRE};

/// Runs a client command against `addr`: (exit code, stderr).
fn nacre(addr: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(NACRE)
        .args(["--endpoints", addr, "--timeout-ms", "5000"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Puts `value` under the store key `key` of the node whose data is in
/// `data_dir`, behind the node's back (it must be stopped).
fn plant(data_dir: &std::path::Path, key: &[u8], value: &[u8]) {
    let store =
        nacre_store::Store::open(data_dir.join("store"), nacre_store::Options::default()).unwrap();
    let mut txn = store.begin_write().unwrap();
    txn.put(key, value).unwrap();
    txn.commit().unwrap();
}

const EXIT_CORRUPTION: i32 = 65;

#[test]
fn a_corrupt_value_stops_the_node_with_its_own_exit_code_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::start(dir.path());
    let addr = node.addr.clone();
    assert_eq!(nacre(&addr, &["set", "good", "1"]).0, Some(0));
    assert_eq!(node.terminate(), Some(0));

    // User keys are stored behind the namespace byte `u`; three bytes are
    // less than the 24-byte revision header of every stored value.
    plant(&dir.path().join("data"), b"ubad", b"abc");

    let mut node = ServerProc::start_at(dir.path(), &addr);
    // A read of the bad key is answered with the corruption, naming it;
    // the good key still reads.
    let (code, stderr) = nacre(&addr, &["get", "bad"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("corruption"), "{stderr}");
    assert!(stderr.contains("\"bad\""), "{stderr}");
    assert_eq!(nacre(&addr, &["get", "good"]).0, Some(0));

    // A write on top of it stops the node: it is not acknowledged, and
    // the process exits on its own, non-zero, saying why.
    let (code, stderr) = nacre(&addr, &["set", "bad", "x"]);
    assert_ne!(
        code,
        Some(0),
        "a write over a corrupt value succeeded: {stderr}"
    );
    let exit = node.wait_exit(Duration::from_secs(30));
    let log = node.log();
    assert_eq!(exit, Some(EXIT_CORRUPTION), "{log}");
    assert!(
        log.contains("corrupt user value under user key \"bad\""),
        "the log does not name the corruption and the key:\n{log}"
    );

    // The write is in the tlog, committed: a restart applies it again and
    // stops again, rather than serve the store.
    let restart_log = dir.path().join("restart.log");
    let mut child = Command::new(common::server_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &addr])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&restart_log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the restarted node kept running over a corrupt store:\n{}",
                std::fs::read_to_string(&restart_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&restart_log).unwrap_or_default();
    assert_eq!(status.code(), Some(EXIT_CORRUPTION), "{log}");
    assert!(log.contains("user key \"bad\""), "{log}");
}
