//! The files in deploy/: the compose cluster's config is a valid 3-node
//! `ServerConfig` whose members are the compose services, the Dockerfile
//! exposes the ports it uses, the systemd unit does not restart a removed
//! node; and the layout they rely on works: members advertise host names
//! (resolved at each dial) in `[[nodes]]` while the flags bind their
//! listeners elsewhere.

mod common;

use std::path::{Path, PathBuf};

use common::{free_ports, nacre, ok, wait_for, ServerProc};
use nacre_server::ServerConfig;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The flags compose.yaml gives every node after `--node NAME`.
const BIND_FLAGS: [&str; 8] = [
    "--listen",
    "0.0.0.0:7379",
    "--peer-listen",
    "0.0.0.0:7380",
    "--etcd-listen",
    "0.0.0.0:2379",
    "--admin-listen",
    "0.0.0.0:7381",
];

#[test]
fn the_compose_config_is_a_valid_three_node_cluster() {
    let cfg = ServerConfig::from_toml(&deploy("docker/cluster.toml")).unwrap();
    let compose = deploy("docker/compose.yaml");
    let dockerfile = deploy("docker/Dockerfile");
    assert_eq!(cfg.nodes.len(), 3);
    for n in &cfg.nodes {
        // Each member is a compose service, run as that member, and the
        // others reach it by the service's name.
        assert!(
            compose.contains(&format!("\n  {}:\n", n.name)),
            "no service {}",
            n.name
        );
        assert!(
            compose.contains(&format!("--node, {},", n.name)),
            "{} runs another member",
            n.name
        );
        for addr in [
            &n.client,
            &n.peer,
            n.etcd.as_ref().unwrap(),
            n.admin.as_ref().unwrap(),
        ] {
            let (host, port) = addr.rsplit_once(':').unwrap();
            assert_eq!(host, n.name, "{addr}");
            assert!(
                dockerfile.contains(port),
                "the Dockerfile does not expose {port}"
            );
            assert!(
                BIND_FLAGS.contains(&format!("0.0.0.0:{port}").as_str()),
                "{port} is not bound"
            );
        }
        let mut node = cfg.clone();
        node.select_node(&n.name).unwrap();
        node.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", n.name));
    }
    for flag in BIND_FLAGS {
        assert_eq!(
            compose.matches(&format!(" {flag},")).count()
                + compose.matches(&format!("\"{flag}\"")).count(),
            3,
            "{flag}"
        );
    }
    assert!(cfg
        .nodes
        .iter()
        .any(|n| Some(&n.name) == cfg.preferred_leader.as_ref()));
}

#[test]
fn the_systemd_unit_leaves_a_removed_node_down() {
    let unit = deploy("systemd/nacre@.service");
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
            .to_string()
    };
    assert_eq!(line("Restart"), "on-failure");
    // 78 is what `nacre serve` exits with once removed (docs/cli.md).
    assert_eq!(line("RestartPreventExitStatus"), "78");
    assert_eq!(
        line("ExecStart"),
        "/usr/local/bin/nacre serve --config /etc/nacre/cluster.toml --node %i"
    );
    assert!(line("User") != "root");
}

/// A 3-node cluster whose `[[nodes]]` name its members by host name
/// (`localhost`, as compose names them `nacre1`...) while each binds
/// its listeners to an IP address given by flag, as in compose.yaml.
#[test]
fn members_advertise_host_names_and_bind_where_the_flags_say() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(12);
    let port = |node: u16, which: u16| base + 4 * node + which;
    let mut toml = String::from("cluster_id = \"deploy-test\"\n");
    for i in 0..3u16 {
        toml.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\nclient = \"localhost:{}\"\npeer = \"localhost:{}\"\n\
             etcd = \"localhost:{}\"\nadmin = \"localhost:{}\"\ndata_dir = {:?}\n",
            port(i, 0),
            port(i, 1),
            port(i, 2),
            port(i, 3),
            dir.path().join(format!("n{i}")),
        ));
    }
    let config: PathBuf = dir.path().join("cluster.toml");
    std::fs::write(&config, &toml).unwrap();
    let nodes: Vec<ServerProc> = (0..3u16)
        .map(|i| {
            let bind = |which| format!("127.0.0.1:{}", port(i, which));
            let (l, p, e, a) = (bind(0), bind(1), bind(2), bind(3));
            let flags = [
                "--listen",
                &l,
                "--peer-listen",
                &p,
                "--etcd-listen",
                &e,
                "--admin-listen",
                &a,
            ];
            ServerProc::start_member(&config, &format!("n{i}"), &flags)
        })
        .collect();
    wait_for("every node healthy", || {
        (0..3).all(|i| nacre(&format!("127.0.0.1:{}", port(i, 0)), &["ping"]).0 == 0)
    });
    // Through each node alone (two are followers): a client follows the
    // leader to its advertised address, the host name.
    for i in 0..3 {
        let at = format!("127.0.0.1:{}", port(i, 0));
        ok(&at, &["set", &format!("k{i}"), "v"]);
    }
    for i in 0..3 {
        let at = format!("127.0.0.1:{}", port(i, 0));
        wait_for("the writes everywhere", || {
            nacre(&at, &["get", "k2", "--consistency", "any"]).1 == "v\n"
        });
    }
    drop(nodes);
}
