//! `/health` and `/ready`, judged by [`crate::health::Health`]: 200 with
//! the figures when the node is healthy (ready), 503 with the reason when
//! it is not, both as JSON.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::Admin;
use crate::health::Health;

/// 200 when the node has a leader it heard from within the election
/// timeout and applies within the bounded lag; 503 otherwise.
pub(super) async fn health(State(admin): State<Admin>) -> (StatusCode, Json<Health>) {
    let h = Health::of(&admin.shared.node, &admin.shared.config);
    (code(h.is_healthy()), Json(h))
}

/// 200 when the node would serve a client's request now: healthy, and
/// not stopping (its client listener still accepts).
pub(super) async fn ready(State(admin): State<Admin>) -> (StatusCode, Json<Health>) {
    let h = Health::of(&admin.shared.node, &admin.shared.config);
    let stopping = *admin.stopping.borrow();
    (code(h.is_healthy() && !stopping), Json(h))
}

fn code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
