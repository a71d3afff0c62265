//! The dashboard's HTTP side on a real single node (docs/operations.md,
//! "Dashboard"): its page and assets, and the JSON reads it polls — keys
//! by prefix in pages with binary values made safe, the scripts list, the
//! ring buffer of samples, and the members' view.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use nacre_client::{Client, ClientOptions};
use nacre_server::{RunningServer, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// One HTTP/1.1 GET: the status code, the headers (lower-cased names) and
/// the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let code = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers, raw[split + 4..].to_vec())
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (code, _, body) = get(addr, path).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (code, v)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _c) = start(dir.path()).await;
    let admin = server.admin_addr().unwrap();
    let (code, headers, _) = get(admin, "/").await;
    assert!((300..400).contains(&code), "/ answered {code}");
    assert_eq!(header(&headers, "location"), "/dashboard");
    let (code, headers, body) = get(admin, "/dashboard").await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert!(header(&headers, "content-security-policy").contains("script-src 'self'"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("/dashboard/app.js") && html.contains("/dashboard/app.css"));
    let (code, headers, js) = get(admin, "/dashboard/app.js").await;
    assert_eq!(code, 200);
    assert!(header(&headers, "content-type").starts_with("text/javascript"));
    // The script never puts data in the page as markup.
    assert!(!String::from_utf8(js).unwrap().contains("innerHTML"));
    let (code, headers, _) = get(admin, "/dashboard/app.css").await;
    assert_eq!(code, 200);
    assert!(header(&headers, "content-type").starts_with("text/css"));
    server.shutdown().await.unwrap();
}

/// Every page of `prefix`, following the cursor, `limit` keys a page.
async fn all_pages(admin: SocketAddr, prefix: &str, limit: u32) -> (Vec<Value>, usize) {
    let (mut keys, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let mut path = format!("/api/keys?prefix={prefix}&limit={limit}");
        if let Some(a) = &after {
            path += &format!("&after_b64={}", a.replace('+', "%2B").replace('/', "%2F"));
        }
        let (code, page) = get_json(admin, &path).await;
        assert_eq!(code, 200, "{page}");
        pages += 1;
        let items = page["keys"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        keys.extend(items.iter().cloned());
        if !page["more"].as_bool().unwrap() {
            return (keys, pages);
        }
        after = Some(page["next_after_b64"].as_str().unwrap().to_string());
        assert!(pages < 100, "the cursor does not advance");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_by_prefix_in_pages_with_binary_values_made_safe() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let admin = server.admin_addr().unwrap();
    for i in 0..7 {
        c.set(format!("dash/{i}"), format!("value {i}"))
            .await
            .unwrap();
    }
    let second = c.set("dash/3", "again").await.unwrap();
    c.set("dash/bin", vec![0xffu8, 0x00, 0x01]).await.unwrap();
    c.set("dash/long", vec![b'x'; 5_000]).await.unwrap();
    c.set("dasi", "outside the prefix").await.unwrap();
    c.set("other", "outside the prefix").await.unwrap();

    let (keys, pages) = all_pages(admin, "dash/", 3).await;
    assert_eq!(pages, 3);
    let names: Vec<&str> = keys
        .iter()
        .map(|k| k["key"]["data"].as_str().unwrap())
        .collect();
    let want = [
        "dash/0",
        "dash/1",
        "dash/2",
        "dash/3",
        "dash/4",
        "dash/5",
        "dash/6",
        "dash/bin",
        "dash/long",
    ];
    assert_eq!(names, want);
    let by = |name: &str| keys.iter().find(|k| k["key"]["data"] == name).unwrap();
    let rewritten = by("dash/3");
    assert_eq!(rewritten["value"]["data"], "again");
    assert_eq!(rewritten["mod_revision"], second);
    assert_eq!(rewritten["version"], 2);
    assert!(rewritten["create_revision"].as_u64().unwrap() < second);
    let bin = &by("dash/bin")["value"];
    assert_eq!(bin["encoding"], "base64");
    assert_eq!(unb64(bin["data"].as_str().unwrap()), [0xff, 0x00, 0x01]);
    let long = &by("dash/long")["value"];
    assert_eq!(
        (long["len"].as_u64(), long["truncated"].as_bool()),
        (Some(5_000), Some(true))
    );
    assert!(long["data"].as_str().unwrap().len() < 5_000);

    // A binary prefix, and a cursor past the prefix's end.
    let (code, page) = get_json(admin, &format!("/api/keys?prefix_b64={}", b64(b"dash/b"))).await;
    assert_eq!(code, 200);
    assert_eq!(page["keys"].as_array().unwrap().len(), 1);
    let past = format!("/api/keys?prefix=dash/&after_b64={}", b64(b"dash0"));
    assert_eq!(
        get_json(admin, &past).await.1["keys"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Bad input is a 400 with the reason.
    let (code, body) = get_json(admin, "/api/keys?after_b64=%21%21").await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().contains("base64"), "{body}");
    let (_, big) = get_json(admin, "/api/keys?limit=100000").await;
    assert_eq!(big["limit"], 500);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_with_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let admin = server.admin_addr().unwrap();
    let (_, empty) = get_json(admin, "/api/scripts").await;
    assert_eq!(empty["scripts"].as_array().unwrap().len(), 0);
    c.script_put("greet", "function hello(w) return 'hello ' .. w end")
        .await
        .unwrap();
    c.script_put("greet", "function hello(w) return 'hi ' .. w end")
        .await
        .unwrap();
    c.script_put("count", "function n() return 1 end")
        .await
        .unwrap();
    let (code, list) = get_json(admin, "/api/scripts").await;
    assert_eq!(code, 200);
    let rows: Vec<(&str, u64, u64)> = list["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let n = |f: &str| s[f].as_u64().unwrap();
            (s["name"].as_str().unwrap(), n("live"), n("latest"))
        })
        .collect();
    assert_eq!(rows, [("count", 1, 1), ("greet", 2, 2)]);
    assert_eq!(list["more"], false);
    server.shutdown().await.unwrap();
}

/// Polls `path` until `f` holds of its JSON, for at most 30 s.
async fn wait_json(admin: SocketAddr, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v) = get_json(admin, path).await;
        if code == 200 && f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_grow_and_count_requests_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let admin = server.admin_addr().unwrap();
    let first = wait_json(admin, "/api/samples", "a first sample", |v| {
        !v["samples"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(first["samples_max"], 600);
    let n = first["samples"].as_array().unwrap().len();
    // Requests while the sampler runs: some second counts them, with a
    // latency.
    let busy = async {
        for i in 0..200 {
            c.set("k", i.to_string()).await.unwrap();
        }
    };
    busy.await;
    let v = wait_json(admin, "/api/samples", "a sample with requests", |v| {
        let s = v["samples"].as_array().unwrap();
        s.len() > n
            && s.iter()
                .any(|s| s["requests_per_s"].as_f64().unwrap() > 0.0)
    })
    .await;
    let samples = v["samples"].as_array().unwrap();
    let busy = samples
        .iter()
        .find(|s| s["requests_per_s"].as_f64().unwrap() > 0.0)
        .unwrap();
    assert!(busy["latency_p50_ms"].as_f64().unwrap() > 0.0, "{busy}");
    assert!(busy["latency_p99_ms"].as_f64() >= busy["latency_p50_ms"].as_f64());
    assert!(samples
        .iter()
        .any(|s| s["applied_per_s"].as_f64().unwrap() > 0.0));
    let last = samples.last().unwrap();
    assert_eq!(
        (last["role"].as_str(), last["leader"].as_str()),
        (Some("leader"), Some("nacre0"))
    );
    let changes = v["leader_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["leader"], "nacre0");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_holds_this_node() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _c) = start(dir.path()).await;
    let admin = server.admin_addr().unwrap();
    let (code, v) = get_json(admin, "/api/cluster").await;
    assert_eq!(code, 200);
    assert_eq!(v["node"], "nacre0");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    let m = &members[0];
    assert_eq!(
        (m["name"].as_str(), m["this_node"].as_bool()),
        (Some("nacre0"), Some(true))
    );
    assert_eq!(m["status"]["role"], "leader");
    assert!(m["error"].is_null());
    server.shutdown().await.unwrap();
}
