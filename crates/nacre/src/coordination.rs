//! The coordination commands: `watch`, `lease`, `lock`, `elect` and the
//! waiting `get`. Most of them run until Ctrl-C (or SIGTERM) rather than
//! within `--timeout-ms`, which bounds each of their calls instead.

use std::time::Duration;

use nacre_client::{Bytes, Client, ClientError, KeySpan, WaitFor, WatchOptions};

use crate::cli::{Cli, Command, LeaseCommand, WatchArgs};
use crate::output::{exit, Failure, Output, Sink};

/// Whether `command` is one of these (a `get` only when it waits).
pub fn handles(command: &Command) -> bool {
    match command {
        Command::Watch(_) | Command::Lease(_) | Command::Lock { .. } | Command::Elect { .. } => {
            true
        }
        Command::Get { wait, .. } | Command::RangeEntries { wait, .. } => {
            wait.wait_rev.is_some() || wait.wait_for_key
        }
        _ => false,
    }
}

/// Runs a coordination command; its exit code.
pub async fn run(cli: &Cli, sink: &mut Sink<'_>) -> Result<i32, Failure> {
    let client = Client::connect(crate::cli::client_options(cli))
        .await
        .map_err(|e| Failure::from_client(&e))?;
    match &cli.command {
        Command::Watch(args) => watch(&client, args, sink).await,
        Command::Lease(lc) => lease(&client, lc, sink).await,
        Command::Lock { name, ttl, command } => {
            lock(&client, name, Duration::from_secs(*ttl), command, sink).await
        }
        Command::Elect {
            name,
            proposal,
            ttl,
        } => match proposal {
            Some(p) => elect(&client, name, p, Duration::from_secs(*ttl), sink).await,
            None => observe(&client, name, sink).await,
        },
        Command::Get {
            key,
            raw,
            read,
            wait,
        } => {
            let wait_for = wait_for(wait);
            let timeout = Duration::from_millis(cli.timeout_ms);
            let k = Bytes::from(key.clone());
            let entry = client
                .get_wait(k.clone(), wait_for, timeout, read.consistency)
                .await
                .map_err(|e| Failure::from_client(&e))?;
            let Some(e) = entry else {
                let nf =
                    nacre_client::ErrorReply::new(nacre_client::ErrorCode::NotFound, "deleted")
                        .with_key(k);
                return Err(Failure::from_client(&ClientError::Server(nf)));
            };
            sink.emit(&Output::Value {
                key: k,
                value: e.value,
                raw: *raw,
            });
            Ok(exit::OK)
        }
        Command::RangeEntries { range, read, wait } => {
            let timeout = Duration::from_millis(cli.timeout_ms);
            let max = range
                .max
                .0
                .map_or(u32::MAX, |m| u32::try_from(m).unwrap_or(u32::MAX));
            let entries = client
                .span_wait(
                    range_span(range),
                    wait_for(wait),
                    timeout,
                    read.consistency,
                    max,
                )
                .await
                .map_err(|e| Failure::from_client(&e))?;
            sink.emit(&Output::Entries(entries));
            Ok(exit::OK)
        }
        _ => unreachable!("not a coordination command"),
    }
}

fn wait_for(wait: &crate::cli::WaitArgs) -> WaitFor {
    match wait.wait_rev {
        Some(r) => WaitFor::Revision(r),
        None => WaitFor::KeyExists,
    }
}

/// A range's bounds as a watch's span, which starts inclusive and ends
/// exclusive: the smallest key after `k` is `k` + a zero byte, so an
/// exclusive start or an inclusive end moves past `k` by that byte.
fn range_span(range: &crate::cli::RangeArgs) -> KeySpan {
    let past = |k: &str| {
        let mut v = k.as_bytes().to_vec();
        v.push(0);
        Bytes::from(v)
    };
    let start = match &range.first {
        Some(k) if range.first_exclusive => past(k),
        Some(k) => Bytes::from(k.clone()),
        None => Bytes::new(),
    };
    let end = match &range.last {
        Some(k) if range.last_inclusive => Some(past(k)),
        Some(k) => Some(Bytes::from(k.clone())),
        None => None,
    };
    KeySpan::Range { start, end }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match &mut term {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

fn fail(e: &ClientError) -> Failure {
    Failure::from_client(e)
}

fn span_of(args: &WatchArgs) -> KeySpan {
    let b = |s: &str| Bytes::from(s.to_string());
    match (&args.key, &args.prefix, &args.range) {
        (Some(k), _, _) => KeySpan::Key(b(k)),
        (_, Some(p), _) => KeySpan::Prefix(b(p)),
        (_, _, Some(r)) => KeySpan::Range {
            start: b(&r[0]),
            end: Some(b(&r[1])),
        },
        _ => KeySpan::Prefix(Bytes::new()),
    }
}

async fn watch(client: &Client, args: &WatchArgs, sink: &mut Sink<'_>) -> Result<i32, Failure> {
    let opts = WatchOptions {
        start_rev: args.from_rev,
        prev_value: args.prev,
        ..WatchOptions::default()
    };
    let mut w = client.watch(span_of(args), opts);
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            b = w.next() => b,
            () = &mut stop => return Ok(exit::OK),
        };
        match batch {
            Some(Ok(batch)) => {
                for event in batch.events {
                    let out = Output::Event {
                        event,
                        prev: args.prev,
                    };
                    if !sink.emit(&out) {
                        return Ok(exit::GENERIC);
                    }
                }
            }
            Some(Err(e)) => return Err(fail(&e)),
            None => return Ok(exit::OK),
        }
    }
}

async fn lease(client: &Client, lc: &LeaseCommand, sink: &mut Sink<'_>) -> Result<i32, Failure> {
    let out = match lc {
        LeaseCommand::Grant { ttl } => {
            let l = client
                .lease_grant(Duration::from_secs(*ttl))
                .await
                .map_err(|e| fail(&e))?;
            Output::LeaseId(l.id)
        }
        LeaseCommand::KeepAlive { id } => return keep_alive(client, *id, sink).await,
        LeaseCommand::Revoke { id } => {
            client.lease_revoke(*id).await.map_err(|e| fail(&e))?;
            Output::Text("ok".into())
        }
        LeaseCommand::Ttl { id, keys } => Output::Leases(vec![client
            .lease_ttl(*id, *keys)
            .await
            .map_err(|e| fail(&e))?]),
        LeaseCommand::List => Output::Leases(client.lease_list().await.map_err(|e| fail(&e))?),
    };
    sink.emit(&out);
    Ok(exit::OK)
}

/// Renews one lease at a third of its time to live until Ctrl-C, a line
/// per renewal; fails with `lease_not_found` once it is gone.
async fn keep_alive(client: &Client, id: u64, sink: &mut Sink<'_>) -> Result<i32, Failure> {
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        let renewed = client
            .lease_keep_alive(vec![id])
            .await
            .map_err(|e| fail(&e))?;
        let info = renewed
            .into_iter()
            .next()
            .unwrap_or(nacre_client::LeaseInfo {
                id,
                ttl_ms: 0,
                remaining_ms: 0,
                keys: vec![],
            });
        if info.ttl_ms == 0 {
            return Err(fail(&ClientError::LeaseLost { id }));
        }
        let pause = Duration::from_millis((info.ttl_ms / 3).max(20));
        if !sink.emit(&Output::Leases(vec![info])) {
            return Ok(exit::GENERIC);
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut stop => return Ok(exit::OK),
        }
    }
}

async fn lock(
    client: &Client,
    name: &str,
    ttl: Duration,
    command: &[String],
    sink: &mut Sink<'_>,
) -> Result<i32, Failure> {
    let stop = interrupted();
    tokio::pin!(stop);
    let mut guard = tokio::select! {
        g = client.lock(name, ttl) => g.map_err(|e| fail(&e))?,
        () = &mut stop => return Ok(exit::OK),
    };
    if command.is_empty() {
        sink.emit(&Output::Locked {
            token: guard.token,
            key: guard.key.clone(),
            lease: guard.lease,
        });
        tokio::select! {
            e = guard.lost() => return Err(fail(&e)),
            () = &mut stop => {}
        }
        guard.unlock().await.map_err(|e| fail(&e))?;
        return Ok(exit::OK);
    }
    let mut child = std::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .env("NACRE_LOCK_TOKEN", guard.token.to_string())
        .env(
            "NACRE_LOCK_KEY",
            String::from_utf8_lossy(&guard.key).as_ref(),
        );
    let child = child
        .spawn()
        .map_err(|e| Failure::input(format!("cannot run {:?}: {e}", command[0])))?;
    let pid = child.id();
    let mut waited = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    });
    let mut lost = false;
    let status = loop {
        tokio::select! {
            s = &mut waited => break s,
            e = guard.lost(), if !lost => {
                lost = true;
                eprintln!("nacre lock: {e}; the command's fenced writes will fail");
            }
            // Ctrl-C reaches the command too (same process group);
            // SIGTERM is passed on. Either way the lock is released once
            // the command exits.
            () = &mut stop => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                stop.set(interrupted());
            }
        }
    };
    let code = match status {
        Ok(Ok(s)) => exit_status(s),
        Ok(Err(e)) => return Err(Failure::input(format!("waiting for the command: {e}"))),
        Err(e) => return Err(Failure::input(format!("waiting for the command: {e}"))),
    };
    if let Err(e) = guard.unlock().await {
        eprintln!("nacre lock: releasing the lock: {e}");
    }
    Ok(code)
}

/// A child's exit code: its own, or 128 + the signal that killed it.
fn exit_status(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

async fn elect(
    client: &Client,
    name: &str,
    proposal: &str,
    ttl: Duration,
    sink: &mut Sink<'_>,
) -> Result<i32, Failure> {
    let stop = interrupted();
    tokio::pin!(stop);
    let mut leading = tokio::select! {
        l = client.campaign(name, proposal.to_string(), ttl) => l.map_err(|e| fail(&e))?,
        () = &mut stop => return Ok(exit::OK),
    };
    sink.emit(&Output::Elected {
        proposal: Bytes::from(proposal.to_string()),
        token: leading.token,
        key: leading.key.clone(),
    });
    tokio::select! {
        e = leading.lost() => return Err(fail(&e)),
        () = &mut stop => {}
    }
    leading.resign().await.map_err(|e| fail(&e))?;
    Ok(exit::OK)
}

async fn observe(client: &Client, name: &str, sink: &mut Sink<'_>) -> Result<i32, Failure> {
    let stop = interrupted();
    tokio::pin!(stop);
    let mut leaders = client.observe(name);
    loop {
        let next = tokio::select! {
            l = leaders.next() => l,
            () = &mut stop => return Ok(exit::OK),
        };
        match next {
            Some(Ok(e)) => {
                if !sink.emit(&Output::Entries(vec![e])) {
                    return Ok(exit::GENERIC);
                }
            }
            Some(Err(e)) => return Err(fail(&e)),
            None => return Ok(exit::OK),
        }
    }
}
