//! The client request layer (`server.rs`) for the simulator: the same
//! `execute` that answers a connection's requests, over a node the
//! simulator drives. Requests go through the checks, consistency gates,
//! session stamping and reply mapping that production uses; only the
//! socket and the frame codec are left out.
//!
//! The simulator polls the futures [`SimServer::execute`] returns on its
//! one thread, inside a tokio runtime whose clock it never advances (the
//! request timeouts there never fire; simulated clients keep their own
//! deadlines and drop the future when they give up, as a client that
//! closes its connection does). Blocking work runs inline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use nacre_proto::{Request, Response};
use nacre_store::Store;
use tokio::sync::Semaphore;

use crate::node::NodeHandle;
use crate::server::{self, Shared};
use crate::ServerConfig;

/// One node's request layer.
#[derive(Clone)]
pub struct SimServer {
    shared: Arc<Shared>,
}

/// A request being answered.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

impl SimServer {
    /// The layer over the node behind `node`, whose state machine reads
    /// `store`, configured by `config` (its limits and timeouts);
    /// `skip_read_barrier` plants a bug: consistent reads are served
    /// from the node's own state, without the read barrier.
    pub fn new(
        config: ServerConfig,
        node: NodeHandle,
        store: Store,
        skip_read_barrier: bool,
    ) -> SimServer {
        let shared = Shared {
            limits: config.limits(),
            node,
            store,
            started: Instant::now(),
            counters: Default::default(),
            connections: Arc::new(Semaphore::new(config.connections_max)),
            blocking: Arc::new(Semaphore::new(config.blocking_tasks_max)),
            inline_blocking: true,
            planted_skip_read_barrier: skip_read_barrier,
            config,
        };
        SimServer {
            shared: Arc::new(shared),
        }
    }

    /// Answers `req` as a connection would (a session-stamped request
    /// is `Request::Session`).
    pub fn execute(&self, req: Request) -> Answer {
        let shared = self.shared.clone();
        Box::pin(async move { server::execute(&shared, req).await })
    }
}
