//! The `nacre` binary: `nacre serve` runs a node; every other command is
//! a client call. Exit codes and output formats are in docs/cli.md; logging
//! (`--log-format`, `--log-level`) in `logging.rs` and docs/operations.md.

mod bench;
mod cli;
mod cluster;
mod cluster_status;
mod commands;
mod completions;
mod config_reference;
mod coordination;
mod local_cluster;
mod logging;
mod output;
mod seqfile;
mod snapshot;

mod serve;

use std::io::Write;

use clap::Parser;

use cli::{Cli, Command};
use output::exit;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap's own exit code for usage errors is 2, which here means
            // "not found"; usage errors get 64 (EX_USAGE) instead.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(run(&cli));
}

fn run(cli: &Cli) -> i32 {
    // A node says what it does at `info`; a client command's stderr is for
    // its errors, so it logs only warnings unless asked.
    let default_level = match cli.command {
        Command::Serve(_) | Command::LocalCluster { .. } => "info",
        _ => "warn",
    };
    logging::init(&cli.log, default_level);
    if let Some(code) = run_local(cli) {
        return code;
    }
    if let Command::Bench(args) = &cli.command {
        return match bench::run(cli, args) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("nacre bench: {e}");
                exit::GENERIC
            }
        };
    }
    if let Command::Snapshot(cmd) = &cli.command {
        return snapshot::run(cli, cmd);
    }
    if let Command::Serve(args) = &cli.command {
        return match serve::run(args, cli.cluster_id.as_deref()) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("nacre serve: {e}");
                e.exit_code()
            }
        };
    }
    match &cli.command {
        Command::LocalCluster {
            nodes,
            dir,
            base_port,
            no_restart,
        } => {
            let opts = local_cluster::Options {
                nodes: *nodes,
                dir: dir.clone(),
                base_port: *base_port,
                restart: !no_restart,
                log_args: cli.log.to_args(),
            };
            return match local_cluster::run(&opts) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("nacre local-cluster: {e}");
                    exit::GENERIC
                }
            };
        }
        Command::Cluster(cluster::ClusterCommand::InitConfig {
            nodes,
            dir,
            base_port,
        }) => {
            return match cluster::init_config_at(*nodes, dir, *base_port) {
                Ok(text) => {
                    print!("{text}");
                    exit::OK
                }
                Err(e) => {
                    eprintln!("nacre cluster init-config: {e}");
                    exit::USAGE
                }
            };
        }
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nacre: cannot start the runtime: {e}");
            return exit::GENERIC;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut sink = output::Sink::new(&mut stdout, cli.json);
    if coordination::handles(&cli.command) {
        let result = rt.block_on(coordination::run(cli, &mut sink));
        return finish(cli, sink, result.map(|code| (None, code)));
    }
    let result = rt.block_on(commands::run_client(cli, &mut sink));
    finish(cli, sink, result.map(|out| (out, exit::OK)))
}

/// Commands that print something made here, with no node involved.
fn run_local(cli: &Cli) -> Option<i32> {
    match &cli.command {
        Command::Completions { shell } => Some(print_all(&completions::script(*shell))),
        Command::ConfigReference => Some(print_all(config_reference::render().as_bytes())),
        _ => None,
    }
}

/// Writes `bytes` to stdout; a closed pipe ends the command quietly.
fn print_all(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("nacre: cannot write output: {e}");
            exit::GENERIC
        }
    }
}

/// Prints a command's result (or its failure) and returns its exit code.
fn finish(
    cli: &Cli,
    mut sink: output::Sink<'_>,
    result: Result<(Option<output::Output>, i32), output::Failure>,
) -> i32 {
    if let Ok((Some(out), _)) = &result {
        sink.emit(out);
    }
    if let Some(e) = sink.take_error() {
        // A closed pipe (`| head`) is not worth a message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("nacre: cannot write output: {e}");
        }
        return exit::GENERIC;
    }
    drop(sink);
    match result {
        Ok((_, code)) => code,
        Err(f) => {
            eprintln!("{}", f.text());
            if cli.json {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{}", f.json());
                let _ = stdout.flush();
            }
            f.exit_code
        }
    }
}
