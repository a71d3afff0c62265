//! Watches, leases and locks end to end, against real `nacre serve`
//! processes: a watch that sees every write once and in order, one that
//! resumes across a `kill -9` of the node it watches, lease expiry,
//! `nacre lock` running a command with its fencing token, two contenders
//! that never hold a lock together, and a holder stopped (SIGSTOP) past
//! its lease whose fenced write is refused once it runs again.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{exit_code, nacre, ok, wait_for, ServerProc, NACRE};
use nacre_client::{Bytes, Client, ClientOptions, KeySpan, WatchEvent, WatchOptions, WatchStream};

/// The exit codes of docs/cli.md this file checks.
const EXIT_NOT_FOUND: i32 = 2;
const EXIT_FENCED: i32 = 7;
const EXIT_LEASE_NOT_FOUND: i32 = 9;

/// `nacre --endpoints E ARGS...` that must end within 60 s (commands that
/// wait for a lock are not bounded by `--timeout-ms`): exit code, stdout,
/// stderr. Killed, and the test failed, if it runs longer.
fn nacre_within(e: &str, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(NACRE)
        .args(["--endpoints", e, "--timeout-ms", "20000"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "nacre {args:?} still running after 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`nacre_within`], which must succeed; its stdout.
fn ok_within(e: &str, args: &[&str]) -> String {
    let (code, out, err) = nacre_within(e, args);
    assert_eq!(code, 0, "nacre {args:?}: {err}");
    out
}

/// A process group: continued and killed when dropped, so that a failed
/// test leaves no stopped process behind.
struct Group(u32);

impl Group {
    /// Sends `signal` to every process of the group.
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{}", self.0)])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} -{}", self.0);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for signal in ["-CONT", "-KILL"] {
            let _ = Command::new("kill")
                .args([signal, "--", &format!("-{}", self.0)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn connect(endpoints: Vec<String>) -> Client {
    Client::connect(ClientOptions::new(endpoints))
        .await
        .unwrap()
}

/// Takes events from the watch until `n` came (60 s at most).
async fn take(w: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    common::watch::take(w, n, Duration::from_secs(60)).await
}

/// Each write (key, log index) shows up once, in index order.
fn assert_each_once_in_order(events: &[WatchEvent], writes: &[(String, u64)]) {
    let seen: Vec<(String, u64)> = events
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.key).into_owned(), e.revision()))
        .collect();
    let mut want = writes.to_vec();
    want.sort_by_key(|w| w.1);
    assert_eq!(seen.len(), want.len(), "duplicates or missing events");
    assert_eq!(seen, want);
}

/// Writes `n` keys `PREFIX/NNNN` through `c`; their log indexes.
async fn write_keys(c: Client, prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, u64)> {
    let mut done = Vec::new();
    for i in range {
        let k = format!("{prefix}/{i:04}");
        let index = c.set(k.clone(), "v").await.unwrap();
        done.push((k, index));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_every_write_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let c = connect(vec![server.addr.clone()]).await;
    let from = c.set("before", "x").await.unwrap() + 1;
    let opts = WatchOptions {
        start_rev: from,
        ..WatchOptions::default()
    };
    let mut w = c.watch(KeySpan::Prefix(Bytes::from("w/")), opts);
    let writer = tokio::spawn(write_keys(c.clone(), "w", 0..200));
    // Writes outside the prefix are not reported.
    for i in 0..20 {
        c.set(format!("other/{i}"), "x").await.unwrap();
    }
    let events = take(&mut w, 200).await;
    let writes = writer.await.unwrap();
    assert_each_once_in_order(&events, &writes);

    // The CLI prints the same changes, one line each.
    let mut cli = Command::new(NACRE)
        .args(["--endpoints", &server.addr, "watch", "--prefix", "w/"])
        .args(["--from-rev", &from.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = cli.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines() {
            if tx.send(l.unwrap()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while lines.len() < 200 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = cli.kill();
    let _ = cli.wait();
    assert_eq!(lines.len(), 200, "nacre watch printed {lines:?}");
    assert_eq!(lines[0], format!("PUT\tw/0000\tv\t{}", writes[0].1));
    assert_eq!(lines[199], format!("PUT\tw/0199\tv\t{}", writes[199].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_a_kill_9_of_the_node_it_watches() {
    let mut cl = Cluster::start(3, "").await;
    let writer_client = cl.client(cl.endpoints()).await;
    let from = writer_client.set("start", "x").await.unwrap() + 1;
    let watcher = cl.client(cl.endpoints()).await;
    let opts = WatchOptions {
        start_rev: from,
        ..WatchOptions::default()
    };
    let mut w = watcher.watch(KeySpan::Prefix(Bytes::from("k/")), opts);
    let writer = tokio::spawn(write_keys(writer_client, "k", 0..300));
    let mut events = take(&mut w, 100).await;
    let (addr, _) = watcher.connected_to().expect("the watch's connection");
    let name = cl
        .names()
        .into_iter()
        .find(|n| cl.client_addr(n) == addr)
        .unwrap();
    cl.kill9(&name);
    events.extend(take(&mut w, 200).await);
    let writes = writer.await.unwrap();
    assert_each_once_in_order(&events, &writes);
    let other = watcher.connected_to().unwrap().0;
    assert_ne!(other, addr, "the watch resumed on another node");
}

#[test]
fn lease_expiry_deletes_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let e = server.addr.as_str();
    let id = ok(e, &["lease", "grant", "1"]).trim().to_string();
    ok(e, &["set", "leased", "v", "--lease", &id]);
    ok(e, &["set", "kept", "v"]);
    assert!(ok(e, &["lease", "ttl", &id, "--keys"]).contains("leased"));
    assert_eq!(ok(e, &["get", "leased"]), "v\n");
    wait_for("the lease to expire and take its key", || {
        nacre(e, &["get", "leased"]).0 == EXIT_NOT_FOUND
    });
    assert_eq!(nacre(e, &["lease", "ttl", &id]).0, EXIT_LEASE_NOT_FOUND);
    assert_eq!(
        nacre(e, &["set", "k", "v", "--lease", &id]).0,
        EXIT_LEASE_NOT_FOUND
    );
    assert_eq!(ok(e, &["get", "kept"]), "v\n");
    // A waiting read returns once the key is written.
    let addr = server.addr.clone();
    let waiting = std::thread::spawn(move || nacre(&addr, &["get", "late", "--wait-for-key"]));
    std::thread::sleep(Duration::from_millis(300));
    ok(e, &["set", "late", "here"]);
    let (code, out, err) = waiting.join().unwrap();
    assert_eq!((code, out.as_str()), (0, "here\n"), "{err}");
}

#[test]
fn a_range_read_waits_for_a_change_after_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let e = server.addr.as_str();
    ok(e, &["set", "r/a", "old"]);
    ok(e, &["set", "s", "outside"]);
    let rev = ok(e, &["get-entry", "s", "--json"]);
    let rev: serde_json::Value = serde_json::from_str(rev.trim()).unwrap();
    let rev = rev["mod_rev"].as_u64().expect("mod_rev").to_string();
    // A change before `rev` (r/a) does not end the wait, one after does;
    // a key past the inclusive end (r/zz) is outside the range.
    let addr = server.addr.clone();
    let args = [
        "range-entries",
        "--first",
        "r/",
        "--last",
        "r/z",
        "--last-inclusive",
    ];
    let waiting = std::thread::spawn(move || {
        let mut a = args.to_vec();
        a.extend(["--wait-rev", rev.as_str()]);
        nacre(&addr, &a)
    });
    std::thread::sleep(Duration::from_millis(300));
    ok(e, &["set", "r/zz", "past the end"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "a change outside the range ended the wait"
    );
    ok(e, &["set", "r/z", "new"]);
    let (code, out, err) = waiting.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("r/z") && out.contains("r/a"), "{out}");
    // Nothing changes in time: a typed timeout (exit 10).
    let timed_out = Command::new(NACRE)
        .args(["--endpoints", e, "--timeout-ms", "300"])
        .args([
            "range-entries",
            "--first",
            "q/",
            "--last",
            "q0",
            "--wait-for-key",
        ])
        .output()
        .unwrap();
    assert_eq!(
        timed_out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&timed_out.stderr)
    );
}

#[test]
fn nacre_lock_runs_a_command_with_its_token_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let e = server.addr.as_str();
    let out = ok(
        e,
        &[
            "lock",
            "job",
            "--",
            "sh",
            "-c",
            "echo $NACRE_LOCK_TOKEN $NACRE_LOCK_KEY",
        ],
    );
    let mut parts = out.split_whitespace();
    let token: u64 = parts.next().unwrap().parse().unwrap();
    assert!(token > 0);
    assert!(parts.next().unwrap().starts_with("job/"));
    assert_eq!(ok(e, &["prefix-keys", "job/"]), "", "released");
    // The command's status is the exit code.
    let (code, _, _) = nacre_within(e, &["lock", "job", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);
    // A token fences writes: a later holder's is newer.
    let later: u64 = ok(
        e,
        &["lock", "job", "--", "sh", "-c", "echo $NACRE_LOCK_TOKEN"],
    )
    .trim()
    .parse()
    .unwrap();
    assert!(later > token);
    let fence = format!("job:{token}");
    assert_eq!(
        nacre(e, &["set", "out", "v", "--fence", &fence]).0,
        EXIT_FENCED
    );
}

#[test]
fn two_contenders_never_hold_a_lock_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let held = dir.path().join("held");
    // mkdir fails if the other contender is inside too.
    let script = format!(
        "mkdir {0} || exit 99; echo $NACRE_LOCK_TOKEN; sleep 0.5; rmdir {0}",
        held.display()
    );
    let addr = Arc::new(server.addr.clone());
    let contenders: Vec<_> = (0..3)
        .map(|_| {
            let (addr, script) = (addr.clone(), script.clone());
            std::thread::spawn(move || {
                nacre_within(&addr, &["lock", "mutex", "--", "sh", "-c", &script])
            })
        })
        .collect();
    let mut tokens = BTreeSet::new();
    for c in contenders {
        let (code, out, err) = c.join().unwrap();
        assert_eq!(code, 0, "a contender found the lock held: {err}");
        tokens.insert(out.trim().to_string());
    }
    assert_eq!(tokens.len(), 3, "each holder had a token of its own");
}

#[test]
fn a_holder_stopped_past_its_ttl_is_fenced_when_it_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let e = server.addr.as_str();
    let token_file = dir.path().join("token");
    // The holder writes its token, sleeps past its 1 s lease (stopped
    // meanwhile), then tries a fenced write; its exit code is the write's.
    let script = format!(
        "echo $NACRE_LOCK_TOKEN > {t}.tmp && mv {t}.tmp {t}; sleep 3; \
         \"$NACRE\" --endpoints {e} set out late --fence res:$NACRE_LOCK_TOKEN",
        t = token_file.display()
    );
    let mut holder = Command::new(NACRE)
        .args(["--endpoints", e, "lock", "res", "--ttl", "1", "--"])
        .args(["sh", "-c", &script])
        .env("NACRE", NACRE)
        .process_group(0)
        .spawn()
        .unwrap();
    let group = Group(holder.id());
    wait_for("the holder's token", || token_file.exists());
    group.signal("STOP");
    let stopped = Instant::now();
    // Another takes the lock once the stopped holder's lease expired.
    let out = ok_within(
        e,
        &["lock", "res", "--", "sh", "-c", "\"$0\" --endpoints $1 set out second --fence res:$NACRE_LOCK_TOKEN && echo $NACRE_LOCK_TOKEN", NACRE, e],
    );
    // Renewed at most a third of the TTL before it stopped: its lease
    // lasted at least two thirds of it after.
    assert!(
        stopped.elapsed() >= Duration::from_millis(600),
        "the lock was taken while its holder's lease still ran"
    );
    let first: u64 = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The last line: what `set` prints comes before the token.
    let second: u64 = out.trim().lines().last().unwrap().parse().unwrap();
    assert!(second > first);
    group.signal("CONT");
    let code = exit_code(&mut holder, "the holder", Duration::from_secs(30));
    assert_eq!(
        code,
        Some(EXIT_FENCED),
        "the paused holder's write was not fenced"
    );
    assert_eq!(ok(e, &["get", "out"]), "second\n");
}
