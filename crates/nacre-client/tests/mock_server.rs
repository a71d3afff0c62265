//! The client against a tiny in-test server built on nacre-proto: an
//! in-memory map behind the real framing and handshake, with switches for
//! the misbehaviours the client must cope with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nacre_client::{
    BlockingClient, Bytes, Client, ClientError, ClientOptions, Consistency, Disconnect, ErrorCode,
    Sequence,
};
use nacre_proto::{
    decode_request, encode_response, split_frame, ClientHello, ErrorReply, Guard, Limits, Op,
    Request, Response, ServerHello,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Default)]
struct Behaviour {
    cluster_id: String,
    /// Answer every data request with NotMaster and this hint.
    not_master: Option<Option<String>>,
    /// Gather this many requests, then answer them newest first.
    reverse_batch: usize,
    /// Never answer a get of this key.
    hang_key: Option<Bytes>,
    /// Drop the connection when any request arrives.
    drop_on_request: bool,
}

#[derive(Default)]
struct State {
    map: Mutex<BTreeMap<Bytes, Bytes>>,
    index: AtomicUsize,
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Until this moment, answer data requests with NotMaster and this
    /// hint: a node while its cluster elects (with a hint: a follower that
    /// still names a leader that died), then serve.
    election: Mutex<Option<(Instant, Option<String>)>>,
    /// Answer this many data requests with this error, then serve.
    errors: Mutex<Option<(ErrorCode, usize)>>,
    /// Like a stopped process: take connections but say nothing, and
    /// answer nothing more on the open ones.
    frozen: AtomicBool,
    /// Like a dead node: open connections are dropped, new ones closed
    /// before the handshake (still counted in `connections`).
    down: tokio::sync::watch::Sender<bool>,
}

impl State {
    fn elect_for(&self, time: Duration, hint: Option<String>) {
        *self.election.lock().unwrap() = Some((Instant::now() + time, hint));
    }

    fn fail_next(&self, code: ErrorCode, n: usize) {
        *self.errors.lock().unwrap() = Some((code, n));
    }
}

struct Mock {
    addr: String,
    state: Arc<State>,
}

impl Mock {
    fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    fn kill(&self) {
        self.state.down.send_replace(true);
    }
}

async fn start(b: Behaviour) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = Arc::new(State::default());
    let st = state.clone();
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        let mut down = st.down.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else { return };
                    st.connections.fetch_add(1, Ordering::SeqCst);
                    if !*down.borrow() {
                        conns.spawn(serve_conn(sock, b.clone(), st.clone()));
                    }
                }
                _ = down.changed() => conns.abort_all(),
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Mock { addr, state }
}

async fn serve_conn(mut sock: TcpStream, b: Behaviour, st: Arc<State>) {
    if st.frozen.load(Ordering::SeqCst) {
        return std::future::pending().await;
    }
    let mut buf = BytesMut::new();
    let (hello, used) = loop {
        if let Some(h) = ClientHello::decode(&buf).unwrap() {
            break h;
        }
        if sock.read_buf(&mut buf).await.unwrap() == 0 {
            return;
        }
    };
    let _ = buf.split_to(used);
    let mut out = Vec::new();
    if !hello.cluster_id.is_empty() && hello.cluster_id != b.cluster_id {
        ServerHello::refuse(
            ErrorCode::WrongCluster,
            &b.cluster_id,
            "mock",
            "this is another cluster",
        )
        .encode(&mut out);
        let _ = sock.write_all(&out).await;
        return;
    }
    ServerHello::ok(&b.cluster_id, "mock").encode(&mut out);
    sock.write_all(&out).await.unwrap();

    let mut held: Vec<(u64, Request)> = Vec::new();
    loop {
        while let Some((id, body)) =
            split_frame(&mut buf, Limits::default().frame_size_max_bytes).unwrap()
        {
            let req = decode_request(body).unwrap();
            st.requests.fetch_add(1, Ordering::SeqCst);
            if b.drop_on_request {
                return;
            }
            if let (Some(k), Request::Get { key, .. }) = (&b.hang_key, &req) {
                if k == key {
                    continue;
                }
            }
            held.push((id, req));
        }
        if st.frozen.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        if held.len() >= b.reverse_batch.max(1) {
            let mut out = Vec::new();
            for (id, req) in held.drain(..).rev() {
                encode_response(id, &answer(&b, &st, req), &mut out);
            }
            if sock.write_all(&out).await.is_err() {
                return;
            }
        }
        match sock.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn written(st: &State, prev: Option<Bytes>, count: u64) -> Response {
    Response::Written {
        index: st.index.fetch_add(1, Ordering::SeqCst) as u64 + 1,
        prev,
        count,
    }
}

fn answer(b: &Behaviour, st: &State, req: Request) -> Response {
    if matches!(req, Request::Ping | Request::WhoMaster) {
        return status(req);
    }
    let electing = st
        .election
        .lock()
        .unwrap()
        .clone()
        .filter(|(until, _)| Instant::now() < *until)
        .map(|(_, hint)| hint);
    if let Some(hint) = electing.as_ref().or(b.not_master.as_ref()) {
        return Response::Error(
            ErrorReply::new(ErrorCode::NotMaster, "not the master").with_leader(hint.clone()),
        );
    }
    if let Some((code, left)) = st.errors.lock().unwrap().as_mut().filter(|(_, n)| *n > 0) {
        *left -= 1;
        return Response::Error(ErrorReply::new(*code, "told to fail"));
    }
    // The client stamps every write with its session; the mock just
    // answers the write inside.
    let req = match req {
        Request::Session { request, .. } => *request,
        r => r,
    };
    let mut map = st.map.lock().unwrap();
    let missing = |k: &Bytes| {
        Response::Error(ErrorReply::new(ErrorCode::NotFound, "not found").with_key(k.clone()))
    };
    match req {
        Request::Get { key, .. } => match map.get(&key) {
            Some(v) => Response::Value(Some(v.clone())),
            None => missing(&key),
        },
        Request::Exists { key, .. } => Response::Bool(map.contains_key(&key)),
        Request::MultiGet { keys, .. } => match keys.iter().find(|k| !map.contains_key(*k)) {
            Some(k) => missing(k),
            None => Response::Values(keys.iter().map(|k| map[k].clone()).collect()),
        },
        Request::KeyCount { .. } => Response::U64(map.len() as u64),
        Request::Set { key, value } => {
            map.insert(key, value);
            written(st, None, 0)
        }
        Request::Delete { key } => match map.remove(&key) {
            Some(_) => written(st, None, 0),
            None => missing(&key),
        },
        Request::Batch(batch) => {
            let mut copy = map.clone();
            for op in batch.ops {
                match op {
                    Op::Set(k, v) => {
                        copy.insert(k, v);
                    }
                    Op::Remove(k) => {
                        copy.remove(&k);
                    }
                    Op::Check(Guard::Absent(k)) if !copy.contains_key(&k) => {}
                    Op::Check(Guard::ValueEquals(k, v)) if copy.get(&k) == Some(&v) => {}
                    Op::Check(g) => {
                        return Response::Error(
                            ErrorReply::new(ErrorCode::AssertionFailed, "assertion failed")
                                .with_key(g.key().clone()),
                        )
                    }
                    other => {
                        return Response::Error(ErrorReply::new(
                            ErrorCode::BadInput,
                            format!("{other:?}"),
                        ))
                    }
                }
            }
            *map = copy;
            written(st, None, 0)
        }
        other => Response::Error(ErrorReply::new(
            ErrorCode::BadInput,
            format!("mock does not do {other:?}"),
        )),
    }
}

fn status(req: Request) -> Response {
    match req {
        Request::Ping => Response::Text("mock 0.1".into()),
        _ => Response::Master(Some("self".into())),
    }
}

fn opts(endpoints: &[&str]) -> ClientOptions {
    ClientOptions {
        request_timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
        ..ClientOptions::new(endpoints.iter().copied())
    }
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// An address where nothing listens.
async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn pipelined_replies_in_reverse_order_reach_their_callers() {
    let n = 16;
    let m = start(Behaviour {
        reverse_batch: n,
        ..Behaviour::default()
    })
    .await;
    for i in 0..n {
        m.state
            .map
            .lock()
            .unwrap()
            .insert(b(&format!("k{i}")), b(&format!("v{i}")));
    }
    let c = Client::connect(opts(&[&m.addr])).await.unwrap();
    // The mock answers only once all n requests are in: this completes only
    // if the client has them all in flight on its one connection.
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { (i, c.get(b(&format!("k{i}"))).await.unwrap()) })
        })
        .collect();
    for t in tasks {
        let (i, v) = t.await.unwrap();
        assert_eq!(v, b(&format!("v{i}")));
    }
    assert_eq!(m.state.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_from_many_tasks() {
    let m = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&m.addr])).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let index = c
                    .set(b(&format!("key{i}")), b(&format!("value{i}")))
                    .await
                    .unwrap();
                assert!(index > 0);
                let v = c
                    .with_consistency(Consistency::AtLeast(index))
                    .get(b(&format!("key{i}")))
                    .await
                    .unwrap();
                assert_eq!(v, b(&format!("value{i}")));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(m.state.map.lock().unwrap().len(), 100);
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 200);
    assert_eq!(m.state.connections.load(Ordering::SeqCst), 1);
    assert_eq!(c.key_count().await.unwrap(), 100);
}

#[tokio::test]
async fn not_master_redirects_to_the_hinted_leader() {
    let leader = start(Behaviour::default()).await;
    let follower = start(Behaviour {
        not_master: Some(Some(leader.addr.clone())),
        ..Behaviour::default()
    })
    .await;
    let c = Client::connect(opts(&[&follower.addr])).await.unwrap();
    c.set(b("a"), b("1")).await.unwrap();
    assert_eq!(leader.state.map.lock().unwrap().get(&b("a")), Some(&b("1")));
    assert_eq!(follower.state.requests.load(Ordering::SeqCst), 1);
    assert_eq!(c.connected_to().unwrap().0, leader.addr);
    // Later requests go straight to the leader.
    assert_eq!(c.get(b("a")).await.unwrap(), b("1"));
    assert_eq!(follower.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn not_master_without_hint_tries_the_next_endpoint() {
    let follower = start(Behaviour {
        not_master: Some(None),
        ..Behaviour::default()
    })
    .await;
    let leader = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&follower.addr, &leader.addr]))
        .await
        .unwrap();
    c.set(b("a"), b("1")).await.unwrap();
    assert_eq!(leader.state.map.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_call_outlasts_an_election_longer_than_five_retries_of_backoff() {
    // No node knows a leader for 1.5 s: longer than the 620 ms that five
    // retries of backoff used to last, shorter than the call's timeout.
    // (Before calls were bounded by their deadline, this failed with
    // NoLeader.)
    let node = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&node.addr])).await.unwrap();
    node.state.elect_for(Duration::from_millis(1_500), None);
    c.set(b("a"), b("1")).await.unwrap();
    assert_eq!(node.state.map.lock().unwrap().get(&b("a")), Some(&b("1")));
    // Paced, not spun: tens of attempts, not thousands.
    let asked = node.state.requests.load(Ordering::SeqCst);
    assert!((2..=100).contains(&asked), "asked {asked} times");
}

#[tokio::test]
async fn a_hint_naming_a_node_that_cannot_be_reached_is_not_followed() {
    // The leader dies; the survivor names it for 1.5 s (until its election
    // timer fires), then leads. The write must wait for that, asking the
    // survivor, rather than chase the dead leader's address.
    let leader = start(Behaviour::default()).await;
    let survivor = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&leader.addr, &survivor.addr]))
        .await
        .unwrap();
    c.set(b("before"), b("1")).await.unwrap();
    assert_eq!(c.connected_to().unwrap().0, leader.addr);
    survivor
        .state
        .elect_for(Duration::from_millis(1_500), Some(leader.addr.clone()));
    leader.kill();
    let tried_before = leader.state.connections.load(Ordering::SeqCst);
    c.set(b("after"), b("2")).await.unwrap();
    assert!(survivor.state.map.lock().unwrap().contains_key(&b("after")));
    // Following each hint would have reconnected to the dead leader on
    // every attempt (one connection each); at most one may slip in when a
    // connection race starts it beside the survivor.
    let tried = leader.state.connections.load(Ordering::SeqCst) - tried_before;
    assert!(tried <= 1, "the dead leader was tried {tried} times");
    assert_eq!(c.connected_to().unwrap().0, survivor.addr);
}

#[tokio::test]
async fn no_leader_anywhere_times_out_saying_why() {
    let follower = start(Behaviour {
        not_master: Some(None),
        ..Behaviour::default()
    })
    .await;
    let o = ClientOptions {
        request_timeout_ms: 300,
        ..opts(&[&follower.addr])
    };
    let c = Client::connect(o).await.unwrap();
    let e = c.set(b("a"), b("1")).await.unwrap_err();
    match &e {
        ClientError::Timeout {
            after_ms: 300,
            last: Some(last),
        } => assert!(matches!(**last, ClientError::NoLeader(_)), "{last:?}"),
        other => panic!("{other:?}"),
    }
    assert!(e.is_unavailable());
    assert!(std::error::Error::source(&e).is_some());
    assert!(follower.state.requests.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn retries_max_zero_answers_what_the_node_said() {
    let follower = start(Behaviour {
        not_master: Some(None),
        ..Behaviour::default()
    })
    .await;
    let o = ClientOptions {
        retries_max: 0,
        ..opts(&[&follower.addr])
    };
    let c = Client::connect(o).await.unwrap();
    let e = c.set(b("a"), b("1")).await.unwrap_err();
    assert!(matches!(e, ClientError::NoLeader(_)), "{e:?}");
    assert_eq!(follower.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fails_over_to_the_next_endpoint_when_one_is_down() {
    let dead = dead_addr().await;
    let m = start(Behaviour::default()).await;
    m.state.map.lock().unwrap().insert(b("x"), b("y"));
    let c = Client::connect(opts(&[&dead, &m.addr])).await.unwrap();
    assert_eq!(c.get(b("x")).await.unwrap(), b("y"));
    assert_eq!(c.connected_to().unwrap().0, m.addr);
}

#[tokio::test]
async fn all_endpoints_down_is_an_error() {
    let o = ClientOptions {
        retries_max: 1,
        ..opts(&[&dead_addr().await, &dead_addr().await])
    };
    let e = Client::connect(o).await.unwrap_err();
    match &e {
        ClientError::AllEndpointsFailed { errors } => {
            assert_eq!(errors.len(), 2);
            // Each failure keeps the error it came from.
            for f in errors {
                assert!(matches!(*f.error, ClientError::Io(_)), "{f:?}");
                assert!(std::error::Error::source(f).is_some());
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_unavailable());
}

#[tokio::test]
async fn a_read_whose_connections_keep_breaking_says_why() {
    let flaky = start(Behaviour {
        drop_on_request: true,
        ..Behaviour::default()
    })
    .await;
    let o = ClientOptions {
        retries_max: 1,
        ..opts(&[&flaky.addr])
    };
    let c = Client::connect(o).await.unwrap();
    let e = c.get(b("r")).await.unwrap_err();
    match &e {
        ClientError::Disconnected { endpoint, reason } => {
            assert_eq!(*endpoint, flaky.addr);
            assert!(
                matches!(reason, Disconnect::ServerClosed | Disconnect::Read(_)),
                "{reason:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_unavailable());
    assert!(std::error::Error::source(&e).is_some());
}

#[tokio::test]
async fn lost_connection_retries_reads_and_session_stamped_writes() {
    let flaky = start(Behaviour {
        drop_on_request: true,
        ..Behaviour::default()
    })
    .await;
    let good = start(Behaviour::default()).await;
    good.state.map.lock().unwrap().insert(b("r"), b("1"));

    let c = Client::connect(opts(&[&flaky.addr, &good.addr]))
        .await
        .unwrap();
    assert_eq!(c.get(b("r")).await.unwrap(), b("1"));
    assert_eq!(flaky.state.requests.load(Ordering::SeqCst), 1);

    let c = Client::connect(opts(&[&flaky.addr, &good.addr]))
        .await
        .unwrap();
    // Every write carries the client's session, so re-sending one whose
    // connection broke cannot apply it twice: the client retries it.
    c.set(b("w"), b("1")).await.unwrap();
    assert_eq!(flaky.state.requests.load(Ordering::SeqCst), 2);
    assert!(good.state.map.lock().unwrap().contains_key(&b("w")));
}

#[tokio::test]
async fn request_timeout() {
    let m = start(Behaviour {
        hang_key: Some(b("slow")),
        ..Behaviour::default()
    })
    .await;
    let o = ClientOptions {
        request_timeout_ms: 200,
        ..opts(&[&m.addr])
    };
    let c = Client::connect(o).await.unwrap();
    let started = std::time::Instant::now();
    let e = c.get(b("slow")).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { after_ms: 200, .. }),
        "{e:?}"
    );
    assert!(e.is_timeout());
    assert!(started.elapsed() < Duration::from_secs(2));
    // The client stays usable.
    assert!(!c.exists(b("other")).await.unwrap());
}

#[tokio::test]
async fn a_slow_request_on_a_live_node_waits_for_its_deadline() {
    // The node never answers this get but answers everything else, pings
    // included: it is alive, so the connection is kept past `hung_after`
    // and the call ends at its deadline.
    let m = start(Behaviour {
        hang_key: Some(b("slow")),
        ..Behaviour::default()
    })
    .await;
    let o = ClientOptions {
        request_timeout_ms: 2_500,
        hung_after_ms: 500,
        ..opts(&[&m.addr])
    };
    let c = Client::connect(o).await.unwrap();
    let e = c.get(b("slow")).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Timeout {
                after_ms: 2_500,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!c.exists(b("other")).await.unwrap());
    assert_eq!(m.state.connections.load(Ordering::SeqCst), 1);
    // The get, the pings that showed the node alive, the exists.
    assert!(m.state.requests.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_hung_node_is_left_and_the_call_goes_on_elsewhere() {
    // A stopped leader: its connection stays open and says nothing. The
    // write must leave it and succeed on the other node within its
    // timeout. (Before, the client waited on the stopped node until the
    // timeout, and kept the connection for the next call.)
    let stopped = start(Behaviour::default()).await;
    let other = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&stopped.addr, &other.addr]))
        .await
        .unwrap();
    c.set(b("before"), b("1")).await.unwrap();
    stopped.freeze();
    c.set(b("after"), b("2")).await.unwrap();
    assert!(other.state.map.lock().unwrap().contains_key(&b("after")));
    assert_eq!(c.connected_to().unwrap().0, other.addr);
    // Later calls stay away from it.
    assert_eq!(c.get(b("after")).await.unwrap(), b("2"));
    assert_eq!(stopped.state.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connecting_races_the_endpoints() {
    // The first endpoint takes the connection but never shakes hands (a
    // stopped process). With a connect timeout far longer than the test
    // may take, connecting succeeds only by trying the second beside it.
    let stopped = start(Behaviour::default()).await;
    stopped.freeze();
    let live = start(Behaviour::default()).await;
    let o = ClientOptions {
        connect_timeout_ms: 600_000,
        request_timeout_ms: 600_000,
        ..opts(&[&stopped.addr, &live.addr])
    };
    let c = tokio::time::timeout(Duration::from_secs(60), Client::connect(o))
        .await
        .expect("connecting waited on the stopped endpoint")
        .unwrap();
    assert_eq!(c.connected_to().unwrap().0, live.addr);
    c.set(b("k"), b("v")).await.unwrap();
    assert_eq!(stopped.state.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn errors_that_are_the_answer_are_never_retried() {
    use ErrorCode::*;
    for code in [
        NotFound,
        AssertionFailed,
        TooLarge,
        BadInput,
        InconsistentRead,
        Corruption,
        Internal,
    ] {
        let m = start(Behaviour::default()).await;
        m.state.fail_next(code, usize::MAX);
        let c = Client::connect(opts(&[&m.addr])).await.unwrap();
        let e = c.set(b("k"), b("v")).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{e:?}");
        let e = c.get(b("k")).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{e:?}");
        assert_eq!(m.state.requests.load(Ordering::SeqCst), 2, "{code:?}");
    }
}

#[tokio::test]
async fn errors_that_pass_are_retried() {
    use ErrorCode::*;
    for code in [Busy, Unavailable, GoingDown, Timeout] {
        let m = start(Behaviour::default()).await;
        let c = Client::connect(opts(&[&m.addr])).await.unwrap();
        m.state.fail_next(code, 3);
        c.set(b("k"), b("v")).await.unwrap();
        assert_eq!(m.state.requests.load(Ordering::SeqCst), 4, "{code:?}");
    }
}

#[tokio::test]
async fn a_membership_change_of_unknown_outcome_is_not_resent() {
    // It carries no session: re-sending a removal that did apply would
    // fail, or remove again.
    let m = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&m.addr])).await.unwrap();
    m.state.fail_next(ErrorCode::Timeout, 1);
    let e = c.remove_node("n2").await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_cluster_is_refused_with_the_servers_message() {
    let m = start(Behaviour {
        cluster_id: "alpha".into(),
        ..Behaviour::default()
    })
    .await;
    let e = Client::connect(ClientOptions {
        cluster_id: "beta".into(),
        ..opts(&[&m.addr])
    })
    .await
    .unwrap_err();
    match e {
        ClientError::Refused { code, message, .. } => {
            assert_eq!(code, ErrorCode::WrongCluster);
            assert_eq!(message, "this is another cluster");
        }
        other => panic!("{other:?}"),
    }
    // The right id (or none) is welcome.
    for id in ["alpha", ""] {
        Client::connect(ClientOptions {
            cluster_id: id.into(),
            ..opts(&[&m.addr])
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn limits_are_checked_before_sending() {
    let m = start(Behaviour::default()).await;
    let o = ClientOptions {
        limits: Limits {
            key_size_max_bytes: 8,
            value_size_max_bytes: 16,
            batch_ops_max: 2,
            ..Limits::default()
        },
        ..opts(&[&m.addr])
    };
    let c = Client::connect(o).await.unwrap();
    let e = c.set(b("a-key-too-long"), b("v")).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Limit(r) if r.code == ErrorCode::TooLarge),
        "{e:?}"
    );
    let e = c.set(b("k"), Bytes::from(vec![0u8; 17])).await.unwrap_err();
    assert!(matches!(&e, ClientError::Limit(_)), "{e:?}");
    let e = c.get(b("a-key-too-long")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooLarge));
    let mut s = Sequence::new();
    s.set(b("a"), b("1"))
        .set(b("b"), b("2"))
        .set(b("c"), b("3"));
    let e = c.sequence(s).await.unwrap_err();
    assert!(matches!(&e, ClientError::Limit(_)), "{e:?}");
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn not_found_and_assertion_errors_are_typed() {
    let m = start(Behaviour::default()).await;
    let c = Client::connect(opts(&[&m.addr])).await.unwrap();
    let e = c.get(b("nope")).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.key(), Some(&b("nope")));
    assert_eq!(c.get_option(b("nope")).await.unwrap(), None);
    c.set(b("a"), b("1")).await.unwrap();
    let e = c.multi_get(vec![b("a"), b("zz")]).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.key(), Some(&b("zz")));
    assert_eq!(c.multi_get(vec![b("a")]).await.unwrap(), vec![b("1")]);
    let mut s = Sequence::new();
    s.assert(b("a"), Some(b("wrong"))).set(b("a"), b("2"));
    let e = c.sequence(s).await.unwrap_err();
    assert!(e.is_assertion_failed());
    assert_eq!(e.key(), Some(&b("a")));
    // Standalone asserts are reads, failing with the same typed error.
    c.assert(b("a"), Some(b("1"))).await.unwrap();
    c.assert(b("nope"), None).await.unwrap();
    c.assert_exists(b("a")).await.unwrap();
    for e in [
        c.assert(b("a"), Some(b("wrong"))).await.unwrap_err(),
        c.assert(b("a"), None).await.unwrap_err(),
        c.assert_exists(b("nope")).await.unwrap_err(),
    ] {
        assert!(e.is_assertion_failed(), "{e:?}");
    }
    assert_eq!(
        c.assert(b("a"), None).await.unwrap_err().key(),
        Some(&b("a"))
    );
    assert!(c.delete(b("nope")).await.unwrap_err().is_not_found());
}

#[test]
fn blocking_client_works_without_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(start(Behaviour::default()));
    let c = BlockingClient::connect(opts(&[&m.addr])).unwrap();
    assert_eq!(c.ping().unwrap(), "mock 0.1");
    let index = c.set(b("k"), b("v")).unwrap();
    assert_eq!(index, 1);
    assert_eq!(c.get(b("k")).unwrap(), b("v"));
    assert!(c.exists(b("k")).unwrap());
    assert!(c.delete(b("nope")).unwrap_err().is_not_found());
    assert_eq!(c.who_master().unwrap(), Some("self".into()));
}
