//! Targeted fault schedules that replace the random ones: a slow leader
//! cut off ([`Scenario::SlowLeaderCutOff`]), a paused leader
//! ([`Scenario::LeaderPause`]), with the clients each one steers, and
//! followers cut off one at a time ([`Scenario::FollowerCuts`]); a node
//! wiped next to a lagging voter ([`Scenario::WipeWithLaggingVoter`]) is
//! in `wipe.rs`.

use bytes::Bytes;
use nacre_proto::{Batch, Op};
use raft::StateRole;
use rand::Rng;

use super::network::Links;
use super::{Bug, Ev, Sim, ELECTION_TICKS, HEARTBEAT_TICKS, TICK_US};
use crate::checker::OpKind;

/// A targeted fault schedule. It replaces the random scheduled faults
/// (partitions, crashes, disk errors); network loss and duplication still
/// follow `faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Once the cluster has a leader and some acknowledged writes (from
    /// 0.8–1.2 simulated s into the workload), that leader's clock slows
    /// down by this factor (per mille: 4000 means each of its ticks takes
    /// 4x as long) and it is cut off from every other node, both ways, for
    /// 0.6–1.2 s. Meanwhile the even-numbered clients send only consistent
    /// reads, all to the old leader, and the others send the usual mix to
    /// the rest of the cluster. Then the network heals and the clock runs
    /// at its own rate again. The lease assumes clock rates within 2x of
    /// each other (docs/replication.md): past that, the old leader answers
    /// reads from a lease it no longer holds.
    SlowLeaderCutOff { leader_clock_slowdown_permille: u64 },
    /// Again and again while the workload runs (first after 0.8–1.2 s,
    /// then 0.3–0.8 s after each resume): the leader's process is paused
    /// (SIGSTOP, a VM stall) for 0.5–3 election timeouts while the others
    /// go on. Once another node has acknowledged a write during the pause,
    /// the even-numbered clients send consistent reads of the keys it
    /// wrote to the paused leader, where they queue with its peer messages
    /// until it resumes; the others keep writing to the rest of the
    /// cluster. A lease that did not see the time pass answers those reads
    /// with what it had before the pause.
    LeaderPause,
    /// Raft's amnesia case, once per run: from 0.8–1.2 s into the
    /// workload, once there is a leader and some acknowledged writes, the
    /// voters a quorum can spare (one of 3, two of 5) are cut off, so the
    /// writes of the next 0.3–0.8 s live on a bare quorum. Once one was
    /// acknowledged, a follower of that quorum loses its disk and restarts
    /// on an empty one with its config, the leader loses power (back after
    /// 0.6–1.2 s) and the lagging voters are reachable again. A restarted
    /// node that voted with an empty log would let a lagging voter lead
    /// and overwrite those writes.
    WipeWithLaggingVoter,
    /// Once there is a leader and some acknowledged writes: again and again
    /// until the workload ends, one follower is cut off for 0.2–1.5 s, then
    /// healed, with 0.1–0.5 s between rounds. Half the rounds first cut the
    /// leader's link to another follower for 0.2–1.5 s and heal it 0–100 ms
    /// before the follower is cut off: the leader then keeps its quorum
    /// only if that link came back. The network models the transport's
    /// connections here (`network::Links`) and loses nothing by chance.
    /// The leader must never stop leading in its term, and no stretch
    /// without an acknowledged write may last two election timeouts.
    FollowerCuts,
}

/// [`Scenario::FollowerCuts`] in progress.
pub(super) struct FollowerCuts {
    leader: usize,
    term: u64,
    /// When the last write was acknowledged (at first: when the cuts began).
    last_ack_us: u64,
    next: CutsStep,
}

#[derive(Debug, Clone, Copy)]
enum CutsStep {
    Round,
    /// Heal the leader's link to another follower, then cut `victim` off.
    LinkHeal {
        victim: usize,
    },
    Isolate {
        victim: usize,
    },
    Heal,
}

/// A [`Scenario`] in progress: a leader cut off, or paused.
pub(super) struct CutOff {
    pub(super) leader: usize,
    /// The leader's own clock period, restored when the cut ends (`None`:
    /// a pause, which leaves the clock alone).
    pub(super) period_permille: Option<u64>,
    /// Another node acknowledged a write during the cut.
    pub(super) new_write: bool,
    /// Keys such writes wrote (for the pause's readers to read).
    pub(super) written: Vec<Bytes>,
}

impl Sim {
    /// The node a running scenario is about.
    pub(super) fn scenario_leader(&self) -> Option<usize> {
        self.cutoff.as_ref().map(|co| co.leader)
    }

    /// Starts the configured [`Scenario`] once there is a leader and some
    /// writes were acknowledged; until then, looks again every 10 ms.
    pub(super) fn scenario_start(&mut self) {
        let Some(scenario) = self.cfg.scenario else {
            return;
        };
        if !self.workload || self.cutoff.is_some() || self.cuts.is_some() {
            return;
        }
        if scenario == Scenario::WipeWithLaggingVoter {
            self.wipe_start();
            return;
        }
        let Some(l) = self.leader().filter(|_| self.stats.writes_acked >= 10) else {
            self.at(10_000, Ev::ScenarioStart);
            return;
        };
        if scenario == Scenario::FollowerCuts {
            self.cuts_start(l);
            return;
        }
        let pause = scenario == Scenario::LeaderPause;
        for c in 0..self.clients.len() {
            if c % 2 == 0 {
                self.clients[c].pin = Some(l);
                self.clients[c].hold = pause;
                // Whatever it was waiting for, it gives up now, so that
                // its reads reach the leader from the start.
                if let Some(p) = self.clients[c].pending.as_mut() {
                    p.give_up(self.now_us);
                }
            } else {
                let j = self.other_node(l);
                self.clients[c].target = j;
                // A request waiting on the leader times out now (a client
                // may give up whenever), so this client goes on elsewhere.
                if let Some(p) = self.clients[c].pending.as_mut().filter(|p| p.node == l) {
                    p.deadline_us = self.now_us;
                }
            }
        }
        let mut co = CutOff {
            leader: l,
            period_permille: None,
            new_write: false,
            written: Vec::new(),
        };
        match scenario {
            Scenario::SlowLeaderCutOff {
                leader_clock_slowdown_permille: slow,
            } => {
                co.period_permille = Some(self.cut_off_slowly(l, slow));
                let d = self.rng.random_range(600_000..1_200_000);
                self.at(d, Ev::ScenarioEnd);
            }
            Scenario::WipeWithLaggingVoter => unreachable!("started by wipe_start"),
            Scenario::LeaderPause => {
                let e = Self::election_timeout_us();
                let d = self.rng.random_range(e / 2..=3 * e);
                self.pause(l, d);
            }
            Scenario::FollowerCuts => unreachable!("started above"),
        }
        self.cutoff = Some(co);
        if self.stats.cutoff_at_ms == 0 {
            self.stats.cutoff_at_ms = self.now_us / 1000;
        }
    }

    /// Slows node `l`'s clock by `slow` per mille and cuts it off from
    /// everyone, both ways; returns its clock period before.
    fn cut_off_slowly(&mut self, l: usize, slow: u64) -> u64 {
        let period = self.nodes[l].clock.period_permille();
        self.nodes[l]
            .clock
            .set_period_permille(period * slow / 1000);
        self.net.cut.clear();
        self.net.isolate(l, self.nodes.len());
        self.stats.partitions += 1;
        let new_tick = self.tick_us(l);
        self.log(|| format!("scenario: leader n{l} cut off, its tick {TICK_US}us -> {new_tick}us"));
        period
    }

    /// Ends the running scenario: the clients go back to the usual mix; a
    /// cut heals and the leader's clock gets its rate back; after a pause
    /// the next one is scheduled.
    pub(super) fn scenario_end(&mut self) {
        let Some(co) = self.cutoff.take() else {
            return;
        };
        for cl in &mut self.clients {
            cl.pin = None;
            cl.hold = false;
        }
        match co.period_permille {
            Some(period) => {
                self.nodes[co.leader].clock.set_period_permille(period);
                self.net.cut.clear();
                self.log(|| {
                    format!(
                        "scenario: network heals; n{} clock back to its rate",
                        co.leader
                    )
                });
            }
            None => {
                self.stats.pauses_with_new_write += u64::from(co.new_write);
                let d = self.rng.random_range(300_000..800_000);
                self.at(d, Ev::ScenarioStart);
            }
        }
    }

    /// A key for a scenario's reader (client `c`) to read: one the other
    /// nodes wrote during the scenario, once they wrote any.
    pub(super) fn scenario_read_key(&mut self, c: usize) -> Option<Bytes> {
        match (&self.cutoff, self.clients[c].pin) {
            (Some(co), Some(_)) if !co.written.is_empty() => {
                Some(co.written[self.rng.random_range(0..co.written.len())].clone())
            }
            _ => None,
        }
    }

    /// Where client `c` sends a request meant for node `i`. During a
    /// cut-off scenario the other clients stay with the majority (a hint
    /// may still name the old leader).
    pub(super) fn scenario_redirect(&mut self, c: usize, i: usize) -> usize {
        if let Some(l) = self.cutoff.as_ref().map(|co| co.leader) {
            if i == l && self.clients[c].pin.is_none() {
                let j = self.other_node(l);
                self.clients[c].target = j;
                return j;
            }
        }
        i
    }

    /// Node `i` is the paused leader of a scenario, and another node has
    /// acknowledged a write since the pause began.
    pub(super) fn at_paused_leader_after_write(&self, i: usize) -> bool {
        self.nodes[i].paused.is_some()
            && matches!(&self.cutoff, Some(co) if co.leader == i && co.new_write)
    }

    /// A write acknowledged by node `node`: by another node than the
    /// scenario's leader, it is one the leader misses; the readers waiting
    /// for such a write go on, and will read its keys.
    pub(super) fn scenario_write_acked(&mut self, node: usize, kind: &OpKind) {
        if let Some(c) = self.cuts.as_mut() {
            let gap_ms = (self.now_us - c.last_ack_us) / 1000;
            self.stats.longest_write_gap_ms = self.stats.longest_write_gap_ms.max(gap_ms);
            c.last_ack_us = self.now_us;
        }
        if let Some(co) = self.cutoff.as_mut().filter(|co| co.leader != node) {
            co.new_write = true;
            self.stats.cutoff_writes_acked += 1;
            if let OpKind::Write(b) = kind {
                co.written.extend(written_keys(b));
            }
            for cl in &mut self.clients {
                cl.hold = false;
            }
        }
    }

    /// A consistent read answered by node `node`: counted when the
    /// scenario's leader answered it, and apart when it did so after
    /// another node acknowledged a write.
    pub(super) fn scenario_read_answered(&mut self, node: usize) {
        if let Some(co) = self.cutoff.as_ref().filter(|co| co.leader == node) {
            self.stats.cutoff_reads_answered += 1;
            if co.new_write {
                self.stats.cutoff_reads_after_new_write += 1;
            }
        }
    }
}

impl Sim {
    /// Starts [`Scenario::FollowerCuts`] under leader `l`.
    fn cuts_start(&mut self, l: usize) {
        let Some((term, _)) = self.nodes[l].node.as_ref().map(|n| n.raft_role()) else {
            return;
        };
        // A message lost by chance could, rarely, cost the leader its
        // quorum for a whole election timeout; stepping down would then be
        // right. Only the cuts lose messages here.
        self.net.loss_permille = 0;
        self.net.dup_permille = 0;
        self.net.links = Some(Links::new(
            TICK_US / 1000,
            HEARTBEAT_TICKS,
            ELECTION_TICKS,
            self.cfg.planted == Some(Bug::StalledLinks),
        ));
        self.cuts = Some(FollowerCuts {
            leader: l,
            term,
            last_ack_us: self.now_us,
            next: CutsStep::Round,
        });
        self.log(|| format!("follower cuts begin under n{l}, leader in term {term}"));
        self.at(0, Ev::CutsStep);
    }

    /// The next step of the follower cuts, and the one after scheduled.
    pub(super) fn cuts_step(&mut self) {
        let Some((l, step)) = self.cuts.as_ref().map(|c| (c.leader, c.next)) else {
            return;
        };
        if !self.workload {
            return;
        }
        let (next, delay_us) = match step {
            CutsStep::Round => {
                let victim = self.other_node(l);
                self.stats.follower_cuts += 1;
                if self.rng.random_bool(0.5) {
                    let other = loop {
                        let j = self.other_node(l);
                        if j != victim {
                            break j;
                        }
                    };
                    self.net.cut.extend([(l, other), (other, l)]);
                    self.log(|| format!("follower cuts: link n{l}-n{other} cut"));
                    let d = self.rng.random_range(200_000..1_500_000);
                    (CutsStep::LinkHeal { victim }, d)
                } else {
                    (CutsStep::Isolate { victim }, 0)
                }
            }
            CutsStep::LinkHeal { victim } => {
                self.heal();
                let d = self.rng.random_range(0..100_000);
                (CutsStep::Isolate { victim }, d)
            }
            CutsStep::Isolate { victim } => {
                self.net.isolate(victim, self.nodes.len());
                self.log(|| format!("follower cuts: n{victim} cut off"));
                let d = self.rng.random_range(200_000..1_500_000);
                (CutsStep::Heal, d)
            }
            CutsStep::Heal => {
                self.heal();
                let d = self.rng.random_range(100_000..500_000);
                (CutsStep::Round, d)
            }
        };
        if let Some(c) = self.cuts.as_mut() {
            c.next = next;
        }
        self.at(delay_us, Ev::CutsStep);
    }

    /// Node `i` was seen in `role` (at a tick, when it changed): the
    /// follower cuts' leader must go on leading in its term, since it kept
    /// a quorum throughout.
    pub(super) fn cuts_role_seen(&mut self, i: usize, role: (u64, StateRole)) {
        let Some(c) = self.cuts.as_ref() else {
            return;
        };
        if !self.workload || c.leader != i || role == (c.term, StateRole::Leader) {
            return;
        }
        let term = c.term;
        self.stats.leader_step_downs += 1;
        if self.stats.leader_step_downs == 1 {
            self.fail(format!(
                "n{i}, leader in term {term}, became {:?} in term {} though it kept a quorum \
                 (follower cuts)",
                role.1, role.0
            ));
        }
    }

    /// The workload ends: the stretch since the last acknowledged write
    /// counts too, and the cuts stop. A stretch of two election timeouts
    /// without an acknowledged write fails the run: the leader kept a
    /// quorum, so only links that did not come back can stall writes that
    /// long (a healthy run of this scenario stays under one).
    pub(super) fn cuts_end(&mut self) {
        let Some(c) = self.cuts.take() else {
            return;
        };
        let gap_ms = (self.now_us - c.last_ack_us) / 1000;
        self.stats.longest_write_gap_ms = self.stats.longest_write_gap_ms.max(gap_ms);
        let longest = self.stats.longest_write_gap_ms;
        let bound_ms = 2 * Self::election_timeout_us() / 1000;
        if longest > bound_ms {
            self.fail(format!(
                "no write acknowledged for {longest} ms though the leader kept a quorum \
                 (follower cuts; bound {bound_ms} ms)"
            ));
        }
    }
}

/// The keys a batch sets or deletes.
fn written_keys(b: &Batch) -> Vec<Bytes> {
    b.ops
        .iter()
        .filter_map(|op| match op {
            Op::Set(k, _) | Op::Delete(k) | Op::Remove(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}
