//! `nacre bench`: a closed-loop load against a running cluster, through
//! nacre-loadgen (the same driver nacre-etcd-bench runs against etcd).

use std::time::Duration;

use clap::Args;
use nacre_client::Consistency;
use nacre_loadgen::{Kind, NacreTarget, Progress, RunOptions, Stop, Workload};

use crate::cli::{client_options, parse_consistency, Cli};

#[derive(Debug, Args, Clone, PartialEq)]
pub struct BenchArgs {
    /// Client tasks, each with one request in flight (a closed loop).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Connections the clients share (client i uses connection i mod M).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// put, get, mixed (see --read-percent) or sequence (see --sequence-len).
    #[arg(long, default_value = "put", value_parser = Kind::parse)]
    pub workload: Kind,
    /// Reads: consistent, any or at-least:INDEX.
    #[arg(long, default_value = "consistent", value_parser = parse_consistency)]
    pub consistency: Consistency,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// mixed: the share of reads, in percent.
    #[arg(long, default_value_t = 50)]
    pub read_percent: u8,
    /// sequence: keys written per sequence.
    #[arg(long, default_value_t = 10)]
    pub sequence_len: usize,
    /// Run for this many seconds [default: 10].
    #[arg(long, conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Run this many operations in all.
    #[arg(long)]
    pub ops: Option<u64>,
    /// With --duration: seconds at the start that are not measured.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// get and mixed: do not write the keys first.
    #[arg(long)]
    pub no_preload: bool,
    /// Seed of keys, values and the read/write mix.
    #[arg(long, default_value_t = Workload::default().seed)]
    pub seed: u64,
}

impl BenchArgs {
    fn workload(&self) -> Workload {
        Workload {
            kind: self.workload,
            key_size: self.key_size,
            value_size: self.value_size,
            keys: self.keys,
            consistency: self.consistency,
            read_percent: self.read_percent,
            sequence_len: self.sequence_len,
            seed: self.seed,
        }
    }

    fn stop(&self) -> Result<Stop, String> {
        match (self.ops, self.duration) {
            (Some(n), _) => Ok(Stop::Ops(n)),
            (None, d) => {
                let d = d.unwrap_or(10.0);
                if !(d.is_finite() && d > 0.0) {
                    return Err("--duration must be a positive number of seconds".into());
                }
                Ok(Stop::Duration(Duration::from_secs_f64(d)))
            }
        }
    }
}

/// Runs the benchmark; prints the report (text, or one JSON line).
pub fn run(cli: &Cli, args: &BenchArgs) -> Result<(), String> {
    let w = args.workload();
    w.validate().map_err(|e| e.to_string())?;
    let stop = args.stop()?;
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err("--warmup must be zero or more seconds".into());
    }
    let progress = if cli.json {
        Progress::Hidden
    } else {
        Progress::Bar
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = rt.block_on(async {
        let mut opts = client_options(cli);
        opts.consistency = args.consistency;
        let targets = NacreTarget::connect(&opts, args.connections.clamp(1, args.clients.max(1)))
            .await
            .map_err(|e| e.to_string())?;
        if w.kind == Kind::Call {
            nacre_loadgen::install_bench_script(targets[0].client())
                .await
                .map_err(|e| e.to_string())?;
        }
        if w.kind.reads() && !args.no_preload {
            if !cli.json {
                eprintln!("preloading {} keys ...", w.keys);
            }
            nacre_loadgen::preload(&targets, &w, 64, progress)
                .await
                .map_err(|e| e.to_string())?;
        }
        let run = RunOptions {
            clients: args.clients,
            stop,
            warmup: Duration::from_secs_f64(args.warmup),
            progress,
            cdf_points: 0,
        };
        nacre_loadgen::run(&targets, &w, &run)
            .await
            .map_err(|e| e.to_string())
    })?;
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
