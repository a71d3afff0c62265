//! The loop: take what is queued, tick, handle each request or peer
//! message, then one `Ready` — persist (one fsync), send, apply, answer.

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nacre_proto::{ErrorCode, ErrorReply};
use raft::eraftpb::{Entry, EntryType};
use raft::StateRole;

use super::status::going_down;
use super::{Msg, Node, Pending};
use crate::error::panic_message;
use crate::metrics::timed;
use crate::state::Committed;
use crate::transport::Inbound;
use crate::ServerError;

impl Node {
    pub(super) fn run(mut self) -> Result<(), ServerError> {
        // On this thread (not a runtime's) the transport's async start can
        // be waited for.
        let result = self.sync_transport().and_then(|()| self.run_loop());
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft loop stopped");
        }
        self.status.mark_stopped();
        self.fail_all(going_down());
        self.opts.watches.close("the node is shutting down");
        // Leave the store durable up to what was applied, so the next start
        // replays less of the tlog.
        if result.is_ok() {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "final checkpoint failed");
            }
        }
        result
    }

    pub(super) fn run_loop(&mut self) -> Result<(), ServerError> {
        let tick = Duration::from_millis(self.opts.tick_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(m) => {
                    self.took(&m);
                    self.handle(m)?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Take everything already queued: these share one fsync. The
            // channel's bound keeps the batch bounded.
            while let Ok(m) = self.rx.try_recv() {
                self.took(&m);
                self.handle(m)?;
            }
            if self.shutting_down {
                return Ok(());
            }
            if Instant::now() >= next_tick {
                self.check_helpers()?;
                self.tick();
                next_tick += tick;
                // After a long stall, do not replay every missed tick.
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            self.process()?;
        }
    }

    /// The threads and tasks the loop cannot work without — the peer-in
    /// forwarder, the transport's listener — end only if they failed (or
    /// the node is going away): checked once a tick.
    pub(super) fn check_helpers(&mut self) -> Result<(), ServerError> {
        if self.peer_in.as_ref().is_some_and(|t| t.is_finished()) {
            let why = match self.peer_in.take().map(std::thread::JoinHandle::join) {
                Some(Err(payload)) => format!("panicked: {}", panic_message(payload.as_ref())),
                _ => "ended".to_string(),
            };
            return Err(ServerError::Stopped {
                thread: "peer-in thread",
                why,
            });
        }
        if let Some(task) = self.transport.as_ref().and_then(|t| t.stopped_task()) {
            return Err(ServerError::Stopped {
                thread: task,
                why: "ended".to_string(),
            });
        }
        Ok(())
    }

    /// Counts a client request out of the loop's queue (for the
    /// `nacre_raft_queued_requests` gauge; [`NodeHandle`] counted it in).
    ///
    /// [`NodeHandle`]: super::NodeHandle
    pub(super) fn took(&self, m: &Msg) {
        if matches!(
            m,
            Msg::Propose { .. }
                | Msg::Read { .. }
                | Msg::Membership { .. }
                | Msg::LeaseKeepAlive { .. }
                | Msg::LeaseRemaining { .. }
        ) {
            self.status.metrics.dequeued();
        }
    }

    pub(super) fn leader_hint(&self) -> ErrorReply {
        self.status.not_master()
    }

    pub(super) fn handle(&mut self, m: Msg) -> Result<(), ServerError> {
        match m {
            Msg::Propose { data, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.leader_hint()));
                    return Ok(());
                }
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {
                        let index = self.raw.raft.raft_log.last_index();
                        let term = self.raw.raft.term;
                        self.status.proposals.fetch_add(1, Ordering::Relaxed);
                        self.pending.insert(index, Pending { term, reply });
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(self.leader_hint()));
                    }
                    Err(e) => {
                        let _ =
                            reply.send(Err(ErrorReply::new(ErrorCode::Internal, e.to_string())));
                    }
                }
            }
            Msg::Read { reply } => self.reads_new.push(reply),
            Msg::Membership { change, reply } => self.propose_membership(change, reply),
            Msg::LeaseKeepAlive { ids, reply } => {
                let _ = reply.send(self.lease_keep_alive(&ids));
            }
            Msg::LeaseRemaining { ids, reply } => {
                let _ = reply.send(self.lease_remaining(&ids));
            }
            Msg::Peer(Inbound::Raft(mut m)) => {
                self.planted_heard_from(m.from);
                use raft::eraftpb::MessageType;
                if self.intercept_peer_message(&m) {
                    return Ok(());
                }
                // The leader may remember more of this node's log than it
                // still has (it lost its data and rejoined): raft-rs would
                // panic on a commit index past the log, so cap it; the
                // leader then finds the gap and sends a snapshot.
                if m.get_msg_type() == MessageType::MsgHeartbeat {
                    m.commit = m.commit.min(self.raw.raft.raft_log.last_index());
                }
                // A message from an old term or an unknown peer is refused
                // by raft itself; that is not our error.
                let (from, term) = (m.from, m.term);
                if let Err(e) = self.raw.step(m) {
                    tracing::debug!(error = %e, "raft refused a peer message");
                } else if from == self.raw.raft.leader_id && term == self.raw.raft.term {
                    self.heard_from_leader();
                }
            }
            Msg::Peer(Inbound::Unreachable(id)) => self.raw.report_unreachable(id),
            Msg::Peer(Inbound::SnapshotStatus { to, ok }) => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                if ok {
                    self.status.snapshots_sent.fetch_add(1, Ordering::Relaxed);
                }
                self.log_snapshot_sent(to, ok);
                self.raw.report_snapshot(to, status);
            }
            Msg::Peer(Inbound::Snapshot { msg, path }) if self.creating.is_some() => {
                // No log to install it into yet (see intercept_peer_message).
                tracing::debug!(
                    from = msg.from,
                    "snapshot dropped while creating the cluster"
                );
                let _ = std::fs::remove_file(&path);
            }
            Msg::Peer(Inbound::Snapshot { msg, path }) => {
                let index = msg.get_snapshot().get_metadata().index;
                self.snapshots_in.insert(index, path);
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "raft refused a snapshot");
                }
            }
            Msg::PeerState {
                id,
                term,
                last_index,
            } => self.peer_state(id, term, last_index)?,
            Msg::Members(list) => self.learn_members(list)?,
            Msg::Removed { leader } => {
                self.stop_removed(&format!("leader {leader} no longer lists it as a member"));
            }
            Msg::Shutdown => self.shutting_down = true,
        }
        Ok(())
    }

    pub(super) fn on_ready(&mut self) -> Result<(), ServerError> {
        if !self.raw.has_ready() {
            self.release_reads();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // Messages of this Ready (a leader's appends and heartbeats) may go
        // out before the entries are persisted.
        self.send_messages(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        // Committed entries in this Ready were persisted by an earlier one.
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        let mut wrote = false;
        if !rd.entries().is_empty() {
            let m = &self.status.metrics;
            timed(&m.tlog_append, || self.tlog.write().append(rd.entries()))?;
            wrote = true;
        }
        if let Some(hs) = rd.hs() {
            self.tlog.write().set_hard_state(hs)?;
            wrote = true;
        }
        for rs in rd.take_read_states() {
            if let Ok(ctx) = <[u8; 8]>::try_from(&rs.request_ctx[..]) {
                self.round_answered(u64::from_le_bytes(ctx), rs.index);
            }
        }
        if wrote && rd.must_sync() && !self.planted_ack_before_fsync() {
            timed(&self.status.metrics.tlog_fsync, || self.tlog.write().sync())?;
            self.status.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        // These (votes, append acknowledgements) promise persisted state.
        self.send_messages(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        self.send_messages(light.take_messages());
        if let Some(commit) = light.commit_index() {
            let mut log = self.tlog.write();
            let mut hs = log.hard_state();
            hs.commit = commit;
            // Durable with the next sync; a lagging commit is repaired at
            // start from the store's applied index.
            log.set_hard_state(&hs)?;
        }
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.release_reads();
        self.maybe_checkpoint()?;
        Ok(())
    }

    pub(super) fn send_messages(&mut self, msgs: Vec<raft::eraftpb::Message>) {
        if msgs.is_empty() {
            return;
        }
        self.log_snapshots_out(&msgs);
        match &mut self.transport {
            Some(t) => t.send(msgs),
            None => tracing::debug!(n = msgs.len(), "no peer transport; messages dropped"),
        }
    }

    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), ServerError> {
        let mut batch: Vec<&Entry> = Vec::new();
        for e in &entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => batch.push(e),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_normal(std::mem::take(&mut batch))?;
                    self.apply_conf_change(e)?;
                }
            }
        }
        self.apply_normal(batch)
    }

    pub(super) fn apply_normal(&mut self, entries: Vec<&Entry>) -> Result<(), ServerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let committed: Vec<Committed<'_>> = entries
            .iter()
            .map(|e| Committed {
                index: e.index,
                term: e.term,
                data: &e.data,
            })
            .collect();
        let m = &self.status.metrics;
        let outcomes = timed(&m.apply, || self.sm.apply(&committed))?;
        m.applied_entries
            .fetch_add(committed.len() as u64, Ordering::Relaxed);
        let answered_at = self.sm.take_answered_at();
        // Before the writers hear back: a client that watches from now
        // right after its write's answer does not get that write again.
        self.applied_moved();
        self.leases_applied(&entries, &outcomes);
        let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
        self.applied_bytes_since_checkpoint += bytes;
        for (e, outcome) in entries.iter().zip(outcomes) {
            if let Some(p) = self.pending.remove(&e.index) {
                // A retry of a write that already applied is answered with
                // the index that write applied at, as its first outcome.
                let index = answered_at
                    .iter()
                    .find(|(retry, _)| *retry == e.index)
                    .map_or(e.index, |(_, first)| *first);
                let reply = if p.term == e.term {
                    Ok((index, outcome))
                } else {
                    // Another leader's entry took this index: ours was
                    // dropped and never applied.
                    Err(self.leader_hint())
                };
                let _ = p.reply.send(reply);
            }
        }
        Ok(())
    }

    /// After every apply (entries with no events too: a watch's progress
    /// and a watch "from now" need the applied index as it is).
    pub(super) fn applied_moved(&mut self) {
        let (applied, term) = self.sm.applied();
        self.opts.watches.publish(self.sm.take_events(), applied);
        self.status.applied.store(applied, Ordering::Release);
        let mut st = self.snap_state.lock();
        st.applied = applied;
        st.term = term;
    }

    pub(super) fn release_reads(&mut self) {
        if self.reads_ready.is_empty() {
            return;
        }
        let (applied, _) = self.sm.applied();
        let ready = std::mem::take(&mut self.reads_ready);
        for (index, reply) in ready {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else {
                self.reads_ready.push((index, reply));
            }
        }
    }

    pub(super) fn fail_all(&mut self, why: ErrorReply) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(why.clone()));
        }
        for (_, round) in std::mem::take(&mut self.reads_asked) {
            for w in round.waiters {
                let _ = w.send(Err(why.clone()));
            }
        }
        for (_, w) in std::mem::take(&mut self.reads_ready) {
            let _ = w.send(Err(why.clone()));
        }
        for w in std::mem::take(&mut self.reads_new) {
            let _ = w.send(Err(why.clone()));
        }
    }
}
