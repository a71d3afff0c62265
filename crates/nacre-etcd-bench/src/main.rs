//! `nacre-etcd-bench`: the closed-loop workloads of nacre-loadgen against
//! etcd v3 (gRPC, through nacre-etcd-proto's client) and Nacre (native
//! protocol), interleaved in one run so that both systems see the same
//! machine state. `bench/compare-etcd.sh` starts both clusters, runs this
//! and turns its JSON into docs/benchmarks.md's tables and plots.
//!
//! ```text
//! nacre-etcd-bench --etcd 127.0.0.1:2379 --nacre 127.0.0.1:7379
//!     [--workloads put,get,get-any,mixed,sequence] [--clients 1,16,64,256]
//!     [--connections 0] [--duration 10] [--warmup 1] [--key-size 16]
//!     [--value-size 256] [--keys 10000] [--json] [--cdf-points 200]
//! ```
//!
//! Durability is the same on both sides: etcd fsyncs its WAL before it
//! answers a write, Nacre fsyncs its tlog. Reads: `get` is linearizable on
//! both (Nacre `consistent`, etcd's default), `get-any` is Nacre `any`
//! against etcd's serializable reads (member-local, possibly stale).
//!
//! It lives apart from nacre-bench (the storage engine benchmark) so that
//! the engine benchmark builds without gRPC.

mod etcd;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nacre_loadgen::{
    Consistency, Kind, NacreTarget, Progress, Report, RunError, RunOptions, Stop, Target, Workload,
};

use crate::etcd::EtcdTarget;

#[derive(Parser, Debug)]
#[command(
    name = "nacre-etcd-bench",
    about = "The same client workloads against etcd v3 and Nacre, interleaved"
)]
struct EtcdArgs {
    /// etcd client endpoints (host:port, or a URL), comma-separated;
    /// connection i goes to endpoint i mod their number. Leave out to run
    /// Nacre alone.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Nacre client endpoints, comma-separated; leave out to run etcd alone.
    #[arg(long, value_delimiter = ',')]
    nacre: Vec<String>,
    /// Nacre's etcd v3 API endpoints, comma-separated: the same etcd client
    /// against Nacre (reported as "nacre-etcd"), so the client's cost is
    /// equal and the gRPC layer's shows against `--nacre`.
    #[arg(long, value_delimiter = ',')]
    nacre_etcd: Vec<String>,
    /// put, get (linearizable), get-any (Nacre any / etcd serializable),
    /// mixed (50% linearizable reads) and sequence (10 keys per
    /// transaction).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "put,get,get-any,mixed,sequence"
    )]
    workloads: Vec<String>,
    /// Client counts to run each workload with.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Connections per system; 0: min(clients, 16).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds at the start of each run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// One JSON report per line on stdout (nacre-loadgen's Report).
    #[arg(long)]
    json: bool,
    /// Write the keys and stop (the script restarts both systems after it,
    /// so that neither serves reads out of its bulk-load state).
    #[arg(long, conflicts_with = "no_preload")]
    preload_only: bool,
    /// Do not write the keys first (they are there from --preload-only).
    #[arg(long)]
    no_preload: bool,
    /// Points of each run's latency distribution kept in the JSON.
    #[arg(long, default_value_t = 200)]
    cdf_points: usize,
}

fn workload(name: &str, a: &EtcdArgs) -> Result<Workload, String> {
    let base = Workload {
        key_size: a.key_size,
        value_size: a.value_size,
        keys: a.keys,
        ..Workload::default()
    };
    let w = match name {
        "put" => Workload {
            kind: Kind::Put,
            ..base
        },
        "get" => Workload {
            kind: Kind::Get,
            ..base
        },
        "get-any" => Workload {
            kind: Kind::Get,
            consistency: Consistency::Any,
            ..base
        },
        "mixed" => Workload {
            kind: Kind::Mixed,
            read_percent: 50,
            ..base
        },
        "sequence" => Workload {
            kind: Kind::Sequence,
            sequence_len: 10,
            ..base
        },
        _ => return Err(format!("unknown workload {name:?}")),
    };
    w.validate().map_err(|e| e.to_string())?;
    Ok(w)
}

async fn one<T: Target>(
    targets: &[T],
    w: &Workload,
    clients: usize,
    a: &EtcdArgs,
) -> Result<Report, RunError> {
    let opts = RunOptions {
        clients,
        stop: Stop::Duration(Duration::from_secs_f64(a.duration)),
        warmup: Duration::from_secs_f64(a.warmup),
        progress: if a.json {
            Progress::Hidden
        } else {
            Progress::Bar
        },
        cdf_points: a.cdf_points,
    };
    nacre_loadgen::run(&targets[..targets.len().min(clients)], w, &opts).await
}

fn emit(r: &Report, name: &str, json: bool) {
    if json {
        // The comparison's workload name rides along for the plots.
        let mut v = serde_json::to_value(r).expect("a report serializes");
        v["bench"] = serde_json::Value::String(name.to_string());
        println!("{v}");
    } else {
        print!("{}", r.text());
    }
}

async fn compare(a: &EtcdArgs) -> Result<(), String> {
    if a.etcd.is_empty() && a.nacre.is_empty() && a.nacre_etcd.is_empty() {
        return Err("give --etcd, --nacre, --nacre-etcd or several".into());
    }
    if !(a.duration > 0.0 && a.warmup >= 0.0) {
        return Err("--duration must be positive and --warmup not negative".into());
    }
    let workloads: Vec<(String, Workload)> = a
        .workloads
        .iter()
        .map(|n| workload(n.trim(), a).map(|w| (n.trim().to_string(), w)))
        .collect::<Result<_, _>>()?;
    let max_conns = a.clients.iter().map(|&c| conns(a, c)).max().unwrap_or(1);
    let etcd = etcd_targets(&a.etcd, max_conns, "etcd").await?;
    let nacre_etcd = etcd_targets(&a.nacre_etcd, max_conns, "nacre-etcd").await?;
    let nacre = if a.nacre.is_empty() {
        Vec::new()
    } else {
        NacreTarget::connect(
            &nacre_client::ClientOptions::new(a.nacre.clone()),
            max_conns,
        )
        .await
        .map_err(|e| e.to_string())?
    };
    // Every system gets the same keys and values before any read.
    let reads = workloads.iter().find(|(_, w)| w.kind.reads());
    let reads = if a.preload_only {
        // Preload whatever the workloads are.
        Some(reads.unwrap_or(&workloads[0]))
    } else {
        reads.filter(|_| !a.no_preload)
    };
    if let Some((_, w)) = reads {
        preload(&etcd, w, a).await?;
        preload(&nacre_etcd, w, a).await?;
        preload(&nacre, w, a).await?;
    }
    if a.preload_only {
        return Ok(());
    }
    for (name, w) in &workloads {
        for &c in &a.clients {
            let m = conns(a, c);
            // Rotate which system goes first, so none always runs on a
            // disk another just filled.
            for turn in 0..3 {
                let r = match (turn + c) % 3 {
                    0 if !nacre.is_empty() => {
                        eprintln!("nacre {name} clients={c} connections={m}");
                        one(&nacre[..m], w, c, a).await
                    }
                    1 if !etcd.is_empty() => {
                        eprintln!("etcd {name} clients={c} connections={m}");
                        one(&etcd[..m], w, c, a).await
                    }
                    2 if !nacre_etcd.is_empty() => {
                        eprintln!("nacre-etcd {name} clients={c} connections={m}");
                        one(&nacre_etcd[..m], w, c, a).await
                    }
                    _ => continue,
                };
                match r {
                    Ok(r) => emit(&r, name, a.json),
                    Err(e) => eprintln!("  FAILED: {e}"),
                }
            }
        }
    }
    Ok(())
}

async fn etcd_targets(
    endpoints: &[String],
    n: usize,
    name: &'static str,
) -> Result<Vec<EtcdTarget>, String> {
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let targets = EtcdTarget::connect(endpoints, n)
        .await
        .map_err(|e| e.to_string())?;
    Ok(EtcdTarget::named(targets, name))
}

async fn preload<T: Target>(targets: &[T], w: &Workload, a: &EtcdArgs) -> Result<(), String> {
    let Some(first) = targets.first() else {
        return Ok(());
    };
    let p = if a.json {
        Progress::Hidden
    } else {
        Progress::Bar
    };
    eprintln!("preloading {} keys into {} ...", w.keys, first.name());
    nacre_loadgen::preload(targets, w, 64, p)
        .await
        .map_err(|e| e.to_string())
}

fn conns(a: &EtcdArgs, clients: usize) -> usize {
    let m = if a.connections == 0 {
        clients.min(16)
    } else {
        a.connections
    };
    m.clamp(1, clients.max(1))
}

fn main() -> ExitCode {
    let args = EtcdArgs::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nacre-etcd-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(compare(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nacre-etcd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> EtcdArgs {
        let mut argv = vec!["nacre-etcd-bench"];
        argv.extend_from_slice(extra);
        EtcdArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn the_script_s_command_lines_parse() {
        // bench/compare-etcd.sh's two invocations.
        let a = args(&[
            "--nacre",
            "127.0.0.1:1",
            "--keys",
            "500",
            "--value-size",
            "64",
            "--etcd",
            "127.0.0.1:2",
            "--workloads",
            "put",
            "--preload-only",
            "--json",
        ]);
        assert_eq!(a.nacre, ["127.0.0.1:1"]);
        assert_eq!(a.etcd, ["127.0.0.1:2"]);
        assert!(a.preload_only && a.json && !a.no_preload);
        assert_eq!((a.keys, a.value_size), (500, 64));
        let a = args(&[
            "--nacre",
            "a:1,b:2",
            "--etcd",
            "c:3",
            "--workloads",
            "get-any",
            "--clients",
            "1,16",
            "--duration",
            "2.5",
            "--warmup",
            "0",
            "--no-preload",
            "--json",
        ]);
        assert_eq!(a.nacre, ["a:1", "b:2"]);
        assert_eq!(a.clients, [1, 16]);
        assert_eq!(a.duration, 2.5);
        assert!(a.no_preload);
        // The two preload flags contradict each other.
        assert!(
            EtcdArgs::try_parse_from(["x", "--preload-only", "--no-preload"]).is_err(),
            "--preload-only with --no-preload must be refused"
        );
    }

    #[test]
    fn workload_names_map_to_loadgen_workloads() {
        let a = args(&["--keys", "1000", "--value-size", "100"]);
        let get_any = workload("get-any", &a).unwrap();
        assert_eq!(get_any.kind, Kind::Get);
        assert_eq!(get_any.consistency, Consistency::Any);
        assert_eq!((get_any.keys, get_any.value_size), (1000, 100));
        assert_eq!(
            workload("get", &a).unwrap().consistency,
            Consistency::Consistent
        );
        let mixed = workload("mixed", &a).unwrap();
        assert_eq!((mixed.kind, mixed.read_percent), (Kind::Mixed, 50));
        let seq = workload("sequence", &a).unwrap();
        assert_eq!((seq.kind, seq.sequence_len), (Kind::Sequence, 10));
        assert_eq!(workload("put", &a).unwrap().kind, Kind::Put);
        assert!(workload("scan", &a).is_err());
    }

    #[test]
    fn connections_default_to_clients_up_to_sixteen() {
        let a = args(&[]);
        assert_eq!(conns(&a, 1), 1);
        assert_eq!(conns(&a, 8), 8);
        assert_eq!(conns(&a, 256), 16);
        let a = args(&["--connections", "4"]);
        assert_eq!(conns(&a, 64), 4);
        // Never more connections than clients.
        assert_eq!(conns(&a, 2), 2);
    }

    #[tokio::test]
    async fn nothing_to_compare_is_an_error() {
        let e = compare(&args(&[])).await.unwrap_err();
        assert!(e.contains("--etcd"), "{e}");
        let e = compare(&args(&["--nacre", "127.0.0.1:1", "--duration", "0"]))
            .await
            .unwrap_err();
        assert!(e.contains("--duration"), "{e}");
    }
}
