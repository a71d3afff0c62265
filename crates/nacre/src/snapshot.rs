//! `nacre snapshot save | status | restore`: online backups of a running
//! cluster, and new clusters made from them (docs/operations.md, "Backup
//! and restore"; the file's layout is in docs/backup-format.md).
//!
//! - `save FILE` streams a consistent backup from the leader into
//!   `FILE.part`, syncs it, reads it back in full (pairs and SHA-256),
//!   checks it against the figures the node sent, and only then renames
//!   it to `FILE`.
//! - `status FILE` reads a backup in full and prints what it holds; a
//!   damaged one is reported as such (exit code 65), never trusted.
//! - `restore FILE` creates the data directory of one member of a new
//!   cluster (`nacre_server::restore`), chosen as `nacre serve` chooses
//!   it: `--config C --node NAME`, or `--data-dir D --name NAME` for a
//!   single-member cluster.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use nacre_client::{BackupPiece, BackupSummary, Client};
use nacre_server::{BackupError, BackupInfo, BackupReader, RestoreError};
use serde_json::json;

use crate::cli::{client_options, Cli, ServeArgs};
use crate::output::{exit, Failure};

/// Read-ahead when checking a backup file.
const READ_BUFFER_BYTES: usize = 1 << 20;
/// Write-behind when saving one.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum SnapshotCommand {
    /// Save a consistent backup of the running cluster (taken by its
    /// leader) to FILE, checked before it is put in place.
    Save { file: PathBuf },
    /// Check a backup file and print its index, revision, key count, size
    /// and SHA-256 (a damaged file: exit code 65).
    Status { file: PathBuf },
    /// Create the data directory of a member of a NEW cluster from a
    /// backup. Restore every member from the same file, then start each
    /// with `nacre serve --config C --node NAME`.
    Restore {
        file: PathBuf,
        /// The data directory to create (default: the config's for
        /// --node); it must not exist or be empty.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The node's name in a single-member cluster (without --config).
        #[arg(long)]
        name: Option<String>,
        /// The new cluster's config file: its [[nodes]] are the members.
        #[arg(long, requires = "node")]
        config: Option<PathBuf>,
        /// The member of the config's [[nodes]] to restore.
        #[arg(long, requires = "config", conflicts_with = "name")]
        node: Option<String>,
    },
}

/// Runs a snapshot command; its exit code.
pub fn run(cli: &Cli, cmd: &SnapshotCommand) -> i32 {
    let result = match cmd {
        SnapshotCommand::Save { file } => save(cli, file),
        SnapshotCommand::Status { file } => status(file),
        SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            config,
            node,
        } => {
            let args = ServeArgs {
                config: config.clone(),
                data_dir: data_dir.clone(),
                node_name: name.clone(),
                node: node.clone(),
                ..ServeArgs::default()
            };
            restore(cli, file, &args)
        }
    };
    match result {
        Ok(mut report) => {
            let text = report
                .as_object_mut()
                .and_then(|o| o.remove("text"))
                .and_then(|t| t.as_str().map(str::to_string))
                .unwrap_or_default();
            if cli.json {
                println!("{report}");
            } else {
                print!("{text}");
            }
            exit::OK
        }
        Err(f) => {
            eprintln!("{}", f.text());
            if cli.json {
                println!("{}", f.json());
            }
            f.exit_code
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A failure about a file: `damaged` ones (the bytes are wrong) exit 65.
fn file_failure(what: &str, path: &Path, e: &dyn std::fmt::Display, damaged: bool) -> Failure {
    let mut f = Failure::input(format!("{what} {}: {e}", path.display()));
    if damaged {
        f.code = "corrupt".into();
        f.exit_code = exit::CORRUPTION;
    } else {
        f.code = "io".into();
    }
    f
}

fn backup_failure(path: &Path, e: &BackupError) -> Failure {
    let damaged = !matches!(e, BackupError::Io(_));
    file_failure("backup", path, e, damaged)
}

/// Reads a whole backup: its figures, if every check holds.
fn check_file(path: &Path) -> Result<BackupInfo, Failure> {
    let f = File::open(path).map_err(|e| file_failure("cannot open", path, &e, false))?;
    let mut r = BackupReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, f))
        .map_err(|e| backup_failure(path, &e))?;
    while r
        .next_pair()
        .map_err(|e| backup_failure(path, &e))?
        .is_some()
    {}
    r.finish().map_err(|e| backup_failure(path, &e))
}

/// The report of a checked backup: JSON fields and the text lines.
fn describe(path: &Path, info: &BackupInfo) -> serde_json::Value {
    let sha = hex(&info.sha256);
    let text = format!(
        "file: {}\napplied index: {}\netcd revision: {}\nuser keys: {}\npairs: {}\nsize: {} bytes\nsha256: {sha}\nverified: yes\n",
        path.display(),
        info.applied,
        info.revision,
        info.user_keys,
        info.pairs,
        info.size_bytes,
    );
    json!({
        "file": path.display().to_string(),
        "applied": info.applied,
        "revision": info.revision,
        "user_keys": info.user_keys,
        "pairs": info.pairs,
        "size_bytes": info.size_bytes,
        "sha256": sha,
        "verified": true,
        "text": text,
    })
}

fn status(path: &Path) -> Result<serde_json::Value, Failure> {
    let info = check_file(path)?;
    Ok(describe(path, &info))
}

/// `FILE.part`, beside `FILE`.
fn part_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

fn save(cli: &Cli, file: &Path) -> Result<serde_json::Value, Failure> {
    if file.file_name().is_none() {
        return Err(Failure::input(format!("{} names no file", file.display())));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::input(format!("cannot start the runtime: {e}")))?;
    let part = part_path(file);
    let received = rt.block_on(receive(cli, &part));
    let (summary, node) = match received {
        Ok(x) => x,
        Err(f) => {
            let _ = std::fs::remove_file(&part);
            return Err(f);
        }
    };
    let info = match check_file(&part) {
        Ok(info) => info,
        Err(f) => {
            let _ = std::fs::remove_file(&part);
            return Err(f);
        }
    };
    let agrees = info.applied == summary.applied
        && info.revision == summary.revision
        && info.pairs == summary.pairs
        && info.size_bytes == summary.size_bytes
        && info.sha256[..] == summary.sha256[..];
    if !agrees {
        let _ = std::fs::remove_file(&part);
        let why = format!("the file does not match what {node} said it sent ({summary:?})");
        return Err(file_failure("backup", &part, &why, true));
    }
    std::fs::rename(&part, file).map_err(|e| file_failure("cannot rename to", file, &e, false))?;
    sync_dir_of(file)?;
    let mut report = describe(file, &info);
    report["node"] = json!(node);
    if let Some(t) = report["text"].as_str() {
        report["text"] = json!(format!("{t}from node: {node}\n"));
    }
    Ok(report)
}

/// Streams the backup into `part`, synced: the node's figures and name.
async fn receive(cli: &Cli, part: &Path) -> Result<(BackupSummary, String), Failure> {
    let fail = |e: nacre_client::ClientError| Failure::from_client(&e);
    let client = Client::connect(client_options(cli)).await.map_err(fail)?;
    let mut stream = client.backup().await.map_err(fail)?;
    let node = stream.source().1.to_string();
    let io = |what: &str, e: std::io::Error| file_failure(what, part, &e, false);
    let f = File::create(part).map_err(|e| io("cannot create", e))?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, f);
    let summary = loop {
        match stream.next().await.map_err(fail)? {
            Some(BackupPiece::Chunk(b)) => out.write_all(&b).map_err(|e| io("cannot write", e))?,
            Some(BackupPiece::End(s)) => break s,
            None => {
                return Err(Failure::input(
                    "the backup stream ended without its end frame",
                ))
            }
        }
    };
    let f = out
        .into_inner()
        .map_err(|e| io("cannot write", e.into_error()))?;
    f.sync_all().map_err(|e| io("cannot sync", e))?;
    Ok((summary, node))
}

/// Makes a rename in `file`'s directory durable.
fn sync_dir_of(file: &Path) -> Result<(), Failure> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_failure("cannot sync", dir, &e, false))
}

fn restore(cli: &Cli, file: &Path, args: &ServeArgs) -> Result<serde_json::Value, Failure> {
    if args.config.is_none() && (args.data_dir.is_none() || args.node_name.is_none()) {
        return Err(Failure::input(
            "restore needs --config C --node NAME (a member of a new cluster), or --data-dir D \
             --name NAME (a single-member cluster)",
        ));
    }
    let cfg = crate::serve::load_config(args, cli.cluster_id.as_deref())
        .map_err(|e| Failure::input(e.to_string()))?;
    let restored = nacre_server::restore(file, &cfg).map_err(|e| match &e {
        RestoreError::Backup { source, .. } => {
            let mut f = backup_failure(file, source);
            f.message = e.to_string();
            f
        }
        e => Failure::input(e.to_string()),
    })?;
    let members: Vec<&str> = restored.members.iter().map(|(_, n)| n.as_str()).collect();
    let b = &restored.backup;
    let text = format!(
        "restored {} into {} for node {} of a new cluster ({})\napplied index: {}\netcd revision: {}\nuser keys: {}\nstart it with: nacre serve{}\n",
        file.display(),
        restored.data_dir.display(),
        cfg.node_name,
        members.join(", "),
        b.applied,
        b.revision,
        b.user_keys,
        match (&args.config, &args.node) {
            (Some(c), Some(n)) => format!(" --config {} --node {n}", c.display()),
            _ => format!(" --data-dir {} --node-name {}", restored.data_dir.display(), cfg.node_name),
        },
    );
    Ok(json!({
        "file": file.display().to_string(),
        "data_dir": restored.data_dir.display().to_string(),
        "node": cfg.node_name,
        "members": members,
        "applied": b.applied,
        "revision": b.revision,
        "term": restored.term,
        "user_keys": b.user_keys,
        "pairs": b.pairs,
        "sha256": hex(&b.sha256),
        "text": text,
    }))
}
