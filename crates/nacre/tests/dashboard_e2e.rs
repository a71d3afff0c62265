//! The web dashboard in a real browser (docs/operations.md, "Dashboard";
//! docs/testing.md): three `nacre serve` processes, a follower's dashboard
//! open in headless Chromium driven over the DevTools protocol. The page
//! shows the three members and the leader; keys with markup in them and
//! binary values show as text, never as markup; after `kill -9` of the
//! leader the same page (refreshing itself, not reloaded) shows the new
//! leader and the old one unreachable. A screenshot is saved as a CI
//! artefact: `target/ci-artifacts/dashboard.png`.
//!
//! Chromium is `/usr/bin/chromium` (or `NACRE_CHROMIUM`); without it the
//! test says so and passes, unless `NACRE_REQUIRE_CHROMIUM=1` (CI), where
//! it fails. `NACRE_DASHBOARD_RUNS=N` also loads the page N times in fresh
//! tabs and prints the page weight and the median times to first paint
//! and to members shown (docs/benchmarks.md).

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ServerProc;
use nacre_client::{Client, ClientOptions};
use serde_json::{json, Value};
use tungstenite::WebSocket;

/// How long a DevTools call or a wait on the page may take at most.
const WAIT_MAX_MS: u64 = 30_000;

fn chromium_path() -> Option<PathBuf> {
    let path = std::env::var("NACRE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    Path::new(&path).exists().then(|| PathBuf::from(path))
}

/// Headless Chromium with a fresh profile, killed when dropped.
struct Browser {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(path: &Path) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let log = std::fs::File::create(dir.path().join("chromium.log")).unwrap();
        let child = Command::new(path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut b = Browser {
            child,
            port: 0,
            dir,
        };
        // Chromium writes the port it picked to DevToolsActivePort.
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_millis(WAIT_MAX_MS);
        b.port = loop {
            let text = std::fs::read_to_string(&active).unwrap_or_default();
            if let Some(port) = text.lines().next().and_then(|l| l.parse().ok()) {
                break port;
            }
            assert!(Instant::now() < deadline, "no DevTools port:\n{}", b.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default()
    }

    /// A new tab, and a DevTools connection to it.
    fn new_tab(&self) -> Cdp {
        let version = http_get(self.port, "/json/version");
        let browser_ws = version["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let mut browser = Cdp::connect(&browser_ws);
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let id = target["targetId"].as_str().unwrap();
        let mut tab = Cdp::connect(&format!("ws://127.0.0.1:{}/devtools/page/{id}", self.port));
        let size =
            json!({ "width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false });
        tab.call("Emulation.setDeviceMetricsOverride", size);
        tab
    }
}

/// A GET of the DevTools HTTP endpoint, as JSON. Chromium keeps the
/// connection open whatever the request says: the body ends at its
/// `Content-Length`.
fn http_get(port: u16, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(WAIT_MAX_MS)))
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a Content-Length");
            if raw.len() >= split + 4 + length {
                return serde_json::from_slice(&raw[split + 4..split + 4 + length]).unwrap();
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "DevTools closed the connection early");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// One DevTools protocol connection: calls by id, events skipped.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let rest = url.strip_prefix("ws://").unwrap();
        let host = rest.split('/').next().unwrap();
        let stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(WAIT_MAX_MS)))
            .unwrap();
        let (ws, _) = tungstenite::client::client(url, stream).unwrap();
        Cdp { ws, next_id: 1 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(msg.to_string().into()).unwrap();
        loop {
            let text = match self.ws.read().unwrap() {
                tungstenite::Message::Text(t) => t,
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] != id {
                continue; // an event
            }
            assert!(v["error"].is_null(), "{method}: {}", v["error"]);
            return v["result"].clone();
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let params = json!({ "expression": expr, "returnByValue": true, "awaitPromise": true });
        let r = self.call("Runtime.evaluate", params);
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Polls `expr` until it is true, for at most [`WAIT_MAX_MS`].
    fn wait_true(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_millis(WAIT_MAX_MS);
        loop {
            if self.eval(expr) == Value::Bool(true) {
                return;
            }
            let page = self.eval("document.body ? document.body.innerText : ''");
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page:\n{page}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&mut self, selector: &str) -> String {
        let expr = format!("document.querySelector({selector:?}).textContent");
        self.eval(&expr).as_str().unwrap_or_default().to_string()
    }
}

/// Three nodes, each with its admin listener at a known free port (the
/// `admin` of its `[[nodes]]` entry, which the others ask for
/// `/api/cluster`).
fn start_cluster(dir: &Path) -> (Vec<ServerProc>, nacre_server::ServerConfig) {
    let (config, cfg) = common::init_cluster(dir, 3, "tick_ms = 50");
    let mut text = std::fs::read_to_string(&config).unwrap();
    let base = common::free_ports(3);
    for (i, n) in cfg.nodes.iter().enumerate() {
        let old = format!("admin = {:?}", n.admin.as_deref().unwrap());
        let new = format!("admin = \"127.0.0.1:{}\"", base + i as u16);
        assert!(text.contains(&old), "no {old} in the config");
        text = text.replace(&old, &new);
    }
    std::fs::write(&config, &text).unwrap();
    let cfg = nacre_server::ServerConfig::from_toml(&text).unwrap();
    let procs = cfg
        .nodes
        .iter()
        .map(|n| {
            let admin = n.admin.as_deref().unwrap();
            ServerProc::start_member(&config, &n.name, &["--admin-listen", admin])
        })
        .collect();
    (procs, cfg)
}

/// Keys the page must show as text: markup in a key and a value, and a
/// value that is not UTF-8.
const XSS_KEY: &str = "xss/<script>window.pwned=1</script>";
const XSS_VALUE: &str = "<img src=x onerror=\"window.pwned=2\">";
const BINARY_VALUE: [u8; 5] = [0xff, 0xfe, 0x00, b'<', 0x80];

/// Writes the keys the page shows, and returns the leader's name.
fn write_keys_and_find_leader(cfg: &nacre_server::ServerConfig) -> String {
    let endpoints: Vec<String> = cfg.nodes.iter().map(|n| n.client.clone()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut opts = ClientOptions::new(endpoints);
        opts.request_timeout_ms = 20_000;
        let c = Client::connect(opts).await.unwrap();
        c.set(XSS_KEY, XSS_VALUE).await.unwrap();
        c.set("xss/binary", Bytes::from_static(&BINARY_VALUE))
            .await
            .unwrap();
        c.script_put("greet", "function hello(w) return 'hello ' .. w end")
            .await
            .unwrap();
        c.who_master().await.unwrap().expect("a leader")
    })
}

/// The key browser shows markup as text and binary values as base64.
fn check_escaping(tab: &mut Cdp) {
    tab.eval(
        "document.getElementById('prefix').value = 'xss/'; \
         document.getElementById('keys-form').requestSubmit(); true",
    );
    tab.wait_true(
        "document.querySelectorAll('#keys tbody tr').length === 2",
        "two keys",
    );
    let keys = tab.eval(
        "Array.from(document.querySelectorAll('#keys tbody tr')).map(tr => \
         [tr.cells[0].textContent, tr.cells[1].textContent])",
    );
    let binary = base64_of(&BINARY_VALUE);
    let rows = keys.as_array().unwrap();
    // Row order is key order: "xss/<..." sorts before "xss/b".
    assert_eq!(rows[0], json!([XSS_KEY, XSS_VALUE]), "{keys}");
    assert_eq!(
        rows[1],
        json!(["xss/binary", format!("base64{binary}")]),
        "{keys}"
    );
    let markup = tab.eval("document.querySelectorAll('#keys script, #keys img').length");
    assert_eq!(markup, 0, "markup from the data became elements");
    assert_eq!(tab.eval("typeof window.pwned"), "undefined");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Where CI keeps what a run leaves for people to look at.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("ci-artifacts")
}

fn save_screenshot(tab: &mut Cdp) -> PathBuf {
    let shot = tab.call(
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true }),
    );
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, png).unwrap();
    path
}

#[test]
fn the_dashboard_follows_a_leader_change_live() {
    let Some(chromium) = chromium_path() else {
        let required = std::env::var("NACRE_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "NACRE_REQUIRE_CHROMIUM=1 but no Chromium at /usr/bin/chromium or NACRE_CHROMIUM"
        );
        eprintln!("skipped: no Chromium (install Debian's chromium, or set NACRE_CHROMIUM)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut procs, cfg) = start_cluster(dir.path());
    let leader = write_keys_and_find_leader(&cfg);
    let names: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
    // A follower's page survives the leader's death.
    let follower = cfg.nodes.iter().find(|n| n.name != leader).unwrap();
    let url = format!("http://{}/", follower.admin.as_deref().unwrap());

    let browser = Browser::launch(&chromium);
    let mut tab = browser.new_tab();
    tab.navigate(&url);
    tab.wait_true(
        "document.querySelectorAll('#members tbody tr').length === 3",
        "three members",
    );
    tab.wait_true(
        &format!("document.getElementById('leader').textContent === {leader:?}"),
        "the leader's name",
    );
    assert_eq!(tab.eval("location.pathname"), "/dashboard");
    let shown = tab.eval(
        "Array.from(document.querySelectorAll('#members tbody tr')).map(tr => tr.dataset.name).sort()",
    );
    assert_eq!(shown, json!(names));
    let leader_row =
        format!("document.querySelector('#members tr.leader').dataset.name === {leader:?}");
    assert_eq!(tab.eval(&leader_row), true);
    check_escaping(&mut tab);
    tab.wait_true(
        "Array.from(document.querySelectorAll('#scripts tbody tr')).some(tr => \
         tr.cells[0].textContent === 'greet' && tr.cells[1].textContent === '1')",
        "the installed script",
    );

    // The page is not reloaded from here on: a mark set now must survive.
    tab.eval("window.sameLoad = 'mark'; true");
    let i = procs
        .iter()
        .position(|p| p.addr == cfg.nodes.iter().find(|n| n.name == leader).unwrap().client)
        .unwrap();
    procs.remove(i).kill9();
    let new_leader = format!(
        "(() => {{ const l = document.getElementById('leader').textContent; \
         return l !== {leader:?} && {names:?}.includes(l); }})()"
    );
    tab.wait_true(&new_leader, "a new leader on the page");
    let old_row = format!(
        "document.querySelector('#members tr[data-name={leader:?}] .role').textContent === 'unreachable'"
    );
    tab.wait_true(&old_row, "the old leader shown unreachable");
    assert_eq!(tab.eval("window.sameLoad"), "mark", "the page was reloaded");
    let now_leader = tab.text("#leader");
    // The leader-change timeline shows the new leader too.
    tab.wait_true(
        &format!("Array.from(document.querySelectorAll('#leader-changes li')).some(li => li.dataset.leader === {now_leader:?})"),
        "the new leader in the timeline",
    );
    let path = save_screenshot(&mut tab);
    eprintln!(
        "dashboard: leader {leader} killed, page shows {now_leader}; screenshot at {}",
        path.canonicalize().unwrap().display()
    );
    measure_if_asked(&browser, &url);
}

/// With `NACRE_DASHBOARD_RUNS=N`: N loads in fresh tabs; prints the page
/// weight and the medians of first contentful paint and members shown.
fn measure_if_asked(browser: &Browser, url: &str) {
    let Some(runs) = std::env::var("NACRE_DASHBOARD_RUNS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
    else {
        return;
    };
    let (mut fcp, mut members, mut weight) = (Vec::new(), Vec::new(), Value::Null);
    for _ in 0..runs {
        let mut tab = browser.new_tab();
        tab.navigate(url);
        tab.wait_true(
            "typeof window.nacreMembersShownMs === 'number'",
            "members shown",
        );
        let m = tab.eval(
            "(() => { const nav = performance.getEntriesByType('navigation')[0]; \
             const res = performance.getEntriesByType('resource') \
               .filter(r => r.name.includes('/dashboard/')); \
             const all = [nav, ...res]; \
             const fcp = performance.getEntriesByName('first-contentful-paint')[0]; \
             return { fcp_ms: fcp ? fcp.startTime : null, members_ms: window.nacreMembersShownMs, \
               decoded_bytes: all.reduce((s, r) => s + r.decodedBodySize, 0), \
               transferred_bytes: all.reduce((s, r) => s + r.transferSize, 0), files: all.length }; })()",
        );
        fcp.push(m["fcp_ms"].as_f64().unwrap_or(f64::NAN));
        members.push(m["members_ms"].as_f64().unwrap());
        weight = m;
        tab.call("Page.close", json!({}));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "dashboard over {runs} loads: first contentful paint median {:.0} ms, members shown median {:.0} ms; \
         page weight {} bytes decoded, {} bytes transferred, {} files",
        median(&mut fcp),
        median(&mut members),
        weight["decoded_bytes"],
        weight["transferred_bytes"],
        weight["files"]
    );
}
