//! The cluster and script commands of the `nacre` CLI against real
//! processes: `local-cluster` up and down, `cluster status`, leadership
//! transfer and the preferred leader taking leadership back, and Lua
//! scripts installed and called from the command line.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{exit_code, nacre, ok, wait_for, ServerProc, NACRE};
use serde_json::Value;

/// How long a stopped process may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(30);

#[test]
fn local_cluster_status_and_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(NACRE)
        .args(["local-cluster", "--nodes", "3"])
        .args(["--base-port", &common::free_ports(12).to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let config = dir.path().join("cluster.toml");
    wait_for("the config", || config.exists());
    let cfg =
        nacre_server::ServerConfig::from_toml(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let endpoints: Vec<String> = cfg.nodes.iter().map(|n| n.client.clone()).collect();
    let eps = endpoints.join(",");
    wait_for("a leader", || nacre(&eps, &["set", "k", "v"]).0 == 0);
    // One JSON object per member, by name.
    let status: Vec<Value> = ok(&eps, &["--json", "cluster", "status"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = status.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n1", "n2", "n3"], "{status:?}");
    assert_eq!(
        status.iter().filter(|m| m["role"] == "leader").count(),
        1,
        "{status:?}"
    );
    for m in &status {
        assert_eq!(m["voter"], true, "{status:?}");
        assert_eq!(m["reachable"], true, "{status:?}");
    }
    // Ctrl-C stops every node and the command itself, cleanly.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        exit_code(&mut child, "local-cluster after Ctrl-C", EXIT_WAIT),
        Some(0)
    );
    for e in &endpoints {
        assert!(
            std::net::TcpStream::connect(e).is_err(),
            "{e} still listening"
        );
    }
}

#[test]
fn leadership_transfer_and_the_preferred_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "preferred_leader = \"n3\"");
    let eps = cfg
        .nodes
        .iter()
        .map(|n| n.client.clone())
        .collect::<Vec<_>>()
        .join(",");
    let _procs: Vec<ServerProc> = cfg
        .nodes
        .iter()
        .map(|n| ServerProc::start_member(&config, &n.name, &[]))
        .collect();
    let master = || nacre(&eps, &["who-master"]).1.trim().to_string();
    wait_for("n3 to lead", || master() == "n3");
    ok(&eps, &["cluster", "transfer-leader", "n1"]);
    wait_for("n1 to lead", || master() == "n1");
    // n1 is healthy and caught up, so the preferred leader takes over again.
    wait_for("n3 to take leadership back", || master() == "n3");
    let (code, _, err) = nacre(&eps, &["cluster", "promote", "n2"]);
    assert_ne!(code, 0, "promoting a voter must fail");
    assert!(err.contains("learner"), "{err}");
}

#[test]
fn scripts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path());
    let ep = server.addr.as_str();
    let script = format!(
        "{}/../../examples/scripts/arith64.lua",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(ep, &["script", "put", "arith64", &script]);
    assert_eq!(ok(ep, &["call", "arith64", "incr", "hits"]).trim(), "1");
    assert_eq!(
        ok(ep, &["call", "arith64", "incr", "hits", "10"]).trim(),
        "11"
    );
    assert_eq!(ok(ep, &["call", "arith64", "get", "hits"]).trim(), "11");
    assert!(ok(ep, &["script", "list"]).contains("arith64"));
    assert!(ok(ep, &["script", "show", "arith64"]).contains("function incr"));
    let broken = dir.path().join("broken.lua");
    std::fs::write(&broken, "function incr(\n").unwrap();
    let (code, _, err) = nacre(ep, &["script", "put", "arith64", broken.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("line") || err.contains("syntax"), "{err}");
    // The old version is still live after the refused install.
    assert_eq!(ok(ep, &["call", "arith64", "get", "hits"]).trim(), "11");
    let (code, _, err) = nacre(ep, &["call", "nope", "f"]);
    assert_eq!(code, 2, "{err}");
    ok(ep, &["script", "delete", "arith64"]);
    assert_eq!(nacre(ep, &["call", "arith64", "get", "hits"]).0, 2);
    ok(ep, &["script", "rollback", "arith64", "1"]);
    assert_eq!(ok(ep, &["call", "arith64", "get", "hits"]).trim(), "11");
    assert!(ok(ep, &["script", "history", "arith64"]).contains('1'));
}

#[test]
fn a_node_whose_raft_loop_fails_exits_and_local_cluster_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "");
    let eps = format!("{},{}", cfg.nodes[0].client, cfg.nodes[2].client);
    // The cluster is created with every member up (a new cluster waits
    // for all its initial members: docs/replication.md), and stopped.
    let (mut child, _lines) = local_cluster(dir.path(), &[]);
    wait_for("the cluster to be created", || {
        nacre(&eps, &["set", "k", "v"]).0 == 0
    });
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(exit_code(&mut child, "local-cluster", EXIT_WAIT), Some(0));

    // n2's peer port is taken, as when an outgoing connection got it
    // first: its raft loop cannot listen there and stops.
    let n2 = &cfg.nodes[1];
    let _taken = std::net::TcpListener::bind(&n2.peer).unwrap();

    // Alone, `nacre serve` exits with 1 and the reason, instead of staying
    // up answering every request with going_down.
    let mut serve = Command::new(NACRE)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--node", &n2.name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(exit_code(&mut serve, "nacre serve", EXIT_WAIT), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(&format!("nacre serve: cannot listen on {}", n2.peer)),
        "{err}"
    );

    // Under `local-cluster` (which reuses the config above, ports and
    // all) the others run on, and it names the one that exited and its
    // log. --no-restart: a node that fails at once would otherwise be
    // restarted (and fail again) while the test stops the cluster.
    let (mut child, rx) = local_cluster(dir.path(), &["--no-restart"]);
    let want = format!(
        "n2 has exited (exit status: 1); see {}/n2.log",
        dir.path().display()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == &want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("local-cluster did not report n2's exit; it said: {seen:?}"),
        }
    }
    wait_for("a leader of the two left", || {
        nacre(&eps, &["set", "k", "v"]).0 == 0
    });
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(exit_code(&mut child, "local-cluster", EXIT_WAIT), Some(0));
}

/// `nacre local-cluster --nodes 3 --dir DIR` with `extra` flags, and its
/// stderr line by line.
fn local_cluster(
    dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(NACRE)
        .args(["local-cluster", "--nodes", "3"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `nacre ping` says what `/health` says: a member alone, waiting for the
/// others to create the cluster, answers but is unhealthy (exit code 11,
/// the reason on stderr); once the others are up, it is healthy.
#[test]
fn ping_reports_a_member_unhealthy_until_its_cluster_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "");
    let n1 = &cfg.nodes[0].client;
    let mut procs = vec![ServerProc::start_member(&config, "n1", &[])];
    let (code, _, err) = nacre(n1, &["ping"]);
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("unhealthy (creating)"), "{err}");
    let (_, out, _) = nacre(n1, &["--json", "ping"]);
    assert!(out.contains("\"exit_code\":11"), "{out}");
    procs.extend(["n2", "n3"].map(|n| ServerProc::start_member(&config, n, &[])));
    wait_for("n1 to be healthy", || nacre(n1, &["ping"]).0 == 0);
    assert!(ok(n1, &["ping"]).contains(" healthy; role "));
}
