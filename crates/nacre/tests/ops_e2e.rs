//! What an operator relies on, against real `nacre serve` processes: raft
//! events in the log, `cluster status` asked of the leader whatever
//! endpoint it is given, clean shutdown on SIGTERM, and `local-cluster`
//! supervising its nodes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{exit_code, nacre, ok, wait_for, ServerProc, NACRE};
use serde_json::Value;

/// How long a stopped process may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// The leader's name, once the nodes at `eps` agree there is one.
fn leader_of(eps: &str) -> String {
    let mut name = String::new();
    wait_for("a leader", || {
        name = nacre(eps, &["who-master"]).1.trim().to_string();
        !name.is_empty() && name != "(none)"
    });
    name
}

/// `cluster status --json`, one object per member, by name.
fn status(eps: &str) -> std::collections::BTreeMap<String, Value> {
    ok(eps, &["--json", "cluster", "status"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Raft's events reach the log at info, each with the node and the term:
/// the election at start, the votes, a leadership transfer (a step-down, a
/// campaign, a new leader followed).
#[test]
fn raft_events_are_logged_with_the_node_and_the_term() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "");
    let procs: Vec<ServerProc> = cfg
        .nodes
        .iter()
        .map(|n| ServerProc::start_member(&config, &n.name, &[]))
        .collect();
    let eps: Vec<&str> = cfg.nodes.iter().map(|n| n.client.as_str()).collect();
    let eps = eps.join(",");
    let old = leader_of(&eps);
    let new = cfg
        .nodes
        .iter()
        .find(|n| n.name != old)
        .unwrap()
        .name
        .clone();
    let third = cfg
        .nodes
        .iter()
        .find(|n| n.name != old && n.name != new)
        .unwrap()
        .name
        .clone();
    ok(&eps, &["cluster", "transfer-leader", &new]);
    wait_for("the new leader", || leader_of(&eps) == new);
    let log = |name: &str| procs[cfg.nodes.iter().position(|n| n.name == name).unwrap()].log();
    let has = |name: &str, want: &str| {
        let l = log(name);
        assert!(
            l.lines()
                .any(|line| line.contains(want) && line.contains(" term=")),
            "{name}'s log has no line with {want:?} and a term:\n{l}"
        );
    };
    has(&old, &format!("raft started node={old}"));
    has(&old, &format!("became leader node={old}"));
    has(&old, &format!("stepped down as leader node={old}"));
    has(&new, &format!("campaigning for leadership node={new}"));
    has(&new, &format!("became leader node={new}"));
    has(&third, &format!("voted node={third}"));
    has(&third, &format!("following a new leader node={third}"));
    has(&third, &format!("leader={new}"));
    // raft-rs's own lines stay out of an info log.
    assert!(!log(&third).contains("raft_id="), "{}", log(&third));
}

/// `cluster status` against a 3-node cluster with a learner and a stopped
/// follower, given only a follower's endpoint: it asks the leader, so the
/// match indexes and the lag are the leader's view; the learner shows as a
/// learner; the stopped node as unreachable and behind; JSON numbers are
/// numbers. The membership change and the learner's snapshot are logged.
#[test]
fn cluster_status_asks_the_leader_and_shows_learners_and_laggards() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 4, "");
    // n1..n3 bootstrap; n4 is in the file for its addresses and joins.
    let text = std::fs::read_to_string(&config).unwrap();
    let three = config.with_file_name("three.toml");
    std::fs::write(&three, &text[..text.rfind("[[nodes]]").unwrap()]).unwrap();
    let mut procs: Vec<ServerProc> = cfg.nodes[..3]
        .iter()
        .map(|n| ServerProc::start_member(&three, &n.name, &[]))
        .collect();
    let all: Vec<&str> = cfg.nodes[..3].iter().map(|n| n.client.as_str()).collect();
    let all = all.join(",");
    let leader = leader_of(&all);
    let followers: Vec<&nacre_server::NodeConfig> =
        cfg.nodes[..3].iter().filter(|n| n.name != leader).collect();
    let (asked, stopped) = (followers[0], followers[1]);
    let n4 = &cfg.nodes[3];
    procs.push(ServerProc::start_member(&config, &n4.name, &["--join"]));
    ok(
        &all,
        &[
            "cluster",
            "add-learner",
            &n4.name,
            "--client",
            &n4.client,
            "--peer",
            &n4.peer,
        ],
    );
    wait_for("the learner to catch up", || {
        let s = status(&asked.client);
        s[&n4.name]["lag"] == 0
    });
    // One follower stops answering; writes go on without it.
    let stopped_at = procs.iter().position(|p| p.addr == stopped.client).unwrap();
    procs[stopped_at].signal("STOP");
    for i in 0..30 {
        ok(&all, &["set", &format!("k{i}"), "v"]);
    }
    let s = status(&asked.client);
    procs[stopped_at].signal("CONT");
    let l = &s[&leader];
    assert_eq!(l["role"], "leader", "{s:?}");
    let leader_match = l["match"].as_u64().expect("a number");
    assert!(leader_match >= 30, "{s:?}");
    assert_eq!(l["lag"], 0, "{s:?}");
    for m in [asked, n4] {
        let v = &s[&m.name];
        assert_eq!(v["reachable"], true, "{s:?}");
        assert!(v["applied"].as_u64().unwrap() + 5 >= leader_match, "{s:?}");
        assert!(
            v["match"].as_u64().unwrap() > 0,
            "match from a follower's view: {s:?}"
        );
        assert_eq!(v["leader"], leader.as_str(), "{s:?}");
    }
    assert_eq!(s[&asked.name]["role"], "follower", "{s:?}");
    assert_eq!(s[&n4.name]["role"], "learner", "{s:?}");
    assert_eq!(s[&n4.name]["voter"], false, "{s:?}");
    let st = &s[&stopped.name];
    assert_eq!(st["reachable"], false, "{s:?}");
    assert_eq!(st["applied"], Value::Null, "{s:?}");
    assert!(st["match"].as_u64().unwrap() + 30 <= leader_match, "{s:?}");

    // The table says the same.
    let table = ok(&asked.client, &["cluster", "status"]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "ROLE",
            "APPLIED",
            "MATCH",
            "LAG",
            "REACHABLE",
            "LEADER"
        ],
        "{table}"
    );
    let learner_line = table.lines().find(|l| l.starts_with(&n4.name)).unwrap();
    assert!(learner_line.contains("learner"), "{table}");

    // The membership change and the learner's snapshot were logged.
    let leader_log = procs
        .iter()
        .find(|p| p.addr == cfg.nodes.iter().find(|n| n.name == leader).unwrap().client)
        .unwrap()
        .log();
    assert!(
        leader_log.contains(&format!("learners={}", n4.name))
            && leader_log.contains("membership changed"),
        "{leader_log}"
    );
    assert!(leader_log.contains("sending a snapshot"), "{leader_log}");
    assert!(
        procs[3].log().contains("installed a snapshot"),
        "{}",
        procs[3].log()
    );
}

/// A bare protocol connection (nacre-proto frames over a blocking
/// socket), to see exactly which request got which answer.
struct Raw {
    stream: std::net::TcpStream,
    buf: nacre_proto::BytesMut,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut out = Vec::new();
        nacre_proto::ClientHello {
            version: nacre_proto::PROTOCOL_VERSION,
            cluster_id: String::new(),
        }
        .encode(&mut out);
        stream.write_all(&out).unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some((hello, _)) = nacre_proto::ServerHello::decode(&buf).unwrap() {
                assert_eq!(hello.status, 0, "{hello:?}");
                break;
            }
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        }
        Raw {
            stream,
            buf: nacre_proto::BytesMut::new(),
        }
    }

    fn send(&mut self, id: u64, req: &nacre_proto::Request) {
        use std::io::Write;
        let mut out = Vec::new();
        nacre_proto::encode_request(id, req, &mut out);
        self.stream.write_all(&out).unwrap();
    }

    /// The next answer, `None` once the server closed the connection.
    fn recv(&mut self) -> Option<(u64, nacre_proto::Response)> {
        use std::io::Read;
        loop {
            if let Some((id, body)) = nacre_proto::split_frame(&mut self.buf, 64 << 20).unwrap() {
                return Some((id, nacre_proto::decode_response(body).unwrap()));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("the connection broke instead of closing: {e}"),
            }
        }
    }
}

fn error_code(r: &nacre_proto::Response) -> Option<nacre_proto::ErrorCode> {
    match r {
        nacre_proto::Response::Error(e) => Some(e.code),
        _ => None,
    }
}

/// SIGTERM on `nacre serve`: it stops accepting, answers every request it
/// had taken (here script calls queued on a one-thread blocking pool),
/// answers `going_down` to every request sent after, which it does not
/// apply, closes the connection and exits 0. (Reported: SIGTERM closed
/// connections with requests unanswered.)
#[test]
fn sigterm_answers_requests_taken_and_going_down_to_the_rest() {
    use nacre_proto::{Bytes, Consistency, ErrorCode, Request};
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = common::init_cluster(dir.path(), 1, "blocking_tasks_max = 1");
    let mut server = ServerProc::start_member(&config, "n1", &[]);
    let ep = server.addr.clone();
    let script = dir.path().join("spin.lua");
    std::fs::write(
        &script,
        "function spin() local x = 0 while true do x = x + 1 end end",
    )
    .unwrap();
    ok(&ep, &["script", "put", "spin", script.to_str().unwrap()]);
    let spin = Request::Call {
        script: "spin".into(),
        function: "spin".into(),
        args: vec![],
        version: None,
        consistency: Consistency::Consistent,
    };
    let mut c = Raw::connect(&ep);
    let t = Instant::now();
    c.send(1, &spin);
    let (_, r) = c.recv().unwrap();
    assert_eq!(error_code(&r), Some(ErrorCode::BudgetExceeded), "{r:?}");
    // Enough calls to keep the one blocking thread busy for ~2 s.
    let spins = (2_000 / t.elapsed().as_millis().max(1)).clamp(3, 200) as u64;
    for id in 2..2 + spins {
        c.send(id, &spin);
    }
    std::thread::sleep(Duration::from_millis(100));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(&ep).is_err(),
        "still accepting connections after SIGTERM"
    );
    let late: Vec<u64> = (1_000..1_005).collect();
    for id in &late {
        let key = Bytes::from(format!("late{id}"));
        c.send(
            *id,
            &Request::Set {
                key,
                value: Bytes::from_static(b"x"),
            },
        );
    }
    let mut answers = std::collections::BTreeMap::new();
    while let Some((id, r)) = c.recv() {
        answers.insert(id, r);
    }
    for id in 2..2 + spins {
        let r = answers
            .get(&id)
            .unwrap_or_else(|| panic!("call {id} got no answer"));
        assert_eq!(
            error_code(r),
            Some(ErrorCode::BudgetExceeded),
            "{id}: {r:?}"
        );
    }
    for id in &late {
        let r = answers
            .get(id)
            .unwrap_or_else(|| panic!("write {id} got no answer"));
        assert_eq!(error_code(r), Some(ErrorCode::GoingDown), "{id}: {r:?}");
    }
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.log()
    );
    // What was answered going_down was not applied.
    drop(server);
    let server = ServerProc::start_member(&config, "n1", &[]);
    for id in &late {
        assert_eq!(nacre(&server.addr, &["get", &format!("late{id}")]).0, 2);
    }
}

/// SIGTERM on the leader of a cluster: it hands leadership to another
/// voter before it exits (0), so the others need not wait an election
/// timeout to miss it.
#[test]
fn sigterm_on_the_leader_hands_leadership_over() {
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = common::init_cluster(dir.path(), 3, "");
    let mut procs: Vec<ServerProc> = cfg
        .nodes
        .iter()
        .map(|n| ServerProc::start_member(&config, &n.name, &[]))
        .collect();
    let eps: Vec<&str> = cfg.nodes.iter().map(|n| n.client.as_str()).collect();
    let leader = leader_of(&eps.join(","));
    ok(&eps.join(","), &["set", "k", "v"]);
    let at = cfg.nodes.iter().position(|n| n.name == leader).unwrap();
    let mut old = procs.remove(at);
    old.signal("TERM");
    assert_eq!(
        old.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        old.log()
    );
    let log = old.log();
    assert!(
        log.contains("handing leadership over before stopping"),
        "{log}"
    );
    assert!(log.contains("leadership handed over"), "{log}");
    let rest: Vec<&str> = eps.iter().copied().filter(|e| *e != old.addr).collect();
    let new = leader_of(&rest.join(","));
    assert_ne!(new, leader);
    assert_eq!(ok(&rest.join(","), &["get", "k"]), "v\n");
}

/// Lines a child prints, as they come.
fn lines_of(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(r)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to 30 s for a line that `want` accepts; all lines seen go to
/// `seen`.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(_) => panic!("no such line; seen: {seen:?}"),
        }
    }
}

/// `local-cluster --base-port`: the nodes listen on the ports from the
/// base; one killed with -9 is restarted; SIGTERM to local-cluster reaches
/// every node, each stops cleanly, and it exits 0.
#[test]
fn local_cluster_takes_a_base_port_restarts_a_dead_node_and_forwards_sigterm() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    // Two ports per node, then one etcd API port and one admin port each.
    let base = common::free_ports(12);
    let mut child = Command::new(NACRE)
        .args([
            "local-cluster",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (
        lines_of(child.stdout.take().unwrap()),
        lines_of(child.stderr.take().unwrap()),
    );
    let mut seen = Vec::new();
    let mut pids = Vec::new();
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        let client = format!("client 127.0.0.1:{}", base + 2 * i as u16);
        let peer = format!("peer 127.0.0.1:{}", base + 2 * i as u16 + 1);
        let line = wait_line(&out, &mut seen, |l| l.trim_start().starts_with(name));
        assert!(line.contains(&client) && line.contains(&peer), "{line}");
        pids.push(line.rsplit("pid ").next().unwrap().trim().to_string());
    }
    let eps: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", base + 2 * i))
        .collect();
    let eps = eps.join(",");
    leader_of(&eps);
    Command::new("kill")
        .args(["-KILL", &pids[1]])
        .status()
        .unwrap();
    wait_line(&err, &mut seen, |l| l.starts_with("n2 has exited"));
    wait_line(&err, &mut seen, |l| l.starts_with("n2 restarted (pid "));
    let n2 = format!("127.0.0.1:{}", base + 2);
    wait_for("n2 to answer again", || nacre(&n2, &["ping"]).0 == 0);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        exit_code(&mut child, "local-cluster after SIGTERM", EXIT_WAIT),
        Some(0)
    );
    for n in ["n1", "n2", "n3"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap();
        assert!(log.contains("shutdown requested"), "{n}:\n{log}");
    }
    for i in 0..6 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + i)).is_err(),
            "port {} still open",
            base + i
        );
    }
}

/// `local-cluster --no-restart`: a node that dies stays down.
#[test]
fn local_cluster_no_restart_leaves_a_dead_node_down() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(NACRE)
        .args(["local-cluster", "--nodes", "1", "--no-restart"])
        .args(["--base-port", &common::free_ports(4).to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (
        lines_of(child.stdout.take().unwrap()),
        lines_of(child.stderr.take().unwrap()),
    );
    let mut seen = Vec::new();
    let line = wait_line(&out, &mut seen, |l| l.trim_start().starts_with("n1"));
    let pid = line.rsplit("pid ").next().unwrap().trim().to_string();
    let client = line.split_whitespace().nth(2).unwrap().to_string();
    wait_for("n1 to answer", || nacre(&client, &["ping"]).0 == 0);
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    wait_line(&err, &mut seen, |l| l.starts_with("n1 has exited"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        std::net::TcpStream::connect(&client).is_err(),
        "n1 was restarted; seen: {seen:?}"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        exit_code(&mut child, "local-cluster after Ctrl-C", EXIT_WAIT),
        Some(0)
    );
}
