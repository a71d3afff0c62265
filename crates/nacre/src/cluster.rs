//! `nacre cluster ...` and `nacre local-cluster`: configuration for local
//! clusters, membership changes and status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

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
    },
    /// Each member's role, term, commit and applied index, and lag.
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

/// A config for `nodes` local nodes named n1..nN.
pub fn init_config(nodes: usize, dir: &Path) -> Result<String, String> {
    if nodes == 0 || nodes > 9 {
        return Err("--nodes must be between 1 and 9".into());
    }
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cfg = ServerConfig::default();
    let mut taken = Vec::new();
    for i in 1..=nodes {
        let mut port = |what| {
            free_loopback_port(&mut taken).map_err(|e| format!("no free port for {what}: {e}"))
        };
        cfg.nodes.push(NodeConfig {
            name: format!("n{i}"),
            id: None,
            client: format!("127.0.0.1:{}", port("a client address")?),
            peer: format!("127.0.0.1:{}", port("a peer address")?),
            data_dir: dir.join(format!("n{i}")),
        });
    }
    let mut out = String::from(
        "# A local Nacre cluster. Start each node with\n#   nacre serve --config THIS_FILE --node NAME\n# Every other setting has a default; see crates/nacre-server/src/config.rs.\n",
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
            "[[nodes]]\nname = {:?}\nclient = {:?}\npeer = {:?}\ndata_dir = {:?}\n\n",
            n.name,
            n.client,
            n.peer,
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
            let members = client.cluster_status().await.map_err(fail)?;
            let leader_commit = members.iter().find(|m| m.leader).map(|m| m.match_index);
            let mut kv = Vec::new();
            for m in &members {
                // Each node reports its own view; one that does not answer
                // is shown as unreachable rather than failing the command.
                let mut opts = crate::cli::client_options(cli);
                opts.endpoints = vec![m.client.clone()];
                opts.request_timeout_ms = opts.request_timeout_ms.min(2_000);
                opts.retries_max = 0;
                let stats = match Client::connect(opts).await {
                    Ok(c) => c.statistics().await.ok(),
                    Err(_) => None,
                };
                let get = |k: &str| {
                    stats
                        .as_ref()
                        .and_then(|s| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                };
                let p = &m.name;
                kv.push((format!("{p}.id"), m.id.to_string()));
                kv.push((format!("{p}.voter"), m.voter.to_string()));
                kv.push((format!("{p}.client"), m.client.clone()));
                kv.push((format!("{p}.peer"), m.peer.clone()));
                kv.push((format!("{p}.reachable"), stats.is_some().to_string()));
                for field in ["role", "term", "commit_index", "applied_index"] {
                    kv.push((
                        format!("{p}.{field}"),
                        get(field).unwrap_or_else(|| "-".into()),
                    ));
                }
                if let (Some(lc), Some(applied)) = (
                    leader_commit,
                    get("applied_index").and_then(|a| a.parse::<u64>().ok()),
                ) {
                    kv.push((format!("{p}.lag"), lc.saturating_sub(applied).to_string()));
                }
                kv.push((format!("{p}.match_index"), m.match_index.to_string()));
            }
            Output::Stats(kv)
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

/// `nacre local-cluster`: N nodes as child processes until Ctrl-C.
pub fn local_cluster(nodes: usize, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config_path = dir.join("cluster.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, init_config(nodes, dir)?)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| e.to_string())?;
    let cfg = ServerConfig::from_toml(&text).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for n in &cfg.nodes {
        let log = std::fs::File::create(dir.join(format!("{}.log", n.name)))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--node", &n.name])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", n.name))?;
        children.push((n.name.clone(), child));
    }
    let endpoints: Vec<&str> = cfg.nodes.iter().map(|n| n.client.as_str()).collect();
    println!(
        "local cluster of {} nodes (config {}):",
        cfg.nodes.len(),
        config_path.display()
    );
    for n in &cfg.nodes {
        println!(
            "  {}  client {}  peer {}  log {}/{}.log",
            n.name,
            n.client,
            n.peer,
            dir.display(),
            n.name
        );
    }
    println!(
        "try:  nacre --endpoints {} set hello world",
        endpoints.join(",")
    );
    println!("Ctrl-C stops the cluster.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // A node exits on its own when its raft loop fails: say so once,
        // and where its log is, while the others run on.
        let mut reported = vec![false; children.len()];
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            for ((name, c), done) in children.iter_mut().zip(reported.iter_mut()) {
                if let (false, Ok(Some(status))) = (*done, c.try_wait()) {
                    eprintln!(
                        "{name} has exited ({status}); see {}/{name}.log",
                        dir.display()
                    );
                    *done = true;
                }
            }
        }
    });
    for (_, c) in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for (name, mut c) in children {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                _ if std::time::Instant::now() > deadline => {
                    eprintln!("{name} did not stop in time; killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_config_round_trips_and_is_valid_for_each_node() {
        let dir = tempfile::tempdir().unwrap();
        let text = init_config(3, dir.path()).unwrap();
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
        assert!(init_config(0, dir.path()).is_err());
    }

    #[test]
    fn init_config_ports_are_distinct_and_below_the_outgoing_range() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::from_toml(&init_config(9, dir.path()).unwrap()).unwrap();
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
