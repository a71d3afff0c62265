//! The background cleaner: its thread, and the stall that holds writers
//! back while the files are past `cleaner.space_ratio_stall`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Inner;
use crate::error::{Error, Result};

impl Inner {
    pub(super) fn stop_cleaner(&self) {
        {
            let (m, cv) = &*self.shutdown;
            *m.lock() = true;
            cv.notify_all();
        }
        if let Some(h) = self.cleaner.lock().take() {
            let _ = h.join();
        }
    }

    fn over_stall_ratio(&self) -> bool {
        let c = &self.opts.cleaner;
        let on_disk = self.log.bytes_on_disk();
        on_disk > 4 * self.log.seg_size
            && on_disk as f64
                > c.space_ratio_stall * crate::cleaner::live_estimate(self).max(1) as f64
    }

    /// Whether a background cleaner is there to wait for: enabled, not shut
    /// down, and not idle after finding a whole lap futile.
    fn cleaner_at_work(&self) -> bool {
        self.opts.cleaner.background && !self.cleaner_idle() && !*self.shutdown.0.lock()
    }

    /// The cleaner found a whole lap futile and nothing was committed since:
    /// more cleaning would only move the same live data in circles.
    pub(super) fn cleaner_idle(&self) -> bool {
        self.counters.cleaner_idle_at.load(Ordering::Relaxed) == self.current.load().seq
    }

    /// Wait (outside the writer lock, which the cleaner needs) while the
    /// files are past the stall ratio and the background cleaner works.
    pub(super) fn stall_for_cleaner(&self) {
        if !self.cleaner_at_work() || !self.over_stall_ratio() {
            return;
        }
        let started = std::time::Instant::now();
        let limit = Duration::from_millis(self.opts.cleaner.stall_ms_max);
        while self.over_stall_ratio() && self.log.check().is_ok() && self.cleaner_at_work() {
            if started.elapsed() >= limit {
                tracing::warn!(
                    waited_ms = limit.as_millis() as u64,
                    "the cleaner cannot bring the files under cleaner.space_ratio_stall; writing anyway"
                );
                break;
            }
            self.shutdown.1.notify_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        self.counters
            .stalled_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Start the background cleaner's thread; `Inner::stop_cleaner` stops and
/// joins it.
pub(super) fn spawn_cleaner(inner: &Arc<Inner>) -> Result<()> {
    let weak = Arc::downgrade(inner);
    let shutdown = inner.shutdown.clone();
    let interval = Duration::from_millis(inner.opts.cleaner.interval_ms.max(1));
    let handle = std::thread::Builder::new()
        .name("nacre-cleaner".into())
        .spawn(move || cleaner_thread(weak, shutdown, interval))
        .map_err(Error::io("spawn cleaner thread"))?;
    *inner.cleaner.lock() = Some(handle);
    Ok(())
}

fn cleaner_thread(weak: Weak<Inner>, shutdown: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    let mut user_commits_seen = 0;
    loop {
        {
            let (m, cv) = &*shutdown;
            let mut stop = m.lock();
            if !*stop {
                cv.wait_for(&mut stop, interval);
            }
            if *stop {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.log.check().is_err() || inner.cleaner_idle() {
            continue;
        }
        // Segments at or past this id were written after cleaning stopped
        // making progress; reaching them means a full lap was in vain.
        let mut lap_end: Option<u64> = None;
        loop {
            // Writers active since we last looked: only clean past the
            // higher ratio, and leave them the disk and the lock otherwise.
            let user_commits = inner.counters.user_commits.load(Ordering::Relaxed);
            let busy = user_commits != user_commits_seen;
            user_commits_seen = user_commits;
            let c = &inner.opts.cleaner;
            let ratio = if busy {
                c.space_ratio_busy_max
            } else {
                c.space_ratio_max
            };
            match crate::cleaner::clean_step(&inner, &shutdown, ratio) {
                Ok(Some(reclaimed)) => {
                    // A segment that was nearly all live is no proof that the
                    // next one is: only a whole lap without progress is.
                    if reclaimed >= inner.log.seg_size / 8 {
                        lap_end = None;
                    } else {
                        let lap = *lap_end.get_or_insert_with(|| inner.log.head_id());
                        let oldest = inner.log.segments().keys().next().copied().unwrap_or(lap);
                        if oldest >= lap {
                            let seq = inner.current.load().seq;
                            inner.counters.cleaner_idle_at.store(seq, Ordering::Relaxed);
                            break;
                        }
                    }
                    if *shutdown.0.lock() {
                        break;
                    }
                }
                // The ratio is met, or cleaning stopped early for a writer.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "background cleaning failed");
                    *inner.cleaner_error.lock() = Some(e.to_string());
                    break;
                }
            }
        }
    }
}
