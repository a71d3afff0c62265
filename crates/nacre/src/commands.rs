//! The client commands: each one's local input read first, then one call
//! (or a few) through nacre-client, and its result as an [`Output`].

use std::io::Read;

use nacre_client::{Bytes, Client, ClientError, Request};

use crate::cli::{client_options, Cli, Command, RangeArgs, ReadArgs, ScriptCommand, ValueArgs};
use crate::output::{Failure, Output, Sink};

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

pub(crate) fn range_query(r: &RangeArgs) -> nacre_client::RangeQuery {
    nacre_client::RangeQuery {
        first: r.first.as_deref().map(key),
        first_inclusive: !r.first_exclusive,
        last: r.last.as_deref().map(key),
        last_inclusive: r.last_inclusive,
        // The pages ask for what is still wanted; this is the whole.
        max: r.max.0.map_or(u32::MAX, |n| n.min(u32::MAX.into()) as u32),
        reverse: false,
    }
}

/// `rev-range-entries`: `--first` is the high end where the descending
/// scan starts, `--last` the low end (a `RangeQuery`'s `first` is always
/// the low end).
fn rev_range_query(r: &RangeArgs) -> nacre_client::RangeQuery {
    let q = range_query(r);
    nacre_client::RangeQuery {
        first: q.last,
        first_inclusive: q.last_inclusive,
        last: q.first,
        last_inclusive: q.first_inclusive,
        reverse: true,
        ..q
    }
}

/// The range and prefix commands: page after page until `--max` results
/// (or all, for -1), each page printed as it arrives. When `--max` left
/// keys out, stderr says so: the output is what was asked for, but not
/// the whole range.
async fn paged_command(
    client: &Client,
    command: &Command,
    sink: &mut Sink<'_>,
) -> Result<(), Failure> {
    let at = |r: &ReadArgs| client.with_consistency(r.consistency);
    let (left_out, max) = match command {
        Command::Range { range, read } => {
            let pages = at(read).range_pages(range_query(range), range.max.0);
            (print_pages(pages, sink, Output::Keys).await?, range.max)
        }
        Command::RangeEntries { range, read, .. } => {
            let pages = at(read).range_entries_pages(range_query(range), range.max.0);
            (print_pages(pages, sink, Output::Entries).await?, range.max)
        }
        Command::RevRangeEntries { range, read } => {
            let pages = at(read).range_entries_pages(rev_range_query(range), range.max.0);
            (print_pages(pages, sink, Output::Entries).await?, range.max)
        }
        Command::PrefixKeys { prefix, max, read } => {
            let pages = at(read).prefix_keys_pages(key(prefix), max.0);
            (print_pages(pages, sink, Output::Keys).await?, *max)
        }
        _ => unreachable!("not a paged command"),
    };
    if left_out {
        eprintln!("nacre: stopped at --max {max}; more keys follow (--max -1 prints them all)");
    }
    Ok(())
}

/// Prints every page; whether keys were left out by the max. Stops early,
/// quietly, once stdout is gone (the sink keeps why).
async fn print_pages<T: nacre_client::PageItem>(
    mut pages: nacre_client::Pages<T>,
    sink: &mut Sink<'_>,
    output: fn(Vec<T>) -> Output,
) -> Result<bool, Failure> {
    while let Some(page) = pages
        .next_page()
        .await
        .map_err(|e| Failure::from_client(&e))?
    {
        if !sink.emit(&output(page.items)) {
            return Ok(false);
        }
    }
    Ok(pages.more())
}

/// Runs one client command. Its result is returned to be printed, except
/// for the paged reads, which print each page into `sink` as it arrives
/// and return `None`.
pub async fn run_client(cli: &Cli, sink: &mut Sink<'_>) -> Result<Option<Output>, Failure> {
    // Read local input first: a bad file should not cost a connection.
    let input = local_value(&cli.command)?;
    let batch = local_batch(&cli.command)?;
    // `--timeout-ms` bounds the command from connecting on, not only each
    // call: some commands make several (`cluster status` asks every
    // member).
    let limit = std::time::Duration::from_millis(cli.timeout_ms);
    match tokio::time::timeout(limit, run_remote(cli, input, batch, sink)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::from_client(&ClientError::Timeout {
            after_ms: cli.timeout_ms,
            last: None,
        })),
    }
}

/// The part of a client command that talks to the cluster (paged reads
/// print into `sink` and return `None`).
async fn run_remote(
    cli: &Cli,
    input: Option<Bytes>,
    batch: Option<nacre_client::Batch>,
    sink: &mut Sink<'_>,
) -> Result<Option<Output>, Failure> {
    let client = Client::connect(client_options(cli))
        .await
        .map_err(|e| Failure::from_client(&e))?;
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    let at = |r: &ReadArgs| client.with_consistency(r.consistency);
    let command = &cli.command;
    let out = match command {
        Command::Serve(_) | Command::LocalCluster { .. } => unreachable!("not a client command"),
        Command::Bench(_) => unreachable!("bench is not a client command"),
        Command::Completions { .. } | Command::ConfigReference => {
            unreachable!("runs without a node")
        }
        Command::Snapshot(_) => unreachable!("snapshot commands run on their own"),
        Command::Cluster(c) => crate::cluster::run(cli, &client, c).await?,
        Command::Get { .. }
        | Command::GetEntry { .. }
        | Command::Exists { .. }
        | Command::Assert { .. }
        | Command::AssertExists { .. }
        | Command::MultiGet { .. }
        | Command::KeyCount { .. } => read_command(&client, command).await?,
        Command::Range { .. }
        | Command::RangeEntries { .. }
        | Command::RevRangeEntries { .. }
        | Command::PrefixKeys { .. } => {
            paged_command(&client, command, sink).await?;
            return Ok(None);
        }
        Command::Set { .. }
        | Command::Confirm { .. }
        | Command::Delete { .. }
        | Command::TestAndSet { .. }
        | Command::Replace { .. }
        | Command::DeletePrefix { .. } => write_command(&client, command, input).await?,
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
        Command::Ping => {
            // The node's own judgement (nacre_server::Health::ping_line).
            let line = client.ping().await.map_err(fail)?;
            if line.contains(" unhealthy (") {
                return Err(Failure::unhealthy(line));
            }
            Output::Text(line)
        }
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
        Command::Watch(_) | Command::Lease(_) | Command::Lock { .. } | Command::Elect { .. } => {
            unreachable!("coordination commands run in coordination.rs")
        }
    };
    Ok(Some(out))
}

/// The value a write command takes from the command line, a file or
/// standard input.
fn local_value(command: &Command) -> Result<Option<Bytes>, Failure> {
    Ok(match command {
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
    })
}

/// The batch of a `sequence` command, parsed from its file.
fn local_batch(command: &Command) -> Result<Option<nacre_client::Batch>, Failure> {
    let Command::Sequence { file } = command else {
        return Ok(None);
    };
    let bytes = read_source(file)?;
    let text = String::from_utf8(bytes).map_err(|_| Failure::input("sequence is not UTF-8"))?;
    Ok(Some(
        crate::seqfile::parse_sequence(&text).map_err(Failure::input)?,
    ))
}

/// The commands that read keys, each at its `--consistency`.
async fn read_command(client: &Client, command: &Command) -> Result<Output, Failure> {
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    let at = |r: &ReadArgs| client.with_consistency(r.consistency);
    Ok(match command {
        Command::Get {
            key: k, raw, read, ..
        } => Output::Value {
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
        Command::Exists { key: k, read } => Output::Exists {
            key: key(k),
            exists: at(read).exists(key(k)).await.map_err(fail)?,
        },
        Command::Assert {
            key: k,
            value,
            read,
            ..
        } => {
            let want = value.as_deref().map(key);
            at(read).assert(key(k), want).await.map_err(fail)?;
            Output::Text("ok".into())
        }
        Command::AssertExists { key: k, read } => {
            at(read).assert_exists(key(k)).await.map_err(fail)?;
            Output::Text("ok".into())
        }
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
        Command::KeyCount { read } => Output::Number {
            name: "count",
            n: at(read).key_count().await.map_err(fail)?,
        },
        _ => unreachable!("not a read command"),
    })
}

/// The commands that write keys; `input` is their value read beforehand.
async fn write_command(
    client: &Client,
    command: &Command,
    input: Option<Bytes>,
) -> Result<Output, Failure> {
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    Ok(match command {
        Command::Set {
            key: k,
            lease,
            fence,
            ..
        } => Output::Index(
            set_command(
                client,
                key(k),
                input.unwrap_or_default(),
                *lease,
                fence.as_ref(),
            )
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
        _ => unreachable!("not a write command"),
    })
}

/// `set`, plain, attached to a lease, fenced by a lock, or both.
async fn set_command(
    client: &Client,
    k: Bytes,
    value: Bytes,
    lease: Option<u64>,
    fence: Option<&crate::cli::Fence>,
) -> Result<u64, ClientError> {
    let op = match lease {
        Some(lease) => nacre_client::Op::SetLeased {
            key: k,
            value,
            lease,
        },
        None if fence.is_none() => return client.set(k, value).await,
        None => nacre_client::Op::Set(k, value),
    };
    let batch = nacre_client::Batch {
        guards: vec![],
        ops: vec![op],
    };
    let w = match fence {
        Some(f) => client.fenced(batch, &f.name, f.token).await?,
        None => client.batch(batch).await?,
    };
    Ok(w.index)
}
