//! What an operator reads in the log about raft: elections, votes,
//! step-downs, leaders, terms, membership and snapshots, one line each at
//! `info`, with the node's name and the term.
//!
//! The lines come from the loop's own view (compared after every turn),
//! not from raft-rs's logger: raft-rs says the same things in its own
//! words, and much more (every vote response, every message of an older
//! term, every dropped proposal while there is no leader), which buries
//! them. Its records still go to `tracing`, under the target `raft`, at
//! `debug` and `trace` (`RUST_LOG=info,raft=debug`), for whoever needs the
//! detail.

use std::fmt::Write as _;

use raft::eraftpb::{Message, MessageType};
use raft::StateRole;

use super::Node;

/// What the log last said about this node's raft state.
#[derive(Debug, Default)]
pub(super) struct Seen {
    term: u64,
    role: Option<StateRole>,
    leader: u64,
    vote: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

impl Node {
    /// A member's name for the log (`#id` for one the member table does
    /// not name yet).
    pub(super) fn name_of(&self, id: u64) -> String {
        self.status
            .members
            .read()
            .get(&id)
            .map_or_else(|| format!("#{id}"), |m| m.name.clone())
    }

    /// Names, sorted, comma-separated.
    fn names_of(&self, ids: &[u64]) -> String {
        let mut names: Vec<String> = ids.iter().map(|id| self.name_of(*id)).collect();
        names.sort_unstable();
        names.join(",")
    }

    /// Logs what changed in the raft state since the last turn. Called
    /// after every turn; compares a few integers when nothing changed.
    pub(super) fn log_raft_events(&mut self) {
        let r = &self.raw.raft;
        let (term, role, leader, vote) = (r.term, r.state, r.leader_id, r.vote);
        let conf = r.prs().conf();
        let mut voters: Vec<u64> = conf.voters().ids().iter().collect();
        voters.sort_unstable();
        let mut learners: Vec<u64> = conf.learners().iter().copied().collect();
        learners.sort_unstable();
        let node = self.name_of(self.opts.id);
        let first = self.seen.role.is_none();
        if first || voters != self.seen.voters || learners != self.seen.learners {
            let (v, l) = (self.names_of(&voters), self.names_of(&learners));
            if first {
                let role = role_name(role);
                tracing::info!(%node, term, voters = %v, learners = %l, role, "raft started");
            } else {
                tracing::info!(%node, term, voters = %v, learners = %l, "membership changed");
            }
            self.seen.voters = voters;
            self.seen.learners = learners;
        }
        let said = self.log_role_change(&node, role, term, leader);
        if !said && term != self.seen.term {
            tracing::info!(%node, term, from = self.seen.term, "term changed");
        }
        if vote != 0 && vote != self.opts.id && (vote, term) != (self.seen.vote, self.seen.term) {
            let to = self.name_of(vote);
            tracing::info!(%node, term, %to, "voted");
        }
        self.seen.term = term;
        self.seen.role = Some(role);
        self.seen.leader = leader;
        self.seen.vote = vote;
    }

    /// Logs a change of role or, for a follower, of leader; whether it
    /// said anything (each line carries the term).
    fn log_role_change(&self, node: &str, role: StateRole, term: u64, leader: u64) -> bool {
        let was = self.seen.role;
        if was == Some(role) {
            if role != StateRole::Follower || leader == self.seen.leader {
                return false;
            }
        } else {
            match role {
                StateRole::PreCandidate => tracing::info!(%node, term,
                    "no leader heard for an election timeout; asking for pre-votes"),
                StateRole::Candidate => tracing::info!(%node, term, "campaigning for leadership"),
                StateRole::Leader => tracing::info!(%node, term, "became leader"),
                StateRole::Follower if was == Some(StateRole::Leader) => {
                    let leader = self.name_of(leader);
                    tracing::info!(%node, term, %leader, "stepped down as leader");
                    return true;
                }
                // Just started, no leader yet: "raft started" said it all.
                StateRole::Follower if was.is_none() && leader == 0 => return true,
                StateRole::Follower => {}
            }
            if role != StateRole::Follower {
                return true;
            }
        }
        // A follower whose leader changed, or a candidate that lost.
        if leader == 0 {
            tracing::info!(%node, term, "no leader known");
        } else {
            let leader = self.name_of(leader);
            tracing::info!(%node, term, %leader, "following a new leader");
        }
        true
    }

    /// Logs the snapshots this node starts sending (raft-rs hands them to
    /// the transport as `MsgSnapshot` messages).
    pub(super) fn log_snapshots_out(&self, msgs: &[Message]) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let meta = m.get_snapshot().get_metadata();
                tracing::info!(node = %self.name_of(self.opts.id), term = m.term,
                    to = %self.name_of(m.to), index = meta.index, "sending a snapshot");
            }
        }
    }

    /// Logs how sending a snapshot ended.
    pub(super) fn log_snapshot_sent(&self, to: u64, ok: bool) {
        let node = self.name_of(self.opts.id);
        let (term, to) = (self.raw.raft.term, self.name_of(to));
        if ok {
            tracing::info!(%node, term, %to, "snapshot sent");
        } else {
            tracing::warn!(%node, term, %to, "sending a snapshot failed; raft will try again");
        }
    }
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
        StateRole::Leader => "leader",
    }
}

/// raft-rs's logger: its records go to `tracing` under the target `raft`,
/// one level down (its `info` at `debug`, its `debug` and `trace` at
/// `trace`), so that at `info` the log holds only [`Node::log_raft_events`]'
/// lines.
pub(super) fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let debug = matches!(
            record.level(),
            slog::Level::Critical | slog::Level::Error | slog::Level::Warning | slog::Level::Info
        );
        // Formatting costs more than the check: skip it when nobody listens.
        let wanted = if debug {
            tracing::enabled!(target: "raft", tracing::Level::DEBUG)
        } else {
            tracing::enabled!(target: "raft", tracing::Level::TRACE)
        };
        if !wanted {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        if debug {
            tracing::debug!(target: "raft", "{}{}", record.msg(), kv.0);
        } else {
            tracing::trace!(target: "raft", "{}{}", record.msg(), kv.0);
        }
        Ok(())
    }
}

/// slog's key-value pairs as ` key=value` text.
struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
