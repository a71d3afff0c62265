//! Node configuration: every knob has a default, so an empty TOML file (or
//! none) gives a working single-node cluster.
//!
//! The structs derive `schemars::JsonSchema` so that `docs/config.md` is
//! generated from them (names, types, defaults and these doc comments:
//! `nacre config-reference`); a field's doc comment is its user
//! documentation.

use std::path::PathBuf;

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not the settings `ServerConfig` has.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    #[error("no node named {name:?} in [[nodes]] (have: {})", .have.join(", "))]
    UnknownNode { name: String, have: Vec<String> },
    /// A setting that cannot work, named with what is wrong with it.
    #[error("{0}")]
    Invalid(String),
}

/// One member of a cluster, as listed in the config's `[[nodes]]` tables.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The member's name, unique in the cluster: `nacre serve --node NAME`
    /// runs it.
    pub name: String,
    /// Raft id; by default a hash of the name (so a node added later gets
    /// the same id on every member without coordination). Must never be
    /// reused for another node in the cluster's lifetime.
    #[serde(default)]
    pub id: Option<u64>,
    /// Address for clients.
    pub client: String,
    /// Address for peers.
    pub peer: String,
    /// Address of the member's etcd v3 API (docs/etcd.md): a follower
    /// forwards writes to the leader there, and etcd's `MemberList`
    /// reports it. Unset: that member's etcd API is unknown to the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<String>,
    /// Address of the member's admin HTTP listener (`/metrics`, `/health`,
    /// `/status`, the dashboard: docs/operations.md). Unset: the default
    /// `admin_listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The member's data directory (its tlog and store), used by the
    /// member itself.
    pub data_dir: PathBuf,
}

/// Everything a node needs to run. Loaded from TOML by the `nacre` binary;
/// unknown keys are refused so a typo does not silently keep a default.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// Clients and peers of another cluster are refused at the handshake.
    pub cluster_id: String,
    /// Where the node keeps its tlog (`tlog/`) and store (`store/`);
    /// created if missing.
    pub data_dir: PathBuf,
    /// Address for clients.
    pub listen: String,
    /// Address for peers (used once clustered).
    pub peer_listen: String,
    /// Client connections served at once; one more is answered `Busy`
    /// and closed.
    pub connections_max: usize,
    /// Requests one connection may have in flight before the server stops
    /// reading from it (back-pressure, not an error).
    pub inflight_per_connection_max: usize,
    /// The largest frame of the native protocol, header excluded; it must
    /// hold one maximal key and value (plus 1 KiB).
    pub frame_size_max_bytes: usize,
    /// The longest key a write may carry.
    pub key_size_max_bytes: usize,
    /// The largest value a write may carry.
    pub value_size_max_bytes: usize,
    /// Guards plus operations in one batch or sequence.
    pub batch_ops_max: usize,
    /// Keys and values of one batch, summed.
    pub batch_size_max_bytes: usize,
    /// Keys one multi-get may ask for.
    pub multi_get_keys_max: usize,
    /// Results in one range or prefix reply; a larger `max` is clamped to
    /// this and the client pages on from the last key.
    pub range_results_max: u32,
    /// How a leader confirms it still leads before a consistent read:
    /// `"lease"` (default: from the leader lease, no network round; safe
    /// while no node's clock runs more than twice as fast as another's,
    /// whatever pauses and delays: docs/replication.md) or `"read-index"`
    /// (a heartbeat round to a quorum per batch of reads; safe whatever
    /// the clocks do).
    pub consistent_reads: String,
    /// Raft tick; election and heartbeat timeouts are counted in ticks.
    pub tick_ms: u64,
    /// Ticks a follower waits without hearing from a leader before it
    /// campaigns (raft randomizes it between one and two times this); the
    /// election timeout, which also bounds the leader lease.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats; must be below
    /// `election_ticks`.
    pub heartbeat_ticks: usize,
    /// Writes proposed but not yet applied, across all clients.
    pub proposals_pending_max: usize,
    /// How long a client request may wait for the log before `Timeout`.
    pub request_timeout_ms: u64,
    /// Work that can take long on a CPU (ranges, multi-gets, Lua calls)
    /// runs on tokio's blocking threads, at most this many at once, so
    /// that it never holds up the async workers that serve every
    /// connection; beyond it, requests wait their turn.
    pub blocking_tasks_max: usize,
    /// Bytes of decoded store pages kept in memory.
    pub store_cache_bytes: u64,
    /// The store is checkpointed (synced, and the tlog compacted up to it)
    /// after this many applied entries, or after `checkpoint_bytes`,
    /// whichever comes first.
    pub checkpoint_entries: u64,
    /// The store is also checkpointed after this many bytes of applied
    /// entries: a few large values must not grow the tlog without bound.
    pub checkpoint_bytes: u64,
    /// A new tlog segment file is started once the current one reaches
    /// this size; compaction deletes whole segments.
    pub tlog_segment_size_bytes: u64,
    /// The cluster's initial members. Empty: a single-node cluster made of
    /// this node (`node_name`, `listen`, `peer_listen`, `data_dir`). Only a
    /// brand-new data directory reads this list; afterwards membership is
    /// what the replicated log says (learners added, nodes removed).
    pub nodes: Vec<NodeConfig>,
    /// A voter that takes leadership back whenever it is healthy.
    pub preferred_leader: Option<String>,
    /// What a node whose data directory is empty does (etcd's
    /// `--initial-cluster-state`): `"new"` (default) creates the cluster
    /// from `[[nodes]]`, but only once every other initial member has
    /// answered that it holds no cluster state either; if one holds some,
    /// the cluster exists and this node lost its data, so it waits as with
    /// `"existing"`. `"existing"`: the cluster exists; the node neither
    /// votes nor serves until the leader has sent it the cluster's state
    /// (docs/replication.md, "A node that lost its data"). Ignored once
    /// the data directory holds a log.
    pub initial_cluster_state: String,
    /// Join a running cluster: the same as `initial_cluster_state =
    /// "existing"`, for a node that `nacre cluster add-learner` adds (or
    /// has added).
    pub join: bool,
    /// Client addresses of members of the cluster to join: a joining node
    /// asks them for the members and their peer addresses. Empty: the
    /// client addresses of `[[nodes]]`.
    pub join_endpoints: Vec<String>,
    /// `nacre cluster promote` refuses a learner whose log is more than
    /// this many entries behind the leader's (or of which the leader has
    /// confirmed nothing yet), unless forced: a voter that cannot vote
    /// for the leader's log weakens the quorum until it catches up.
    pub promote_lag_max_entries: u64,
    /// Entries kept in the tlog behind a checkpoint so a briefly lagging
    /// follower catches up from the log instead of a snapshot.
    pub tlog_tail_entries: u64,
    /// The same tail, bounded in bytes of tlog records: it keeps at most
    /// `tlog_tail_entries` entries and at most this many bytes.
    pub tlog_tail_bytes: u64,
    /// Writes remembered per client session for deduplicating retries,
    /// counted in log entries: a retry later than this is applied again.
    pub session_retention_entries: u64,
    /// Revisions with changes kept in memory for watches that start in
    /// the past (older ones get `Compacted`), within
    /// `watch_history_bytes`.
    pub watch_history_revisions: usize,
    /// The most bytes of events the watch history
    /// (`watch_history_revisions`) keeps in memory.
    pub watch_history_bytes: usize,
    /// Frames queued to one watch whose client does not read them fast
    /// enough before the watch is ended with `SlowConsumer`.
    pub watch_buffer_frames: usize,
    /// Watches one connection may have open.
    pub watches_per_connection_max: usize,
    /// Watches the node serves, all connections together.
    pub watches_max: usize,
    /// A watch with nothing to send for this long gets a progress frame
    /// (no events, the node's applied revision).
    pub watch_progress_ms: u64,
    /// Leases that may exist at once; a grant beyond is refused (`Busy`).
    pub leases_max: usize,
    /// The shortest TTL a grant may ask for. Unset: two election timeouts
    /// (`2 × election_ticks × tick_ms`). While a leader fails over, no
    /// keep-alive can be acknowledged: followers wait one to two election
    /// timeouts (raft's randomized timeout) before they elect another, and
    /// the new leader extends every lease by only one. A TTL shorter than
    /// that would have healthy holders lose their leases to every
    /// fail-over (docs/coordination.md, "Leases").
    pub lease_ttl_min_ms: Option<u64>,
    /// The longest TTL a grant may ask for.
    pub lease_ttl_max_ms: u64,
    /// Serve etcd's v3 gRPC API beside the native protocol (docs/etcd.md).
    pub etcd_api: bool,
    /// Address of the etcd v3 API (etcd's client port by default).
    pub etcd_listen: String,
    /// Operations one etcd Txn may hold in its compares, and in each of
    /// its branches (etcd's `--max-txn-ops`).
    pub etcd_txn_ops_max: usize,
    /// The largest etcd response (a Range or a Txn's) the node builds; a
    /// larger one is refused (`ResourceExhausted`) before it is read into
    /// memory. Clients page with `limit` and a start key.
    pub etcd_response_bytes_max: usize,
    /// Serve the admin HTTP listener: `/metrics`, `/health`, `/ready`,
    /// `/status` and the dashboard (docs/operations.md).
    pub admin_api: bool,
    /// Address of the admin HTTP listener.
    pub admin_listen: String,
    /// `/health` (and `ping`) report a node unhealthy once its applied
    /// index lags its commit index by more than this many entries.
    pub health_apply_lag_max_entries: u64,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let limits = nacre_proto::Limits::default();
        ServerConfig {
            node_name: "nacre0".to_string(),
            cluster_id: "nacre".to_string(),
            data_dir: PathBuf::from("nacre-data"),
            listen: "127.0.0.1:7379".to_string(),
            peer_listen: "127.0.0.1:7380".to_string(),
            connections_max: 1024,
            inflight_per_connection_max: 1024,
            frame_size_max_bytes: limits.frame_size_max_bytes,
            key_size_max_bytes: limits.key_size_max_bytes,
            value_size_max_bytes: limits.value_size_max_bytes,
            batch_ops_max: limits.batch_ops_max,
            batch_size_max_bytes: limits.batch_size_max_bytes,
            multi_get_keys_max: limits.multi_get_keys_max,
            range_results_max: limits.range_results_max,
            consistent_reads: "lease".to_string(),
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 1,
            proposals_pending_max: 65_536,
            request_timeout_ms: 10_000,
            blocking_tasks_max: 16,
            store_cache_bytes: 64 << 20,
            checkpoint_entries: 100_000,
            checkpoint_bytes: 16 << 20,
            tlog_segment_size_bytes: 64 << 20,
            nodes: Vec::new(),
            preferred_leader: None,
            initial_cluster_state: "new".to_string(),
            join: false,
            join_endpoints: Vec::new(),
            tlog_tail_entries: 10_000,
            tlog_tail_bytes: 16 << 20,
            promote_lag_max_entries: 1_000,
            session_retention_entries: 100_000,
            watch_history_revisions: 100_000,
            watch_history_bytes: 64 << 20,
            watch_buffer_frames: 1024,
            watches_per_connection_max: 1000,
            watches_max: 100_000,
            watch_progress_ms: 1000,
            leases_max: 100_000,
            lease_ttl_min_ms: None,
            lease_ttl_max_ms: 24 * 3_600_000,
            etcd_api: true,
            etcd_listen: "127.0.0.1:2379".to_string(),
            etcd_txn_ops_max: 128,
            etcd_response_bytes_max: 64 << 20,
            admin_api: true,
            admin_listen: "127.0.0.1:7381".to_string(),
            health_apply_lag_max_entries: 10_000,
        }
    }
}

impl ServerConfig {
    pub fn limits(&self) -> nacre_proto::Limits {
        nacre_proto::Limits {
            frame_size_max_bytes: self.frame_size_max_bytes,
            key_size_max_bytes: self.key_size_max_bytes,
            value_size_max_bytes: self.value_size_max_bytes,
            batch_ops_max: self.batch_ops_max,
            batch_size_max_bytes: self.batch_size_max_bytes,
            multi_get_keys_max: self.multi_get_keys_max,
            range_results_max: self.range_results_max,
        }
    }

    /// The watch hub's bounds.
    pub fn watch_options(&self) -> crate::watch::WatchOptions {
        crate::watch::WatchOptions {
            history_revisions: self.watch_history_revisions,
            history_bytes: self.watch_history_bytes,
            buffer_frames: self.watch_buffer_frames,
            watches_max: self.watches_max,
            frame_size_max_bytes: self.frame_size_max_bytes,
        }
    }

    /// The shortest TTL a grant may ask for: `lease_ttl_min_ms`, or two
    /// election timeouts when it is unset.
    pub fn lease_ttl_floor_ms(&self) -> u64 {
        self.lease_ttl_min_ms
            .unwrap_or(2 * self.election_ticks as u64 * self.tick_ms)
    }

    /// Whether this node joins a cluster that exists already, rather than
    /// creating one, when its data directory is empty.
    pub fn joins_existing(&self) -> bool {
        self.join || self.initial_cluster_state == "existing"
    }

    /// Whom a joining node asks for the members: `join_endpoints`, else
    /// the client addresses of the other `[[nodes]]`.
    pub fn endpoints_to_join(&self) -> Vec<String> {
        if !self.join_endpoints.is_empty() {
            return self.join_endpoints.clone();
        }
        self.nodes
            .iter()
            .filter(|n| n.name != self.node_name)
            .map(|n| n.client.clone())
            .collect()
    }

    /// Parses a TOML document; missing keys keep their defaults.
    pub fn from_toml(text: &str) -> Result<ServerConfig, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Makes this config about the member `name` of `[[nodes]]`: its name,
    /// addresses and data directory become this node's.
    pub fn select_node(&mut self, name: &str) -> Result<(), ConfigError> {
        let Some(n) = self.nodes.iter().find(|n| n.name == name) else {
            return Err(ConfigError::UnknownNode {
                name: name.to_string(),
                have: self.nodes.iter().map(|n| n.name.clone()).collect(),
            });
        };
        self.node_name = n.name.clone();
        self.listen = n.client.clone();
        self.peer_listen = n.peer.clone();
        if let Some(etcd) = &n.etcd {
            self.etcd_listen = etcd.clone();
        }
        if let Some(admin) = &n.admin {
            self.admin_listen = admin.clone();
        }
        self.data_dir = n.data_dir.clone();
        Ok(())
    }

    /// The initial members with their raft ids; a config without
    /// `[[nodes]]` is a cluster of this node alone.
    pub fn initial_members(&self) -> Vec<(u64, NodeConfig)> {
        if self.nodes.is_empty() {
            return vec![(
                crate::node::name_id(&self.node_name),
                NodeConfig {
                    name: self.node_name.clone(),
                    id: None,
                    client: self.listen.clone(),
                    peer: self.peer_listen.clone(),
                    etcd: self.etcd_api.then(|| self.etcd_listen.clone()),
                    admin: self.admin_api.then(|| self.admin_listen.clone()),
                    data_dir: self.data_dir.clone(),
                },
            )];
        }
        self.nodes
            .iter()
            .map(|n| {
                (
                    n.id.unwrap_or_else(|| crate::node::name_id(&n.name)),
                    n.clone(),
                )
            })
            .collect()
    }

    /// Refuses settings that cannot work, with the setting's name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("connections_max", self.connections_max as u64),
            (
                "inflight_per_connection_max",
                self.inflight_per_connection_max as u64,
            ),
            ("tick_ms", self.tick_ms),
            ("election_ticks", self.election_ticks as u64),
            ("heartbeat_ticks", self.heartbeat_ticks as u64),
            ("proposals_pending_max", self.proposals_pending_max as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("blocking_tasks_max", self.blocking_tasks_max as u64),
            ("checkpoint_entries", self.checkpoint_entries),
            ("checkpoint_bytes", self.checkpoint_bytes),
            ("range_results_max", self.range_results_max as u64),
            ("session_retention_entries", self.session_retention_entries),
            (
                "watch_history_revisions",
                self.watch_history_revisions as u64,
            ),
            ("watch_history_bytes", self.watch_history_bytes as u64),
            ("watch_buffer_frames", self.watch_buffer_frames as u64),
            (
                "watches_per_connection_max",
                self.watches_per_connection_max as u64,
            ),
            ("watches_max", self.watches_max as u64),
            ("watch_progress_ms", self.watch_progress_ms),
            ("leases_max", self.leases_max as u64),
            ("lease_ttl_min_ms", self.lease_ttl_floor_ms()),
            ("lease_ttl_max_ms", self.lease_ttl_max_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if !matches!(self.consistent_reads.as_str(), "lease" | "read-index") {
            return Err(ConfigError::Invalid(format!(
                "consistent_reads must be \"lease\" or \"read-index\", not {:?}",
                self.consistent_reads
            )));
        }
        if !matches!(self.initial_cluster_state.as_str(), "new" | "existing") {
            return Err(ConfigError::Invalid(format!(
                "initial_cluster_state must be \"new\" or \"existing\", not {:?}",
                self.initial_cluster_state
            )));
        }
        if self.joins_existing() && self.endpoints_to_join().is_empty() {
            return Err(ConfigError::Invalid(
                "joining a cluster needs the client address of a member to ask: \
                 --join HOST:PORT[,HOST:PORT...] (or a config listing [[nodes]])"
                    .to_string(),
            ));
        }
        if self.lease_ttl_floor_ms() > self.lease_ttl_max_ms {
            return Err(ConfigError::Invalid(format!(
                "lease_ttl_min_ms ({}) must not be above lease_ttl_max_ms ({})",
                self.lease_ttl_floor_ms(),
                self.lease_ttl_max_ms
            )));
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::Invalid(
                "election_ticks must be greater than heartbeat_ticks".to_string(),
            ));
        }
        if self.node_name.is_empty() || self.node_name.len() > nacre_proto::NAME_SIZE_MAX_BYTES {
            return Err(ConfigError::Invalid(
                "node_name must be 1 to 255 bytes".to_string(),
            ));
        }
        if self.cluster_id.len() > nacre_proto::NAME_SIZE_MAX_BYTES {
            return Err(ConfigError::Invalid(
                "cluster_id must be at most 255 bytes".to_string(),
            ));
        }
        self.validate_nodes()?;
        if self.frame_size_max_bytes < self.value_size_max_bytes + self.key_size_max_bytes + 1024 {
            return Err(ConfigError::Invalid(
                "frame_size_max_bytes must hold one maximal key and value".to_string(),
            ));
        }
        Ok(())
    }

    /// `[[nodes]]`: distinct names and ids, this node among them (unless
    /// it joins), the preferred leader among them.
    fn validate_nodes(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Ok(());
        }
        let members = self.initial_members();
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for (id, n) in &members {
            if *id == 0 {
                return Err(ConfigError::Invalid(format!(
                    "node {:?}: id 0 is reserved",
                    n.name
                )));
            }
            if !ids.insert(*id) {
                return Err(ConfigError::Invalid(format!(
                    "node id {id} is used twice in [[nodes]]"
                )));
            }
            if !names.insert(n.name.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "node name {:?} is used twice in [[nodes]]",
                    n.name
                )));
            }
        }
        // A joining node may be new to the list: the cluster tells it
        // the members.
        if !names.contains(&self.node_name) && !self.joins_existing() {
            return Err(ConfigError::Invalid(format!(
                "this node ({:?}) is not in [[nodes]]: pass --node NAME",
                self.node_name
            )));
        }
        if let Some(p) = &self.preferred_leader {
            if !names.contains(p) {
                return Err(ConfigError::Invalid(format!(
                    "preferred_leader {p:?} is not in [[nodes]]"
                )));
            }
        }
        Ok(())
    }
}
