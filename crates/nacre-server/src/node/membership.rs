//! Membership: conf changes proposed and applied (with the replicated
//! member table), vote requests a node must not answer, leadership
//! transfer, and the peer transport's address book.

use nacre_proto::{ErrorCode, ErrorReply};
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry,
    EntryType, Message, MessageType,
};
use raft::StateRole;
use tokio::sync::oneshot;

use super::snapshot::snapshot_source;
use super::{Membership, Node};
use crate::state::MemberRecord;
use crate::transport::Transport;
use crate::ServerError;

impl Node {
    /// Starts the peer transport once there is anyone to talk to, and
    /// points it at every member's current address.
    pub(super) fn sync_transport(&mut self) -> Result<(), ServerError> {
        let members = self.status.members.read().clone();
        let others: Vec<(u64, String)> = members
            .iter()
            .filter(|(id, _)| **id != self.opts.id)
            .map(|(id, m)| (*id, m.peer.clone()))
            .collect();
        // A node without the cluster's state has no one to talk to yet but
        // must be reachable: the leader will contact it.
        let stateless = self.sm.applied().0 == 0;
        if self.transport.is_none() && others.is_empty() && !stateless {
            return Ok(());
        }
        if self.transport.is_none() {
            let Some(rt) = self.rt.clone() else {
                return Ok(());
            };
            let source = snapshot_source(self.sm.store().clone());
            let cfg = crate::transport::TransportConfig::new(
                self.opts.cluster_id.clone(),
                self.opts.id,
                self.opts.peer_listen.clone(),
                self.opts.data_dir.join("snapshots-in"),
            )
            .with_timing(
                self.opts.tick_ms,
                self.opts.heartbeat_ticks,
                self.opts.election_ticks,
            );
            std::fs::create_dir_all(&cfg.snapshot_dir)?;
            let t = rt
                .block_on(Transport::start(cfg, self.inbound_tx.clone(), source))
                .map_err(|source| ServerError::Listen {
                    addr: self.opts.peer_listen.clone(),
                    source,
                })?;
            tracing::info!(addr = %t.local_addr(), "peer transport listening");
            self.transport = Some(Box::new(t));
        }
        if let Some(t) = self.transport.as_mut() {
            for (id, addr) in others {
                t.set_peer(id, addr);
            }
        }
        Ok(())
    }

    /// Vote requests this node must not answer. A node that starts empty
    /// to (re)join has none of the log it may once have acknowledged: it
    /// must not help elect anyone until a snapshot has given it the
    /// cluster's state. And a node in its first election timeout after a
    /// start may have heard a leader just before it stopped, and promised
    /// (by acknowledging a lease round) not to vote for another before its
    /// timer ran out; the restart forgot that leader, so it waits one full
    /// timeout before it votes. A transfer the leader asked for is exempt:
    /// that leader gave up its lease when it began it.
    fn must_ignore_vote(&self, m: &Message) -> bool {
        if !matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) {
            return false;
        }
        let conf = self.raw.raft.prs().conf();
        let empty = conf.voters().ids().is_empty() && conf.learners().is_empty();
        let transfer = &m.context[..] == b"CampaignTransfer";
        let young = self.ticks < self.opts.election_ticks as u64;
        empty || (young && !transfer && m.term > self.raw.raft.term)
    }

    /// Starts handing leadership to `to`: from now on this term serves no
    /// read by lease (the transferee's campaign overrides the promise the
    /// followers made).
    pub(super) fn transfer_leader(&mut self, to: u64) {
        self.lease.transfer_started(self.raw.raft.term);
        self.raw.transfer_leader(to);
    }

    /// A learner may become a voter once the leader has confirmed that its
    /// log is within `promote_lag_max_entries` of the leader's: a voter
    /// far behind counts towards the quorum size but cannot help commit,
    /// so promoting it early makes the cluster less available (with three
    /// voters and a fourth that holds nothing, one more failure stops
    /// writes). `force` skips the check.
    fn check_promotable(&self, id: u64, force: bool) -> Result<(), ErrorReply> {
        if force {
            return Ok(());
        }
        let matched = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
        let last = self.raw.raft.raft_log.last_index();
        let lag_entries = last.saturating_sub(matched);
        let bound = self.opts.promote_lag_max_entries;
        // Match index 0: the leader has confirmed nothing of its log yet
        // (not even the snapshot that starts it), whatever the bound.
        if matched > 0 && lag_entries <= bound {
            return Ok(());
        }
        let name = self.member_name(id);
        Err(ErrorReply::new(
            ErrorCode::LearnerBehind,
            format!(
                "{name} is {lag_entries} entries behind the leader (its match index is \
                 {matched}, the leader's last index {last}); a learner is promoted only once it \
                 has caught up to within {bound} entries (promote_lag_max_entries): wait for its \
                 lag in `nacre cluster status` to shrink, or pass --force"
            ),
        ))
    }

    pub(super) fn propose_membership(
        &mut self,
        change: Membership,
        reply: oneshot::Sender<Result<u64, ErrorReply>>,
    ) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.leader_hint()));
            return;
        }
        let conf = self.raw.raft.prs().conf().clone();
        let known = |id: u64| conf.voters().contains(id) || conf.learners().contains(&id);
        let bad = |m: &str| ErrorReply::new(ErrorCode::BadInput, m.to_string());
        let (single, context) = match change {
            Membership::TransferLeader(id) => {
                if !conf.voters().contains(id) {
                    let _ = reply.send(Err(bad("only a voter can become the leader")));
                    return;
                }
                self.transfer_leader(id);
                let _ = reply.send(Ok(self.sm.applied().0));
                return;
            }
            Membership::AddLearner(id, m) => {
                if known(id) {
                    let _ = reply.send(Err(bad("a member with this name exists already")));
                    return;
                }
                (
                    ConfChangeSingle {
                        change_type: ConfChangeType::AddLearnerNode,
                        node_id: id,
                        ..Default::default()
                    },
                    m.encode(),
                )
            }
            Membership::Promote(id, force) => {
                if !conf.learners().contains(&id) {
                    let _ = reply.send(Err(bad("not a learner of this cluster")));
                    return;
                }
                if let Err(e) = self.check_promotable(id, force) {
                    let _ = reply.send(Err(e));
                    return;
                }
                (
                    ConfChangeSingle {
                        change_type: ConfChangeType::AddNode,
                        node_id: id,
                        ..Default::default()
                    },
                    Vec::new(),
                )
            }
            Membership::Remove(id) => {
                if !known(id) {
                    let _ = reply.send(Err(bad("not a member of this cluster")));
                    return;
                }
                if conf.voters().ids().len() == 1 && conf.voters().contains(id) {
                    let _ = reply.send(Err(bad("cannot remove the last voter")));
                    return;
                }
                (
                    ConfChangeSingle {
                        change_type: ConfChangeType::RemoveNode,
                        node_id: id,
                        ..Default::default()
                    },
                    Vec::new(),
                )
            }
        };
        let cc = ConfChangeV2 {
            // One change at a time is a simple change; several would go
            // through joint consensus and leave it automatically.
            transition: ConfChangeTransition::Auto,
            changes: vec![single].into(),
            context: context.into(),
            ..Default::default()
        };
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                self.membership_pending
                    .insert(index, (self.raw.raft.term, reply));
            }
            Err(e) => {
                // raft-rs allows one pending conf change at a time.
                let _ = reply.send(Err(ErrorReply::new(
                    ErrorCode::Busy,
                    format!("membership change refused: {e}"),
                )));
            }
        }
    }

    pub(super) fn apply_conf_change(&mut self, e: &Entry) -> Result<(), ServerError> {
        let mut changes: Vec<(u64, Option<MemberRecord>)> = Vec::new();
        let cs = if e.get_entry_type() == EntryType::EntryConfChange {
            let mut cc = ConfChange::default();
            protobuf::Message::merge_from_bytes(&mut cc, &e.data).map_err(bad_conf_change(e))?;
            self.raw.apply_conf_change(&cc)?
        } else {
            let mut cc = ConfChangeV2::default();
            protobuf::Message::merge_from_bytes(&mut cc, &e.data).map_err(bad_conf_change(e))?;
            for c in cc.changes.iter() {
                match c.change_type {
                    ConfChangeType::AddLearnerNode => {
                        if let Some(m) = MemberRecord::decode(&cc.context) {
                            changes.push((c.node_id, Some(m)));
                        }
                    }
                    ConfChangeType::RemoveNode => changes.push((c.node_id, None)),
                    ConfChangeType::AddNode => {}
                }
            }
            self.raw.apply_conf_change(&cc)?
        };
        self.tlog.write().set_conf_state(&cs)?;
        // Rounds acknowledged under the old voters prove nothing about
        // the new ones' quorums.
        self.lease.revoke();
        // The member table changes in the same step as the applied index,
        // so a restart never sees one without the other.
        self.sm.apply_members(e.index, e.term, &changes)?;
        {
            let mut members = self.status.members.write();
            for (id, m) in &changes {
                match m {
                    Some(m) => {
                        members.insert(*id, m.clone());
                    }
                    None => {
                        members.remove(id);
                    }
                }
            }
        }
        self.snap_state.lock().conf = cs.clone();
        self.applied_moved();
        for (id, m) in &changes {
            if let (None, Some(t)) = (m, &mut self.transport) {
                t.remove_peer(*id);
            }
        }
        self.sync_transport()?;
        if let Some((term, reply)) = self.membership_pending.remove(&e.index) {
            let r = if term == e.term {
                Ok(e.index)
            } else {
                Err(self.leader_hint())
            };
            let _ = reply.send(r);
        }
        if changes
            .iter()
            .any(|(id, m)| *id == self.opts.id && m.is_none())
        {
            self.stop_removed(&format!("it applied its removal at index {}", e.index));
        }
        Ok(())
    }

    /// The cluster removed this node: it stops, and says why (`nacre
    /// serve` then exits with its own code, so that a supervisor does not
    /// bring it back).
    pub(super) fn stop_removed(&mut self, why: &str) {
        tracing::warn!("this node was removed from the cluster ({why}); stopping");
        self.status
            .removed
            .store(true, std::sync::atomic::Ordering::Release);
        self.shutting_down = true;
    }

    /// Peer messages the node deals with itself rather than hand to raft:
    /// every one while it waits to create the cluster (it has no log to
    /// answer from), and votes it must not give.
    pub(super) fn intercept_peer_message(&mut self, m: &Message) -> bool {
        if self.creating.is_some() {
            return true;
        }
        self.must_ignore_vote(m)
    }

    /// Members and addresses that a member of the cluster reported to a
    /// node that has no state of its own yet: its transport learns where
    /// the others listen, so that it can answer the leader. Once the node
    /// has the cluster's state, the replicated member table governs.
    pub(super) fn learn_members(
        &mut self,
        list: Vec<(u64, MemberRecord)>,
    ) -> Result<(), ServerError> {
        if self.sm.applied().0 > 0 {
            return Ok(());
        }
        {
            let mut members = self.status.members.write();
            for (id, m) in list {
                members.insert(id, m);
            }
        }
        self.sync_transport()
    }

    /// A member's name, from the member table, for logs.
    pub(super) fn member_name(&self, id: u64) -> String {
        self.status
            .members
            .read()
            .get(&id)
            .map_or_else(|| format!("#{id}"), |m| m.name.clone())
    }

    /// The preferred leader takes leadership back once it has caught up.
    pub(super) fn maybe_transfer_to_preferred(&mut self) {
        let Some(pref) = self.opts.preferred_leader else {
            return;
        };
        if pref == self.opts.id || self.raw.raft.state != StateRole::Leader {
            return;
        }
        if !self.raw.raft.prs().conf().voters().contains(pref) {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        if self
            .raw
            .raft
            .prs()
            .get(pref)
            .is_some_and(|p| p.matched == last)
        {
            tracing::info!(to = pref, "handing leadership to the preferred leader");
            self.transfer_leader(pref);
        }
    }
}

/// A committed conf change that does not decode: the log holds bytes no
/// leader proposed.
fn bad_conf_change(e: &Entry) -> impl FnOnce(protobuf::ProtobufError) -> ServerError {
    let index = e.index;
    move |source| ServerError::ConfChange { index, source }
}
