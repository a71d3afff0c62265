//! The Nacre target, over the native protocol.

use nacre_client::{Bytes, Client, ClientOptions, Consistency, Sequence};

use crate::{Target, TargetError};

/// The script the `call` workload runs: the `arith64` example, installed
/// under this name before the run.
pub const BENCH_SCRIPT_NAME: &str = "nacre_bench_arith64";
/// Prefix of the counters the `call` workload increments.
pub const BENCH_COUNTER_PREFIX: &[u8] = b"counter/";
pub const BENCH_SCRIPT_SOURCE: &str = include_str!("../../../examples/scripts/arith64.lua");

/// Installs [`BENCH_SCRIPT_SOURCE`] as [`BENCH_SCRIPT_NAME`].
pub async fn install_bench_script(client: &Client) -> Result<(), TargetError> {
    client
        .script_put(BENCH_SCRIPT_NAME, BENCH_SCRIPT_SOURCE.as_bytes().to_vec())
        .await
        .map(|_| ())
        .map_err(TargetError::InstallScript)
}

/// One connection to a Nacre cluster (one [`Client`]).
#[derive(Clone, Debug)]
pub struct NacreTarget {
    client: Client,
}

impl NacreTarget {
    pub fn new(client: Client) -> NacreTarget {
        NacreTarget { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `connections` separate clients (one connection each).
    pub async fn connect(
        opts: &ClientOptions,
        connections: usize,
    ) -> Result<Vec<NacreTarget>, TargetError> {
        let mut out = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let c = Client::connect(opts.clone())
                .await
                .map_err(|e| TargetError::Connect {
                    endpoint: opts.endpoints.join(","),
                    source: Box::new(e),
                })?;
            out.push(NacreTarget::new(c));
        }
        Ok(out)
    }
}

impl Target for NacreTarget {
    fn name(&self) -> &'static str {
        "nacre"
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<(), TargetError> {
        self.client
            .set(key, value)
            .await
            .map(|_| ())
            .map_err(TargetError::request)
    }

    async fn get(&self, key: Bytes, consistency: Consistency) -> Result<bool, TargetError> {
        let c = if self.client.consistency() == consistency {
            self.client.clone()
        } else {
            self.client.with_consistency(consistency)
        };
        c.get_option(key)
            .await
            .map(|v| v.is_some())
            .map_err(TargetError::request)
    }

    async fn call(&self, key: Bytes) -> Result<(), TargetError> {
        // Counters live apart from the keys other workloads write values
        // of other sizes into.
        let counter = Bytes::from([BENCH_COUNTER_PREFIX, &key[..]].concat());
        self.client
            .call(BENCH_SCRIPT_NAME, "incr", vec![counter], None)
            .await
            .map(|_| ())
            .map_err(TargetError::request)
    }

    async fn sequence(&self, pairs: Vec<(Bytes, Bytes)>) -> Result<(), TargetError> {
        let mut seq = Sequence::new();
        for (k, v) in pairs {
            seq.set(k, v);
        }
        self.client
            .sequence(seq)
            .await
            .map(|_| ())
            .map_err(TargetError::request)
    }
}
