//! `nacre cluster ...` and `nacre local-cluster`: configuration for local
//! clusters, membership changes and status.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use nacre_client::Client;
use nacre_server::{NodeConfig, ServerConfig};

use crate::output::{Failure, Output};

#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum ClusterCommand {
    /// Print a TOML config for N local nodes on free loopback ports.
    InitConfig {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Data directories go under this directory, one per node.
        #[arg(long)]
        dir: PathBuf,
        /// Node i (from 1) listens for clients on BASE+2(i-1) and for
        /// peers on the port after (default: free ports at random).
        #[arg(long)]
        base_port: Option<u16>,
    },
    /// Each member's role, applied and match index and lag, as the
    /// leader sees them (asked of the leader whichever endpoint is given).
    Status,
    /// Add a learner; start it with `nacre serve --join ENDPOINTS ...`.
    AddLearner {
        name: String,
        /// Its client address.
        #[arg(long)]
        client: String,
        /// Its peer address.
        #[arg(long)]
        peer: String,
    },
    /// Make a learner a voter, once it has caught up with the leader (to
    /// within the leader's `promote_lag_max_entries`).
    Promote {
        name: String,
        /// Promote it however far behind it is.
        #[arg(long)]
        force: bool,
    },
    /// Remove a member.
    Remove { name: String },
    /// Hand leadership to a voter.
    TransferLeader { name: String },
}

/// Ports tried for each address before giving up on the range below.
const PORT_TRIES: usize = 200;

/// Where listening ports are picked: just below the kernel's range for the
/// source ports of outgoing connections. A port from `bind(0)` comes from
/// that range, so any process's next outgoing connection could take it
/// between this command and the node's start, which then fails with
/// "Address already in use" (seen in the end-to-end tests, where many
/// nodes connect to each other while further clusters are configured).
fn listen_port_range() -> std::ops::Range<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
        .max(4_096);
    ephemeral_start.saturating_sub(12_000).max(1_024)..ephemeral_start
}

/// A loopback port that is free now, from `listen_port_range`, not in
/// `taken`; the search starts at a random place in the range so that
/// configs made at the same time rarely try the same ports.
fn free_loopback_port(taken: &mut Vec<u16>) -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let range = listen_port_range();
    let span = u64::from(range.end - range.start);
    let start = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % span;
    for i in 0..PORT_TRIES as u64 {
        let port = range.start + ((start + i) % span) as u16;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return Ok(port);
        }
    }
    // No free port in as many tries: fall back on what the kernel hands out.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    taken.push(port);
    Ok(port)
}

/// The client, peer and etcd API addresses of `nodes` local nodes from
/// `base`: node i (from 1) has `base + 2(i-1)` for clients and the next
/// port for peers; the etcd ports follow all of those, `base + 2n + (i-1)`.
pub fn ports_from(base: u16, nodes: usize) -> Result<Vec<Ports>, String> {
    let n = nodes as u32;
    let last = u32::from(base) + 4 * n - 1;
    if base == 0 || last > u32::from(u16::MAX) {
        return Err(format!(
            "--base-port {base}: {nodes} nodes need ports {base} to {last}, within 1 to 65535"
        ));
    }
    let at = |port: u32| format!("127.0.0.1:{port}");
    Ok((0..n)
        .map(|i| {
            let client = u32::from(base) + 2 * i;
            Ports {
                client: at(client),
                peer: at(client + 1),
                etcd: at(u32::from(base) + 2 * n + i),
                admin: at(u32::from(base) + 3 * n + i),
            }
        })
        .collect())
}

/// One local node's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub client: String,
    pub peer: String,
    pub etcd: String,
    pub admin: String,
}

/// A config for `nodes` local nodes named n1..nN: on the ports from
/// `base_port` ([`ports_from`]), or on free ports picked at random.
pub fn init_config_at(nodes: usize, dir: &Path, base_port: Option<u16>) -> Result<String, String> {
    if nodes == 0 || nodes > 9 {
        return Err("--nodes must be between 1 and 9".into());
    }
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fixed = base_port.map(|b| ports_from(b, nodes)).transpose()?;
    let mut cfg = ServerConfig::default();
    let mut taken = Vec::new();
    for i in 1..=nodes {
        let mut port = |what| {
            free_loopback_port(&mut taken).map_err(|e| format!("no free port for {what}: {e}"))
        };
        let ports = match &fixed {
            Some(ports) => ports[i - 1].clone(),
            None => Ports {
                client: format!("127.0.0.1:{}", port("a client address")?),
                peer: format!("127.0.0.1:{}", port("a peer address")?),
                etcd: format!("127.0.0.1:{}", port("an etcd API address")?),
                admin: format!("127.0.0.1:{}", port("an admin address")?),
            },
        };
        cfg.nodes.push(NodeConfig {
            name: format!("n{i}"),
            id: None,
            client: ports.client,
            peer: ports.peer,
            etcd: Some(ports.etcd),
            admin: Some(ports.admin),
            data_dir: dir.join(format!("n{i}")),
        });
    }
    let mut out = String::from(
        "# A local Nacre cluster. Start each node with\n#   nacre serve --config THIS_FILE --node NAME\n# Every other setting has a default; see docs/config.md.\n",
    );
    out.push_str(&format!("cluster_id = {:?}\n", cfg.cluster_id));
    out.push_str(
        "# An empty data directory creates the cluster once every member below has\n\
         # answered that it is new too; if one has been part of the cluster, the node\n\
         # lost its data and waits for the leader's snapshot (docs/replication.md).\n",
    );
    out.push_str("initial_cluster_state = \"new\"\n\n");
    for n in &cfg.nodes {
        out.push_str(&format!(
            "[[nodes]]\nname = {:?}\nclient = {:?}\npeer = {:?}\netcd = {:?}\nadmin = {:?}\ndata_dir = {:?}\n\n",
            n.name,
            n.client,
            n.peer,
            n.etcd.as_deref().unwrap_or_default(),
            n.admin.as_deref().unwrap_or_default(),
            n.data_dir.display().to_string()
        ));
    }
    // What we print must load back as the same cluster.
    let back = ServerConfig::from_toml(&out).map_err(|e| e.to_string())?;
    assert_eq!(
        back.nodes, cfg.nodes,
        "generated config does not round-trip"
    );
    Ok(out)
}

/// Runs the client side of a cluster command.
pub async fn run(
    cli: &crate::cli::Cli,
    client: &Client,
    cmd: &ClusterCommand,
) -> Result<Output, Failure> {
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    Ok(match cmd {
        ClusterCommand::InitConfig { .. } => unreachable!("handled without a connection"),
        ClusterCommand::Status => {
            crate::cluster_status::render(&crate::cluster_status::rows(cli, client).await?)
        }
        ClusterCommand::AddLearner {
            name,
            client: c,
            peer,
        } => Output::Index(client.add_learner(name, c, peer).await.map_err(fail)?),
        ClusterCommand::Promote { name, force } => {
            Output::Index(client.promote(name, *force).await.map_err(fail)?)
        }
        ClusterCommand::Remove { name } => {
            Output::Index(client.remove_node(name).await.map_err(fail)?)
        }
        ClusterCommand::TransferLeader { name } => {
            client.transfer_leader(name).await.map_err(fail)?;
            Output::Text(format!("asked the leader to hand over to {name}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_config_round_trips_and_is_valid_for_each_node() {
        let dir = tempfile::tempdir().unwrap();
        let text = init_config_at(3, dir.path(), None).unwrap();
        let mut cfg = ServerConfig::from_toml(&text).unwrap();
        assert_eq!(cfg.nodes.len(), 3);
        for name in ["n1", "n2", "n3"] {
            let mut c = cfg.clone();
            c.select_node(name).unwrap();
            c.validate().unwrap();
            assert!(c.data_dir.starts_with(dir.path()));
        }
        assert!(cfg
            .select_node("n9")
            .unwrap_err()
            .to_string()
            .contains("n9"));
        assert!(init_config_at(0, dir.path(), None).is_err());
    }

    #[test]
    fn base_port_gives_each_node_two_ports_in_a_row_then_the_etcd_then_the_admin_ports() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            ServerConfig::from_toml(&init_config_at(3, dir.path(), Some(7400)).unwrap()).unwrap();
        let ports: Vec<(&str, &str, &str, &str)> = cfg
            .nodes
            .iter()
            .map(|n| {
                (
                    n.client.as_str(),
                    n.peer.as_str(),
                    n.etcd.as_deref().unwrap(),
                    n.admin.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (
                    "127.0.0.1:7400",
                    "127.0.0.1:7401",
                    "127.0.0.1:7406",
                    "127.0.0.1:7409"
                ),
                (
                    "127.0.0.1:7402",
                    "127.0.0.1:7403",
                    "127.0.0.1:7407",
                    "127.0.0.1:7410"
                ),
                (
                    "127.0.0.1:7404",
                    "127.0.0.1:7405",
                    "127.0.0.1:7408",
                    "127.0.0.1:7411"
                ),
            ]
        );
        assert!(init_config_at(3, dir.path(), Some(65_525)).is_err());
        assert!(ports_from(65_524, 3).is_ok());
        assert!(ports_from(0, 1).is_err());
    }

    #[test]
    fn init_config_ports_are_distinct_and_below_the_outgoing_range() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::from_toml(&init_config_at(9, dir.path(), None).unwrap()).unwrap();
        let ports: Vec<u16> = cfg
            .nodes
            .iter()
            .flat_map(|n| [&n.client, &n.peer])
            .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
            .collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 18, "{ports:?}");
        let range = listen_port_range();
        assert!(
            ports.iter().all(|p| range.contains(p)),
            "{ports:?} not in {range:?}"
        );
    }
}
