//! The Nacre node: the state machine over `nacre-store`, the Raft driver
//! over the tlog, and the client listener.
//!
//! A single node is a one-member Raft group: every write is proposed,
//! appended to the tlog, fsynced (shared by all writes that arrived
//! meanwhile), committed and applied by the same code that replication
//! uses.

mod admin;
mod backup;
pub mod clock;
mod config;
mod discovery;
mod error;
mod etcd;
mod health;
pub mod lease;
mod lease_requests;
pub mod metrics;
pub mod node;
mod removal;
mod scripts;
mod server;
mod shutdown;
#[cfg(feature = "sim")]
pub mod sim_server;
pub mod state;
pub mod transport;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use backup::{
    read_backup, restore, BackupError, BackupInfo, BackupReader, RestoreError, Restored,
    BACKUP_MAGIC, SHA_BYTES,
};
pub use config::{ConfigError, NodeConfig, ServerConfig};
pub use error::{FailureKind, ServerError};
pub use health::{Health, Unhealthy};
use nacre_vfs::{OsVfs, Vfs};
pub use node::name_id;
use tokio::sync::Semaphore;

/// A node that is up: its client address, and the way to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    /// Where the etcd v3 API listens, if it is on.
    etcd_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    node: node::NodeHandle,
    /// The client listener's task; it ends when asked to stop, or failed.
    listener: tokio::task::JoinHandle<std::io::Result<()>>,
    /// How the listener ended, if it did before it was asked to.
    listener_ended: Option<Result<std::io::Result<()>, tokio::task::JoinError>>,
    raft: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
    /// How to drain connections and hand leadership over on the way out.
    plan: shutdown::Plan,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The etcd v3 API's address (`etcd_listen`), if `etcd_api` is on.
    pub fn etcd_addr(&self) -> Option<SocketAddr> {
        self.etcd_addr
    }

    /// Where the admin HTTP listener serves, if `admin_api` is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Completes once the node can no longer serve: its raft loop ended
    /// (asked to, failed, panicked, or the node was removed; the loop
    /// itself stops when a thread or task it needs ends), or its client
    /// listener did.
    pub async fn wait_down(&mut self) {
        if self.listener_ended.is_some() {
            return;
        }
        let status = self.node.status.clone();
        let ended = tokio::select! {
            () = status.wait_stopped() => None,
            r = &mut self.listener => Some(r),
        };
        if ended.is_some() {
            self.listener_ended = ended;
        }
    }

    /// Stops accepting, drains the connections (requests in flight are
    /// answered, later ones get `GoingDown`; at most `request_timeout_ms`),
    /// hands leadership to another voter if this node leads, stops the
    /// raft loop (which checkpoints the store) and waits for it. The error
    /// is what stopped the node, if something did: the raft loop's, else
    /// the listener's.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        let listener = match self.listener_ended.take() {
            Some(ended) => listener_outcome(ended, false),
            None => listener_outcome((&mut self.listener).await, true),
        };
        let p = &self.plan;
        shutdown::drain_connections(&p.connections, p.connections_max, p.drain_wait).await;
        shutdown::hand_over_leadership(&self.node, p.handover_wait).await;
        self.node.shutdown();
        if let Some(raft) = self.raft.take() {
            let stopped = |why: String| ServerError::Stopped {
                thread: "raft thread",
                why,
            };
            match tokio::task::spawn_blocking(move || raft.join()).await {
                Ok(Ok(result)) => result?,
                Ok(Err(payload)) => {
                    let why = format!("panicked: {}", error::panic_message(payload.as_ref()));
                    return Err(stopped(why));
                }
                Err(e) => return Err(stopped(format!("could not be joined: {e}"))),
            }
        }
        listener
    }
}

/// How the client listener ended: fine if it was asked to stop (`asked`)
/// and did, a failure otherwise.
fn listener_outcome(
    ended: Result<std::io::Result<()>, tokio::task::JoinError>,
    asked: bool,
) -> Result<(), ServerError> {
    let why = match ended {
        Ok(Ok(())) if asked => return Ok(()),
        Ok(Ok(())) => "ended".to_string(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(e) if e.is_panic() => {
            format!(
                "panicked: {}",
                error::panic_message(e.into_panic().as_ref())
            )
        }
        Err(e) => format!("was cancelled: {e}"),
    };
    Err(ServerError::Stopped {
        thread: "client listener task",
        why,
    })
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
    // A node without the cluster's state asks the others what it needs.
    discovery::spawn(&config, &node);
    // A member removed while it could not hear of it finds out.
    removal::spawn(&config, &node);
    // A single-member group elects itself at once; serving only after that
    // spares the first clients a spurious NotMaster.
    if config.nodes.len() <= 1 && !config.joins_existing() {
        let timeout_ms = config.tick_ms * config.election_ticks as u64 * 3;
        wait_for_leadership(&node, std::time::Duration::from_millis(timeout_ms)).await;
    }
    let mut listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            node.shutdown();
            let _ = tokio::task::spawn_blocking(move || raft.join()).await;
            return Err(e);
        }
    };
    let addr = listeners.client.local_addr()?;
    tracing::info!(%addr, node = %config.node_name, data_dir = %config.data_dir.display(), "nacre node serving");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let connections = Arc::new(Semaphore::new(config.connections_max));
    let plan = shutdown::Plan {
        connections: connections.clone(),
        connections_max: config.connections_max,
        drain_wait: std::time::Duration::from_millis(config.request_timeout_ms),
        handover_wait: std::time::Duration::from_millis(
            2 * config.tick_ms * config.election_ticks as u64,
        ),
    };
    let shared = Arc::new(server::Shared {
        limits,
        node: node.clone(),
        store,
        started: Instant::now(),
        counters: Default::default(),
        connections,
        blocking: Arc::new(Semaphore::new(config.blocking_tasks_max)),
        inline_blocking: false,
        #[cfg(feature = "sim")]
        planted_skip_read_barrier: false,
        config,
    });
    let (etcd_addr, admin_addr) = listeners.spawn_beside(&shared, &stop_rx)?;
    let listener = tokio::spawn(server::accept_loop(shared, listeners.client, stop_rx));
    Ok(RunningServer {
        addr,
        etcd_addr,
        admin_addr,
        stop,
        node,
        listener,
        listener_ended: None,
        raft: Some(raft),
        plan,
    })
}

/// A node's listeners: for clients, and beside it for the etcd v3 API
/// and the admin HTTP listener when they are on. All are bound before the
/// node serves, so that an address in use fails the start.
struct Listeners {
    client: tokio::net::TcpListener,
    etcd: Option<tokio::net::TcpListener>,
    admin: Option<tokio::net::TcpListener>,
}

impl Listeners {
    async fn bind(config: &ServerConfig) -> Result<Listeners, ServerError> {
        Ok(Listeners {
            client: bind(&config.listen).await?,
            etcd: if config.etcd_api {
                Some(bind(&config.etcd_listen).await?)
            } else {
                None
            },
            admin: if config.admin_api {
                Some(bind(&config.admin_listen).await?)
            } else {
                None
            },
        })
    }

    /// Serves the etcd API and the admin listener until `stop`; their
    /// addresses.
    fn spawn_beside(
        &mut self,
        shared: &Arc<server::Shared>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Option<SocketAddr>, Option<SocketAddr>), ServerError> {
        let etcd_addr = match self.etcd.take() {
            Some(l) => {
                let a = l.local_addr()?;
                tracing::info!(addr = %a, "etcd v3 API serving");
                let (shared, stop) = (shared.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = etcd::serve(shared, l, a, stop).await {
                        tracing::error!(error = %e, "the etcd v3 API stopped");
                    }
                });
                Some(a)
            }
            None => None,
        };
        let admin_addr = match self.admin.take() {
            Some(l) => {
                let a = l.local_addr()?;
                tracing::info!(addr = %a, "admin HTTP listener serving");
                let (shared, stop) = (shared.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = admin::serve(shared, l, stop).await {
                        tracing::error!(error = %e, "the admin HTTP listener stopped");
                    }
                });
                Some(a)
            }
            None => None,
        };
        Ok((etcd_addr, admin_addr))
    }
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen {
            addr: addr.to_string(),
            source,
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
        initial_cluster_state: if config.joins_existing() {
            node::InitialClusterState::Existing
        } else {
            node::InitialClusterState::New
        },
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
        checkpoint_bytes: config.checkpoint_bytes,
        tlog_tail_entries: config.tlog_tail_entries,
        tlog_tail_bytes: config.tlog_tail_bytes,
        promote_lag_max_entries: config.promote_lag_max_entries,
        watches: Arc::new(watch::WatchHub::new(config.watch_options())),
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
/// returns as soon as the node can no longer serve: with the error that
/// stopped it if anything failed — a disk error, corrupt data, a peer port
/// it cannot listen on, a panic in the raft thread, or the end of a thread
/// or task the node cannot live without (the peer-in thread, the peer or
/// client listener) — so that the process exits non-zero and a supervisor
/// sees it, instead of living on answering every request with `GoingDown`;
/// with [`ServerError::Removed`] if the cluster removed the node (its own
/// kind, so that `nacre serve` exits with a code a supervisor can tell
/// apart and not restart it).
pub async fn serve(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    serve_with_vfs(config, Arc::new(OsVfs::default()), shutdown).await
}

/// [`serve`] with the store's and the tlog's files behind `vfs`, as
/// [`start_with_vfs`].
pub async fn serve_with_vfs(
    config: ServerConfig,
    vfs: Arc<dyn Vfs>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let mut running = start_with_vfs(config, vfs).await?;
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        () = running.wait_down() => {
            tracing::warn!("the node can no longer serve; shutting it down");
        }
    }
    let status = running.node.status.clone();
    running.shutdown().await?;
    if status.removed.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ServerError::Removed);
    }
    Ok(())
}
