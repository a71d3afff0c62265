//! Rust client for Nacre's native protocol.
//!
//! [`Client`] is async (tokio) and pipelined: it keeps one connection (to
//! the leader once known) with a writer task and a reader task, and every
//! request carries an id, so many tasks can share one `Client` (it is
//! `Clone`) with many requests in flight and replies in any order.
//! [`BlockingClient`] wraps it for scripts and tests.
//!
//! Retries: a call ends by its deadline (`request_timeout_ms`), not after a
//! number of attempts. Until then the client tries every endpoint, pausing
//! between attempts with jittered backoff (10 ms growing to 100 ms), so
//! that a call outlasts an election:
//!
//! - `NotMaster` (nothing was applied): the request goes to the leader the
//!   node names, at once the first time, after a pause later; or, with no
//!   name, or one the client has just failed to reach (the survivors of a
//!   dead leader go on naming it until they elect another), to the next
//!   endpoint after a pause.
//! - A connection that could not be made, or that broke, or whose node
//!   stopped answering (nothing heard for `hung_after_ms`, not even the
//!   answer to a ping): the client leaves that endpoint, tries the others
//!   first and does not follow hints naming it for a while. Connections
//!   are opened by racing the endpoints: the next one starts 100 ms after
//!   the last, or as soon as it failed, and the first handshake wins.
//! - `Busy`, `Unavailable`, `GoingDown` and `Timeout` from a node: tried
//!   again after a pause (elsewhere, but for `Busy`).
//! - Every other error (`NotFound`, `AssertionFailed`, `TooLarge`,
//!   `BadInput`, `InconsistentRead`, ...) is the answer, never retried;
//!   requests over the limits fail before they are sent.
//!
//! Every write carries this client's session (`nacre_proto::Session`: a
//! random client id and a sequence number), and the cluster remembers the
//! outcome of each stamped write for `session_retention_entries` log
//! entries. So a write whose outcome is unknown (its connection broke or
//! hung after it was sent, or its leader lost leadership before it
//! committed) is re-sent with the same stamp and applies at most once; a
//! retry answers with the first outcome. Membership changes carry no
//! session: they are re-sent only when certainly not applied. A call that
//! runs out of time fails with [`ClientError::Timeout`], which keeps the
//! latest attempt's failure as its source.

//!
//! Coordination (docs/coordination.md, `## Client`): [`Client::watch`]
//! streams the changes of a key span and resumes on another node from the
//! revision after the last one delivered (no gap, no duplicate);
//! [`Client::lease_grant`] and the other lease calls, with
//! [`LeaseKeeper`] renewing many leases in one request; waiting reads
//! ([`Client::get_wait`]); locks with fencing tokens ([`Client::lock`],
//! [`Client::fenced`]) and elections ([`Client::campaign`],
//! [`Client::observe`]).

// This file holds the client, its connection and `execute` with the retry
// rules; the typed calls, one per request, are in reads.rs, writes.rs,
// scripts.rs and cluster.rs.
mod backup;
mod blocking;
mod cluster;
mod conn;
#[cfg(test)]
mod coord_tests;
mod error;
#[cfg(test)]
mod fake;
mod leases;
mod lock;
mod reads;
mod retry;
mod scripts;
mod sequence;
mod wait;
mod watch;
mod writes;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use backup::{BackupPiece, BackupStream};
pub use blocking::BlockingClient;
pub use error::{ClientError, Disconnect, EndpointError};
pub use leases::{LeaseKeeper, LeaseLoss, LostLease};
pub use lock::{lock_prefix, LeaderStream, Leadership, LockGuard};
pub use nacre_proto::{BackupSummary, EventKind, KeySpan, LeaseInfo, WatchEvent};
pub use nacre_proto::{
    Batch, Bytes, Consistency, ErrorCode, ErrorReply, Guard, KeyEntry, Limits, Op, Page, PageItem,
    RangeQuery, Request, Response, Revision, ScriptSource, ScriptSummary, ScriptVersionInfo,
    VersionInfo,
};
pub use reads::Pages;
pub use scripts::Called;
pub use sequence::Sequence;
pub use wait::WaitFor;
pub use watch::{WatchBatch, WatchOptions, WatchStream};

/// What ends a watch stream: a [`ClientError`] (`Compacted`,
/// `WatchEnded`, a refusal, a timeout).
pub type WatchError = ClientError;

use conn::{Candidate, Conn, ConnParams, Outcome};
use retry::{resend_safe, Backoff, Suspects};

/// How to reach a cluster and how patient to be.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` client addresses of the nodes; tried in order.
    pub endpoints: Vec<String>,
    /// The cluster to talk to; empty accepts any.
    pub cluster_id: String,
    /// A whole call, retries included, ends within this: the client keeps
    /// trying until then (an election takes about one to two election
    /// timeouts). A write that timed out may or may not have applied.
    pub request_timeout_ms: u64,
    /// One connection attempt, handshake included. Endpoints are raced
    /// (the next starts 100 ms after the last), so an endpoint that does
    /// not answer delays a connection by this only when none answers.
    pub connect_timeout_ms: u64,
    /// A connection on which a request has waited this long without a
    /// byte from its node is abandoned, and its requests tried elsewhere;
    /// a ping goes out after half of it, so a node that is alive but slow
    /// to answer a request is not left. This is how a stopped leader (a
    /// paused process, a host gone silent) is noticed.
    pub hung_after_ms: u64,
    /// Requests in flight on the connection; callers beyond wait.
    pub inflight_max: usize,
    /// At most this many re-sends per call, on top of the deadline. `0`
    /// makes one attempt whose answer, `NotMaster` included, is the
    /// call's: for asking one node for its own view. The default
    /// (`u32::MAX`) leaves the deadline alone to end a call.
    pub retries_max: u32,
    /// Checked before sending, so oversized requests fail without a round
    /// trip. Should match the servers' limits.
    pub limits: Limits,
    /// The consistency of reads unless [`Client::with_consistency`] says
    /// otherwise.
    pub consistency: Consistency,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            endpoints: vec!["127.0.0.1:7379".to_string()],
            cluster_id: String::new(),
            request_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            hung_after_ms: 1_000,
            inflight_max: 1024,
            retries_max: u32::MAX,
            limits: Limits::default(),
            consistency: Consistency::Consistent,
        }
    }
}

impl ClientOptions {
    /// Options for these endpoints, defaults for the rest.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> ClientOptions {
        ClientOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientOptions::default()
        }
    }
}

/// What a write reports: the log index it applied at (use it with
/// `Consistency::AtLeast` for read-your-writes on any node), the previous
/// value (test_and_set, replace) and a count (delete_prefix).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    pub index: u64,
    pub prev: Option<Bytes>,
    pub count: u64,
}

struct Shared {
    opts: ClientOptions,
    params: ConnParams,
    current: Mutex<Option<Arc<Conn>>>,
    /// Serialises reconnects so that many failing callers open one
    /// connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// The endpoint to try first when no leader is known.
    cursor: AtomicUsize,
    leader_hint: Mutex<Option<String>>,
    /// Endpoints recently failed: tried last, and not believed as leader.
    suspects: Suspects,
    backoff: Backoff,
    /// This client's session: every write carries (client_id, seq), so
    /// the cluster applies a write retried after a failover at most once.
    client_id: u64,
    seq: std::sync::atomic::AtomicU64,
}

/// A session id unlikely to collide with another client's: the process,
/// the time and a per-process random hasher key, mixed.
fn new_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish().max(1)
}

/// An async, pipelined, cloneable client. See the crate docs for retries.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    consistency: Consistency,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.shared.opts.endpoints)
            .field("consistency", &self.consistency)
            .finish()
    }
}

fn unexpected(request: &'static str, r: Response) -> ClientError {
    match r {
        Response::Error(e) => ClientError::Server(e),
        other => ClientError::UnexpectedResponse {
            request,
            response: format!("{other:?}"),
        },
    }
}

fn not_found(key: &Bytes) -> ClientError {
    ClientError::Server(ErrorReply::new(ErrorCode::NotFound, "key not found").with_key(key.clone()))
}

impl Client {
    /// Connects to the first endpoint that answers (errors if none does).
    pub async fn connect(opts: ClientOptions) -> Result<Client, ClientError> {
        if opts.endpoints.is_empty() {
            return Err(ClientError::AllEndpointsFailed { errors: vec![] });
        }
        let consistency = opts.consistency;
        let client_id = new_client_id();
        let deadline = Instant::now() + Duration::from_millis(opts.request_timeout_ms);
        let client = Client {
            shared: Arc::new(Shared {
                params: ConnParams::new(&opts),
                opts,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                cursor: AtomicUsize::new(0),
                leader_hint: Mutex::new(None),
                suspects: Suspects::default(),
                backoff: Backoff::new(client_id),
                client_id,
                seq: std::sync::atomic::AtomicU64::new(1),
            }),
            consistency,
        };
        // One round over the endpoints: a client of a cluster that is not
        // there fails at once rather than at the deadline.
        client.conn(deadline).await?;
        Ok(client)
    }

    /// The same client (sharing its connection) reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Client {
        Client {
            shared: self.shared.clone(),
            consistency,
        }
    }

    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    pub fn options(&self) -> &ClientOptions {
        &self.shared.opts
    }

    /// The endpoint and node name of the current connection, if any.
    pub fn connected_to(&self) -> Option<(String, String)> {
        let cur = self.shared.current.lock().expect("client lock");
        cur.as_ref().map(|c| (c.endpoint.clone(), c.node.clone()))
    }

    async fn conn(&self, deadline: Instant) -> Result<Arc<Conn>, ClientError> {
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let _g = self.shared.connecting.lock().await;
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let c = Arc::new(self.connect_any(deadline).await?);
        *self.shared.current.lock().expect("client lock") = Some(c.clone());
        Ok(c)
    }

    fn live_conn(&self) -> Option<Arc<Conn>> {
        let cur = self.shared.current.lock().expect("client lock");
        cur.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Races the leader hint and the endpoints (see [`Client::candidates`]).
    async fn connect_any(&self, deadline: Instant) -> Result<Conn, ClientError> {
        let s = &self.shared;
        let conn = conn::race(&self.candidates(), &s.params, deadline, &s.suspects).await?;
        s.suspects.reached(&conn.endpoint);
        if let Some(at) = s.opts.endpoints.iter().position(|e| *e == conn.endpoint) {
            s.cursor.store(at, Ordering::Relaxed);
        }
        Ok(conn)
    }

    /// The order to try endpoints in: the leader hint, then every endpoint
    /// from the cursor on, the suspects last (a hint naming one is not
    /// followed, see `judge_error`).
    fn candidates(&self) -> Vec<Candidate> {
        let s = &self.shared;
        let hint = s.leader_hint.lock().expect("client lock").take();
        let n = s.opts.endpoints.len();
        let start = s.cursor.load(Ordering::Relaxed);
        let mut fresh = Vec::with_capacity(n + 1);
        let mut suspect = Vec::new();
        if let Some(h) = &hint {
            fresh.push(Candidate {
                endpoint: h.clone(),
                leader_hint: true,
            });
        }
        for i in 0..n {
            let e = &s.opts.endpoints[(start + i) % n];
            if Some(e) == hint.as_ref() {
                continue;
            }
            let c = Candidate {
                endpoint: e.clone(),
                leader_hint: false,
            };
            if s.suspects.is_suspect(e) {
                suspect.push(c);
            } else {
                fresh.push(c);
            }
        }
        fresh.extend(suspect);
        fresh
    }

    /// Forgets `conn` (if still current) so the next call reconnects.
    fn drop_conn(&self, conn: &Arc<Conn>, move_on: bool) {
        let mut cur = self.shared.current.lock().expect("client lock");
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *cur = None;
            if move_on {
                let n = self.shared.opts.endpoints.len().max(1);
                if let Some(i) = self
                    .shared
                    .opts
                    .endpoints
                    .iter()
                    .position(|e| *e == conn.endpoint)
                {
                    self.shared.cursor.store((i + 1) % n, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends any request with the retry rules of the crate docs and
    /// returns the raw reply; an error reply becomes `ClientError::Server`.
    pub async fn execute(&self, req: Request) -> Result<Response, ClientError> {
        self.shared
            .opts
            .limits
            .check_request(&req)
            .map_err(ClientError::Limit)?;
        let timeout_ms = self.shared.opts.request_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let req = self.stamp(req);
        let mut call = Call::default();
        let timed_out = |last: Option<ClientError>| ClientError::Timeout {
            after_ms: timeout_ms,
            last: last.map(Box::new),
        };
        loop {
            let (error, pause) = match self.attempt(&req, deadline, &mut call).await {
                Step::Done(r) => return r,
                Step::OutOfTime => return Err(timed_out(call.last)),
                Step::Retry { error, pause } => (error, pause),
            };
            if call.retries >= self.shared.opts.retries_max {
                return Err(error);
            }
            if Instant::now() >= deadline {
                return Err(timed_out(Some(error)));
            }
            call.retries += 1;
            tracing::debug!(%error, retries = call.retries, "retrying");
            if pause {
                call.pauses += 1;
                let pause = self.shared.backoff.pause(call.pauses);
                tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            }
            call.last = Some(error);
        }
    }

    /// Stamps writes with the session so that re-sending one after a lost
    /// connection or a leader change cannot apply it twice.
    fn stamp(&self, req: Request) -> Request {
        match req {
            r @ Request::Session { .. } => r,
            r if r.may_write() => Request::Session {
                session: nacre_proto::Session {
                    client_id: self.shared.client_id,
                    seq: self.shared.seq.fetch_add(1, Ordering::Relaxed),
                },
                request: Box::new(r),
            },
            r => r,
        }
    }

    /// One attempt of a call: a connection (reused or raced for), the
    /// request, and what its outcome means.
    async fn attempt(&self, req: &Request, deadline: Instant, call: &mut Call) -> Step {
        let conn = match tokio::time::timeout_at(deadline, self.conn(deadline)).await {
            Err(_) => return Step::OutOfTime,
            Ok(Ok(c)) => c,
            Ok(Err(error @ ClientError::AllEndpointsFailed { .. })) => {
                return Step::Retry { error, pause: true }
            }
            Ok(Err(e)) => return Step::Done(Err(e)),
        };
        let lost = |reason| ClientError::Disconnected {
            endpoint: conn.endpoint.clone(),
            reason,
        };
        match conn.call(req, deadline).await {
            Outcome::Reply(Response::Error(e)) => self.judge_error(req, &conn, e, call),
            Outcome::Reply(r) => Step::Done(Ok(r)),
            Outcome::TimedOut { silent } => {
                // A node that said nothing at all in the whole time may be
                // stopped: the next call starts elsewhere.
                if silent {
                    self.drop_conn(&conn, true);
                }
                Step::OutOfTime
            }
            // A connection that breaks is left at once for another (its
            // node died, typically); but should that keep happening, the
            // client must not reconnect in a tight loop.
            Outcome::NotSent(reason) => {
                self.left(&conn);
                Step::Retry {
                    error: lost(reason),
                    pause: call.retries > 0,
                }
            }
            Outcome::Lost(reason) => {
                self.left(&conn);
                if !resend_safe(req) {
                    return Step::Done(Err(ClientError::ConnectionLost {
                        endpoint: conn.endpoint.clone(),
                        reason,
                    }));
                }
                Step::Retry {
                    error: lost(reason),
                    pause: call.retries > 0,
                }
            }
        }
    }

    /// What an error reply means for the call: another attempt (where,
    /// and after a pause or not), or the answer.
    fn judge_error(&self, req: &Request, conn: &Arc<Conn>, e: ErrorReply, call: &mut Call) -> Step {
        let s = &self.shared;
        match e.code {
            // Not applied: safe to re-send, writes included.
            ErrorCode::NotMaster => {
                // A node names the leader it last heard of, which may be
                // the one whose connection just broke (a dead leader is
                // named until the survivors elect another): following
                // that would spend the call on a node that is not there.
                let hint = e
                    .leader
                    .clone()
                    .filter(|l| *l != conn.endpoint && !s.suspects.is_suspect(l));
                let error = match e.leader {
                    Some(_) => ClientError::Server(e),
                    None => ClientError::NoLeader(format!(
                        "{} is not the leader: {}",
                        conn.endpoint, e.message
                    )),
                };
                self.drop_conn(conn, hint.is_none());
                let Some(l) = hint else {
                    return Step::Retry { error, pause: true };
                };
                *s.leader_hint.lock().expect("client lock") = Some(l);
                call.hints += 1;
                // The first hint is followed at once; hints that keep
                // missing (nodes disagree while an election settles) are
                // followed after a pause.
                Step::Retry {
                    error,
                    pause: call.hints > 1,
                }
            }
            // The node's queue for the log is full: nothing was queued.
            ErrorCode::Busy => Step::Retry {
                error: ClientError::Server(e),
                pause: true,
            },
            // The node is stopping, cannot confirm its leadership, or lost
            // it before the write committed: the outcome of a write is
            // unknown, and only a request that may be re-sent is.
            ErrorCode::GoingDown | ErrorCode::Unavailable | ErrorCode::Timeout
                if resend_safe(req) =>
            {
                if e.code == ErrorCode::GoingDown {
                    self.left(conn);
                } else {
                    self.drop_conn(conn, true);
                }
                Step::Retry {
                    error: ClientError::Server(e),
                    pause: true,
                }
            }
            _ => Step::Done(Err(ClientError::Server(e))),
        }
    }

    /// Leaves a connection that broke, hung or whose node is going down:
    /// its endpoint becomes a suspect.
    fn left(&self, conn: &Arc<Conn>) {
        self.shared.suspects.failed(&conn.endpoint);
        self.drop_conn(conn, true);
    }
}

/// What one attempt of a call came to.
enum Step {
    Done(Result<Response, ClientError>),
    /// The deadline passed.
    OutOfTime,
    /// Worth another attempt; `error` is the call's answer if it may not
    /// have one (`retries_max`), and a timeout's source if it runs out of
    /// time.
    Retry {
        error: ClientError,
        pause: bool,
    },
}

/// What a call remembers between its attempts.
#[derive(Default)]
struct Call {
    retries: u32,
    pauses: u32,
    /// Leader hints followed.
    hints: u32,
    /// The latest failed attempt's error, for a timeout to carry.
    last: Option<ClientError>,
}
