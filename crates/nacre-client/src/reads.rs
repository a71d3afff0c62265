//! Status requests and reads: one typed call per request, each checking
//! that the reply fits it.

use nacre_proto::{Bytes, KeyEntry, RangeQuery, Request, Response, VersionInfo};

use crate::{not_found, unexpected, Client, ClientError};

impl Client {
    /// The server's ping reply (its name and version).
    pub async fn ping(&self) -> Result<String, ClientError> {
        match self.execute(Request::Ping).await? {
            Response::Text(s) => Ok(s),
            Response::Unit => Ok(String::new()),
            r => Err(unexpected("ping", r)),
        }
    }

    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        match self.execute(Request::Version).await? {
            Response::Version(v) => Ok(v),
            r => Err(unexpected("version", r)),
        }
    }

    /// The leader's client address, if the node knows one.
    pub async fn who_master(&self) -> Result<Option<String>, ClientError> {
        match self.execute(Request::WhoMaster).await? {
            Response::Master(m) => Ok(m),
            Response::Text(s) => Ok(Some(s)),
            r => Err(unexpected("who_master", r)),
        }
    }

    pub async fn statistics(&self) -> Result<Vec<(String, String)>, ClientError> {
        match self.execute(Request::Statistics).await? {
            Response::Stats(s) => Ok(s),
            r => Err(unexpected("statistics", r)),
        }
    }

    /// The last log index applied by the node that answers.
    pub async fn get_txid(&self) -> Result<u64, ClientError> {
        match self.execute(Request::GetTxid).await? {
            Response::U64(i) => Ok(i),
            r => Err(unexpected("get_txid", r)),
        }
    }

    // ---- reads ----

    /// The key's value; a missing key is a `NotFound` error (Arakoon).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let key = key.into();
        self.get_option(key.clone())
            .await?
            .ok_or_else(|| not_found(&key))
    }

    /// The key's value, `None` if it is missing.
    pub async fn get_option(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let req = Request::Get {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await {
            Ok(Response::Value(v)) => Ok(v),
            Err(e) if e.is_not_found() => Ok(None),
            Ok(r) => Err(unexpected("get", r)),
            Err(e) => Err(e),
        }
    }

    /// The key with its value and revisions, `None` if it is missing.
    pub async fn get_entry(&self, key: impl Into<Bytes>) -> Result<Option<KeyEntry>, ClientError> {
        let req = Request::GetEntry {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await {
            Ok(Response::Entry(e)) => Ok(e),
            Err(e) if e.is_not_found() => Ok(None),
            Ok(r) => Err(unexpected("get_entry", r)),
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        let req = Request::Exists {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await? {
            Response::Bool(b) => Ok(b),
            r => Err(unexpected("exists", r)),
        }
    }

    /// Values of all keys, in order; fails `NotFound` naming the first
    /// missing key.
    pub async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::MultiGet {
            consistency: self.consistency,
            keys: keys.clone(),
        };
        match self.execute(req).await? {
            Response::Values(v) => Ok(v),
            Response::OptValues(v) => v
                .into_iter()
                .zip(&keys)
                .map(|(v, k)| v.ok_or_else(|| not_found(k)))
                .collect(),
            r => Err(unexpected("multi_get", r)),
        }
    }

    /// Values of all keys, in order, `None` for missing ones.
    pub async fn multi_get_option(
        &self,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Option<Bytes>>, ClientError> {
        let req = Request::MultiGetOption {
            consistency: self.consistency,
            keys,
        };
        match self.execute(req).await? {
            Response::OptValues(v) => Ok(v),
            r => Err(unexpected("multi_get_option", r)),
        }
    }

    /// Keys from `first` to `last` (each bound optional, inclusive or
    /// not), at most `max` (the server clamps it to its limit).
    pub async fn range(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<Bytes>, ClientError> {
        self.range_query(RangeQuery {
            first,
            first_inclusive,
            last,
            last_inclusive,
            max,
            reverse: false,
        })
        .await
    }

    /// Keys of any [`RangeQuery`].
    pub async fn range_query(&self, query: RangeQuery) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::Range {
            consistency: self.consistency,
            query,
        };
        match self.execute(req).await? {
            Response::Keys(k) | Response::Values(k) => Ok(k),
            r => Err(unexpected("range", r)),
        }
    }

    /// Entries (key, value, revisions) from `first` to `last`, ascending.
    pub async fn range_entries(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        self.range_entries_query(RangeQuery {
            first,
            first_inclusive,
            last,
            last_inclusive,
            max,
            reverse: false,
        })
        .await
    }

    /// Entries in descending key order, as Arakoon's `rev_range_entries`:
    /// `first` is the high end where the scan starts, `last` the low end
    /// where it stops. (In a [`RangeQuery`] `first` is always the low end;
    /// this call swaps the bounds.)
    pub async fn rev_range_entries(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        self.range_entries_query(RangeQuery {
            first: last,
            first_inclusive: last_inclusive,
            last: first,
            last_inclusive: first_inclusive,
            max,
            reverse: true,
        })
        .await
    }

    /// Entries of any [`RangeQuery`].
    pub async fn range_entries_query(
        &self,
        query: RangeQuery,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let req = Request::RangeEntries {
            consistency: self.consistency,
            query,
        };
        match self.execute(req).await? {
            Response::Entries(e) => Ok(e),
            r => Err(unexpected("range_entries", r)),
        }
    }

    /// Keys starting with `prefix`, at most `max`.
    pub async fn prefix_keys(
        &self,
        prefix: impl Into<Bytes>,
        max: u32,
    ) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::PrefixKeys {
            consistency: self.consistency,
            prefix: prefix.into(),
            max,
        };
        match self.execute(req).await? {
            Response::Keys(k) | Response::Values(k) => Ok(k),
            r => Err(unexpected("prefix_keys", r)),
        }
    }

    pub async fn key_count(&self) -> Result<u64, ClientError> {
        let req = Request::KeyCount {
            consistency: self.consistency,
        };
        match self.execute(req).await? {
            Response::U64(n) => Ok(n),
            r => Err(unexpected("key_count", r)),
        }
    }
}
