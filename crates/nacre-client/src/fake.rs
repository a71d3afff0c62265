//! A fake cluster for the unit tests of watches, leases, locks and
//! waiting reads: nodes that share one in-memory state with revisions, a
//! history of change events and leases (no expiry: tests revoke), behind
//! the real framing and handshake. A node can be killed (its connections
//! dropped, new ones refused) or told to end its watches with a code.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use nacre_proto::{
    decode_request, encode_response, split_frame, Batch, Bytes, ClientHello, CoordRequest,
    CoordResponse, ErrorCode, ErrorReply, EventKind, Guard, KeyEntry, LeaseInfo, Limits, Op, Page,
    Request, Response, Revision, ServerHello, WatchEvent, WatchSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

#[derive(Default)]
pub(crate) struct Model {
    pub(crate) index: u64,
    kv: BTreeMap<Bytes, (Bytes, Revision, u64)>,
    /// Every change, by revision.
    log: Vec<WatchEvent>,
    leases: HashMap<u64, u64>,
    /// Watches from before this revision end `Compacted`.
    pub(crate) oldest: u64,
    pub(crate) keep_alives: usize,
}

/// The state every fake node serves.
pub(crate) struct Fake {
    pub(crate) model: Mutex<Model>,
    applied: watch::Sender<u64>,
}

impl Fake {
    pub(crate) fn new() -> Arc<Fake> {
        Arc::new(Fake {
            model: Mutex::new(Model {
                index: 1,
                oldest: 1,
                ..Model::default()
            }),
            applied: watch::channel(1).0,
        })
    }

    pub(crate) fn put(&self, key: &str, value: &str) -> u64 {
        let b = Batch {
            guards: vec![],
            ops: vec![Op::Set(key.to_string().into(), value.to_string().into())],
        };
        match self.apply(&b) {
            Response::Written { index, .. } => index,
            r => panic!("{r:?}"),
        }
    }

    pub(crate) fn revoke(&self, id: u64) -> bool {
        let mut m = self.model.lock().unwrap();
        if m.leases.remove(&id).is_none() {
            return false;
        }
        let keys: Vec<Bytes> =
            m.kv.iter()
                .filter(|(_, v)| v.2 == id)
                .map(|(k, _)| k.clone())
                .collect();
        m.index += 1;
        for k in keys {
            delete(&mut m, &k);
        }
        let i = m.index;
        drop(m);
        self.applied.send_replace(i);
        true
    }

    fn guard_holds(m: &Model, g: &Guard) -> Result<(), ErrorReply> {
        let ok = match g {
            Guard::Absent(k) => !m.kv.contains_key(k),
            Guard::LockHeld { prefix, token } => {
                let oldest =
                    m.kv.iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(_, v)| v.1.create_rev)
                        .min();
                if oldest != Some(*token) {
                    return Err(ErrorReply::new(ErrorCode::Fenced, "lock not held"));
                }
                true
            }
            g => panic!("the fake does not do {g:?}"),
        };
        if ok {
            Ok(())
        } else {
            Err(ErrorReply::new(ErrorCode::AssertionFailed, "guard").with_key(g.key().clone()))
        }
    }

    pub(crate) fn apply(&self, b: &Batch) -> Response {
        let mut m = self.model.lock().unwrap();
        for g in &b.guards {
            if let Err(e) = Self::guard_holds(&m, g) {
                return Response::Error(e);
            }
        }
        m.index += 1;
        let index = m.index;
        for op in &b.ops {
            match op {
                Op::Set(k, v) => set(&mut m, k, v, 0),
                Op::SetLeased { key, value, lease } => {
                    if !m.leases.contains_key(lease) {
                        return Response::Error(ErrorReply::new(ErrorCode::LeaseNotFound, "no"));
                    }
                    set(&mut m, key, value, *lease);
                }
                Op::Remove(k) | Op::Delete(k) => delete(&mut m, k),
                op => panic!("the fake does not do {op:?}"),
            }
        }
        drop(m);
        self.applied.send_replace(index);
        Response::Written {
            index,
            prev: None,
            count: 0,
        }
    }

    fn coord(&self, c: CoordRequest) -> Response {
        let mut m = self.model.lock().unwrap();
        let info = |id, ttl_ms| LeaseInfo {
            id,
            ttl_ms,
            remaining_ms: ttl_ms,
            keys: vec![],
        };
        let reply = match c {
            CoordRequest::LeaseGrant { ttl_ms, .. } => {
                m.index += 1;
                let id = m.index;
                m.leases.insert(id, ttl_ms);
                Response::Coord(CoordResponse::Lease(info(id, ttl_ms)))
            }
            CoordRequest::LeaseKeepAlive { ids } => {
                m.keep_alives += 1;
                let ls = ids
                    .iter()
                    .map(|id| info(*id, m.leases.get(id).copied().unwrap_or(0)))
                    .collect();
                Response::Coord(CoordResponse::Leases(ls))
            }
            CoordRequest::LeaseTtl { id, .. } => match m.leases.get(&id) {
                Some(t) => Response::Coord(CoordResponse::Lease(info(id, *t))),
                None => Response::Error(ErrorReply::new(ErrorCode::LeaseNotFound, "no")),
            },
            CoordRequest::LeaseList => Response::Coord(CoordResponse::Leases(
                m.leases.iter().map(|(id, t)| info(*id, *t)).collect(),
            )),
            CoordRequest::LeaseRevoke { id } => {
                drop(m);
                return if self.revoke(id) {
                    Response::Unit
                } else {
                    Response::Error(ErrorReply::new(ErrorCode::LeaseNotFound, "no"))
                };
            }
            c => panic!("not here: {c:?}"),
        };
        let i = m.index;
        drop(m);
        self.applied.send_replace(i);
        reply
    }

    fn answer(&self, req: Request) -> Response {
        let m = || self.model.lock().unwrap();
        let entry = |m: &Model, k: &Bytes| {
            m.kv.get(k).map(|(v, rev, _)| KeyEntry {
                key: k.clone(),
                value: v.clone(),
                rev: *rev,
            })
        };
        match req {
            Request::Session { request, .. } => self.answer(*request),
            Request::Ping => Response::Text("fake".into()),
            Request::GetEntry { key, .. } => Response::Entry(entry(&m(), &key)),
            Request::RangeEntries { query, .. } => {
                let m = m();
                let items =
                    m.kv.keys()
                        .filter(|k| query.first.as_ref().is_none_or(|f| *k >= f))
                        .filter(|k| query.last.as_ref().is_none_or(|l| *k < l))
                        .filter_map(|k| entry(&m, k))
                        .collect();
                Response::EntryPage(Page { items, more: false })
            }
            Request::Batch(b) => self.apply(&b),
            Request::Coord(c) => self.coord(c),
            r => panic!("the fake does not answer {r:?}"),
        }
    }

    /// The events of revisions from `from` on, and the last revision.
    fn events_from(&self, from: u64) -> (Vec<WatchEvent>, u64) {
        let m = self.model.lock().unwrap();
        let evs = m
            .log
            .iter()
            .filter(|e| e.revision() >= from)
            .cloned()
            .collect();
        (evs, m.index)
    }
}

fn set(m: &mut Model, k: &Bytes, v: &Bytes, lease: u64) {
    let index = m.index;
    let rev = match m.kv.get(k) {
        Some((_, r, _)) => Revision {
            create_rev: r.create_rev,
            mod_rev: index,
            version: r.version + 1,
        },
        None => Revision {
            create_rev: index,
            mod_rev: index,
            version: 1,
        },
    };
    m.kv.insert(k.clone(), (v.clone(), rev, lease));
    m.log.push(WatchEvent {
        kind: EventKind::Put,
        key: k.clone(),
        value: v.clone(),
        rev,
        prev: None,
        etcd: Default::default(),
    });
}

fn delete(m: &mut Model, k: &Bytes) {
    if m.kv.remove(k).is_some() {
        m.log.push(WatchEvent {
            kind: EventKind::Delete,
            key: k.clone(),
            value: Bytes::new(),
            rev: Revision {
                create_rev: 0,
                mod_rev: m.index,
                version: 0,
            },
            prev: None,
            etcd: Default::default(),
        });
    }
}

/// One fake node: its address, and switches.
pub(crate) struct Node {
    pub(crate) addr: String,
    down: watch::Sender<bool>,
    end: broadcast::Sender<ErrorCode>,
    /// Watch requests this node received.
    pub(crate) watches: Arc<Mutex<Vec<WatchSpec>>>,
    /// Watch cancels it received.
    pub(crate) cancels: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Node {
    pub(crate) async fn start(fake: &Arc<Fake>) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let down = watch::channel(false).0;
        let end = broadcast::channel(16).0;
        let watches = Arc::new(Mutex::new(Vec::new()));
        let cancels = Arc::new(AtomicUsize::new(0));
        let ctx = Ctx {
            fake: fake.clone(),
            down: down.clone(),
            end: end.clone(),
            watches: watches.clone(),
            cancels: cancels.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                if !*ctx.down.borrow() {
                    tokio::spawn(serve(sock, ctx.clone()));
                }
            }
        });
        Node {
            addr,
            down,
            end,
            watches,
            cancels,
            task,
        }
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn kill(&self) {
        self.down.send_replace(true);
    }

    /// Ends every watch of this node with `code`.
    pub(crate) fn end_watches(&self, code: ErrorCode) {
        let _ = self.end.send(code);
    }
}

#[derive(Clone)]
struct Ctx {
    fake: Arc<Fake>,
    down: watch::Sender<bool>,
    end: broadcast::Sender<ErrorCode>,
    watches: Arc<Mutex<Vec<WatchSpec>>>,
    cancels: Arc<AtomicUsize>,
}

async fn handshake(sock: &mut TcpStream, buf: &mut BytesMut) -> Option<()> {
    let used = loop {
        if let Some((_, used)) = ClientHello::decode(buf).unwrap() {
            break used;
        }
        if sock.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let _ = buf.split_to(used);
    let mut out = Vec::new();
    ServerHello::ok("", "fake").encode(&mut out);
    sock.write_all(&out).await.ok()
}

async fn serve(mut sock: TcpStream, ctx: Ctx) {
    let mut buf = BytesMut::new();
    if handshake(&mut sock, &mut buf).await.is_none() {
        return;
    }
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
    });
    let mut watches: HashMap<u64, JoinHandle<()>> = HashMap::new();
    let mut down = ctx.down.subscribe();
    loop {
        while let Some((id, body)) = split_frame(&mut buf, Limits::default().frame_size_max_bytes)
            .unwrap()
            .map(|(id, b)| (id, decode_request(b).unwrap()))
        {
            let reply = match body {
                Request::Coord(CoordRequest::Watch(spec)) => {
                    ctx.watches.lock().unwrap().push(spec.clone());
                    // Subscribed before the reply: an end sent after a
                    // watch was counted reaches it.
                    let end = ctx.end.subscribe();
                    let w = tokio::spawn(watch_task(ctx.clone(), end, id, spec, tx.clone()));
                    watches.insert(id, w);
                    continue;
                }
                Request::Coord(CoordRequest::WatchCancel { watch_id }) => {
                    ctx.cancels.fetch_add(1, Ordering::SeqCst);
                    if let Some(w) = watches.remove(&watch_id) {
                        w.abort();
                    }
                    Response::Unit
                }
                req => ctx.fake.answer(req),
            };
            let mut out = Vec::new();
            encode_response(id, &reply, &mut out);
            let _ = tx.send(out);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => if !matches!(r, Ok(n) if n > 0) { break },
            _ = down.wait_for(|d| *d) => break,
        }
    }
    for w in watches.values() {
        w.abort();
    }
    writer.abort();
}

fn frame(id: u64, r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(id, r, &mut out);
    out
}

async fn watch_task(
    ctx: Ctx,
    mut end: broadcast::Receiver<ErrorCode>,
    id: u64,
    spec: WatchSpec,
    tx: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut applied = ctx.fake.applied.subscribe();
    let (oldest, now) = {
        let m = ctx.fake.model.lock().unwrap();
        (m.oldest, m.index)
    };
    let mut next = if spec.start_rev == 0 {
        now + 1
    } else {
        spec.start_rev
    };
    if next < oldest {
        let r = Response::Coord(CoordResponse::WatchEnd {
            code: ErrorCode::Compacted,
            message: "compacted".into(),
            revision: oldest,
        });
        let _ = tx.send(frame(id, &r));
        return;
    }
    let created = Response::Coord(CoordResponse::Watched {
        events: vec![],
        revision: next - 1,
    });
    let _ = tx.send(frame(id, &created));
    loop {
        let (evs, last) = ctx.fake.events_from(next);
        if last >= next {
            let events = evs
                .into_iter()
                .filter(|e| spec.span.contains(&e.key))
                .collect();
            let r = Response::Coord(CoordResponse::Watched {
                events,
                revision: last,
            });
            let _ = tx.send(frame(id, &r));
            next = last + 1;
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            code = end.recv() => {
                let r = Response::Coord(CoordResponse::WatchEnd {
                    code: code.unwrap_or(ErrorCode::Cancelled),
                    message: "ended".into(),
                    revision: next - 1,
                });
                let _ = tx.send(frame(id, &r));
                return;
            }
        }
    }
}
