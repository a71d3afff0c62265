//! `nacre-coord-bench`: Nacre's coordination features (watches, leases,
//! locks) against etcd's, in one run on one machine. One JSON object per
//! line on stdout; `bench/compare-etcd-coord.sh` starts both servers, runs
//! this and turns the lines into docs/benchmarks.md's tables.
//!
//! ```text
//! nacre-coord-bench --etcd 127.0.0.1:2379 --etcd-pid P --nacre 127.0.0.1:7379 --nacre-pid Q
//!     [--workloads fanout,idle,lock] [--watchers 1,100,1000] [--rate 500,2000]
//!     [--duration 10] [--drain 5] [--idle-watchers 10000] [--idle-leases 10000]
//!     [--contenders 1,16,64]
//! ```
//!
//! - fanout: W watchers of one prefix, puts at a fixed rate; events
//!   delivered per second (all watchers) and put-sent-to-event latency.
//! - idle: server RSS and CPU (from /proc) idle, with N idle watchers,
//!   then with N kept-alive leases too.
//! - lock: C contenders taking and releasing one lock; cycles per second.

mod coord;
mod coord_etcd;
mod coord_nacre;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::coord::{CoordTarget, FanoutSpec, IdleSpec};
use crate::coord_etcd::EtcdCoord;
use crate::coord_nacre::NacreCoord;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nacre-coord-bench",
    about = "Watches, leases and locks: Nacre against etcd v3, interleaved"
)]
struct CoordArgs {
    /// etcd client endpoint (host:port); leave out to run Nacre alone.
    #[arg(long)]
    etcd: Option<String>,
    /// Pid of the etcd server, for the idle workload's /proc readings.
    #[arg(long)]
    etcd_pid: Option<u32>,
    /// Nacre client endpoint; leave out to run etcd alone.
    #[arg(long)]
    nacre: Option<String>,
    /// Pid of the Nacre server.
    #[arg(long)]
    nacre_pid: Option<u32>,
    /// fanout, idle, lock.
    #[arg(long, value_delimiter = ',', default_value = "fanout,idle,lock")]
    workloads: Vec<String>,
    /// Watcher counts of the fan-out runs.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    watchers: Vec<usize>,
    /// Puts per second during a fan-out run; each watcher count runs
    /// with each rate.
    #[arg(long, value_delimiter = ',', default_value = "500")]
    rate: Vec<u32>,
    /// Seconds of writes per fan-out run, of contention per lock run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds a fan-out run waits, after its last put, for late events.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Watch streams etcd's watchers are spread over (clientv3 puts the
    /// watches of one client and context on one).
    #[arg(long, default_value_t = 1)]
    etcd_watch_streams: usize,
    #[arg(long, default_value_t = 10_000)]
    idle_watchers: usize,
    #[arg(long, default_value_t = 10_000)]
    idle_leases: usize,
    /// Time to live of the idle workload's leases, in seconds (renewed at
    /// a third of it).
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// Seconds over which the idle workload measures CPU.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Seconds the idle workload lets the server settle before measuring.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Contender counts of the lock runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    contenders: Vec<usize>,
    /// Time to live of a lock's session lease, in seconds.
    #[arg(long, default_value_t = 10)]
    lock_ttl: u64,
}

fn emit<R: Serialize>(r: &R) {
    println!("{}", serde_json::to_string(r).expect("a result serializes"));
}

/// Runs `workload` with one setting (and rate) on one system.
async fn on<T: CoordTarget>(
    t: &T,
    pid: Option<u32>,
    workload: &str,
    (setting, rate): (usize, u32),
    a: &CoordArgs,
) -> Result<(), String> {
    let run =
        u64::try_from(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_micros())).unwrap_or(0);
    eprintln!("{} {workload} {setting} {rate}", t.name());
    match workload {
        "fanout" => {
            let spec = FanoutSpec {
                watchers: setting,
                rate_per_s: rate,
                duration: Duration::from_secs_f64(a.duration),
                drain: Duration::from_secs_f64(a.drain),
                value_size: a.value_size,
            };
            emit(&coord::fanout(t, run, &spec).await?);
        }
        "idle" => {
            let spec = IdleSpec {
                pid: pid.ok_or_else(|| format!("idle needs --{}-pid", t.name()))?,
                watchers: a.idle_watchers,
                leases: a.idle_leases,
                lease_ttl: Duration::from_secs(a.lease_ttl),
                interval: Duration::from_secs_f64(a.interval),
                settle: Duration::from_secs_f64(a.settle),
            };
            emit(&coord::idle(t, run, &spec).await?);
        }
        "lock" => {
            let d = Duration::from_secs_f64(a.duration);
            let ttl = Duration::from_secs(a.lock_ttl);
            emit(&coord::lock_cycles(t, run, setting, d, ttl).await?);
        }
        w => return Err(format!("unknown workload {w:?}")),
    }
    Ok(())
}

/// The settings each workload runs with (and the put rate of each).
fn settings(workload: &str, a: &CoordArgs) -> Vec<(usize, u32)> {
    match workload {
        "fanout" => a
            .rate
            .iter()
            .flat_map(|&r| a.watchers.iter().map(move |&w| (w, r)))
            .collect(),
        "lock" => a.contenders.iter().map(|&c| (c, 0)).collect(),
        _ => vec![(a.idle_watchers, 0)],
    }
}

async fn nacre(a: &CoordArgs) -> Result<Option<NacreCoord>, String> {
    match &a.nacre {
        Some(ep) => NacreCoord::connect(ep).await.map(Some),
        None => Ok(None),
    }
}

async fn compare(a: &CoordArgs) -> Result<(), String> {
    if a.etcd.is_none() && a.nacre.is_none() {
        return Err("give --etcd, --nacre or both".into());
    }
    if !(a.duration > 0.0 && a.drain >= 0.0 && a.interval > 0.0 && a.rate.iter().all(|&r| r > 0)) {
        return Err("--duration, --interval and --rate must be positive".into());
    }
    let etcd = match &a.etcd {
        Some(ep) => Some(EtcdCoord::connect(ep, a.etcd_watch_streams).await?),
        None => None,
    };
    let nacre = nacre(a).await?;
    let mut failed = 0;
    let mut turn = 0;
    for w in &a.workloads {
        for s in settings(w.trim(), a) {
            // Alternate which system goes first.
            turn += 1;
            for side in [turn % 2, 1 - turn % 2] {
                let r = match (side, &etcd, &nacre) {
                    (0, Some(e), _) => on(e, a.etcd_pid, w.trim(), s, a).await,
                    (1, _, Some(n)) => on(n, a.nacre_pid, w.trim(), s, a).await,
                    _ => continue,
                };
                if let Err(e) = r {
                    eprintln!("  FAILED: {e}");
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} runs failed"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = CoordArgs::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nacre-coord-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(compare(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nacre-coord-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_s_command_line_parses() {
        let a = CoordArgs::try_parse_from([
            "nacre-coord-bench",
            "--etcd",
            "127.0.0.1:1",
            "--etcd-pid",
            "7",
            "--nacre",
            "127.0.0.1:2",
            "--nacre-pid",
            "8",
            "--workloads",
            "fanout,lock",
            "--watchers",
            "1,100",
            "--contenders",
            "1,16",
        ])
        .unwrap();
        assert_eq!((a.etcd_pid, a.nacre_pid), (Some(7), Some(8)));
        assert_eq!(settings("fanout", &a), [(1, 500), (100, 500)]);
        assert_eq!(settings("lock", &a), [(1, 0), (16, 0)]);
        assert_eq!(settings("idle", &a), [(10_000, 0)]);
    }
}
