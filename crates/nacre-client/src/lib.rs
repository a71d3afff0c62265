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

mod blocking;
mod cluster;
mod conn;
mod error;
mod sequence;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use blocking::BlockingClient;
pub use error::ClientError;
pub use nacre_proto::{
    Batch, Bytes, Consistency, ErrorCode, ErrorReply, Guard, KeyEntry, Limits, Op, RangeQuery,
    Request, Response, Revision, ScriptSource, ScriptSummary, ScriptVersionInfo, VersionInfo,
};
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
            return Err(ClientError::AllEndpointsFailed {
                errors: vec!["no endpoints given".into()],
            });
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
                Err(e) => errors.push(format!("{addr} (leader hint): {e}")),
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
                    errors.push(format!("{addr}: {e}"));
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
                        return Err(ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            format!("{}: {reason}", conn.endpoint),
                        )));
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
                        return Err(ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            format!("{}: {reason}", conn.endpoint),
                        )));
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

    // ---- admin ----

    /// The server's ping reply (its name and version).
    pub async fn ping(&self) -> Result<String, ClientError> {
        match self.execute(Request::Ping).await? {
            Response::Text(s) => Ok(s),
            Response::Unit => Ok(String::new()),
            r => Err(unexpected("ping", r)),
        }
    }

    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        match self.execute(Request::Version).await? {
            Response::Version(v) => Ok(v),
            r => Err(unexpected("version", r)),
        }
    }

    /// The leader's client address, if the node knows one.
    pub async fn who_master(&self) -> Result<Option<String>, ClientError> {
        match self.execute(Request::WhoMaster).await? {
            Response::Master(m) => Ok(m),
            Response::Text(s) => Ok(Some(s)),
            r => Err(unexpected("who_master", r)),
        }
    }

    pub async fn statistics(&self) -> Result<Vec<(String, String)>, ClientError> {
        match self.execute(Request::Statistics).await? {
            Response::Stats(s) => Ok(s),
            r => Err(unexpected("statistics", r)),
        }
    }

    /// The last log index applied by the node that answers.
    pub async fn get_txid(&self) -> Result<u64, ClientError> {
        match self.execute(Request::GetTxid).await? {
            Response::U64(i) => Ok(i),
            r => Err(unexpected("get_txid", r)),
        }
    }

    // ---- reads ----

    /// The key's value; a missing key is a `NotFound` error (Arakoon).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let key = key.into();
        self.get_option(key.clone())
            .await?
            .ok_or_else(|| not_found(&key))
    }

    /// The key's value, `None` if it is missing.
    pub async fn get_option(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let req = Request::Get {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await {
            Ok(Response::Value(v)) => Ok(v),
            Err(e) if e.is_not_found() => Ok(None),
            Ok(r) => Err(unexpected("get", r)),
            Err(e) => Err(e),
        }
    }

    /// The key with its value and revisions, `None` if it is missing.
    pub async fn get_entry(&self, key: impl Into<Bytes>) -> Result<Option<KeyEntry>, ClientError> {
        let req = Request::GetEntry {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await {
            Ok(Response::Entry(e)) => Ok(e),
            Err(e) if e.is_not_found() => Ok(None),
            Ok(r) => Err(unexpected("get_entry", r)),
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        let req = Request::Exists {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await? {
            Response::Bool(b) => Ok(b),
            r => Err(unexpected("exists", r)),
        }
    }

    /// Values of all keys, in order; fails `NotFound` naming the first
    /// missing key.
    pub async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::MultiGet {
            consistency: self.consistency,
            keys: keys.clone(),
        };
        match self.execute(req).await? {
            Response::Values(v) => Ok(v),
            Response::OptValues(v) => v
                .into_iter()
                .zip(&keys)
                .map(|(v, k)| v.ok_or_else(|| not_found(k)))
                .collect(),
            r => Err(unexpected("multi_get", r)),
        }
    }

    /// Values of all keys, in order, `None` for missing ones.
    pub async fn multi_get_option(
        &self,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Option<Bytes>>, ClientError> {
        let req = Request::MultiGetOption {
            consistency: self.consistency,
            keys,
        };
        match self.execute(req).await? {
            Response::OptValues(v) => Ok(v),
            r => Err(unexpected("multi_get_option", r)),
        }
    }

    /// Keys from `first` to `last` (each bound optional, inclusive or
    /// not), at most `max` (the server clamps it to its limit).
    pub async fn range(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<Bytes>, ClientError> {
        self.range_query(RangeQuery {
            first,
            first_inclusive,
            last,
            last_inclusive,
            max,
            reverse: false,
        })
        .await
    }

    /// Keys of any [`RangeQuery`].
    pub async fn range_query(&self, query: RangeQuery) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::Range {
            consistency: self.consistency,
            query,
        };
        match self.execute(req).await? {
            Response::Keys(k) | Response::Values(k) => Ok(k),
            r => Err(unexpected("range", r)),
        }
    }

    /// Entries (key, value, revisions) from `first` to `last`, ascending.
    pub async fn range_entries(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        self.range_entries_query(RangeQuery {
            first,
            first_inclusive,
            last,
            last_inclusive,
            max,
            reverse: false,
        })
        .await
    }

    /// Entries in descending key order, as Arakoon's `rev_range_entries`:
    /// `first` is the high end where the scan starts, `last` the low end
    /// where it stops. (In a [`RangeQuery`] `first` is always the low end;
    /// this call swaps the bounds.)
    pub async fn rev_range_entries(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        self.range_entries_query(RangeQuery {
            first: last,
            first_inclusive: last_inclusive,
            last: first,
            last_inclusive: first_inclusive,
            max,
            reverse: true,
        })
        .await
    }

    /// Entries of any [`RangeQuery`].
    pub async fn range_entries_query(
        &self,
        query: RangeQuery,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let req = Request::RangeEntries {
            consistency: self.consistency,
            query,
        };
        match self.execute(req).await? {
            Response::Entries(e) => Ok(e),
            r => Err(unexpected("range_entries", r)),
        }
    }

    /// Keys starting with `prefix`, at most `max`.
    pub async fn prefix_keys(
        &self,
        prefix: impl Into<Bytes>,
        max: u32,
    ) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::PrefixKeys {
            consistency: self.consistency,
            prefix: prefix.into(),
            max,
        };
        match self.execute(req).await? {
            Response::Keys(k) | Response::Values(k) => Ok(k),
            r => Err(unexpected("prefix_keys", r)),
        }
    }

    pub async fn key_count(&self) -> Result<u64, ClientError> {
        let req = Request::KeyCount {
            consistency: self.consistency,
        };
        match self.execute(req).await? {
            Response::U64(n) => Ok(n),
            r => Err(unexpected("key_count", r)),
        }
    }

    // ---- writes ----

    /// Sends a write and returns what it reports.
    pub async fn write(&self, req: Request) -> Result<Written, ClientError> {
        let name = write_name(&req);
        match self.execute(req).await? {
            Response::Written { index, prev, count } => Ok(Written { index, prev, count }),
            // Tolerated for writes that report nothing.
            Response::Unit => Ok(Written::default()),
            r => Err(unexpected(name, r)),
        }
    }

    /// Sets the key; returns the log index of the write.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let req = Request::Set {
            key: key.into(),
            value: value.into(),
        };
        Ok(self.write(req).await?.index)
    }

    /// Deletes the key (`NotFound` if missing); returns the log index.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<u64, ClientError> {
        Ok(self.write(Request::Delete { key: key.into() }).await?.index)
    }

    /// Sets the key unless it already holds this value (then nothing is
    /// written); returns the log index.
    pub async fn confirm(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let req = Request::Confirm {
            key: key.into(),
            value: value.into(),
        };
        Ok(self.write(req).await?.index)
    }

    /// If the key holds `expected` (`None`: is absent), sets it to `wanted`
    /// (`None`: deletes it). Returns the value found before: as in Arakoon
    /// a mismatch is not an error, nothing is written and the caller sees
    /// that the returned value differs from `expected`.
    pub async fn test_and_set(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        wanted: Option<Bytes>,
    ) -> Result<Option<Bytes>, ClientError> {
        let req = Request::TestAndSet {
            key: key.into(),
            expected,
            wanted,
        };
        Ok(self.write(req).await?.prev)
    }

    /// Sets the key to `wanted` (`None`: deletes it); returns the previous
    /// value.
    pub async fn replace(
        &self,
        key: impl Into<Bytes>,
        wanted: Option<Bytes>,
    ) -> Result<Option<Bytes>, ClientError> {
        let req = Request::Replace {
            key: key.into(),
            wanted,
        };
        Ok(self.write(req).await?.prev)
    }

    /// Deletes every key with this prefix; returns how many.
    pub async fn delete_prefix(&self, prefix: impl Into<Bytes>) -> Result<u64, ClientError> {
        let req = Request::DeletePrefix {
            prefix: prefix.into(),
        };
        Ok(self.write(req).await?.count)
    }

    /// Applies a sequence (or any batch) atomically; returns the log index.
    pub async fn sequence(&self, seq: impl Into<Batch>) -> Result<u64, ClientError> {
        Ok(self.batch(seq.into()).await?.index)
    }

    /// Applies a guarded batch atomically.
    pub async fn batch(&self, batch: Batch) -> Result<Written, ClientError> {
        self.write(Request::Batch(batch)).await
    }

    /// An empty write through the log (Arakoon's `nop`): once it returns,
    /// everything before it is committed. Returns its log index.
    pub async fn nop(&self) -> Result<u64, ClientError> {
        Ok(self.write(Request::Nop).await?.index)
    }

    // ---- scripts (docs/scripts.md) ----

    /// Calls `function` of the live version of `script` (or of `version`)
    /// with `args`, at the client's consistency (it matters for functions
    /// that only read). Not re-sent after a lost connection: a function
    /// may write.
    pub async fn call(
        &self,
        script: &str,
        function: &str,
        args: Vec<Bytes>,
        version: Option<u64>,
    ) -> Result<Called, ClientError> {
        let req = Request::Call {
            script: script.to_string(),
            function: function.to_string(),
            args,
            version,
            consistency: self.consistency,
        };
        match self.execute(req).await? {
            Response::Called {
                version,
                index,
                value,
            } => Ok(Called {
                version,
                index,
                value,
            }),
            r => Err(unexpected("call", r)),
        }
    }

    /// Installs `source` as the next version of `name` and makes it live;
    /// returns the version. A syntax error is refused and the live version
    /// stays.
    pub async fn script_put(
        &self,
        name: &str,
        source: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let req = Request::ScriptPut {
            name: name.to_string(),
            source: source.into(),
        };
        Ok(self.write(req).await?.count)
    }

    pub async fn script_list(&self) -> Result<Vec<ScriptSummary>, ClientError> {
        match self.execute(Request::ScriptList).await? {
            Response::Scripts(s) => Ok(s),
            r => Err(unexpected("script_list", r)),
        }
    }

    /// A version's source (default: the live one).
    pub async fn script_show(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<ScriptSource, ClientError> {
        let req = Request::ScriptShow {
            name: name.to_string(),
            version,
        };
        match self.execute(req).await? {
            Response::Script(s) => Ok(s),
            r => Err(unexpected("script_show", r)),
        }
    }

    pub async fn script_history(&self, name: &str) -> Result<Vec<ScriptVersionInfo>, ClientError> {
        let req = Request::ScriptHistory {
            name: name.to_string(),
        };
        match self.execute(req).await? {
            Response::ScriptVersions(v) => Ok(v),
            r => Err(unexpected("script_history", r)),
        }
    }

    /// Makes `version` the live one again; returns it.
    pub async fn script_rollback(&self, name: &str, version: u64) -> Result<u64, ClientError> {
        let req = Request::ScriptRollback {
            name: name.to_string(),
            version,
        };
        Ok(self.write(req).await?.count)
    }

    /// Makes the script uncallable (its history stays); returns the
    /// version that was live.
    pub async fn script_delete(&self, name: &str) -> Result<u64, ClientError> {
        let req = Request::ScriptDelete {
            name: name.to_string(),
        };
        Ok(self.write(req).await?.count)
    }
}

/// A script call's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called {
    /// The version that ran.
    pub version: u64,
    /// The log index its effects applied at; for a function that only
    /// read, the index it read at.
    pub index: u64,
    pub value: Option<Bytes>,
}

fn write_name(req: &Request) -> &'static str {
    match req {
        Request::Set { .. } => "set",
        Request::Delete { .. } => "delete",
        Request::Confirm { .. } => "confirm",
        Request::TestAndSet { .. } => "test_and_set",
        Request::Replace { .. } => "replace",
        Request::DeletePrefix { .. } => "delete_prefix",
        Request::Batch(_) => "sequence",
        Request::Nop => "nop",
        Request::ScriptPut { .. } => "script_put",
        Request::ScriptRollback { .. } => "script_rollback",
        Request::ScriptDelete { .. } => "script_delete",
        _ => "request",
    }
}
