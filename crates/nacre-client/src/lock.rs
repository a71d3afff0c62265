//! Locks and elections, the recipes of etcd's concurrency package over
//! leases, watches and the `LockHeld` guard.
//!
//! A contender grants itself a lease, writes the key `NAME/<lease id in
//! hex>` attached to it (guarded absent), and holds the lock, or leads
//! the election, once no key under `NAME/` has a lower create revision:
//! it reads the keys under `NAME/` and watches the prefix from the
//! revision after its write until every older one is deleted (released,
//! or its lease expired). Its key's create revision is its fencing token:
//! writes guarded by `LockHeld { prefix: NAME/, token }` apply only while
//! that key is still the oldest, so a holder that paused past its lease
//! (and whose lock went to another) cannot write any more.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use nacre_proto::{Batch, Bytes, Consistency, EventKind, Guard, KeyEntry, KeySpan, Op, Request};
use tokio::sync::mpsc;

use crate::leases::{LeaseKeeper, LostLease};
use crate::wait::next_batch;
use crate::watch::WatchOptions;
use crate::{Client, ClientError, Written};

/// The prefix of a lock's or an election's keys: `NAME/`.
pub fn lock_prefix(name: &str) -> Bytes {
    if name.ends_with('/') {
        Bytes::from(name.to_string())
    } else {
        Bytes::from(format!("{name}/"))
    }
}

/// A contender's place in a lock's or an election's queue.
struct Held {
    client: Client,
    prefix: Bytes,
    key: Bytes,
    token: u64,
    lease: u64,
    keeper: LeaseKeeper,
    lost: mpsc::UnboundedReceiver<LostLease>,
    /// Released (or being released) by the holder itself.
    released: bool,
}

impl Drop for Held {
    /// Dropped without a release (a lock call cancelled while it waited,
    /// a guard dropped): the lease is revoked in the background, so the
    /// next contender need not wait for it to expire. Without a runtime
    /// it expires by itself.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, lease) = (self.client.clone(), self.lease);
            rt.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}

impl Held {
    /// Deletes the key and revokes the lease (either may be gone already).
    async fn release(mut self) -> Result<(), ClientError> {
        self.released = true;
        self.keeper.remove(self.lease);
        let batch = Batch {
            guards: vec![],
            ops: vec![Op::Remove(self.key.clone())],
        };
        self.client.batch(batch).await?;
        match self.client.lease_revoke(self.lease).await {
            Err(e) if e.is_lease_not_found() => Ok(()),
            r => r,
        }
    }

    /// Resolves once the lease is lost; the error says so.
    async fn lost(&mut self) -> ClientError {
        let _ = self.lost.recv().await;
        ClientError::LeaseLost { id: self.lease }
    }

    fn fence(&self, mut batch: Batch) -> Batch {
        batch.guards.push(Guard::LockHeld {
            prefix: self.prefix.clone(),
            token: self.token,
        });
        batch
    }
}

/// A held lock: `token` (the create revision of `key`) fences writes
/// ([`Client::fenced`], [`LockGuard::fence`]); `lease` is kept alive in
/// the background until [`LockGuard::unlock`]. Dropped without unlocking,
/// its lease is revoked in the background (or, without a runtime,
/// expires), which releases the lock.
pub struct LockGuard {
    pub token: u64,
    pub lease: u64,
    pub key: Bytes,
    held: Held,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("token", &self.token)
            .field("lease", &self.lease)
            .field("key", &self.key)
            .finish()
    }
}

impl LockGuard {
    /// Releases the lock: deletes the key and revokes the lease.
    pub async fn unlock(self) -> Result<(), ClientError> {
        self.held.release().await
    }

    /// Resolves once the lock's lease is lost (the lock may belong to
    /// another by then): a [`ClientError::LeaseLost`].
    pub async fn lost(&mut self) -> ClientError {
        self.held.lost().await
    }

    /// `batch` guarded by this lock's token.
    pub fn fence(&self, batch: Batch) -> Batch {
        self.held.fence(batch)
    }
}

/// Leadership won by [`Client::campaign`]; `key` holds the leader's
/// value. Dropped without resigning, its lease is revoked in the
/// background, as a [`LockGuard`]'s.
pub struct Leadership {
    pub token: u64,
    pub lease: u64,
    pub key: Bytes,
    held: Held,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("token", &self.token)
            .field("key", &self.key)
            .finish()
    }
}

impl Leadership {
    /// Publishes a new value as the leader, only while still the leader
    /// (else `Fenced`). Returns the log index.
    pub async fn proclaim(&self, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        let batch = self.held.fence(Batch {
            guards: vec![],
            ops: vec![Op::SetLeased {
                key: self.key.clone(),
                value: value.into(),
                lease: self.lease,
            }],
        });
        Ok(self.held.client.batch(batch).await?.index)
    }

    /// Steps down: deletes the key and revokes the lease.
    pub async fn resign(self) -> Result<(), ClientError> {
        self.held.release().await
    }

    /// Resolves once the leadership's lease is lost.
    pub async fn lost(&mut self) -> ClientError {
        self.held.lost().await
    }

    /// `batch` guarded by this leadership's token.
    pub fn fence(&self, batch: Batch) -> Batch {
        self.held.fence(batch)
    }
}

impl Client {
    /// Takes the lock `name`, waiting as long as it takes for the holders
    /// before this one (wrap it in a timeout to bound that). The lock
    /// lives as long as a lease of `ttl` kept alive in the background.
    pub async fn lock(&self, name: &str, ttl: Duration) -> Result<LockGuard, ClientError> {
        let held = self.queue_up(name, Bytes::new(), ttl).await?;
        Ok(LockGuard {
            token: held.token,
            lease: held.lease,
            key: held.key.clone(),
            held,
        })
    }

    /// Applies `batch` only while the lock (or leadership) `name` is held
    /// with `token`; otherwise it fails with `Fenced`.
    pub async fn fenced(
        &self,
        mut batch: Batch,
        name: &str,
        token: u64,
    ) -> Result<Written, ClientError> {
        batch.guards.push(Guard::LockHeld {
            prefix: lock_prefix(name),
            token,
        });
        self.write(Request::Batch(batch)).await
    }

    /// Campaigns in the election `name` with `proposal` as the value, and
    /// returns once elected (the oldest candidate leads).
    pub async fn campaign(
        &self,
        name: &str,
        proposal: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<Leadership, ClientError> {
        let held = self.queue_up(name, proposal.into(), ttl).await?;
        Ok(Leadership {
            token: held.token,
            lease: held.lease,
            key: held.key.clone(),
            held,
        })
    }

    /// The election's leader now: its key, value and revisions.
    pub async fn leader(&self, name: &str) -> Result<Option<KeyEntry>, ClientError> {
        self.leader_at(&lock_prefix(name), self.consistency).await
    }

    async fn leader_at(
        &self,
        prefix: &Bytes,
        c: Consistency,
    ) -> Result<Option<KeyEntry>, ClientError> {
        let span = KeySpan::Prefix(prefix.clone());
        let all = self.read_span(&span, c, u32::MAX).await?;
        Ok(all.into_iter().min_by_key(|e| e.rev.create_rev))
    }

    /// The election's leaders, one item each time the leader or its value
    /// changes (the current one first, if any).
    pub fn observe(&self, name: &str) -> LeaderStream {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(observe_loop(self.clone(), lock_prefix(name), tx));
        LeaderStream { rx }
    }

    /// Joins the queue of `name` and waits for its turn; on failure the
    /// lease (and with it the key) is revoked.
    async fn queue_up(&self, name: &str, value: Bytes, ttl: Duration) -> Result<Held, ClientError> {
        let lease = self.lease_grant(ttl).await?.id;
        let keeper = self.lease_keeper();
        keeper.add(lease, ttl);
        let lost = keeper.lost().expect("a new keeper's receiver");
        let prefix = lock_prefix(name);
        let mut key = prefix.to_vec();
        key.extend_from_slice(format!("{lease:016x}").as_bytes());
        let key = Bytes::from(key);
        let batch = Batch {
            guards: vec![Guard::Absent(key.clone())],
            ops: vec![Op::SetLeased {
                key: key.clone(),
                value,
                lease,
            }],
        };
        let written = match self.batch(batch).await {
            Ok(w) => w,
            Err(e) => {
                let _ = self.lease_revoke(lease).await;
                return Err(e);
            }
        };
        let mut held = Held {
            client: self.clone(),
            prefix,
            key,
            token: written.index,
            lease,
            keeper,
            lost,
            released: false,
        };
        match self.wait_turn(&mut held).await {
            Ok(()) => Ok(held),
            Err(e) => {
                held.released = true;
                let _ = self.lease_revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Waits until no key under the prefix is older than `held`'s.
    async fn wait_turn(&self, held: &mut Held) -> Result<(), ClientError> {
        let span = KeySpan::Prefix(held.prefix.clone());
        // Every key older than ours that the read finds is deleted after
        // the read, hence after our write: a watch from the revision after
        // our write sees it go.
        let mut from = held.token + 1;
        loop {
            let all = self
                .read_span(&span, Consistency::Consistent, u32::MAX)
                .await?;
            if !all.iter().any(|e| e.key == held.key) {
                return Err(ClientError::LeaseLost { id: held.lease });
            }
            let mut older: HashSet<Bytes> = all
                .into_iter()
                .filter(|e| e.rev.create_rev < held.token)
                .map(|e| e.key)
                .collect();
            if older.is_empty() {
                return Ok(());
            }
            let opts = WatchOptions {
                start_rev: from,
                ..WatchOptions::default()
            };
            let mut w = self.watch(span.clone(), opts);
            loop {
                let batch = tokio::select! {
                    b = next_batch(&mut w) => b,
                    e = held.lost() => return Err(e),
                };
                let batch = match batch {
                    Ok(b) => b,
                    // The revisions after ours are gone: read again, and
                    // watch from the oldest kept (before that read).
                    Err(ClientError::Compacted { oldest_rev, .. }) => {
                        from = oldest_rev;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                for e in batch.events.iter().filter(|e| e.kind == EventKind::Delete) {
                    if e.key == held.key {
                        return Err(ClientError::LeaseLost { id: held.lease });
                    }
                    older.remove(&e.key);
                }
                if older.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// The leaders of an election; see [`Client::observe`].
#[derive(Debug)]
pub struct LeaderStream {
    rx: mpsc::Receiver<Result<KeyEntry, ClientError>>,
}

impl LeaderStream {
    /// The next leader (or new value); an error ends the stream.
    pub async fn next(&mut self) -> Option<Result<KeyEntry, ClientError>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for LeaderStream {
    type Item = Result<KeyEntry, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Watches the election's prefix and, after every change, reads who
/// leads; reports each leader (or value) that differs from the last.
async fn observe_loop(
    client: Client,
    prefix: Bytes,
    out: mpsc::Sender<Result<KeyEntry, ClientError>>,
) {
    let opts = WatchOptions {
        progress: true,
        ..WatchOptions::default()
    };
    let mut w = client.watch(KeySpan::Prefix(prefix.clone()), opts);
    // The first batch says the watch started: a change after the first
    // read below cannot be missed.
    if let Err(e) = next_batch(&mut w).await {
        let _ = out.send(Err(e)).await;
        return;
    }
    let mut last: Option<KeyEntry> = None;
    let mut check = true;
    loop {
        if check {
            match client.leader_at(&prefix, Consistency::Consistent).await {
                Ok(Some(l)) if last.as_ref() != Some(&l) => {
                    last = Some(l.clone());
                    if out.send(Ok(l)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
        }
        let batch = tokio::select! {
            b = next_batch(&mut w) => b,
            () = out.closed() => return,
        };
        match batch {
            Ok(b) => check = !b.events.is_empty(),
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        }
    }
}
