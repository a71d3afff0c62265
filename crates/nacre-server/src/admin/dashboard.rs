//! The web dashboard (docs/operations.md, "Dashboard"): its page, served
//! from assets compiled into the binary, and `/api/cluster`, the view of
//! every member the page polls.
//!
//! - `/` redirects to `/dashboard`; `/dashboard`, `/dashboard/app.js` and
//!   `/dashboard/app.css` are the page (hand-written, no build step), with
//!   `Cache-Control: no-cache` so that a node upgraded in place never
//!   serves a stale script, and a content security policy that lets the
//!   page run only its own script.
//! - `/api/cluster`: this node's `/status`, and each other member's,
//!   asked by this node from the member's admin address (`[[nodes]]
//!   admin`) within [`MEMBER_STATUS_TIMEOUT_MS`]. A member that does not
//!   answer is shown as unreachable with the reason; the page never talks
//!   to another origin, so no admin route needs cross-origin headers.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde::Serialize;

use super::status::node_status;
use super::Admin;
use crate::server::off_the_workers;
use crate::state::Reader;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// How long `/api/cluster` waits for one member's `/status`: under the
/// page's one-second poll, so a dead member costs one poll no more.
pub(crate) const MEMBER_STATUS_TIMEOUT_MS: u64 = 700;
/// The largest `/status` document read from a member.
pub(crate) const MEMBER_STATUS_SIZE_MAX_BYTES: usize = 256 * 1024;
/// Members asked at most (a cluster has a handful; this bounds the work
/// of one poll whatever the membership holds).
pub(crate) const MEMBERS_ASKED_MAX: usize = 32;

/// The page may run only its own script and style, and talk only to its
/// own origin: data shown by mistake as markup could not run anything.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(super) async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

pub(super) async fn page() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// One member as `/api/cluster` reports it.
#[derive(Debug, Serialize)]
pub(crate) struct MemberView {
    pub id: u64,
    pub name: String,
    pub voter: bool,
    /// Its admin address, if this node's config names one.
    pub admin: Option<String>,
    /// This is the node that answers.
    pub this_node: bool,
    /// Its `/status` document, if it answered.
    pub status: Option<serde_json::Value>,
    /// Why there is no status.
    pub error: Option<String>,
}

/// `/api/cluster`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterView {
    pub node: String,
    /// When this node answered, ms since the Unix epoch.
    pub at_ms: u64,
    pub members: Vec<MemberView>,
}

/// Asks `GET /status` of the admin listener at `addr`.
async fn fetch_status(addr: &str) -> Result<serde_json::Value, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // The connection ends with the sender; the timeout bounds it anyway.
    let limit = Duration::from_millis(MEMBER_STATUS_TIMEOUT_MS);
    tokio::spawn(tokio::time::timeout(limit, conn));
    let req = axum::http::Request::get("/status")
        .header(header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("answered {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MEMBER_STATUS_SIZE_MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not a status document: {e}"))
}

async fn member_status(addr: Option<String>) -> (Option<serde_json::Value>, Option<String>) {
    let Some(addr) = addr else {
        return (None, Some("no admin address in this node's config".into()));
    };
    let limit = Duration::from_millis(MEMBER_STATUS_TIMEOUT_MS);
    match tokio::time::timeout(limit, fetch_status(&addr)).await {
        Ok(Ok(v)) => (Some(v), None),
        Ok(Err(e)) => (None, Some(format!("unreachable: {e}"))),
        Err(_) => (
            None,
            Some(format!(
                "unreachable: no answer in {MEMBER_STATUS_TIMEOUT_MS} ms"
            )),
        ),
    }
}

/// `/api/cluster`: this node's status and every other member's, asked at
/// once. Works on any member, leader or not, with or without a leader.
pub(super) async fn cluster(State(admin): State<Admin>) -> Result<Json<ClusterView>, StatusCode> {
    let shared = admin.shared.clone();
    let user_keys = off_the_workers(&admin.shared, move || {
        Ok(Reader::new(&shared.store).key_count())
    })
    .await
    .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
    .map_err(|e| e.to_string());
    let shared = &admin.shared;
    let own = serde_json::to_value(node_status(shared, user_keys))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let own_id = shared.node.status.id.load(Ordering::Relaxed);
    let mut members: Vec<MemberView> = shared
        .node
        .status
        .progress
        .lock()
        .iter()
        .take(MEMBERS_ASKED_MAX)
        .map(|m| MemberView {
            id: m.id,
            name: m.name.clone(),
            voter: m.voter,
            admin: shared
                .config
                .nodes
                .iter()
                .find(|n| n.name == m.name)
                .and_then(|n| n.admin.clone()),
            this_node: m.id == own_id,
            status: None,
            error: None,
        })
        .collect();
    // Every other member at once, each within its own timeout.
    let mut asks = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate().filter(|(_, m)| !m.this_node) {
        let addr = m.admin.clone();
        asks.spawn(async move { (i, member_status(addr).await) });
    }
    while let Some(answer) = asks.join_next().await {
        if let Ok((i, (status, error))) = answer {
            (members[i].status, members[i].error) = (status, error);
        }
    }
    for m in members.iter_mut().filter(|m| m.this_node) {
        m.status = Some(own.clone());
    }
    Ok(Json(ClusterView {
        node: shared.config.node_name.clone(),
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        members,
    }))
}
