//! A layer under every etcd service that records each call into the
//! node's metrics (`nacre_etcd_request_duration_seconds`, by method and
//! gRPC code: `metrics/etcd.rs`), so that `/metrics` covers the etcd API
//! as it covers the native protocol.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http;

use crate::metrics::etcd::method_of;
use crate::node::Status;

/// The layer: wraps a service in [`Observe`].
#[derive(Clone)]
pub(crate) struct ObserveLayer(pub Arc<Status>);

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            status: self.0.clone(),
        }
    }
}

/// A service that times each call to its response's headers.
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    status: Arc<Status>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower_service::Service<http::Request<B>> for Observe<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_of(req.uri().path());
        let started = Instant::now();
        let status = self.status.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let r = call.await;
            if let Ok(resp) = &r {
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok());
                let calls = &status.metrics.etcd_calls;
                calls.observe(method, code, started.elapsed());
            }
            r
        })
    }
}
