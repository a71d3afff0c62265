//! The clients: what each one sends and where, how it follows a
//! NotMaster hint, and how answers are polled into the history the checks
//! read.

use std::collections::BTreeMap;

use bytes::Bytes;
use nacre_proto::{Batch, Command, ErrorCode, Guard, Op, Request, Session};
use rand::Rng;
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::via_server::{server_write, ServerCall, ServerWait};
use super::{Ev, Msg, ReadObs, ReadReply, Reader, Sim, WriteReply};
use crate::checker::{Call, OpKind, OpValue};
use crate::model::WriteResult;

const WRITE_TIMEOUT_US: u64 = 2_000_000;
/// How often a client that retries sends a write again, at most, after
/// a refusal or an unknown outcome (with the same session stamp).
const WRITE_RESENDS_MAX: u32 = 4;
pub(super) const READ_TIMEOUT_US: u64 = 1_000_000;

/// The answer a client waits for.
pub(super) enum Waiting {
    Write {
        rx: oneshot::Receiver<WriteReply>,
        data: Vec<u8>,
    },
    Read(oneshot::Receiver<ReadReply>),
    /// A request through the node's request layer (`via_server.rs`).
    Server(ServerWait),
}

/// What a request is sent as.
pub(super) enum Outgoing {
    /// A message straight to the node, and the answer to wait for.
    Node(Msg, Waiting),
    /// A client request to the node's request layer.
    Server(Request, ServerCall),
}

impl Pending {
    /// The client stops waiting at `now_us` and sends nothing again.
    pub(super) fn give_up(&mut self, now_us: u64) {
        self.deadline_us = now_us;
        self.resends_left = 0;
    }
}

impl Waiting {
    /// The command a write proposed, taken when it is acknowledged (the
    /// replay check compares it with the log).
    fn take_data(&mut self) -> Vec<u8> {
        match self {
            Waiting::Write { data, .. } => std::mem::take(data),
            Waiting::Server(w) => w.take_data(),
            Waiting::Read(_) => Vec::new(),
        }
    }

    /// The command a write proposes, to send it again.
    fn data(&self) -> Option<&Vec<u8>> {
        match self {
            Waiting::Write { data, .. } => Some(data),
            Waiting::Server(w) => w.data(),
            Waiting::Read(_) => None,
        }
    }

    fn is_consistent_read(&self) -> bool {
        match self {
            Waiting::Read(_) => true,
            Waiting::Server(w) => matches!(w.call, ServerCall::Consistent),
            Waiting::Write { .. } => false,
        }
    }
}

/// What polling a client's answer gives.
type Answer<T> = Result<T, TryRecvError>;

/// A client's operation in flight.
pub(super) struct Pending {
    pub(super) call: Call,
    pub(super) node: usize,
    pub(super) deadline_us: u64,
    pub(super) waiting: Waiting,
    /// A consistent read sent to a paused leader after another node
    /// acknowledged a write
    /// ([`Scenario::LeaderPause`](super::Scenario::LeaderPause)).
    pub(super) pause_read: bool,
    /// Times this write may still be sent again with its session stamp,
    /// as the real client does (0 for reads and for clients that give up).
    pub(super) resends_left: u32,
    /// An earlier send of this write ended without a definite answer, so
    /// it may have applied even if a later one is refused.
    pub(super) maybe_applied: bool,
}

/// One client: one operation in flight at a time.
pub(super) struct Client {
    pub(super) target: usize,
    pub(super) seq: u64,
    pub(super) pending: Option<Pending>,
    /// Highest log index this client has seen (its writes, its reads).
    pub(super) seen_index: u64,
    /// Values this client saw, per key, to aim test_and_set at.
    pub(super) seen: BTreeMap<Bytes, Option<Bytes>>,
    /// Versions this client saw by consistent gets, to aim version guards
    /// at (0: absent, as a guard means it).
    seen_versions: BTreeMap<Bytes, u64>,
    /// A scenario's reader: sends only consistent reads, all to this node.
    pub(super) pin: Option<usize>,
    /// A pause's reader, until another node acknowledges a write: it waits.
    pub(super) hold: bool,
}

impl Client {
    pub(super) fn new(target: usize) -> Client {
        Client {
            target,
            seq: 0,
            pending: None,
            seen_index: 0,
            seen: BTreeMap::new(),
            seen_versions: BTreeMap::new(),
            pin: None,
            hold: false,
        }
    }
}

impl Sim {
    fn value(&mut self, c: usize) -> Bytes {
        let s = self.clients[c].seq;
        Bytes::from(format!("c{c}-{s}"))
    }

    fn key(&mut self) -> Bytes {
        let i = self.rng.random_range(0..self.keys.len());
        self.keys[i].clone()
    }

    /// A node that answers at once: up and not paused.
    pub(super) fn up_node(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some() && self.nodes[i].paused.is_none())
            .collect();
        (!up.is_empty()).then(|| up[self.rng.random_range(0..up.len())])
    }

    /// Client `c` wakes up: it sends its next operation, or reads at once
    /// from a node's own state (`at_least` / `any`), or waits.
    pub(super) fn client_wake(&mut self, c: usize) {
        if !self.workload || self.clients[c].pending.is_some() {
            return;
        }
        if self.clients[c].hold {
            let d = self.rng.random_range(1_000..5_000);
            self.at(d, Ev::Client(c));
            return;
        }
        self.clients[c].seq += 1;
        // A scenario's reader only sends consistent reads.
        let roll = if self.clients[c].pin.is_some() {
            self.rng.random_range(53..80)
        } else {
            self.rng.random_range(0..100)
        };
        let k = self.key();
        let v = self.value(c);
        let via_server = self.via_server();
        if let Some(req) = self.write_request(c, roll, &k, v) {
            self.send_write(c, req, via_server);
            return;
        }
        let kind = self.read_kind(c, k);
        if roll < 80 {
            if via_server {
                self.send_read_via_server(c, kind, ServerCall::Consistent);
            } else {
                self.send_read(c, kind);
            }
            return;
        }
        // at_least / any: served at once by whichever node the client
        // reaches, from its own state.
        let at_least = (roll < 92).then_some(self.clients[c].seen_index);
        if via_server {
            // Answered at the next poll; the client wakes after that.
            self.send_read_via_server(c, kind, ServerCall::Local { at_least });
            return;
        }
        self.read_local(c, kind, at_least);
        let d = self.rng.random_range(0..20_000);
        self.at(d, Ev::Client(c));
    }

    /// The write `roll` picks for client `c`, about key `k` and writing
    /// `v`; `None` when the roll picks a read.
    fn write_request(&mut self, c: usize, roll: i32, k: &Bytes, v: Bytes) -> Option<Request> {
        match roll {
            0..=24 => Some(Request::Set {
                key: k.clone(),
                value: v,
            }),
            25..=32 => Some(Request::Delete { key: k.clone() }),
            33..=44 => {
                let expected = self.clients[c].seen.get(k).cloned().flatten();
                let wanted = self.rng.random_bool(0.85).then_some(v);
                Some(Request::TestAndSet {
                    key: k.clone(),
                    expected,
                    wanted,
                })
            }
            45..=52 => Some(self.sequence_request(c, k, v)),
            _ => None,
        }
    }

    /// A sequence over three random keys: a guard on `k` (or an `assert`
    /// step), then a set and a remove (sometimes a delete_prefix).
    fn sequence_request(&mut self, c: usize, k: &Bytes, v: Bytes) -> Request {
        let (k2, k3) = (self.key(), self.key());
        let seen_version = self.clients[c].seen_versions.get(k).copied();
        let guard = match self.clients[c].seen.get(k).cloned().flatten() {
            // Optimistic concurrency with the version a get returned.
            _ if self.rng.random_bool(0.3) => {
                Guard::VersionEquals(k.clone(), seen_version.unwrap_or(0))
            }
            Some(seen) => Guard::ValueEquals(k.clone(), seen),
            None if self.rng.random_bool(0.5) => Guard::Absent(k.clone()),
            None => Guard::Present(k.clone()),
        };
        let (guards, mut ops) = if self.rng.random_bool(0.5) {
            (vec![guard], vec![])
        } else {
            (vec![], vec![Op::Check(guard)])
        };
        ops.push(Op::Set(k2, v));
        ops.push(match self.rng.random_range(0..20) {
            // Every key (they all start with "k"), or the keys under one.
            0 => Op::DeletePrefix(Bytes::from_static(b"k")),
            1..=2 => Op::DeletePrefix(k3),
            _ => Op::Remove(k3),
        });
        Request::Batch(Batch { guards, ops })
    }

    /// Sends `req` with client `c`'s session: through the node's request
    /// layer, or straight to the node as a proposal.
    fn send_write(&mut self, c: usize, req: Request, via_server: bool) {
        let batch = req.to_batch().expect("a write");
        let session = Session {
            client_id: c as u64 + 1,
            seq: self.clients[c].seq,
        };
        let data = Command {
            session: Some(session),
            batch: batch.clone(),
        }
        .encode();
        let call = Call {
            client: c,
            invoke_us: self.now_us,
            complete_us: None,
            kind: OpKind::Write(batch),
            value: None,
        };
        let out = if via_server {
            server_write(req, session, data)
        } else {
            let (reply, rx) = oneshot::channel();
            let msg = Msg::Propose {
                data: data.clone(),
                reply,
            };
            Outgoing::Node(msg, Waiting::Write { rx, data })
        };
        self.send(c, call, out, WRITE_TIMEOUT_US);
        // Half the writes are retried under their session until they get
        // a definite answer, as the real client retries: exactly once is
        // then the state machine's job (its deduplication), and the
        // replay check holds every answer to the log.
        if self.rng.random_bool(0.5) {
            if let Some(p) = self.clients[c].pending.as_mut() {
                p.resends_left = WRITE_RESENDS_MAX;
            }
        }
    }

    /// What client `c` reads: a get of `k`, or a range from `k`.
    fn read_kind(&mut self, c: usize, k: Bytes) -> OpKind {
        if let Some(w) = self.scenario_read_key(c) {
            // A pause's reader reads what the others just wrote.
            OpKind::Get(w)
        } else if self.rng.random_bool(0.7) {
            OpKind::Get(k)
        } else {
            let (a, b) = (k, self.key());
            let (first, last) = if a <= b { (a, b) } else { (b, a) };
            OpKind::Range { first, last }
        }
    }

    /// Sends a consistent read.
    fn send_read(&mut self, c: usize, kind: OpKind) {
        let (reply, rx) = oneshot::channel();
        let call = Call {
            client: c,
            invoke_us: self.now_us,
            complete_us: None,
            kind,
            value: None,
        };
        let out = Outgoing::Node(Msg::Read { reply }, Waiting::Read(rx));
        self.send(c, call, out, READ_TIMEOUT_US);
    }

    /// An `at_least` (`Some`) or `any` read, served at once by a random
    /// node that answers, from its own state; refused when that node has
    /// not applied `at_least` yet.
    fn read_local(&mut self, c: usize, kind: OpKind, at_least: Option<u64>) {
        let Some(i) = self.up_node() else {
            return;
        };
        let node = self.nodes[i].node.as_ref().expect("up");
        let applied = node
            .status()
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        if at_least.is_some_and(|want| applied < want) {
            self.stats.reads_refused += 1;
            return;
        }
        let value = read(node.store(), &kind);
        self.local_read_done(c, i, applied, at_least, kind, value);
    }

    /// Client `c`'s `at_least` (`Some`) or `any` read of `kind` returned
    /// `value` from node `i`, which had applied `applied`.
    pub(super) fn local_read_done(
        &mut self,
        c: usize,
        i: usize,
        applied: u64,
        at_least: Option<u64>,
        kind: OpKind,
        value: OpValue,
    ) {
        self.stats.reads_stale += 1;
        self.log(|| format!("c{c} reads {kind:?} at n{i} (applied {applied}, at_least {at_least:?}) = {value:?}"));
        self.note_read(c, applied, &value);
        self.reads.push(ReadObs {
            node: i,
            applied,
            at_least,
            kind,
            value,
        });
    }

    /// Sends client `c`'s request to a node (usually the leader it was
    /// last told about) and waits for the answer until `timeout_us`.
    pub(super) fn send(&mut self, c: usize, call: Call, out: Outgoing, timeout_us: u64) {
        let mut i = if let Some(p) = self.clients[c].pin {
            p
        } else if self.rng.random_bool(0.1) {
            self.rng.random_range(0..self.nodes.len())
        } else {
            self.clients[c].target
        };
        i = self.scenario_redirect(c, i);
        if self.nodes[i].node.is_none() {
            // Connection refused: nothing was sent; try elsewhere soon.
            self.clients[c].target = self.rng.random_range(0..self.nodes.len());
            let d = self.rng.random_range(1_000..20_000);
            self.at(d, Ev::Client(c));
            return;
        }
        self.log(|| format!("c{c} -> n{i}: {:?}", call.kind));
        let (waiting, msg) = match out {
            Outgoing::Node(msg, waiting) => (waiting, Some(msg)),
            Outgoing::Server(req, call) => {
                self.stats.requests_via_server += 1;
                let server = self.nodes[i].server.as_ref().expect("up");
                let answer = server.execute(req);
                (
                    Waiting::Server(ServerWait {
                        answer: Some(answer),
                        call,
                    }),
                    None,
                )
            }
        };
        let pause_read = self.at_paused_leader_after_write(i) && waiting.is_consistent_read();
        self.stats.pause_reads_sent += u64::from(pause_read);
        self.clients[c].pending = Some(Pending {
            call,
            node: i,
            deadline_us: self.now_us + timeout_us,
            waiting,
            pause_read,
            resends_left: 0,
            maybe_applied: false,
        });
        if let Some(msg) = msg {
            self.deliver(i, msg);
        }
    }

    pub(super) fn note_read(&mut self, c: usize, applied: u64, value: &OpValue) {
        let cl = &mut self.clients[c];
        cl.seen_index = cl.seen_index.max(applied);
        match value {
            OpValue::Get(_) | OpValue::Write(_) => {}
            OpValue::Range(kvs) => {
                for (k, v) in kvs {
                    cl.seen.insert(k.clone(), Some(v.clone()));
                }
            }
        }
    }

    /// Takes the answers that came, and the timeouts that fell due, into
    /// the history; a client done with its operation wakes up again soon.
    pub(super) fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some(mut p) = self.clients[c].pending.take() else {
                continue;
            };
            let done = match &mut p.waiting {
                Waiting::Write { rx, .. } => {
                    let answer = rx.try_recv();
                    self.poll_write(c, &mut p, answer)
                }
                Waiting::Read(rx) => {
                    let answer = rx.try_recv();
                    self.poll_read(c, &mut p, answer)
                }
                Waiting::Server(_) => self.poll_via_server(c, &mut p),
            };
            if done {
                let d = self.rng.random_range(0..20_000);
                self.at(d, Ev::Client(c));
            } else {
                self.clients[c].pending = Some(p);
            }
        }
    }

    /// Client `c`'s write `p` and what came back for it: whether it is
    /// done (acknowledged, refused, or of unknown outcome).
    fn poll_write(&mut self, c: usize, p: &mut Pending, answer: Answer<WriteReply>) -> bool {
        match answer {
            Ok(Ok((index, outcome))) => {
                self.write_acked(c, p, index, WriteResult::from(&outcome));
                true
            }
            Ok(Err(e)) if e.code == ErrorCode::NotMaster => self.write_not_master(c, p),
            Ok(Err(e)) => {
                self.log(|| format!("c{c} <- n{}: write outcome unknown: {}", p.node, e.message));
                self.unknown_outcome(c, p)
            }
            Err(TryRecvError::Closed) => self.unknown_outcome(c, p),
            Err(TryRecvError::Empty) if self.now_us >= p.deadline_us => self.unknown_outcome(c, p),
            Err(TryRecvError::Empty) => false,
        }
    }

    /// Client `c`'s write `p` was refused with `NotMaster`: this send never
    /// entered the log (or its index went to another leader's entry), so
    /// it never applies. Whether the write is done.
    pub(super) fn write_not_master(&mut self, c: usize, p: &mut Pending) -> bool {
        self.stats.writes_refused += 1;
        self.follow_hint(c, p.node);
        if self.resend_write(c, p) {
            return false;
        }
        if p.maybe_applied {
            self.open_write(p.call.clone());
        }
        true
    }

    /// Client `c`'s write `p` was acknowledged at `index` with `result`.
    pub(super) fn write_acked(
        &mut self,
        c: usize,
        p: &mut Pending,
        index: u64,
        result: WriteResult,
    ) {
        self.log(|| format!("c{c} <- n{}: write at {index}: {result:?}", p.node));
        p.call.complete_us = Some(self.now_us);
        p.call.value = Some(OpValue::Write(result.clone()));
        let data = p.waiting.take_data();
        self.acked.push((self.history.len(), index, data));
        self.history.push(p.call.clone());
        self.stats.writes_acked += 1;
        self.scenario_write_acked(p.node, &p.call.kind);
        let cl = &mut self.clients[c];
        cl.seen_index = cl.seen_index.max(index);
        if let (OpKind::Write(b), WriteResult::Applied { .. }) = (&p.call.kind, &result) {
            for op in &b.ops {
                match op {
                    Op::Set(k, v) => {
                        cl.seen.insert(k.clone(), Some(v.clone()));
                    }
                    Op::Delete(k) | Op::Remove(k) => {
                        cl.seen.insert(k.clone(), None);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Client `c`'s consistent read `p` and what came back for it: whether
    /// it is done (answered, refused or given up).
    fn poll_read(&mut self, c: usize, p: &mut Pending, answer: Answer<ReadReply>) -> bool {
        match answer {
            Ok(Ok(read_index)) => {
                self.read_answered(c, p, read_index);
                true
            }
            Ok(Err(e)) => {
                self.stats.reads_refused += 1;
                if e.code == ErrorCode::NotMaster {
                    self.follow_hint(c, p.node);
                }
                true
            }
            Err(TryRecvError::Closed) => true,
            Err(TryRecvError::Empty) => self.now_us >= p.deadline_us,
        }
    }

    /// The node asked may release client `c`'s read `p` once it has
    /// applied `read_index`: the client reads its store now.
    fn read_answered(&mut self, c: usize, p: &mut Pending, read_index: u64) {
        let Some(node) = self.nodes[p.node].node.as_ref() else {
            return;
        };
        let applied = node
            .status()
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        let value = read(node.store(), &p.call.kind);
        let version = match &p.call.kind {
            OpKind::Get(k) => Reader::new(node.store())
                .get_entry(k)
                .expect("store read")
                .map_or(0, |e| e.rev.version),
            _ => 0,
        };
        if applied < read_index {
            let why = format!(
                "n{} released a read at index {read_index} having applied only {applied}",
                p.node
            );
            self.fail(why);
        }
        self.log(|| {
            format!(
                "c{c} <- n{}: read (index {read_index}, applied {applied}) = {value:?}",
                p.node
            )
        });
        self.consistent_read_done(c, p, applied, value, version);
    }

    /// Client `c`'s consistent read `p` returned `value` (and, for a get,
    /// the key's `version`) from a node that had applied `applied`.
    pub(super) fn consistent_read_done(
        &mut self,
        c: usize,
        p: &mut Pending,
        applied: u64,
        value: OpValue,
        version: u64,
    ) {
        p.call.complete_us = Some(self.now_us);
        p.call.value = Some(value.clone());
        self.history.push(p.call.clone());
        self.stats.reads_consistent += 1;
        self.stats.pause_reads_answered += u64::from(p.pause_read);
        self.scenario_read_answered(p.node);
        self.note_read(c, applied, &value);
        if let (OpKind::Get(k), OpValue::Get(v)) = (&p.call.kind, &value) {
            self.clients[c].seen.insert(k.clone(), v.clone());
            self.clients[c].seen_versions.insert(k.clone(), version);
        }
        self.reads.push(ReadObs {
            node: p.node,
            applied,
            at_least: None,
            kind: p.call.kind.clone(),
            value,
        });
    }

    /// Client `c`'s write `p` got no definite answer: it is sent again if
    /// the client retries (not done), else it stays open (done).
    pub(super) fn unknown_outcome(&mut self, c: usize, p: &mut Pending) -> bool {
        p.maybe_applied = true;
        if self.resend_write(c, p) {
            return false;
        }
        self.open_write(p.call.clone());
        true
    }

    /// Sends client `c`'s write `p` again, with the same command and
    /// session stamp, to the node it now believes leads (any node that is
    /// up if that one is down); false if the client has no resends left.
    fn resend_write(&mut self, c: usize, p: &mut Pending) -> bool {
        if p.resends_left == 0 || !self.workload {
            return false;
        }
        let Some(data) = p.waiting.data().cloned() else {
            return false;
        };
        let target = self.clients[c].target;
        let mut i = self.scenario_redirect(c, target);
        if self.nodes[i].node.is_none() {
            let Some(up) = self.up_node() else {
                return false;
            };
            i = up;
        }
        p.resends_left -= 1;
        self.stats.writes_resent += 1;
        if let Waiting::Server(w) = &mut p.waiting {
            let node = p.node;
            self.orphan(node, w);
        }
        let (reply, rx) = oneshot::channel();
        p.waiting = Waiting::Write {
            rx,
            data: data.clone(),
        };
        p.node = i;
        p.deadline_us = self.now_us + WRITE_TIMEOUT_US;
        self.log(|| format!("c{c} -> n{i}: again {:?}", p.call.kind));
        self.deliver(i, Msg::Propose { data, reply });
        true
    }

    /// A write whose outcome is unknown stays open in the history: it may
    /// take effect at any point after its invocation, or never.
    fn open_write(&mut self, call: Call) {
        self.stats.writes_open += 1;
        self.history.push(call);
    }

    /// Goes to the leader the refusing node names, else anywhere.
    pub(super) fn follow_hint(&mut self, c: usize, asked: usize) {
        let leader = self.nodes[asked].node.as_ref().map(|n| {
            n.status()
                .leader_id
                .load(std::sync::atomic::Ordering::Acquire)
        });
        self.clients[c].target =
            match leader.and_then(|l| self.nodes.iter().position(|n| n.id == l)) {
                Some(i) => i,
                None => self.rng.random_range(0..self.nodes.len()),
            };
    }
}

/// Reads `kind` from a node's store, at whatever index it has applied.
pub(super) fn read(store: &nacre_store::Store, kind: &OpKind) -> OpValue {
    let r = Reader::new(store);
    match kind {
        OpKind::Get(k) => OpValue::Get(r.get(k).expect("store read")),
        OpKind::Range { first, last } => {
            let q = nacre_proto::RangeQuery {
                first: Some(first.clone()),
                first_inclusive: true,
                last: Some(last.clone()),
                last_inclusive: true,
                max: 1000,
                reverse: false,
            };
            OpValue::Range(
                r.range_entries(&q, 1000)
                    .expect("store read")
                    .into_iter()
                    .map(|e| (e.key, e.value))
                    .collect(),
            )
        }
        OpKind::Write(_) => unreachable!("not a read"),
    }
}
