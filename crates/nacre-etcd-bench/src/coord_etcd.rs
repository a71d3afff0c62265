//! etcd's side of the coordination workloads, over its v3 gRPC API as
//! etcd's Go client (clientv3 and its `concurrency` package) uses it:
//! watchers multiplexed on one Watch stream, leases kept alive on one
//! LeaseKeepAlive stream, and the lock recipe of `concurrency.Mutex`.

use std::sync::Arc;
use std::time::Duration;

use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
use nacre_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use nacre_etcd_proto::etcdserverpb::watch_client::WatchClient;
use nacre_etcd_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, watch_request, Compare, DeleteRangeRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use nacre_etcd_proto::mvccpb::event::EventType;
use nacre_loadgen::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use crate::coord::{bounded, key_seq, CoordTarget, Holder, Sent, Tally};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Two connections to one etcd member: `kv` for writes, leases and locks,
/// `watch` for the watchers, so that events and writes do not share one.
#[derive(Clone, Debug)]
pub struct EtcdCoord {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    /// Watch streams the watchers of one run are spread over.
    streams: usize,
}

async fn channel(endpoint: &str) -> Result<Channel, String> {
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("{uri}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("{uri}: {e}"))
}

impl EtcdCoord {
    pub async fn connect(endpoint: &str, streams: usize) -> Result<EtcdCoord, String> {
        let main = channel(endpoint).await?;
        let watches = channel(endpoint).await?;
        Ok(EtcdCoord {
            kv: KvClient::new(main.clone()),
            lease: LeaseClient::new(main),
            watch: WatchClient::new(watches),
            streams: streams.max(1),
        })
    }
}

fn status(s: tonic::Status) -> String {
    format!("etcd: {:?}: {}", s.code(), s.message())
}

/// The end of the range of keys that start with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    Bytes::from_static(b"\0")
}

fn create(key: Bytes, range_end: Bytes, start_revision: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                start_revision,
                ..WatchCreateRequest::default()
            },
        )),
    }
}

/// One Watch stream with these watches created on it; returns once etcd
/// confirmed every one. The sender keeps the stream open.
async fn watch_stream(
    client: &WatchClient<Channel>,
    creates: Vec<WatchRequest>,
) -> Result<
    (
        mpsc::UnboundedSender<WatchRequest>,
        Streaming<WatchResponse>,
    ),
    String,
> {
    let n = creates.len();
    let (tx, rx) = mpsc::unbounded_channel();
    for c in creates {
        tx.send(c)
            .map_err(|_| "the watch stream closed".to_string())?;
    }
    let mut stream = client
        .clone()
        .watch(UnboundedReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    let mut created = 0;
    while created < n {
        let r = stream
            .message()
            .await
            .map_err(status)?
            .ok_or("the watch stream ended before its watches started")?;
        if r.canceled {
            return Err(format!("etcd refused a watch: {}", r.cancel_reason));
        }
        created += usize::from(r.created);
    }
    Ok((tx, stream))
}

/// Splits `n` into `parts` near-equal counts (none empty).
fn split(n: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .filter(|&c| c > 0)
        .collect()
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

async fn receive(
    tx: mpsc::UnboundedSender<WatchRequest>,
    mut stream: Streaming<WatchResponse>,
    prefix: Bytes,
    sent: Arc<Sent>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::new();
    loop {
        let r = tokio::select! {
            _ = stop.changed() => break,
            r = stream.message() => r,
        };
        let Ok(Some(r)) = r else { break };
        for e in &r.events {
            let seq = e.kv.as_ref().and_then(|kv| key_seq(&prefix, &kv.key));
            tally.record(&sent, seq);
        }
    }
    drop(tx);
    tally
}

impl EtcdCoord {
    async fn grant(&self, ttl: Duration) -> Result<i64, String> {
        let r = self
            .lease
            .clone()
            .lease_grant(LeaseGrantRequest {
                ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1),
                id: 0,
            })
            .await
            .map_err(status)?
            .into_inner();
        if r.error.is_empty() {
            Ok(r.id)
        } else {
            Err(format!("etcd lease grant: {}", r.error))
        }
    }

    async fn range(&self, r: RangeRequest) -> Result<RangeResponse, String> {
        Ok(self.kv.clone().range(r).await.map_err(status)?.into_inner())
    }

    /// Waits for `key` to be deleted after revision `rev`.
    async fn wait_delete(&self, key: Bytes, rev: i64) -> Result<(), String> {
        let (tx, mut stream) =
            watch_stream(&self.watch, vec![create(key, Bytes::new(), rev + 1)]).await?;
        loop {
            let r = stream
                .message()
                .await
                .map_err(status)?
                .ok_or("the watch ended")?;
            if r.canceled {
                return Err(format!("etcd cancelled a watch: {}", r.cancel_reason));
            }
            if r.events
                .iter()
                .any(|e| e.r#type == EventType::Delete as i32)
            {
                drop(tx);
                return Ok(());
            }
        }
    }

    /// `concurrency.waitDeletes`: until no key of `prefix` is older than
    /// `max_rev`, wait for the newest older one (the predecessor) to go.
    async fn wait_deletes(&self, prefix: &Bytes, max_rev: i64) -> Result<(), String> {
        loop {
            let r = self
                .range(RangeRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(prefix),
                    limit: 1,
                    sort_order: range_request::SortOrder::Descend as i32,
                    sort_target: range_request::SortTarget::Create as i32,
                    max_create_revision: max_rev,
                    ..RangeRequest::default()
                })
                .await?;
            let Some(kv) = r.kvs.into_iter().next() else {
                return Ok(());
            };
            let rev = r.header.map_or(0, |h| h.revision);
            self.wait_delete(kv.key, rev).await?;
        }
    }
}

/// A held etcd lock: the key and its session lease.
pub struct EtcdLock {
    key: Bytes,
    lease: i64,
}

/// `concurrency.Mutex.tryAcquire`'s transaction: create the key with the
/// lease if it is not there, and read the lock's oldest key.
fn acquire_txn(prefix: &Bytes, key: &Bytes, lease: i64) -> TxnRequest {
    let first = RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: range_request::SortOrder::Ascend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        ..RangeRequest::default()
    };
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Bytes::new(),
        }],
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    lease,
                    ..PutRequest::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestRange(first.clone())),
            },
        ],
        failure: vec![
            RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestRange(first)),
            },
        ],
    }
}

impl EtcdCoord {
    async fn lock_with(&self, prefix: Bytes, lease: i64) -> Result<EtcdLock, String> {
        let key = Bytes::from(format!("{}{lease:x}", String::from_utf8_lossy(&prefix)));
        let r = self
            .kv
            .clone()
            .txn(acquire_txn(&prefix, &key, lease))
            .await
            .map_err(status)?
            .into_inner();
        if !r.succeeded {
            return Err("a fresh lease's lock key already exists".into());
        }
        let my_rev = r.header.map_or(0, |h| h.revision);
        let owner_rev = match r.responses.get(1).and_then(|o| o.response.as_ref()) {
            Some(response_op::Response::ResponseRange(rr)) => {
                rr.kvs.first().map_or(0, |kv| kv.create_revision)
            }
            _ => return Err("etcd's lock transaction answered no range".into()),
        };
        if owner_rev != my_rev {
            self.wait_deletes(&prefix, my_rev - 1).await?;
        }
        Ok(EtcdLock { key, lease })
    }
}

impl CoordTarget for EtcdCoord {
    type Guard = EtcdLock;

    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<(), String> {
        let r = PutRequest {
            key,
            value,
            ..PutRequest::default()
        };
        self.kv.clone().put(r).await.map(|_| ()).map_err(status)
    }

    async fn watchers(
        &self,
        prefix: Bytes,
        n: usize,
        sent: Arc<Sent>,
        stop: watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<Tally>>, String> {
        let end = prefix_end(&prefix);
        let mut tasks = Vec::new();
        for count in split(n, self.streams) {
            let creates = (0..count)
                .map(|_| create(prefix.clone(), end.clone(), 0))
                .collect();
            let (tx, stream) = watch_stream(&self.watch, creates).await?;
            let (prefix, sent, stop) = (prefix.clone(), sent.clone(), stop.clone());
            tasks.push(tokio::spawn(receive(tx, stream, prefix, sent, stop)));
        }
        Ok(tasks)
    }

    async fn idle_watchers(&self, prefix: Bytes, n: usize) -> Result<Holder, String> {
        let mut tasks = Vec::new();
        let mut i = 0;
        for count in split(n, self.streams) {
            let creates = (i..i + count)
                .map(|k| create(crate::coord::seq_key(&prefix, k as u64), Bytes::new(), 0))
                .collect();
            i += count;
            let (tx, mut stream) = watch_stream(&self.watch, creates).await?;
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(_)) = stream.message().await {}
                drop(tx);
            }));
        }
        Ok(Box::new(Tasks(tasks)))
    }

    async fn kept_leases(&self, n: usize, ttl: Duration) -> Result<(Holder, Vec<i64>), String> {
        let me = self.clone();
        let ids = bounded(vec![(); n], 64, move |()| {
            let me = me.clone();
            async move { me.grant(ttl).await }
        })
        .await?;
        // clientv3 keeps every lease of a client alive on one stream, each
        // a third of its time to live after its last renewal.
        let (tx, rx) = mpsc::unbounded_channel();
        let round = |tx: &mpsc::UnboundedSender<LeaseKeepAliveRequest>| {
            ids.iter()
                .all(|&id| tx.send(LeaseKeepAliveRequest { id }).is_ok())
        };
        round(&tx);
        let mut replies = self
            .lease
            .clone()
            .lease_keep_alive(UnboundedReceiverStream::new(rx))
            .await
            .map_err(status)?
            .into_inner();
        let reader =
            tokio::spawn(async move { while let Ok(Some(_)) = replies.message().await {} });
        let ids2 = ids.clone();
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !ids2
                    .iter()
                    .all(|&id| tx.send(LeaseKeepAliveRequest { id }).is_ok())
                {
                    return;
                }
            }
        });
        Ok((Box::new(Tasks(vec![reader, sender])), ids))
    }

    async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.lease
            .clone()
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await
            .map(|_| ())
            .map_err(status)
    }

    async fn lock(&self, name: &str, ttl: Duration) -> Result<EtcdLock, String> {
        let lease = self.grant(ttl).await?;
        match self.lock_with(Bytes::from(format!("{name}/")), lease).await {
            Ok(l) => Ok(l),
            Err(e) => {
                let _ = self.revoke(lease).await;
                Err(e)
            }
        }
    }

    async fn unlock(&self, guard: EtcdLock) -> Result<(), String> {
        let d = DeleteRangeRequest {
            key: guard.key,
            ..DeleteRangeRequest::default()
        };
        self.kv.clone().delete_range(d).await.map_err(status)?;
        self.revoke(guard.lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcd_s() {
        assert_eq!(&prefix_end(b"lock/")[..], b"lock0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff")[..], b"\0");
    }

    #[test]
    fn watchers_split_evenly_over_streams() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(1, 4), [1]);
        assert_eq!(split(1000, 1), [1000]);
    }
}
