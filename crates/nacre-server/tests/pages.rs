//! Range and prefix reads in pages, and replies that would not fit in a
//! frame, over raw protocol frames: a reply says whether more results
//! follow (clamped by `range_results_max`, by the query's `max` or cut
//! before the frame limit), a client that continues after the last key
//! gets every key once, a multi-get too large for a frame is refused with
//! `TooLarge` (not sent as a frame the client must drop), and a protocol
//! version 1 client still gets the replies it knows.

use bytes::{Bytes, BytesMut};
use nacre_proto::{
    decode_response, encode_request, split_frame, Batch, ClientHello, Consistency, ErrorCode,
    KeyEntry, Op, Page, RangeQuery, Request, Response, ServerHello, PROTOCOL_VERSION,
};
use nacre_server::{RunningServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const C: Consistency = Consistency::Consistent;

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

/// A bare connection speaking protocol `version`.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
}

impl Conn {
    async fn open(server: &RunningServer, version: u16) -> (Conn, ServerHello) {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut out = Vec::new();
        ClientHello {
            version,
            cluster_id: String::new(),
        }
        .encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        let hello = loop {
            if let Some((h, _)) = ServerHello::decode(&buf).unwrap() {
                break h;
            }
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let conn = Conn {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        };
        (conn, hello)
    }

    /// The reply to `req`. Frames are accepted up to 64 MiB, far over the
    /// server's limit, so that an oversized reply would show up here as
    /// what it is rather than as a refused frame.
    async fn call(&mut self, req: Request) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        encode_request(id, &req, &mut out);
        self.stream.write_all(&out).await.unwrap();
        loop {
            if let Some((got, body)) = split_frame(&mut self.buf, 64 << 20).unwrap() {
                assert_eq!(got, id);
                return decode_response(body).unwrap();
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "server closed the connection");
        }
    }

    /// One batch of sets (small values: it must fit in one frame).
    async fn set_all(&mut self, pairs: impl IntoIterator<Item = (Bytes, Bytes)>) {
        let batch = Batch {
            guards: vec![],
            ops: pairs.into_iter().map(|(k, v)| Op::Set(k, v)).collect(),
        };
        let r = self.call(Request::Batch(batch)).await;
        assert!(matches!(r, Response::Written { .. }), "{r:?}");
    }

    /// Sets each key to `size` bytes, one request each.
    async fn set_each(&mut self, keys: &[Bytes], size: usize) {
        for k in keys {
            let r = self
                .call(Request::Set {
                    key: k.clone(),
                    value: Bytes::from(vec![b'v'; size]),
                })
                .await;
            assert!(matches!(r, Response::Written { .. }), "{r:?}");
        }
    }
}

fn keys(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| b(&format!("k{i:03}"))).collect()
}

/// Keys from `k` (inclusive) up to `l` (exclusive): every `k...` key.
fn k_range(reverse: bool) -> RangeQuery {
    RangeQuery {
        first: Some(b("k")),
        first_inclusive: true,
        last: Some(b("l")),
        last_inclusive: false,
        max: u32::MAX,
        reverse,
    }
}

fn key_page(r: Response) -> Page<Bytes> {
    match r {
        Response::KeyPage(p) => p,
        r => panic!("expected a page of keys, got {r:?}"),
    }
}

fn entry_page(r: Response) -> Page<KeyEntry> {
    match r {
        Response::EntryPage(p) => p,
        r => panic!("expected a page of entries, got {r:?}"),
    }
}

/// Continues `q` after `key`, in its direction.
fn after(q: &RangeQuery, key: &Bytes) -> RangeQuery {
    let mut q = q.clone();
    if q.reverse {
        q.last = Some(key.clone());
        q.last_inclusive = false;
    } else {
        q.first = Some(key.clone());
        q.first_inclusive = false;
    }
    q
}

/// Every key of `q`, page after page, and the size of each page.
async fn page_through_keys(c: &mut Conn, mut q: RangeQuery) -> (Vec<Bytes>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = key_page(
            c.call(Request::Range {
                consistency: C,
                query: q.clone(),
            })
            .await,
        );
        sizes.push(page.items.len());
        all.extend(page.items.iter().cloned());
        match page.next_after() {
            Some(last) => q = after(&q, last),
            None => return (all, sizes),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_over_more_keys_than_range_results_max_says_more_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.range_results_max = 40;
    let server = nacre_server::start(cfg).await.unwrap();
    let (mut c, hello) = Conn::open(&server, PROTOCOL_VERSION).await;
    assert_eq!((hello.status, hello.version), (0, PROTOCOL_VERSION));
    let ks = keys(100);
    // Keys on both sides of the range must not leak into it.
    let outside = [b("a"), b("l"), b("z")];
    c.set_all(ks.iter().chain(&outside).map(|k| (k.clone(), b("v"))))
        .await;

    let (got, sizes) = page_through_keys(&mut c, k_range(false)).await;
    assert_eq!(got, ks);
    assert_eq!(sizes, vec![40, 40, 20]);

    // Descending, entries, continuing below the last key.
    let mut q = k_range(true);
    let mut got = Vec::new();
    loop {
        let page = entry_page(
            c.call(Request::RangeEntries {
                consistency: C,
                query: q.clone(),
            })
            .await,
        );
        assert!(page.items.len() <= 40);
        got.extend(page.items.iter().map(|e| e.key.clone()));
        match page.next_after() {
            Some(last) => q = after(&q, last),
            None => break,
        }
    }
    assert_eq!(got, ks.iter().rev().cloned().collect::<Vec<_>>());

    // A prefix read is clamped the same way and says so.
    let page = key_page(
        c.call(Request::PrefixKeys {
            consistency: C,
            prefix: b("k"),
            max: 1000,
        })
        .await,
    );
    assert_eq!((page.items.as_slice(), page.more), (&ks[..40], true));
    // The query's own max leaves keys out too: more says so.
    let mut q = k_range(false);
    q.max = 99;
    let page = key_page(
        c.call(Request::Range {
            consistency: C,
            query: q,
        })
        .await,
    );
    assert_eq!((page.items.len(), page.more), (40, true));
    // A last page that ends exactly at the range's last key says no more.
    let q = after(&k_range(false), &ks[59]);
    let page = key_page(
        c.call(Request::Range {
            consistency: C,
            query: q,
        })
        .await,
    );
    assert_eq!((page.items.as_slice(), page.more), (&ks[60..], false));
    server.shutdown().await.unwrap();
}

/// Limits small enough to reach with a few values: a frame of 48 KiB, a
/// value of at most 40 KiB.
fn small_frames(dir: &std::path::Path) -> ServerConfig {
    let mut cfg = config(dir);
    cfg.frame_size_max_bytes = 48 << 10;
    cfg.value_size_max_bytes = 40 << 10;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_stops_before_its_reply_would_go_over_the_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_frames(dir.path());
    let frame_max = cfg.frame_size_max_bytes;
    let server = nacre_server::start(cfg).await.unwrap();
    let (mut c, _) = Conn::open(&server, PROTOCOL_VERSION).await;
    let ks = keys(10);
    // Two 20,000-byte values fit in a frame, three do not.
    c.set_each(&ks, 20_000).await;
    let mut q = k_range(false);
    let mut got = Vec::new();
    loop {
        let resp = c
            .call(Request::RangeEntries {
                consistency: C,
                query: q.clone(),
            })
            .await;
        assert!(resp.frame_length() <= frame_max, "{}", resp.frame_length());
        let page = entry_page(resp);
        assert_eq!(page.items.len(), 2);
        got.extend(page.items.iter().map(|e| e.key.clone()));
        match page.next_after() {
            Some(last) => q = after(&q, last),
            None => break,
        }
    }
    assert_eq!(got, ks);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_get_over_the_frame_limit_is_too_large_and_the_connection_stays() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(small_frames(dir.path())).await.unwrap();
    let (mut c, _) = Conn::open(&server, PROTOCOL_VERSION).await;
    let ks = keys(3);
    c.set_each(&ks, 20_000).await;
    for req in [
        Request::MultiGet {
            consistency: C,
            keys: ks.clone(),
        },
        Request::MultiGetOption {
            consistency: C,
            keys: ks.clone(),
        },
    ] {
        match c.call(req).await {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::TooLarge);
                // Which limit, and what to do instead.
                assert!(
                    e.message.contains("frame_size_max_bytes 49152"),
                    "{}",
                    e.message
                );
                assert!(e.message.contains("fewer keys"), "{}", e.message);
            }
            r => panic!(
                "expected too_large, got a reply of {} bytes",
                r.frame_length()
            ),
        }
    }
    // Two of them fit; the connection is still there to ask.
    let r = c
        .call(Request::MultiGet {
            consistency: C,
            keys: ks[..2].to_vec(),
        })
        .await;
    assert!(matches!(r, Response::Values(vs) if vs.len() == 2));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_client_gets_the_replies_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.range_results_max = 2;
    let server = nacre_server::start(cfg).await.unwrap();
    let (mut c, hello) = Conn::open(&server, 1).await;
    // The server answers in the client's version.
    assert_eq!((hello.status, hello.version), (0, 1));
    let ks = keys(3);
    c.set_all(ks.iter().map(|k| (k.clone(), b("v")))).await;
    let r = c
        .call(Request::Range {
            consistency: C,
            query: k_range(false),
        })
        .await;
    assert_eq!(r, Response::Keys(ks[..2].to_vec()));
    let r = c
        .call(Request::RangeEntries {
            consistency: C,
            query: k_range(false),
        })
        .await;
    assert!(matches!(r, Response::Entries(es) if es.len() == 2));
    let r = c
        .call(Request::PrefixKeys {
            consistency: C,
            prefix: b("k"),
            max: 10,
        })
        .await;
    assert_eq!(r, Response::Keys(ks[..2].to_vec()));

    // A version this node does not know yet is refused, naming the range.
    let (_, hello) = Conn::open(&server, PROTOCOL_VERSION + 1).await;
    assert_eq!(hello.status, ErrorCode::UnsupportedVersion.to_u16());
    assert!(hello.message.contains("1 to 2"), "{}", hello.message);
    server.shutdown().await.unwrap();
}
