//! `serve` (what `nacre serve` runs) ends when the node can no longer
//! serve: a node whose raft loop failed or panicked exits with why,
//! instead of living on with its client port up, answering every request
//! with `GoingDown`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nacre_proto::{
    decode_response, encode_request, split_frame, ClientHello, ErrorCode, Request, Response,
    ServerHello, PROTOCOL_VERSION,
};
use nacre_server::{FailureKind, ServerConfig, ServerError};
use nacre_vfs::{OsVfs, VFile, Vfs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_the_error_that_stopped_the_raft_loop() {
    let dir = tempfile::tempdir().unwrap();
    // The node's peer port is held by someone else, as when an outgoing
    // connection took it: the loop cannot listen there and stops.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = taken.local_addr().unwrap().to_string();
    let text = format!(
        "cluster_id = \"c\"\n\
         [[nodes]]\nname = \"n1\"\nclient = \"127.0.0.1:0\"\npeer = \"{peer}\"\ndata_dir = {:?}\n\
         [[nodes]]\nname = \"n2\"\nclient = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\ndata_dir = {:?}\n",
        dir.path().join("n1").display().to_string(),
        dir.path().join("n2").display().to_string(),
    );
    let mut cfg = ServerConfig::from_toml(&text).unwrap();
    cfg.select_node("n1").unwrap();
    // Never asked to shut down: only the loop's end can make it return.
    let served = tokio::time::timeout(
        Duration::from_secs(60),
        nacre_server::serve(cfg, std::future::pending()),
    )
    .await
    .expect("serve kept running after its raft loop had stopped");
    let err = served.expect_err("the raft loop failed, so serve must fail");
    assert!(
        matches!(&err, ServerError::Listen { addr, .. } if *addr == peer),
        "expected the peer listen error on {peer}, got: {err}"
    );
    drop(taken);
}

/// The real file system, except that once `armed`, syncing a tlog file
/// panics: a bug deep in the raft thread's persist step.
struct PanicOnTlogSync {
    armed: Arc<AtomicBool>,
}

struct File {
    inner: Arc<dyn VFile>,
    tlog: bool,
    armed: Arc<AtomicBool>,
}

impl VFile for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.tlog && self.armed.load(Ordering::SeqCst) {
            panic!("planted panic in a tlog sync");
        }
        self.inner.sync_data()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for PanicOnTlogSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        OsVfs::default().create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        OsVfs::default().list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(File {
            inner: OsVfs::default().open(path, create)?,
            tlog: path.components().any(|c| c.as_os_str() == "tlog"),
            armed: self.armed.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        OsVfs::default().remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsVfs::default().sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn Send + Sync>> {
        OsVfs::default().lock(path)
    }
}

/// A loopback address nothing listens on now.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Connects (retrying while the node starts), sends one request and
/// returns its reply, or `None` if the node closed the connection first.
async fn call_once(addr: &str, req: Request) -> Option<Response> {
    let mut stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut out = Vec::new();
    ClientHello {
        version: PROTOCOL_VERSION,
        cluster_id: String::new(),
    }
    .encode(&mut out);
    stream.write_all(&out).await.unwrap();
    // The node reads nothing past the hello before it has answered it.
    let mut buf = BytesMut::new();
    loop {
        if let Some((hello, used)) = ServerHello::decode(&buf).unwrap() {
            assert_eq!(hello.status, 0, "{hello:?}");
            let _ = buf.split_to(used);
            break;
        }
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return None;
        }
    }
    out.clear();
    encode_request(1, &req, &mut out);
    stream.write_all(&out).await.unwrap();
    loop {
        if let Some((_, body)) = split_frame(&mut buf, 64 << 20).unwrap() {
            return Some(decode_response(body).unwrap());
        }
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return None;
        }
    }
}

fn set(key: &str) -> Request {
    Request::Set {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
    }
}

fn config(dir: &Path, listen: &str) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: listen.to_string(),
        tick_ms: 20,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_raft_thread_makes_serve_return_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let vfs = Arc::new(PanicOnTlogSync {
        armed: armed.clone(),
    });
    let addr = free_addr();
    let served = tokio::spawn(nacre_server::serve_with_vfs(
        config(dir.path(), &addr),
        vfs,
        std::future::pending(),
    ));
    // The node serves...
    let first = call_once(&addr, set("before")).await;
    assert!(matches!(first, Some(Response::Written { .. })), "{first:?}");
    // ...until its raft thread panics persisting the next write, whose
    // client hears that the node went down.
    armed.store(true, Ordering::SeqCst);
    let reply = call_once(&addr, set("during")).await;
    match &reply {
        Some(Response::Error(e)) => assert_eq!(e.code, ErrorCode::GoingDown, "{e:?}"),
        // The listener may close first; either way nothing was acknowledged.
        None => {}
        r => panic!("a write the node could not persist was answered {r:?}"),
    }
    let err = tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("serve kept running after its raft thread panicked")
        .unwrap()
        .expect_err("a panicked raft thread must make serve fail");
    assert!(
        matches!(&err, ServerError::Stopped { thread: "raft thread", why } if why.contains("planted panic")),
        "{err}"
    );
    assert_eq!(err.kind(), FailureKind::Internal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_value_stops_the_node_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A user value of 3 bytes, shorter than the revision every stored
    // value starts with, planted in the store before the node starts.
    {
        let store = nacre_store::Store::open(dir.path().join("store"), Default::default()).unwrap();
        let mut txn = store.begin_write().unwrap();
        txn.put(b"ubad", b"abc").unwrap();
        txn.commit().unwrap();
    }
    let addr = free_addr();
    let served = tokio::spawn(nacre_server::serve(
        config(dir.path(), &addr),
        std::future::pending(),
    ));
    // A read of it is answered with the corruption, naming the key.
    let read = call_once(
        &addr,
        Request::Get {
            key: Bytes::from_static(b"bad"),
            consistency: nacre_proto::Consistency::Any,
        },
    )
    .await;
    match &read {
        Some(Response::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Corruption, "{e:?}");
            assert!(e.message.contains("user key \"bad\""), "{e:?}");
        }
        r => panic!("a corrupt value was answered {r:?}"),
    }
    // A write over it stops the node: nothing is applied on top of it.
    match call_once(&addr, set("bad")).await {
        Some(Response::Error(e)) => assert_eq!(e.code, ErrorCode::GoingDown, "{e:?}"),
        None => {}
        r => panic!("a write over a corrupt value was answered {r:?}"),
    }
    let err = tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("serve kept running over a corrupt store")
        .unwrap()
        .expect_err("a corrupt store must make serve fail");
    assert_eq!(err.kind(), FailureKind::Corruption, "{err}");
    assert!(err.to_string().contains("user key \"bad\""), "{err}");
}
