//! The admin HTTP listener (docs/operations.md): what operators and their
//! tools ask a node over HTTP, on its own port (`admin_listen`, default
//! 127.0.0.1:7381), apart from the client protocol so that a scrape or a
//! health check never waits behind client traffic.
//!
//! | module | one job |
//! |---|---|
//! | `health.rs` | `/health` and `/ready`: 200, or 503 with the reason in JSON |
//! | `status.rs` | `/status`: the node, its members and its store, as JSON with numbers as numbers |
//! | `metrics.rs` | `/metrics`: every figure in the Prometheus text format |
//! | `dashboard.rs` | the web dashboard's page (`/`, `/dashboard`) and `/api/cluster` |
//! | `api.rs` | the dashboard's reads: `/api/keys`, `/api/scripts`, `/api/samples` |
//! | `samples.rs` | the ring buffer of per-second samples and the request latency accumulator |

mod api;
mod dashboard;
mod health;
mod metrics;
pub(crate) mod samples;
mod status;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::Shared;

/// What every handler sees: the node, and whether it is stopping.
#[derive(Clone)]
pub(crate) struct Admin {
    pub shared: Arc<Shared>,
    /// Turns true when the node begins to stop (its listeners close).
    pub stopping: watch::Receiver<bool>,
    /// The dashboard's ring buffer, filled by `samples::run`.
    pub samples: Arc<samples::Samples>,
}

/// Every route of the admin listener.
fn router(admin: Admin) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/status", get(status::status))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(dashboard::root))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/api/cluster", get(dashboard::cluster))
        .route("/api/keys", get(api::keys))
        .route("/api/scripts", get(api::scripts))
        .route("/api/samples", get(api::samples))
        .with_state(admin)
}

/// Serves the admin routes on `listener` until `stop` turns true.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let samples = Arc::new(samples::Samples::default());
    tokio::spawn(samples::run(shared.clone(), samples.clone(), stop.clone()));
    let admin = Admin {
        shared,
        stopping: stop.clone(),
        samples,
    };
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
