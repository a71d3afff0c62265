//! One connection: a writer task, a reader task, and the map from request
//! id to the caller waiting for that reply. Replies may come back in any
//! order; the id pairs them with their callers. A caller that waits long
//! with nothing heard from the node pings it, and abandons a connection
//! whose node does not answer even that ([`Conn::call`]). Connections are
//! opened by racing the endpoints ([`race`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use nacre_proto::{
    decode_response, encode_request, split_frame, BackupFrame, ClientHello, CoordRequest,
    CoordResponse, ErrorCode, Limits, Request, Response, ServerHello, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::retry::Suspects;
use crate::{ClientError, ClientOptions, Disconnect, EndpointError};

/// Frames the writer gathers into one `write_all`, so that pipelined
/// requests share system calls without one huge request starving others.
const WRITE_BATCH_MAX_BYTES: usize = 256 << 10;
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How long a connection attempt runs alone before the next endpoint's
/// starts beside it. A node on the same network completes the handshake in
/// well under a millisecond, so it nearly always wins alone and one
/// connection is opened; a stopped node (the kernel still accepts for it,
/// but no handshake comes) costs the command this long, not the connect
/// timeout.
const CONNECT_STAGGER: Duration = Duration::from_millis(100);

/// How a request fared on one connection.
pub(crate) enum Outcome {
    Reply(Response),
    /// Certainly not sent: safe to retry anywhere, writes included.
    NotSent(Disconnect),
    /// Sent (or possibly sent), then the connection broke, or was
    /// abandoned as hung (`Disconnect::Hung`).
    Lost(Disconnect),
    /// The deadline passed. `silent`: nothing at all came from the node
    /// since the request was sent.
    TimedOut {
        silent: bool,
    },
}

/// See [`Conn::watch`].
enum Watch {
    /// Nothing to do before then.
    Until(Instant),
    Ping,
    /// Nothing heard for this long, a ping included.
    Hung(Duration),
}

/// What opening a connection needs from the client's options.
#[derive(Clone)]
pub(crate) struct ConnParams {
    pub(crate) cluster_id: String,
    pub(crate) limits: Limits,
    pub(crate) inflight_max: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) hung_after: Duration,
}

impl ConnParams {
    pub(crate) fn new(o: &ClientOptions) -> ConnParams {
        ConnParams {
            cluster_id: o.cluster_id.clone(),
            limits: o.limits.clone(),
            inflight_max: o.inflight_max,
            connect_timeout: Duration::from_millis(o.connect_timeout_ms.max(1)),
            hung_after: Duration::from_millis(o.hung_after_ms.max(2)),
        }
    }
}

/// An endpoint to connect to, and whether a node named it as the leader.
pub(crate) struct Candidate {
    pub(crate) endpoint: String,
    pub(crate) leader_hint: bool,
}

/// Who waits for the replies to one request id: one caller for one
/// reply, or a stream (a watch) for many, until the reply that ends it.
enum Waiter {
    Once(oneshot::Sender<Response>),
    Stream(mpsc::Sender<Response>),
    /// A stream its consumer paces (a backup): the reader task waits for
    /// room in its buffer, and so stops reading the socket, which makes
    /// the node wait too. Only on a connection that carries nothing else.
    Paced(mpsc::Sender<Response>),
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set once the connection is dead; no new request may register.
    closed: Option<Disconnect>,
}

type SharedPending = Arc<Mutex<Pending>>;

fn close(pending: &SharedPending, reason: Disconnect) {
    let mut p = pending.lock().expect("pending lock");
    if p.closed.is_none() {
        p.closed = Some(reason);
    }
    // Dropping the senders wakes every waiter with a receive error.
    p.waiters.clear();
}

/// When the connection last heard from its node, and when it last pinged
/// it: microseconds since `born`, so that the reader task can record it
/// without a lock.
struct Heard {
    born: Instant,
    heard_us: AtomicU64,
    pinged_us: AtomicU64,
}

impl Heard {
    fn now_us(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn at(&self, us: u64) -> Instant {
        self.born + Duration::from_micros(us)
    }

    fn heard(&self) -> Instant {
        self.at(self.heard_us.load(Ordering::Relaxed))
    }

    fn pinged(&self) -> Instant {
        self.at(self.pinged_us.load(Ordering::Relaxed))
    }
}

pub(crate) struct Conn {
    pub(crate) endpoint: String,
    pub(crate) node: String,
    pending: SharedPending,
    out: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    inflight: Arc<Semaphore>,
    heard: Arc<Heard>,
    hung_after: Duration,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects to the first candidate that completes a handshake. Candidates
/// start in order, each [`CONNECT_STAGGER`] after the one before, or at
/// once when every attempt under way has failed; the first handshake wins
/// and the other attempts are dropped. Each attempt gives up after the
/// connect timeout or at `deadline`. Endpoints that fail are recorded in
/// `suspects`; a refused handshake (another cluster, another protocol
/// version) ends the race with its error.
pub(crate) async fn race(
    candidates: &[Candidate],
    params: &ConnParams,
    deadline: Instant,
    suspects: &Suspects,
) -> Result<Conn, ClientError> {
    let mut attempts = JoinSet::new();
    let mut next = 0;
    let mut errors = Vec::new();
    let mut stagger = Instant::now();
    loop {
        if next < candidates.len() && (attempts.is_empty() || Instant::now() >= stagger) {
            let (endpoint, params) = (candidates[next].endpoint.clone(), params.clone());
            let timeout = params
                .connect_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            attempts.spawn(async move { (next, Conn::open(&endpoint, &params, timeout).await) });
            next += 1;
            stagger = Instant::now() + CONNECT_STAGGER;
            continue;
        }
        let done = if next < candidates.len() {
            tokio::select! {
                done = attempts.join_next() => done,
                () = tokio::time::sleep_until(stagger) => continue,
            }
        } else {
            attempts.join_next().await
        };
        let (i, result) = match done {
            Some(Ok(r)) => r,
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Attempts are aborted only when the set is dropped.
            Some(Err(_)) => continue,
            None => return Err(ClientError::AllEndpointsFailed { errors }),
        };
        let c = &candidates[i];
        match result {
            Ok(conn) => return Ok(conn),
            Err(e @ ClientError::Refused { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(endpoint = %c.endpoint, error = %e, "connect failed");
                suspects.failed(&c.endpoint);
                errors.push(EndpointError {
                    endpoint: c.endpoint.clone(),
                    leader_hint: c.leader_hint,
                    error: Box::new(e),
                });
            }
        }
    }
}

impl Conn {
    /// Connects and shakes hands, all within `timeout`.
    pub(crate) async fn open(
        endpoint: &str,
        params: &ConnParams,
        timeout: Duration,
    ) -> Result<Conn, ClientError> {
        match tokio::time::timeout(timeout, Self::open_inner(endpoint, params)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "connect to {endpoint} timed out after {} ms",
                    timeout.as_millis()
                ),
            ))),
        }
    }

    async fn open_inner(endpoint: &str, params: &ConnParams) -> Result<Conn, ClientError> {
        let cluster_id = params.cluster_id.as_str();
        let mut stream = TcpStream::connect(endpoint).await?;
        // Small request frames must not wait for Nagle's timer.
        stream.set_nodelay(true)?;
        let mut hello = Vec::new();
        ClientHello {
            version: PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
        }
        .encode(&mut hello);
        stream.write_all(&hello).await?;

        let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let (sh, used) = loop {
            if let Some(done) = ServerHello::decode(&buf)? {
                break done;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{endpoint} closed the connection during the handshake"),
                )));
            }
        };
        let _ = buf.split_to(used);
        if sh.status != 0 {
            return Err(ClientError::Refused {
                endpoint: endpoint.to_string(),
                code: ErrorCode::from_u16(sh.status),
                node: sh.node,
                cluster_id: sh.cluster_id,
                message: sh.message,
            });
        }
        // A server that accepts any cluster id still must not be mistaken
        // for the cluster we asked for.
        if !cluster_id.is_empty() && sh.cluster_id != cluster_id {
            return Err(ClientError::Refused {
                endpoint: endpoint.to_string(),
                code: ErrorCode::WrongCluster,
                node: sh.node,
                cluster_id: sh.cluster_id.clone(),
                message: format!(
                    "expected cluster {cluster_id:?}, node belongs to {:?}",
                    sh.cluster_id
                ),
            });
        }

        let (rd, wr) = stream.into_split();
        let pending: SharedPending = Arc::default();
        let heard = Arc::new(Heard {
            born: Instant::now(),
            heard_us: AtomicU64::new(0),
            pinged_us: AtomicU64::new(0),
        });
        let (out, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(
            rd,
            buf,
            pending.clone(),
            heard.clone(),
            params.limits.frame_size_max_bytes,
        ));
        let writer = tokio::spawn(write_loop(wr, rx, pending.clone()));
        Ok(Conn {
            endpoint: endpoint.to_string(),
            node: sh.node,
            pending,
            out,
            next_id: AtomicU64::new(1),
            inflight: Arc::new(Semaphore::new(params.inflight_max.max(1))),
            heard,
            hung_after: params.hung_after,
            tasks: [reader, writer],
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pending.lock().expect("pending lock").closed.is_some()
    }

    /// Sends one request and waits for its reply until `deadline`.
    pub(crate) async fn call(&self, req: &Request, deadline: Instant) -> Outcome {
        // Back-pressure: at most `inflight_max` requests wait on this
        // connection; the rest queue here, not in the server.
        let _permit = match tokio::time::timeout_at(deadline, self.inflight.acquire()).await {
            Err(_) => return Outcome::TimedOut { silent: false },
            Ok(Err(_)) => return Outcome::NotSent(Disconnect::Closed),
            Ok(Ok(p)) => p,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("pending lock");
            if let Some(reason) = &p.closed {
                return Outcome::NotSent(reason.clone());
            }
            p.waiters.insert(id, Waiter::Once(tx));
        }
        let mut frame = Vec::new();
        encode_request(id, req, &mut frame);
        let sent = Instant::now();
        if self.out.send(frame).is_err() {
            self.pending
                .lock()
                .expect("pending lock")
                .waiters
                .remove(&id);
            return Outcome::NotSent(Disconnect::WriterStopped);
        }
        self.wait_reply(id, rx, sent, deadline).await
    }

    /// Waits for the reply to request `id`, sent at `sent`, until
    /// `deadline`, watching the node: after half of `hung_after` without a
    /// byte from it, one ping goes out (a node that is merely slow to
    /// answer this request answers that at once); after all of it, the
    /// node is taken to be hung (a stopped process, a host whose packets
    /// vanish) and the connection is abandoned, which hands every request
    /// waiting on it to its caller as lost, to be tried elsewhere.
    async fn wait_reply(
        &self,
        id: u64,
        mut rx: oneshot::Receiver<Response>,
        sent: Instant,
        deadline: Instant,
    ) -> Outcome {
        loop {
            let check = match self.watch(sent) {
                Watch::Until(t) => t,
                Watch::Ping => {
                    self.ping();
                    continue;
                }
                Watch::Hung(quiet) => {
                    self.abandon_hung(quiet);
                    deadline
                }
            };
            match tokio::time::timeout_at(check.min(deadline), &mut rx).await {
                Ok(Ok(resp)) => return Outcome::Reply(resp),
                Ok(Err(_)) => {
                    let reason = self.pending.lock().expect("pending lock").closed.clone();
                    return Outcome::Lost(reason.unwrap_or(Disconnect::Closed));
                }
                Err(_) if Instant::now() >= deadline => {
                    // A late reply finds no waiter and is dropped.
                    self.pending
                        .lock()
                        .expect("pending lock")
                        .waiters
                        .remove(&id);
                    return Outcome::TimedOut {
                        silent: self.heard.heard() <= sent,
                    };
                }
                Err(_) => {}
            }
        }
    }

    /// What a caller that sent its request at `sent` should do about the
    /// node's silence now. The ping is given half of `hung_after` to be
    /// answered even when it went out late (this process was stopped
    /// itself, say), so that a pause of the client is not taken for one of
    /// the node.
    fn watch(&self, sent: Instant) -> Watch {
        let half = self.hung_after / 2;
        let quiet_since = self.heard.heard().max(sent);
        let pinged = self.heard.pinged();
        let now = Instant::now();
        if pinged < quiet_since {
            let ping_at = quiet_since + half;
            return if now >= ping_at {
                Watch::Ping
            } else {
                Watch::Until(ping_at)
            };
        }
        let hung_at = (quiet_since + self.hung_after).max(pinged + half);
        if now >= hung_at {
            Watch::Hung(now - quiet_since)
        } else {
            Watch::Until(hung_at)
        }
    }

    /// Sends a ping whose reply no one waits for: any byte that comes back
    /// shows the node alive.
    fn ping(&self) {
        self.heard
            .pinged_us
            .store(self.heard.now_us(), Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        encode_request(id, &Request::Ping, &mut frame);
        // A stopped writer closes the connection; the caller sees that.
        let _ = self.out.send(frame);
    }

    /// Sends a request answered by many replies (a watch) and returns its
    /// id and the receiver of its replies, buffered up to `capacity`
    /// frames (see [`route`] for a full buffer). The receiver ends after
    /// the reply that ends the stream, or when the connection closes.
    pub(crate) fn open_stream(
        &self,
        req: &Request,
        capacity: usize,
    ) -> Result<(u64, mpsc::Receiver<Response>), Disconnect> {
        self.open_waiter(req, capacity, Waiter::Stream)
    }

    /// [`Conn::open_stream`] for a stream whose consumer paces the
    /// connection (see `Waiter::Paced`): open it on a connection of its
    /// own.
    pub(crate) fn open_paced(
        &self,
        req: &Request,
        capacity: usize,
    ) -> Result<(u64, mpsc::Receiver<Response>), Disconnect> {
        self.open_waiter(req, capacity, Waiter::Paced)
    }

    fn open_waiter(
        &self,
        req: &Request,
        capacity: usize,
        waiter: fn(mpsc::Sender<Response>) -> Waiter,
    ) -> Result<(u64, mpsc::Receiver<Response>), Disconnect> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        {
            let mut p = self.pending.lock().expect("pending lock");
            if let Some(reason) = &p.closed {
                return Err(reason.clone());
            }
            p.waiters.insert(id, waiter(tx));
        }
        let mut frame = Vec::new();
        encode_request(id, req, &mut frame);
        if self.out.send(frame).is_err() {
            self.pending
                .lock()
                .expect("pending lock")
                .waiters
                .remove(&id);
            return Err(Disconnect::WriterStopped);
        }
        Ok((id, rx))
    }

    /// Ends the stream of request `id`: no more replies reach its
    /// receiver, and the node is asked to cancel the watch (its `Unit`
    /// reply, and a late watch end, find no waiter and are dropped).
    pub(crate) fn cancel_stream(&self, id: u64) {
        let was = self
            .pending
            .lock()
            .expect("pending lock")
            .waiters
            .remove(&id);
        if was.is_none() && self.is_closed() {
            return;
        }
        let cancel_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        let req = Request::Coord(CoordRequest::WatchCancel { watch_id: id });
        encode_request(cancel_id, &req, &mut frame);
        let _ = self.out.send(frame);
    }

    /// Gives the connection up: nothing came from the node for `quiet`.
    fn abandon_hung(&self, quiet: Duration) {
        self.abandon(Disconnect::Hung {
            after_ms: u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// The next reply of a stream, watching the node as [`Conn::call`]
    /// does: `since` is when the stream last heard from it (opened, or the
    /// last reply). `None`: the stream ended without an end reply (the
    /// connection closed or was abandoned as hung, or the buffer filled).
    pub(crate) async fn next_stream(
        &self,
        rx: &mut mpsc::Receiver<Response>,
        since: Instant,
    ) -> Option<Response> {
        loop {
            let check = match self.watch(since) {
                Watch::Until(t) => t,
                Watch::Ping => {
                    self.ping();
                    continue;
                }
                Watch::Hung(quiet) => {
                    self.abandon_hung(quiet);
                    return None;
                }
            };
            if let Ok(r) = tokio::time::timeout_at(check, rx.recv()).await {
                return r;
            }
        }
    }

    /// Closes the connection for `reason`: every request waiting on it is
    /// handed back as lost, and no new one may register.
    fn abandon(&self, reason: Disconnect) {
        tracing::debug!(endpoint = %self.endpoint, %reason, "abandoning the connection");
        close(&self.pending, reason);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn read_loop(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    pending: SharedPending,
    heard: Arc<Heard>,
    frame_size_max_bytes: usize,
) {
    let reason = loop {
        match split_frame(&mut buf, frame_size_max_bytes) {
            Err(e) => break Disconnect::Protocol(e),
            Ok(Some((id, body))) => match decode_response(body) {
                Err(e) => break Disconnect::Protocol(e),
                Ok(resp) => {
                    if let Some((tx, resp)) = route(&pending, id, resp) {
                        // A paced stream: wait for its consumer.
                        if tx.send(resp).await.is_err() {
                            pending.lock().expect("pending lock").waiters.remove(&id);
                        }
                    }
                }
            },
            Ok(None) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(READ_BUFFER_BYTES);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break Disconnect::ServerClosed,
                    Ok(_) => heard.heard_us.store(heard.now_us(), Ordering::Relaxed),
                    Err(e) => break Disconnect::Read(Arc::new(e)),
                }
            }
        }
    };
    tracing::debug!(%reason, "client connection closed");
    close(&pending, reason);
}

/// Hands a reply to whoever waits for its id. A stream keeps its place
/// until the reply that ends it (a watch end or an error). A stream whose
/// buffer is full is dropped (its receiver sees the end without an end
/// reply, as for a closed connection, and resumes): the reader task never
/// waits for a slow consumer, which would stall every other request. A
/// paced stream's reply is handed back instead, for the reader to wait
/// for room (its connection carries nothing else).
fn route(
    pending: &SharedPending,
    id: u64,
    resp: Response,
) -> Option<(mpsc::Sender<Response>, Response)> {
    let mut p = pending.lock().expect("pending lock");
    match p.waiters.remove(&id) {
        Some(Waiter::Once(tx)) => {
            let _ = tx.send(resp);
        }
        Some(Waiter::Stream(tx)) => {
            let ends = ends_stream(&resp);
            if tx.try_send(resp).is_ok() && !ends {
                p.waiters.insert(id, Waiter::Stream(tx));
            }
        }
        Some(Waiter::Paced(tx)) => {
            if !ends_stream(&resp) {
                p.waiters.insert(id, Waiter::Paced(tx.clone()));
            }
            return Some((tx, resp));
        }
        None => {}
    }
    None
}

/// Whether this reply is the last of a stream of replies.
pub(crate) fn ends_stream(resp: &Response) -> bool {
    matches!(
        resp,
        Response::Error(_)
            | Response::Coord(CoordResponse::WatchEnd { .. })
            | Response::Backup(BackupFrame::End(_))
    )
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: SharedPending,
) {
    let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
    while let Some(frame) = rx.recv().await {
        buf.extend_from_slice(&frame);
        while buf.len() < WRITE_BATCH_MAX_BYTES {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            close(&pending, Disconnect::Write(Arc::new(e)));
            return;
        }
        buf.clear();
    }
}
