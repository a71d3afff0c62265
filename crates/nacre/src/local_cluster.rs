//! `nacre local-cluster`: N `nacre serve` processes in the foreground,
//! supervised. SIGINT and SIGTERM are forwarded to every node (each stops
//! cleanly: drains, hands leadership over, exits 0) and the command exits
//! once they have; a node that dies is restarted, with a growing pause,
//! unless `--no-restart`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nacre_server::ServerConfig;

/// How often the nodes are checked on.
const POLL_MS: u64 = 100;
/// A node that ran this long before it died is restarted after the
/// shortest pause; one that died sooner counts as failing in a row.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The pause before the first restart; it doubles with each death in a
/// row (1, 2, 4, 8, 16 s).
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// After this many deaths in a row (each within `STABLE_AFTER` of its
/// start) a node is left down: restarting it is not helping.
const RESTARTS_IN_A_ROW_MAX: u32 = 5;
/// How long the nodes have to stop after the signal is forwarded: a node
/// drains its connections for up to `request_timeout_ms` (10 s by
/// default) and hands leadership over before it exits. Then it is killed.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// Why `nacre local-cluster` could not run or stop its nodes cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    #[error("{0}")]
    Config(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot watch signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error("{} exists with other ports than --base-port {base_port} gives; remove it or leave --base-port out", .path.display())]
    PortsDiffer { path: PathBuf, base_port: u16 },
    #[error("not every node stopped cleanly: {}", .0.join(", "))]
    UncleanStop(Vec<String>),
}

/// What `local-cluster` was asked for.
pub struct Options {
    pub nodes: usize,
    pub dir: PathBuf,
    /// Node i (from 1) listens for clients on `base + 2(i-1)` and for
    /// peers on the port after; the etcd API on `base + 2n + (i-1)`
    /// (`n` nodes); `None`: free ports picked at random.
    pub base_port: Option<u16>,
    pub restart: bool,
    /// `--log-format`/`--log-level` for every node.
    pub log_args: Vec<String>,
}

/// One supervised node.
struct Node {
    name: String,
    child: Option<Child>,
    started: Instant,
    /// Deaths in a row, each within `STABLE_AFTER` of its start.
    quick_deaths: u32,
    restart_at: Option<Instant>,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LocalClusterError {
    let path = path.to_path_buf();
    move |source| LocalClusterError::Io { what, path, source }
}

/// The cluster's config: `DIR/cluster.toml` as it is if it exists (with
/// `--base-port`, only if its ports are the ones asked for), else a new
/// one.
fn config(opts: &Options) -> Result<(PathBuf, ServerConfig), LocalClusterError> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let path = dir.join("cluster.toml");
    if !path.exists() {
        let text = crate::cluster::init_config_at(opts.nodes, dir, opts.base_port)
            .map_err(LocalClusterError::Config)?;
        std::fs::write(&path, text).map_err(io_err("cannot write", &path))?;
    }
    let text = std::fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
    let cfg =
        ServerConfig::from_toml(&text).map_err(|e| LocalClusterError::Config(e.to_string()))?;
    if let Some(base_port) = opts.base_port {
        let want = crate::cluster::ports_from(base_port, cfg.nodes.len())
            .map_err(LocalClusterError::Config)?;
        let have: Vec<crate::cluster::Ports> = cfg
            .nodes
            .iter()
            .map(|n| crate::cluster::Ports {
                client: n.client.clone(),
                peer: n.peer.clone(),
                etcd: n.etcd.clone().unwrap_or_default(),
                admin: n.admin.clone().unwrap_or_default(),
            })
            .collect();
        if have != want {
            return Err(LocalClusterError::PortsDiffer { path, base_port });
        }
    }
    Ok((path, cfg))
}

/// Starts node `name`; its output goes to `DIR/NAME.log` (appended to on
/// a restart, so the reason it died stays there). Its own process group:
/// a Ctrl-C in the terminal reaches `local-cluster` only, which forwards
/// it once.
fn spawn(
    opts: &Options,
    config: &Path,
    name: &str,
    restart: bool,
) -> Result<Child, LocalClusterError> {
    let (dir, log_args) = (&opts.dir, &opts.log_args);
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(io_err("cannot find", Path::new("nacre")))?;
    let log_path = dir.join(format!("{name}.log"));
    let log = File::options()
        .create(true)
        .append(restart)
        .write(true)
        .truncate(!restart)
        .open(&log_path)
        .map_err(io_err("cannot open", &log_path))?;
    let out = log.try_clone().map_err(io_err("cannot open", &log_path))?;
    Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--node", name])
        .args(log_args)
        .stdout(out)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|source| LocalClusterError::Spawn {
            name: name.to_string(),
            source,
        })
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status();
}

/// Runs the cluster until SIGINT or SIGTERM; Ok once every node stopped
/// cleanly.
pub fn run(opts: &Options) -> Result<(), LocalClusterError> {
    let (config_path, cfg) = config(opts)?;
    let mut nodes = Vec::new();
    for n in &cfg.nodes {
        let child = spawn(opts, &config_path, &n.name, false)?;
        nodes.push(Node {
            name: n.name.clone(),
            child: Some(child),
            started: Instant::now(),
            quick_deaths: 0,
            restart_at: None,
        });
    }
    print_banner(opts, &config_path, &cfg, &nodes);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LocalClusterError::Signals)?;
    let sig = rt.block_on(supervise(opts, &config_path, &mut nodes))?;
    stop_all(&mut nodes, sig)
}

fn print_banner(opts: &Options, config_path: &Path, cfg: &ServerConfig, nodes: &[Node]) {
    println!(
        "local cluster of {} nodes (config {}):",
        cfg.nodes.len(),
        config_path.display()
    );
    for (n, proc_) in cfg.nodes.iter().zip(nodes) {
        let pid = proc_.child.as_ref().map_or(0, Child::id);
        let etcd = n.etcd.as_deref().unwrap_or("-");
        println!(
            "  {}  client {}  peer {}  etcd {etcd}  log {}/{}.log  pid {pid}",
            n.name,
            n.client,
            n.peer,
            opts.dir.display(),
            n.name
        );
    }
    let endpoints: Vec<&str> = cfg.nodes.iter().map(|n| n.client.as_str()).collect();
    println!(
        "try:  nacre --endpoints {} set hello world",
        endpoints.join(",")
    );
    let etcd: Vec<&str> = cfg.nodes.iter().filter_map(|n| n.etcd.as_deref()).collect();
    if !etcd.is_empty() {
        println!(
            "      ETCDCTL_API=3 etcdctl --endpoints={} get hello",
            etcd.join(",")
        );
    }
    println!("Ctrl-C stops the cluster.");
}

/// Watches the nodes until a signal comes; returns the signal's name.
async fn supervise(
    opts: &Options,
    config_path: &Path,
    nodes: &mut [Node],
) -> Result<&'static str, LocalClusterError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(LocalClusterError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(LocalClusterError::Signals)?;
    loop {
        tokio::select! {
            _ = int.recv() => return Ok("INT"),
            _ = term.recv() => return Ok("TERM"),
            () = tokio::time::sleep(Duration::from_millis(POLL_MS)) => {}
        }
        for node in nodes.iter_mut() {
            check_node(opts, config_path, node)?;
        }
    }
}

/// Notices a node that died, and restarts it when its pause is over.
fn check_node(
    opts: &Options,
    config_path: &Path,
    node: &mut Node,
) -> Result<(), LocalClusterError> {
    let name = node.name.clone();
    if let Some(status) = node
        .child
        .as_mut()
        .and_then(|c| c.try_wait().ok().flatten())
    {
        node.child = None;
        eprintln!(
            "{name} has exited ({status}); see {}/{name}.log",
            opts.dir.display()
        );
        node.restart_at = restart_pause(opts, node, status).map(|p| {
            eprintln!("restarting {name} in {} s", p.as_secs());
            Instant::now() + p
        });
    }
    if node.restart_at.is_some_and(|at| Instant::now() >= at) {
        node.restart_at = None;
        let child = spawn(opts, config_path, &name, true)?;
        eprintln!("{name} restarted (pid {})", child.id());
        node.child = Some(child);
        node.started = Instant::now();
    }
    Ok(())
}

/// How long to wait before restarting a node that exited with `status`,
/// or `None` to leave it down: asked not to restart, it stopped cleanly
/// (exit 0: it was removed from the cluster), or it keeps dying at once.
fn restart_pause(opts: &Options, node: &mut Node, status: ExitStatus) -> Option<Duration> {
    if !opts.restart || status.success() {
        return None;
    }
    if node.started.elapsed() >= STABLE_AFTER {
        node.quick_deaths = 0;
    }
    node.quick_deaths += 1;
    if node.quick_deaths > RESTARTS_IN_A_ROW_MAX {
        eprintln!(
            "{} died {RESTARTS_IN_A_ROW_MAX} times in a row within {} s of starting; leaving it down",
            node.name,
            STABLE_AFTER.as_secs()
        );
        return None;
    }
    Some(RESTART_PAUSE.saturating_mul(1 << (node.quick_deaths - 1)))
}

/// Forwards `sig` to every running node and waits for them to exit; a
/// node still running after `STOP_WAIT` is killed.
fn stop_all(nodes: &mut [Node], sig: &str) -> Result<(), LocalClusterError> {
    for node in nodes.iter() {
        if let Some(c) = &node.child {
            signal(c, sig);
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    let mut unclean = Vec::new();
    for node in nodes.iter_mut() {
        let Some(mut c) = node.child.take() else {
            continue;
        };
        let status = loop {
            match c.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break None,
            }
        };
        match status {
            Some(s) if s.success() => {}
            Some(s) => unclean.push(format!("{} ({s})", node.name)),
            None => {
                eprintln!("{} did not stop in time; killing it", node.name);
                let _ = c.kill();
                let _ = c.wait();
                unclean.push(format!("{} (killed)", node.name));
            }
        }
    }
    if !unclean.is_empty() {
        return Err(LocalClusterError::UncleanStop(unclean));
    }
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            name: "n1".into(),
            child: None,
            started: Instant::now(),
            quick_deaths: 0,
            restart_at: None,
        }
    }

    fn exit(code: i32) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn restarts_back_off_and_give_up() {
        let opts = Options {
            nodes: 3,
            dir: PathBuf::from("d"),
            base_port: None,
            restart: true,
            log_args: Vec::new(),
        };
        let mut n = node();
        let pauses: Vec<Option<u64>> = (0..6)
            .map(|_| restart_pause(&opts, &mut n, exit(1)).map(|d| d.as_secs()))
            .collect();
        assert_eq!(pauses, [Some(1), Some(2), Some(4), Some(8), Some(16), None]);
        // A node that ran long enough starts again from the shortest pause.
        let mut n = node();
        n.quick_deaths = 4;
        n.started = Instant::now() - STABLE_AFTER;
        assert_eq!(restart_pause(&opts, &mut n, exit(1)), Some(RESTART_PAUSE));
        // Exit 0 (removed from the cluster) and --no-restart: left down.
        assert_eq!(restart_pause(&opts, &mut node(), exit(0)), None);
        let no = Options {
            restart: false,
            ..opts
        };
        assert_eq!(restart_pause(&no, &mut node(), exit(1)), None);
    }
}
