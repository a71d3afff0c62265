//! Watches: the change events of a key span, from a revision on, pushed
//! to whoever asked, in revision order, with nothing missed or repeated.
//!
//! The [`WatchHub`] sits between the raft loop, which publishes the events
//! of every apply (and says when a snapshot made the past unknown), and
//! the request layer, which registers watches and forwards their frames
//! to connections. It needs no runtime: the raft loop runs without one
//! in the simulator, and `tokio::sync::mpsc`'s `try_send` works anywhere.
//!
//! | file | one job |
//! |---|---|
//! | `history.rs` | the recent events a watch from the past is replayed from |
//! | `watcher.rs` | one watch: its span, how far it was sent, its bounded channel |
//! | `conn.rs` | a connection's watch task: frames to the socket, progress |
//!
//! Everything that touches watchers happens under one mutex, so a watch
//! registered while events are published is replayed exactly up to the
//! revision the live events start after.

mod conn;
mod history;
#[cfg(test)]
mod tests;
mod watcher;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use nacre_proto::{CoordResponse, ErrorCode, ErrorReply, WatchEvent, WatchSpec};
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub(crate) use conn::{serve_watch, WatchTask};
use history::{History, RevisionEvents};
use watcher::{End, Watcher};

/// The hub's bounds ([`crate::ServerConfig`]'s `watch_*` options).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Revisions with events kept for replay...
    pub history_revisions: usize,
    /// ...and at most this many bytes of their events.
    pub history_bytes: usize,
    /// Frames queued to one watch before it is ended as too slow.
    pub buffer_frames: usize,
    /// Watches on the node, all connections together.
    pub watches_max: usize,
    /// No frame is longer.
    pub frame_size_max_bytes: usize,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            history_revisions: 100_000,
            history_bytes: 64 << 20,
            buffer_frames: 1024,
            watches_max: 100_000,
            frame_size_max_bytes: nacre_proto::Limits::default().frame_size_max_bytes,
        }
    }
}

/// What `statistics` reports about watches.
#[derive(Debug, Default)]
pub struct WatchCounters {
    pub events_sent: AtomicU64,
    pub ended_slow: AtomicU64,
}

/// A registered watch: its id in the hub, and where its frames arrive.
/// The last frame is a `WatchEnd`; after it the channel closes.
pub struct Registration {
    pub id: u64,
    pub rx: mpsc::Receiver<CoordResponse>,
}

struct Inner {
    history: History,
    watchers: BTreeMap<u64, Watcher>,
    id_next: u64,
    /// The node stopped: no new watches.
    closed: bool,
}

/// Every watch of one node, and the history they start from.
pub struct WatchHub {
    opts: WatchOptions,
    inner: Mutex<Inner>,
    pub counters: WatchCounters,
    /// Planted bugs (simulator only): a watch that resumes from a
    /// revision never gets that revision's changes (`skip_resumed`), or
    /// gets the revision before it again (`repeat_resumed`).
    #[cfg(feature = "sim")]
    planted_skip_resumed: std::sync::atomic::AtomicBool,
    #[cfg(feature = "sim")]
    planted_repeat_resumed: std::sync::atomic::AtomicBool,
}

impl Default for WatchHub {
    fn default() -> WatchHub {
        WatchHub::new(WatchOptions::default())
    }
}

impl WatchHub {
    pub fn new(opts: WatchOptions) -> WatchHub {
        WatchHub {
            inner: Mutex::new(Inner {
                history: History::new(opts.history_revisions, opts.history_bytes),
                watchers: BTreeMap::new(),
                id_next: 1,
                closed: false,
            }),
            opts,
            counters: WatchCounters::default(),
            #[cfg(feature = "sim")]
            planted_skip_resumed: Default::default(),
            #[cfg(feature = "sim")]
            planted_repeat_resumed: Default::default(),
        }
    }

    /// Plants [`WatchHub`]'s `planted_skip_resumed` bug.
    #[cfg(feature = "sim")]
    pub fn plant_skip_resumed(&self, on: bool) {
        self.planted_skip_resumed.store(on, Ordering::Relaxed);
    }

    /// Plants [`WatchHub`]'s `planted_repeat_resumed` bug.
    #[cfg(feature = "sim")]
    pub fn plant_repeat_resumed(&self, on: bool) {
        self.planted_repeat_resumed.store(on, Ordering::Relaxed);
    }

    /// Where a watch from `start` (given, not 0) begins sending after
    /// its first frame: right after `start - 1`, unless a planted bug
    /// moves it.
    fn resumed_after(&self, start: u64) -> u64 {
        #[cfg(feature = "sim")]
        {
            if self.planted_skip_resumed.load(Ordering::Relaxed) {
                return start;
            }
            if self.planted_repeat_resumed.load(Ordering::Relaxed) {
                return start.saturating_sub(2);
            }
        }
        start - 1
    }

    /// The last revision the node applied.
    pub fn applied(&self) -> u64 {
        self.inner.lock().history.applied()
    }

    /// The oldest revision a watch can start from.
    pub fn oldest(&self) -> u64 {
        self.inner.lock().history.oldest()
    }

    /// Watches registered now.
    /// The changes after the older revision `rev` to the keys `wanted`
    /// accepts, in order, and the last revision the history knows of; each
    /// event carries the key's state before it (`prev`, `etcd.prev_rev`),
    /// so the first change of a key says what it was at `rev`. `None` if
    /// the changes after `rev` are no longer all kept. Under the hub's
    /// lock; copies only those events.
    pub fn changes_after(
        &self,
        rev: u64,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Option<(u64, Vec<WatchEvent>)> {
        let inner = self.inner.lock();
        let history = &inner.history;
        if rev + 1 < history.oldest() {
            return None;
        }
        let after = history
            .since(rev + 1)
            .flat_map(|r| r.events.iter())
            .filter(|e| wanted(&e.key))
            .cloned()
            .collect();
        Some((history.applied(), after))
    }

    pub fn active(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    /// Starts a watch: its first frame says it exists; the changes kept
    /// in the history from its start revision follow, then live ones. A
    /// start older than the history gets a `Compacted` end instead. Over
    /// `watches_max`, or once the node stopped, it is refused.
    pub fn register(&self, spec: &WatchSpec) -> Result<Registration, ErrorReply> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(ErrorReply::new(
                ErrorCode::GoingDown,
                "the node is shutting down",
            ));
        }
        if inner.watchers.len() >= self.opts.watches_max {
            // Watches whose readers left are dropped at the next publish;
            // on an idle node that may not have come yet.
            inner.watchers.retain(|_, w| !w.is_closed());
        }
        if inner.watchers.len() >= self.opts.watches_max {
            return Err(ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "too many watches on this node (watches_max {})",
                    self.opts.watches_max
                ),
            ));
        }
        let id = inner.id_next;
        inner.id_next += 1;
        let (tx, rx) = mpsc::channel(self.opts.buffer_frames + 1);
        let applied = inner.history.applied();
        let start = if spec.start_rev == 0 {
            applied + 1
        } else {
            spec.start_rev
        };
        let mut w = Watcher::new(spec.span.clone(), spec.prev_value, start - 1, tx);
        let oldest = inner.history.oldest();
        if start < oldest {
            w.end(compacted(oldest));
            return Ok(Registration { id, rx });
        }
        w.started(start - 1);
        if spec.start_rev != 0 {
            w.sent_through = self.resumed_after(start);
        }
        let frame_max = self.opts.frame_size_max_bytes;
        match w.deliver(inner.history.since(start), applied, frame_max) {
            Ok(n) => {
                self.count_sent(n);
                inner.watchers.insert(id, w);
            }
            Err(end) => self.end(w, end),
        }
        Ok(Registration { id, rx })
    }

    /// Ends watch `id` with this code and message (its last frame); false
    /// if it had already ended.
    pub fn end_watch(&self, id: u64, code: ErrorCode, message: &str) -> bool {
        let mut inner = self.inner.lock();
        let Some(w) = inner.watchers.remove(&id) else {
            return false;
        };
        let revision = w.sent_through;
        w.end(End {
            code,
            message: message.to_string(),
            revision,
        });
        true
    }

    /// How far watch `id` is sent: every change of its span up to this
    /// revision is in its channel (`None`: it ended). etcd's progress
    /// request answers for all of a stream's watches at once, so the
    /// stream must know this without queuing a frame to each.
    pub fn sent_through(&self, id: u64) -> Option<u64> {
        self.inner.lock().watchers.get(&id).map(|w| w.sent_through)
    }

    /// Queues a progress frame (no events, everything up to the applied
    /// revision sent) to watch `id`, which has been idle.
    pub fn progress(&self, id: u64) {
        let mut inner = self.inner.lock();
        let applied = inner.history.applied();
        if let Some(w) = inner.watchers.get_mut(&id) {
            w.progress(applied);
        }
    }

    /// The events of everything applied since the last call (in revision
    /// order) and the applied revision, which may be past the last event:
    /// each watch gets its span's changes in one frame (more only if
    /// they do not fit in one).
    pub fn publish(&self, events: Vec<WatchEvent>, applied: u64) {
        let mut inner = self.inner.lock();
        let revisions = group_by_revision(events);
        let frame_max = self.opts.frame_size_max_bytes;
        let mut ended = Vec::new();
        let mut sent = 0;
        for (id, w) in inner.watchers.iter_mut() {
            if w.is_closed() {
                ended.push((*id, None));
                continue;
            }
            match w.deliver(revisions.iter(), applied, frame_max) {
                Ok(n) => sent += n,
                Err(end) => ended.push((*id, Some(end))),
            }
        }
        self.count_sent(sent);
        for (id, end) in ended {
            // A watch nobody reads any more is just dropped.
            if let (Some(w), Some(end)) = (inner.watchers.remove(&id), end) {
                self.end(w, end);
            }
        }
        for r in revisions {
            inner.history.push(r);
        }
        inner.history.advance(applied);
    }

    /// The node's state jumped to `applied` (at start, or by a snapshot
    /// install) without the events in between: the history starts after
    /// it, and every watch still missing a revision up to it ends with
    /// `Compacted`.
    pub fn reset(&self, applied: u64) {
        let mut inner = self.inner.lock();
        inner.history.reset(applied);
        let behind: Vec<u64> = inner
            .watchers
            .iter()
            .filter(|(_, w)| w.sent_through < applied)
            .map(|(id, _)| *id)
            .collect();
        for id in behind {
            if let Some(w) = inner.watchers.remove(&id) {
                w.end(compacted(applied + 1));
            }
        }
    }

    /// The node stops: every watch ends `Cancelled`, and no new one starts.
    pub fn close(&self, message: &str) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        for (_, w) in std::mem::take(&mut inner.watchers) {
            let revision = w.sent_through;
            w.end(End {
                code: ErrorCode::Cancelled,
                message: message.to_string(),
                revision,
            });
        }
    }

    fn end(&self, w: Watcher, end: End) {
        if end.code == ErrorCode::SlowConsumer {
            self.counters.ended_slow.fetch_add(1, Ordering::Relaxed);
        }
        w.end(end);
    }

    fn count_sent(&self, events: usize) {
        self.counters
            .events_sent
            .fetch_add(events as u64, Ordering::Relaxed);
    }
}

fn compacted(oldest: u64) -> End {
    End {
        code: ErrorCode::Compacted,
        message: format!(
            "revisions before {oldest} are no longer kept (watch_history_revisions, \
             watch_history_bytes, or a snapshot); read the current state and watch from {oldest}"
        ),
        revision: oldest,
    }
}

/// Events in revision order, as one group per revision.
fn group_by_revision(events: Vec<WatchEvent>) -> Vec<RevisionEvents> {
    let mut out: Vec<RevisionEvents> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some(r) if r.revision == e.revision() => r.push(e),
            _ => out.push(RevisionEvents::new(e)),
        }
    }
    out
}
