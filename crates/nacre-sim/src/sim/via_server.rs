//! Client requests through a node's request layer
//! ([`SimServer`](nacre_server::sim_server::SimServer)): the code that
//! answers a connection's requests in production (limits, consistency
//! gates, session stamps, the mapping of outcomes to replies), over the
//! node the simulator drives. Half the requests go this way by default
//! (`SimConfig::via_server_permille`), the rest straight to the node,
//! whose answers tell the checks more (the value a failed guard found).
//!
//! The layer's futures are polled after every event, inside the
//! simulator's tokio context, with a waker that does nothing: the
//! simulator polls everything anyway. What a future queued for its node
//! is delivered at once, as the node's loop would take it off its queue.
//! A paused node's futures are not polled (a stopped process runs none of
//! its tasks). A client that gives up (or sends its write again) leaves
//! its request to run on: production runs each request as a task of its
//! own, which a closed connection does not stop, and a request sent to a
//! paused node is taken when it resumes. Such orphans are polled until
//! they end. A node that crashes takes the answers it owed with it, and
//! its futures end with `going_down`.

use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use nacre_proto::{Consistency, ErrorCode, RangeQuery, Request, Response, Session};
use nacre_server::sim_server::Answer;
use rand::Rng;

use super::workload::{Outgoing, Pending, Waiting, READ_TIMEOUT_US};
use super::Sim;
use crate::checker::{Call, OpKind, OpValue};
use crate::model::WriteResult;

/// What a request through the layer is, to read its answer.
pub(super) enum ServerCall {
    /// A write, and the command the layer proposes for it (the replay
    /// check compares it with the log); for a `test_and_set`, the value it
    /// expected (its answer is the value found, whether or not it set).
    Write {
        data: Vec<u8>,
        expected: Option<Option<Bytes>>,
    },
    /// A consistent read.
    Consistent,
    /// A read of the node's own state, refused below `at_least`.
    Local { at_least: Option<u64> },
}

/// A request in the layer, and what it is.
pub(super) struct ServerWait {
    /// `None` once the client left it to run on its own.
    pub(super) answer: Option<Answer>,
    pub(super) call: ServerCall,
}

impl ServerWait {
    pub(super) fn take_data(&mut self) -> Vec<u8> {
        match &mut self.call {
            ServerCall::Write { data, .. } => std::mem::take(data),
            _ => Vec::new(),
        }
    }

    pub(super) fn data(&self) -> Option<&Vec<u8>> {
        match &self.call {
            ServerCall::Write { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// Messages a node takes off its queue in one turn, at most.
const QUEUE_TURN_MAX: usize = 64;
/// Poll-and-deliver rounds per event: enough for a request's message and
/// an answer the node gives at once (`NotMaster`).
const POLL_ROUNDS_MAX: usize = 3;

/// The query for a range read from `first` to `last`, both included.
fn range_query(first: &Bytes, last: &Bytes) -> RangeQuery {
    RangeQuery {
        first: Some(first.clone()),
        first_inclusive: true,
        last: Some(last.clone()),
        last_inclusive: true,
        max: 1000,
        reverse: false,
    }
}

/// The key a `test_and_set`'s batch guards.
fn test_and_set_key(kind: &OpKind) -> Bytes {
    match kind {
        OpKind::Write(b) => b
            .guards
            .first()
            .map(|g| g.key().clone())
            .unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// Write `req`, stamped with `session`, sent through the layer, which
/// proposes `data` for it.
pub(super) fn server_write(req: Request, session: Session, data: Vec<u8>) -> Outgoing {
    let expected = match &req {
        Request::TestAndSet { expected, .. } => Some(expected.clone()),
        _ => None,
    };
    let request = Request::Session {
        session,
        request: Box::new(req),
    };
    Outgoing::Server(request, ServerCall::Write { data, expected })
}

/// The request for a read of `kind` at `consistency`.
fn read_request(kind: &OpKind, consistency: Consistency) -> Request {
    match kind {
        OpKind::Get(k) => Request::GetEntry {
            consistency,
            key: k.clone(),
        },
        OpKind::Range { first, last } => Request::RangeEntries {
            consistency,
            query: range_query(first, last),
        },
        OpKind::Write(_) => unreachable!("not a read"),
    }
}

impl Sim {
    /// Whether the next request goes through the request layer.
    pub(super) fn via_server(&mut self) -> bool {
        let permille = self.cfg.via_server_permille.min(1000);
        permille > 0 && self.rng.random_range(0..1000) < permille
    }

    /// Sends client `c`'s read of `kind` through the layer: consistent, or
    /// of the node's own state.
    pub(super) fn send_read_via_server(&mut self, c: usize, kind: OpKind, how: ServerCall) {
        let consistency = match how {
            ServerCall::Consistent => Consistency::Consistent,
            ServerCall::Local { at_least: Some(i) } => Consistency::AtLeast(i),
            ServerCall::Local { at_least: None } => Consistency::Any,
            ServerCall::Write { .. } => unreachable!("a read"),
        };
        let call = Call {
            client: c,
            invoke_us: self.now_us,
            complete_us: None,
            kind,
            value: None,
        };
        let out = Outgoing::Server(read_request(&call.kind, consistency), how);
        self.send(c, call, out, READ_TIMEOUT_US);
    }

    /// Client `c`'s request `p` in the layer: polled, and its answer taken
    /// into the history. Whether the request is done.
    pub(super) fn poll_via_server(&mut self, c: usize, p: &mut Pending) -> bool {
        let Waiting::Server(w) = &mut p.waiting else {
            unreachable!("a request in the layer")
        };
        let Some(resp) = w.answer.as_mut().and_then(|a| self.poll_answer(p.node, a)) else {
            if self.now_us < p.deadline_us {
                return false;
            }
            // The client gives up; a write's outcome stays unknown, and
            // the node goes on with the request.
            self.orphan(p.node, w);
            return match w.call {
                ServerCall::Write { .. } => self.unknown_outcome(c, p),
                _ => true,
            };
        };
        // Done: nothing of it is left to run (or to poll again).
        w.answer = None;
        self.stats.answers_via_server += 1;
        match &w.call {
            ServerCall::Write { expected, .. } => {
                let expected = expected.clone();
                self.server_write_answered(c, p, expected, resp)
            }
            ServerCall::Consistent => self.server_read_answered(c, p, None, resp),
            ServerCall::Local { at_least } => {
                let at_least = *at_least;
                self.server_read_answered(c, p, Some(at_least), resp)
            }
        }
    }

    /// Polls `w` at node `i`, delivering what it queued for the node; its
    /// response, once there is one.
    pub(super) fn poll_answer(&mut self, i: usize, answer: &mut Answer) -> Option<Response> {
        if self.nodes[i].paused.is_some() {
            return None;
        }
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..POLL_ROUNDS_MAX {
            let polled = {
                let _tokio = self.rt.enter();
                answer.as_mut().poll(&mut cx)
            };
            if let Poll::Ready(resp) = polled {
                return Some(resp);
            }
            if !self.deliver_queued(i) {
                return None;
            }
        }
        None
    }

    /// The client leaves request `w` at node `i` to run on its own.
    pub(super) fn orphan(&mut self, i: usize, w: &mut ServerWait) {
        if let Some(answer) = w.answer.take() {
            self.orphans.push((i, answer));
        }
    }

    /// Polls the requests clients left, dropping those that ended.
    pub(super) fn poll_orphans(&mut self) {
        let mut orphans = std::mem::take(&mut self.orphans);
        orphans.retain_mut(|(i, answer)| {
            let ended = self.poll_answer(*i, answer).is_some();
            self.stats.orphans_ended += u64::from(ended);
            !ended
        });
        orphans.append(&mut self.orphans);
        self.orphans = orphans;
    }

    /// Hands node `i` what its request layer queued for it; whether there
    /// was anything.
    fn deliver_queued(&mut self, i: usize) -> bool {
        let Some(node) = self.nodes[i].node.as_mut() else {
            return false;
        };
        let msgs = node.take_queued(QUEUE_TURN_MAX);
        if msgs.is_empty() {
            return false;
        }
        self.step(i, msgs);
        true
    }

    /// Client `c`'s write `p` was answered `resp` by the layer. A failed
    /// guard comes back as an error naming its code and key, not the
    /// value found: the history takes it as `WriteResult::Refused`, and
    /// the replay check, which needs the log index, skips it. A
    /// `test_and_set` (`expected` is `Some`) is answered with the value it
    /// found, set or not, as Arakoon's is; the caller compares.
    fn server_write_answered(
        &mut self,
        c: usize,
        p: &mut Pending,
        expected: Option<Option<Bytes>>,
        resp: Response,
    ) -> bool {
        match resp {
            Response::Written { index, prev, count } => {
                let result = match expected {
                    Some(expected) if expected != prev => WriteResult::Failed {
                        code: ErrorCode::AssertionFailed,
                        key: test_and_set_key(&p.call.kind),
                        current: prev,
                    },
                    _ => WriteResult::Applied { prev, count },
                };
                self.write_acked(c, p, index, result);
                true
            }
            Response::Error(e) if e.code == ErrorCode::NotMaster => self.write_not_master(c, p),
            Response::Error(e)
                if matches!(e.code, ErrorCode::AssertionFailed | ErrorCode::NotFound)
                    && e.key.is_some() =>
            {
                let result = WriteResult::Refused {
                    code: e.code,
                    key: e.key.unwrap_or_default(),
                };
                self.log(|| format!("c{c} <- n{}: write refused: {result:?}", p.node));
                p.call.complete_us = Some(self.now_us);
                p.call.value = Some(OpValue::Write(result));
                self.history.push(p.call.clone());
                self.stats.writes_acked += 1;
                true
            }
            other => {
                self.log(|| format!("c{c} <- n{}: write outcome unknown: {other:?}", p.node));
                self.unknown_outcome(c, p)
            }
        }
    }

    /// Client `c`'s read `p` was answered `resp` by the layer; `local`:
    /// an `at_least`/`any` read (`Some`), else a consistent one.
    fn server_read_answered(
        &mut self,
        c: usize,
        p: &mut Pending,
        local: Option<Option<u64>>,
        resp: Response,
    ) -> bool {
        let (value, version) = match (&p.call.kind, resp) {
            (OpKind::Get(_), Response::Entry(e)) => (
                OpValue::Get(e.as_ref().map(|e| e.value.clone())),
                e.map_or(0, |e| e.rev.version),
            ),
            (OpKind::Range { .. }, Response::EntryPage(page)) if !page.more => (
                OpValue::Range(page.items.into_iter().map(|e| (e.key, e.value)).collect()),
                0,
            ),
            (_, Response::Error(e)) => {
                self.stats.reads_refused += 1;
                if e.code == ErrorCode::NotMaster {
                    self.follow_hint(c, p.node);
                }
                return true;
            }
            (kind, other) => {
                let why = format!("n{} answered {kind:?} with {other:?}", p.node);
                self.fail(why);
                return true;
            }
        };
        // The layer read the store in the poll that just returned, and
        // nothing has run since: the node's applied index is the one the
        // read saw.
        let Some(node) = self.nodes[p.node].node.as_ref() else {
            return true;
        };
        let applied = node
            .status()
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        match local {
            None => {
                self.log(|| format!("c{c} <- n{}: read (applied {applied}) = {value:?}", p.node));
                self.consistent_read_done(c, p, applied, value, version);
            }
            Some(at_least) => {
                let kind = p.call.kind.clone();
                self.local_read_done(c, p.node, applied, at_least, kind, value);
            }
        }
        true
    }
}
