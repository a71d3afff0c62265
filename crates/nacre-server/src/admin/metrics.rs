//! `/metrics`: the node's figures in the Prometheus text format (version
//! 0.0.4, `text/plain; version=0.0.4`), for Prometheus to scrape; every
//! family is listed in docs/operations.md and in `crate::metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Admin;

pub(super) async fn metrics(State(admin): State<Admin>) -> Response {
    match crate::metrics::render(&admin.shared) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        // Writing to a String fails only if an encoder refuses a value.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}\n"),
        )
            .into_response(),
    }
}
