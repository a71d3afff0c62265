//! Command-line arguments; the client commands run in `commands.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use nacre_client::{ClientOptions, Consistency, Limits};

/// The default `--max` of range commands (the server's default
/// `range_results_max`, one page): a bare `nacre range` prints a bounded
/// amount, and says on stderr when it left keys out.
pub const RANGE_MAX_DEFAULT: u64 = 10_000;

/// How many results a range or prefix command prints: a count, or every
/// one (`--max -1`, as Arakoon's `max = -1`). The command reads as many
/// pages as that takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeMax(pub Option<u64>);

impl std::fmt::Display for RangeMax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("-1"),
        }
    }
}

pub fn parse_range_max(s: &str) -> Result<RangeMax, String> {
    if s == "-1" {
        return Ok(RangeMax(None));
    }
    s.parse()
        .map(|n| RangeMax(Some(n)))
        .map_err(|_| format!("{s:?} is not a count or -1 (all)"))
}

#[derive(Debug, Parser)]
#[command(
    name = "nacre",
    version,
    about = "Nacre: a strongly consistent distributed key-value store"
)]
pub struct Cli {
    /// Client addresses of the nodes, comma-separated.
    #[arg(
        long,
        global = true,
        env = "NACRE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    pub endpoints: Vec<String>,
    /// Client commands: the cluster to talk to (default: any).
    /// `serve`: this node's cluster id (overrides the config file).
    #[arg(long, global = true)]
    pub cluster_id: Option<String>,
    /// One JSON object per result on stdout, bytes base64-encoded.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long one command may take, retries included.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, PartialEq, Default)]
pub struct ServeArgs {
    /// TOML configuration file; every setting has a default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address for clients, host:port.
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub node_name: Option<String>,
    /// Run the member NAME of the config's `[[nodes]]`.
    #[arg(long)]
    pub node: Option<String>,
    /// Join a running cluster: with an empty data directory, ask these
    /// members (client addresses, comma-separated; default: the config's
    /// other [[nodes]]) for the members and wait to be added
    /// (`nacre cluster add-learner`) and sent the cluster's state. Implies
    /// `--initial-cluster-state existing`; ignored once the data directory
    /// holds a log, so it may stay on the command line.
    #[arg(long, value_name = "ENDPOINTS", num_args = 0..=1, value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// What an empty data directory means: `new` creates the cluster from
    /// the config's [[nodes]] once every other member has answered that it
    /// is new too; `existing` waits for the leader's snapshot.
    #[arg(long, value_name = "new|existing", value_parser = ["new", "existing"])]
    pub initial_cluster_state: Option<String>,
    /// Listen for peers here instead of at the config's `peer` address
    /// (behind a proxy or NAT, where others reach this node elsewhere).
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// Serve etcd's v3 gRPC API here (default 127.0.0.1:2379, or the
    /// config's; docs/etcd.md).
    #[arg(long, value_name = "ADDR")]
    pub etcd_listen: Option<String>,
    /// Do not serve etcd's v3 API (`etcd_api = false`).
    #[arg(long, conflicts_with = "etcd_listen")]
    pub no_etcd_api: bool,
    /// Serve the admin HTTP listener here: /metrics, /health, /ready,
    /// /status and the dashboard (default 127.0.0.1:7381, or the
    /// config's; docs/operations.md).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Do not serve the admin HTTP listener (`admin_api = false`).
    #[arg(long, conflicts_with = "admin_listen")]
    pub no_admin: bool,
}

#[derive(Debug, Args, Clone, PartialEq)]
pub struct ReadArgs {
    /// consistent (leader, linearizable), any (dirty, any node) or
    /// at-least:INDEX (any node that applied INDEX).
    #[arg(long, default_value = "consistent", value_parser = parse_consistency)]
    pub consistency: Consistency,
}

/// A value: on the command line, `-` for stdin, or `--value-file`.
#[derive(Debug, Args, Clone, PartialEq)]
#[group(required = true, multiple = false)]
pub struct ValueArgs {
    /// The value; `-` reads it from stdin.
    pub value: Option<String>,
    /// Read the value from this file (`-`: stdin).
    #[arg(long)]
    pub value_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, PartialEq)]
pub struct RangeArgs {
    /// Start key (default: the first key).
    #[arg(long)]
    pub first: Option<String>,
    /// Leave out the start key itself.
    #[arg(long)]
    pub first_exclusive: bool,
    /// End key (default: the last key).
    #[arg(long)]
    pub last: Option<String>,
    /// Include the end key itself.
    #[arg(long)]
    pub last_inclusive: bool,
    /// At most this many results, -1 for all (read in as many pages as
    /// it takes).
    #[arg(
        long,
        default_value_t = RangeMax(Some(RANGE_MAX_DEFAULT)),
        value_parser = parse_range_max,
        allow_negative_numbers = true
    )]
    pub max: RangeMax,
}

#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Load a running cluster and report throughput and latencies.
    Bench(crate::bench::BenchArgs),
    /// Cluster configuration, membership and status.
    #[command(subcommand)]
    Cluster(crate::cluster::ClusterCommand),
    /// Online backups: save one from a running cluster, check one, or
    /// restore one into the data directories of a new cluster.
    #[command(subcommand)]
    Snapshot(crate::snapshot::SnapshotCommand),
    /// Run a whole local cluster in the foreground (Ctrl-C or SIGTERM
    /// stops it; a node that dies is restarted).
    LocalCluster {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Config, data and logs go here (reused if it exists).
        #[arg(long, default_value = "nacre-local")]
        dir: PathBuf,
        /// Node i (from 1) listens for clients on BASE+2(i-1) and for
        /// peers on the port after, and serves the etcd API on
        /// BASE+2N+(i-1) and its admin HTTP listener on BASE+3N+(i-1)
        /// for N nodes (default: free ports at random).
        #[arg(long)]
        base_port: Option<u16>,
        /// Leave a node that dies down instead of restarting it.
        #[arg(long)]
        no_restart: bool,
    },
    /// Print a key's value (NotFound: exit code 2).
    Get {
        key: String,
        /// Write the value's exact bytes, without a newline.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a key's value and revisions.
    GetEntry {
        key: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Set a key.
    Set {
        key: String,
        #[command(flatten)]
        value: ValueArgs,
        /// Attach the key to this lease (hex id, as `lease grant` prints
        /// it): it is deleted when the lease ends.
        #[arg(long, value_parser = parse_lease_id, value_name = "ID")]
        lease: Option<u64>,
        /// Write only while the lock NAME is held with fencing token
        /// TOKEN (`nacre lock` puts it in NACRE_LOCK_TOKEN); else fail
        /// with `fenced` (exit code 7).
        #[arg(long, value_parser = parse_fence, value_name = "NAME:TOKEN")]
        fence: Option<Fence>,
    },
    /// Delete a key (NotFound if missing).
    Delete { key: String },
    /// Print whether a key exists.
    Exists {
        key: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Fail with exit code 3 unless KEY holds VALUE (--absent: does not
    /// exist). A read at --consistency: nothing goes through the log.
    Assert {
        key: String,
        #[arg(required_unless_present = "absent", conflicts_with = "absent")]
        value: Option<String>,
        /// KEY must not exist.
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Fail with exit code 3 unless KEY exists. A read at --consistency.
    AssertExists {
        key: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Print the values of several keys, one per line.
    MultiGet {
        #[arg(required = true)]
        keys: Vec<String>,
        /// Print (absent) for missing keys instead of failing.
        #[arg(long)]
        allow_missing: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Set KEY to the wanted value if it holds the expected one; prints
    /// the previous value.
    TestAndSet {
        key: String,
        /// The value KEY must hold.
        #[arg(long, group = "exp", required_unless_present = "expected_absent")]
        expected: Option<String>,
        /// KEY must not exist.
        #[arg(long, group = "exp")]
        expected_absent: bool,
        /// The new value.
        #[arg(long, group = "want", required_unless_present_any = ["wanted_file", "delete"])]
        wanted: Option<String>,
        /// Read the new value from this file (`-`: stdin).
        #[arg(long, group = "want")]
        wanted_file: Option<PathBuf>,
        /// Delete KEY instead of setting it.
        #[arg(long, group = "want")]
        delete: bool,
    },
    /// Set (or with --delete remove) KEY; prints the previous value.
    Replace {
        key: String,
        /// The new value; `-` reads it from stdin.
        #[arg(required_unless_present_any = ["value_file", "delete"], conflicts_with_all = ["value_file", "delete"])]
        value: Option<String>,
        #[arg(long, conflicts_with = "delete")]
        value_file: Option<PathBuf>,
        #[arg(long)]
        delete: bool,
    },
    /// Set KEY unless it already holds the value.
    Confirm {
        key: String,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Delete every key with this prefix; prints how many.
    DeletePrefix { prefix: String },
    /// Keys in a range, ascending.
    Range {
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Keys and values in a range, ascending. With --wait-rev or
    /// --wait-for-key: waits for a change in the range (or a key in it)
    /// first, up to --timeout-ms.
    RangeEntries {
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Keys and values in a range, descending: --first is the high end.
    RevRangeEntries {
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Keys that start with PREFIX.
    PrefixKeys {
        prefix: String,
        /// At most this many keys, -1 for all.
        #[arg(
            long,
            default_value_t = RangeMax(Some(RANGE_MAX_DEFAULT)),
            value_parser = parse_range_max,
            allow_negative_numbers = true
        )]
        max: RangeMax,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// The number of keys.
    KeyCount {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Apply a sequence of steps atomically (JSON, see docs/cli.md).
    Sequence {
        /// The steps file; `-` reads stdin.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// The node's counters.
    Statistics,
    /// The leader's client address.
    WhoMaster,
    /// The server's version.
    Version,
    /// Check that a node answers.
    Ping,
    /// The last log index the node applied.
    GetTxid,
    /// An empty write through the log.
    Nop,
    /// Call a function of a Lua script (docs/scripts.md).
    Call {
        script: String,
        function: String,
        args: Vec<String>,
        /// Run this version instead of the live one.
        #[arg(long)]
        version: Option<u64>,
        /// Write the returned value's exact bytes, without a newline.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Install, inspect and manage Lua scripts.
    #[command(subcommand)]
    Script(ScriptCommand),
    /// Print the changes of a key, a prefix or a range as they happen,
    /// one line each, until Ctrl-C.
    Watch(WatchArgs),
    /// Grant, renew, revoke and inspect leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Take the lock NAME; run COMMAND holding it (with the fencing token
    /// in NACRE_LOCK_TOKEN and the lock key in NACRE_LOCK_KEY), release
    /// it when COMMAND exits, and exit with its status. Without COMMAND:
    /// print the token and hold the lock until Ctrl-C.
    Lock {
        name: String,
        /// The lock's lease: held this long after this process stops
        /// renewing it (killed, stopped, cut off).
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        ttl: u64,
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Campaign in the election NAME with PROPOSAL, print when elected,
    /// and lead until Ctrl-C. Without PROPOSAL: print each leader.
    Elect {
        name: String,
        proposal: Option<String>,
        /// The candidate's lease, in seconds.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        ttl: u64,
    },
    /// Print a shell completion script to stdout (bash, zsh, fish, ...).
    Completions { shell: clap_complete::Shell },
    /// Print the configuration reference (docs/config.md).
    #[command(hide = true)]
    ConfigReference,
}

/// `get` / `range-entries` with `--wait-rev R` / `--wait-for-key`: wait,
/// then read.
#[derive(Debug, Args, Clone, PartialEq, Default)]
pub struct WaitArgs {
    /// Wait for a change of the key after revision R (the mod_rev last
    /// seen; a change made already returns at once), then print it.
    #[arg(long, value_name = "R", conflicts_with = "wait_for_key")]
    pub wait_rev: Option<u64>,
    /// Wait until the key exists (a key of the range, for
    /// range-entries), then print it.
    #[arg(long)]
    pub wait_for_key: bool,
}

/// A lock name and a fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub token: u64,
}

/// What a watch covers and from where.
#[derive(Debug, Args, Clone, PartialEq)]
#[command(group(clap::ArgGroup::new("span").required(true).args(["key", "prefix", "range"])))]
pub struct WatchArgs {
    /// The key to watch.
    pub key: Option<String>,
    /// Watch every key that starts with P.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Watch START <= key < END.
    #[arg(long, num_args = 2, value_names = ["START", "END"])]
    pub range: Option<Vec<String>>,
    /// The first revision to print (default: changes from now on).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub from_rev: u64,
    /// Print each key's previous value too.
    #[arg(long)]
    pub prev: bool,
}

#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum LeaseCommand {
    /// Grant a lease of TTL_S seconds; prints its id (hex).
    Grant {
        #[arg(value_name = "TTL_S")]
        ttl: u64,
    },
    /// Keep a lease alive until Ctrl-C (exit code 9 once it is gone).
    KeepAlive {
        #[arg(value_parser = parse_lease_id)]
        id: u64,
    },
    /// End a lease now; its keys are deleted.
    Revoke {
        #[arg(value_parser = parse_lease_id)]
        id: u64,
    },
    /// A lease's time to live and remaining time (and its keys).
    Ttl {
        #[arg(value_parser = parse_lease_id)]
        id: u64,
        #[arg(long)]
        keys: bool,
    },
    /// Every lease.
    List,
}

/// Lease ids are written in hex (`0x` optional), as `lease grant` prints
/// them and as lock keys carry them.
pub fn parse_lease_id(s: &str) -> Result<u64, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(hex, 16).map_err(|_| format!("{s:?} is not a lease id (hex)"))
}

pub fn parse_fence(s: &str) -> Result<Fence, String> {
    let (name, token) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:TOKEN"))?;
    let token = token
        .parse()
        .map_err(|_| format!("{token:?} is not a fencing token"))?;
    Ok(Fence {
        name: name.to_string(),
        token,
    })
}

#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum ScriptCommand {
    /// Install FILE ("-": stdin) as the next version of NAME, live at once.
    Put { name: String, file: PathBuf },
    /// Every script with its live and latest version.
    List,
    /// A version's source (default: the live one).
    Show {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Every installed version of a script.
    History { name: String },
    /// Make an installed version live again.
    Rollback { name: String, version: u64 },
    /// Make a script uncallable (its history stays).
    Delete { name: String },
}

pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    match s {
        "consistent" => Ok(Consistency::Consistent),
        "any" => Ok(Consistency::Any),
        _ => match s.strip_prefix("at-least:") {
            Some(n) => n
                .parse()
                .map(Consistency::AtLeast)
                .map_err(|_| format!("bad index in {s:?}")),
            None => Err(format!("{s:?} is not consistent, any or at-least:INDEX")),
        },
    }
}

pub fn client_options(cli: &Cli) -> ClientOptions {
    ClientOptions {
        endpoints: cli
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        cluster_id: cli.cluster_id.clone().unwrap_or_default(),
        request_timeout_ms: cli.timeout_ms,
        connect_timeout_ms: cli
            .timeout_ms
            .min(ClientOptions::default().connect_timeout_ms),
        limits: Limits::default(),
        ..ClientOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::range_query;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nacre").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_before_and_after_the_command() {
        let c = parse(&[
            "--endpoints",
            "a:1,b:2",
            "--json",
            "get",
            "k",
            "--timeout-ms",
            "5",
        ])
        .unwrap();
        assert_eq!(c.endpoints, vec!["a:1", "b:2"]);
        assert!(c.json);
        assert_eq!(c.timeout_ms, 5);
        assert_eq!(
            c.command,
            Command::Get {
                key: "k".into(),
                raw: false,
                read: ReadArgs {
                    consistency: Consistency::Consistent
                },
                wait: WaitArgs::default(),
            }
        );
        let o = client_options(&c);
        assert_eq!(o.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(o.request_timeout_ms, 5);
    }

    #[test]
    fn consistency_levels() {
        assert_eq!(parse_consistency("any"), Ok(Consistency::Any));
        assert_eq!(
            parse_consistency("at-least:42"),
            Ok(Consistency::AtLeast(42))
        );
        assert!(parse_consistency("at-least:x").is_err());
        assert!(parse_consistency("strong").is_err());
        let c = parse(&["exists", "k", "--consistency", "at-least:7"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Exists {
                read: ReadArgs {
                    consistency: Consistency::AtLeast(7)
                },
                ..
            }
        ));
        assert!(parse(&["get", "k", "--consistency", "bogus"]).is_err());
    }

    #[test]
    fn values_come_from_one_place() {
        let c = parse(&["set", "k", "v"]).unwrap();
        assert!(
            matches!(c.command, Command::Set { value: ValueArgs { value: Some(ref v), value_file: None }, .. } if v == "v")
        );
        let c = parse(&["set", "k", "--value-file", "/f"]).unwrap();
        assert!(
            matches!(c.command, Command::Set { value: ValueArgs { value: None, value_file: Some(ref p) }, .. } if p == std::path::Path::new("/f"))
        );
        assert!(parse(&["set", "k"]).is_err());
        assert!(parse(&["set", "k", "v", "--value-file", "/f"]).is_err());
    }

    #[test]
    fn test_and_set_needs_expected_and_wanted() {
        assert!(parse(&["test-and-set", "k", "--expected", "a", "--wanted", "b"]).is_ok());
        assert!(parse(&["test-and-set", "k", "--expected-absent", "--delete"]).is_ok());
        assert!(parse(&["test-and-set", "k", "--wanted", "b"]).is_err());
        assert!(parse(&["test-and-set", "k", "--expected", "a"]).is_err());
        assert!(parse(&[
            "test-and-set",
            "k",
            "--expected",
            "a",
            "--expected-absent",
            "--wanted",
            "b"
        ])
        .is_err());
        assert!(parse(&[
            "test-and-set",
            "k",
            "--expected",
            "a",
            "--wanted",
            "b",
            "--delete"
        ])
        .is_err());
        assert!(parse(&["replace", "k", "v"]).is_ok());
        assert!(parse(&["replace", "k", "--delete"]).is_ok());
        assert!(parse(&["replace", "k"]).is_err());
        assert!(parse(&["replace", "k", "v", "--delete"]).is_err());
    }

    #[test]
    fn range_defaults_are_first_inclusive_last_exclusive() {
        let c = parse(&["range", "--first", "a", "--last", "m"]).unwrap();
        let Command::Range { range, .. } = c.command else {
            panic!()
        };
        let q = range_query(&range);
        assert_eq!(q.first.as_deref(), Some(&b"a"[..]));
        assert!(q.first_inclusive);
        assert_eq!(q.last.as_deref(), Some(&b"m"[..]));
        assert!(!q.last_inclusive);
        assert_eq!(range.max, RangeMax(Some(RANGE_MAX_DEFAULT)));
        assert_eq!(q.max, 10_000);
        let c = parse(&[
            "rev-range-entries",
            "--first-exclusive",
            "--last-inclusive",
            "--max",
            "3",
        ])
        .unwrap();
        let Command::RevRangeEntries { range, .. } = c.command else {
            panic!()
        };
        assert!(range.first.is_none() && range.first_exclusive && range.last_inclusive);
        assert_eq!(range.max, RangeMax(Some(3)));
    }

    #[test]
    fn max_is_a_count_or_minus_one_for_all() {
        let max = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::Range { range, .. }) => Ok(range.max),
            Ok(Command::PrefixKeys { max, .. }) => Ok(max),
            Ok(c) => panic!("{c:?}"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(max(&["range", "--max", "-1"]), Ok(RangeMax(None)));
        assert_eq!(max(&["range", "--max=-1"]), Ok(RangeMax(None)));
        assert_eq!(
            max(&["range", "--max", "20000"]),
            Ok(RangeMax(Some(20_000)))
        );
        assert_eq!(
            max(&["prefix-keys", "p", "--max", "-1"]),
            Ok(RangeMax(None))
        );
        assert_eq!(max(&["prefix-keys", "p"]), Ok(RangeMax(Some(10_000))));
        // Other negative numbers are no count at all.
        assert_eq!(
            max(&["range", "--max", "-2"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
        assert_eq!(
            max(&["range", "--max", "ten"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn serve_flags() {
        let c = parse(&[
            "serve",
            "--data-dir",
            "/d",
            "--listen",
            "127.0.0.1:1",
            "--cluster-id",
            "c",
        ])
        .unwrap();
        assert_eq!(c.cluster_id.as_deref(), Some("c"));
        let Command::Serve(s) = c.command else {
            panic!()
        };
        assert_eq!(s.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(s.listen.as_deref(), Some("127.0.0.1:1"));
        assert!(s.config.is_none() && s.node_name.is_none());
    }

    #[test]
    fn sequence_reads_stdin_by_default() {
        let c = parse(&["sequence"]).unwrap();
        assert_eq!(
            c.command,
            Command::Sequence {
                file: PathBuf::from("-")
            }
        );
    }

    #[test]
    fn coordination_commands_parse() {
        let c = parse(&["watch", "--prefix", "a/", "--from-rev", "7", "--prev"]).unwrap();
        let Command::Watch(w) = c.command else {
            panic!()
        };
        assert_eq!(
            (w.prefix.as_deref(), w.from_rev, w.prev),
            (Some("a/"), 7, true)
        );
        let c = parse(&["watch", "--range", "a", "m"]).unwrap();
        assert!(
            matches!(c.command, Command::Watch(WatchArgs { range: Some(ref r), .. }) if r == &["a", "m"])
        );
        assert!(parse(&["watch"]).is_err(), "a watch needs a span");
        assert!(parse(&["watch", "k", "--prefix", "p"]).is_err());
        let c = parse(&["lock", "job", "--ttl", "5", "--", "sh", "-c", "echo $X"]).unwrap();
        assert_eq!(
            c.command,
            Command::Lock {
                name: "job".into(),
                ttl: 5,
                command: vec!["sh".into(), "-c".into(), "echo $X".into()]
            }
        );
        let c = parse(&["set", "k", "v", "--lease", "1f", "--fence", "a/b:42"]).unwrap();
        let Command::Set { lease, fence, .. } = c.command else {
            panic!()
        };
        assert_eq!(lease, Some(0x1f));
        assert_eq!(
            fence,
            Some(Fence {
                name: "a/b".into(),
                token: 42
            })
        );
        assert!(parse(&["set", "k", "v", "--fence", "nocolon"]).is_err());
        let c = parse(&["lease", "ttl", "0x10", "--keys"]).unwrap();
        assert_eq!(
            c.command,
            Command::Lease(LeaseCommand::Ttl { id: 16, keys: true })
        );
        assert!(parse(&["get", "k", "--wait-rev", "3", "--wait-for-key"]).is_err());
        let c = parse(&["elect", "e"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Elect {
                proposal: None,
                ttl: 60,
                ..
            }
        ));
    }
}
