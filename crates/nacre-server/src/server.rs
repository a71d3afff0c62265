//! The client listener: handshake, framing, back-pressure, and the
//! execution of each request against the node and the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nacre_proto::{
    decode_request, encode_response, list_reply_frame_length, split_frame, ClientHello, Command,
    Consistency, CoordRequest, ErrorCode, ErrorReply, Limits, Request, Response, ServerHello,
    VersionInfo, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};
use nacre_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::health::Health;
use crate::node::NodeHandle;
use crate::state::{Outcome, PageLimits, Reader};
use crate::watch::{serve_watch, WatchTask};
use crate::ServerConfig;

/// A client has this long to send its hello.
const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Largest client hello: magic, version, length and a maximal cluster id.
const HELLO_SIZE_MAX_BYTES: usize = 4 + 2 + 2 + nacre_proto::NAME_SIZE_MAX_BYTES;
/// How long a connection closed by a shutdown waits for the client to
/// close its side (see `linger`).
const CLOSE_LINGER_MS: u64 = 500;
/// Replies gathered into one socket write, at most.
const WRITE_BATCH_MAX_BYTES: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub latency: crate::admin::samples::Latency,
}

pub(crate) struct Shared {
    pub config: ServerConfig,
    pub limits: Limits,
    pub node: NodeHandle,
    pub store: Store,
    pub started: Instant,
    pub counters: Counters,
    pub connections: Arc<Semaphore>,
    /// Permits to run on the blocking pool (`blocking_tasks_max`).
    pub blocking: Arc<Semaphore>,
    /// Run blocking work where it is asked for instead: the simulator
    /// polls this layer on its one thread, where a pool thread would make
    /// the order of events depend on the host's scheduler.
    pub inline_blocking: bool,
    /// A planted bug (the simulator's, `SimServer::plant_skip_read_barrier`):
    /// consistent reads are served from this node's state without the
    /// read barrier, as `any` reads are.
    #[cfg(feature = "sim")]
    pub planted_skip_read_barrier: bool,
}

/// Runs `work` on tokio's blocking threads, at most `blocking_tasks_max`
/// at once: reads of many pages and Lua calls take milliseconds to
/// seconds of CPU, and on an async worker they would stall every other
/// connection that worker serves (even a ping).
pub(crate) async fn off_the_workers<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce() -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
    if shared.inline_blocking {
        return work();
    }
    let permit = shared
        .blocking
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ErrorReply::new(ErrorCode::GoingDown, "the node is shutting down"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("a blocking task failed: {e}")))?
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Running out of descriptors is transient: back off
                    // instead of spinning or dying.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return Ok(()),
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(shared, stream, stop).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
}

async fn refuse(
    mut stream: TcpStream,
    shared: &Shared,
    code: ErrorCode,
    message: &str,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    ServerHello::refuse(
        code,
        &shared.config.cluster_id,
        &shared.config.node_name,
        message,
    )
    .encode(&mut out);
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// Why a client's hello is refused.
#[derive(Debug, thiserror::Error)]
enum BadHello {
    #[error("bytes after the hello, before its answer")]
    TrailingBytes,
    #[error("{0}")]
    Decode(#[from] nacre_proto::DecodeError),
    #[error("hello too long")]
    TooLong,
}

async fn read_hello(stream: &mut TcpStream) -> std::io::Result<Result<ClientHello, BadHello>> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    loop {
        match ClientHello::decode(&buf) {
            Ok(Some((hello, used))) => {
                if used != buf.len() {
                    return Ok(Err(BadHello::TrailingBytes));
                }
                return Ok(Ok(hello));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e.into())),
        }
        if buf.len() >= HELLO_SIZE_MAX_BYTES {
            return Ok(Err(BadHello::TooLong));
        }
        let want = (HELLO_SIZE_MAX_BYTES - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Ok(_conn_permit) = shared.connections.clone().try_acquire_owned() else {
        shared
            .counters
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        return refuse(
            stream,
            &shared,
            ErrorCode::Busy,
            "too many connections (connections_max)",
        )
        .await;
    };
    stream.set_nodelay(true)?;
    // A shutdown does not wait for a hello: the client is told at once.
    let hello = tokio::select! {
        r = tokio::time::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), read_hello(&mut stream)) => {
            match r {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
        }
        () = stopping(&mut stop) => {
            return refuse(stream, &shared, ErrorCode::GoingDown, "the node is shutting down").await;
        }
    };
    let hello = match hello {
        Ok(h) => h,
        Err(why) => return refuse(stream, &shared, ErrorCode::BadInput, &why.to_string()).await,
    };
    if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&hello.version) {
        let msg = format!(
            "protocol version {} is not supported; this node speaks {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}",
            hello.version
        );
        return refuse(stream, &shared, ErrorCode::UnsupportedVersion, &msg).await;
    }
    if !hello.cluster_id.is_empty() && hello.cluster_id != shared.config.cluster_id {
        let msg = format!(
            "this node belongs to cluster {:?}, not {:?}",
            shared.config.cluster_id, hello.cluster_id
        );
        return refuse(stream, &shared, ErrorCode::WrongCluster, &msg).await;
    }
    // The connection speaks the client's version: an older client gets
    // the replies it knows.
    let mut ok = ServerHello::ok(&shared.config.cluster_id, &shared.config.node_name);
    ok.version = hello.version;
    let mut out = Vec::new();
    ok.encode(&mut out);
    stream.write_all(&out).await?;

    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let result = serve_frames(&shared, stream, &mut stop, hello.version).await;
    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
    result
}

/// Serves one connection's frames until the client closes it, a frame
/// breaks the protocol, or the node shuts down. A shutdown drains the
/// connection instead of dropping it: requests already taken are answered
/// as usual, every frame read from then on is answered `GoingDown`
/// without being run (so the client may safely send it elsewhere), and
/// the connection closes once nothing is in flight.
async fn serve_frames(
    shared: &Arc<Shared>,
    stream: TcpStream,
    stop: &mut watch::Receiver<bool>,
    version: u16,
) -> std::io::Result<()> {
    let (mut rd, wr) = stream.into_split();
    let inflight_max = shared.config.inflight_per_connection_max;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(inflight_max);
    let writer = tokio::spawn(write_replies(wr, rx));
    let mut conn = ConnState {
        inflight: Arc::new(Semaphore::new(inflight_max)),
        inflight_max,
        tx,
        refused: 0,
        version,
        watches: std::collections::HashMap::new(),
    };
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut draining = false;
    let result = loop {
        if !conn.take_frames(shared, &mut buf, draining).await {
            break Ok(());
        }
        let read = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            () = stopping(stop), if !draining => {
                draining = true;
                // What the client sent before the shutdown is answered
                // now, not lost when the connection closes.
                match rd.try_read_buf(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(1),
                    r => r,
                }
            }
            () = conn.idle(), if draining => break Ok(()),
        };
        match read {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    let busy = conn.refused > 0;
    conn.close_watches(shared, draining).await;
    drop(conn);
    // Replies to requests already taken are still delivered.
    let _ = writer.await;
    if busy {
        // The client was still sending when the node went down.
        linger(&mut rd).await;
    }
    result
}

/// After a shutdown closed the writing side, reads (and drops) what the
/// client still sends until it closes too, for at most
/// `CLOSE_LINGER_MS`: closing a socket with unread bytes makes the kernel
/// reset the connection, which can throw away the last replies before
/// the client read them.
async fn linger(rd: &mut tokio::net::tcp::OwnedReadHalf) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_LINGER_MS), async {
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Completes once the node is shutting down (at once if it already is).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, not held
    // by the caller's future.
    let _ = stop.wait_for(|s| *s).await;
}

/// One connection's requests in flight and the way to its writer task.
struct ConnState {
    inflight: Arc<Semaphore>,
    inflight_max: usize,
    tx: mpsc::Sender<Vec<u8>>,
    /// Frames answered `GoingDown` during a shutdown.
    refused: u64,
    /// The protocol version the client speaks: replies are given in it.
    version: u16,
    /// Watches started on this connection, by their request id. Their
    /// tasks hold the writer's sender, so they must end for the writer to.
    watches: std::collections::HashMap<u64, WatchTask>,
}

impl ConnState {
    /// Completes once no request of this connection is in flight.
    async fn idle(&self) {
        let all = u32::try_from(self.inflight_max).unwrap_or(u32::MAX);
        let _all_back = self.inflight.acquire_many(all).await;
    }

    async fn reply(&self, id: u64, resp: &Response) {
        let mut frame = Vec::new();
        encode_response(id, resp, &mut frame);
        let _ = self.tx.send(frame).await;
    }

    /// Starts (or, `draining`, answers `GoingDown` to) every whole frame in
    /// `buf`; false when the connection must close (malformed input).
    async fn take_frames(
        &mut self,
        shared: &Arc<Shared>,
        buf: &mut BytesMut,
        draining: bool,
    ) -> bool {
        loop {
            let (id, body) = match split_frame(buf, shared.limits.frame_size_max_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => return true,
                Err(e) => {
                    let code = match e {
                        nacre_proto::DecodeError::FrameTooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::BadInput,
                    };
                    self.reply(0, &Response::Error(ErrorReply::new(code, e.to_string())))
                        .await;
                    return false;
                }
            };
            if draining {
                let why = ErrorReply::new(ErrorCode::GoingDown, "the node is shutting down");
                self.reply(id, &Response::Error(why)).await;
                self.refused += 1;
                continue;
            }
            let req = match decode_request(body) {
                Ok(req) => req,
                Err(e) => {
                    // The frame boundary is intact, so the client can still
                    // read why; then we close, as documented.
                    let why =
                        ErrorReply::new(ErrorCode::BadInput, format!("malformed request: {e}"));
                    self.reply(id, &Response::Error(why)).await;
                    return false;
                }
            };
            // A watch lives as long as the client wants it: it holds no
            // in-flight permit (it would hold it forever).
            if matches!(
                req,
                Request::Coord(CoordRequest::Watch(_) | CoordRequest::WatchCancel { .. })
            ) {
                self.watch_request(shared, id, req).await;
                continue;
            }
            // Back-pressure: stop reading while too many requests from
            // this connection are in flight.
            let Ok(permit) = self.inflight.clone().acquire_owned().await else {
                return false;
            };
            // A backup answers with a stream of frames (backup/serve.rs).
            if matches!(req, Request::Backup) {
                let (shared, tx) = (shared.clone(), self.tx.clone());
                tokio::spawn(crate::backup::serve_backup(shared, id, tx, permit));
                continue;
            }
            let (shared, tx, version) = (shared.clone(), self.tx.clone(), self.version);
            tokio::spawn(async move {
                let resp = execute(&shared, req).await.for_version(version);
                if matches!(resp, Response::Error(_)) {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                let mut frame = Vec::new();
                encode_response(id, &resp, &mut frame);
                let _ = tx.send(frame).await;
                drop(permit);
            });
        }
    }

    /// Starts or cancels a watch. A started watch answers with its frames
    /// (from its task); a refused one with an error, a cancel with `Unit`
    /// (also when the watch had already ended).
    async fn watch_request(&mut self, shared: &Arc<Shared>, id: u64, req: Request) {
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (op, started) = (crate::metrics::Op::of(&req), Instant::now());
        let requests = &shared.node.status.metrics.requests;
        let resp = match req {
            Request::Coord(CoordRequest::WatchCancel { watch_id }) => {
                if let Some(w) = self.watches.get(&watch_id) {
                    let hub = &shared.node.watches;
                    hub.end_watch(w.hub_id, ErrorCode::Cancelled, "cancelled by the client");
                }
                Response::Unit
            }
            req => match self.start_watch(shared, id, req) {
                Ok(()) => {
                    // Its frames follow from its task; counted as started.
                    requests.observe(op, &Response::Unit, started.elapsed());
                    return;
                }
                Err(e) => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    Response::Error(e)
                }
            },
        };
        requests.observe(op, &resp, started.elapsed());
        self.reply(id, &resp).await;
    }

    fn start_watch(
        &mut self,
        shared: &Arc<Shared>,
        id: u64,
        req: Request,
    ) -> Result<(), ErrorReply> {
        shared.limits.check_request(&req)?;
        let Request::Coord(CoordRequest::Watch(spec)) = req else {
            unreachable!("watch_request sends only watches here");
        };
        self.watches.retain(|_, w| !w.task.is_finished());
        let max = shared.config.watches_per_connection_max;
        if self.watches.len() >= max {
            return Err(ErrorReply::new(
                ErrorCode::Busy,
                format!("too many watches on this connection (watches_per_connection_max {max})"),
            ));
        }
        if self.watches.contains_key(&id) {
            return Err(ErrorReply::new(
                ErrorCode::BadInput,
                format!("a watch with request id {id} is already open on this connection"),
            ));
        }
        if shared.node.status.applied.load(Ordering::Acquire) == 0 {
            // As for reads (`wait_for`): no state yet, so no revisions.
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                "this node has no copy of the cluster's state yet",
            ));
        }
        let hub = shared.node.watches.clone();
        let reg = hub.register(&spec)?;
        let hub_id = reg.id;
        let progress = Duration::from_millis(shared.config.watch_progress_ms);
        let task = tokio::spawn(serve_watch(hub, reg, id, self.tx.clone(), progress));
        self.watches.insert(id, WatchTask { hub_id, task });
        Ok(())
    }

    /// The connection's loop ended. The client left: its watches stop at
    /// once (nobody reads them). The node shuts down: each watch is told
    /// so (`Cancelled`, after the frames already queued) before it stops.
    async fn close_watches(&mut self, shared: &Shared, draining: bool) {
        let watches = std::mem::take(&mut self.watches);
        if draining {
            for w in watches.values() {
                let hub = &shared.node.watches;
                hub.end_watch(w.hub_id, ErrorCode::Cancelled, "the node is shutting down");
            }
        }
        for (_, mut w) in watches {
            if draining {
                let linger = Duration::from_millis(CLOSE_LINGER_MS);
                if tokio::time::timeout(linger, &mut w.task).await.is_ok() {
                    continue;
                }
            }
            w.task.abort();
        }
    }
}

/// Writes replies in the order they finish, coalescing whatever is ready
/// into one write.
async fn write_replies(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(64 << 10);
    while let Some(frame) = rx.recv().await {
        out.clear();
        out.extend_from_slice(&frame);
        while out.len() < WRITE_BATCH_MAX_BYTES {
            match rx.try_recv() {
                Ok(f) => out.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        wr.write_all(&out).await?;
    }
    wr.shutdown().await
}

fn not_found(key: &Bytes) -> ErrorReply {
    ErrorReply::new(ErrorCode::NotFound, "key not found").with_key(key.clone())
}

/// Runs one request to its reply; every failure becomes an error reply.
pub(crate) async fn execute(shared: &Shared, req: Request) -> Response {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (op, started) = (crate::metrics::Op::of(&req), Instant::now());
    let resp = match execute_inner(shared, req).await {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    };
    let resp = within_frame(resp, shared.limits.frame_size_max_bytes);
    let took = started.elapsed();
    shared.node.status.metrics.requests.observe(op, &resp, took);
    // The dashboard's latency charts (admin/samples.rs).
    shared.counters.latency.record(took);
    resp
}

/// A reply too large for a frame becomes a `TooLarge` error. Sent as it
/// is, the client would refuse the frame from its header and drop the
/// connection, and asking again would get the same: an outage to the
/// client, for what is a request that asks for too much. Reads that can
/// hold many results stop (ranges) or refuse (multi-gets) before they get
/// here; this catches whatever else could grow (a script's result).
fn within_frame(resp: Response, frame_size_max_bytes: usize) -> Response {
    let length = resp.frame_length();
    if length <= frame_size_max_bytes {
        return resp;
    }
    Response::Error(ErrorReply::new(
        ErrorCode::TooLarge,
        format!("a reply of {length} bytes is over frame_size_max_bytes {frame_size_max_bytes}"),
    ))
}

async fn execute_inner(shared: &Shared, req: Request) -> Result<Response, ErrorReply> {
    shared.limits.check_request(&req)?;
    if let Some(c) = req.consistency() {
        wait_for(shared, c).await?;
    }
    let status = &shared.node.status;
    Ok(match req {
        Request::Ping => Response::Text(Health::of(&shared.node, &shared.config).ping_line()),
        Request::Version => Response::Version(version_info()),
        Request::WhoMaster => Response::Master(status.leader_name()),
        Request::Statistics => Response::Stats(statistics(shared)),
        Request::GetTxid => Response::U64(status.applied.load(Ordering::Acquire)),
        Request::ClusterStatus => Response::Members(status.progress.lock().clone()),
        Request::Get { .. }
        | Request::GetEntry { .. }
        | Request::Exists { .. }
        | Request::MultiGet { .. }
        | Request::MultiGetOption { .. }
        | Request::Range { .. }
        | Request::RangeEntries { .. }
        | Request::PrefixKeys { .. }
        | Request::KeyCount { .. } => read(shared, req).await?,
        Request::AddLearner { .. }
        | Request::Promote { .. }
        | Request::RemoveNode { .. }
        | Request::TransferLeader { .. } => cluster_change(shared, req).await?,
        Request::Coord(
            c @ (CoordRequest::LeaseGrant { .. }
            | CoordRequest::LeaseRevoke { .. }
            | CoordRequest::LeaseKeepAlive { .. }
            | CoordRequest::LeaseTtl { .. }
            | CoordRequest::LeaseList),
        ) => crate::lease_requests::execute(shared, c, None).await?,
        // A grant or revoke stamped with the client's session, like a write.
        Request::Session { session, request } if matches!(*request, Request::Coord(_)) => {
            let Request::Coord(c) = *request else {
                unreachable!("matched just above")
            };
            crate::lease_requests::execute(shared, c, Some(session)).await?
        }
        // A script call or change stamped with the client's session: its
        // effects apply at most once however often it is retried.
        Request::Session { session, request } if !request.is_write() => {
            crate::scripts::execute(shared, *request, Some(session)).await?
        }
        Request::Call { .. }
        | Request::ScriptPut { .. }
        | Request::ScriptList
        | Request::ScriptShow { .. }
        | Request::ScriptHistory { .. }
        | Request::ScriptRollback { .. }
        | Request::ScriptDelete { .. } => crate::scripts::execute(shared, req, None).await?,
        req if req.is_write() => write(shared, &req).await?,
        _ => return Err(ErrorReply::new(ErrorCode::BadInput, "unsupported request")),
    })
}

/// A read of user keys, after its consistency was established. A get
/// reads a few pages and runs here; reads that may touch many pages run
/// off the async workers.
async fn read(shared: &Shared, req: Request) -> Result<Response, ErrorReply> {
    let frame_max = shared.limits.frame_size_max_bytes;
    let page = PageLimits {
        results_max: shared.limits.range_results_max,
        frame_size_max_bytes: frame_max,
    };
    Ok(match req {
        Request::Get { key, .. } => {
            let v = Reader::new(&shared.store).get(&key)?;
            Response::Value(Some(v.ok_or_else(|| not_found(&key))?))
        }
        Request::GetEntry { key, .. } => {
            Response::Entry(Reader::new(&shared.store).get_entry(&key)?)
        }
        Request::Exists { key, .. } => Response::Bool(Reader::new(&shared.store).exists(&key)?),
        Request::MultiGet { keys, .. } => Response::Values(
            read_off(shared, move |r| {
                let values = multi_get(r, &keys, frame_max, true)?;
                Ok(values.into_iter().flatten().collect())
            })
            .await?,
        ),
        Request::MultiGetOption { keys, .. } => Response::OptValues(
            read_off(shared, move |r| multi_get(r, &keys, frame_max, false)).await?,
        ),
        Request::Range { query, .. } => Response::KeyPage(
            read_off(shared, move |r| Ok(r.range_keys_page(&query, page)?)).await?,
        ),
        Request::RangeEntries { query, .. } => Response::EntryPage(
            read_off(shared, move |r| Ok(r.range_entries_page(&query, page)?)).await?,
        ),
        Request::PrefixKeys { prefix, max, .. } => Response::KeyPage(
            read_off(shared, move |r| Ok(r.prefix_keys_page(&prefix, max, page)?)).await?,
        ),
        Request::KeyCount { .. } => Response::U64(read_off(shared, |r| Ok(r.key_count()?)).await?),
        _ => unreachable!("execute_inner sends only reads here"),
    })
}

/// The values of a multi-get, in key order; `required`: a missing key
/// fails it with `NotFound` (`MultiGet`), else it is `None`
/// (`MultiGetOption`). A multi-get is answered in one reply, so values
/// that would not fit in a frame are refused with `TooLarge` as soon as
/// the running total goes over, before more of them are read into memory.
fn multi_get(
    r: &Reader,
    keys: &[Bytes],
    frame_size_max_bytes: usize,
    required: bool,
) -> Result<Vec<Option<Bytes>>, ErrorReply> {
    let mut values = Vec::with_capacity(keys.len());
    let mut bytes = 0;
    for (i, k) in keys.iter().enumerate() {
        let v = r.get(k)?;
        bytes += match (&v, required) {
            (None, true) => return Err(not_found(k)),
            (Some(v), true) => nacre_proto::wire::bytes_len(v),
            (v, false) => nacre_proto::wire::opt_bytes_len(v.as_deref()),
        };
        let length = list_reply_frame_length(bytes);
        if length > frame_size_max_bytes {
            return Err(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "the reply would be over frame_size_max_bytes {frame_size_max_bytes}: \
                     the values of the first {} of {} keys already take {length} bytes; \
                     ask for fewer keys per multi-get",
                    i + 1,
                    keys.len()
                ),
            ));
        }
        values.push(v);
    }
    Ok(values)
}

/// A membership change or leadership transfer, proposed to the leader.
async fn cluster_change(shared: &Shared, req: Request) -> Result<Response, ErrorReply> {
    use crate::node::Membership;
    let change = match req {
        Request::AddLearner { name, client, peer } => {
            if name.is_empty() || name.len() > nacre_proto::NAME_SIZE_MAX_BYTES {
                return Err(ErrorReply::new(
                    ErrorCode::BadInput,
                    "a member name is 1 to 255 bytes",
                ));
            }
            let id = crate::node::name_id(&name);
            Membership::AddLearner(id, crate::state::MemberRecord { name, client, peer })
        }
        Request::Promote { name, force } => Membership::Promote(member_id(shared, &name)?, force),
        Request::RemoveNode { name } => Membership::Remove(member_id(shared, &name)?),
        Request::TransferLeader { name } => Membership::TransferLeader(member_id(shared, &name)?),
        _ => unreachable!("execute_inner sends only membership changes here"),
    };
    membership(shared, change).await
}

/// `read` against the store, on the blocking pool ([`off_the_workers`]).
async fn read_off<T: Send + 'static>(
    shared: &Shared,
    read: impl FnOnce(&Reader) -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
    let store = shared.store.clone();
    off_the_workers(shared, move || read(&Reader::new(&store))).await
}

fn member_id(shared: &Shared, name: &str) -> Result<u64, ErrorReply> {
    shared
        .node
        .status
        .members
        .read()
        .iter()
        .find(|(_, m)| m.name == name)
        .map(|(id, _)| *id)
        .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, format!("no member named {name:?}")))
}

async fn membership(
    shared: &Shared,
    change: crate::node::Membership,
) -> Result<Response, ErrorReply> {
    let timeout = Duration::from_millis(shared.config.request_timeout_ms);
    match tokio::time::timeout(timeout, shared.node.membership(change)).await {
        Ok(r) => Ok(Response::Written {
            index: r?,
            prev: None,
            count: 0,
        }),
        Err(_) => Err(ErrorReply::new(
            ErrorCode::Timeout,
            "the membership change was not applied in time; it may or may not apply",
        )),
    }
}

/// Proposes one guarded batch and waits, at most `request_timeout_ms`,
/// for its index and outcome. Every write path (requests, script calls and
/// script changes) goes through here.
pub(crate) async fn propose(
    shared: &Shared,
    batch: nacre_proto::Batch,
    session: Option<nacre_proto::Session>,
) -> Result<(u64, Outcome), ErrorReply> {
    let data = Command { session, batch }.encode();
    let timeout = Duration::from_millis(shared.config.request_timeout_ms);
    match tokio::time::timeout(timeout, shared.node.propose(data)).await {
        Ok(r) => r,
        Err(_) => Err(ErrorReply::new(
            ErrorCode::Timeout,
            "the write was not applied in time; it may or may not apply",
        )),
    }
}

async fn write(shared: &Shared, req: &Request) -> Result<Response, ErrorReply> {
    let (session, req) = match req {
        Request::Session { session, request } => (Some(*session), &**request),
        r => (None, r),
    };
    let set;
    let req = match req {
        Request::Confirm { key, value } => {
            // Write only if different: decided by a linearizable read, so a
            // confirm that finds the value in place is itself linearizable.
            wait_for(shared, Consistency::Consistent).await?;
            let current = Reader::new(&shared.store).get(key)?;
            if current.as_deref() == Some(&value[..]) {
                return Ok(Response::Written {
                    index: shared.node.status.applied.load(Ordering::Acquire),
                    prev: current,
                    count: 0,
                });
            }
            set = Request::Set {
                key: key.clone(),
                value: value.clone(),
            };
            &set
        }
        r => r,
    };
    let batch = req
        .to_batch()
        .ok_or_else(|| ErrorReply::new(ErrorCode::BadInput, "not a write"))?;
    crate::scripts::refuse_service_ops(&batch)?;
    let (index, outcome) = propose(shared, batch, session).await?;
    Ok(match outcome {
        Outcome::Applied { prev, count } => Response::Written { index, prev, count },
        // test_and_set does not fail when the value differs: like Arakoon,
        // it reports the value it found, and the caller compares.
        Outcome::Failed {
            code: ErrorCode::AssertionFailed,
            current,
            ..
        } if matches!(req, Request::TestAndSet { .. }) => Response::Written {
            index,
            prev: current,
            count: 0,
        },
        Outcome::Failed {
            code, key, message, ..
        } => {
            return Err(ErrorReply::new(code, message).with_key(key));
        }
        Outcome::Etcd { .. } => return Err(Outcome::not_a_batch()),
    })
}

/// Holds a read back until the node may serve it at this consistency.
pub(crate) async fn wait_for(shared: &Shared, c: Consistency) -> Result<(), ErrorReply> {
    let have = shared.node.status.applied.load(Ordering::Acquire);
    if have == 0 && c != Consistency::Consistent {
        // Every member's state starts at index 1 (the bootstrap): a node
        // at 0 has none yet, and an empty answer would be a lie.
        return Err(ErrorReply::new(
            ErrorCode::Unavailable,
            "this node has no copy of the cluster's state yet (it waits to create the cluster \
             or for the leader's snapshot)",
        ));
    }
    match c {
        Consistency::Any => Ok(()),
        Consistency::AtLeast(want) => {
            if have < want {
                return Err(ErrorReply::new(
                    ErrorCode::InconsistentRead,
                    format!("this node has applied index {have}, not yet {want}"),
                ));
            }
            Ok(())
        }
        #[cfg(feature = "sim")]
        Consistency::Consistent if shared.planted_skip_read_barrier => Ok(()),
        Consistency::Consistent => {
            let timeout = Duration::from_millis(shared.config.request_timeout_ms);
            match tokio::time::timeout(timeout, shared.node.read_barrier()).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(ErrorReply::new(
                    ErrorCode::Unavailable,
                    "could not confirm leadership in time (no quorum?)",
                )),
            }
        }
    }
}

pub(crate) fn version_info() -> VersionInfo {
    let num = |s: &str| s.parse().unwrap_or(0);
    VersionInfo {
        major: num(env!("CARGO_PKG_VERSION_MAJOR")),
        minor: num(env!("CARGO_PKG_VERSION_MINOR")),
        patch: num(env!("CARGO_PKG_VERSION_PATCH")),
        info: format!(
            "nacre {} protocol {PROTOCOL_VERSION}",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

fn statistics(shared: &Shared) -> Vec<(String, String)> {
    let s = &shared.node.status;
    let c = &shared.counters;
    let w = &shared.node.watches.counters;
    let st = shared.store.stats();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    let key_count = Reader::new(&shared.store)
        .key_count()
        .map_or_else(|e| format!("error: {e}"), |n| n.to_string());
    let mut kv: Vec<(&str, String)> = vec![
        ("node", shared.config.node_name.clone()),
        ("cluster_id", shared.config.cluster_id.clone()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("node_id", n(&s.id)),
        ("leader", s.leader_name().unwrap_or_default()),
        ("snapshots_sent", n(&s.snapshots_sent)),
        ("read_rounds_by_lease", n(&s.read_rounds_by_lease)),
        ("read_rounds_by_quorum", n(&s.read_rounds_by_quorum)),
        ("snapshots_installed", n(&s.snapshots_installed)),
        ("leases_tracked", n(&s.leases_tracked)),
        ("leases_expired", n(&s.leases_expired)),
        ("lease_keep_alives", n(&s.lease_keep_alives)),
        ("role", s.role().name().to_string()),
        ("term", n(&s.term)),
        ("applied_index", n(&s.applied)),
        ("commit_index", n(&s.commit)),
        ("tlog_first_index", n(&s.first_index)),
        ("tlog_last_index", n(&s.last_index)),
        ("proposals", n(&s.proposals)),
        ("tlog_fsyncs", n(&s.fsyncs)),
        ("checkpoints", n(&s.checkpoints)),
        ("uptime_s", shared.started.elapsed().as_secs().to_string()),
        ("connections", n(&c.connections)),
        ("connections_total", n(&c.connections_total)),
        ("connections_refused", n(&c.connections_refused)),
        ("requests", n(&c.requests)),
        ("request_errors", n(&c.errors)),
        ("key_count", key_count),
        ("watches_active", shared.node.watches.active().to_string()),
        ("watch_events_sent", n(&w.events_sent)),
        ("watches_ended_slow", n(&w.ended_slow)),
        ("store_bytes_on_disk", st.bytes_on_disk.to_string()),
        ("store_live_bytes", st.live_bytes.to_string()),
        ("store_segments", st.segments.to_string()),
        ("store_cache_hits", st.cache_hits.to_string()),
        ("store_cache_misses", st.cache_misses.to_string()),
        ("store_cleaned_segments", st.cleaned_segments.to_string()),
    ];
    if let Some(p) = st.poisoned {
        kv.push(("store_poisoned", p));
    }
    if let Some(e) = st.cleaner_error {
        kv.push(("store_cleaner_error", e));
    }
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_over_the_frame_limit_becomes_too_large() {
        let reply = Response::Value(Some(Bytes::from(vec![0u8; 100])));
        let length = reply.frame_length();
        assert_eq!(within_frame(reply.clone(), length), reply);
        match within_frame(reply, length - 1) {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::TooLarge);
                let limit = format!("frame_size_max_bytes {}", length - 1);
                assert!(e.message.contains(&limit), "{}", e.message);
            }
            r => panic!("expected too_large, got {r:?}"),
        }
    }
}
