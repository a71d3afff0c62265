//! Watches that outlive their connection: [`Client::watch`] returns a
//! stream of whole revisions of changes, fed by a task that re-watches on
//! another node whenever a watch ends for a reason that is not the
//! watch's own (a broken or hung connection, a node going down, a slow
//! consumer), from the revision after the last one it fully delivered. So
//! the consumer sees every change once, in order, without a gap.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nacre_proto::{
    CoordRequest, CoordResponse, ErrorCode, ErrorReply, KeySpan, Request, Response, WatchEvent,
    WatchSpec,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::{Client, ClientError};

/// Frames a watch buffers between the connection and its task before the
/// watch is dropped there and resumed (see `conn::route`).
const CONN_BUFFER_FRAMES: usize = 256;

/// How a watch starts and what it reports.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The first revision to report; 0: the next one the node applies.
    pub start_rev: u64,
    /// Carry each key's previous value in its events.
    pub prev_value: bool,
    /// Also yield batches without events: the one that says the watch
    /// started (its `revision` is the one before the first that will be
    /// reported) and the node's progress notifications.
    pub progress: bool,
    /// Batches the stream holds for a consumer that has not taken them;
    /// beyond that the watch waits, and the node, its buffer full too,
    /// ends it as a slow consumer (resumed without a gap).
    pub buffer_batches: usize,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            start_rev: 0,
            prev_value: false,
            progress: false,
            buffer_batches: 64,
        }
    }
}

/// Changes of whole revisions: every change of the watched span up to and
/// including `revision` has now been reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: u64,
    pub events: Vec<WatchEvent>,
}

/// The changes of a key span, batch by batch; see [`Client::watch`].
/// Dropping it cancels the watch on the node.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchBatch, ClientError>>,
}

impl WatchStream {
    /// The next batch; an error ends the stream. `None` after the end.
    pub async fn next(&mut self) -> Option<Result<WatchBatch, ClientError>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for WatchStream {
    type Item = Result<WatchBatch, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Client {
    /// Watches `span` from `opts.start_rev`. The stream yields batches of
    /// whole revisions in order, each change once. When the watch's
    /// connection breaks or hangs, its node goes down (`cancelled`,
    /// `going_down`), or ends it as a slow consumer, the watch starts
    /// again (on another node where the node went away) from the revision
    /// after the last batch it delivered, and the events of revisions
    /// already delivered are left out. It ends with an error:
    /// [`ClientError::Compacted`] (the revisions wanted are gone),
    /// [`ClientError::WatchEnded`], a refusal (`bad_input`, ...), or a
    /// `Timeout` when no node took the watch for `request_timeout_ms`.
    /// Runs a task: call it within a tokio runtime.
    pub fn watch(&self, span: KeySpan, opts: WatchOptions) -> WatchStream {
        let (tx, rx) = mpsc::channel(opts.buffer_batches.max(1));
        let w = Watcher {
            client: self.clone(),
            span,
            opts,
            delivered: None,
            out: tx,
        };
        tokio::spawn(w.run());
        WatchStream { rx }
    }
}

/// How one watch on one connection ended.
enum Ended {
    /// The consumer is gone, or got the error that ends the stream.
    Stop,
    /// Watch again from the revision after the last delivered.
    Resume { error: ClientError, pause: bool },
}

struct Watcher {
    client: Client,
    span: KeySpan,
    opts: WatchOptions,
    /// Every change up to this revision was delivered (`None`: not known
    /// yet, before a watch from 0 started).
    delivered: Option<u64>,
    out: mpsc::Sender<Result<WatchBatch, ClientError>>,
}

impl Watcher {
    async fn run(mut self) {
        let timeout_ms = self.client.shared.opts.request_timeout_ms;
        let mut pauses = 0;
        // Since when watches have failed without one delivering a frame.
        let mut failing_since: Option<Instant> = None;
        loop {
            let healthy_before = self.delivered;
            let (error, pause) = match self.session().await {
                Ended::Stop => return,
                Ended::Resume { error, pause } => (error, pause),
            };
            tracing::debug!(%error, delivered = ?self.delivered, "watch resumes");
            if self.delivered != healthy_before {
                failing_since = None;
                pauses = 0;
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(timeout_ms) {
                let e = ClientError::Timeout {
                    after_ms: timeout_ms,
                    last: Some(Box::new(error)),
                };
                let _ = self.out.send(Err(e)).await;
                return;
            }
            if pause {
                pauses += 1;
                let p = self.client.shared.backoff.pause(pauses);
                tokio::select! {
                    () = tokio::time::sleep(p) => {}
                    () = self.out.closed() => return,
                }
            }
        }
    }

    /// The revision to watch from: after the last delivered one.
    fn start_rev(&self) -> u64 {
        self.delivered.map_or(self.opts.start_rev, |d| d + 1)
    }

    /// One watch on one connection, until it ends.
    async fn session(&mut self) -> Ended {
        let deadline =
            Instant::now() + Duration::from_millis(self.client.shared.opts.request_timeout_ms);
        let conn = tokio::select! {
            c = self.client.conn(deadline) => c,
            () = self.out.closed() => return Ended::Stop,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e @ (ClientError::Refused { .. } | ClientError::Limit(_))) => {
                return self.fail(e).await
            }
            Err(error) => return Ended::Resume { error, pause: true },
        };
        let req = Request::Coord(CoordRequest::Watch(WatchSpec {
            span: self.span.clone(),
            start_rev: self.start_rev(),
            prev_value: self.opts.prev_value,
        }));
        if let Err(e) = self.client.shared.opts.limits.check_request(&req) {
            return self.fail(ClientError::Limit(e)).await;
        }
        let (id, mut rx) = match conn.open_stream(&req, CONN_BUFFER_FRAMES) {
            Ok(s) => s,
            Err(reason) => {
                self.client.left(&conn);
                return Ended::Resume {
                    error: lost(&conn, reason),
                    pause: true,
                };
            }
        };
        let mut since = Instant::now();
        loop {
            let reply = tokio::select! {
                r = conn.next_stream(&mut rx, since) => r,
                () = self.out.closed() => {
                    conn.cancel_stream(id);
                    return Ended::Stop;
                }
            };
            since = Instant::now();
            let Some(reply) = reply else {
                return self.stream_broke(&conn, id);
            };
            if let Some(end) = self.handle(&conn, reply).await {
                return end;
            }
        }
    }

    /// The stream ended without an end reply: the connection closed (or
    /// was abandoned as hung), or its buffer filled while this task was
    /// waiting for the consumer.
    fn stream_broke(&self, conn: &Arc<Conn>, id: u64) -> Ended {
        if conn.is_closed() {
            self.client.left(conn);
            return Ended::Resume {
                error: lost(conn, crate::Disconnect::Closed),
                pause: false,
            };
        }
        conn.cancel_stream(id);
        Ended::Resume {
            error: ClientError::Server(ErrorReply::new(
                ErrorCode::SlowConsumer,
                "the watch's buffer in the client filled",
            )),
            pause: false,
        }
    }

    /// One reply of the watch: `None` while it goes on.
    async fn handle(&mut self, conn: &Arc<Conn>, reply: Response) -> Option<Ended> {
        match reply {
            Response::Coord(CoordResponse::Watched { events, revision }) => {
                self.deliver(events, revision).await
            }
            Response::Coord(CoordResponse::WatchEnd {
                code,
                message,
                revision,
            }) => Some(self.ended(conn, code, message, revision).await),
            Response::Error(e) => Some(self.refused(conn, e).await),
            other => Some(
                self.fail(ClientError::UnexpectedResponse {
                    request: "watch",
                    response: format!("{other:?}"),
                })
                .await,
            ),
        }
    }

    /// Passes on the changes of revisions not delivered yet.
    async fn deliver(&mut self, events: Vec<WatchEvent>, revision: u64) -> Option<Ended> {
        let after = self.delivered;
        let events: Vec<WatchEvent> = match after {
            Some(d) => events.into_iter().filter(|e| e.revision() > d).collect(),
            None => events,
        };
        if after.is_some_and(|d| revision <= d) {
            // A re-watch's first frame, or revisions seen already.
            return None;
        }
        // A watch from 0 whose first frame says 0 has not told where it
        // starts: a resume must not replay history from revision 1.
        if after.is_some() || revision > 0 || !events.is_empty() || self.opts.start_rev > 0 {
            self.delivered = Some(revision);
        }
        if events.is_empty() && !self.opts.progress {
            return None;
        }
        let batch = WatchBatch { revision, events };
        match self.out.send(Ok(batch)).await {
            Ok(()) => None,
            Err(_) => Some(Ended::Stop),
        }
    }

    /// The node ended the watch.
    async fn ended(
        &mut self,
        conn: &Arc<Conn>,
        code: ErrorCode,
        message: String,
        revision: u64,
    ) -> Ended {
        let error = ClientError::WatchEnded {
            code,
            message: message.clone(),
        };
        match code {
            ErrorCode::Compacted => {
                let e = ClientError::Compacted {
                    requested_rev: self.start_rev(),
                    oldest_rev: revision,
                };
                self.fail(e).await
            }
            ErrorCode::SlowConsumer => Ended::Resume { error, pause: true },
            ErrorCode::Cancelled | ErrorCode::GoingDown | ErrorCode::Unavailable => {
                // The node stops serving: resume on another.
                self.client.left(conn);
                Ended::Resume { error, pause: true }
            }
            _ => self.fail(ClientError::WatchEnded { code, message }).await,
        }
    }

    /// The node refused or ended the watch with an error reply.
    async fn refused(&mut self, conn: &Arc<Conn>, e: ErrorReply) -> Ended {
        match e.code {
            ErrorCode::Busy | ErrorCode::Timeout | ErrorCode::InconsistentRead => Ended::Resume {
                error: ClientError::Server(e),
                pause: true,
            },
            ErrorCode::GoingDown
            | ErrorCode::Unavailable
            | ErrorCode::NotMaster
            | ErrorCode::Cancelled
            | ErrorCode::SlowConsumer => {
                self.client.left(conn);
                Ended::Resume {
                    error: ClientError::Server(e),
                    pause: true,
                }
            }
            ErrorCode::Compacted => {
                let err = ClientError::Compacted {
                    requested_rev: self.start_rev(),
                    oldest_rev: 0,
                };
                self.fail(err).await
            }
            _ => self.fail(ClientError::Server(e)).await,
        }
    }

    /// Ends the stream with `e`.
    async fn fail(&mut self, e: ClientError) -> Ended {
        let _ = self.out.send(Err(e)).await;
        Ended::Stop
    }
}

fn lost(conn: &Conn, reason: crate::Disconnect) -> ClientError {
    ClientError::Disconnected {
        endpoint: conn.endpoint.clone(),
        reason,
    }
}
