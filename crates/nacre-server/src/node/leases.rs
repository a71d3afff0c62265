//! Lease expiry, decided by the leader on its own monotonic clock and
//! replicated as a `LeaseRevoke` command: every replica deletes a lease's
//! keys at the same revision, and no follower's clock matters.
//!
//! While it leads, a node keeps one deadline per lease ([`Expiry`]):
//!
//! - On becoming leader, every lease the state machine holds gets `now +
//!   ttl + one election timeout`. The previous leader may have renewed a
//!   lease just before it died, and this node cannot know when: the
//!   election took at least one election timeout after that, so the
//!   extension keeps every lease alive at least a full TTL after its last
//!   acknowledged renewal (docs/coordination.md, "Leases").
//! - A grant that applies while it leads: `now + ttl`.
//! - A keep-alive: `now + ttl` for each lease it knows. The request layer
//!   first confirms leadership as a consistent read does (the leader
//!   lease, or a quorum round): a leader cut off and not yet aware of it
//!   must not renew a lease that the new leader, elected meanwhile, has
//!   already put a deadline on.
//! - Each tick, the leases past their deadline are revoked by proposing a
//!   `LeaseRevoke`, once per lease until the revoke applies (the deadline
//!   goes) or leadership moves (every deadline goes); a proposal that got
//!   lost (a leadership transfer drops proposals) is made again after an
//!   election timeout. A lease thus ends within one tick of its deadline.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use nacre_proto::{Batch, Command, CoordResponse, ErrorCode, ErrorReply, LeaseInfo, Op};
use raft::eraftpb::Entry;
use raft::StateRole;

use super::Node;
use crate::state::Outcome;

/// One lease's deadline on the leader's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline {
    ttl_ms: u64,
    at_us: u64,
    /// When a revoke of this lease was proposed, if one is in flight.
    revoke_proposed_us: Option<u64>,
}

/// The leader's lease deadlines. Plain state: the node hands it the time.
#[derive(Debug, Default)]
pub(crate) struct Expiry {
    deadlines: HashMap<u64, Deadline>,
    /// Taken off every deadline: 0 but with the simulator's planted bug
    /// (`Planted::lease_short_ttl`).
    planted_cut_us: u64,
}

impl Expiry {
    /// This node became leader: every lease of the state machine runs a
    /// full TTL plus `extension_us` (an election timeout) from now.
    pub(crate) fn lead(&mut self, leases: &[(u64, u64)], now_us: u64, extension_us: u64) {
        self.deadlines = leases
            .iter()
            .map(|&(id, ttl_ms)| {
                let at_us = now_us + ttl_ms * 1_000 + extension_us;
                (
                    id,
                    deadline(ttl_ms, at_us.saturating_sub(self.planted_cut_us)),
                )
            })
            .collect();
    }

    /// Leadership lost: the next leader decides.
    pub(crate) fn step_down(&mut self) {
        self.deadlines.clear();
    }

    /// A grant applied while this node leads.
    pub(crate) fn granted(&mut self, id: u64, ttl_ms: u64, now_us: u64) {
        let at_us = (now_us + ttl_ms * 1_000).saturating_sub(self.planted_cut_us);
        self.deadlines.insert(id, deadline(ttl_ms, at_us));
    }

    /// A revoke applied (or found the lease gone).
    pub(crate) fn revoked(&mut self, id: u64) {
        self.deadlines.remove(&id);
    }

    /// Renews each lease it knows to a full TTL from now; the reply has
    /// one entry per id, `ttl_ms` 0 for a lease that does not exist. A
    /// lease whose revoke is already in flight is not renewed: it ends.
    pub(crate) fn keep_alive(&mut self, ids: &[u64], now_us: u64) -> Vec<LeaseInfo> {
        ids.iter()
            .map(|&id| match self.deadlines.get_mut(&id) {
                Some(d) if d.revoke_proposed_us.is_none() => {
                    d.at_us = (now_us + d.ttl_ms * 1_000).saturating_sub(self.planted_cut_us);
                    info(id, d.ttl_ms, d.ttl_ms)
                }
                _ => info(id, 0, 0),
            })
            .collect()
    }

    /// The time a lease has left at `now_us`, in ms, if this node knows it.
    pub(crate) fn remaining_ms(&self, id: u64, now_us: u64) -> Option<u64> {
        self.deadlines
            .get(&id)
            .map(|d| d.at_us.saturating_sub(now_us) / 1_000)
    }

    /// The leases to revoke now: past their deadline, and with no revoke
    /// proposed in the last `retry_us`. Marks them proposed.
    pub(crate) fn due(&mut self, now_us: u64, retry_us: u64) -> Vec<u64> {
        let mut due: Vec<u64> = self
            .deadlines
            .iter_mut()
            .filter(|(_, d)| {
                d.at_us <= now_us
                    && d.revoke_proposed_us
                        .is_none_or(|at| now_us >= at.saturating_add(retry_us))
            })
            .map(|(id, d)| {
                d.revoke_proposed_us = Some(now_us);
                *id
            })
            .collect();
        // Hash order is not replayable; the simulator needs the same
        // proposals in the same order from the same seed.
        due.sort_unstable();
        due
    }

    pub(crate) fn len(&self) -> usize {
        self.deadlines.len()
    }
}

fn deadline(ttl_ms: u64, at_us: u64) -> Deadline {
    Deadline {
        ttl_ms,
        at_us,
        revoke_proposed_us: None,
    }
}

fn info(id: u64, ttl_ms: u64, remaining_ms: u64) -> LeaseInfo {
    LeaseInfo {
        id,
        ttl_ms,
        remaining_ms,
        keys: Vec::new(),
    }
}

/// What a lease op in an applied entry did, as the leader tracks it.
enum Change {
    Granted(u64),
    Revoked(u64),
}

/// The lease change an applied entry made, if any. Only commands of
/// format 3 can carry lease ops, so other entries are not decoded again.
fn lease_change(e: &Entry, outcome: &Outcome) -> Option<Change> {
    if e.data.first() != Some(&Command::FORMAT_V3) {
        return None;
    }
    let cmd = Command::decode(bytes::Bytes::copy_from_slice(&e.data)).ok()?;
    let op = cmd
        .batch
        .ops
        .iter()
        .find(|op| matches!(op, Op::LeaseGrant { .. } | Op::LeaseRevoke(_)))?;
    match (op, outcome) {
        (Op::LeaseGrant { .. }, Outcome::Applied { count, .. }) => Some(Change::Granted(*count)),
        (Op::LeaseRevoke(id), Outcome::Applied { .. }) => Some(Change::Revoked(*id)),
        // Already gone (an earlier revoke won): nothing left to expire.
        (
            Op::LeaseRevoke(id),
            Outcome::Failed {
                code: ErrorCode::LeaseNotFound,
                ..
            },
        ) => Some(Change::Revoked(*id)),
        _ => None,
    }
}

impl Node {
    /// One election timeout on this node's clock, in µs.
    pub(super) fn election_timeout_us(&self) -> u64 {
        self.opts.election_ticks as u64 * self.opts.tick_ms * 1_000
    }

    /// This node just became leader: every lease it holds gets a full
    /// TTL plus an election timeout (module doc).
    pub(super) fn leases_on_leading(&mut self) {
        let leases: Vec<(u64, u64)> = match self.sm.leases() {
            Ok(l) => l.into_iter().map(|r| (r.id, r.ttl_ms)).collect(),
            Err(e) => {
                // Without its leases the leader cannot expire them; they
                // stay until a later leader reads them.
                tracing::error!(error = %e, "cannot read the leases; none will expire");
                Vec::new()
            }
        };
        let extension_us = self.election_timeout_us();
        self.expiry.planted_cut_us = if self.planted_lease_short_ttl() {
            extension_us
        } else {
            0
        };
        let now_us = self.opts.clock.now_us();
        self.expiry.lead(&leases, now_us, extension_us);
        self.publish_leases();
    }

    pub(super) fn leases_on_stepping_down(&mut self) {
        self.expiry.step_down();
        self.publish_leases();
    }

    /// The lease grants and revokes among applied entries (leader only).
    pub(super) fn leases_applied(&mut self, entries: &[&Entry], outcomes: &[Outcome]) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let now_us = self.opts.clock.now_us();
        let mut changed = false;
        for (e, outcome) in entries.iter().zip(outcomes) {
            match lease_change(e, outcome) {
                Some(Change::Granted(id)) => {
                    // The stored record is the truth (a session retry
                    // answers with an old outcome for a lease maybe gone).
                    if let Ok(Some(r)) = self.sm.lease(id) {
                        self.expiry.granted(id, r.ttl_ms, now_us);
                        changed = true;
                    }
                }
                Some(Change::Revoked(id)) => {
                    self.expiry.revoked(id);
                    changed = true;
                }
                None => {}
            }
        }
        if changed {
            self.publish_leases();
        }
    }

    /// Proposes a revoke of each lease past its deadline (once a tick).
    pub(super) fn expire_leases(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let now_us = self.opts.clock.now_us();
        for id in self.expiry.due(now_us, self.election_timeout_us()) {
            let data = Command {
                session: None,
                batch: Batch {
                    guards: vec![],
                    ops: vec![Op::LeaseRevoke(id)],
                },
            }
            .encode();
            match self.raw.propose(Vec::new(), data) {
                Ok(()) => {
                    self.status.proposals.fetch_add(1, Ordering::Relaxed);
                    self.status.leases_expired.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(lease = id, "lease expired; revoke proposed");
                }
                // Retried after an election timeout if still leading.
                Err(e) => tracing::debug!(lease = id, error = %e, "lease revoke not proposed"),
            }
        }
    }

    /// Answers a keep-alive (leader only).
    pub(super) fn lease_keep_alive(&mut self, ids: &[u64]) -> Result<CoordResponse, ErrorReply> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.leader_hint());
        }
        let now_us = self.opts.clock.now_us();
        self.status
            .lease_keep_alives
            .fetch_add(1, Ordering::Relaxed);
        Ok(CoordResponse::Leases(self.expiry.keep_alive(ids, now_us)))
    }

    /// Time left of each lease in `ids`, by the leader's clock (`None`:
    /// this leader tracks no such lease).
    pub(super) fn lease_remaining(&self, ids: &[u64]) -> Result<Vec<Option<u64>>, ErrorReply> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.leader_hint());
        }
        let now_us = self.opts.clock.now_us();
        Ok(ids
            .iter()
            .map(|id| self.expiry.remaining_ms(*id, now_us))
            .collect())
    }

    fn publish_leases(&self) {
        self.status
            .leases_tracked
            .store(self.expiry.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    #[test]
    fn a_new_leader_extends_every_lease_by_an_election_timeout() {
        let mut x = Expiry::default();
        x.lead(&[(1, 100), (2, 300)], 10_000 * MS, 500 * MS);
        assert_eq!(x.remaining_ms(1, 10_000 * MS), Some(600));
        assert_eq!(x.remaining_ms(2, 10_000 * MS), Some(800));
        // Not due before TTL + extension...
        assert!(x.due(10_599 * MS, 500 * MS).is_empty());
        // ...and due once past it.
        assert_eq!(x.due(10_600 * MS, 500 * MS), vec![1]);
        assert_eq!(x.remaining_ms(3, 10_000 * MS), None);
    }

    #[test]
    fn a_grant_runs_its_ttl_from_when_it_applied() {
        let mut x = Expiry::default();
        x.granted(7, 200, 1_000 * MS);
        assert_eq!(x.remaining_ms(7, 1_050 * MS), Some(150));
        assert!(x.due(1_199 * MS, 500 * MS).is_empty());
        assert_eq!(x.due(1_200 * MS, 500 * MS), vec![7]);
    }

    #[test]
    fn expiry_proposes_a_revoke_once_then_again_after_the_retry_time() {
        let mut x = Expiry::default();
        x.granted(1, 100, 0);
        x.granted(2, 100, 0);
        assert_eq!(x.due(100 * MS, 500 * MS), vec![1, 2]);
        // Proposed: not again on the next ticks.
        assert!(x.due(150 * MS, 500 * MS).is_empty());
        assert!(x.due(599 * MS, 500 * MS).is_empty());
        // The revoke of 1 applied; 2's proposal was lost: retried.
        x.revoked(1);
        assert_eq!(x.due(600 * MS, 500 * MS), vec![2]);
        assert_eq!(x.len(), 1);
    }

    #[test]
    fn a_keep_alive_renews_known_leases_and_reports_unknown_ones() {
        let mut x = Expiry::default();
        x.granted(1, 100, 0);
        let r = x.keep_alive(&[1, 9], 90 * MS);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].id, r[0].ttl_ms, r[0].remaining_ms), (1, 100, 100));
        assert_eq!((r[1].id, r[1].ttl_ms), (9, 0));
        // Renewed from 90 ms: not due at 100 ms, due at 190 ms.
        assert!(x.due(189 * MS, 500 * MS).is_empty());
        assert_eq!(x.due(190 * MS, 500 * MS), vec![1]);
        // Its revoke is in flight: a late keep-alive cannot save it.
        assert_eq!(x.keep_alive(&[1], 191 * MS)[0].ttl_ms, 0);
    }

    #[test]
    fn stepping_down_forgets_every_deadline() {
        let mut x = Expiry::default();
        x.granted(1, 100, 0);
        x.step_down();
        assert_eq!(x.len(), 0);
        assert!(x.due(1_000 * MS, 0).is_empty());
        assert_eq!(x.keep_alive(&[1], 0)[0].ttl_ms, 0);
    }
}
