//! `/metrics` on the admin listener of real nodes: the request histograms
//! count exactly the requests made, by op and outcome; the raft loop's
//! histograms move; the limits are the configured ones; every family of
//! the catalogue is written, in its order, and documented; a leader
//! exports each follower's replication lag.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::wire::Conn;
use nacre_proto::{Batch, Consistency, ErrorCode, Op, Request, Response};
use nacre_server::metrics::catalogue::{self, Kind};
use nacre_server::{RunningServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 GET; the status, the headers (lower-case names) and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(body.len(), len.parse::<usize>().unwrap(), "a whole body");
    }
    (status.parse().unwrap(), headers, body.to_string())
}

/// A scrape, parsed: each sample by its name and labels, and the families
/// in the order their TYPE lines came.
struct Scrape {
    samples: BTreeMap<(String, String), f64>,
    types: Vec<(String, String)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut types = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                types.push((name.to_string(), kind.to_string()));
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("{line}")),
            };
            let key = (name.to_string(), labels.to_string());
            assert!(samples.insert(key, value).is_none(), "twice: {line}");
        }
        Scrape { samples, types }
    }

    /// A sample, with its labels as the encoder writes them.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let key = (name.to_string(), labels.join(","));
        self.samples.get(&key).copied()
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|| panic!("no sample {name}"))
    }

    fn requests(&self, op: &str, outcome: &str) -> f64 {
        let labels = [("op", op), ("outcome", outcome)];
        let count = self.get("nacre_request_duration_seconds_count", &labels);
        let inf = [("op", op), ("outcome", outcome), ("le", "+Inf")];
        let inf = self.get("nacre_request_duration_seconds_bucket", &inf);
        assert_eq!(count, inf, "{op}/{outcome}: _count is the +Inf bucket");
        count.unwrap_or(0.0)
    }

    /// The series of `name` with `label`, by that label's value.
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let prefix = format!("{label}=\"");
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .filter_map(|((_, l), v)| {
                let value = l.strip_prefix(&prefix)?.strip_suffix('"')?;
                Some((value.to_string(), *v))
            })
            .collect()
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, headers, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&body)
}

/// Waits until `/ready` answers 200.
async fn ready(addr: SocketAddr) {
    for _ in 0..400 {
        if http_get(addr, "/ready").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the node did not become ready in 10 s");
}

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        // Figures no default has, to tell a limit from a default.
        connections_max: 77,
        blocking_tasks_max: 5,
        proposals_pending_max: 333,
        watches_max: 44,
        leases_max: 55,
        ..Default::default()
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("k{i}"))
}

/// Sets, gets (found and not), a sequence and a refused request, each
/// counted once under its op and outcome.
async fn traffic(conn: &mut Conn) {
    for i in 0..7 {
        let set = Request::Set {
            key: key(i),
            value: Bytes::from(vec![b'v'; 100]),
        };
        assert!(matches!(conn.call(set).await, Response::Written { .. }));
    }
    for i in 0..5 {
        let get = Request::Get {
            consistency: Consistency::Consistent,
            key: key(i),
        };
        assert!(matches!(conn.call(get).await, Response::Value(Some(_))));
    }
    for _ in 0..3 {
        let get = Request::Get {
            consistency: Consistency::Consistent,
            key: Bytes::from("missing"),
        };
        let r = conn.call(get).await;
        assert!(
            matches!(&r, Response::Error(e) if e.code == ErrorCode::NotFound),
            "{r:?}"
        );
    }
    let seq = Request::Batch(Batch {
        guards: vec![],
        ops: vec![Op::Set(key(100), Bytes::from("a")), Op::Delete(key(0))],
    });
    assert!(matches!(conn.call(seq).await, Response::Written { .. }));
    let put = Request::ScriptPut {
        name: "m".into(),
        source: Bytes::from("function f() return 'x' end"),
    };
    assert!(matches!(conn.call(put).await, Response::Written { .. }));
    let call = Request::Call {
        script: "m".into(),
        function: "f".into(),
        args: vec![],
        version: None,
        consistency: Consistency::Consistent,
    };
    let r = conn.call(call).await;
    assert!(matches!(&r, Response::Called { .. }), "{r:?}");
    // Not a script name: refused before anything runs.
    let call = Request::Call {
        script: String::new(),
        function: "f".into(),
        args: vec![],
        version: None,
        consistency: Consistency::Consistent,
    };
    let r = conn.call(call).await;
    assert!(
        matches!(&r, Response::Error(e) if e.code == ErrorCode::BadInput),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_requests_made_and_show_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server: RunningServer = nacre_server::start(config(dir.path())).await.unwrap();
    let admin = server.admin_addr().expect("the admin listener is on");
    ready(admin).await;
    let before = scrape(admin).await;
    assert_eq!(before.requests("set", "ok"), 0.0);
    let mut conn = Conn::open(server.local_addr()).await;
    traffic(&mut conn).await;
    let m = scrape(admin).await;

    assert_eq!(m.requests("set", "ok"), 7.0);
    assert_eq!(m.requests("get", "ok"), 5.0);
    assert_eq!(m.requests("get", "not_found"), 3.0);
    assert_eq!(m.requests("sequence", "ok"), 1.0);
    assert_eq!(m.requests("call", "bad_input"), 1.0);
    assert_eq!(m.requests("call", "ok"), 1.0);
    assert_eq!(m.requests("script_put", "ok"), 1.0);
    assert_eq!(m.value("nacre_script_runs_total"), 1.0);
    assert_eq!(m.value("nacre_script_run_duration_seconds_count"), 1.0);
    assert_eq!(m.value("nacre_script_budget_exceeded_total"), 0.0);
    assert_eq!(m.requests("get", "timeout"), 0.0);

    // The raft loop's histograms moved: 9 writes (7 sets, a sequence, a
    // script install), each appended, synced and applied (group commit
    // may share an fsync among writes).
    let fsyncs = m.value("nacre_tlog_fsync_duration_seconds_count");
    let fsyncs_before = before.value("nacre_tlog_fsync_duration_seconds_count");
    assert!(fsyncs > fsyncs_before, "{fsyncs_before} -> {fsyncs}");
    assert!(m.value("nacre_tlog_append_duration_seconds_count") >= fsyncs_before + 1.0);
    assert!(m.value("nacre_raft_apply_duration_seconds_count") >= 1.0);
    let applied = m.value("nacre_raft_applied_entries_total")
        - before.value("nacre_raft_applied_entries_total");
    assert!(applied >= 9.0, "{applied}");
    assert!(m.value("nacre_tlog_fsync_duration_seconds_sum") > 0.0);
    assert_eq!(
        m.value("nacre_raft_proposals_total") - before.value("nacre_raft_proposals_total"),
        9.0
    );

    // Limits as configured, depths within them.
    assert_eq!(m.value("nacre_connections_limit"), 77.0);
    assert_eq!(m.value("nacre_connections"), 1.0);
    assert_eq!(m.value("nacre_blocking_tasks_limit"), 5.0);
    assert_eq!(m.value("nacre_blocking_tasks"), 0.0);
    assert_eq!(m.value("nacre_raft_queued_requests_limit"), 333.0);
    assert_eq!(m.value("nacre_raft_queued_requests"), 0.0);
    assert_eq!(m.value("nacre_watches_limit"), 44.0);
    assert_eq!(m.value("nacre_leases_limit"), 55.0);

    // The node leads its one-member cluster, caught up.
    assert!(m.value("nacre_raft_leader_changes_total") >= 1.0);
    assert_eq!(m.value("nacre_raft_is_leader"), 1.0);
    assert_eq!(m.value("nacre_healthy"), 1.0);
    assert_eq!(m.value("nacre_raft_apply_lag_entries"), 0.0);
    let applied_index = m.value("nacre_raft_applied_index");
    assert!(
        applied_index >= 10.0,
        "bootstrap and 9 writes: {applied_index}"
    );
    assert!(m.value("nacre_store_disk_bytes") > 0.0);
    assert!(m.value("nacre_store_live_bytes") > 0.0);
    assert!(m.value("nacre_store_segments") >= 1.0);
    let version = m.by_label("nacre_build_info", "version");
    assert_eq!(version.get(env!("CARGO_PKG_VERSION")), Some(&1.0));
    drop(conn);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_of_the_catalogue_is_written_in_order_and_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let admin = server.admin_addr().unwrap();
    ready(admin).await;
    let m = scrape(admin).await;
    let expected: Vec<(String, String)> = catalogue::ALL
        .iter()
        .map(|f| {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            (f.name.to_string(), kind.to_string())
        })
        .collect();
    assert_eq!(m.types, expected);
    for (name, _) in m.samples.keys() {
        assert!(
            catalogue::ALL.iter().any(|f| name == f.name
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.name))),
            "{name} is not in the catalogue"
        );
    }
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    for f in catalogue::ALL {
        assert!(
            docs.contains(&format!("`{}`", f.name)),
            "docs/operations.md does not list {}",
            f.name
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_exports_each_followers_replication_lag() {
    let dir = tempfile::tempdir().unwrap();
    let servers = common::three_etcd_nodes(dir.path(), config).await;
    let admins: Vec<SocketAddr> = servers.iter().map(|s| s.admin_addr().unwrap()).collect();
    for a in &admins {
        ready(*a).await;
    }
    // Leadership may still settle: look until one node says it leads.
    let mut leader = None;
    for _ in 0..200 {
        for (i, a) in admins.iter().enumerate() {
            if scrape(*a).await.value("nacre_raft_is_leader") == 1.0 {
                leader = Some(i);
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = leader.expect("a leader within 10 s");
    let lag = scrape(admins[leader])
        .await
        .by_label("nacre_raft_replication_lag_entries", "peer");
    let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    let followers: Vec<&String> = names.iter().filter(|n| **n != names[leader]).collect();
    for f in &followers {
        assert!(lag.contains_key(f.as_str()), "no lag for {f}: {lag:?}");
    }
    for (i, a) in admins.iter().enumerate() {
        let m = scrape(*a).await;
        assert!(m.value("nacre_raft_leader_changes_total") >= 1.0, "n{i}");
        if i != leader && m.value("nacre_raft_is_leader") == 0.0 {
            let rows = m.by_label("nacre_raft_replication_lag_entries", "peer");
            assert!(rows.is_empty(), "a follower exports no lag: {rows:?}");
        }
    }
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

/// Calls of the etcd API are counted by method and gRPC code: puts and
/// ranges that succeed, a range of a compacted revision (`out_of_range`)
/// and a revoke of an unknown lease (`not_found`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_calls_are_counted_by_method_and_code() {
    use nacre_etcd_proto::etcdserverpb as pb;
    use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
    use nacre_etcd_proto::etcdserverpb::lease_client::LeaseClient;
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let admin = server.admin_addr().expect("the admin listener is on");
    ready(admin).await;
    let etcd = server.etcd_addr().expect("the etcd API is on");
    let ch = tonic::transport::Channel::from_shared(format!("http://{etcd}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = KvClient::new(ch.clone());
    for i in 0..3 {
        let put = pb::PutRequest {
            key: key(i),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        };
        kv.put(put).await.unwrap();
    }
    let range = pb::RangeRequest {
        key: key(0),
        ..Default::default()
    };
    kv.range(range.clone()).await.unwrap();
    let compact = pb::CompactionRequest {
        revision: 4,
        ..Default::default()
    };
    kv.compact(compact).await.unwrap();
    let old = pb::RangeRequest {
        revision: 2,
        ..range
    };
    let e = kv.range(old).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    let revoke = pb::LeaseRevokeRequest { id: 12_345 };
    let e = LeaseClient::new(ch).lease_revoke(revoke).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    let m = scrape(admin).await;
    let calls = |method: &str, code: &str| {
        let labels = [("method", method), ("code", code)];
        m.get("nacre_etcd_request_duration_seconds_count", &labels)
            .unwrap_or(0.0)
    };
    assert_eq!(calls("KV/Put", "ok"), 3.0);
    assert_eq!(calls("KV/Range", "ok"), 1.0);
    assert_eq!(calls("KV/Range", "out_of_range"), 1.0);
    assert_eq!(calls("KV/Compact", "ok"), 1.0);
    assert_eq!(calls("Lease/LeaseRevoke", "not_found"), 1.0);
    // The native protocol's histograms saw none of them.
    assert_eq!(m.requests("set", "ok"), 0.0);
    server.shutdown().await.unwrap();
}
