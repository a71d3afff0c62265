//! A real `nacre serve` process for end-to-end tests: started on a free
//! loopback port, killed (SIGKILL) when dropped so a failing test never
//! leaves it behind, restartable on the same data directory.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NACRE: &str = env!("CARGO_BIN_EXE_nacre");

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

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl ServerProc {
    /// Starts a node with its data in `dir/data` and its log in
    /// `dir/server.log`, and waits until it accepts connections.
    pub fn start(dir: &Path) -> ServerProc {
        Self::start_at(dir, &format!("127.0.0.1:{}", free_port()))
    }

    pub fn start_at(dir: &Path, addr: &str) -> ServerProc {
        let data_dir = dir.join("data");
        let log_path = dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(NACRE)
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", addr])
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
        // The node listens only once it leads its group, so a connection
        // that opens means it is ready.
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

    /// `kill -9`: no shutdown path runs, nothing is flushed.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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
