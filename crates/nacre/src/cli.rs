//! Command-line arguments and the client commands.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use nacre_client::{Bytes, Client, ClientOptions, Consistency, Limits, Request};

use crate::output::{Failure, Output};

/// The default `--max` of range commands: the server's default
/// `range_results_max`, so that by default one call returns all it can.
pub const RANGE_MAX_DEFAULT: u32 = 10_000;

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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, PartialEq)]
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
    /// Start empty and wait to be added to a running cluster
    /// (`nacre cluster add-learner`).
    #[arg(long)]
    pub join: bool,
    /// Listen for peers here instead of at the config's `peer` address
    /// (behind a proxy or NAT, where others reach this node elsewhere).
    #[arg(long)]
    pub peer_listen: Option<String>,
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
    /// At most this many results (the server may clamp it).
    #[arg(long, default_value_t = RANGE_MAX_DEFAULT)]
    pub max: u32,
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
    /// Run a whole local cluster in the foreground (Ctrl-C stops it).
    LocalCluster {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Config, data and logs go here (reused if it exists).
        #[arg(long, default_value = "nacre-local")]
        dir: PathBuf,
    },
    /// Print a key's value (NotFound: exit code 2).
    Get {
        key: String,
        /// Write the value's exact bytes, without a newline.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        read: ReadArgs,
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
    },
    /// Delete a key (NotFound if missing).
    Delete { key: String },
    /// Print whether a key exists.
    Exists {
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
    /// Keys and values in a range, ascending.
    RangeEntries {
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        read: ReadArgs,
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
        #[arg(long, default_value_t = RANGE_MAX_DEFAULT)]
        max: u32,
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

async fn script_command(client: &Client, sc: &ScriptCommand) -> Result<Output, Failure> {
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    let version = |n| Output::Number { name: "version", n };
    Ok(match sc {
        ScriptCommand::Put { name, file } => {
            let source = read_source(file)?;
            version(client.script_put(name, source).await.map_err(fail)?)
        }
        ScriptCommand::List => Output::Stats(
            client
                .script_list()
                .await
                .map_err(fail)?
                .into_iter()
                .map(|s| (s.name, format!("live {} latest {}", s.live, s.latest)))
                .collect(),
        ),
        ScriptCommand::Show { name, version } => {
            let s = client.script_show(name, *version).await.map_err(fail)?;
            Output::Value {
                key: key(name),
                value: s.source,
                raw: true,
            }
        }
        ScriptCommand::History { name } => Output::Stats(
            client
                .script_history(name)
                .await
                .map_err(fail)?
                .into_iter()
                .map(|v| {
                    let live = if v.live { " live" } else { "" };
                    (
                        format!("v{}", v.version),
                        format!("index {} bytes {}{live}", v.index, v.size_bytes),
                    )
                })
                .collect(),
        ),
        ScriptCommand::Rollback { name, version: v } => {
            version(client.script_rollback(name, *v).await.map_err(fail)?)
        }
        ScriptCommand::Delete { name } => version(client.script_delete(name).await.map_err(fail)?),
    })
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

fn read_source(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Failure::input(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))
}

fn value_bytes(v: &ValueArgs) -> Result<Bytes, Failure> {
    match (&v.value, &v.value_file) {
        (Some(s), None) if s == "-" => read_source(std::path::Path::new("-")).map(Bytes::from),
        (Some(s), None) => Ok(Bytes::from(s.clone())),
        (None, Some(p)) => read_source(p).map(Bytes::from),
        _ => Err(Failure::input("give a value, `-` or --value-file")),
    }
}

fn key(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn range_query(r: &RangeArgs) -> nacre_client::RangeQuery {
    nacre_client::RangeQuery {
        first: r.first.as_deref().map(key),
        first_inclusive: !r.first_exclusive,
        last: r.last.as_deref().map(key),
        last_inclusive: r.last_inclusive,
        max: r.max,
        reverse: false,
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
        connect_timeout_ms: cli.timeout_ms.min(3_000),
        limits: Limits::default(),
        ..ClientOptions::default()
    }
}

/// Runs one client command.
pub async fn run_client(cli: &Cli) -> Result<Output, Failure> {
    // Read local input first: a bad file should not cost a connection.
    let input = match &cli.command {
        Command::Set { value, .. } | Command::Confirm { value, .. } => Some(value_bytes(value)?),
        Command::TestAndSet {
            wanted,
            wanted_file,
            ..
        } => match (wanted, wanted_file) {
            (Some(s), _) => Some(key(s)),
            (None, Some(p)) => Some(Bytes::from(read_source(p)?)),
            _ => None,
        },
        Command::Replace {
            value, value_file, ..
        } => match (value, value_file) {
            (Some(s), _) if s == "-" => Some(Bytes::from(read_source(std::path::Path::new("-"))?)),
            (Some(s), _) => Some(key(s)),
            (None, Some(p)) => Some(Bytes::from(read_source(p)?)),
            _ => None,
        },
        _ => None,
    };
    let batch = match &cli.command {
        Command::Sequence { file } => {
            let bytes = read_source(file)?;
            let text =
                String::from_utf8(bytes).map_err(|_| Failure::input("sequence is not UTF-8"))?;
            Some(crate::seqfile::parse_sequence(&text).map_err(Failure::input)?)
        }
        _ => None,
    };

    let client = Client::connect(client_options(cli))
        .await
        .map_err(|e| Failure::from_client(&e))?;
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    let at = |r: &ReadArgs| client.with_consistency(r.consistency);
    let out = match &cli.command {
        Command::Serve(_) | Command::LocalCluster { .. } => unreachable!("not a client command"),
        Command::Bench(_) => unreachable!("bench is not a client command"),
        Command::Cluster(c) => crate::cluster::run(cli, &client, c).await?,
        Command::Get { key: k, raw, read } => Output::Value {
            key: key(k),
            value: at(read).get(key(k)).await.map_err(fail)?,
            raw: *raw,
        },
        Command::GetEntry { key: k, read } => {
            match at(read).get_entry(key(k)).await.map_err(fail)? {
                Some(e) => Output::Entry(e),
                None => {
                    return Err(Failure::from_client(&nacre_client::ClientError::Server(
                        nacre_client::ErrorReply::new(
                            nacre_client::ErrorCode::NotFound,
                            "key not found",
                        )
                        .with_key(key(k)),
                    )))
                }
            }
        }
        Command::Set { key: k, .. } => Output::Index(
            client
                .set(key(k), input.unwrap_or_default())
                .await
                .map_err(fail)?,
        ),
        Command::Confirm { key: k, .. } => Output::Index(
            client
                .confirm(key(k), input.unwrap_or_default())
                .await
                .map_err(fail)?,
        ),
        Command::Delete { key: k } => Output::Index(client.delete(key(k)).await.map_err(fail)?),
        Command::Exists { key: k, read } => Output::Exists {
            key: key(k),
            exists: at(read).exists(key(k)).await.map_err(fail)?,
        },
        Command::MultiGet {
            keys,
            allow_missing,
            read,
        } => {
            let ks: Vec<Bytes> = keys.iter().map(|k| key(k)).collect();
            let vals: Vec<Option<Bytes>> = if *allow_missing {
                at(read).multi_get_option(ks.clone()).await.map_err(fail)?
            } else {
                at(read)
                    .multi_get(ks.clone())
                    .await
                    .map_err(fail)?
                    .into_iter()
                    .map(Some)
                    .collect()
            };
            Output::Values(ks.into_iter().zip(vals).collect())
        }
        Command::TestAndSet {
            key: k, expected, ..
        } => {
            let w = client
                .write(Request::TestAndSet {
                    key: key(k),
                    expected: expected.as_deref().map(key),
                    wanted: input,
                })
                .await
                .map_err(fail)?;
            Output::Prev {
                index: w.index,
                prev: w.prev,
            }
        }
        Command::Replace { key: k, .. } => {
            let w = client
                .write(Request::Replace {
                    key: key(k),
                    wanted: input,
                })
                .await
                .map_err(fail)?;
            Output::Prev {
                index: w.index,
                prev: w.prev,
            }
        }
        Command::DeletePrefix { prefix } => {
            let w = client
                .write(Request::DeletePrefix {
                    prefix: key(prefix),
                })
                .await
                .map_err(fail)?;
            Output::Deleted {
                index: w.index,
                count: w.count,
            }
        }
        Command::Range { range, read } => Output::Keys(
            at(read)
                .range_query(range_query(range))
                .await
                .map_err(fail)?,
        ),
        Command::RangeEntries { range, read } => Output::Entries(
            at(read)
                .range_entries_query(range_query(range))
                .await
                .map_err(fail)?,
        ),
        Command::RevRangeEntries { range, read } => Output::Entries(
            at(read)
                .rev_range_entries(
                    range.first.as_deref().map(key),
                    !range.first_exclusive,
                    range.last.as_deref().map(key),
                    range.last_inclusive,
                    range.max,
                )
                .await
                .map_err(fail)?,
        ),
        Command::PrefixKeys { prefix, max, read } => Output::Keys(
            at(read)
                .prefix_keys(key(prefix), *max)
                .await
                .map_err(fail)?,
        ),
        Command::KeyCount { read } => Output::Number {
            name: "count",
            n: at(read).key_count().await.map_err(fail)?,
        },
        Command::Sequence { .. } => {
            let w = client
                .batch(batch.unwrap_or_default())
                .await
                .map_err(fail)?;
            Output::Index(w.index)
        }
        Command::Statistics => Output::Stats(client.statistics().await.map_err(fail)?),
        Command::WhoMaster => Output::Master(client.who_master().await.map_err(fail)?),
        Command::Version => Output::Version(client.version().await.map_err(fail)?),
        Command::Ping => Output::Text(client.ping().await.map_err(fail)?),
        Command::GetTxid => Output::Number {
            name: "txid",
            n: client.get_txid().await.map_err(fail)?,
        },
        Command::Nop => Output::Index(client.nop().await.map_err(fail)?),
        Command::Call {
            script,
            function,
            args,
            version,
            raw,
            read,
        } => {
            let args = args.iter().map(|a| key(a)).collect();
            let r = at(read)
                .call(script, function, args, *version)
                .await
                .map_err(fail)?;
            match r.value {
                Some(value) => Output::Value {
                    key: key(&format!("{script}.{function}")),
                    value,
                    raw: *raw,
                },
                None => Output::Text("nil".into()),
            }
        }
        Command::Script(sc) => script_command(&client, sc).await?,
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                }
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
        assert_eq!(q.max, RANGE_MAX_DEFAULT);
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
        assert_eq!(range.max, 3);
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
}
