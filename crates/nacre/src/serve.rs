//! `nacre serve`: configuration from file and flags, signals.

use std::path::PathBuf;

use nacre_server::{ConfigError, FailureKind, ServerConfig, ServerError};

use crate::cli::ServeArgs;
use crate::output::exit;

/// Why `nacre serve` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read config {}: {source}", .path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {source}", .path.display())]
    ParseConfig { path: PathBuf, source: ConfigError },
    #[error("{0}")]
    SelectNode(#[source] ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(#[source] ConfigError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Server(#[from] ServerError),
}

impl ServeError {
    /// The exit code (docs/cli.md): what stopped the node, by kind, so
    /// that a supervisor can tell a corrupt store from a disk error.
    pub fn exit_code(&self) -> i32 {
        let ServeError::Server(e) = self else {
            return exit::GENERIC;
        };
        match e.kind() {
            FailureKind::Corruption => exit::CORRUPTION,
            FailureKind::Io => exit::IO,
            FailureKind::Poisoned => exit::POISONED,
            FailureKind::Internal => exit::INTERNAL,
            FailureKind::Removed => exit::REMOVED,
            FailureKind::Other => exit::GENERIC,
        }
    }
}

/// The config file (if any) with the flags on top, validated.
pub fn load_config(args: &ServeArgs, cluster_id: Option<&str>) -> Result<ServerConfig, ServeError> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ServeError::ReadConfig {
                path: path.clone(),
                source,
            })?;
            ServerConfig::from_toml(&text).map_err(|source| ServeError::ParseConfig {
                path: path.clone(),
                source,
            })?
        }
        None => ServerConfig::default(),
    };
    if let Some(n) = &args.node {
        cfg.select_node(n).map_err(ServeError::SelectNode)?;
    }
    if let Some(endpoints) = &args.join {
        cfg.join = true;
        if !endpoints.is_empty() {
            cfg.join_endpoints = endpoints.clone();
        }
    }
    if let Some(state) = &args.initial_cluster_state {
        cfg.initial_cluster_state = state.clone();
    }
    if let Some(e) = &args.etcd_listen {
        cfg.etcd_listen = e.clone();
    }
    if args.no_etcd_api {
        cfg.etcd_api = false;
    }
    if let Some(a) = &args.admin_listen {
        cfg.admin_listen = a.clone();
    }
    if args.no_admin {
        cfg.admin_api = false;
    }
    if let Some(p) = &args.peer_listen {
        cfg.peer_listen = p.clone();
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if let Some(n) = &args.node_name {
        cfg.node_name = n.clone();
    }
    if let Some(c) = cluster_id {
        cfg.cluster_id = c.to_string();
    }
    cfg.validate().map_err(ServeError::Invalid)?;
    Ok(cfg)
}

/// Completes on Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

pub fn run(args: &ServeArgs, cluster_id: Option<&str>) -> Result<(), ServeError> {
    let cfg = load_config(args, cluster_id)?;
    // Logging is set up in main.rs (logging.rs), from the global flags.
    tracing::info!(node = %cfg.node_name, cluster = %cfg.cluster_id, listen = %cfg.listen,
        data_dir = %cfg.data_dir.display(), "starting nacre");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let served = rt.block_on(nacre_server::serve(cfg, shutdown_signal()));
    if let Err(e) = &served {
        tracing::error!(error = %e, kind = ?e.kind(), "the node stopped");
    }
    served.map_err(ServeError::Server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args() -> ServeArgs {
        ServeArgs {
            config: None,
            data_dir: None,
            listen: None,
            node_name: None,
            node: None,
            join: None,
            initial_cluster_state: None,
            peer_listen: None,
            etcd_listen: None,
            no_etcd_api: false,
            admin_listen: None,
            no_admin: false,
        }
    }

    #[test]
    fn node_selects_a_member_of_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            crate::cluster::init_config_at(3, dir.path(), None).unwrap(),
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(path.clone()),
            node: Some("n2".into()),
            ..args()
        };
        let c = load_config(&a, None).unwrap();
        assert_eq!(c.node_name, "n2");
        assert_eq!(c.listen, c.nodes[1].client);
        assert_eq!(c.data_dir, c.nodes[1].data_dir);
        let a = ServeArgs {
            config: Some(path),
            ..args()
        };
        // Without --node this process is none of the members.
        assert!(load_config(&a, None)
            .unwrap_err()
            .to_string()
            .contains("--node"));
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load_config(&args(), None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7379");
        assert_eq!(c.data_dir, PathBuf::from("nacre-data"));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9\"\nnode_name = \"a\"\ntick_ms = 50\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(path.clone()),
            node_name: Some("b".into()),
            ..args()
        };
        let c = load_config(&a, Some("cl")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.node_name, "b");
        assert_eq!(c.cluster_id, "cl");
        assert_eq!(c.tick_ms, 50);

        std::fs::write(&path, "tick_ms = 0\n").unwrap();
        let e = load_config(&a, None).unwrap_err();
        assert!(e.to_string().contains("tick_ms"), "{e}");
        std::fs::write(&path, "tick_msec = 5\n").unwrap();
        assert!(load_config(&a, None).is_err());
        let missing = ServeArgs {
            config: Some(dir.path().join("none.toml")),
            ..args()
        };
        assert!(load_config(&missing, None)
            .unwrap_err()
            .to_string()
            .contains("cannot read config"));
    }

    /// The serve arguments of a command line.
    fn parse(line: &[&str]) -> ServeArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(line).unwrap();
        match cli.command {
            crate::cli::Command::Serve(a) => a,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn a_removed_node_exits_with_its_own_code() {
        let removed = ServeError::Server(ServerError::Removed);
        assert_eq!(removed.exit_code(), exit::REMOVED);
        let codes = [
            exit::OK,
            exit::GENERIC,
            exit::CORRUPTION,
            exit::INTERNAL,
            exit::IO,
            exit::POISONED,
        ];
        assert!(!codes.contains(&exit::REMOVED));
    }

    #[test]
    fn join_takes_the_members_to_ask_or_the_config_s() {
        // No config: the node's name and addresses are flags, the members
        // to ask follow --join.
        let a = parse(&[
            "nacre",
            "serve",
            "--join",
            "127.0.0.1:1,127.0.0.1:2",
            "--node-name",
            "n4",
            "--listen",
            "127.0.0.1:3",
        ]);
        let c = load_config(&a, None).unwrap();
        assert!(c.joins_existing());
        assert_eq!(c.endpoints_to_join(), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(c.node_name, "n4");
        // --join without members to ask and without a config: refused.
        let a = parse(&["nacre", "serve", "--join", "--node-name", "n4"]);
        let e = load_config(&a, None).unwrap_err().to_string();
        assert!(e.contains("--join HOST:PORT"), "{e}");
        // With a config, --join alone asks the other [[nodes]].
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            crate::cluster::init_config_at(3, dir.path(), None).unwrap(),
        )
        .unwrap();
        let p = path.display().to_string();
        let a = parse(&["nacre", "serve", "--config", &p, "--node", "n3", "--join"]);
        let c = load_config(&a, None).unwrap();
        assert_eq!(
            c.endpoints_to_join(),
            [c.nodes[0].client.clone(), c.nodes[1].client.clone()]
        );
    }

    #[test]
    fn a_generated_config_creates_a_cluster_unless_told_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            crate::cluster::init_config_at(3, dir.path(), None).unwrap(),
        )
        .unwrap();
        let p = path.display().to_string();
        let a = parse(&["nacre", "serve", "--config", &p, "--node", "n1"]);
        let c = load_config(&a, None).unwrap();
        assert_eq!(c.initial_cluster_state, "new");
        assert!(!c.joins_existing());
        let a = parse(&[
            "nacre",
            "serve",
            "--config",
            &p,
            "--node",
            "n1",
            "--initial-cluster-state",
            "existing",
        ]);
        assert!(load_config(&a, None).unwrap().joins_existing());
        use clap::Parser;
        let bad =
            crate::cli::Cli::try_parse_from(["nacre", "serve", "--initial-cluster-state", "old"]);
        assert!(bad.is_err());
        // A single node without a config creates its own cluster.
        assert!(!load_config(&args(), None).unwrap().joins_existing());
    }
}
