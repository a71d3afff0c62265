//! `--log-format` and `--log-level` on real processes: a node's JSON logs
//! are one object per line, `--log-level warn` hides `info`, text is the
//! default, a bad level is a usage error, and the flag beats `RUST_LOG`.

mod common;

use std::process::Command;

use common::{free_port, ok, ServerProc, NACRE};

/// A single node started with `flags`; writes one key so there is work to
/// log, then stops cleanly. Its log.
fn serve_log(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let mut args = vec!["serve", "--data-dir", &data_arg, "--listen", &addr];
    args.extend_from_slice(flags);
    let server = ServerProc::start_args(&args, &addr, data, dir.path().join("server.log"));
    ok(&addr, &["set", "k", "v"]);
    let log_path = dir.path().join("server.log");
    assert_eq!(server.terminate(), Some(0));
    std::fs::read_to_string(log_path).unwrap()
}

#[test]
fn json_logs_are_one_object_per_line() {
    let log = serve_log(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(l[field].is_string(), "no {field}: {l}");
        }
        assert!(l["fields"].is_object(), "no fields: {l}");
    }
    let start = lines
        .iter()
        .find(|l| l["fields"]["message"] == "starting nacre")
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    assert_eq!(start["level"], "INFO");
    assert!(start["fields"]["listen"].is_string(), "{start}");
}

#[test]
fn text_is_the_default() {
    let log = serve_log(&[]);
    let start = log
        .lines()
        .find(|l| l.contains("starting nacre"))
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    assert!(start.contains("INFO"), "{start}");
    assert!(serde_json::from_str::<serde_json::Value>(start).is_err());
}

#[test]
fn log_level_warn_hides_info_lines() {
    // The helper sets RUST_LOG=info: the flag wins over it.
    let log = serve_log(&["--log-level", "warn"]);
    assert!(!log.contains("starting nacre"), "{log}");
    assert!(!log.contains("INFO"), "{log}");
}

#[test]
fn a_bad_log_level_is_a_usage_error() {
    let out = Command::new(NACRE)
        .args(["serve", "--log-level", "loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-level") && err.contains("not a level"),
        "{err}"
    );
    let out = Command::new(NACRE)
        .args(["--log-format", "xml", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// A client command logs its (debug) connection failures when asked:
/// by `RUST_LOG`, unless `--log-level` says otherwise.
#[test]
fn the_flag_beats_rust_log_for_client_commands_too() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let ping = |flags: &[&str]| {
        let out = Command::new(NACRE)
            .args(["--endpoints", &nowhere, "--timeout-ms", "300"])
            .args(flags)
            .arg("ping")
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "nothing listens there");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let debug = ping(&[]);
    assert!(debug.contains("connect failed"), "{debug}");
    let quiet = ping(&["--log-level", "warn"]);
    assert!(!quiet.contains("connect failed"), "{quiet}");
    let json = ping(&["--log-format", "json"]);
    let line = json
        .lines()
        .find(|l| l.contains("connect failed"))
        .unwrap_or_else(|| panic!("{json}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "DEBUG");
}
