//! The recent change events a watch can be replayed from: whole
//! revisions, oldest first, bounded in revisions and in bytes.

use std::collections::VecDeque;

use nacre_proto::WatchEvent;

/// The events of one revision (log index), in the order they applied.
pub(super) struct RevisionEvents {
    pub(super) revision: u64,
    pub(super) events: Vec<WatchEvent>,
    bytes: usize,
}

impl RevisionEvents {
    pub(super) fn new(first: WatchEvent) -> RevisionEvents {
        let mut r = RevisionEvents {
            revision: first.revision(),
            events: Vec::new(),
            bytes: 0,
        };
        r.push(first);
        r
    }

    /// Adds an event of the same revision.
    pub(super) fn push(&mut self, e: WatchEvent) {
        self.bytes += e.encoded_len();
        self.events.push(e);
    }
}

/// Every change from `oldest` to `applied`, for replaying to a watch
/// that starts in the past.
pub(super) struct History {
    revisions: VecDeque<RevisionEvents>,
    bytes: usize,
    revisions_max: usize,
    bytes_max: usize,
    /// The first revision still known: every change at or after it (up
    /// to `applied`) is in `revisions`.
    oldest: u64,
    /// The last revision the node applied (with or without events).
    applied: u64,
}

impl History {
    pub(super) fn new(revisions_max: usize, bytes_max: usize) -> History {
        History {
            revisions: VecDeque::new(),
            bytes: 0,
            revisions_max,
            bytes_max,
            oldest: 1,
            applied: 0,
        }
    }

    pub(super) fn oldest(&self) -> u64 {
        self.oldest
    }

    pub(super) fn applied(&self) -> u64 {
        self.applied
    }

    /// Forgets everything: what comes next starts after `applied` (at
    /// start, or after a snapshot whose changes are unknown).
    pub(super) fn reset(&mut self, applied: u64) {
        self.revisions.clear();
        self.bytes = 0;
        self.oldest = applied + 1;
        self.applied = applied;
    }

    /// Adds one revision's events, then drops the oldest revisions until
    /// both bounds hold.
    pub(super) fn push(&mut self, r: RevisionEvents) {
        self.applied = self.applied.max(r.revision);
        self.bytes += r.bytes;
        self.revisions.push_back(r);
        while self.revisions.len() > self.revisions_max || self.bytes > self.bytes_max {
            let Some(old) = self.revisions.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            self.oldest = old.revision + 1;
        }
    }

    /// Marks everything up to `applied` known, with no more events.
    pub(super) fn advance(&mut self, applied: u64) {
        self.applied = self.applied.max(applied);
    }

    /// The kept revisions from `from` on, oldest first.
    pub(super) fn since(&self, from: u64) -> impl Iterator<Item = &RevisionEvents> {
        let start = self.revisions.partition_point(|r| r.revision < from);
        self.revisions.range(start..)
    }
}
