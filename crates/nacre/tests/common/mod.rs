//! A real `nacre serve` process for end-to-end tests: started on a free
//! loopback port, killed (SIGKILL) when dropped so a failing test never
//! leaves it behind, restartable on the same data directory.

#![allow(dead_code)]

pub mod cluster;
pub mod proxy;
pub mod watch;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NACRE: &str = env!("CARGO_BIN_EXE_nacre");

/// The `nacre` binary the servers run: this build's, or another build's
/// named by `NACRE_SERVER_BIN` (to show that a test fails on an older
/// build, for instance).
pub fn server_bin() -> String {
    std::env::var("NACRE_SERVER_BIN").unwrap_or_else(|_| NACRE.to_string())
}

pub struct ServerProc {
    child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that is free now, taken below Linux's ephemeral range (32768 and
/// up by default). A port the kernel hands out for `bind(0)` is an ephemeral
/// one, and an outgoing connection (a peer, a proxy, a client) could take it
/// as its local port before the server binds it: a node then failed to start
/// its peer listener and answered `going_down`. Ports from a per-process
/// counter in 20000..32000 do not race with outgoing connections.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive ports that are all free now. Every port
/// a test uses comes from this one per-process counter (cluster configs
/// too, through `--base-port`): two tests running at once in one binary
/// once drew the same port, one from this counter and one from
/// `init-config`'s random pick, because neither was bound yet.
pub fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert!(count > 0 && u32::from(count) < SPAN);
    // Test binaries run one after another but may overlap with a dying
    // predecessor's processes: start each at a place given by its pid.
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(u32::from(count), Ordering::Relaxed);
        let first = (start.wrapping_add(n) % SPAN) as u16;
        if u32::from(first) + u32::from(count) > SPAN {
            continue; // the block would wrap around the span's end
        }
        let first = BASE as u16 + first;
        let all_free = (first..first + count)
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {count} free ports in {BASE}..{}", BASE + SPAN);
}

impl ServerProc {
    /// Starts a node with its data in `dir/data` and its log in
    /// `dir/server.log`, and waits until it accepts connections.
    pub fn start(dir: &Path) -> ServerProc {
        Self::start_at(dir, &format!("127.0.0.1:{}", free_port()))
    }

    pub fn start_at(dir: &Path, addr: &str) -> ServerProc {
        let args = vec![
            "serve".to_string(),
            "--data-dir".to_string(),
            dir.join("data").display().to_string(),
            "--listen".to_string(),
            addr.to_string(),
        ];
        Self::spawn(args, addr, dir.join("data"), dir.join("server.log"))
    }

    /// Member `name` of the cluster config at `config`; its log goes next
    /// to the config as `NAME.log`. Extra flags (`--join`) follow.
    pub fn start_member(config: &Path, name: &str, extra: &[&str]) -> ServerProc {
        let text = std::fs::read_to_string(config).unwrap();
        let cfg = nacre_server::ServerConfig::from_toml(&text).unwrap();
        let node = cfg
            .nodes
            .iter()
            .find(|n| n.name == name)
            .expect("member in config");
        let mut args = vec![
            "serve".to_string(),
            "--config".to_string(),
            config.display().to_string(),
            "--node".to_string(),
            name.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = config.with_file_name(format!("{name}.log"));
        Self::spawn(args, &node.client, node.data_dir.clone(), log)
    }

    /// `nacre` with `args` (`serve ...`) that listens for clients at
    /// `addr`, with its data in `data_dir` and its output in `log_path`.
    pub fn start_args(
        args: &[&str],
        addr: &str,
        data_dir: PathBuf,
        log_path: PathBuf,
    ) -> ServerProc {
        let args = args.iter().map(|a| a.to_string()).collect();
        Self::spawn(args, addr, data_dir, log_path)
    }

    fn spawn(
        mut args: Vec<String>,
        addr: &str,
        data_dir: PathBuf,
        log_path: PathBuf,
    ) -> ServerProc {
        // A node without a config would serve the etcd API on 2379, which
        // tests running at once would fight over: the kernel picks a port.
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if args.first().map(String::as_str) == Some("serve")
            && !has("--config")
            && !has("--etcd-listen")
            && !has("--no-etcd-api")
        {
            args.extend(["--etcd-listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        // The same for the admin HTTP listener (7381), config or not: a
        // test that wants a known address passes its own.
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if args.first().map(String::as_str) == Some("serve")
            && !has("--admin-listen")
            && !has("--no-admin")
        {
            args.extend(["--admin-listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(server_bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = ServerProc {
            child,
            addr: addr.to_string(),
            data_dir,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // A single node listens only once it leads its group; a cluster
        // member listens at once (and redirects until there is a leader).
        while TcpStream::connect(&s.addr).is_err() {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("server exited with {status}:\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits, at most `timeout`, until the log holds `text`; panics with
    /// the log if it does not.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid} failed");
    }

    /// `kill -9`: no shutdown path runs, nothing is flushed.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits, at most `timeout`, for the process to exit on its own;
    /// returns its exit code (`None` if a signal ended it), or panics with
    /// the log if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit; returns its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "server ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A config for `n` local nodes under `dir`, made by `nacre cluster
/// init-config`, with `settings` (TOML lines) put in front; written to
/// `dir/cluster.toml`. Returns its path and its parsed form.
pub fn init_cluster(dir: &Path, n: usize, settings: &str) -> (PathBuf, nacre_server::ServerConfig) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new(NACRE)
        .args(["cluster", "init-config", "--nodes", &n.to_string()])
        .args([
            "--base-port",
            // Two ports per node, then one etcd API port and one admin
            // port each.
            &free_ports(4 * n as u16).to_string(),
            "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!("{settings}\n{}", String::from_utf8(out.stdout).unwrap());
    let path = dir.join("cluster.toml");
    std::fs::write(&path, &text).unwrap();
    (path, nacre_server::ServerConfig::from_toml(&text).unwrap())
}

/// `nacre --endpoints ENDPOINTS --timeout-ms 20000 ARGS...`: exit code,
/// stdout, stderr.
pub fn nacre(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(NACRE)
        .args(["--endpoints", endpoints, "--timeout-ms", "20000"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`nacre`], which must succeed; its stdout.
pub fn ok(endpoints: &str, args: &[&str]) -> String {
    let (code, out, err) = nacre(endpoints, args);
    assert_eq!(code, 0, "nacre {args:?}: {err}");
    out
}

/// Polls `f` every 100 ms until it holds, for at most 30 s.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to `wait` for `child` to exit; its exit code.
pub fn exit_code(child: &mut Child, what: &str, wait: Duration) -> Option<i32> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(Instant::now() < deadline, "{what} kept running");
        std::thread::sleep(Duration::from_millis(50));
    }
}
