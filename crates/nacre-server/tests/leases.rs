//! Leases end to end over raw protocol frames: grants, keys attached by a
//! client batch, expiry on the leader's clock, keep-alives, and leases
//! carried over a restart (docs/coordination.md, "Leases").

use std::time::{Duration, Instant};

use bytes::Bytes;
use nacre_proto::{
    Batch, Consistency, CoordRequest, CoordResponse, ErrorCode, LeaseInfo, Op, Request, Response,
    Session,
};
use nacre_server::ServerConfig;

mod common;
use common::wire::Conn;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Ticks of 20 ms and an election timeout of `election_ticks` of them: the
/// shortest TTL allowed is two election timeouts.
fn config(dir: &std::path::Path, election_ticks: usize) -> ServerConfig {
    ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        election_ticks,
        ..Default::default()
    }
}

impl Conn {
    async fn coord(&mut self, c: CoordRequest) -> Response {
        self.call(Request::Coord(c)).await
    }

    async fn grant(&mut self, id: u64, ttl_ms: u64) -> u64 {
        match self.coord(CoordRequest::LeaseGrant { id, ttl_ms }).await {
            Response::Coord(CoordResponse::Lease(l)) => {
                assert_eq!((l.ttl_ms, l.remaining_ms), (ttl_ms, ttl_ms));
                assert!(id == 0 || l.id == id, "{l:?}");
                l.id
            }
            r => panic!("expected a lease, got {r:?}"),
        }
    }

    async fn attach(&mut self, lease: u64, keys: &[&str]) {
        let ops = keys
            .iter()
            .map(|k| Op::SetLeased {
                key: b(k),
                value: b("v"),
                lease,
            })
            .collect();
        let r = self
            .call(Request::Batch(Batch {
                guards: vec![],
                ops,
            }))
            .await;
        assert!(matches!(r, Response::Written { .. }), "{r:?}");
    }

    async fn exists(&mut self, key: &str) -> bool {
        let r = self
            .call(Request::Exists {
                consistency: Consistency::Consistent,
                key: b(key),
            })
            .await;
        match r {
            Response::Bool(x) => x,
            r => panic!("expected a bool, got {r:?}"),
        }
    }

    async fn ttl(&mut self, id: u64) -> Result<LeaseInfo, ErrorCode> {
        match self.coord(CoordRequest::LeaseTtl { id, keys: true }).await {
            Response::Coord(CoordResponse::Lease(l)) => Ok(l),
            Response::Error(e) => Err(e.code),
            r => panic!("expected a lease, got {r:?}"),
        }
    }
}

fn error_of(r: &Response) -> (ErrorCode, String) {
    match r {
        Response::Error(e) => (e.code, e.message.clone()),
        r => panic!("expected an error, got {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_without_keep_alives_and_live_with_them() {
    let dir = tempfile::tempdir().unwrap();
    // An election timeout of 200 ms: TTLs from 400 ms.
    let server = nacre_server::start(config(dir.path(), 10)).await.unwrap();
    let mut c = Conn::open(server.local_addr()).await;

    let (code, msg) = error_of(
        &c.coord(CoordRequest::LeaseGrant { id: 0, ttl_ms: 100 })
            .await,
    );
    assert_eq!(code, ErrorCode::BadInput);
    assert!(msg.contains("lease_ttl_min_ms 400"), "{msg}");
    // Only the server proposes grants.
    let smuggled = Request::Batch(Batch {
        guards: vec![],
        ops: vec![Op::LeaseGrant { id: 5, ttl_ms: 600 }],
    });
    assert_eq!(error_of(&c.call(smuggled).await).0, ErrorCode::BadInput);

    let dropped = c.grant(0, 600).await;
    // A longer TTL for the renewed lease: a loaded machine may stall the
    // test between two keep-alives.
    let kept = c.grant(77, 2_000).await;
    assert_eq!(kept, 77);
    assert_eq!(
        error_of(
            &c.coord(CoordRequest::LeaseGrant {
                id: 77,
                ttl_ms: 600
            })
            .await
        )
        .0,
        ErrorCode::Conflict
    );
    c.attach(dropped, &["d1", "d2"]).await;
    c.attach(kept, &["k1"]).await;
    assert!(c.exists("d1").await && c.exists("d2").await && c.exists("k1").await);
    let r = c.call(Request::Batch(Batch {
        guards: vec![],
        ops: vec![Op::SetLeased {
            key: b("x"),
            value: b("v"),
            lease: 999,
        }],
    }));
    assert_eq!(error_of(&r.await).0, ErrorCode::LeaseNotFound);

    // Renew `kept` every 100 ms for 3 s, longer than its TTL: `dropped`
    // runs out meanwhile.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3_000) {
        match c
            .coord(CoordRequest::LeaseKeepAlive { ids: vec![kept] })
            .await
        {
            Response::Coord(CoordResponse::Leases(ls)) => {
                assert_eq!((ls.len(), ls[0].id, ls[0].ttl_ms), (1, kept, 2_000));
            }
            r => panic!("expected leases, got {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!c.exists("d1").await && !c.exists("d2").await);
    assert!(c.exists("k1").await, "a lease kept alive keeps its keys");
    assert_eq!(c.ttl(dropped).await.unwrap_err(), ErrorCode::LeaseNotFound);
    let l = c.ttl(kept).await.unwrap();
    assert_eq!((l.ttl_ms, l.keys.clone()), (2_000, vec![b("k1")]));
    assert!(l.remaining_ms <= 2_000 && l.remaining_ms > 0, "{l:?}");
    match c
        .coord(CoordRequest::LeaseKeepAlive {
            ids: vec![dropped, kept],
        })
        .await
    {
        Response::Coord(CoordResponse::Leases(ls)) => {
            assert_eq!(
                ls.iter().map(|l| l.ttl_ms).collect::<Vec<_>>(),
                vec![0, 2_000]
            );
        }
        r => panic!("expected leases, got {r:?}"),
    }
    match c.coord(CoordRequest::LeaseList).await {
        Response::Coord(CoordResponse::Leases(ls)) => {
            assert_eq!(ls.iter().map(|l| l.id).collect::<Vec<_>>(), vec![kept]);
        }
        r => panic!("expected leases, got {r:?}"),
    }

    // A revoke, stamped with a session: its retry is answered, not redone.
    let s = Session {
        client_id: 9,
        seq: 1,
    };
    let revoke = Request::Session {
        session: s,
        request: Box::new(Request::Coord(CoordRequest::LeaseRevoke { id: kept })),
    };
    assert_eq!(c.call(revoke.clone()).await, Response::Unit);
    assert!(!c.exists("k1").await, "a revoke deletes the lease's keys");
    assert_eq!(c.call(revoke).await, Response::Unit);
    let again = c.coord(CoordRequest::LeaseRevoke { id: kept }).await;
    assert_eq!(error_of(&again).0, ErrorCode::LeaseNotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_their_keys_survive_a_restart_with_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    // An election timeout of 600 ms: TTLs from 1.2 s.
    let cfg = config(dir.path(), 30);
    let server = nacre_server::start(cfg.clone()).await.unwrap();
    let mut c = Conn::open(server.local_addr()).await;
    let id = c.grant(0, 1_200).await;
    c.attach(id, &["r1", "r2"]).await;
    server.shutdown().await.unwrap();

    let server = nacre_server::start(cfg).await.unwrap();
    let restarted = Instant::now();
    let mut c = Conn::open(server.local_addr()).await;
    let l = c.ttl(id).await.unwrap();
    assert_eq!(l.keys, vec![b("r1"), b("r2")]);
    // The new leader gave it its TTL plus an election timeout.
    if restarted.elapsed() < Duration::from_millis(500) {
        assert!(l.remaining_ms > 1_200, "no extension: {l:?}");
    }
    assert!(c.exists("r1").await);
    // Nobody renews it: it ends, and its keys go, within TTL + extension
    // (1.8 s) and a generous margin for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.exists("r1").await {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restarted.elapsed() >= Duration::from_millis(1_200));
    assert!(!c.exists("r2").await);
    assert_eq!(c.ttl(id).await.unwrap_err(), ErrorCode::LeaseNotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_attaches_keys_to_a_lease_and_reads_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = nacre_server::start(config(dir.path(), 10)).await.unwrap();
    let mut c = Conn::open(server.local_addr()).await;
    let source = r#"
        function hold(k, lease) kv.set(k, "mine", { lease = tonumber(lease) }) end
        function rev() return nacre.revision() end
    "#;
    let put = Request::ScriptPut {
        name: "locks".into(),
        source: b(source),
    };
    assert!(matches!(c.call(put).await, Response::Written { .. }));
    let id = c.grant(0, 60_000).await;
    let call = |function: &str, args: Vec<Bytes>| Request::Call {
        script: "locks".into(),
        function: function.into(),
        args,
        version: None,
        consistency: Consistency::Consistent,
    };
    let r = c
        .call(call("hold", vec![b("s1"), b(&id.to_string())]))
        .await;
    assert!(matches!(r, Response::Called { .. }), "{r:?}");
    assert_eq!(c.ttl(id).await.unwrap().keys, vec![b("s1")]);
    // The revision a read-only call reads at is the index it reports.
    match c.call(call("rev", vec![])).await {
        Response::Called { index, value, .. } => {
            assert_eq!(value, Some(b(&index.to_string())));
            assert!(index > id, "{index} after the grant at {id}");
        }
        r => panic!("expected a call result, got {r:?}"),
    }
    // A lease that does not exist fails the call.
    let r = c.call(call("hold", vec![b("s2"), b("424242")])).await;
    assert_eq!(error_of(&r).0, ErrorCode::LeaseNotFound);
    assert!(!c.exists("s2").await);
    let revoke = CoordRequest::LeaseRevoke { id };
    assert_eq!(c.coord(revoke).await, Response::Unit);
    assert!(!c.exists("s1").await);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_settings_are_checked_and_leases_max_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = config(dir.path(), 10);
    bad.lease_ttl_min_ms = Some(5_000);
    bad.lease_ttl_max_ms = 1_000;
    let e = nacre_server::start(bad).await.err().expect("refused");
    assert!(e.to_string().contains("lease_ttl_min_ms"), "{e}");

    let mut cfg = config(dir.path(), 10);
    cfg.leases_max = 2;
    cfg.lease_ttl_max_ms = 10_000;
    let server = nacre_server::start(cfg).await.unwrap();
    let mut c = Conn::open(server.local_addr()).await;
    c.grant(0, 5_000).await;
    let second = c.grant(0, 5_000).await;
    let third = c
        .coord(CoordRequest::LeaseGrant {
            id: 0,
            ttl_ms: 5_000,
        })
        .await;
    let (code, msg) = error_of(&third);
    assert_eq!(code, ErrorCode::Busy);
    assert!(msg.contains("leases_max"), "{msg}");
    let long = c
        .coord(CoordRequest::LeaseGrant {
            id: 0,
            ttl_ms: 10_001,
        })
        .await;
    let (code, msg) = error_of(&long);
    assert_eq!(code, ErrorCode::BadInput);
    assert!(msg.contains("lease_ttl_max_ms 10000"), "{msg}");
    // A revoke makes room again.
    let revoke = c.coord(CoordRequest::LeaseRevoke { id: second }).await;
    assert_eq!(revoke, Response::Unit);
    c.grant(0, 5_000).await;
    match c.call(Request::Statistics).await {
        Response::Stats(kv) => {
            let tracked = kv.iter().find(|(k, _)| k == "leases_tracked");
            assert_eq!(tracked.map(|(_, v)| v.as_str()), Some("2"), "{kv:?}");
        }
        r => panic!("expected statistics, got {r:?}"),
    }
    server.shutdown().await.unwrap();
}
