//! etcd's Watch service over the node's watch hub (watch/): each gRPC
//! stream is one task that registers its watches with the hub and turns
//! their frames into etcd's `WatchResponse`s. Any member serves watches
//! from its own history: nothing is forwarded.
//!
//! etcd revisions are log indexes (state/etcd.rs), the hub's too, so a
//! start revision is a hub start revision as it is. What needs care is
//! the revision a header claims when it carries no events (created,
//! progress): everything up to it must have been sent. The store is never
//! behind the hub (the raft loop publishes after it commits), so the
//! store's etcd revision capped at the hub's frame revision is a claim
//! that holds, and it is the exact etcd revision whenever the hub has
//! caught up with the store.
//!
//! Bounded: responses wait in a small queue to the gRPC stream; while the
//! client does not read, the task does not drain the hub's channels, and
//! the hub ends a watch that falls `watch_buffer_frames` behind (its
//! cancel reason says so).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::mvccpb;
use nacre_proto::{
    CoordResponse, ErrorCode, ErrorReply, EtcdMeta, EventKind, KeySpan, WatchEvent, WatchSpec,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

use super::Api;
use crate::state::{read_revision, COMPACTED};

/// Responses queued to one gRPC stream before its task waits for the
/// client to read.
const OUT_QUEUE: usize = 64;
/// etcd's watch id of a response about no watch (a refused create, a
/// progress answer for the whole stream).
const INVALID_ID: i64 = -1;
/// etcd's reasons (mvcc/watcher.go), as clients show them.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

pub(crate) struct WatchService(pub Arc<Api>, watch::Receiver<bool>);

/// The Watch service, with the message bounds of the API. `stop` turns
/// true when the node stops: open streams end then (a watch stream never
/// ends by itself, and would hold the listener's shutdown).
pub(super) fn service(
    api: &Arc<Api>,
    stop: &watch::Receiver<bool>,
) -> pb::watch_server::WatchServer<WatchService> {
    pb::watch_server::WatchServer::from_arc(Arc::new(WatchService(api.clone(), stop.clone())))
        .max_decoding_message_size(api.request_bytes_max())
        .max_encoding_message_size(api.response_bytes_max())
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let stream = WatchStream {
            api: self.0.clone(),
            out,
            frames: StreamMap::new(),
            watches: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(req.into_inner(), self.1.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One watch of a stream, as its create request asked.
struct Active {
    hub_id: u64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// Events went out since the last progress tick: like etcd, the next
    /// notification is skipped (the events said as much).
    busy: bool,
}

/// Why a stream's task stops: the client left, or an error to tell it.
enum Stop {
    Gone,
    Failed(Status),
}

type Step = Result<(), Stop>;

/// What woke a stream's task.
enum Wake {
    Request(Result<Option<pb::WatchRequest>, Status>),
    Frame(i64, CoordResponse),
    Tick,
    Stop,
}

struct WatchStream {
    api: Arc<Api>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// Each watch's hub channel, by etcd watch id.
    frames: StreamMap<i64, ReceiverStream<CoordResponse>>,
    watches: HashMap<i64, Active>,
    /// The next server-assigned watch id (etcd starts at 0).
    next_id: i64,
}

impl WatchStream {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::WatchRequest>,
        mut stop: watch::Receiver<bool>,
    ) {
        let period = Duration::from_millis(self.api.shared.config.watch_progress_ms.max(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut reading = true;
        let stopped = loop {
            let wake = tokio::select! {
                r = inbound.message(), if reading => Wake::Request(r),
                Some((id, f)) = self.frames.next(), if !self.frames.is_empty() => Wake::Frame(id, f),
                _ = ticker.tick() => Wake::Tick,
                () = self.out.closed() => Wake::Stop,
                _ = stop.wait_for(|s| *s) => Wake::Stop,
            };
            let step = match wake {
                Wake::Request(Ok(Some(req))) => self.request(req).await,
                // The client sent all it will; like etcd, its watches go on
                // until the call ends.
                Wake::Request(Ok(None)) => {
                    reading = false;
                    Ok(())
                }
                Wake::Request(Err(_)) | Wake::Stop => Err(Stop::Gone),
                Wake::Frame(id, frame) => self.frame(id, frame).await,
                Wake::Tick => {
                    self.tick();
                    Ok(())
                }
            };
            if let Err(s) = step {
                break s;
            }
        };
        let hub = &self.api.shared.node.watches;
        for w in self.watches.values() {
            hub.end_watch(w.hub_id, ErrorCode::Cancelled, "the watch stream ended");
        }
        if let Stop::Failed(status) = stopped {
            let _ = self.out.send(Err(status)).await;
        }
    }

    async fn request(&mut self, req: pb::WatchRequest) -> Step {
        use pb::watch_request::RequestUnion as R;
        match req.request_union {
            Some(R::CreateRequest(c)) => self.create(c).await,
            Some(R::CancelRequest(c)) => self.cancel(c.watch_id).await,
            Some(R::ProgressRequest(_)) => self.progress_all().await,
            // etcd ignores a request it does not know rather than end the
            // stream.
            None => Ok(()),
        }
    }

    /// etcd's store revision and its last compaction's, from a fresh
    /// snapshot.
    fn revisions(&self) -> Result<(u64, u64), Stop> {
        read_revision(&self.api.shared.store.begin_read())
            .map_err(|e| Stop::Failed(super::status(ErrorReply::from(e))))
    }

    async fn send(&self, resp: pb::WatchResponse) -> Step {
        self.out.send(Ok(resp)).await.map_err(|_| Stop::Gone)
    }

    fn response(&self, watch_id: i64, revision: u64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(self.api.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Step {
        let spec = match self.check(&c) {
            Ok(spec) => spec,
            Err(reason) => return self.refuse(reason).await,
        };
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let (revision, compacted) = self.revisions()?;
        if spec.start_rev != 0 && spec.start_rev < compacted {
            // etcd creates the watch, then cancels it as compacted
            // (mvcc/watcher_group.go: a start below the compacted revision).
            self.send(created(self.response(id, revision))).await?;
            return self.send(compacted_response(id, compacted)).await;
        }
        let hub = &self.api.shared.node.watches;
        let mut reg = match hub.register(&spec) {
            Ok(reg) => reg,
            Err(e) => return self.refuse(e.message).await,
        };
        // The hub queues a watch's first frame before `register` returns:
        // the start (the revision it is sent through), or its end.
        let (first_through, first_end) = match reg.rx.try_recv() {
            Ok(CoordResponse::Watched { events, revision }) if events.is_empty() => {
                (Some(revision), None)
            }
            Ok(frame) => (None, Some(frame)),
            Err(_) => (None, None),
        };
        let (revision, _) = self.revisions()?;
        // A watch from now starts after the hub's revision: the created
        // header must not claim more (module doc).
        let revision = match first_through {
            Some(through) if spec.start_rev == 0 => revision.min(through),
            _ => revision,
        };
        let watch = Active {
            hub_id: reg.id,
            no_put: has_filter(&c, pb::watch_create_request::FilterType::Noput),
            no_delete: has_filter(&c, pb::watch_create_request::FilterType::Nodelete),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            busy: false,
        };
        self.watches.insert(id, watch);
        self.frames.insert(id, ReceiverStream::new(reg.rx));
        self.send(created(self.response(id, revision))).await?;
        match first_end {
            Some(frame) => self.frame(id, frame).await,
            None => Ok(()),
        }
    }

    /// A create request as a hub watch, or etcd's reason to refuse it.
    fn check(&self, c: &pb::WatchCreateRequest) -> Result<WatchSpec, String> {
        if c.start_revision < 0 {
            return Err(COMPACTED.to_string());
        }
        // etcd: an empty key is the smallest key, "\0".
        let key = if c.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            c.key.clone()
        };
        let span = match &c.range_end[..] {
            [] => KeySpan::Key(key),
            [0] => KeySpan::Range {
                start: key,
                end: None,
            },
            end if key[..] >= *end => return Err(EMPTY_RANGE.to_string()),
            _ => KeySpan::Range {
                start: key,
                end: Some(c.range_end.clone()),
            },
        };
        if c.watch_id != 0 && self.watches.contains_key(&c.watch_id) {
            return Err(DUPLICATE_ID.to_string());
        }
        let shared = &self.api.shared;
        let max = shared.config.watches_per_connection_max;
        if self.watches.len() >= max {
            return Err(format!(
                "etcdserver: too many watches on this stream (watches_per_connection_max {max})"
            ));
        }
        if shared
            .node
            .status
            .applied
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
        {
            return Err("etcdserver: this node has no copy of the cluster's state yet".to_string());
        }
        Ok(WatchSpec {
            span,
            start_rev: c.start_revision as u64,
            prev_value: c.prev_kv,
        })
    }

    /// etcd's answer to a create it refuses: created and cancelled at
    /// once, under no watch id.
    async fn refuse(&self, reason: String) -> Step {
        let (revision, _) = self.revisions()?;
        let mut resp = created(self.response(INVALID_ID, revision));
        resp.canceled = true;
        resp.cancel_reason = reason;
        self.send(resp).await
    }

    /// Cancels watch `id` (an unknown id gets no answer, as in etcd).
    async fn cancel(&mut self, id: i64) -> Step {
        let Some(w) = self.forget(id) else {
            return Ok(());
        };
        let hub = &self.api.shared.node.watches;
        hub.end_watch(w.hub_id, ErrorCode::Cancelled, "cancelled by the client");
        let (revision, _) = self.revisions()?;
        self.send(canceled(self.response(id, revision), String::new()))
            .await
    }

    /// Drops watch `id` from the stream; frames it still has are dropped.
    fn forget(&mut self, id: i64) -> Option<Active> {
        self.frames.remove(&id);
        self.watches.remove(&id)
    }

    async fn frame(&mut self, id: i64, frame: CoordResponse) -> Step {
        match frame {
            CoordResponse::Watched { events, revision } if events.is_empty() => {
                self.progress_one(id, revision).await
            }
            CoordResponse::Watched { events, .. } => self.events(id, events).await,
            CoordResponse::WatchEnd {
                code,
                message,
                revision,
            } => self.ended(id, code, message, revision).await,
            _ => Ok(()),
        }
    }

    /// A hub progress frame: everything up to `through` was sent.
    async fn progress_one(&mut self, id: i64, through: u64) -> Step {
        if !self.watches.get(&id).is_some_and(|w| w.progress_notify) {
            return Ok(());
        }
        let (revision, _) = self.revisions()?;
        self.send(self.response(id, revision.min(through))).await
    }

    /// A hub frame's events (whole revisions, in order): one response per
    /// revision, its header at that revision, without what the filters
    /// leave out.
    async fn events(&mut self, id: i64, events: Vec<WatchEvent>) -> Step {
        let Some(w) = self.watches.get(&id) else {
            return Ok(());
        };
        let (no_put, no_delete, prev_kv) = (w.no_put, w.no_delete, w.prev_kv);
        // etcd reads an event's previous pair at the revision before it
        // when it sends the event, and sends none once that revision is
        // compacted: the same here, so clients see what etcd's see.
        let compacted = if prev_kv { self.revisions()?.1 } else { 0 };
        let mut batch = Vec::new();
        let mut revision = 0;
        // The state before the revision of each key it changed: etcd's
        // previous pair is read at the revision before, so a key changed
        // twice in one Txn has the same previous pair both times.
        let mut before: HashMap<Bytes, (Option<Bytes>, EtcdMeta)> = HashMap::new();
        for mut e in events {
            if e.revision() != revision {
                before.clear();
            }
            match before.get(&e.key) {
                Some((prev, meta)) => {
                    e.prev = prev.clone();
                    e.etcd.prev_rev = meta.prev_rev;
                    e.etcd.prev_lease = meta.prev_lease;
                }
                None => {
                    before.insert(e.key.clone(), (e.prev.clone(), e.etcd));
                }
            }
            if e.revision() != revision && !batch.is_empty() {
                self.send_events(id, revision, std::mem::take(&mut batch))
                    .await?;
                if !self.watches.contains_key(&id) {
                    return Ok(());
                }
            }
            revision = e.revision();
            let skip = match e.kind {
                EventKind::Put => no_put,
                EventKind::Delete => no_delete,
            };
            // etcd sends no previous pair with an event that creates its
            // key, even when the same Txn deleted the key just before.
            let creates = e.kind == EventKind::Put && e.rev.create_rev == e.rev.mod_rev;
            if !skip {
                let with_prev = prev_kv && !creates && e.revision() > compacted;
                batch.push(to_event(&e, with_prev));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.send_events(id, revision, batch).await
    }

    /// Sends one revision's events: whole if they fit the response limit,
    /// else in fragments if the watch asked for them, else the watch ends
    /// with a reason (etcd would fail the whole stream).
    async fn send_events(&mut self, id: i64, revision: u64, events: Vec<mvccpb::Event>) -> Step {
        let Some(w) = self.watches.get_mut(&id) else {
            return Ok(());
        };
        w.busy = true;
        let fragment = w.fragment;
        let mut resp = self.response(id, revision);
        resp.events = events;
        let max = self.api.response_bytes_max();
        let size = resp.encoded_len();
        if size <= max {
            return self.send(resp).await;
        }
        if fragment {
            if let Some(parts) = fragments(resp, max) {
                for part in parts {
                    self.send(part).await?;
                }
                return Ok(());
            }
        }
        let reason = format!(
            "etcdserver: the events of revision {revision} take {size} bytes, over the response \
             limit of {max} (etcd_response_bytes_max){}; watch again from {}",
            if fragment {
                " even one by one"
            } else {
                ", and the watch did not ask for fragments"
            },
            revision + 1
        );
        if let Some(w) = self.forget(id) {
            let hub = &self.api.shared.node.watches;
            hub.end_watch(w.hub_id, ErrorCode::TooLarge, &reason);
        }
        let (current, _) = self.revisions()?;
        self.send(canceled(self.response(id, current), reason))
            .await
    }

    /// The hub ended watch `id`: etcd's compaction answer for a start the
    /// history no longer covers, else a cancel with the hub's reason
    /// (too slow, too large, the node stopping).
    async fn ended(&mut self, id: i64, code: ErrorCode, message: String, revision: u64) -> Step {
        if self.forget(id).is_none() {
            return Ok(());
        }
        let (current, compacted) = self.revisions()?;
        let resp = match code {
            // A restart from the revision given must be accepted: both the
            // hub's oldest kept revision and etcd's compaction bound it.
            ErrorCode::Compacted => compacted_response(id, revision.max(compacted)),
            // `revision`: the last one sent, which etcd's response has no
            // field for; a client resumes after it.
            _ => canceled(
                self.response(id, current),
                format!("etcdserver: {message} (sent through revision {revision})"),
            ),
        };
        self.send(resp).await
    }

    /// etcd's progress request: one answer for the whole stream (watch id
    /// -1), at a revision through which every watch of the stream was
    /// sent. Each watch's frames the hub queued up to what it reports are
    /// sent first.
    async fn progress_all(&mut self) -> Step {
        let hub = self.api.shared.node.watches.clone();
        let ids: Vec<(i64, u64)> = self.watches.iter().map(|(i, w)| (*i, w.hub_id)).collect();
        let mut through = u64::MAX;
        for (id, hub_id) in ids {
            let sent = hub.sent_through(hub_id);
            // Frames queued by now hold everything up to `sent`.
            let queued = self.receiver(id).map_or(0, |rx| rx.len());
            for _ in 0..queued {
                let Some(frame) = self.receiver(id).and_then(|rx| rx.try_recv().ok()) else {
                    break;
                };
                self.frame(id, frame).await?;
            }
            if let (Some(sent), true) = (sent, self.watches.contains_key(&id)) {
                through = through.min(sent);
            }
        }
        let (revision, _) = self.revisions()?;
        self.send(self.response(INVALID_ID, revision.min(through)))
            .await
    }

    fn receiver(&mut self, id: i64) -> Option<&mut mpsc::Receiver<CoordResponse>> {
        self.frames
            .iter_mut()
            .find(|(k, _)| *k == id)
            .map(|(_, s)| s.as_mut())
    }

    /// etcd's progress notifications (`progress_notify`): every
    /// `watch_progress_ms`, each such watch that sent no events since the
    /// last tick asks the hub for a progress frame.
    fn tick(&mut self) {
        let hub = &self.api.shared.node.watches;
        for w in self.watches.values_mut().filter(|w| w.progress_notify) {
            if w.busy {
                w.busy = false;
            } else {
                hub.progress(w.hub_id);
            }
        }
    }
}

fn has_filter(c: &pb::WatchCreateRequest, f: pb::watch_create_request::FilterType) -> bool {
    c.filters.contains(&(f as i32))
}

fn created(mut resp: pb::WatchResponse) -> pb::WatchResponse {
    resp.created = true;
    resp
}

fn canceled(mut resp: pb::WatchResponse, reason: String) -> pb::WatchResponse {
    resp.canceled = true;
    resp.cancel_reason = reason;
    resp
}

/// etcd's answer to a watch whose start was compacted: the revision to
/// start again from, and the watch cancelled. Its header revision is 0,
/// as etcd's is (the response is about no revision of the store).
fn compacted_response(id: i64, compact_revision: u64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(pb::ResponseHeader::default()),
        watch_id: id,
        canceled: true,
        compact_revision: compact_revision as i64,
        ..Default::default()
    }
}

/// A hub event as etcd's: a put's key-value with its lease; a delete's
/// key and revision only; the key's previous state if asked and it
/// existed.
fn to_event(e: &WatchEvent, prev_kv: bool) -> mvccpb::Event {
    use mvccpb::event::EventType;
    let (kind, kv) = match e.kind {
        EventKind::Put => (
            EventType::Put,
            mvccpb::KeyValue {
                key: e.key.clone(),
                create_revision: e.rev.create_rev as i64,
                mod_revision: e.rev.mod_rev as i64,
                version: e.rev.version as i64,
                value: e.value.clone(),
                lease: e.etcd.lease as i64,
            },
        ),
        EventKind::Delete => (
            EventType::Delete,
            mvccpb::KeyValue {
                key: e.key.clone(),
                mod_revision: e.rev.mod_rev as i64,
                ..Default::default()
            },
        ),
    };
    let prev = e.prev.as_ref().filter(|_| prev_kv).map(|value| {
        let rev = e.etcd.prev_rev.unwrap_or_default();
        mvccpb::KeyValue {
            key: e.key.clone(),
            create_revision: rev.create_rev as i64,
            mod_revision: rev.mod_rev as i64,
            version: rev.version as i64,
            value: value.clone(),
            lease: e.etcd.prev_lease as i64,
        }
    });
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}

/// `resp` split into responses of at most `max` bytes each, all but the
/// last marked `fragment` (clients join them); `None` if one event alone
/// is over.
fn fragments(resp: pb::WatchResponse, max: usize) -> Option<Vec<pb::WatchResponse>> {
    let mut empty = resp.clone();
    empty.events = Vec::new();
    empty.fragment = true;
    let base = empty.encoded_len();
    let mut parts = Vec::new();
    let mut part = empty.clone();
    let mut size = base;
    for event in resp.events {
        let len = event.encoded_len();
        // The field's tag (11: one byte) and the length before the event.
        let event_size = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if base + event_size > max {
            return None;
        }
        if size + event_size > max {
            parts.push(std::mem::replace(&mut part, empty.clone()));
            size = base;
        }
        part.events.push(event);
        size += event_size;
    }
    part.fragment = false;
    parts.push(part);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from(vec![b'x'; value_len]),
                mod_revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_fit_the_limit_and_only_the_last_is_whole() {
        let resp = pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            watch_id: 3,
            events: (0..10).map(|i| put(&format!("k{i}"), 100)).collect(),
            ..Default::default()
        };
        let max = 350;
        let parts = fragments(resp.clone(), max).expect("each event fits");
        assert!(parts.len() > 1);
        for (i, p) in parts.iter().enumerate() {
            assert!(p.encoded_len() <= max, "part {i}: {}", p.encoded_len());
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!(p.watch_id, 3);
        }
        let joined: Vec<_> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, resp.events);
        assert!(fragments(resp, 100).is_none());
    }
}
