//! Reads that wait for a change or for a key, built on watches: nothing
//! polls, and a read that waits costs the cluster one watch.

use std::time::Duration;

use nacre_proto::{Bytes, Consistency, EventKind, KeyEntry, KeySpan, RangeQuery};

use crate::watch::{WatchOptions, WatchStream};
use crate::{Client, ClientError, WatchBatch};

/// What a waiting read waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// A change of the key (or span) at a revision after this one: pass
    /// the `mod_rev` last seen to wait for the next change. A change that
    /// happened already returns at once.
    Revision(u64),
    /// The key exists (for a span: any key of it does).
    KeyExists,
}

impl Client {
    /// Waits for `wait` on `key`, then reads it at `consistency` (never
    /// older than the change waited for): the entry, `None` if a change
    /// waited for deleted it. Fails with [`ClientError::WaitTimedOut`]
    /// after `timeout`, and with [`ClientError::Compacted`] when the
    /// changes after the revision waited from are no longer kept.
    pub async fn get_wait(
        &self,
        key: impl Into<Bytes>,
        wait: WaitFor,
        timeout: Duration,
        consistency: Consistency,
    ) -> Result<Option<KeyEntry>, ClientError> {
        let span = KeySpan::Key(key.into());
        Ok(self
            .span_wait(span, wait, timeout, consistency, 1)
            .await?
            .into_iter()
            .next())
    }

    /// [`Client::get_wait`] for a prefix or a range: waits for a change
    /// of any key of `span` after a revision, or for any key of it to
    /// exist, then reads the span's entries (at most `max`).
    pub async fn span_wait(
        &self,
        span: KeySpan,
        wait: WaitFor,
        timeout: Duration,
        consistency: Consistency,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let inner = async {
            match wait {
                WaitFor::Revision(r) => self.wait_change(&span, r, consistency, max).await,
                WaitFor::KeyExists => self.wait_exists(&span, consistency, max).await,
            }
        };
        tokio::time::timeout(timeout, inner)
            .await
            .unwrap_or(Err(ClientError::WaitTimedOut {
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }))
    }

    /// A watch from `after + 1` reports the first change after `after`,
    /// whether it happened already or not.
    async fn wait_change(
        &self,
        span: &KeySpan,
        after: u64,
        consistency: Consistency,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let opts = WatchOptions {
            start_rev: after.saturating_add(1),
            ..WatchOptions::default()
        };
        let mut w = self.watch(span.clone(), opts);
        let batch = next_batch(&mut w).await?;
        drop(w);
        self.read_span(span, at_least(consistency, batch.revision), max)
            .await
    }

    /// Starts a watch, then reads: a key present in the read is returned;
    /// otherwise every put the watch reports (it started before the read,
    /// so none is missed) brings another read.
    async fn wait_exists(
        &self,
        span: &KeySpan,
        consistency: Consistency,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let opts = WatchOptions {
            progress: true,
            ..WatchOptions::default()
        };
        let mut w = self.watch(span.clone(), opts);
        // The first batch says the watch started, and at which revision.
        let mut rev = next_batch(&mut w).await?.revision;
        loop {
            let found = self
                .read_span(span, at_least(consistency, rev), max)
                .await?;
            if !found.is_empty() {
                return Ok(found);
            }
            loop {
                let b = next_batch(&mut w).await?;
                if b.events.iter().any(|e| e.kind == EventKind::Put) {
                    rev = b.revision;
                    break;
                }
            }
        }
    }

    /// The entries of a span (at most `max`) at `consistency`.
    pub(crate) async fn read_span(
        &self,
        span: &KeySpan,
        consistency: Consistency,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let c = self.with_consistency(consistency);
        let query = match span {
            KeySpan::Key(k) => return Ok(c.get_entry(k.clone()).await?.into_iter().collect()),
            KeySpan::Prefix(p) => RangeQuery::prefix(p.clone(), max),
            KeySpan::Range { start, end } => RangeQuery {
                first: Some(start.clone()),
                first_inclusive: true,
                last: end.clone(),
                last_inclusive: false,
                max,
                reverse: false,
            },
        };
        c.range_entries_query(query).await
    }
}

/// A read at `c` that sees at least revision `rev`: a consistent read
/// does; a read of any node must have applied it.
pub(crate) fn at_least(c: Consistency, rev: u64) -> Consistency {
    match c {
        Consistency::Consistent => Consistency::Consistent,
        Consistency::Any => Consistency::AtLeast(rev),
        Consistency::AtLeast(n) => Consistency::AtLeast(n.max(rev)),
    }
}

/// The next batch of a watch; its end is an error.
pub(crate) async fn next_batch(w: &mut WatchStream) -> Result<WatchBatch, ClientError> {
    match w.next().await {
        Some(r) => r,
        None => Err(ClientError::WatchEnded {
            code: nacre_proto::ErrorCode::Cancelled,
            message: "the watch ended".into(),
        }),
    }
}
