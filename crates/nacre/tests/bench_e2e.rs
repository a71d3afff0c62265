//! `nacre bench` against a real node: a short closed-loop run of each
//! workload, checked through its JSON report.

mod common;

use std::process::Command;

use common::{ServerProc, NACRE};

fn bench(addr: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(NACRE)
        .args(["--endpoints", addr, "--json", "bench"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nacre bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bench_runs_each_workload_and_reports_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let common = ["--ops", "200", "--clients", "4", "--connections", "2"];
    let small = ["--keys", "100", "--key-size", "8", "--value-size", "32"];
    for (workload, extra) in [
        ("put", &[][..]),
        ("get", &["--consistency", "any"][..]),
        ("mixed", &["--read-percent", "70"][..]),
        ("sequence", &["--sequence-len", "5"][..]),
        ("call", &[][..]),
    ] {
        let mut args = vec!["--workload", workload];
        args.extend_from_slice(&common);
        args.extend_from_slice(&small);
        args.extend_from_slice(extra);
        let r = bench(&server.addr, &args);
        assert_eq!(r["target"], "nacre", "{r}");
        assert_eq!(r["workload"], workload, "{r}");
        assert_eq!(r["ops"], 200, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        // get and mixed preload their keys, so every read finds one.
        assert_eq!(r["misses"], 0, "{r}");
        assert_eq!(r["clients"], 4);
        assert_eq!(r["connections"], 2);
        assert_eq!(r["value_size"], 32);
        let l = &r["latency_us"];
        assert_eq!(l["count"], 200, "{r}");
        let (p50, p99, p999) = (
            l["p50"].as_u64().unwrap(),
            l["p99"].as_u64().unwrap(),
            l["p999"].as_u64().unwrap(),
        );
        assert!(0 < p50 && p50 <= p99 && p99 <= p999, "{r}");
        assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The keys were written: a client sees the benchmark's last key.
    let out = Command::new(NACRE)
        .args(["--endpoints", &server.addr, "exists", "k0000099"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("true"));
}

#[test]
fn bench_refuses_bad_sizes_before_connecting() {
    // Nothing listens there: the check must fail first.
    let out = Command::new(NACRE)
        .args(["--endpoints", "127.0.0.1:1", "bench", "--keys", "1000"])
        .args(["--key-size", "3", "--ops", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--key-size"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn call_workload_increments_through_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let r = bench(
        &server.addr,
        &[
            "--workload",
            "call",
            "--ops",
            "100",
            "--clients",
            "2",
            "--keys",
            "1",
            "--key-size",
            "4",
        ],
    );
    assert_eq!(r["errors"], 0, "{r}");
    // One key, 100 increments: the counter says exactly 100.
    let out = Command::new(NACRE)
        .args([
            "--endpoints",
            &server.addr,
            "call",
            nacre_loadgen::BENCH_SCRIPT_NAME,
            "get",
        ])
        .arg("counter/k000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100");
}
