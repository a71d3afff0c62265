//! A node that lost its data, next to a lagging voter
//! ([`Scenario::WipeWithLaggingVoter`](super::Scenario::WipeWithLaggingVoter)),
//! and what a node with an empty data directory learns from the others
//! before it creates a cluster.
//!
//! Raft's amnesia case: a write committed on a bare quorum (the leader and
//! a follower C, the other voters lagging), then C loses its disk and the
//! leader goes down. If C comes back as a voter with an empty log, it votes
//! for a lagging voter, which becomes leader without the write and
//! overwrites it everywhere. The node must notice that the cluster exists
//! and wait for the leader's snapshot instead.

use rand::Rng;

use super::{Ev, Msg, Sim};

/// The scenario in progress.
pub(super) struct Wipe {
    /// The voters cut off, so that they lag.
    lagging: Vec<usize>,
    /// Writes acknowledged when the lagging voters were cut off.
    acked_at_cut: u64,
    /// How often the wipe waited for a write acknowledged during the cut.
    waits: u32,
}

impl Sim {
    /// Once there is a leader and some acknowledged writes: cuts off as
    /// many voters other than the leader as a quorum can spare, so that
    /// what is written next lives on a bare quorum.
    pub(super) fn wipe_start(&mut self) {
        if !self.workload {
            return;
        }
        let Some(l) = self.leader().filter(|_| self.stats.writes_acked >= 10) else {
            self.at(10_000, Ev::ScenarioStart);
            return;
        };
        let n = self.nodes.len();
        let spare = n - (n / 2 + 1);
        let mut lagging = Vec::new();
        while lagging.len() < spare {
            let j = self.other_node(l);
            if !lagging.contains(&j) {
                lagging.push(j);
            }
        }
        self.net.cut.clear();
        for &g in &lagging {
            self.net.isolate(g, n);
        }
        self.stats.partitions += 1;
        self.log(|| format!("scenario: voters {lagging:?} cut off; leader n{l} keeps writing"));
        self.wipe = Some(Wipe {
            lagging,
            acked_at_cut: self.stats.writes_acked,
            waits: 0,
        });
        let d = self.rng.random_range(300_000..800_000);
        self.at(d, Ev::Wipe);
    }

    /// Once a write was acknowledged by the bare quorum: a follower of that
    /// quorum loses its disk and restarts on an empty one with its config;
    /// the leader goes down (for 0.6–1.2 s); the lagging voters are back.
    pub(super) fn wipe_and_crash(&mut self) {
        let leader = self.leader();
        let acked = self.stats.writes_acked;
        let Some(w) = self.wipe.as_mut() else {
            return;
        };
        let leader = leader.filter(|l| !w.lagging.contains(l));
        let Some(l) = leader.filter(|_| acked > w.acked_at_cut) else {
            // Nothing acknowledged during the cut yet: nothing to lose.
            w.waits += 1;
            if w.waits < 50 {
                self.at(20_000, Ev::Wipe);
            }
            return;
        };
        let lagging = w.lagging.clone();
        self.stats.lagging_writes_acked += acked - w.acked_at_cut;
        let quorum: Vec<usize> = (0..self.nodes.len())
            .filter(|i| *i != l && !lagging.contains(i))
            .collect();
        let c = quorum[self.rng.random_range(0..quorum.len())];
        self.crash(c, "its disk is wiped");
        // A new, empty disk: the data directory is gone.
        self.nodes[c].vfs = nacre_vfs::sim::SimVfs::new(self.rng.random());
        self.stats.wipes += 1;
        self.crash(l, "power loss of the leader");
        self.net.cut.clear();
        self.log(|| {
            format!("scenario: n{c} wiped and restarting; leader n{l} down; all links heal")
        });
        let d = self.rng.random_range(10_000..50_000);
        self.schedule_restart(c, d);
        let d = self.rng.random_range(600_000..1_200_000);
        self.schedule_restart(l, d);
    }

    /// Node `i`, if it waits to create the cluster, asks every other node
    /// it can reach (up, not paused, links both ways) for its term and last
    /// log index, as `nacre serve` does over the client protocol; the
    /// answers arrive at once.
    pub(super) fn answer_creation(&mut self, i: usize) {
        if !self.nodes[i].node.as_ref().is_some_and(|n| n.is_creating()) {
            return;
        }
        let answers: Vec<Msg> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].paused.is_none())
            .filter(|&j| !self.net.cut.contains(&(i, j)) && !self.net.cut.contains(&(j, i)))
            .filter_map(|j| {
                let status = self.nodes[j].node.as_ref()?.status();
                Some(Msg::PeerState {
                    id: self.nodes[j].id,
                    term: status.term.load(std::sync::atomic::Ordering::Relaxed),
                    last_index: status.last_index.load(std::sync::atomic::Ordering::Relaxed),
                })
            })
            .collect();
        if !answers.is_empty() {
            self.step(i, answers);
        }
    }
}
