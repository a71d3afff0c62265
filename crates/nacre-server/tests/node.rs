//! The node end to end over raw protocol frames: one in-process server,
//! a bare-bones connection written from nacre-proto alone (the client
//! library is tested separately), and every request's meaning.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nacre_proto::{
    decode_response, encode_request, split_frame, Batch, ClientHello, Consistency, ErrorCode,
    Guard, Op, Page, RangeQuery, Request, Response, ServerHello, PROTOCOL_VERSION,
};
use nacre_server::{RunningServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        ..Default::default()
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
}

impl Conn {
    async fn open(server: &RunningServer, cluster: &str) -> Result<Conn, ServerHello> {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut out = Vec::new();
        ClientHello {
            version: PROTOCOL_VERSION,
            cluster_id: cluster.into(),
        }
        .encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        let hello = loop {
            if let Some((h, used)) = ServerHello::decode(&buf).unwrap() {
                assert_eq!(used, buf.len());
                break h;
            }
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        if hello.status != 0 {
            return Err(hello);
        }
        Ok(Conn {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        })
    }

    async fn send(&mut self, req: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        encode_request(id, req, &mut out);
        self.stream.write_all(&out).await.unwrap();
        id
    }

    /// The next reply, or `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<(u64, Response)> {
        loop {
            if let Some((id, body)) = split_frame(&mut self.buf, 64 << 20).unwrap() {
                return Some((id, decode_response(body).unwrap()));
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    async fn call(&mut self, req: Request) -> Response {
        let id = self.send(&req).await;
        let (got, resp) = self.recv().await.expect("reply");
        assert_eq!(got, id);
        resp
    }
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

const C: Consistency = Consistency::Consistent;

fn written_index(r: &Response) -> u64 {
    match r {
        Response::Written { index, .. } => *index,
        r => panic!("expected a write result, got {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_revisions_mean_what_the_protocol_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut c = Conn::open(&server, "nacre").await.unwrap();

    assert!(matches!(c.call(Request::Ping).await, Response::Text(t) if t.starts_with("nacre")));
    assert!(
        matches!(c.call(Request::Version).await, Response::Version(v) if v.info.contains("protocol 2"))
    );
    assert_eq!(
        c.call(Request::WhoMaster).await,
        Response::Master(Some("nacre0".into()))
    );

    let i1 = written_index(
        &c.call(Request::Set {
            key: b("a"),
            value: b("1"),
        })
        .await,
    );
    assert_eq!(
        c.call(Request::Get {
            consistency: C,
            key: b("a")
        })
        .await,
        Response::Value(Some(b("1")))
    );
    let missing = c
        .call(Request::Get {
            consistency: C,
            key: b("zz"),
        })
        .await;
    match &missing {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::NotFound);
            assert_eq!(e.key, Some(b("zz")));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.call(Request::Exists {
            consistency: C,
            key: b("a")
        })
        .await,
        Response::Bool(true)
    );
    assert_eq!(
        c.call(Request::Exists {
            consistency: Consistency::Any,
            key: b("b")
        })
        .await,
        Response::Bool(false)
    );

    // Revisions.
    let i2 = written_index(
        &c.call(Request::Set {
            key: b("a"),
            value: b("2"),
        })
        .await,
    );
    assert!(i2 > i1);
    match c
        .call(Request::GetEntry {
            consistency: C,
            key: b("a"),
        })
        .await
    {
        Response::Entry(Some(e)) => {
            assert_eq!(
                (e.rev.create_rev, e.rev.mod_rev, e.rev.version),
                (i1, i2, 2)
            );
        }
        r => panic!("{r:?}"),
    }

    // Read-your-writes at a level any node can serve, and its refusal.
    let txid = match c.call(Request::GetTxid).await {
        Response::U64(t) => t,
        r => panic!("{r:?}"),
    };
    assert!(txid >= i2);
    assert_eq!(
        c.call(Request::Get {
            consistency: Consistency::AtLeast(i2),
            key: b("a")
        })
        .await,
        Response::Value(Some(b("2")))
    );
    let ahead = c
        .call(Request::Get {
            consistency: Consistency::AtLeast(txid + 1000),
            key: b("a"),
        })
        .await;
    assert_eq!(code(&ahead), Some(ErrorCode::InconsistentRead));

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_and_set_replace_and_confirm_mean_what_the_protocol_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut c = Conn::open(&server, "nacre").await.unwrap();
    c.call(Request::Set {
        key: b("a"),
        value: b("2"),
    })
    .await;

    // test_and_set: swaps only on a match, and always reports what it found.
    let r = c
        .call(Request::TestAndSet {
            key: b("a"),
            expected: Some(b("nope")),
            wanted: Some(b("3")),
        })
        .await;
    assert!(matches!(r, Response::Written { prev: Some(ref p), .. } if p == &b("2")));
    assert_eq!(
        c.call(Request::Get {
            consistency: C,
            key: b("a")
        })
        .await,
        Response::Value(Some(b("2")))
    );
    let r = c
        .call(Request::TestAndSet {
            key: b("a"),
            expected: Some(b("2")),
            wanted: Some(b("3")),
        })
        .await;
    assert!(matches!(r, Response::Written { prev: Some(ref p), .. } if p == &b("2")));
    let r = c
        .call(Request::TestAndSet {
            key: b("n"),
            expected: None,
            wanted: Some(b("new")),
        })
        .await;
    assert!(matches!(r, Response::Written { prev: None, .. }));
    let r = c
        .call(Request::TestAndSet {
            key: b("n"),
            expected: Some(b("new")),
            wanted: None,
        })
        .await;
    assert!(matches!(r, Response::Written { prev: Some(_), .. }));
    assert_eq!(
        c.call(Request::Exists {
            consistency: C,
            key: b("n")
        })
        .await,
        Response::Bool(false)
    );

    // replace and confirm.
    let r = c
        .call(Request::Replace {
            key: b("a"),
            wanted: Some(b("4")),
        })
        .await;
    assert!(matches!(r, Response::Written { prev: Some(ref p), .. } if p == &b("3")));
    let before = written_index(
        &c.call(Request::Confirm {
            key: b("a"),
            value: b("4"),
        })
        .await,
    );
    match c
        .call(Request::GetEntry {
            consistency: C,
            key: b("a"),
        })
        .await
    {
        // Confirming the same value wrote nothing: the version stays.
        Response::Entry(Some(e)) => assert!(e.rev.mod_rev <= before),
        r => panic!("{r:?}"),
    }
    c.call(Request::Confirm {
        key: b("a"),
        value: b("5"),
    })
    .await;
    assert_eq!(
        c.call(Request::Get {
            consistency: C,
            key: b("a")
        })
        .await,
        Response::Value(Some(b("5")))
    );

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gets_and_ranges_mean_what_the_protocol_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut c = Conn::open(&server, "nacre").await.unwrap();

    // multi_get names the missing key; multi_get_option does not fail.
    for k in ["k1", "k2", "k3", "other"] {
        c.call(Request::Set {
            key: b(k),
            value: b(&format!("v-{k}")),
        })
        .await;
    }
    let r = c
        .call(Request::MultiGet {
            consistency: C,
            keys: vec![b("k1"), b("k9"), b("k2")],
        })
        .await;
    match r {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::NotFound);
            assert_eq!(e.key, Some(b("k9")));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.call(Request::MultiGetOption {
            consistency: C,
            keys: vec![b("k1"), b("k9")]
        })
        .await,
        Response::OptValues(vec![Some(b("v-k1")), None])
    );
    assert_eq!(
        c.call(Request::MultiGet {
            consistency: C,
            keys: vec![b("k2"), b("k1")]
        })
        .await,
        Response::Values(vec![b("v-k2"), b("v-k1")])
    );

    // Ranges.
    let q = RangeQuery {
        first: Some(b("k1")),
        first_inclusive: true,
        last: Some(b("k3")),
        last_inclusive: false,
        max: 10,
        reverse: false,
    };
    assert_eq!(
        c.call(Request::Range {
            consistency: C,
            query: q.clone()
        })
        .await,
        Response::KeyPage(Page {
            items: vec![b("k1"), b("k2")],
            more: false
        })
    );
    match c
        .call(Request::RangeEntries {
            consistency: C,
            query: RangeQuery {
                reverse: true,
                last_inclusive: true,
                ..q.clone()
            },
        })
        .await
    {
        Response::EntryPage(Page { items: es, more }) => {
            assert!(!more);
            let keys: Vec<_> = es.iter().map(|e| e.key.clone()).collect();
            assert_eq!(keys, vec![b("k3"), b("k2"), b("k1")]);
            assert_eq!(es[0].value, b("v-k3"));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.call(Request::PrefixKeys {
            consistency: C,
            prefix: b("k"),
            max: 2
        })
        .await,
        Response::KeyPage(Page {
            items: vec![b("k1"), b("k2")],
            more: true
        })
    );
    assert_eq!(
        c.call(Request::KeyCount { consistency: C }).await,
        Response::U64(4)
    );
    let r = c.call(Request::DeletePrefix { prefix: b("k") }).await;
    assert!(matches!(r, Response::Written { count: 3, .. }));
    assert_eq!(
        c.call(Request::KeyCount { consistency: C }).await,
        Response::U64(1)
    );

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_sequences_mean_what_the_protocol_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut c = Conn::open(&server, "nacre").await.unwrap();
    c.call(Request::Set {
        key: b("other"),
        value: b("v-other"),
    })
    .await;

    // delete: a missing key is NotFound, as in Arakoon.
    c.call(Request::Set {
        key: b("a"),
        value: b("5"),
    })
    .await;
    assert!(matches!(
        c.call(Request::Delete { key: b("a") }).await,
        Response::Written { .. }
    ));
    assert_eq!(
        code(&c.call(Request::Delete { key: b("a") }).await),
        Some(ErrorCode::NotFound)
    );

    // A sequence is all or nothing, and names the key of a failed assert.
    let seq = Batch {
        guards: vec![],
        ops: vec![
            Op::Set(b("s1"), b("x")),
            Op::Check(Guard::ValueEquals(b("other"), b("v-other"))),
            Op::Set(b("s2"), b("y")),
            Op::Check(Guard::Absent(b("s1"))),
        ],
    };
    match c.call(Request::Batch(seq)).await {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::AssertionFailed);
            assert_eq!(e.key, Some(b("s1")));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        c.call(Request::Exists {
            consistency: C,
            key: b("s1")
        })
        .await,
        Response::Bool(false)
    );
    assert_eq!(
        c.call(Request::Exists {
            consistency: C,
            key: b("s2")
        })
        .await,
        Response::Bool(false)
    );
    let seq = Batch {
        guards: vec![Guard::VersionEquals(b("other"), 1)],
        ops: vec![Op::Set(b("s1"), b("x")), Op::Delete(b("other"))],
    };
    assert!(matches!(
        c.call(Request::Batch(seq)).await,
        Response::Written { .. }
    ));
    assert_eq!(
        c.call(Request::Exists {
            consistency: C,
            key: b("other")
        })
        .await,
        Response::Bool(false)
    );
    assert!(matches!(
        c.call(Request::Nop).await,
        Response::Written { .. }
    ));

    match c.call(Request::Statistics).await {
        Response::Stats(kv) => {
            let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(get("role").as_deref(), Some("leader"));
            assert_eq!(get("key_count").as_deref(), Some("1"));
            assert!(get("tlog_fsyncs").unwrap().parse::<u64>().unwrap() > 0);
        }
        r => panic!("{r:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.key_size_max_bytes = 16;
    cfg.value_size_max_bytes = 64;
    cfg.frame_size_max_bytes = 4096;
    cfg.batch_ops_max = 3;
    cfg.multi_get_keys_max = 2;
    cfg.range_results_max = 2;
    cfg.connections_max = 2;
    let server = nacre_server::start(cfg).await.unwrap();
    let mut c = Conn::open(&server, "").await.unwrap();
    let long_key = Bytes::from(vec![b'k'; 17]);
    assert_eq!(
        code(
            &c.call(Request::Set {
                key: long_key.clone(),
                value: b("v")
            })
            .await
        ),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(
        code(
            &c.call(Request::Get {
                consistency: C,
                key: long_key
            })
            .await
        ),
        Some(ErrorCode::TooLarge)
    );
    let r = c
        .call(Request::Set {
            key: b("k"),
            value: Bytes::from(vec![0u8; 65]),
        })
        .await;
    assert_eq!(code(&r), Some(ErrorCode::TooLarge));
    let big = Batch {
        guards: vec![],
        ops: (0..4).map(|i| Op::Set(b(&i.to_string()), b("v"))).collect(),
    };
    assert_eq!(
        code(&c.call(Request::Batch(big)).await),
        Some(ErrorCode::TooLarge)
    );
    let r = c
        .call(Request::MultiGetOption {
            consistency: C,
            keys: vec![b("a"), b("b"), b("c")],
        })
        .await;
    assert_eq!(code(&r), Some(ErrorCode::TooLarge));
    for k in ["a", "b", "c"] {
        c.call(Request::Set {
            key: b(k),
            value: b("v"),
        })
        .await;
    }
    // A range asks for more than the server gives: clamped, not refused,
    // and the reply says so.
    let q = RangeQuery {
        first: None,
        first_inclusive: true,
        last: None,
        last_inclusive: true,
        max: 100,
        reverse: false,
    };
    assert_eq!(
        c.call(Request::Range {
            consistency: C,
            query: q
        })
        .await,
        Response::KeyPage(Page {
            items: vec![b("a"), b("b")],
            more: true
        })
    );

    // A connection beyond connections_max is refused at the handshake.
    let _second = Conn::open(&server, "").await.unwrap();
    let third = Conn::open(&server, "").await;
    assert_eq!(
        third.err().map(|h| h.status),
        Some(ErrorCode::Busy.to_u16())
    );

    // An oversized frame is refused from its header and the connection closed.
    let mut frame = Vec::new();
    frame.extend_from_slice(&(1_000_000u32).to_le_bytes());
    frame.extend_from_slice(&7u64.to_le_bytes());
    c.stream.write_all(&frame).await.unwrap();
    let (_, r) = c.recv().await.expect("an error reply before the close");
    assert_eq!(code(&r), Some(ErrorCode::TooLarge));
    assert!(c.recv().await.is_none(), "connection must be closed");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_and_wrong_cluster_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let refused = Conn::open(&server, "another-cluster").await;
    assert_eq!(
        refused.err().map(|h| h.status),
        Some(ErrorCode::WrongCluster.to_u16())
    );

    // Not a Nacre client at all: refused, closed.
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let (hello, _) = ServerHello::decode(&reply).unwrap().unwrap();
    assert_eq!(hello.status, ErrorCode::BadInput.to_u16());

    // A well-framed but undecodable request: an error naming it, then close.
    let mut c = Conn::open(&server, "").await.unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&9u32.to_le_bytes());
    frame.extend_from_slice(&42u64.to_le_bytes());
    frame.push(200);
    c.stream.write_all(&frame).await.unwrap();
    let (id, r) = c.recv().await.unwrap();
    assert_eq!(id, 42);
    assert_eq!(code(&r), Some(ErrorCode::BadInput));
    assert!(c.recv().await.is_none());

    // The server is unharmed.
    let mut c = Conn::open(&server, "nacre").await.unwrap();
    assert!(matches!(c.call(Request::Ping).await, Response::Text(_)));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_all_get_their_own_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let mut c = Conn::open(&server, "").await.unwrap();
    let n = 500u64;
    let mut ids = std::collections::HashMap::new();
    for i in 0..n {
        let req = if i % 2 == 0 {
            Request::Set {
                key: b(&format!("p{i}")),
                value: b(&i.to_string()),
            }
        } else {
            Request::Exists {
                consistency: C,
                key: b("p0"),
            }
        };
        ids.insert(c.send(&req).await, i);
    }
    let mut seen = 0;
    while seen < n {
        let (id, r) = c.recv().await.unwrap();
        let i = ids
            .remove(&id)
            .expect("a reply for a request we sent, once");
        if i % 2 == 0 {
            assert!(matches!(r, Response::Written { .. }), "{r:?}");
        } else {
            assert!(matches!(r, Response::Bool(_)), "{r:?}");
        }
        seen += 1;
    }
    // Pipelined writes share fsyncs: far fewer than one per write.
    match c.call(Request::Statistics).await {
        Response::Stats(kv) => {
            let fsyncs: u64 = kv
                .iter()
                .find(|(k, _)| k == "tlog_fsyncs")
                .unwrap()
                .1
                .parse()
                .unwrap();
            assert!(fsyncs < n / 2, "{fsyncs} fsyncs for {} writes", n / 2);
        }
        r => panic!("{r:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Small checkpoints so the restart replays part of the tlog and
    // compaction runs.
    cfg.checkpoint_entries = 7;
    let server = nacre_server::start(cfg.clone()).await.unwrap();
    let mut c = Conn::open(&server, "").await.unwrap();
    let mut last = 0;
    for i in 0..50 {
        last = written_index(
            &c.call(Request::Set {
                key: b(&format!("r{i:02}")),
                value: b(&i.to_string()),
            })
            .await,
        );
    }
    c.call(Request::Delete { key: b("r00") }).await;
    server.shutdown().await.unwrap();

    let server = nacre_server::start(cfg).await.unwrap();
    let mut c = Conn::open(&server, "").await.unwrap();
    assert_eq!(
        c.call(Request::KeyCount { consistency: C }).await,
        Response::U64(49)
    );
    assert_eq!(
        c.call(Request::Get {
            consistency: C,
            key: b("r49")
        })
        .await,
        Response::Value(Some(b("49")))
    );
    let next = written_index(
        &c.call(Request::Set {
            key: b("after"),
            value: b("x"),
        })
        .await,
    );
    assert!(next > last + 1, "indexes keep growing across restarts");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_test_and_set_never_loses_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path())).await.unwrap();
    let clients = 8;
    let increments = 25;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = Conn::open(&server, "").await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < increments {
                let cur = match c
                    .call(Request::Get {
                        consistency: C,
                        key: b("counter"),
                    })
                    .await
                {
                    Response::Value(v) => v,
                    Response::Error(e) if e.code == ErrorCode::NotFound => None,
                    r => panic!("{r:?}"),
                };
                let n: u64 = cur
                    .as_ref()
                    .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                let r = c
                    .call(Request::TestAndSet {
                        key: b("counter"),
                        expected: cur.clone(),
                        wanted: Some(b(&(n + 1).to_string())),
                    })
                    .await;
                match r {
                    Response::Written { prev, .. } if prev == cur => done += 1,
                    Response::Written { .. } => {}
                    r => panic!("{r:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = Conn::open(&server, "").await.unwrap();
    let want = (clients * increments).to_string();
    assert_eq!(
        c.call(Request::Get {
            consistency: C,
            key: b("counter")
        })
        .await,
        Response::Value(Some(b(&want)))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_mode_backpressure_and_version_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Leadership confirmed by a quorum round per batch of reads.
    cfg.consistent_reads = "read-index".into();
    // Two requests in flight per connection: the rest wait unread.
    cfg.inflight_per_connection_max = 2;
    let server = nacre_server::start(cfg).await.unwrap();
    let mut c = Conn::open(&server, "").await.unwrap();
    let n = 200u64;
    for i in 0..n {
        c.send(&Request::Set {
            key: b(&format!("k{i}")),
            value: b("v"),
        })
        .await;
    }
    let mut got = std::collections::HashSet::new();
    for _ in 0..n {
        let (id, r) = c.recv().await.unwrap();
        assert!(matches!(r, Response::Written { .. }), "{r:?}");
        assert!(got.insert(id));
    }
    assert_eq!(
        c.call(Request::Get {
            consistency: C,
            key: b("k7")
        })
        .await,
        Response::Value(Some(b("v")))
    );
    assert_eq!(
        c.call(Request::KeyCount { consistency: C }).await,
        Response::U64(n)
    );

    // A client speaking another protocol version is refused at the hello.
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut out = Vec::new();
    ClientHello {
        version: PROTOCOL_VERSION + 1,
        cluster_id: String::new(),
    }
    .encode(&mut out);
    s.write_all(&out).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let (hello, _) = ServerHello::decode(&reply).unwrap().unwrap();
    assert_eq!(hello.status, ErrorCode::UnsupportedVersion.to_u16());
    assert!(hello.message.contains("version"), "{}", hello.message);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.consistent_reads = "sometimes".into();
    let e = nacre_server::start(cfg).await.err().expect("refused");
    assert!(e.to_string().contains("consistent_reads"), "{e}");
}
