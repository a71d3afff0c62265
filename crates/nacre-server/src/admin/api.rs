//! The dashboard's JSON reads of this node's state (docs/operations.md,
//! "Dashboard"):
//!
//! - `/api/keys?prefix=P&after_b64=K&limit=N`: one page of the keys that
//!   start with a prefix, with their values and revisions, bytes made safe
//!   for JSON ([`Shown`]: text when it is printable UTF-8, base64 when
//!   not, cut at a bound).
//! - `/api/scripts`: the installed Lua scripts, live and latest versions.
//! - `/api/samples`: the ring buffer of samples and the leader changes.
//!
//! Both reads see this node's applied state (as a client's `any` read
//! does): on a follower they may trail the leader by what it has yet to
//! apply. The answer says at least which index they reflect.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use nacre_proto::{ErrorReply, KeyEntry, RangeQuery};
use serde::{Deserialize, Serialize};

use super::samples::SamplesView;
use super::Admin;
use crate::server::off_the_workers;
use crate::state::{decode_script_head, PageLimits, Reader, SCRIPT_NS};

/// Keys in one page when the query names no `limit`.
pub(crate) const KEYS_PAGE_DEFAULT: u32 = 50;
/// Keys in one page at most, whatever `limit` asks.
pub(crate) const KEYS_PAGE_MAX: u32 = 500;
/// Bytes of a value shown; the rest is cut (`truncated`).
pub(crate) const VALUE_SHOWN_MAX_BYTES: usize = 1_024;
/// Bytes of a key shown; the rest is cut (the page cursor holds it whole).
pub(crate) const KEY_SHOWN_MAX_BYTES: usize = 512;
/// Bytes of a prefix or cursor a query may name (a key is at most
/// `key_size_max_bytes`, 4096 by default).
pub(crate) const QUERY_KEY_MAX_BYTES: usize = 64 * 1024;
/// Scripts listed at most; `more` says whether others follow.
pub(crate) const SCRIPTS_LISTED_MAX: usize = 1_000;

type ApiError = (StatusCode, Json<ErrorBody>);

/// The body of a failed API read.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    pub error: String,
}

fn api_error(code: StatusCode, message: impl Into<String>) -> ApiError {
    (
        code,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
}

fn unavailable(e: ErrorReply) -> ApiError {
    api_error(StatusCode::SERVICE_UNAVAILABLE, e.message)
}

/// Bytes as JSON can carry them and a page can show them: `text` when
/// they are UTF-8 without control characters (other than tab and line
/// breaks), else `base64`; at most a bound of them.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Shown {
    /// "text" or "base64".
    pub encoding: &'static str,
    pub data: String,
    /// The full length, in bytes.
    pub len: usize,
    /// The data holds only the first bytes.
    pub truncated: bool,
}

impl Shown {
    pub(crate) fn of(bytes: &[u8], max_bytes: usize) -> Shown {
        let cut = &bytes[..bytes.len().min(max_bytes)];
        let truncated = cut.len() < bytes.len();
        let text = match std::str::from_utf8(cut) {
            Ok(s) => Some(s),
            // Cut inside a character: the whole characters before it.
            Err(e) if truncated && e.error_len().is_none() => {
                std::str::from_utf8(&cut[..e.valid_up_to()]).ok()
            }
            Err(_) => None,
        };
        let printable = |s: &str| s.chars().all(|c| !c.is_control() || "\t\n\r".contains(c));
        match text {
            Some(s) if printable(s) => Shown {
                encoding: "text",
                data: s.to_string(),
                len: bytes.len(),
                truncated,
            },
            _ => Shown {
                encoding: "base64",
                data: base64::engine::general_purpose::STANDARD.encode(cut),
                len: bytes.len(),
                truncated,
            },
        }
    }
}

/// `/api/keys`'s query. The prefix is text (`prefix`) or base64
/// (`prefix_b64`, for a binary one); `after_b64` is the cursor a previous
/// page answered with.
#[derive(Debug, Deserialize)]
pub(crate) struct KeysQuery {
    pub prefix: Option<String>,
    pub prefix_b64: Option<String>,
    pub after_b64: Option<String>,
    pub limit: Option<u32>,
}

/// One key, as the key browser shows it.
#[derive(Debug, Serialize)]
pub(crate) struct KeyRow {
    pub key: Shown,
    pub value: Shown,
    /// The index of the write that created the key (since its last delete).
    pub create_revision: u64,
    /// The index of its latest write.
    pub mod_revision: u64,
    /// Writes since it was created.
    pub version: u64,
}

/// One page of keys.
#[derive(Debug, Serialize)]
pub(crate) struct KeysPage {
    /// The read saw this node's state at this index or later.
    pub applied_index_at_least: u64,
    pub limit: u32,
    pub keys: Vec<KeyRow>,
    /// More keys with the prefix follow: ask again with `after_b64`.
    pub more: bool,
    /// The last key of this page, whole, in base64: the next page's cursor.
    pub next_after_b64: Option<String>,
}

fn decode_b64(what: &str, s: &str) -> Result<Bytes, ApiError> {
    if s.len() > QUERY_KEY_MAX_BYTES * 4 / 3 + 4 {
        let m = format!("{what} is over {QUERY_KEY_MAX_BYTES} bytes");
        return Err(api_error(StatusCode::BAD_REQUEST, m));
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map(Bytes::from)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, format!("{what}: bad base64: {e}")))
}

/// The range a keys query covers: the prefix's keys after the cursor.
fn keys_range(q: &KeysQuery) -> Result<(RangeQuery, u32), ApiError> {
    let prefix = match (&q.prefix, &q.prefix_b64) {
        (Some(_), Some(_)) => {
            let m = "give prefix or prefix_b64, not both";
            return Err(api_error(StatusCode::BAD_REQUEST, m));
        }
        (Some(p), None) if p.len() > QUERY_KEY_MAX_BYTES => {
            let m = format!("prefix is over {QUERY_KEY_MAX_BYTES} bytes");
            return Err(api_error(StatusCode::BAD_REQUEST, m));
        }
        (Some(p), None) => Bytes::copy_from_slice(p.as_bytes()),
        (None, Some(b)) => decode_b64("prefix_b64", b)?,
        (None, None) => Bytes::new(),
    };
    let limit = q.limit.unwrap_or(KEYS_PAGE_DEFAULT).clamp(1, KEYS_PAGE_MAX);
    let mut range = RangeQuery::prefix(prefix.clone(), limit);
    if let Some(after) = &q.after_b64 {
        let after = decode_b64("after_b64", after)?;
        // A cursor before the prefix changes nothing; one past its end
        // leaves an empty range (the scan stops at once).
        if after >= prefix {
            range.first = Some(after);
            range.first_inclusive = false;
        }
    }
    Ok((range, limit))
}

fn key_row(e: &KeyEntry) -> KeyRow {
    KeyRow {
        key: Shown::of(&e.key, KEY_SHOWN_MAX_BYTES),
        value: Shown::of(&e.value, VALUE_SHOWN_MAX_BYTES),
        create_revision: e.rev.create_rev,
        mod_revision: e.rev.mod_rev,
        version: e.rev.version,
    }
}

/// `/api/keys`: one page of the keys with a prefix, read from this node's
/// applied state off the async workers. A page holds at most `limit` keys
/// and no more bytes than one client reply frame.
pub(super) async fn keys(
    State(admin): State<Admin>,
    Query(q): Query<KeysQuery>,
) -> Result<Json<KeysPage>, ApiError> {
    let (range, limit) = keys_range(&q)?;
    let shared = admin.shared.clone();
    let applied = shared.node.status.applied.load(Ordering::Acquire);
    let limits = PageLimits {
        results_max: limit,
        frame_size_max_bytes: shared.limits.frame_size_max_bytes,
    };
    let page = off_the_workers(&admin.shared, move || {
        Ok(Reader::new(&shared.store).range_entries_page(&range, limits))
    })
    .await
    .map_err(unavailable)?
    .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    assert!(page.items.len() <= limit as usize);
    Ok(Json(KeysPage {
        applied_index_at_least: applied,
        limit,
        next_after_b64: page
            .items
            .last()
            .map(|e| base64::engine::general_purpose::STANDARD.encode(&e.key)),
        keys: page.items.iter().map(key_row).collect(),
        more: page.more,
    }))
}

/// One installed script.
#[derive(Debug, Serialize)]
pub(crate) struct ScriptRow {
    pub name: String,
    /// The version calls run; 0 once deleted.
    pub live: u64,
    /// The highest version ever installed.
    pub latest: u64,
}

/// `/api/scripts`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct ScriptsList {
    pub applied_index_at_least: u64,
    pub scripts: Vec<ScriptRow>,
    /// More than [`SCRIPTS_LISTED_MAX`] scripts: the rest are left out.
    pub more: bool,
}

/// The script heads in name order, at most [`SCRIPTS_LISTED_MAX`]. (The
/// protocol's `ScriptList` answers all of them; a page that polls wants a
/// bound.)
fn script_heads(store: &nacre_store::Store) -> Result<(Vec<ScriptRow>, bool), String> {
    let txn = store.begin_read();
    let (ns, end) = ([SCRIPT_NS], [SCRIPT_NS + 1]);
    let (mut rows, mut more, mut bad) = (Vec::new(), false, None);
    txn.scan(
        Bound::Included(&ns[..]),
        Bound::Excluded(&end[..]),
        false,
        |k, v| {
            // Version records hold a 0x00 after the name; heads do not.
            if k[1..].contains(&0) {
                return true;
            }
            if rows.len() == SCRIPTS_LISTED_MAX {
                more = true;
                return false;
            }
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            match decode_script_head(v) {
                Some((live, latest)) => rows.push(ScriptRow { name, live, latest }),
                None => bad = Some(name),
            }
            bad.is_none()
        },
    )
    .map_err(|e| e.to_string())?;
    match bad {
        Some(name) => Err(format!("script {name:?}: a bad head record")),
        None => Ok((rows, more)),
    }
}

/// `/api/scripts`: from this node's applied state, off the async workers.
pub(super) async fn scripts(State(admin): State<Admin>) -> Result<Json<ScriptsList>, ApiError> {
    let shared = admin.shared.clone();
    let applied = shared.node.status.applied.load(Ordering::Acquire);
    let (scripts, more) = off_the_workers(&admin.shared, move || Ok(script_heads(&shared.store)))
        .await
        .map_err(unavailable)?
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(ScriptsList {
        applied_index_at_least: applied,
        scripts,
        more,
    }))
}

/// `/api/samples`: the ring buffer (oldest first) and the leader changes.
pub(super) async fn samples(State(admin): State<Admin>) -> Json<SamplesView> {
    Json(admin.samples.view())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_utf8_is_text_anything_else_base64() {
        let s = Shown::of(b"<script>alert(1)</script>", 100);
        assert_eq!(
            (s.encoding, s.data.as_str()),
            ("text", "<script>alert(1)</script>")
        );
        let b = Shown::of(&[0xff, 0x00, 0x41], 100);
        assert_eq!((b.encoding, b.data.as_str(), b.len), ("base64", "/wBB", 3));
        let nul = Shown::of(b"a\0b", 100);
        assert_eq!(nul.encoding, "base64");
        let lines = Shown::of(b"a\tb\nc", 100);
        assert_eq!(lines.encoding, "text");
    }

    #[test]
    fn a_cut_inside_a_character_keeps_the_whole_ones() {
        let s = Shown::of("aé".as_bytes(), 2); // 'é' is two bytes
        assert_eq!((s.encoding, s.data.as_str()), ("text", "a"));
        assert!(s.truncated);
        assert_eq!(s.len, 3);
        let whole = Shown::of(b"abc", 3);
        assert!(!whole.truncated);
    }

    #[test]
    fn the_limit_is_bounded_and_the_cursor_moves_the_start() {
        let q = KeysQuery {
            prefix: Some("a/".into()),
            prefix_b64: None,
            after_b64: Some(base64::engine::general_purpose::STANDARD.encode("a/k")),
            limit: Some(1_000_000),
        };
        let (range, limit) = keys_range(&q).unwrap();
        assert_eq!(limit, KEYS_PAGE_MAX);
        assert_eq!(range.first.as_deref(), Some(&b"a/k"[..]));
        assert!(!range.first_inclusive);
        assert_eq!(range.last.as_deref(), Some(&b"a0"[..]));
        let both = KeysQuery {
            prefix_b64: Some(String::new()),
            ..q
        };
        assert_eq!(keys_range(&both).unwrap_err().0, StatusCode::BAD_REQUEST);
    }
}
