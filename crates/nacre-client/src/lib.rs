//! Rust client for Nacre's native protocol.
//!
//! [`Client`] is async (tokio) and pipelined: it keeps one connection (to
//! the leader once known) with a writer task and a reader task, and every
//! request carries an id, so many tasks can share one `Client` (it is
//! `Clone`) with many requests in flight and replies in any order.
//! [`BlockingClient`] wraps it for scripts and tests.
//!
//! Retries: a request that gets `NotMaster` is re-sent to the hinted leader
//! (or the next endpoint): the server did not apply it. Only the first hint
//! is followed at once; later retries pause (growing from 20 ms to 1 s), so
//! that they last through an election instead of chasing a dead leader's
//! name. A request that was
//! certainly not sent (the connection could not be made) is retried too.
//! Every write carries this client's session (`nacre_proto::Session`: a
//! random client id and a sequence number), and the cluster remembers the
//! outcome of each stamped write for `session_retention_entries` log
//! entries. So a write whose connection broke, or whose leader lost
//! leadership before it committed (`Timeout`), is re-sent with the same
//! stamp and applies at most once; a retry answers with the first outcome.
//! Reads are retried on another endpoint after a broken connection.

// This file holds the client, its connection and `execute` with the retry
// rules; the typed calls, one per request, are in reads.rs, writes.rs,
// scripts.rs and cluster.rs.
mod blocking;
mod cluster;
mod conn;
mod error;
mod reads;
mod scripts;
mod sequence;
mod writes;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use blocking::BlockingClient;
pub use error::{ClientError, Disconnect, EndpointError};
pub use nacre_proto::{
    Batch, Bytes, Consistency, ErrorCode, ErrorReply, Guard, KeyEntry, Limits, Op, Page, PageItem,
    RangeQuery, Request, Response, Revision, ScriptSource, ScriptSummary, ScriptVersionInfo,
    VersionInfo,
};
pub use reads::Pages;
pub use scripts::Called;
pub use sequence::Sequence;

use conn::{Conn, Outcome};

/// How to reach a cluster and how patient to be.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` client addresses of the nodes; tried in order.
    pub endpoints: Vec<String>,
    /// The cluster to talk to; empty accepts any.
    pub cluster_id: String,
    /// A whole call, retries included, must finish within this.
    pub request_timeout_ms: u64,
    /// One connection attempt, handshake included.
    pub connect_timeout_ms: u64,
    /// Requests in flight on the connection; callers beyond wait.
    pub inflight_max: usize,
    /// Re-sends after `NotMaster`, reconnects and lost reads, per call.
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
            connect_timeout_ms: 3_000,
            inflight_max: 1024,
            retries_max: 5,
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
    current: Mutex<Option<Arc<Conn>>>,
    /// Serialises reconnects so that many failing callers open one
    /// connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// The endpoint to try first when no leader is known.
    cursor: AtomicUsize,
    leader_hint: Mutex<Option<String>>,
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
        let client = Client {
            shared: Arc::new(Shared {
                opts,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                cursor: AtomicUsize::new(0),
                leader_hint: Mutex::new(None),
                client_id: new_client_id(),
                seq: std::sync::atomic::AtomicU64::new(1),
            }),
            consistency,
        };
        client.conn().await?;
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

    async fn conn(&self) -> Result<Arc<Conn>, ClientError> {
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let _g = self.shared.connecting.lock().await;
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let c = Arc::new(self.connect_any().await?);
        *self.shared.current.lock().expect("client lock") = Some(c.clone());
        Ok(c)
    }

    fn live_conn(&self) -> Option<Arc<Conn>> {
        let cur = self.shared.current.lock().expect("client lock");
        cur.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Tries the leader hint, then every endpoint from the cursor on.
    async fn connect_any(&self) -> Result<Conn, ClientError> {
        let o = &self.shared.opts;
        let timeout = Duration::from_millis(o.connect_timeout_ms.max(1));
        let mut errors = Vec::new();
        let hint = self.shared.leader_hint.lock().expect("client lock").take();
        if let Some(addr) = hint {
            match Conn::open(&addr, &o.cluster_id, &o.limits, o.inflight_max, timeout).await {
                Ok(c) => return Ok(c),
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e) => errors.push(EndpointError {
                    endpoint: addr,
                    leader_hint: true,
                    error: Box::new(e),
                }),
            }
        }
        let n = o.endpoints.len();
        let start = self.shared.cursor.load(Ordering::Relaxed);
        for i in 0..n {
            let at = (start + i) % n;
            let addr = &o.endpoints[at];
            match Conn::open(addr, &o.cluster_id, &o.limits, o.inflight_max, timeout).await {
                Ok(c) => {
                    self.shared.cursor.store(at, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(endpoint = %addr, error = %e, "connect failed");
                    errors.push(EndpointError {
                        endpoint: addr.clone(),
                        leader_hint: false,
                        error: Box::new(e),
                    });
                }
            }
        }
        Err(ClientError::AllEndpointsFailed { errors })
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
        let timed_out = || ClientError::Timeout {
            after_ms: timeout_ms,
        };
        // Stamp writes with the session so that re-sending one after a
        // lost connection or a leader change cannot apply it twice.
        let req = match req {
            r @ Request::Session { .. } => r,
            r if r.may_write() => Request::Session {
                session: nacre_proto::Session {
                    client_id: self.shared.client_id,
                    seq: self.shared.seq.fetch_add(1, Ordering::Relaxed),
                },
                request: Box::new(r),
            },
            r => r,
        };
        let retries_max = self.shared.opts.retries_max;
        let mut retries = 0u32;
        loop {
            let conn = match tokio::time::timeout_at(deadline, self.conn()).await {
                Err(_) => return Err(timed_out()),
                Ok(Ok(c)) => c,
                Ok(Err(e @ ClientError::AllEndpointsFailed { .. })) if retries < retries_max => {
                    retries += 1;
                    tracing::debug!(error = %e, retries, "no endpoint answered; retrying");
                    self.backoff(retries, deadline).await;
                    continue;
                }
                Ok(Err(e)) => return Err(e),
            };
            match conn.call(&req, deadline).await {
                Outcome::Reply(Response::Error(e)) if e.code == ErrorCode::NotMaster => {
                    // Not applied: safe to re-send, writes included.
                    let hinted = e.leader.clone().filter(|l| *l != conn.endpoint);
                    if retries >= retries_max {
                        return Err(match e.leader {
                            Some(_) => ClientError::Server(e),
                            None => ClientError::NoLeader(format!(
                                "{} is not the leader: {}",
                                conn.endpoint, e.message
                            )),
                        });
                    }
                    retries += 1;
                    self.drop_conn(&conn, hinted.is_none());
                    let follow_at_once = hinted.is_some() && retries == 1;
                    if let Some(l) = hinted {
                        *self.shared.leader_hint.lock().expect("client lock") = Some(l);
                    }
                    // The first hint is followed at once. Otherwise (an
                    // unknown leader, or hints that keep missing while an
                    // election settles: a follower may still name a leader
                    // that just died) pause, so that the retries outlast
                    // the election instead of being spent in a moment.
                    if !follow_at_once {
                        self.backoff(retries, deadline).await;
                    }
                }
                // The leader changed under a stamped write: its outcome is
                // unknown, and the session makes asking again safe.
                Outcome::Reply(Response::Error(e))
                    if e.code == ErrorCode::Timeout
                        && matches!(req, Request::Session { .. })
                        && retries < retries_max =>
                {
                    retries += 1;
                    self.drop_conn(&conn, true);
                    self.backoff(retries, deadline).await;
                }
                Outcome::Reply(Response::Error(e)) => return Err(ClientError::Server(e)),
                Outcome::Reply(r) => return Ok(r),
                Outcome::TimedOut => return Err(timed_out()),
                Outcome::NotSent(reason) => {
                    self.drop_conn(&conn, true);
                    if retries >= retries_max {
                        return Err(ClientError::Disconnected {
                            endpoint: conn.endpoint.clone(),
                            reason,
                        });
                    }
                    retries += 1;
                    self.backoff(retries, deadline).await;
                }
                Outcome::Lost(reason) => {
                    self.drop_conn(&conn, true);
                    if req.may_write() && !matches!(req, Request::Session { .. }) {
                        return Err(ClientError::ConnectionLost {
                            endpoint: conn.endpoint.clone(),
                            reason,
                        });
                    }
                    if retries >= retries_max {
                        return Err(ClientError::Disconnected {
                            endpoint: conn.endpoint.clone(),
                            reason,
                        });
                    }
                    retries += 1;
                }
            }
        }
    }

    async fn backoff(&self, retries: u32, deadline: Instant) {
        let pause = Duration::from_millis((10u64 << retries.min(7)).min(1_000));
        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
    }
}
