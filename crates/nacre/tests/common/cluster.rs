//! A local cluster of real `nacre serve` processes whose peer traffic goes
//! through the in-process proxy, with the faults the process-level tests
//! inject: kill -9 and restart, SIGSTOP and SIGCONT, cutting a node off.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_client::{Client, ClientOptions, Consistency};
use nacre_server::ServerConfig;

use super::proxy::{proxy, Net};
use super::{free_port, init_cluster, ServerProc};

pub struct Cluster {
    pub cfg: ServerConfig,
    pub net: Arc<Net>,
    config: PathBuf,
    /// Each node's raft id, by name.
    pub ids: BTreeMap<String, u64>,
    /// Where each node really listens for peers (behind its proxy).
    peer_real: BTreeMap<String, String>,
    /// The running processes; a killed node is absent until restarted.
    pub procs: BTreeMap<String, ServerProc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes with `settings` (TOML lines) in front of the generated
    /// config.
    pub async fn start(n: usize, settings: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (config, cfg) = init_cluster(dir.path(), n, settings);
        let net = Arc::new(Net::default());
        let ids = cfg
            .nodes
            .iter()
            .map(|n| (n.name.clone(), nacre_server::name_id(&n.name)))
            .collect::<BTreeMap<_, _>>();
        let mut peer_real = BTreeMap::new();
        for n in &cfg.nodes {
            // Peers dial the config's address (the proxy); the node
            // listens on a port of its own behind it.
            let real = format!("127.0.0.1:{}", free_port());
            proxy(net.clone(), n.peer.clone(), real.clone(), ids[&n.name]).await;
            peer_real.insert(n.name.clone(), real);
        }
        let mut c = Cluster {
            cfg,
            net,
            config,
            ids,
            peer_real,
            procs: BTreeMap::new(),
            _dir: dir,
        };
        for name in c.names() {
            c.restart(&name);
        }
        c
    }

    pub fn names(&self) -> Vec<String> {
        self.cfg.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn client_addr(&self, name: &str) -> String {
        let node = self.cfg.nodes.iter().find(|n| n.name == name).unwrap();
        node.client.clone()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.cfg.nodes.iter().map(|n| n.client.clone()).collect()
    }

    /// A client of every node with the default options: it retries
    /// through elections until its 10 s timeout.
    pub async fn client(&self, endpoints: Vec<String>) -> Client {
        Client::connect(ClientOptions::new(endpoints))
            .await
            .unwrap()
    }

    /// A client of node `name` alone that never follows a redirect.
    pub async fn local(&self, name: &str, consistency: Consistency) -> Client {
        local_client(&self.client_addr(name), consistency, 10_000).await
    }

    /// The current leader's name, once one is known (waits for it).
    pub async fn leader(&self) -> String {
        let c = self.client(self.endpoints()).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(l)) = c.who_master().await {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self, name: &str) {
        if let Some(p) = self.procs.remove(name) {
            p.kill9();
        }
    }

    /// Starts node `name` (again) on its data directory.
    pub fn restart(&mut self, name: &str) {
        let real = self.peer_real[name].clone();
        let p = ServerProc::start_member(&self.config, name, &["--peer-listen", &real]);
        self.procs.insert(name.to_string(), p);
    }

    /// SIGSTOP: the process keeps its memory and sockets but runs nothing.
    pub fn pause(&self, name: &str) {
        self.procs[name].signal("STOP");
    }

    /// SIGCONT.
    pub fn resume(&self, name: &str) {
        self.procs[name].signal("CONT");
    }

    /// Cuts node `name` off from every other node, both ways.
    pub fn isolate(&self, name: &str) {
        for other in self.names().iter().filter(|o| *o != name) {
            self.net.cut(self.ids[name], self.ids[other]);
        }
    }

    /// Cuts node `name` off from every other node, both ways, by dropping
    /// packets (see `proxy.rs`).
    pub fn isolate_dropping(&self, name: &str) {
        for other in self.names().iter().filter(|o| *o != name) {
            self.net.cut_dropping(self.ids[name], self.ids[other]);
        }
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// The log of every node, for a failure message.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(n, p)| format!("==== {n}\n{}", p.log()))
            .collect()
    }
}

/// A client of the node at `addr` alone that never follows a redirect.
pub async fn local_client(addr: &str, consistency: Consistency, timeout_ms: u64) -> Client {
    let mut o = ClientOptions::new([addr.to_string()]);
    o.retries_max = 0;
    o.request_timeout_ms = timeout_ms;
    Client::connect(o)
        .await
        .unwrap()
        .with_consistency(consistency)
}

/// Waits, at most 30 s, until the node at `addr` has applied log index
/// `index` (a restarted node catching up, say).
pub async fn wait_applied(addr: &str, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut o = ClientOptions::new([addr.to_string()]);
        o.retries_max = 0;
        if let Ok(c) = Client::connect(o).await {
            if c.get_txid().await.unwrap_or(0) >= index {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not apply index {index} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
