//! Log output of every command: the `--log-format` and `--log-level`
//! flags, and the one subscriber they set up.
//!
//! - Logs go to stderr (stdout is for results), as text (default) or one
//!   JSON object per line (`timestamp`, `level`, `target`, `fields` with
//!   the `message`, and the spans the event happened in).
//! - The filter: `--log-level` if given, else `RUST_LOG` if set, else the
//!   command's default: `info` for `serve` and `local-cluster`, `warn` for
//!   client commands (their results are on stdout; the client's own events
//!   are all at `debug`).
//! - `--log-level` takes a level or an `EnvFilter` directive list
//!   (`info,raft=debug`); a bad one is a usage error before anything runs.
//!   A bad `RUST_LOG` is not: the default applies and a warning says why,
//!   as a node must not fail to start over its environment.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The levels a bare `--log-level` word may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// The logging flags, global to every command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct LogArgs {
    /// Log lines on stderr as `text` or one JSON object per line (`json`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which logs to write: error, warn, info, debug, trace, off, or
    /// directives (`info,raft=debug`). Overrides RUST_LOG. Default: info
    /// for serve and local-cluster, warn for client commands.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level)]
    pub log_level: Option<String>,
}

impl LogArgs {
    /// The same flags for a child `nacre serve` (`local-cluster`'s nodes).
    pub fn to_args(&self) -> Vec<String> {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let mut args = vec!["--log-format".to_string(), format.to_string()];
        if let Some(level) = &self.log_level {
            args.extend(["--log-level".to_string(), level.clone()]);
        }
        args
    }
}

/// Checks a `--log-level`: a bare word must be a level (`EnvFilter` would
/// take any word as a target name, so `--log-level verbose` would silently
/// log nothing); anything with `=` or `,` must parse as directives.
pub fn parse_level(s: &str) -> Result<String, String> {
    let s = s.trim();
    let is_directives = s.contains('=') || s.contains(',');
    if !is_directives && !LEVELS.contains(&s.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{s:?} is not a level ({}) or a list of directives such as \"info,raft=debug\"",
            LEVELS.join(", ")
        ));
    }
    EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a valid filter: {e}"))
}

/// Installs the subscriber for this process; `default` is the command's
/// level when neither `--log-level` nor `RUST_LOG` says one.
pub fn init(args: &LogArgs, default: &str) {
    let (filter, bad_env) = filter(
        args.log_level.as_deref(),
        std::env::var("RUST_LOG").ok(),
        default,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Another subscriber already set (a test harness) is left as it is.
    let _ = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, default, "RUST_LOG is not a valid filter; using the default");
    }
}

/// The filter by precedence: the flag, then `RUST_LOG`, then `default`.
/// Also returns why `RUST_LOG` was set but not used, if it was bad.
fn filter(flag: Option<&str>, env: Option<String>, default: &str) -> (EnvFilter, Option<String>) {
    if let Some(level) = flag {
        // Checked by `parse_level` when the flags were parsed.
        let filter = EnvFilter::builder()
            .parse(level)
            .expect("--log-level was validated");
        return (filter, None);
    }
    let mut bad_env = None;
    if let Some(env) = env.filter(|e| !e.trim().is_empty()) {
        match EnvFilter::builder().parse(&env) {
            Ok(f) => return (f, None),
            Err(e) => bad_env = Some(format!("{env:?}: {e}")),
        }
    }
    (EnvFilter::new(default), bad_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted() {
        for ok in [
            "warn",
            "INFO",
            "off",
            "info,raft=debug",
            "nacre_server=trace",
        ] {
            assert!(parse_level(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_bare_word_that_is_no_level_is_refused() {
        let e = parse_level("verbose").unwrap_err();
        assert!(e.contains("not a level"), "{e}");
        assert!(parse_level("info,raft=loud").is_err());
    }

    #[test]
    fn the_flag_beats_rust_log_which_beats_the_default() {
        let (f, bad) = filter(Some("error"), Some("debug".into()), "info");
        assert_eq!(f.to_string(), "error");
        assert!(bad.is_none());
        let (f, _) = filter(None, Some("debug".into()), "info");
        assert_eq!(f.to_string(), "debug");
        let (f, _) = filter(None, None, "info");
        assert_eq!(f.to_string(), "info");
        let (f, bad) = filter(None, Some("info,raft=loud".into()), "warn");
        assert_eq!(f.to_string(), "warn");
        assert!(bad.unwrap().contains("raft=loud"));
    }

    #[test]
    fn child_nodes_get_the_same_flags() {
        let args = LogArgs {
            log_format: LogFormat::Json,
            log_level: Some("debug".into()),
        };
        assert_eq!(
            args.to_args(),
            ["--log-format", "json", "--log-level", "debug"]
        );
        assert_eq!(LogArgs::default().to_args(), ["--log-format", "text"]);
    }
}
