//! The Nacre node: the state machine over `nacre-store`, the Raft driver
//! over the tlog, and the client listener.
//!
//! A single node is a one-member Raft group: every write is proposed,
//! appended to the tlog, fsynced (shared by all writes that arrived
//! meanwhile), committed and applied by the same code that replication
//! uses.

pub mod clock;
mod config;
mod error;
pub mod lease;
pub mod node;
mod scripts;
mod server;
pub mod state;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use config::{ConfigError, NodeConfig, ServerConfig};
pub use error::{FailureKind, ServerError};
use nacre_vfs::{OsVfs, Vfs};
pub use node::name_id;
use tokio::sync::{watch, Semaphore};

/// A node that is up: its client address, and the way to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    node: node::NodeHandle,
    accept: tokio::task::JoinHandle<std::io::Result<()>>,
    raft: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes connections, stops the raft loop (which
    /// checkpoints the store) and waits for it.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        self.node.shutdown();
        let Some(raft) = self.raft.take() else {
            return Ok(());
        };
        let stopped = |why: String| ServerError::Stopped {
            thread: "raft thread",
            why,
        };
        match tokio::task::spawn_blocking(move || raft.join()).await {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) => Err(stopped(format!(
                "panicked: {}",
                error::panic_message(payload.as_ref())
            ))),
            Err(e) => Err(stopped(format!("could not be joined: {e}"))),
        }
    }
}

/// Opens the data directory, starts the raft loop and listens for clients.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    start_with_vfs(config, Arc::new(OsVfs::default())).await
}

/// [`start`] with the store's and the tlog's files behind `vfs`: the
/// fault-injecting simulator in crash tests, the real file system
/// otherwise.
pub async fn start_with_vfs(
    config: ServerConfig,
    vfs: Arc<dyn Vfs>,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    vfs.create_dir_all(&config.data_dir)?;
    let limits = config.limits();
    let store = open_store(&config, vfs.clone())?;
    let tlog_opts = nacre_raft::TlogOptions {
        segment_size_bytes: config.tlog_segment_size_bytes,
        ..Default::default()
    };
    let tlog = nacre_raft::Tlog::open(vfs, &config.data_dir.join("tlog"), tlog_opts)?;
    let sm = state::StateMachine::open_with(store.clone(), config.session_retention_entries)?;
    let (node, raft) = node::Node::start(
        nacre_raft::TlogStorage::new(tlog),
        sm,
        node_options(&config),
        tokio::runtime::Handle::current(),
    )?;
    // A single-member group elects itself at once; serving only after that
    // spares the first clients a spurious NotMaster.
    if config.nodes.len() <= 1 && !config.join {
        let timeout_ms = config.tick_ms * config.election_ticks as u64 * 3;
        wait_for_leadership(&node, std::time::Duration::from_millis(timeout_ms)).await;
    }
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(source) => {
            node.shutdown();
            let _ = tokio::task::spawn_blocking(move || raft.join()).await;
            return Err(ServerError::Listen {
                addr: config.listen.clone(),
                source,
            });
        }
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node = %config.node_name, data_dir = %config.data_dir.display(), "nacre node serving");
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(server::Shared {
        limits,
        node: node.clone(),
        store,
        started: Instant::now(),
        counters: Default::default(),
        connections: Arc::new(Semaphore::new(config.connections_max)),
        config,
    });
    let accept = tokio::spawn(server::accept_loop(shared, listener, stop_rx));
    Ok(RunningServer {
        addr,
        stop,
        node,
        accept,
        raft: Some(raft),
    })
}

/// The store under `data_dir/store`, committing lazily (the tlog makes
/// entries durable), with room for the namespace byte and the revision.
fn open_store(config: &ServerConfig, vfs: Arc<dyn Vfs>) -> Result<nacre_store::Store, ServerError> {
    let limits = config.limits();
    let store_opts = nacre_store::Options {
        cache_size_bytes: config.store_cache_bytes as usize,
        // Stored keys carry a namespace byte, values a 24-byte revision.
        key_size_max_bytes: limits.key_size_max_bytes + 1,
        value_size_max_bytes: limits.value_size_max_bytes + nacre_proto::Revision::ENCODED_BYTES,
        durability: nacre_store::Durability::Lazy,
        vfs,
        ..Default::default()
    };
    Ok(nacre_store::Store::open(
        config.data_dir.join("store"),
        store_opts,
    )?)
}

/// What the raft driver needs from the configuration: this node's id, the
/// initial members with their ids, the preferred leader's id.
fn node_options(config: &ServerConfig) -> node::NodeOptions {
    let members = config.initial_members();
    let id = members
        .iter()
        .find(|(_, n)| n.name == config.node_name)
        .map_or_else(|| name_id(&config.node_name), |(id, _)| *id);
    let preferred_leader = config
        .preferred_leader
        .as_ref()
        .and_then(|p| members.iter().find(|(_, n)| &n.name == p))
        .map(|(id, _)| *id);
    let initial_members = members
        .into_iter()
        .map(|(id, n)| {
            (
                id,
                state::MemberRecord {
                    name: n.name,
                    client: n.client,
                    peer: n.peer,
                },
            )
        })
        .collect();
    node::NodeOptions {
        id,
        initial_members,
        join: config.join,
        preferred_leader,
        cluster_id: config.cluster_id.clone(),
        peer_listen: config.peer_listen.clone(),
        data_dir: config.data_dir.clone(),
        tick_ms: config.tick_ms,
        election_ticks: config.election_ticks,
        heartbeat_ticks: config.heartbeat_ticks,
        reads_by_lease: config.consistent_reads == "lease",
        clock: clock::HostClock::shared(),
        proposals_pending_max: config.proposals_pending_max,
        checkpoint_entries: config.checkpoint_entries,
        tlog_tail_entries: config.tlog_tail_entries,
        #[cfg(feature = "sim")]
        planted: Default::default(),
    }
}

/// Waits, at most `timeout`, until the node leads.
async fn wait_for_leadership(node: &node::NodeHandle, timeout: std::time::Duration) {
    let deadline = Instant::now() + timeout;
    while !node
        .status
        .is_leader
        .load(std::sync::atomic::Ordering::Acquire)
        && Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Runs a node until `shutdown` completes, then stops it cleanly. It also
/// returns if the raft loop ends on its own: with that loop's error if it
/// failed (a disk error, a peer port it cannot listen on), so that the
/// process exits non-zero and a supervisor sees it, instead of living on
/// answering every request with `GoingDown`; with `Ok` if the node was
/// removed from the cluster.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let running = start(config).await?;
    let status = running.node.status.clone();
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        () = status.wait_stopped() => {
            tracing::warn!("the raft loop has stopped; shutting the node down");
        }
    }
    running.shutdown().await
}
