//! The client listener: handshake, framing, back-pressure, and the
//! execution of each request against the node and the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nacre_proto::{
    decode_request, encode_response, split_frame, ClientHello, Command, Consistency, ErrorCode,
    ErrorReply, Limits, Request, Response, ServerHello, VersionInfo, PROTOCOL_VERSION,
};
use nacre_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::node::NodeHandle;
use crate::state::{Outcome, Reader};
use crate::ServerConfig;

/// A client has this long to send its hello.
const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Largest client hello: magic, version, length and a maximal cluster id.
const HELLO_SIZE_MAX_BYTES: usize = 4 + 2 + 2 + nacre_proto::NAME_SIZE_MAX_BYTES;
/// Replies gathered into one socket write, at most.
const WRITE_BATCH_MAX_BYTES: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
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
}

/// Runs `work` on tokio's blocking threads, at most `blocking_tasks_max`
/// at once: reads of many pages and Lua calls take milliseconds to
/// seconds of CPU, and on an async worker they would stall every other
/// connection that worker serves (even a ping).
pub(crate) async fn off_the_workers<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce() -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
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
    let hello = match tokio::time::timeout(
        Duration::from_millis(HELLO_TIMEOUT_MS),
        read_hello(&mut stream),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(why) => return refuse(stream, &shared, ErrorCode::BadInput, &why.to_string()).await,
    };
    if hello.version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} is not supported; this node speaks {PROTOCOL_VERSION}",
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
    let mut out = Vec::new();
    ServerHello::ok(&shared.config.cluster_id, &shared.config.node_name).encode(&mut out);
    stream.write_all(&out).await?;

    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let result = serve_frames(&shared, stream, &mut stop).await;
    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
    result
}

async fn serve_frames(
    shared: &Arc<Shared>,
    stream: TcpStream,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (mut rd, wr) = stream.into_split();
    let inflight_max = shared.config.inflight_per_connection_max;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(inflight_max);
    let writer = tokio::spawn(write_replies(wr, rx));
    let inflight = Arc::new(Semaphore::new(inflight_max));
    let frame_max = shared.limits.frame_size_max_bytes;
    let mut buf = BytesMut::with_capacity(64 << 10);
    let result = 'conn: loop {
        loop {
            match split_frame(&mut buf, frame_max) {
                Ok(Some((id, body))) => {
                    // Back-pressure: stop reading while too many requests
                    // from this connection are in flight.
                    let Ok(permit) = inflight.clone().acquire_owned().await else {
                        break 'conn Ok(());
                    };
                    match decode_request(body) {
                        Ok(req) => {
                            let shared = shared.clone();
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let resp = execute(&shared, req).await;
                                if matches!(resp, Response::Error(_)) {
                                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                                }
                                let mut frame = Vec::new();
                                encode_response(id, &resp, &mut frame);
                                let _ = tx.send(frame).await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            // The frame boundary is intact, so the client can
                            // still read why; then we close, as documented.
                            let resp = Response::Error(ErrorReply::new(
                                ErrorCode::BadInput,
                                format!("malformed request: {e}"),
                            ));
                            let mut frame = Vec::new();
                            encode_response(id, &resp, &mut frame);
                            let _ = tx.send(frame).await;
                            break 'conn Ok(());
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        nacre_proto::DecodeError::FrameTooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::BadInput,
                    };
                    let resp = Response::Error(ErrorReply::new(code, e.to_string()));
                    let mut frame = Vec::new();
                    encode_response(0, &resp, &mut frame);
                    let _ = tx.send(frame).await;
                    break 'conn Ok(());
                }
            }
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            },
            _ = stop.changed() => break Ok(()),
        }
    };
    drop(tx);
    // Replies to requests already taken are still delivered.
    let _ = writer.await;
    result
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
    match execute_inner(shared, req).await {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    }
}

async fn execute_inner(shared: &Shared, req: Request) -> Result<Response, ErrorReply> {
    shared.limits.check_request(&req)?;
    if let Some(c) = req.consistency() {
        wait_for(shared, c).await?;
    }
    let status = &shared.node.status;
    Ok(match req {
        Request::Ping => Response::Text(format!("nacre {}", env!("CARGO_PKG_VERSION"))),
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
    let max = shared.limits.range_results_max;
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
                keys.iter()
                    .map(|k| r.get(k)?.ok_or_else(|| not_found(k)))
                    .collect()
            })
            .await?,
        ),
        Request::MultiGetOption { keys, .. } => Response::OptValues(
            read_off(shared, move |r| {
                keys.iter().map(|k| Ok(r.get(k)?)).collect()
            })
            .await?,
        ),
        Request::Range { query, .. } => {
            Response::Keys(read_off(shared, move |r| Ok(r.range_keys(&query, max)?)).await?)
        }
        Request::RangeEntries { query, .. } => {
            Response::Entries(read_off(shared, move |r| Ok(r.range_entries(&query, max)?)).await?)
        }
        Request::PrefixKeys {
            prefix, max: want, ..
        } => Response::Keys(
            read_off(shared, move |r| Ok(r.prefix_keys(&prefix, want.min(max))?)).await?,
        ),
        Request::KeyCount { .. } => Response::U64(read_off(shared, |r| Ok(r.key_count()?)).await?),
        _ => unreachable!("execute_inner sends only reads here"),
    })
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
    let st = shared.store.stats();
    let key_count = Reader::new(&shared.store)
        .key_count()
        .map_or_else(|e| format!("error: {e}"), |n| n.to_string());
    let mut kv: Vec<(&str, String)> = vec![
        ("node", shared.config.node_name.clone()),
        ("cluster_id", shared.config.cluster_id.clone()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("node_id", s.id.load(Ordering::Relaxed).to_string()),
        ("leader", s.leader_name().unwrap_or_default()),
        (
            "snapshots_sent",
            s.snapshots_sent.load(Ordering::Relaxed).to_string(),
        ),
        (
            "read_rounds_by_lease",
            s.read_rounds_by_lease.load(Ordering::Relaxed).to_string(),
        ),
        (
            "read_rounds_by_quorum",
            s.read_rounds_by_quorum.load(Ordering::Relaxed).to_string(),
        ),
        (
            "snapshots_installed",
            s.snapshots_installed.load(Ordering::Relaxed).to_string(),
        ),
        (
            "role",
            if s.is_leader.load(Ordering::Acquire) {
                "leader"
            } else {
                "follower"
            }
            .to_string(),
        ),
        ("term", s.term.load(Ordering::Relaxed).to_string()),
        (
            "applied_index",
            s.applied.load(Ordering::Relaxed).to_string(),
        ),
        ("commit_index", s.commit.load(Ordering::Relaxed).to_string()),
        (
            "tlog_first_index",
            s.first_index.load(Ordering::Relaxed).to_string(),
        ),
        (
            "tlog_last_index",
            s.last_index.load(Ordering::Relaxed).to_string(),
        ),
        ("proposals", s.proposals.load(Ordering::Relaxed).to_string()),
        ("tlog_fsyncs", s.fsyncs.load(Ordering::Relaxed).to_string()),
        (
            "checkpoints",
            s.checkpoints.load(Ordering::Relaxed).to_string(),
        ),
        ("uptime_s", shared.started.elapsed().as_secs().to_string()),
        (
            "connections",
            c.connections.load(Ordering::Relaxed).to_string(),
        ),
        (
            "connections_total",
            c.connections_total.load(Ordering::Relaxed).to_string(),
        ),
        (
            "connections_refused",
            c.connections_refused.load(Ordering::Relaxed).to_string(),
        ),
        ("requests", c.requests.load(Ordering::Relaxed).to_string()),
        (
            "request_errors",
            c.errors.load(Ordering::Relaxed).to_string(),
        ),
        ("key_count", key_count),
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
