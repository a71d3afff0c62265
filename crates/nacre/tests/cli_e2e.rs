//! End to end: the real server (`nacre serve`) on a temporary directory,
//! driven by the `nacre` client commands, checking outputs and exit codes.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

mod common;

use common::{ServerProc, NACRE};

/// A running `nacre serve` in its own temporary directory.
struct Server {
    proc_: ServerProc,
    addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let proc_ = ServerProc::start(dir.path());
        let addr = proc_.addr.clone();
        let s = Server { proc_, addr, dir };
        assert_eq!(s.run(&["ping"]).code, 0, "ping failed:\n{}", s.proc_.log());
        s
    }

    fn run(&self, args: &[&str]) -> Out {
        run_with(&self.addr, args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_with(&self.addr, args, Some(stdin))
    }

    /// Runs a command that must succeed; returns stdout as text.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "nacre {args:?} failed: {}", o.stderr);
        o.text()
    }

    /// Runs with --json; returns the JSON objects printed.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.run(&a);
        assert_eq!(o.code, 0, "nacre {a:?} failed: {}", o.stderr);
        o.json_lines()
    }
}

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }

    fn json_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn run_with(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut child = Command::new(NACRE)
        .args(["--endpoints", addr, "--timeout-ms", "5000"])
        .args(args)
        .env_remove("NACRE_ENDPOINTS")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn keys_and_values() {
    let s = Server::start();
    assert!(s.ok(&["ping"]).starts_with("nacre"));

    // set / get, text and JSON.
    let index: u64 = s
        .ok(&["set", "a", "1"])
        .trim()
        .strip_prefix("index: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(index > 0);
    assert_eq!(s.ok(&["get", "a"]), "1\n");
    assert_eq!(
        s.json(&["get", "a"]),
        vec![json!({"key": "YQ==", "value": "MQ=="})]
    );
    assert_eq!(
        s.ok(&["get", "a", "--consistency", &format!("at-least:{index}")]),
        "1\n"
    );
    assert_eq!(s.ok(&["get", "a", "--consistency", "any"]), "1\n");
    let e = s.json(&["get-entry", "a"]);
    assert_eq!(e[0]["key"], "YQ==");
    assert_eq!(e[0]["version"], 1);
    assert_eq!(e[0]["create_rev"], index);

    // Not found: exit code 2, message naming the key; JSON error on stdout.
    let o = s.run(&["get", "nope"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("not_found") && o.stderr.contains("nope"),
        "{}",
        o.stderr
    );
    let o = s.run(&["--json", "get", "nope"]);
    assert_eq!(o.code, 2);
    let err = &o.json_lines()[0]["error"];
    assert_eq!(err["code"], "not_found");
    assert_eq!(err["key"], b64(b"nope"));
    assert_eq!(err["exit_code"], 2);
    assert_eq!(s.run(&["get-entry", "nope"]).code, 2);
    assert_eq!(s.run(&["delete", "nope"]).code, 2);

    // Values from stdin and from a file, binary values.
    s.run_stdin(&["set", "in", "-"], b"from\nstdin");
    assert_eq!(s.ok(&["get", "in"]), "from\nstdin\n");
    let f = s.dir.path().join("value.bin");
    std::fs::write(&f, [0u8, 0xff, b'x']).unwrap();
    s.ok(&["set", "bin", "--value-file", f.to_str().unwrap()]);
    assert_eq!(s.ok(&["get", "bin"]), "\\u{0}\\xffx\n");
    assert_eq!(
        s.run(&["get", "bin", "--raw"]).stdout,
        vec![0u8, 0xff, b'x']
    );
    assert_eq!(s.json(&["get", "bin"])[0]["value"], b64(&[0, 0xff, b'x']));
    assert_eq!(
        s.run(&["set", "k", "--value-file", "/nonexistent/file"])
            .code,
        1
    );

    // exists, multi-get.
    assert_eq!(s.ok(&["exists", "a"]), "true\n");
    assert_eq!(s.ok(&["exists", "zz"]), "false\n");
    assert_eq!(
        s.json(&["exists", "zz"]),
        vec![json!({"key": "eno=", "exists": false})]
    );
    assert_eq!(s.ok(&["multi-get", "a", "in"]), "1\nfrom\\nstdin\n");
    let o = s.run(&["multi-get", "a", "missing"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("missing"), "{}", o.stderr);
    assert_eq!(
        s.ok(&["multi-get", "a", "missing", "--allow-missing"]),
        "1\n(absent)\n"
    );
    assert_eq!(
        s.json(&["multi-get", "a", "missing", "--allow-missing"]),
        vec![
            json!({"key": "YQ==", "value": "MQ=="}),
            json!({"key": b64(b"missing"), "value": null})
        ]
    );

    // test-and-set: returns the value found; a mismatch writes nothing.
    assert_eq!(
        s.ok(&["test-and-set", "t", "--expected-absent", "--wanted", "x"]),
        "(absent)\n"
    );
    assert_eq!(s.ok(&["get", "t"]), "x\n");
    assert_eq!(
        s.ok(&["test-and-set", "t", "--expected", "wrong", "--wanted", "y"]),
        "x\n"
    );
    assert_eq!(s.ok(&["get", "t"]), "x\n");
    let j = s.json(&["test-and-set", "t", "--expected", "x", "--delete"]);
    assert_eq!(j[0]["prev"], b64(b"x"));
    assert_eq!(s.run(&["get", "t"]).code, 2);

    // replace and confirm.
    assert_eq!(s.ok(&["replace", "r", "one"]), "(absent)\n");
    assert_eq!(s.ok(&["replace", "r", "two"]), "one\n");
    assert_eq!(s.ok(&["replace", "r", "--delete"]), "two\n");
    assert_eq!(s.run(&["exists", "r"]).text(), "false\n");
    s.ok(&["confirm", "c", "v"]);
    s.ok(&["confirm", "c", "v"]);
    assert_eq!(s.ok(&["get", "c"]), "v\n");

    // delete.
    assert!(s.ok(&["delete", "a"]).starts_with("index: "));
    assert_eq!(s.run(&["get", "a"]).code, 2);

    // nop and get-txid: the txid covers the nop.
    let nop: u64 = s.json(&["nop"])[0]["index"].as_u64().unwrap();
    let txid: u64 = s.ok(&["get-txid"]).trim().parse().unwrap();
    assert!(txid >= nop, "txid {txid} < nop {nop}");
    assert_eq!(s.json(&["get-txid"])[0]["txid"].as_u64().unwrap(), txid);
}

#[test]
fn ranges_and_prefixes() {
    let s = Server::start();
    for k in ["k1", "k2", "k3", "k4", "other"] {
        s.ok(&["set", k, &format!("v{}", &k[1..])]);
    }
    assert_eq!(s.ok(&["key-count"]), "5\n");
    assert_eq!(s.json(&["key-count"]), vec![json!({"count": 5})]);
    // Defaults: from the first key, to the end.
    assert_eq!(s.ok(&["range"]), "k1\nk2\nk3\nk4\nother\n");
    // --first inclusive, --last exclusive unless asked.
    assert_eq!(
        s.ok(&["range", "--first", "k2", "--last", "k4"]),
        "k2\nk3\n"
    );
    assert_eq!(
        s.ok(&[
            "range",
            "--first",
            "k2",
            "--first-exclusive",
            "--last",
            "k4",
            "--last-inclusive"
        ]),
        "k3\nk4\n"
    );
    assert_eq!(s.ok(&["range", "--max", "2"]), "k1\nk2\n");
    assert_eq!(
        s.json(&["range", "--max", "1"]),
        vec![json!({"key": b64(b"k1")})]
    );
    assert_eq!(
        s.ok(&["range-entries", "--first", "k3", "--last", "k9"]),
        "k3\tv3\nk4\tv4\n"
    );
    let e = s.json(&["range-entries", "--first", "k4", "--last", "k5"]);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["key"], b64(b"k4"));
    assert_eq!(e[0]["value"], b64(b"v4"));
    assert_eq!(e[0]["version"], 1);
    // Reverse: --first is the high end.
    assert_eq!(
        s.ok(&["rev-range-entries", "--first", "k3", "--last", "k1"]),
        "k3\tv3\nk2\tv2\n"
    );
    assert_eq!(
        s.ok(&["rev-range-entries", "--max", "2"]),
        "other\tvther\nk4\tv4\n"
    );
    assert_eq!(s.ok(&["prefix-keys", "k"]), "k1\nk2\nk3\nk4\n");
    assert_eq!(s.ok(&["prefix-keys", "k", "--max", "1"]), "k1\n");
    assert_eq!(s.ok(&["prefix-keys", "nothing"]), "");
    assert_eq!(s.ok(&["delete-prefix", "k"]), "4\n");
    assert_eq!(s.json(&["delete-prefix", "k"])[0]["count"], 0);
    assert_eq!(s.ok(&["key-count"]), "1\n");
}

/// Sets `n` keys `k00000`... through sequences of at most 5,000 steps
/// (under `batch_ops_max`).
fn set_many(s: &Server, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("k{i:05}")).collect();
    for chunk in keys.chunks(5_000) {
        let steps: Vec<Value> = chunk
            .iter()
            .map(|k| json!({"op": "set", "key": k, "value": "v"}))
            .collect();
        let o = s.run_stdin(&["sequence"], Value::Array(steps).to_string().as_bytes());
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    keys
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn ranges_page_through_to_the_max_and_minus_one_prints_all() {
    let s = Server::start();
    // More than one page of the default range_results_max (10,000).
    let keys = set_many(&s, 10_050);
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    let rev: Vec<&str> = all.iter().rev().copied().collect();

    for max in ["20000", "-1", "10050"] {
        let o = s.run(&["range", "--max", max]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(lines(&o.text()), all, "--max {max}");
        assert!(!o.stderr.contains("more keys"), "{}", o.stderr);
    }
    assert_eq!(lines(&s.ok(&["prefix-keys", "k", "--max", "-1"])), all);
    let entries = s.ok(&["rev-range-entries", "--max", "-1"]);
    let got: Vec<&str> = entries
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(got, rev);
    let json = s.json(&["range-entries", "--first", "k00005", "--max", "-1"]);
    assert_eq!(json.len(), 10_045);
    assert_eq!(json[10_044]["key"], b64(b"k10049"));

    // The default max prints one page's worth, and says what it left out.
    let o = s.run(&["range"]);
    assert_eq!(o.code, 0);
    assert_eq!(lines(&o.text()), all[..10_000]);
    assert!(
        o.stderr
            .contains("stopped at --max 10000; more keys follow"),
        "{}",
        o.stderr
    );
    let o = s.run(&["prefix-keys", "k", "--max", "3"]);
    assert_eq!((o.text(), o.code), ("k00000\nk00001\nk00002\n".into(), 0));
    assert!(o.stderr.contains("--max 3"), "{}", o.stderr);

    // A negative max other than -1 is a usage error.
    assert_eq!(s.run(&["range", "--max", "-2"]).code, 64);
}

#[test]
fn a_multi_get_too_large_for_a_frame_exits_too_large_at_once() {
    let s = Server::start();
    // Two 15 MiB values: each fits (value_size_max_bytes is 16 MiB), both
    // together are over the 24 MiB frame.
    let file = s.dir.path().join("15mib");
    std::fs::write(&file, vec![b'x'; 15 << 20]).unwrap();
    for k in ["big1", "big2"] {
        s.ok(&["set", k, "--value-file", file.to_str().unwrap()]);
    }
    // Errors, not requests, are counted: a slow answer (two 15 MiB values
    // read in a debug build on a loaded machine) draws a ping from the
    // client, which is a request too.
    let errors = || -> u64 {
        let stats = s.json(&["statistics"]);
        stats[0]["request_errors"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = errors();
    let o = s.run(&["multi-get", "big1", "big2"]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    assert!(o.stderr.contains("[too_large]"), "{}", o.stderr);
    assert!(
        o.stderr.contains("frame_size_max_bytes 25165824"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("fewer keys"), "{}", o.stderr);
    // The multi-get was answered too_large once: no retries.
    assert_eq!(errors() - before, 1);
    let o = s.run(&["--json", "multi-get", "big1", "big2"]);
    assert_eq!(o.code, 6);
    let err = &o.json_lines()[0]["error"];
    assert_eq!(
        (err["code"].as_str(), err["exit_code"].as_i64()),
        (Some("too_large"), Some(6))
    );
    // One of them alone is fine.
    assert_eq!(s.run(&["multi-get", "big1"]).stdout.len(), (15 << 20) + 1);
}

#[test]
fn sequences() {
    let s = Server::start();
    let seq = r#"[
        {"op":"set","key":"a","value":"1"},
        {"op":"set","key_b64":"AP8=","value_b64":"aGk="},
        {"op":"test_and_set","key":"t","expected":null,"wanted":"x"},
        {"op":"assert","key":"a","value":"1"},
        {"op":"assert_exists","key":"a"},
        {"op":"assert_version","key":"a","version":1},
        {"op":"set","key":"p/1","value":""},
        {"op":"assert_range","prefix":"p/","keys":["p/1"]}
    ]"#;
    let o = s.run_stdin(&["sequence"], seq.as_bytes());
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.text().starts_with("index: "));
    assert_eq!(s.ok(&["get", "a"]), "1\n");
    assert_eq!(s.ok(&["get", "t"]), "x\n");
    // The binary key sorts first.
    assert_eq!(s.json(&["range", "--max", "1"])[0]["key"], b64(&[0, 0xff]));
    assert_eq!(s.ok(&["range", "--max", "1"]), "\\u{0}\\xff\n");

    // A failed assertion: exit code 3, nothing applied.
    let f = s.dir.path().join("seq.jsonl");
    std::fs::write(
        &f,
        "{\"op\":\"set\",\"key\":\"b\",\"value\":\"2\"}\n{\"op\":\"assert\",\"key\":\"a\",\"value\":\"other\"}\n",
    )
    .unwrap();
    let o = s.run(&["sequence", f.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("assertion_failed"), "{}", o.stderr);
    assert_eq!(s.run(&["get", "b"]).code, 2);

    // delete of a missing key fails the sequence with not found.
    let o = s.run_stdin(&["sequence", "-"], br#"[{"op":"delete","key":"nope"}]"#);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = s.run_stdin(
        &["--json", "sequence"],
        br#"[{"op":"delete_prefix","prefix":"p/"},{"op":"delete","key":"a"}]"#,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.json_lines()[0]["index"].as_u64().unwrap() > 0);
    assert_eq!(s.ok(&["prefix-keys", "p/"]), "");

    // Bad input: exit code 1 before anything is sent.
    let o = s.run_stdin(&["sequence"], br#"[{"op":"frob"}]"#);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("unknown op"), "{}", o.stderr);
}

/// Arakoon's meanings, which users carry code over with: a test_and_set
/// step that does not match leaves the sequence going (an assert step is
/// what aborts), an empty sequence is a valid write, and a standalone
/// assert or assert-exists is a read that writes no log entry.
#[test]
fn arakoon_meanings_of_test_and_set_asserts_and_empty_sequences() {
    let s = Server::start();
    s.ok(&["set", "lock", "someone"]);
    let seq = r#"[
        {"op":"test_and_set","key":"lock","expected":null,"wanted":"me"},
        {"op":"set","key":"after","value":"1"},
        {"op":"test_and_set","key":"counter","expected":null,"wanted":"0"}
    ]"#;
    let o = s.run_stdin(&["sequence"], seq.as_bytes());
    assert_eq!(o.code, 0, "a test_and_set mismatch aborted: {}", o.stderr);
    assert_eq!(s.ok(&["get", "lock"]), "someone\n", "the mismatch wrote");
    assert_eq!(s.ok(&["get", "after"]), "1\n");
    assert_eq!(s.ok(&["get", "counter"]), "0\n");

    let o = s.run_stdin(&["--json", "sequence"], b"[]");
    assert_eq!(o.code, 0, "{}", o.stderr);
    let empty_at = o.json_lines()[0]["index"].as_u64().unwrap();
    assert!(empty_at > 0);

    let txid = s.ok(&["get-txid"]);
    s.ok(&["assert", "lock", "someone"]);
    s.ok(&["assert", "nope", "--absent"]);
    s.ok(&["assert-exists", "lock", "--consistency", "any"]);
    let o = s.run(&["assert", "lock", "me"]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("assertion_failed"), "{}", o.stderr);
    assert_eq!(s.run(&["assert-exists", "nope"]).code, 3);
    assert_eq!(s.run(&["assert", "lock", "--absent"]).code, 3);
    assert_eq!(s.ok(&["get-txid"]), txid, "an assert wrote a log entry");
}

#[test]
fn admin_commands() {
    let s = Server::start();
    let stats = s.ok(&["statistics"]);
    assert!(stats.lines().all(|l| l.contains(": ")), "{stats}");
    let j = s.json(&["statistics"]);
    assert_eq!(j.len(), 1);
    assert!(j[0].is_object());
    assert!(!s.ok(&["who-master"]).trim().is_empty());
    assert!(s.json(&["who-master"])[0]["master"].is_string());
    let v = s.json(&["version"]);
    assert!(v[0]["major"].is_u64() && v[0]["info"].is_string());
    assert!(s
        .ok(&["version"])
        .starts_with(&format!("{}.", v[0]["major"])));
    assert!(s.json(&["ping"])[0]["reply"]
        .as_str()
        .unwrap()
        .starts_with("nacre"));
}

#[test]
fn errors_without_a_server() {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let o = run_with(&addr, &["get", "a"], None);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(o.stderr.contains(&addr), "{}", o.stderr);
    let o = run_with(&addr, &["--json", "ping"], None);
    assert_eq!(o.code, 4);
    assert_eq!(o.json_lines()[0]["error"]["code"], "unavailable");
    // Usage errors are 64, not clap's 2 (which means "not found" here).
    assert_eq!(run_with(&addr, &["get"], None).code, 64);
    assert_eq!(run_with(&addr, &["frobnicate"], None).code, 64);
    assert_eq!(run_with(&addr, &["--help"], None).code, 0);
}

#[test]
fn wrong_cluster_is_refused() {
    let s = Server::start();
    let o = s.run(&["--cluster-id", "not-this-one", "ping"]);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(o.stderr.contains("wrong_cluster"), "{}", o.stderr);
    assert_eq!(s.run(&["--cluster-id", "nacre", "ping"]).code, 0);
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "tick_ms = 0\n").unwrap();
    let o = Command::new(NACRE)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tick_ms"));
}
