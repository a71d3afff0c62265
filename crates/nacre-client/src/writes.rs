//! Writes: one typed call per write request, each returning what the
//! write reports (its log index, a previous value, a count).

use nacre_proto::{Batch, Bytes, Request, Response};

use crate::{unexpected, Client, ClientError, Written};

impl Client {
    /// Sends a write and returns what it reports.
    pub async fn write(&self, req: Request) -> Result<Written, ClientError> {
        let name = write_name(&req);
        match self.execute(req).await? {
            Response::Written { index, prev, count } => Ok(Written { index, prev, count }),
            // Tolerated for writes that report nothing.
            Response::Unit => Ok(Written::default()),
            r => Err(unexpected(name, r)),
        }
    }

    /// Sets the key; returns the log index of the write.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let req = Request::Set {
            key: key.into(),
            value: value.into(),
        };
        Ok(self.write(req).await?.index)
    }

    /// Deletes the key (`NotFound` if missing); returns the log index.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<u64, ClientError> {
        Ok(self.write(Request::Delete { key: key.into() }).await?.index)
    }

    /// Sets the key unless it already holds this value (then nothing is
    /// written); returns the log index.
    pub async fn confirm(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let req = Request::Confirm {
            key: key.into(),
            value: value.into(),
        };
        Ok(self.write(req).await?.index)
    }

    /// If the key holds `expected` (`None`: is absent), sets it to `wanted`
    /// (`None`: deletes it). Returns the value found before: as in Arakoon
    /// a mismatch is not an error, nothing is written and the caller sees
    /// that the returned value differs from `expected`.
    pub async fn test_and_set(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        wanted: Option<Bytes>,
    ) -> Result<Option<Bytes>, ClientError> {
        let req = Request::TestAndSet {
            key: key.into(),
            expected,
            wanted,
        };
        Ok(self.write(req).await?.prev)
    }

    /// Sets the key to `wanted` (`None`: deletes it); returns the previous
    /// value.
    pub async fn replace(
        &self,
        key: impl Into<Bytes>,
        wanted: Option<Bytes>,
    ) -> Result<Option<Bytes>, ClientError> {
        let req = Request::Replace {
            key: key.into(),
            wanted,
        };
        Ok(self.write(req).await?.prev)
    }

    /// Deletes every key with this prefix; returns how many.
    pub async fn delete_prefix(&self, prefix: impl Into<Bytes>) -> Result<u64, ClientError> {
        let req = Request::DeletePrefix {
            prefix: prefix.into(),
        };
        Ok(self.write(req).await?.count)
    }

    /// Applies a sequence (or any batch) atomically; returns the log index.
    pub async fn sequence(&self, seq: impl Into<Batch>) -> Result<u64, ClientError> {
        Ok(self.batch(seq.into()).await?.index)
    }

    /// Applies a guarded batch atomically.
    pub async fn batch(&self, batch: Batch) -> Result<Written, ClientError> {
        self.write(Request::Batch(batch)).await
    }

    /// An empty write through the log (Arakoon's `nop`): once it returns,
    /// everything before it is committed. Returns its log index.
    pub async fn nop(&self) -> Result<u64, ClientError> {
        Ok(self.write(Request::Nop).await?.index)
    }
}

fn write_name(req: &Request) -> &'static str {
    match req {
        Request::Set { .. } => "set",
        Request::Delete { .. } => "delete",
        Request::Confirm { .. } => "confirm",
        Request::TestAndSet { .. } => "test_and_set",
        Request::Replace { .. } => "replace",
        Request::DeletePrefix { .. } => "delete_prefix",
        Request::Batch(_) => "sequence",
        Request::Nop => "nop",
        Request::ScriptPut { .. } => "script_put",
        Request::ScriptRollback { .. } => "script_rollback",
        Request::ScriptDelete { .. } => "script_delete",
        _ => "request",
    }
}
