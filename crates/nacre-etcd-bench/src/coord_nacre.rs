//! Nacre's side of the coordination workloads, through nacre-client's own
//! coordination API: `Client::watch` streams, a `LeaseKeeper` for the
//! kept-alive leases, and `Client::lock` / `LockGuard::unlock`.

use std::sync::Arc;
use std::time::Duration;

use nacre_client::{Client, ClientOptions, KeySpan, LockGuard, WatchOptions, WatchStream};
use nacre_loadgen::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coord::{bounded, key_seq, seq_key, CoordTarget, Holder, Sent, Tally};

/// The server's default `watches_per_connection_max`: a run with more
/// watchers opens another connection for each this many.
const WATCHES_PER_CONNECTION_MAX: usize = 1000;

/// Two clients of one Nacre node, as etcd's side has two connections:
/// `main` for writes, leases and locks, `watches` for the watchers.
#[derive(Clone, Debug)]
pub struct NacreCoord {
    opts: ClientOptions,
    main: Client,
    watches: Client,
}

impl NacreCoord {
    pub async fn connect(endpoint: &str) -> Result<NacreCoord, String> {
        let opts = ClientOptions::new([endpoint.to_string()]);
        let c = |e: nacre_client::ClientError| format!("nacre {endpoint}: {e}");
        Ok(NacreCoord {
            main: Client::connect(opts.clone()).await.map_err(c)?,
            watches: Client::connect(opts.clone()).await.map_err(c)?,
            opts,
        })
    }

    /// Clients for `n` watches: `watches`, and another connection for
    /// every `WATCHES_PER_CONNECTION_MAX` past the first.
    async fn watch_clients(&self, n: usize) -> Result<Vec<Client>, String> {
        let mut out = vec![self.watches.clone()];
        while out.len() * WATCHES_PER_CONNECTION_MAX < n {
            let c = Client::connect(self.opts.clone()).await;
            out.push(c.map_err(|e| format!("nacre: {e}"))?);
        }
        Ok(out)
    }
}

/// A watch of `span` that has started (its first, empty batch came).
async fn started(client: &Client, span: KeySpan) -> Result<WatchStream, String> {
    let opts = WatchOptions {
        progress: true,
        ..WatchOptions::default()
    };
    let mut w = client.watch(span, opts);
    match w.next().await {
        Some(Ok(_)) => Ok(w),
        Some(Err(e)) => Err(format!("nacre watch: {e}")),
        None => Err("nacre watch ended before it started".into()),
    }
}

async fn receive(
    mut w: WatchStream,
    prefix: Bytes,
    sent: Arc<Sent>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::new();
    loop {
        let b = tokio::select! {
            _ = stop.changed() => break,
            b = w.next() => b,
        };
        let Some(Ok(b)) = b else { break };
        for e in &b.events {
            tally.record(&sent, key_seq(&prefix, &e.key));
        }
    }
    tally
}

/// Aborts its tasks when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn err(e: nacre_client::ClientError) -> String {
    format!("nacre: {e}")
}

impl CoordTarget for NacreCoord {
    type Guard = LockGuard;

    fn name(&self) -> &'static str {
        "nacre"
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<(), String> {
        self.main.set(key, value).await.map(|_| ()).map_err(err)
    }

    async fn watchers(
        &self,
        prefix: Bytes,
        n: usize,
        sent: Arc<Sent>,
        stop: watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<Tally>>, String> {
        let clients = self.watch_clients(n).await?;
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let client = &clients[i / WATCHES_PER_CONNECTION_MAX];
            let w = started(client, KeySpan::Prefix(prefix.clone())).await?;
            let (prefix, sent, stop) = (prefix.clone(), sent.clone(), stop.clone());
            tasks.push(tokio::spawn(receive(w, prefix, sent, stop)));
        }
        Ok(tasks)
    }

    async fn idle_watchers(&self, prefix: Bytes, n: usize) -> Result<Holder, String> {
        let clients = self.watch_clients(n).await?;
        let streams = bounded((0..n).collect(), 64, move |i| {
            let client = clients[i / WATCHES_PER_CONNECTION_MAX].clone();
            let key = seq_key(&prefix, i as u64);
            async move { started(&client, KeySpan::Key(key)).await }
        })
        .await?;
        // Each stream drained (progress notifications) so that none backs up.
        let tasks = streams
            .into_iter()
            .map(|mut w| tokio::spawn(async move { while let Some(Ok(_)) = w.next().await {} }))
            .collect();
        Ok(Box::new(Tasks(tasks)))
    }

    async fn kept_leases(&self, n: usize, ttl: Duration) -> Result<(Holder, Vec<i64>), String> {
        let main = self.main.clone();
        let ids = bounded(vec![(); n], 64, move |()| {
            let main = main.clone();
            async move { main.lease_grant(ttl).await.map(|l| l.id).map_err(err) }
        })
        .await?;
        // One keeper renews them all, one request per round.
        let keeper = self.main.lease_keeper();
        for &id in &ids {
            keeper.add(id, ttl);
        }
        let ids = ids.into_iter().map(|id| id as i64).collect();
        Ok((Box::new(keeper), ids))
    }

    async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.main.lease_revoke(lease as u64).await.map_err(err)
    }

    async fn lock(&self, name: &str, ttl: Duration) -> Result<LockGuard, String> {
        self.main.lock(name, ttl).await.map_err(err)
    }

    async fn unlock(&self, guard: LockGuard) -> Result<(), String> {
        guard.unlock().await.map_err(err)
    }
}
