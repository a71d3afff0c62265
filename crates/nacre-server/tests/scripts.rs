//! Lua user functions on a real single node, through the client library:
//! install, versions, errors, concurrency and a live update under load.

use std::sync::Arc;

use bytes::Bytes;
use nacre_client::{Client, ClientError, ClientOptions, ErrorCode};
use nacre_proto::{Batch, Op, Request};
use nacre_server::{RunningServer, ServerConfig};

async fn start(dir: &std::path::Path) -> (RunningServer, Client) {
    let server = nacre_server::start(ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = Client::connect(ClientOptions::new([server.local_addr().to_string()]))
        .await
        .unwrap();
    (server, client)
}

fn code(e: ClientError) -> (ErrorCode, String) {
    match e {
        ClientError::Server(e) => (e.code, e.message),
        e => panic!("expected a server error, got {e}"),
    }
}

fn example(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../examples/scripts/{name}.lua",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

fn args(a: &[&str]) -> Vec<Bytes> {
    a.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn install_versions_rollback_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let v1 = "function hello(who) return 'hello ' .. who end";
    let v2 = "function hello(who) return 'hi ' .. who end";
    assert_eq!(c.script_put("greet", v1).await.unwrap(), 1);
    let r = c
        .call("greet", "hello", args(&["bob"]), None)
        .await
        .unwrap();
    assert_eq!((r.version, r.value), (1, Some(Bytes::from("hello bob"))));
    // A new version is live with no restart.
    assert_eq!(c.script_put("greet", v2).await.unwrap(), 2);
    let r = c
        .call("greet", "hello", args(&["bob"]), None)
        .await
        .unwrap();
    assert_eq!((r.version, r.value), (2, Some(Bytes::from("hi bob"))));
    // Pinning runs an older version.
    let r = c
        .call("greet", "hello", args(&["bob"]), Some(1))
        .await
        .unwrap();
    assert_eq!(r.value, Some(Bytes::from("hello bob")));
    // A syntax error is refused at install; version 2 stays live.
    let (code_, msg) = code(c.script_put("greet", "function hello(").await.unwrap_err());
    assert_eq!(code_, ErrorCode::ScriptError);
    assert!(
        msg.contains("syntax error") && msg.contains("greet:1:"),
        "{msg}"
    );
    let r = c.call("greet", "hello", args(&["x"]), None).await.unwrap();
    assert_eq!(r.version, 2);
    // Rollback, show, history, list.
    assert_eq!(c.script_rollback("greet", 1).await.unwrap(), 1);
    let r = c.call("greet", "hello", args(&["x"]), None).await.unwrap();
    assert_eq!((r.version, r.value), (1, Some(Bytes::from("hello x"))));
    let shown = c.script_show("greet", None).await.unwrap();
    assert_eq!((shown.version, shown.live), (1, true));
    assert_eq!(shown.source, Bytes::from(v1));
    let shown = c.script_show("greet", Some(2)).await.unwrap();
    assert_eq!((shown.source, shown.live), (Bytes::from(v2), false));
    let h = c.script_history("greet").await.unwrap();
    assert_eq!(
        h.iter().map(|v| (v.version, v.live)).collect::<Vec<_>>(),
        vec![(1, true), (2, false)]
    );
    assert_eq!(
        code(c.script_rollback("greet", 9).await.unwrap_err()).0,
        ErrorCode::NotFound
    );
    let l = c.script_list().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].name.as_str(), l[0].live, l[0].latest),
        ("greet", 1, 2)
    );
    // Script keys are not user keys.
    assert_eq!(c.key_count().await.unwrap(), 0);
    // Delete: uncallable, history kept, numbering goes on.
    assert_eq!(c.script_delete("greet").await.unwrap(), 1);
    let (code_, msg) = code(c.call("greet", "hello", vec![], None).await.unwrap_err());
    assert_eq!(code_, ErrorCode::NotFound);
    assert!(msg.contains("not found"), "{msg}");
    assert_eq!(c.script_put("greet", v1).await.unwrap(), 3);
    assert!(c.script_put("bad name!", v1).await.is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_reach_the_caller_and_harm_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let src = "function boom()\n  error('kaboom')\nend\nfunction spin() while true do end end\nfunction hog() local t = {} for i = 1, 1e8 do t[i] = i end end\nfunction refuse() nacre.check(false, 'no way') end\nfunction setit(k, v) kv.set(k, v) return 'ok' end\n";
    c.script_put("e", src).await.unwrap();
    let cases = [
        ("boom", ErrorCode::ScriptError, "e:2: kaboom"),
        ("spin", ErrorCode::BudgetExceeded, "instruction budget"),
        ("hog", ErrorCode::BudgetExceeded, "memory budget"),
        ("refuse", ErrorCode::AssertionFailed, "e:6: no way"),
        ("nope", ErrorCode::NotFound, "\"nope\" not found"),
    ];
    for (f, want, text) in cases {
        let (got, msg) = code(c.call("e", f, vec![], None).await.unwrap_err());
        assert_eq!(got, want, "{f}: {msg}");
        assert!(msg.contains(text), "{f}: {msg}");
    }
    let (got, _) = code(c.call("missing", "f", vec![], None).await.unwrap_err());
    assert_eq!(got, ErrorCode::NotFound);
    // The node still serves, scripts included.
    let r = c.call("e", "setit", args(&["k", "v"]), None).await.unwrap();
    assert_eq!(r.value, Some(Bytes::from("ok")));
    assert_eq!(c.get("k").await.unwrap(), Bytes::from("v"));
    // A client cannot smuggle script ops into a batch.
    let smuggled = Request::Batch(Batch {
        guards: vec![],
        ops: vec![Op::ScriptDelete(Bytes::from("e"))],
    });
    assert_eq!(
        code(c.execute(smuggled).await.unwrap_err()).0,
        ErrorCode::BadInput
    );
    server.shutdown().await.unwrap();
}

/// Increments per client; `NACRE_SCRIPT_INCREMENTS=1000` runs the full
/// figure of the issue.
fn increments() -> u64 {
    std::env::var("NACRE_SCRIPT_INCREMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.script_put("arith64", example("arith64")).await.unwrap();
    let clients = 64;
    let n = increments();
    let addr = server.local_addr().to_string();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new([addr])).await.unwrap();
            let mut conflicts = 0u64;
            let mut done = 0;
            while done < n {
                match c.call("arith64", "incr", args(&["counter"]), None).await {
                    Ok(_) => done += 1,
                    // Lost the race on every retry: not applied, so ask again.
                    Err(ClientError::Server(e)) if e.code == ErrorCode::Conflict => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = c
        .call("arith64", "get", args(&["counter"]), None)
        .await
        .unwrap();
    assert_eq!(r.value, Some(Bytes::from((clients * n).to_string())));
    let raw = c.get("counter").await.unwrap();
    assert_eq!(raw, Bytes::copy_from_slice(&(clients * n).to_le_bytes()));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_under_load_switches_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    // Each version writes its own tag to two keys and returns it: a call
    // that mixed versions would leave or return mismatched tags.
    let version = |tag: &str| {
        format!(
            "local TAG = '{tag}'\nfunction bump(k)\n  local n = tonumber(kv.get(k .. '/n') or '0') + 1\n  kv.set(k .. '/n', tostring(n))\n  kv.set(k .. '/a', TAG)\n  kv.set(k .. '/b', TAG)\n  return TAG\nend\n"
        )
    };
    assert_eq!(c.script_put("tagged", version("v1")).await.unwrap(), 1);
    let addr = server.local_addr().to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let addr = addr.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new([addr])).await.unwrap();
            let key = format!("k{i}");
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.call("tagged", "bump", args(&[&key]), None).await.unwrap();
                seen.push((r.version, r.index, r.value.unwrap()));
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let installed = c.write(Request::ScriptPut {
        name: "tagged".into(),
        source: Bytes::from(version("v2")),
    });
    let installed = installed.await.unwrap();
    assert_eq!(installed.count, 2);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut old, mut new) = (0, 0);
    for t in tasks {
        for (version, index, value) in t.await.unwrap() {
            assert_eq!(value, Bytes::from(format!("v{version}")));
            // No effects of version 1 land after version 2 went live.
            if index > installed.index {
                assert_eq!(
                    version, 2,
                    "v1 applied at {index} after v2 at {}",
                    installed.index
                );
                new += 1;
            } else {
                assert_eq!(version, 1);
                old += 1;
            }
        }
    }
    assert!(
        old > 0 && new > 0,
        "load ran across the update: {old} old, {new} new"
    );
    for i in 0..16 {
        let a = c.get(format!("k{i}/a")).await.unwrap();
        let b = c.get(format!("k{i}/b")).await.unwrap();
        assert_eq!(a, b);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn examples_run_on_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.script_put("update_max", example("update_max"))
        .await
        .unwrap();
    c.script_put("shared_log", example("shared_log"))
        .await
        .unwrap();
    let um = |v: &'static str| c.call("update_max", "update_max", args(&["m", v]), None);
    assert_eq!(um("5").await.unwrap().value, Some(Bytes::from("5")));
    let r = um("3").await.unwrap();
    assert_eq!(r.value, Some(Bytes::from("5")));
    let log = |f: &'static str, a: &'static [&'static str]| c.call("shared_log", f, args(a), None);
    log("write", &["L", "0", "0", "a"]).await.unwrap();
    log("write", &["L", "0", "3", "b"]).await.unwrap();
    let (got, msg) = code(log("write", &["L", "0", "3", "c"]).await.unwrap_err());
    assert_eq!(got, ErrorCode::AssertionFailed);
    assert!(msg.contains("already written"), "{msg}");
    assert_eq!(
        log("seal", &["L", "1"]).await.unwrap().value,
        Some(Bytes::from("3"))
    );
    let (_, msg) = code(log("write", &["L", "0", "4", "d"]).await.unwrap_err());
    assert!(msg.contains("stale epoch"), "{msg}");
    assert_eq!(
        log("read", &["L", "3"]).await.unwrap().value,
        Some(Bytes::from("b"))
    );
    server.shutdown().await.unwrap();
}

/// Calls/s of `arith64.incr` against the built-in `set` of the same key
/// space, 64 clients, one node. In CI it runs a few calls per client and
/// checks the counts; the measurement is, in release:
/// `NACRE_SCRIPT_BENCH_OPS=500 cargo test --release -p nacre-server --test scripts -- --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn bench_script_call_vs_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.script_put("arith64", example("arith64")).await.unwrap();
    let addr = server.local_addr().to_string();
    let clients = 64;
    let per_client: u64 = std::env::var("NACRE_SCRIPT_BENCH_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for mode in ["set", "incr", "get"] {
        let t0 = std::time::Instant::now();
        let mut tasks = Vec::new();
        for i in 0..clients {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let c = Client::connect(ClientOptions::new([addr])).await.unwrap();
                // One key per client: measures the call path, not contention.
                let key = format!("c{i}");
                for n in 0..per_client {
                    match mode {
                        "set" => {
                            c.set(key.clone(), Bytes::copy_from_slice(&n.to_le_bytes()))
                                .await
                                .unwrap();
                        }
                        "incr" => {
                            c.call("arith64", "incr", args(&[&key]), None)
                                .await
                                .unwrap();
                        }
                        _ => {
                            c.call("arith64", "get", args(&[&key]), None).await.unwrap();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{mode}: {:.0} ops/s ({} ops in {secs:.2} s)",
            (clients as u64 * per_client) as f64 / secs,
            clients as u64 * per_client
        );
    }
    // `set` left n-1 in each key and `incr` added one per call.
    for i in [0, clients - 1] {
        let v = c.get(format!("c{i}")).await.unwrap();
        let n = u64::from_le_bytes(v[..8].try_into().unwrap());
        assert_eq!(n, per_client - 1 + per_client, "key c{i}");
    }
    server.shutdown().await.unwrap();
}

/// Scripts that each burn the whole instruction budget (10 million Lua
/// instructions), two per async worker, must not stall other connections:
/// ten pings sent one after another while the scripts run again and again
/// take, all together, less time than one script call. (When calls ran on
/// the async workers, every ping waited for a script to finish, and ten
/// of them took several script durations.) The comparison is between two
/// durations of the same run, so the machine's speed cancels out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_script_does_not_stall_other_connections() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.script_put(
        "spin",
        "function spin() local x = 0 while true do x = x + 1 end end",
    )
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    const SPINNERS: usize = 4;
    let (started_tx, mut started) = tokio::sync::mpsc::channel::<()>(SPINNERS);
    let mut spinners = Vec::new();
    // Twice as many as the async workers, so that without a blocking pool
    // a script is always waiting for a worker ahead of a ping.
    for _ in 0..SPINNERS {
        let client = Client::connect(ClientOptions::new([addr.clone()]))
            .await
            .unwrap();
        let (stop, started_tx) = (stop.clone(), started_tx.clone());
        spinners.push(tokio::spawn(async move {
            let mut durations = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (code_, msg) =
                    code(client.call("spin", "spin", vec![], None).await.unwrap_err());
                assert_eq!(code_, ErrorCode::BudgetExceeded, "{msg}");
                durations.push(t.elapsed());
                let _ = started_tx.try_send(());
            }
            durations
        }));
    }
    // Every spinner has finished a call: from now on all are in Lua.
    for _ in 0..SPINNERS {
        started.recv().await.unwrap();
    }
    let pinger = Client::connect(ClientOptions::new([addr])).await.unwrap();
    let mut pings = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        pinger.ping().await.unwrap();
        pings += t.elapsed();
    }
    stop.store(true, Ordering::Relaxed);
    let mut script_min = Duration::MAX;
    for s in spinners {
        script_min = script_min.min(s.await.unwrap().into_iter().min().unwrap());
    }
    eprintln!("ten pings took {pings:?} in all; the shortest script call {script_min:?}");
    assert!(
        pings < script_min,
        "the pings waited for scripts: {pings:?} for ten, a script call {script_min:?}"
    );
    server.shutdown().await.unwrap();
}

/// A script that reads a corrupt stored value is answered `corruption`
/// (the store's verdict, kept through the script layer), not an internal
/// error and never the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_reading_a_corrupt_value_is_answered_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A 3-byte user value: shorter than the revision every stored
        // value starts with.
        let store = nacre_store::Store::open(dir.path().join("store"), Default::default()).unwrap();
        let mut txn = store.begin_write().unwrap();
        txn.put(b"ubad", b"abc").unwrap();
        txn.commit().unwrap();
    }
    let (server, c) = start(dir.path()).await;
    c.script_put("peek", "function peek(k) return kv.get(k) end")
        .await
        .unwrap();
    let (code_, msg) = code(
        c.call("peek", "peek", args(&["bad"]), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, ErrorCode::Corruption, "{msg}");
    assert!(msg.contains("bad"), "{msg}");
    server.shutdown().await.unwrap();
}
