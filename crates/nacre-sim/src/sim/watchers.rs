//! Watchers beside the workload: each attaches to a live node's watch hub
//! (the production `WatchHub`, fed by the node's applies), from a recent
//! revision or from now, takes its frames, and when its node crashes, it
//! is moved off it, or it reads too slowly, resumes on a node after the
//! last revision it received, as a client would. After healing, what
//! each watcher received is held to the committed log replayed through a
//! fresh state machine: exactly its span's changes, in revision order,
//! with no gap and no duplicate across resumptions. A `Compacted` end is
//! accepted only for a start the node no longer keeps; the watcher then
//! continues from the oldest revision kept (a gap it was told about).
//!
//! Watchers draw from their own generator, so they change nothing the
//! rest of a seed does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use nacre_proto::{CoordResponse, ErrorCode, KeySpan, WatchEvent, WatchSpec};
use nacre_server::state::Committed;
use nacre_server::watch::{Registration, WatchHub, WatchOptions};
use raft::eraftpb::{Entry, EntryType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Bug, Ev, Sim, StateMachine};

/// Watchers per run.
const WATCHERS: usize = 3;
/// Small bounds, so that replays, `Compacted` and `SlowConsumer` happen.
const HISTORY_REVISIONS: usize = 200;
const BUFFER_FRAMES: usize = 16;

/// Each node's hub, with the simulator's small bounds (and the planted
/// bug, if asked for).
pub(super) fn hub(planted: Option<Bug>) -> Arc<WatchHub> {
    let hub = WatchHub::new(WatchOptions {
        history_revisions: HISTORY_REVISIONS,
        buffer_frames: BUFFER_FRAMES,
        ..Default::default()
    });
    hub.plant_skip_resumed(planted == Some(Bug::WatchSkipsEvent));
    hub.plant_repeat_resumed(planted == Some(Bug::WatchRepeatsRevision));
    Arc::new(hub)
}

/// A contiguous stretch of revisions a watcher was told it has all the
/// changes of: `from..=through`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    from: u64,
    through: u64,
}

struct Attached {
    node: usize,
    incarnation: u64,
    reg: Registration,
    hub: Arc<WatchHub>,
    /// The start revision asked for (0: from now).
    start: u64,
    /// No frame taken yet.
    fresh: bool,
}

pub(super) struct Watcher {
    span: KeySpan,
    prev_value: bool,
    attached: Option<Attached>,
    /// The first is open-ended until the watcher first attaches.
    segments: Vec<Segment>,
    /// Every event received, in the order received.
    received: Vec<WatchEvent>,
    /// Asleep until then (a reader that falls behind).
    asleep_until_us: u64,
}

pub(super) struct Watchers {
    pub(super) list: Vec<Watcher>,
    rng: StdRng,
}

impl Watchers {
    pub(super) fn new(seed: u64, keys: &[Bytes]) -> Watchers {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7761_7463_6865_7273);
        let list = (0..WATCHERS)
            .map(|_| Watcher {
                span: random_span(&mut rng, keys),
                prev_value: rng.random_bool(0.5),
                attached: None,
                segments: Vec::new(),
                received: Vec::new(),
                asleep_until_us: 0,
            })
            .collect();
        Watchers { list, rng }
    }
}

fn random_span(rng: &mut StdRng, keys: &[Bytes]) -> KeySpan {
    let key = |rng: &mut StdRng| keys[rng.random_range(0..keys.len())].clone();
    match rng.random_range(0..4) {
        0 => KeySpan::Prefix(Bytes::new()),
        1 => KeySpan::Key(key(rng)),
        2 => KeySpan::Prefix(Bytes::from_static(b"k")),
        _ => {
            let (a, b) = (key(rng), key(rng));
            KeySpan::Range {
                start: a.clone().min(b.clone()),
                end: Some(a.max(b)),
            }
        }
    }
}

impl Sim {
    pub(super) fn watchers_start(&mut self) {
        for w in 0..self.watchers.list.len() {
            let d = self.watchers.rng.random_range(0..300_000);
            self.at(d, Ev::Watch(w));
        }
    }

    /// A watcher wakes: it takes its frames, maybe moves or naps, and
    /// attaches again if it is not attached.
    pub(super) fn watcher_wake(&mut self, w: usize) {
        let next = self.watchers.rng.random_range(5_000..40_000);
        self.at(next, Ev::Watch(w));
        if self.now_us < self.watchers.list[w].asleep_until_us {
            return;
        }
        self.watcher_take(w);
        let roll = self.watchers.rng.random_range(0..1000);
        if roll < 20 {
            // Moves to another node, as a client cut off from its node
            // does: the old watch is cancelled.
            self.watcher_detach(w, "moves");
        } else if roll < 25 {
            let nap = self.watchers.rng.random_range(200_000..1_500_000);
            self.watchers.list[w].asleep_until_us = self.now_us + nap;
            return;
        }
        if self.watchers.list[w].attached.is_none() {
            self.watcher_attach(w);
        }
    }

    fn watcher_detach(&mut self, w: usize, why: &str) {
        if let Some(a) = self.watchers.list[w].attached.take() {
            a.hub.end_watch(a.reg.id, ErrorCode::Cancelled, why);
            self.log(|| format!("watcher {w} leaves n{} ({why})", a.node));
        }
    }

    /// Attaches to a random live node: after the last revision received,
    /// or (the first time) from a recent revision or from now.
    fn watcher_attach(&mut self, w: usize) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some() && self.nodes[i].paused.is_none())
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[self.watchers.rng.random_range(0..live.len())];
        let Some(hub) = self.nodes[i].watches.clone() else {
            return;
        };
        let start = match self.watchers.list[w].segments.last() {
            Some(s) => s.through + 1,
            None if self.watchers.rng.random_bool(0.5) => 0,
            None => {
                let back = self.watchers.rng.random_range(0..50);
                hub.applied().saturating_sub(back).max(2)
            }
        };
        let wt = &self.watchers.list[w];
        let spec = WatchSpec {
            span: wt.span.clone(),
            start_rev: start,
            prev_value: wt.prev_value,
        };
        let reg = match hub.register(&spec) {
            Ok(reg) => reg,
            Err(e) => {
                self.fail(format!("watcher {w}: n{i} refused a watch: {e:?}"));
                return;
            }
        };
        self.stats.watches_started += 1;
        self.log(|| format!("watcher {w} watches on n{i} from revision {start}"));
        self.watchers.list[w].attached = Some(Attached {
            node: i,
            incarnation: self.nodes[i].incarnation,
            reg,
            hub,
            start,
            fresh: true,
        });
    }

    /// Takes every frame queued for watcher `w`; detaches it if its watch
    /// ended or its node went down.
    fn watcher_take(&mut self, w: usize) {
        let Some(mut a) = self.watchers.list[w].attached.take() else {
            return;
        };
        let sn = &self.nodes[a.node];
        if sn.node.is_none() || sn.incarnation != a.incarnation {
            self.stats.watches_resumed += 1;
            self.log(|| format!("watcher {w} lost n{} (down)", a.node));
            return;
        }
        while let Ok(frame) = a.reg.rx.try_recv() {
            let ended = matches!(frame, CoordResponse::WatchEnd { .. });
            if let Err(why) = self.watcher_frame(w, &mut a, frame) {
                self.fail(format!("watcher {w} on n{}: {why}", a.node));
                return;
            }
            if ended {
                return;
            }
        }
        self.watchers.list[w].attached = Some(a);
    }

    /// One frame of watcher `w`'s watch, checked as it comes: events only
    /// past what was received, in order; ends at the revision received.
    fn watcher_frame(
        &mut self,
        w: usize,
        a: &mut Attached,
        frame: CoordResponse,
    ) -> Result<(), String> {
        let fresh = std::mem::replace(&mut a.fresh, false);
        let wt = &mut self.watchers.list[w];
        match frame {
            CoordResponse::Watched { events, revision } => {
                if fresh && wt.segments.is_empty() {
                    // The first watch: what it covers starts here.
                    wt.segments.push(Segment {
                        from: revision + 1,
                        through: revision,
                    });
                }
                let Some(seg) = wt.segments.last_mut() else {
                    return Err("a frame before any segment".into());
                };
                if fresh && a.start != 0 && revision + 1 != a.start {
                    return Err(format!(
                        "the first frame of a watch from {} says revision {revision}",
                        a.start
                    ));
                }
                let mut last = seg.through;
                for e in &events {
                    if e.revision() <= seg.through || e.revision() < last {
                        return Err(format!(
                            "event of revision {} after revision {last} (duplicate or out of \
                             order); received through {}",
                            e.revision(),
                            seg.through
                        ));
                    }
                    last = e.revision();
                }
                if revision < last {
                    return Err(format!(
                        "frame of revision {revision} holds revision {last}"
                    ));
                }
                seg.through = seg.through.max(revision);
                self.stats.watch_events += events.len() as u64;
                wt.received.extend(events);
                Ok(())
            }
            CoordResponse::WatchEnd { code, revision, .. } => {
                self.watcher_end(w, a, fresh, code, revision)
            }
            f => Err(format!("unexpected frame {f:?}")),
        }
    }

    /// Watcher `w`'s watch ended: it resumes later where it can.
    fn watcher_end(
        &mut self,
        w: usize,
        a: &Attached,
        fresh: bool,
        code: ErrorCode,
        revision: u64,
    ) -> Result<(), String> {
        self.log(|| format!("watcher {w} ends on n{}: {code:?} at {revision}", a.node));
        let wt = &mut self.watchers.list[w];
        let through = wt.segments.last().map_or(0, |s| s.through);
        match code {
            ErrorCode::Compacted => {
                // Only a start the node no longer keeps, or (later) a
                // snapshot past what was received.
                if fresh && a.start >= revision {
                    return Err(format!(
                        "Compacted at {revision} for a watch from {}",
                        a.start
                    ));
                }
                if revision <= through + 1 && !wt.segments.is_empty() {
                    return Err(format!(
                        "Compacted (oldest {revision}) though it had received through {through}"
                    ));
                }
                self.stats.watches_compacted += 1;
                wt.segments.push(Segment {
                    from: revision,
                    through: revision - 1,
                });
                Ok(())
            }
            _ if revision < through => Err(format!(
                "{code:?} at revision {revision}, but it had received through {through}"
            )),
            _ => {
                // Past what frames said: the revisions in between had no
                // changes of the span (the final check holds it to that).
                if let Some(seg) = wt.segments.last_mut() {
                    seg.through = revision;
                }
                if code == ErrorCode::SlowConsumer {
                    self.stats.watches_slow += 1;
                }
                Ok(())
            }
        }
    }
}

/// The change events of the committed log, by revision: the log applied,
/// entry by entry, to a fresh state machine on a disk of its own.
fn reference_events(entries: &[Entry]) -> Result<BTreeMap<u64, Vec<WatchEvent>>, String> {
    let vfs: Arc<dyn nacre_vfs::Vfs> = Arc::new(nacre_vfs::sim::SimVfs::new(0));
    let opts = nacre_store::Options {
        vfs,
        durability: nacre_store::Durability::Lazy,
        cleaner: nacre_store::CleanerOptions {
            background: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let store = nacre_store::Store::open("/reference/store", opts).map_err(|e| e.to_string())?;
    let mut sm = StateMachine::open_with(store, 100_000).map_err(|e| e.to_string())?;
    let mut by_revision: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
    for e in entries {
        if e.get_entry_type() != EntryType::EntryNormal {
            continue;
        }
        let c = Committed {
            index: e.index,
            term: e.term,
            data: &e.data,
        };
        sm.apply(&[c]).map_err(|e| e.to_string())?;
        for ev in sm.take_events() {
            by_revision.entry(ev.revision()).or_default().push(ev);
        }
    }
    Ok(by_revision)
}

impl Watcher {
    /// The first difference between what this watcher received in each
    /// stretch it was told it has whole (up to `final_index`) and the
    /// span's changes in the committed log.
    fn mismatch(
        &self,
        reference: &BTreeMap<u64, Vec<WatchEvent>>,
        final_index: u64,
    ) -> Option<String> {
        for seg in &self.segments {
            let through = seg.through.min(final_index);
            if seg.from > through {
                continue;
            }
            let want: Vec<WatchEvent> = reference
                .range(seg.from..=through)
                .flat_map(|(_, evs)| evs.iter())
                .filter(|e| self.span.contains(&e.key))
                .map(|e| {
                    let mut e = e.clone();
                    if !self.prev_value {
                        e.prev = None;
                    }
                    e
                })
                .collect();
            let have: Vec<&WatchEvent> = self
                .received
                .iter()
                .filter(|e| (seg.from..=through).contains(&e.revision()))
                .collect();
            let first_diff =
                (0..want.len().max(have.len())).find(|&k| want.get(k) != have.get(k).copied());
            if let Some(k) = first_diff {
                let rev = |e: Option<&WatchEvent>| e.map(WatchEvent::revision);
                return Some(format!(
                    "over revisions {}..={through} of {:?} it received {} events, the log has \
                     {}; first difference at event {k}: received revision {:?}, expected {:?}",
                    seg.from,
                    self.span,
                    have.len(),
                    want.len(),
                    rev(have.get(k).copied()),
                    rev(want.get(k))
                ));
            }
        }
        None
    }
}

impl Sim {
    /// Holds every watcher to the committed log (`entries`, from
    /// `COMMITTED_FIRST` to the final index).
    pub(super) fn watchers_check(&mut self, entries: &[Entry]) {
        let reference = match reference_events(entries) {
            Ok(r) => r,
            Err(e) => {
                self.fail(format!("the watch checker could not replay the log: {e}"));
                return;
            }
        };
        let final_index = entries.last().map_or(0, |e| e.index);
        let bad: Vec<String> = (0..self.watchers.list.len())
            .filter_map(|w| {
                let why = self.watchers.list[w].mismatch(&reference, final_index)?;
                Some(format!("watcher {w}: {why}"))
            })
            .collect();
        for b in bad {
            self.fail(b);
        }
    }
}
