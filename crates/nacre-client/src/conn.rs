//! One connection: a writer task, a reader task, and the map from request
//! id to the caller waiting for that reply. Replies may come back in any
//! order; the id pairs them with their callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use nacre_proto::{
    decode_response, encode_request, split_frame, ClientHello, ErrorCode, Limits, Request,
    Response, ServerHello, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{ClientError, Disconnect};

/// Frames the writer gathers into one `write_all`, so that pipelined
/// requests share system calls without one huge request starving others.
const WRITE_BATCH_MAX_BYTES: usize = 256 << 10;
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How a request fared on one connection.
pub(crate) enum Outcome {
    Reply(Response),
    /// Certainly not sent: safe to retry anywhere, writes included.
    NotSent(Disconnect),
    /// Sent (or possibly sent), then the connection broke.
    Lost(Disconnect),
    TimedOut,
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, oneshot::Sender<Response>>,
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

pub(crate) struct Conn {
    pub(crate) endpoint: String,
    pub(crate) node: String,
    pending: SharedPending,
    out: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    inflight: Arc<Semaphore>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conn {
    /// Connects and shakes hands, all within `timeout`.
    pub(crate) async fn open(
        endpoint: &str,
        cluster_id: &str,
        limits: &Limits,
        inflight_max: usize,
        timeout: Duration,
    ) -> Result<Conn, ClientError> {
        match tokio::time::timeout(
            timeout,
            Self::open_inner(endpoint, cluster_id, limits, inflight_max),
        )
        .await
        {
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

    async fn open_inner(
        endpoint: &str,
        cluster_id: &str,
        limits: &Limits,
        inflight_max: usize,
    ) -> Result<Conn, ClientError> {
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
        let (out, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(
            rd,
            buf,
            pending.clone(),
            limits.frame_size_max_bytes,
        ));
        let writer = tokio::spawn(write_loop(wr, rx, pending.clone()));
        Ok(Conn {
            endpoint: endpoint.to_string(),
            node: sh.node,
            pending,
            out,
            next_id: AtomicU64::new(1),
            inflight: Arc::new(Semaphore::new(inflight_max.max(1))),
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
            Err(_) => return Outcome::TimedOut,
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
            p.waiters.insert(id, tx);
        }
        let mut frame = Vec::new();
        encode_request(id, req, &mut frame);
        if self.out.send(frame).is_err() {
            self.pending
                .lock()
                .expect("pending lock")
                .waiters
                .remove(&id);
            return Outcome::NotSent(Disconnect::WriterStopped);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(resp)) => Outcome::Reply(resp),
            Ok(Err(_)) => {
                let reason = self.pending.lock().expect("pending lock").closed.clone();
                Outcome::Lost(reason.unwrap_or(Disconnect::Closed))
            }
            Err(_) => {
                // A late reply finds no waiter and is dropped.
                self.pending
                    .lock()
                    .expect("pending lock")
                    .waiters
                    .remove(&id);
                Outcome::TimedOut
            }
        }
    }
}

async fn read_loop(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    pending: SharedPending,
    frame_size_max_bytes: usize,
) {
    let reason = loop {
        match split_frame(&mut buf, frame_size_max_bytes) {
            Err(e) => break Disconnect::Protocol(e),
            Ok(Some((id, body))) => match decode_response(body) {
                Err(e) => break Disconnect::Protocol(e),
                Ok(resp) => {
                    let waiter = pending.lock().expect("pending lock").waiters.remove(&id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(resp);
                    }
                }
            },
            Ok(None) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(READ_BUFFER_BYTES);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break Disconnect::ServerClosed,
                    Ok(_) => {}
                    Err(e) => break Disconnect::Read(Arc::new(e)),
                }
            }
        }
    };
    tracing::debug!(%reason, "client connection closed");
    close(&pending, reason);
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
