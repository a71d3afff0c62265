//! Lua user functions (docs/scripts.md): installing, listing and calling
//! them. Scripts live in the replicated keyspace under namespace `s`
//! (see `state/scripts.rs`), so an install is a replicated write and a version is
//! live on a node as soon as that node applies it: every call reads the
//! live version from the store.
//!
//! A call runs on this node through `nacre-script`'s recorder. If the
//! function wrote nothing, the answer goes back at once. Otherwise its
//! reads (as version guards) and writes (as ops) are proposed as one
//! guarded batch, the way every write is; replicas apply that batch and
//! never run the script. A guard that fails at apply time means a
//! concurrent write got in between: the call runs again on the newer
//! state, up to [`CALL_ATTEMPTS_MAX`] times, then answers `Conflict`.
//! Between runs it waits a random time that grows with each loss, so that
//! many callers racing for one key spread out instead of colliding again
//! in the next batch.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use nacre_proto::{
    Batch, Consistency, ErrorCode, ErrorReply, KeyEntry, Op, RangeQuery, Request, Response,
    ScriptSource, ScriptSummary, ScriptVersionInfo, Session,
};
use nacre_script::{Budgets, KvView, ScriptCache, ScriptError, ScriptKey, ViewError};

use crate::server::{wait_for, Shared};
use crate::state::{
    decode_script_head, script_head_key, script_version_key, Outcome, Reader, SCRIPT_NS,
};

/// Runs of one call before it gives up with `Conflict`.
pub const CALL_ATTEMPTS_MAX: u32 = 64;
/// Ceiling of the random pause between two runs of a call.
const CALL_RETRY_PAUSE_MAX_MS: u64 = 20;
/// Locks that serialise the re-runs of calls that lost on the same key.
const HOT_KEY_STRIPES: usize = 256;

/// A call that lost a race re-runs holding the stripe of the key it lost
/// on, through its proposal and apply: re-runs on a hot key then follow
/// one another instead of colliding again, while first runs stay
/// unlocked (most calls never conflict). Bounded: a fixed set of stripes.
fn hot_key_lock(key: &[u8]) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    static STRIPES: std::sync::OnceLock<Vec<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    let stripes = STRIPES.get_or_init(|| {
        (0..HOT_KEY_STRIPES)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect()
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    &stripes[(h.finish() % HOT_KEY_STRIPES as u64) as usize]
}

/// Compiled sandboxes, shared by every node in the process; keyed by the
/// source itself, so nodes of different clusters never mix them up.
static CACHE: LazyLock<ScriptCache> = LazyLock::new(|| ScriptCache::new(Budgets::default()));

/// Refuses service ops in a batch a client sent: only this module may
/// propose them.
pub(crate) fn refuse_service_ops(batch: &Batch) -> Result<(), ErrorReply> {
    if batch.ops.iter().any(Op::is_service) {
        return Err(ErrorReply::new(
            ErrorCode::BadInput,
            "script operations cannot be part of a client batch; use the script requests",
        ));
    }
    Ok(())
}

pub(crate) async fn execute(
    shared: &Shared,
    req: Request,
    session: Option<Session>,
) -> Result<Response, ErrorReply> {
    match req {
        Request::Call {
            script,
            function,
            args,
            version,
            ..
        } => call(shared, &script, &function, &args, version, session).await,
        Request::ScriptPut { name, source } => {
            check_name(&name)?;
            // Compile before proposing: a syntax error is refused here and
            // the live version stays as it was.
            nacre_script::check_syntax(&name, &source).map_err(script_error)?;
            let op = Op::ScriptPut {
                name: Bytes::from(name.into_bytes()),
                source,
            };
            propose_admin(shared, op, session).await
        }
        Request::ScriptRollback { name, version } => {
            check_name(&name)?;
            let op = Op::ScriptActivate {
                name: Bytes::from(name.into_bytes()),
                version,
            };
            propose_admin(shared, op, session).await
        }
        Request::ScriptDelete { name } => {
            check_name(&name)?;
            propose_admin(
                shared,
                Op::ScriptDelete(Bytes::from(name.into_bytes())),
                session,
            )
            .await
        }
        Request::ScriptList => {
            wait_for(shared, Consistency::Consistent).await?;
            list(shared).map(Response::Scripts)
        }
        Request::ScriptShow { name, version } => {
            check_name(&name)?;
            wait_for(shared, Consistency::Consistent).await?;
            let (live, _) = head(shared, &name)?.ok_or_else(|| script_not_found(&name))?;
            let v = version.unwrap_or(live);
            if v == 0 {
                return Err(script_not_found(&name));
            }
            let (index, source) = version_record(shared, &name, v)?;
            Ok(Response::Script(ScriptSource {
                name,
                version: v,
                index,
                live: v == live,
                source,
            }))
        }
        Request::ScriptHistory { name } => {
            check_name(&name)?;
            wait_for(shared, Consistency::Consistent).await?;
            history(shared, &name).map(Response::ScriptVersions)
        }
        _ => Err(ErrorReply::new(ErrorCode::BadInput, "not a script request")),
    }
}

fn check_name(name: &str) -> Result<(), ErrorReply> {
    nacre_script::check_name(name).map_err(|m| ErrorReply::new(ErrorCode::BadInput, m))
}

fn script_not_found(name: &str) -> ErrorReply {
    ErrorReply::new(ErrorCode::NotFound, format!("script {name:?} not found"))
}

fn script_error(e: ScriptError) -> ErrorReply {
    let code = match e {
        ScriptError::Syntax(_) | ScriptError::Runtime(_) | ScriptError::BadReturn(_) => {
            ErrorCode::ScriptError
        }
        ScriptError::FunctionNotFound(_) => ErrorCode::NotFound,
        ScriptError::Aborted(_) => ErrorCode::AssertionFailed,
        ScriptError::Budget(_) => ErrorCode::BudgetExceeded,
        // The store's own verdict: corruption stays corruption.
        ScriptError::View(ref v) => {
            v.0.downcast_ref::<crate::state::StateError>()
                .map_or(ErrorCode::Internal, |s| s.to_reply().code)
        }
    };
    ErrorReply::new(code, e.to_string())
}

fn store_error(e: nacre_store::Error) -> ErrorReply {
    let code = match e {
        nacre_store::Error::Corruption { .. } => ErrorCode::Corruption,
        _ => ErrorCode::Internal,
    };
    ErrorReply::new(code, e.to_string())
}

/// Proposes one script admin op; the reply's `count` is the version it
/// installed or made live.
async fn propose_admin(
    shared: &Shared,
    op: Op,
    session: Option<Session>,
) -> Result<Response, ErrorReply> {
    let batch = Batch {
        guards: vec![],
        ops: vec![op],
    };
    shared.limits.check_batch(&batch)?;
    match crate::server::propose(shared, batch, session).await? {
        (index, Outcome::Applied { count, .. }) => Ok(Response::Written {
            index,
            prev: None,
            count,
        }),
        (_, Outcome::Failed { code, message, .. }) => Err(ErrorReply::new(code, message)),
        (_, Outcome::Etcd { .. }) => Err(Outcome::not_a_batch()),
    }
}

fn head(shared: &Shared, name: &str) -> Result<Option<(u64, u64)>, ErrorReply> {
    let raw = shared
        .store
        .begin_read()
        .get(&script_head_key(name.as_bytes()))
        .map_err(store_error)?;
    match raw {
        None => Ok(None),
        Some(raw) => decode_script_head(&raw)
            .map(Some)
            .ok_or_else(|| ErrorReply::new(ErrorCode::Corruption, "bad script head record")),
    }
}

/// The installing index and the source of one version.
fn version_record(shared: &Shared, name: &str, v: u64) -> Result<(u64, Bytes), ErrorReply> {
    let raw = shared
        .store
        .begin_read()
        .get(&script_version_key(name.as_bytes(), v))
        .map_err(store_error)?
        .ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::NotFound,
                format!("script {name:?} has no version {v}"),
            )
        })?;
    match (raw.get(..8).map(<[u8; 8]>::try_from), raw.get(8..)) {
        (Some(Ok(index)), Some(source)) => {
            Ok((u64::from_le_bytes(index), Bytes::copy_from_slice(source)))
        }
        _ => Err(ErrorReply::new(
            ErrorCode::Corruption,
            "bad script version record",
        )),
    }
}

fn list(shared: &Shared) -> Result<Vec<ScriptSummary>, ErrorReply> {
    let txn = shared.store.begin_read();
    let ns = [SCRIPT_NS];
    let end = [SCRIPT_NS + 1];
    let mut out = Vec::new();
    let mut bad = false;
    txn.scan(
        Bound::Included(&ns[..]),
        Bound::Excluded(&end[..]),
        false,
        |k, v| {
            // Version records carry a 0x00 after the name; heads do not.
            if !k[1..].contains(&0) {
                match decode_script_head(v) {
                    Some((live, latest)) => out.push(ScriptSummary {
                        name: String::from_utf8_lossy(&k[1..]).into_owned(),
                        live,
                        latest,
                    }),
                    None => bad = true,
                }
            }
            true
        },
    )
    .map_err(store_error)?;
    if bad {
        return Err(ErrorReply::new(
            ErrorCode::Corruption,
            "bad script head record",
        ));
    }
    Ok(out)
}

fn history(shared: &Shared, name: &str) -> Result<Vec<ScriptVersionInfo>, ErrorReply> {
    let (live, _) = head(shared, name)?.ok_or_else(|| script_not_found(name))?;
    let txn = shared.store.begin_read();
    let mut start = script_head_key(name.as_bytes());
    start.push(0);
    let mut end = script_head_key(name.as_bytes());
    end.push(1);
    let mut out = Vec::new();
    let mut bad = false;
    txn.scan(
        Bound::Included(&start[..]),
        Bound::Excluded(&end[..]),
        false,
        |k, v| {
            let version = k
                .get(start.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok());
            let index = v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
            let (Some(ver), Some(ix)) = (version, index) else {
                // A version record this code never wrote: say so rather
                // than leave it out of the history.
                bad = true;
                return false;
            };
            let version = u64::from_be_bytes(ver);
            out.push(ScriptVersionInfo {
                version,
                index: u64::from_le_bytes(ix),
                size_bytes: (v.len() - 8) as u64,
                live: version == live,
            });
            true
        },
    )
    .map_err(store_error)?;
    if bad {
        return Err(ErrorReply::new(
            ErrorCode::Corruption,
            format!("bad version record of script {name:?}"),
        ));
    }
    Ok(out)
}

/// What a script reads: the node's applied user keyspace, and the
/// applied index the call started at.
struct View(Reader, u64);

impl KvView for View {
    fn get(&self, key: &[u8]) -> Result<Option<KeyEntry>, ViewError> {
        self.0.get_entry(key).map_err(ViewError::new)
    }

    fn range(
        &self,
        first: Option<&[u8]>,
        last: Option<&[u8]>,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ViewError> {
        let q = RangeQuery {
            first: first.map(Bytes::copy_from_slice),
            first_inclusive: true,
            last: last.map(Bytes::copy_from_slice),
            last_inclusive: false,
            max,
            reverse: false,
        };
        self.0.range_entries(&q, max).map_err(ViewError::new)
    }

    fn prefix(&self, prefix: &[u8], max: u32) -> Result<Vec<Bytes>, ViewError> {
        self.0.prefix_keys(prefix, max).map_err(ViewError::new)
    }

    fn revision(&self) -> u64 {
        self.1
    }
}

async fn call(
    shared: &Shared,
    script: &str,
    function: &str,
    args: &[Bytes],
    pinned: Option<u64>,
    session: Option<Session>,
) -> Result<Response, ErrorReply> {
    check_name(script)?;
    let mut last_conflict = String::new();
    let mut hot_key: Option<Bytes> = None;
    let mut _stripe = None;
    for attempt in 0..CALL_ATTEMPTS_MAX {
        if let Some(k) = &hot_key {
            if _stripe.is_none() {
                _stripe = Some(hot_key_lock(k).lock().await);
            }
        } else if attempt > 0 {
            use rand::Rng;
            let ceiling_ms = (1u64 << attempt.min(5)).min(CALL_RETRY_PAUSE_MAX_MS);
            let pause_us = rand::rng().random_range(0..=ceiling_ms * 1000);
            tokio::time::sleep(Duration::from_micros(pause_us)).await;
        }
        // The version is resolved once per run: one run never mixes two.
        let (live, _) = head(shared, script)?.ok_or_else(|| script_not_found(script))?;
        if live == 0 {
            return Err(script_not_found(script));
        }
        let version = pinned.unwrap_or(live);
        let (_, source) = version_record(shared, script, version)?;
        let key = ScriptKey {
            name: script.to_string(),
            version,
            source,
        };
        let read_at = shared.node.status.applied.load(Ordering::Acquire);
        // Up to `instructions_max` Lua instructions: seconds of CPU, which
        // must not hold an async worker (and every connection on it).
        let (store, function_name, call_args) =
            (shared.store.clone(), function.to_string(), args.to_vec());
        let status = shared.node.status.clone();
        let out = crate::server::off_the_workers(shared, move || {
            let view = View(Reader::new(&store), read_at);
            let m = &status.metrics;
            m.script_runs.fetch_add(1, Ordering::Relaxed);
            let run = crate::metrics::timed(&m.script_run, || {
                CACHE.call(&key, &view, &function_name, &call_args)
            });
            if matches!(run, Err(ScriptError::Budget(_))) {
                m.script_budget_exceeded.fetch_add(1, Ordering::Relaxed);
            }
            run.map_err(script_error)
        })
        .await?;
        if !out.wrote() {
            // Read-only: the consistency the request asked for was
            // established before the run (see `execute_inner`).
            return Ok(Response::Called {
                version,
                index: read_at,
                value: out.value,
            });
        }
        let mut batch = out.batch;
        if pinned.is_none() {
            // The effects apply only while this version is still live, so
            // no call of an old version lands after a new one went live.
            batch.ops.insert(
                0,
                Op::ScriptLive {
                    name: Bytes::copy_from_slice(script.as_bytes()),
                    version,
                },
            );
        }
        shared.limits.check_batch(&batch)?;
        match crate::server::propose(shared, batch, session).await? {
            (index, Outcome::Applied { .. }) => {
                return Ok(Response::Called {
                    version,
                    index,
                    value: out.value,
                })
            }
            (
                _,
                Outcome::Failed {
                    code: ErrorCode::AssertionFailed,
                    message,
                    key,
                    ..
                },
            ) => {
                last_conflict = message;
                hot_key = Some(key);
                let conflicts = &shared.node.status.metrics.script_conflicts;
                conflicts.fetch_add(1, Ordering::Relaxed);
            }
            (_, Outcome::Failed { code, message, .. }) => {
                return Err(ErrorReply::new(code, message))
            }
            (_, Outcome::Etcd { .. }) => return Err(Outcome::not_a_batch()),
        }
    }
    Err(ErrorReply::new(
        ErrorCode::Conflict,
        format!(
            "{script}.{function} lost to concurrent writes {CALL_ATTEMPTS_MAX} times \
             (last: {last_conflict})"
        ),
    ))
}
