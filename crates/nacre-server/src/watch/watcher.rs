//! One registered watch: what it covers, how far it has been sent, and
//! the channel its frames go into (bounded: a reader that falls behind
//! is ended, never buffered for without bound).

use nacre_proto::{CoordResponse, ErrorCode, KeySpan, Response, WatchEvent};
use tokio::sync::mpsc;

use super::history::RevisionEvents;

/// Why a watch ended, as its last frame says.
pub(super) struct End {
    pub(super) code: ErrorCode,
    pub(super) message: String,
    pub(super) revision: u64,
}

pub(super) struct Watcher {
    span: KeySpan,
    prev_value: bool,
    /// Every change of the span up to this revision is in the channel.
    pub(super) sent_through: u64,
    tx: mpsc::Sender<CoordResponse>,
}

/// A frame of events whose events take `bytes` on the wire.
fn frame_length(bytes: usize) -> usize {
    let empty = CoordResponse::Watched {
        events: Vec::new(),
        revision: 0,
    };
    Response::Coord(empty).frame_length() + bytes
}

impl Watcher {
    /// `tx` must have room for one frame more than the watch's buffer:
    /// that last slot is kept for the frame that ends it.
    pub(super) fn new(
        span: KeySpan,
        prev_value: bool,
        sent_through: u64,
        tx: mpsc::Sender<CoordResponse>,
    ) -> Watcher {
        Watcher {
            span,
            prev_value,
            sent_through,
            tx,
        }
    }

    /// The reader went away (the connection closed).
    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// This watch's view of an event: in its span, with the previous
    /// value only if it asked for it.
    fn matching(&self, e: &WatchEvent) -> Option<WatchEvent> {
        if !self.span.contains(&e.key) {
            return None;
        }
        let mut e = e.clone();
        if !self.prev_value {
            e.prev = None;
        }
        Some(e)
    }

    /// The frames that carry the span's changes in `revisions` past
    /// `sent_through`, each under `frame_size_max_bytes` and holding whole
    /// revisions; the last one says everything up to `through` is sent.
    /// A revision too large for a frame on its own cannot be sent (a
    /// watch resumes by revision, so one is never split).
    fn frames<'a>(
        &self,
        revisions: impl Iterator<Item = &'a RevisionEvents>,
        through: u64,
        frame_size_max_bytes: usize,
    ) -> Result<Vec<(Vec<WatchEvent>, u64)>, End> {
        let mut frames = Vec::new();
        let (mut events, mut bytes, mut last) = (Vec::new(), 0usize, 0u64);
        for rev in revisions.filter(|r| r.revision > self.sent_through) {
            let mine: Vec<WatchEvent> =
                rev.events.iter().filter_map(|e| self.matching(e)).collect();
            if mine.is_empty() {
                continue;
            }
            let rev_bytes: usize = mine.iter().map(WatchEvent::encoded_len).sum();
            if frame_length(rev_bytes) > frame_size_max_bytes {
                return Err(End {
                    code: ErrorCode::TooLarge,
                    message: format!(
                        "the changes of revision {} take {} bytes, over frame_size_max_bytes \
                         {frame_size_max_bytes}; resume after it",
                        rev.revision,
                        frame_length(rev_bytes)
                    ),
                    revision: self.sent_through,
                });
            }
            if !events.is_empty() && frame_length(bytes + rev_bytes) > frame_size_max_bytes {
                frames.push((std::mem::take(&mut events), last));
                bytes = 0;
            }
            events.extend(mine);
            bytes += rev_bytes;
            last = rev.revision;
        }
        if !events.is_empty() {
            frames.push((events, through.max(last)));
        }
        Ok(frames)
    }

    /// Queues the span's changes in `revisions` past what was sent; the
    /// number of events queued, or why the watch must end: its buffer
    /// (`watch_buffer_frames`) is full, or a revision is too large.
    pub(super) fn deliver<'a>(
        &mut self,
        revisions: impl Iterator<Item = &'a RevisionEvents>,
        through: u64,
        frame_size_max_bytes: usize,
    ) -> Result<usize, End> {
        let frames = self.frames(revisions, through, frame_size_max_bytes)?;
        // One slot stays free for the frame that ends the watch.
        if self.tx.capacity() < frames.len() + 1 {
            return Err(End {
                code: ErrorCode::SlowConsumer,
                message: "the watch fell too far behind (watch_buffer_frames frames queued); \
                          resume after the revision given"
                    .to_string(),
                revision: self.sent_through,
            });
        }
        let mut sent = 0;
        for (events, revision) in frames {
            sent += events.len();
            self.send(CoordResponse::Watched { events, revision });
            self.sent_through = revision;
        }
        self.sent_through = self.sent_through.max(through);
        Ok(sent)
    }

    /// Queues a frame with no events saying everything up to `applied`
    /// was sent; skipped when the buffer is full (its frames say more).
    pub(super) fn progress(&mut self, applied: u64) {
        if self.tx.capacity() < 2 {
            return;
        }
        self.sent_through = self.sent_through.max(applied);
        self.send(CoordResponse::Watched {
            events: Vec::new(),
            revision: self.sent_through,
        });
    }

    /// Queues the first frame: the watch exists, and nothing before
    /// `revision` + 1 is to be sent.
    pub(super) fn started(&mut self, revision: u64) {
        self.send(CoordResponse::Watched {
            events: Vec::new(),
            revision,
        });
    }

    /// Queues the frame that ends the watch (it always has room).
    pub(super) fn end(self, end: End) {
        self.send(CoordResponse::WatchEnd {
            code: end.code,
            message: end.message,
            revision: end.revision,
        });
    }

    fn send(&self, frame: CoordResponse) {
        // Full cannot happen (callers check room); closed means nobody
        // reads any more.
        let _ = self.tx.try_send(frame);
    }
}
