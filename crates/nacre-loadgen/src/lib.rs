//! A closed-loop load generator for key-value stores.
//!
//! The same [`Workload`] runs against any [`Target`]: Nacre (through
//! [`NacreTarget`], used by `nacre bench`) and etcd (in nacre-etcd-bench),
//! so both systems see the same keys, value sizes, clients and mix.
//!
//! [`run`] drives N clients (tasks, each with one request in flight: a
//! closed loop) over M connections (client `i` uses connection `i % M`),
//! records every latency in an HDR histogram and returns a [`Report`].

mod driver;
mod error;
mod histogram;
mod nacre;
mod report;
mod workload;

use std::future::Future;

pub use driver::{preload, run, Progress, RunOptions, Stop};
pub use error::{BoxError, RunError, TargetError, WorkloadError};
pub use histogram::{Latencies, Summary};
pub use nacre::{install_bench_script, NacreTarget, BENCH_SCRIPT_NAME};
pub use nacre_client::{Bytes, Consistency};
pub use report::Report;
pub use workload::{consistency_name, KeyGen, Kind, Op, OpGen, Workload};

/// One connection to a system under test. Cloned once per client task;
/// clones share the connection.
pub trait Target: Clone + Send + Sync + 'static {
    /// A short name for reports ("nacre", "etcd").
    fn name(&self) -> &'static str;
    /// Writes one key durably.
    fn put(&self, key: Bytes, value: Bytes)
        -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Reads one key at this consistency; `Ok(false)` if it is missing.
    fn get(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> impl Future<Output = Result<bool, TargetError>> + Send;
    /// Writes several keys in one atomic, durable transaction.
    fn sequence(
        &self,
        pairs: Vec<(Bytes, Bytes)>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Increments `key` through a server-side function; targets without
    /// user functions refuse.
    fn call(&self, key: Bytes) -> impl Future<Output = Result<(), TargetError>> + Send {
        let _ = key;
        let target = self.name();
        async move { Err(TargetError::NoFunctions { target }) }
    }
}
