//! The etcd target: nacre-loadgen's operations as etcd v3 KV calls, over
//! the tonic client generated in nacre-etcd-proto.
//!
//! | loadgen      | etcd v3                                             |
//! |--------------|-----------------------------------------------------|
//! | `put`        | `KV.Put`                                            |
//! | `get`        | `KV.Range` of one key; `serializable` unless the read is `consistent` |
//! | `sequence`   | `KV.Txn` with no compare and one put per pair       |

use std::future::Future;
use std::time::Duration;

use nacre_etcd_proto::etcdserverpb::kv_client::KvClient;
use nacre_etcd_proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use nacre_loadgen::{Bytes, Consistency, Target, TargetError};
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt may take before the run gives up on the
/// endpoint, rather than hanging on an address nobody answers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection (one HTTP/2 connection) to an etcd member. Clones share
/// it, as the loadgen's clients share their connection.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    kv: KvClient<Channel>,
    /// The system's name in reports: "etcd", or "nacre-etcd" for Nacre
    /// through its etcd API.
    name: &'static str,
}

impl EtcdTarget {
    /// Opens `n` connections (at least one), connection `i` to endpoint
    /// `i mod endpoints.len()`. An endpoint without a scheme gets `http://`,
    /// as etcdctl's `--endpoints` takes them.
    pub async fn connect(endpoints: &[String], n: usize) -> Result<Vec<EtcdTarget>, TargetError> {
        if endpoints.is_empty() {
            return Err(TargetError::NoEndpoints);
        }
        let mut out = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let uri = endpoint_uri(&endpoints[i % endpoints.len()]);
            let cannot = |e: tonic::transport::Error| TargetError::Connect {
                endpoint: uri.clone(),
                source: Box::new(e),
            };
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(cannot)?
                .connect_timeout(CONNECT_TIMEOUT)
                // Requests are small and latency is what is measured: do
                // not let Nagle hold a request back for a delayed ACK.
                .tcp_nodelay(true);
            let channel = endpoint.connect().await.map_err(cannot)?;
            out.push(EtcdTarget {
                kv: KvClient::new(channel),
                name: "etcd",
            });
        }
        Ok(out)
    }

    /// These connections, reported under `name`.
    pub fn named(targets: Vec<EtcdTarget>, name: &'static str) -> Vec<EtcdTarget> {
        targets
            .into_iter()
            .map(|t| EtcdTarget { name, ..t })
            .collect()
    }
}

fn endpoint_uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

pub fn put_request(key: Bytes, value: Bytes) -> PutRequest {
    PutRequest {
        key,
        value,
        ..PutRequest::default()
    }
}

/// etcd has two read levels: linearizable (its default) and serializable
/// (member-local, possibly stale). Nacre's `any` is the latter; its
/// `at-least:N` has no etcd counterpart and maps to serializable, the
/// closest.
pub fn get_request(key: Bytes, consistency: Consistency) -> RangeRequest {
    RangeRequest {
        key,
        serializable: !matches!(consistency, Consistency::Consistent),
        ..RangeRequest::default()
    }
}

/// All the pairs in one transaction that always commits: no compare, so
/// the `success` branch runs.
pub fn sequence_request(pairs: Vec<(Bytes, Bytes)>) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: pairs
            .into_iter()
            .map(|(k, v)| RequestOp {
                request: Some(request_op::Request::RequestPut(put_request(k, v))),
            })
            .collect(),
        failure: Vec::new(),
    }
}

impl Target for EtcdTarget {
    fn name(&self) -> &'static str {
        self.name
    }

    fn put(
        &self,
        key: Bytes,
        value: Bytes,
    ) -> impl Future<Output = Result<(), TargetError>> + Send {
        let mut kv = self.kv.clone();
        async move {
            kv.put(put_request(key, value))
                .await
                .map(|_| ())
                .map_err(status_error)
        }
    }

    fn get(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> impl Future<Output = Result<bool, TargetError>> + Send {
        let mut kv = self.kv.clone();
        async move {
            kv.range(get_request(key, consistency))
                .await
                .map(|r| !r.into_inner().kvs.is_empty())
                .map_err(status_error)
        }
    }

    fn sequence(
        &self,
        pairs: Vec<(Bytes, Bytes)>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send {
        let mut kv = self.kv.clone();
        async move {
            let r = kv
                .txn(sequence_request(pairs))
                .await
                .map_err(status_error)?;
            // Without a compare the success branch always runs; a false
            // here means the server is not the etcd this code assumes.
            if r.into_inner().succeeded {
                Ok(())
            } else {
                Err(TargetError::Unexpected(
                    "etcd ran the failure branch of a transaction with no compare",
                ))
            }
        }
    }
}

/// A failed etcd call, kept whole. Shown as its code and message: etcd
/// puts its reason ("etcdserver: too many operations in txn request", ...)
/// in the message, which the code alone would hide, and tonic's own
/// rendering adds details and metadata a report does not need.
#[derive(Debug)]
struct EtcdStatus(tonic::Status);

impl std::fmt::Display for EtcdStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for EtcdStatus {}

fn status_error(s: tonic::Status) -> TargetError {
    TargetError::request(EtcdStatus(s))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use nacre_etcd_proto::etcdserverpb::kv_server::{Kv, KvServer};
    use nacre_etcd_proto::etcdserverpb::{
        CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
        PutResponse, RangeResponse, TxnResponse,
    };
    use nacre_etcd_proto::mvccpb::KeyValue;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::Server;
    use tonic::{Request, Response, Status};

    use super::*;

    /// What the fake etcd saw, for the tests to check.
    #[derive(Default)]
    struct Seen {
        pairs: BTreeMap<Bytes, Bytes>,
        serializable_reads: u64,
        linearizable_reads: u64,
        txns: u64,
    }

    /// An in-memory etcd KV service: enough of its behaviour (puts, point
    /// ranges, transactions without compares, etcd's refusal of a key
    /// written twice in one transaction) to run the target against.
    #[derive(Clone, Default)]
    struct FakeEtcd {
        seen: Arc<Mutex<Seen>>,
    }

    #[tonic::async_trait]
    impl Kv for FakeEtcd {
        async fn range(
            &self,
            request: Request<RangeRequest>,
        ) -> Result<Response<RangeResponse>, Status> {
            let r = request.into_inner();
            if !r.range_end.is_empty() {
                return Err(Status::unimplemented("the fake serves point reads only"));
            }
            let mut seen = self.seen.lock().unwrap();
            if r.serializable {
                seen.serializable_reads += 1;
            } else {
                seen.linearizable_reads += 1;
            }
            let kvs = seen
                .pairs
                .get(&r.key)
                .map(|v| KeyValue {
                    key: r.key.clone(),
                    value: v.clone(),
                    ..KeyValue::default()
                })
                .into_iter()
                .collect();
            Ok(Response::new(RangeResponse {
                kvs,
                ..RangeResponse::default()
            }))
        }

        async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            let r = request.into_inner();
            self.seen.lock().unwrap().pairs.insert(r.key, r.value);
            Ok(Response::new(PutResponse::default()))
        }

        async fn delete_range(
            &self,
            _: Request<DeleteRangeRequest>,
        ) -> Result<Response<DeleteRangeResponse>, Status> {
            Err(Status::unimplemented("not used by the target"))
        }

        async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            let r = request.into_inner();
            if !r.compare.is_empty() {
                return Err(Status::unimplemented("the fake runs no compares"));
            }
            let mut puts = BTreeMap::new();
            for op in r.success {
                match op.request {
                    Some(request_op::Request::RequestPut(p)) => {
                        if puts.insert(p.key, p.value).is_some() {
                            return Err(Status::invalid_argument(
                                "etcdserver: duplicate key given in txn request",
                            ));
                        }
                    }
                    _ => return Err(Status::unimplemented("the fake runs puts only")),
                }
            }
            let mut seen = self.seen.lock().unwrap();
            seen.txns += 1;
            seen.pairs.extend(puts);
            Ok(Response::new(TxnResponse {
                succeeded: true,
                ..TxnResponse::default()
            }))
        }

        async fn compact(
            &self,
            _: Request<CompactionRequest>,
        ) -> Result<Response<CompactionResponse>, Status> {
            Err(Status::unimplemented("not used by the target"))
        }
    }

    /// Serves `fake` on a loopback port; returns the endpoint.
    async fn serve(fake: FakeEtcd) -> String {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(KvServer::new(fake))
                .serve_with_incoming(incoming),
        );
        addr.to_string()
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn endpoints_without_a_scheme_get_http() {
        assert_eq!(endpoint_uri("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_uri("https://e:2379"), "https://e:2379");
    }

    #[test]
    fn only_consistent_reads_are_linearizable() {
        assert!(!get_request(b("k"), Consistency::Consistent).serializable);
        assert!(get_request(b("k"), Consistency::Any).serializable);
        assert!(get_request(b("k"), Consistency::AtLeast(7)).serializable);
        let r = get_request(b("k"), Consistency::Any);
        assert_eq!(r.key, b("k"));
        assert!(r.range_end.is_empty(), "a point read, not a range");
    }

    #[test]
    fn a_sequence_is_one_unconditional_transaction_of_puts() {
        let t = sequence_request(vec![(b("a"), b("1")), (b("b"), b("2"))]);
        assert!(t.compare.is_empty() && t.failure.is_empty());
        let puts: Vec<(Bytes, Bytes)> = t
            .success
            .into_iter()
            .map(|op| match op.request {
                Some(request_op::Request::RequestPut(p)) => (p.key, p.value),
                other => panic!("not a put: {other:?}"),
            })
            .collect();
        assert_eq!(puts, vec![(b("a"), b("1")), (b("b"), b("2"))]);
    }

    #[tokio::test]
    async fn puts_reads_and_sequences_reach_the_server() {
        let fake = FakeEtcd::default();
        let ep = serve(fake.clone()).await;
        let targets = EtcdTarget::connect(std::slice::from_ref(&ep), 2)
            .await
            .unwrap();
        assert_eq!(targets.len(), 2);
        let t = &targets[1];

        t.put(b("k1"), b("v1")).await.unwrap();
        assert!(t.get(b("k1"), Consistency::Consistent).await.unwrap());
        assert!(!t.get(b("nope"), Consistency::Any).await.unwrap());
        t.sequence(vec![(b("s1"), b("x")), (b("s2"), b("y"))])
            .await
            .unwrap();
        // The server's refusal comes back as the operation's error, with
        // etcd's reason in it.
        let e = t
            .sequence(vec![(b("d"), b("1")), (b("d"), b("2"))])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("duplicate key"), "{e}");

        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.pairs.get(&b("k1")), Some(&b("v1")));
        assert_eq!(seen.pairs.get(&b("s2")), Some(&b("y")));
        assert!(!seen.pairs.contains_key(&b("d")));
        assert_eq!((seen.linearizable_reads, seen.serializable_reads), (1, 1));
        assert_eq!(seen.txns, 1);
    }

    /// The whole path the comparison takes: preload, then a short timed run
    /// of each workload kind through nacre-loadgen's driver.
    #[tokio::test]
    async fn the_loadgen_drives_the_target_end_to_end() {
        let fake = FakeEtcd::default();
        let ep = serve(fake.clone()).await;
        let targets = EtcdTarget::connect(&[ep], 2).await.unwrap();
        let base = nacre_loadgen::Workload {
            keys: 200,
            value_size: 32,
            ..nacre_loadgen::Workload::default()
        };
        nacre_loadgen::preload(&targets, &base, 8, nacre_loadgen::Progress::Hidden)
            .await
            .unwrap();
        assert_eq!(fake.seen.lock().unwrap().pairs.len(), 200);
        let opts = nacre_loadgen::RunOptions {
            clients: 4,
            stop: nacre_loadgen::Stop::Duration(Duration::from_millis(200)),
            warmup: Duration::ZERO,
            progress: nacre_loadgen::Progress::Hidden,
            cdf_points: 10,
        };
        for kind in [
            nacre_loadgen::Kind::Put,
            nacre_loadgen::Kind::Get,
            nacre_loadgen::Kind::Sequence,
        ] {
            let w = nacre_loadgen::Workload {
                kind,
                sequence_len: 5,
                ..base.clone()
            };
            let r = nacre_loadgen::run(&targets, &w, &opts).await.unwrap();
            assert!(r.ops > 0, "{kind:?}: no operation completed");
            assert_eq!(r.errors, 0, "{kind:?}: {:?}", r.first_error);
            assert_eq!(r.misses, 0, "{kind:?}: the preloaded keys are there");
        }
    }
}
