//! `nacre-bench etcd`: the closed-loop workloads of nacre-loadgen against
//! etcd v3 (gRPC, etcd-client) and Nacre (native protocol), interleaved in
//! one run so that both systems see the same machine state.
//!
//! ```text
//! nacre-bench etcd --etcd 127.0.0.1:2379 --nacre 127.0.0.1:7379
//!     [--workloads put,get,get-any,mixed,sequence] [--clients 1,16,64,256]
//!     [--connections 0] [--duration 10] [--warmup 1] [--key-size 16]
//!     [--value-size 256] [--keys 10000] [--json] [--cdf-points 200]
//! ```
//!
//! Durability is the same on both sides: etcd fsyncs its WAL before it
//! answers a write, Nacre fsyncs its tlog. Reads: `get` is linearizable on
//! both (Nacre `consistent`, etcd's default), `get-any` is Nacre `any`
//! against etcd's serializable reads (member-local, possibly stale).

use std::future::Future;
use std::time::Duration;

use clap::Args;
use etcd_client::{Client, GetOptions, KvClient, Txn, TxnOp};
use nacre_loadgen::{
    Bytes, Consistency, Kind, NacreTarget, Progress, Report, RunOptions, Stop, Target, TargetError,
    Workload,
};

/// One connection (one HTTP/2 channel) to an etcd cluster.
#[derive(Clone)]
pub struct EtcdTarget {
    kv: KvClient,
}

impl EtcdTarget {
    pub async fn connect(endpoints: &[String], n: usize) -> Result<Vec<EtcdTarget>, TargetError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let c = Client::connect(endpoints, None)
                .await
                .map_err(|e| format!("cannot connect to etcd at {endpoints:?}: {e}"))?;
            out.push(EtcdTarget { kv: c.kv_client() });
        }
        Ok(out)
    }
}

impl Target for EtcdTarget {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn put(
        &self,
        key: Bytes,
        value: Bytes,
    ) -> impl Future<Output = Result<(), TargetError>> + Send {
        let mut kv = self.kv.clone();
        async move {
            kv.put(key.to_vec(), value.to_vec(), None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    fn get(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> impl Future<Output = Result<bool, TargetError>> + Send {
        let mut kv = self.kv.clone();
        // etcd has two levels: linearizable (default) and serializable
        // (member-local). Nacre's at-least:N has no etcd counterpart; it
        // maps to serializable, the closest.
        let opts = match consistency {
            Consistency::Consistent => None,
            Consistency::Any | Consistency::AtLeast(_) => {
                Some(GetOptions::new().with_serializable())
            }
        };
        async move {
            kv.get(key.to_vec(), opts)
                .await
                .map(|r| !r.kvs().is_empty())
                .map_err(|e| e.to_string())
        }
    }

    fn sequence(
        &self,
        pairs: Vec<(Bytes, Bytes)>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send {
        let mut kv = self.kv.clone();
        let ops: Vec<TxnOp> = pairs
            .into_iter()
            .map(|(k, v)| TxnOp::put(k.to_vec(), v.to_vec(), None))
            .collect();
        async move {
            kv.txn(Txn::new().and_then(ops))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

#[derive(Args, Debug)]
pub struct EtcdArgs {
    /// etcd client endpoints (host:port), comma-separated; leave out to
    /// run Nacre alone.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Nacre client endpoints, comma-separated; leave out to run etcd alone.
    #[arg(long, value_delimiter = ',')]
    nacre: Vec<String>,
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
    w.validate()?;
    Ok(w)
}

async fn one<T: Target>(
    targets: &[T],
    w: &Workload,
    clients: usize,
    a: &EtcdArgs,
) -> Result<Report, TargetError> {
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
    if a.etcd.is_empty() && a.nacre.is_empty() {
        return Err("give --etcd, --nacre or both".into());
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
    let etcd = if a.etcd.is_empty() {
        Vec::new()
    } else {
        EtcdTarget::connect(&a.etcd, max_conns).await?
    };
    let nacre = if a.nacre.is_empty() {
        Vec::new()
    } else {
        NacreTarget::connect(
            &nacre_client::ClientOptions::new(a.nacre.clone()),
            max_conns,
        )
        .await?
    };
    // Both systems get the same keys and values before any read.
    let reads = workloads.iter().find(|(_, w)| w.kind.reads());
    let reads = if a.preload_only {
        // Preload whatever the workloads are.
        Some(reads.unwrap_or(&workloads[0]))
    } else {
        reads.filter(|_| !a.no_preload)
    };
    if let Some((_, w)) = reads {
        let p = if a.json {
            Progress::Hidden
        } else {
            Progress::Bar
        };
        if !etcd.is_empty() {
            eprintln!("preloading {} keys into etcd ...", w.keys);
            nacre_loadgen::preload(&etcd, w, 64, p).await?;
        }
        if !nacre.is_empty() {
            eprintln!("preloading {} keys into nacre ...", w.keys);
            nacre_loadgen::preload(&nacre, w, 64, p).await?;
        }
    }
    if a.preload_only {
        return Ok(());
    }
    for (name, w) in &workloads {
        for &c in &a.clients {
            let m = conns(a, c);
            // Alternate which system goes first, so neither always runs on
            // a disk the other just filled.
            let nacre_first = c % 2 == 0;
            for turn in 0..2 {
                let r = if (turn == 0) == nacre_first {
                    if nacre.is_empty() {
                        continue;
                    }
                    eprintln!("nacre {name} clients={c} connections={m}");
                    one(&nacre[..m], w, c, a).await
                } else {
                    if etcd.is_empty() {
                        continue;
                    }
                    eprintln!("etcd {name} clients={c} connections={m}");
                    one(&etcd[..m], w, c, a).await
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

fn conns(a: &EtcdArgs, clients: usize) -> usize {
    let m = if a.connections == 0 {
        clients.min(16)
    } else {
        a.connections
    };
    m.clamp(1, clients.max(1))
}

pub fn run(a: &EtcdArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(compare(a))
}
