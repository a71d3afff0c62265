//! A blocking wrapper for scripts and tests: the async client driven by a
//! runtime of its own.

use bytes::Bytes;
use nacre_proto::{
    Batch, Consistency, KeyEntry, RangeQuery, Request, Response, ScriptSource, ScriptSummary,
    ScriptVersionInfo, VersionInfo,
};
use tokio::runtime::Runtime;

use crate::{Called, Client, ClientError, ClientOptions, Written};

/// The [`Client`] API, blocking. Owns a current-thread tokio runtime; the
/// connection's tasks run only while a call blocks, which is all they need.
/// Must not be used from inside an async runtime.
pub struct BlockingClient {
    rt: Runtime,
    client: Client,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient")
            .field("client", &self.client)
            .finish()
    }
}

macro_rules! blocking {
    ($( $(#[$m:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        $(
            $(#[$m])*
            pub fn $name(&self $(, $arg: $ty)*) -> Result<$ret, ClientError> {
                self.rt.block_on(self.client.$name($($arg),*))
            }
        )*
    };
}

impl BlockingClient {
    pub fn connect(opts: ClientOptions) -> Result<BlockingClient, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(Client::connect(opts))?;
        Ok(BlockingClient { rt, client })
    }

    /// The async client underneath (usable on this wrapper's runtime only
    /// through the wrapper's methods).
    pub fn inner(&self) -> &Client {
        &self.client
    }

    /// Sets the consistency of reads from now on.
    pub fn set_consistency(&mut self, consistency: Consistency) {
        self.client = self.client.with_consistency(consistency);
    }

    blocking! {
        fn execute(&self, req: Request) -> Response;
        fn ping(&self) -> String;
        fn version(&self) -> VersionInfo;
        fn who_master(&self) -> Option<String>;
        fn statistics(&self) -> Vec<(String, String)>;
        fn get_txid(&self) -> u64;
        fn get(&self, key: impl Into<Bytes>) -> Bytes;
        fn get_option(&self, key: impl Into<Bytes>) -> Option<Bytes>;
        fn get_entry(&self, key: impl Into<Bytes>) -> Option<KeyEntry>;
        fn exists(&self, key: impl Into<Bytes>) -> bool;
        fn multi_get(&self, keys: Vec<Bytes>) -> Vec<Bytes>;
        fn multi_get_option(&self, keys: Vec<Bytes>) -> Vec<Option<Bytes>>;
        fn range(&self, first: Option<Bytes>, first_inclusive: bool, last: Option<Bytes>, last_inclusive: bool, max: u32) -> Vec<Bytes>;
        fn range_query(&self, query: RangeQuery) -> Vec<Bytes>;
        fn range_entries(&self, first: Option<Bytes>, first_inclusive: bool, last: Option<Bytes>, last_inclusive: bool, max: u32) -> Vec<KeyEntry>;
        fn rev_range_entries(&self, first: Option<Bytes>, first_inclusive: bool, last: Option<Bytes>, last_inclusive: bool, max: u32) -> Vec<KeyEntry>;
        fn range_entries_query(&self, query: RangeQuery) -> Vec<KeyEntry>;
        fn prefix_keys(&self, prefix: impl Into<Bytes>, max: u32) -> Vec<Bytes>;
        fn key_count(&self) -> u64;
        fn write(&self, req: Request) -> Written;
        fn set(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> u64;
        fn delete(&self, key: impl Into<Bytes>) -> u64;
        fn confirm(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> u64;
        fn test_and_set(&self, key: impl Into<Bytes>, expected: Option<Bytes>, wanted: Option<Bytes>) -> Option<Bytes>;
        fn replace(&self, key: impl Into<Bytes>, wanted: Option<Bytes>) -> Option<Bytes>;
        fn delete_prefix(&self, prefix: impl Into<Bytes>) -> u64;
        fn sequence(&self, seq: impl Into<Batch>) -> u64;
        fn batch(&self, batch: Batch) -> Written;
        fn nop(&self) -> u64;
        fn call(&self, script: &str, function: &str, args: Vec<Bytes>, version: Option<u64>) -> Called;
        fn script_put(&self, name: &str, source: impl Into<Bytes>) -> u64;
        fn script_list(&self) -> Vec<ScriptSummary>;
        fn script_show(&self, name: &str, version: Option<u64>) -> ScriptSource;
        fn script_history(&self, name: &str) -> Vec<ScriptVersionInfo>;
        fn script_rollback(&self, name: &str, version: u64) -> u64;
        fn script_delete(&self, name: &str) -> u64;
    }
}
