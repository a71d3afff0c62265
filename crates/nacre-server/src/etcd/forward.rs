//! A follower's way to the leader: etcd clients expect any member to
//! answer writes and linearizable reads, so a member that is not the
//! leader sends the call on to the leader's etcd listener and relays the
//! answer. A forwarded call is marked, and never forwarded twice (a
//! leader that changed meanwhile answers "no leader", which clients
//! retry).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::node::Status as NodeStatus;
use crate::ServerConfig;

use super::errors::NO_LEADER;

/// The metadata key that marks a call one member forwarded to another.
const FORWARDED: &str = "nacre-forwarded";

pub(crate) struct Forwarder {
    my_id: u64,
    /// Each member's etcd address, as the configuration names them.
    addrs: BTreeMap<u64, String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    /// `own`: where this node's etcd API listens (bound, so a configured
    /// port 0 is the real one).
    pub(crate) fn new(config: &ServerConfig, my_id: u64, own: std::net::SocketAddr) -> Forwarder {
        let mut addrs: BTreeMap<u64, String> = config
            .initial_members()
            .into_iter()
            .filter_map(|(id, n)| n.etcd.map(|a| (id, a)))
            .collect();
        addrs.insert(my_id, own.to_string());
        Forwarder {
            my_id,
            addrs,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// A member's etcd client URLs (none if the configuration does not
    /// say where it listens), as `HOST:PORT` without a scheme: etcdctl's
    /// `--cluster` commands dial them as given and send them as the
    /// HTTP/2 `:authority`, which may not hold a scheme (docs/etcd.md,
    /// "Endpoints with a scheme"); every etcd client takes `HOST:PORT`.
    pub(crate) fn client_urls(&self, id: u64) -> Vec<String> {
        self.addrs
            .get(&id)
            .map(|a| vec![a.clone()])
            .unwrap_or_default()
    }

    /// A channel to the leader's etcd listener, or "no leader" when the
    /// leader is unknown, is this node, or listens where nobody said.
    pub(crate) fn leader(&self, status: &NodeStatus) -> Result<Channel, Status> {
        let leader = status.leader_id.load(std::sync::atomic::Ordering::Acquire);
        if leader == 0 || leader == self.my_id {
            return Err(Status::unavailable(NO_LEADER));
        }
        let Some(addr) = self.addrs.get(&leader) else {
            return Err(Status::unavailable(format!(
                "{NO_LEADER} (the leader's etcd address is not in this node's configuration)"
            )));
        };
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("bad etcd address {addr:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(1));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.clone(), channel.clone());
        Ok(channel)
    }
}

/// Whether another member forwarded this call here.
pub(crate) fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// `message` as a call to forward: marked so it is not forwarded again.
pub(crate) fn marked<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}
