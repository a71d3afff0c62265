//! The random fault schedule and what faults do to a node: partitions,
//! power loss of one node or of the whole cluster, disk errors, process
//! pauses and their resumption, slow network periods; and the restarts
//! after them, including at the end of the workload.

use rand::Rng;

use super::{Ev, Msg, Paused, Sim};

impl Sim {
    /// A scheduled fault falls due: injects it and schedules the next,
    /// while the workload runs.
    pub(super) fn fault_due(&mut self) {
        if self.workload {
            self.inject_fault();
            let d = self.fault_gap_us();
            self.at(d, Ev::Fault);
        }
    }

    /// The time to the next scheduled fault.
    pub(super) fn fault_gap_us(&mut self) -> u64 {
        self.rng.random_range(200_000..1_500_000)
    }

    /// One scheduled fault, drawn from the seed.
    fn inject_fault(&mut self) {
        let roll = self.rng.random_range(0..120);
        match roll {
            0..=29 => self.partition(),
            30..=39 => self.heal(),
            40..=69 => self.power_loss(),
            70..=79 => self.cluster_power_loss(),
            80..=89 => self.disk_fault(),
            100..=109 => self.random_pause(),
            110..=119 => self.membership_step(),
            // 90..=99.
            _ => self.slow_network(),
        }
    }

    /// A new partition in place of the current one: one node isolated,
    /// one that cannot send or cannot receive, or a random split. It heals
    /// later, or sooner at the next heal.
    fn partition(&mut self) {
        let n = self.nodes.len();
        self.stats.partitions += 1;
        self.net.cut.clear();
        let victim = self.rng.random_range(0..n);
        let kind = self.rng.random_range(0..3);
        let mut desc = String::new();
        match kind {
            0 => {
                self.net.isolate(victim, n);
                desc = format!("n{victim} isolated");
            }
            1 => {
                // Asymmetric: the victim hears the others but they
                // do not hear it (or the other way round).
                let outgoing = self.rng.random_bool(0.5);
                for j in (0..n).filter(|&j| j != victim) {
                    self.net
                        .cut
                        .insert(if outgoing { (victim, j) } else { (j, victim) });
                }
                desc.push_str(&format!(
                    "n{victim} {} (asymmetric)",
                    if outgoing {
                        "cannot send"
                    } else {
                        "cannot receive"
                    }
                ));
            }
            _ => {
                let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.net.cut.insert((a, b));
                        }
                    }
                }
                desc = format!("split {side:?}");
            }
        }
        self.log(|| format!("partition: {desc}"));
        let d = self.rng.random_range(200_000..3_000_000);
        self.at(d, Ev::Heal);
    }

    /// A random node loses power (if it is up) and restarts later.
    fn power_loss(&mut self) {
        let i = self.rng.random_range(0..self.nodes.len());
        if self.nodes[i].node.is_some() {
            self.crash(i, "power loss");
            let d = self.rng.random_range(20_000..2_000_000);
            self.schedule_restart(i, d);
        }
    }

    /// The whole cluster loses power at once: only what was fsynced may
    /// survive anywhere.
    fn cluster_power_loss(&mut self) {
        self.stats.power_losses += 1;
        self.log(|| "power loss of the whole cluster".into());
        for i in 0..self.nodes.len() {
            self.crash(i, "cluster power loss");
            let d = self.rng.random_range(20_000..500_000);
            self.schedule_restart(i, d);
        }
    }

    /// Arms a disk error on a random node: its next fsync fails, or one of
    /// its next 40 disk writes does.
    fn disk_fault(&mut self) {
        let i = self.rng.random_range(0..self.nodes.len());
        let vfs = &self.nodes[i].vfs;
        if self.rng.random_bool(0.5) {
            vfs.fail_next_sync(true);
            self.log(|| format!("n{i}: next fsync fails"));
        } else {
            let after = vfs.ops() + self.rng.random_range(0..40);
            vfs.inject_io_error_after(Some(after));
            self.log(|| format!("n{i}: disk write {after} fails"));
        }
    }

    /// A process stops and resumes (SIGSTOP, a VM stall): the leader half
    /// of the time, since its pause is the risky one.
    fn random_pause(&mut self) {
        let leader = self.leader().filter(|_| self.rng.random_bool(0.5));
        let i = leader.unwrap_or_else(|| self.rng.random_range(0..self.nodes.len()));
        let e = Self::election_timeout_us();
        let d = self.rng.random_range(e / 2..=3 * e);
        self.pause(i, d);
    }

    /// Slow network for a while: longer and more varied delays.
    fn slow_network(&mut self) {
        self.net.delay_jitter_us = self.rng.random_range(100..60_000);
        let j = self.net.delay_jitter_us;
        self.log(|| format!("network jitter now {j}us"));
    }

    /// Power loss of one node: unsynced writes are lost or torn, and the
    /// process with all its memory is gone.
    pub(super) fn crash(&mut self, i: usize, why: &str) {
        if self.nodes[i].node.is_none() {
            return;
        }
        let lose_all = self.rng.random_bool(0.5);
        let sn = &mut self.nodes[i];
        // The disk first: anything the dropped node still writes is lost.
        if lose_all {
            sn.vfs.crash_lose_all_unsynced();
        } else {
            sn.vfs.crash();
        }
        sn.node = None;
        sn.server = None;
        sn.tlog = None;
        // kill -9 ends a stopped process too; what waited for it is lost.
        sn.paused = None;
        sn.incarnation += 1;
        sn.outbox.lock().clear();
        self.stats.crashes += 1;
        self.log(|| format!("n{i} crashes ({why}; lose_all_unsynced={lose_all})"));
    }

    pub(super) fn schedule_restart(&mut self, i: usize, delay_us: u64) {
        if !self.nodes[i].restart_pending {
            self.nodes[i].restart_pending = true;
            self.at(delay_us, Ev::Restart(i));
        }
    }

    /// Starts crashed node `i` again from what its disk kept.
    pub(super) fn restart(&mut self, i: usize) {
        if self.nodes[i].node.is_some() {
            return;
        }
        match self.open_node(i) {
            Ok(()) => self.log(|| format!("n{i} restarts")),
            // An injected disk error during recovery: the node
            // refuses to start, and is started again later.
            Err(e) if super::is_injected_io(&*e) => {
                self.log(|| format!("n{i} fails to restart: {e}"));
                self.nodes[i].vfs.crash();
                self.nodes[i].restart_pending = false;
                let d = self.rng.random_range(50_000..500_000);
                self.schedule_restart(i, d);
            }
            Err(e) => {
                self.nodes[i].restart_pending = false;
                self.fail(format!("n{i} failed to restart after a crash: {e}"));
            }
        }
    }

    /// A node's own call failed (an injected disk error, or a real bug):
    /// it stops, as the production loop does, and comes back later.
    pub(super) fn node_error(&mut self, i: usize, e: String) {
        self.stats.disk_errors += 1;
        self.crash(i, &format!("node error: {e}"));
        let d = self.rng.random_range(50_000..1_000_000);
        self.schedule_restart(i, d);
    }

    /// The workload ends and healing begins: the network is repaired,
    /// armed disk faults are cleared, crashed nodes restart and paused ones
    /// resume.
    pub(super) fn end_workload(&mut self) {
        self.cuts_end();
        self.workload = false;
        self.net.repair();
        self.links_healed();
        self.log(|| "workload ends; network heals; crashed nodes restart".into());
        for i in 0..self.nodes.len() {
            self.nodes[i].vfs.inject_io_error_after(None);
            self.nodes[i].vfs.fail_next_sync(false);
            if self.nodes[i].node.is_none() && !self.is_removed(i) {
                self.schedule_restart(i, 10_000);
            }
            self.resume(i);
        }
    }

    /// Stops node `i`'s process for `pause_us`: it keeps its memory, its
    /// clock runs on, and everything sent to it waits.
    pub(super) fn pause(&mut self, i: usize, pause_us: u64) {
        if self.nodes[i].node.is_none() || self.nodes[i].paused.is_some() {
            return;
        }
        self.nodes[i].paused = Some(Paused {
            backlog: Vec::new(),
            tick_due: false,
        });
        self.stats.pauses += 1;
        self.log(|| format!("n{i} pauses for {pause_us}us"));
        let inc = self.nodes[i].incarnation;
        self.at(pause_us, Ev::Resume(i, inc));
    }

    /// The paused node `i` goes on: it takes what queued up in batches (in
    /// an order no one controls: peer and client connections race), each
    /// batch processed as one loop turn, and only then runs its timer.
    /// Half the time the client requests come first, in a turn of their
    /// own: in production peer messages pass through one more thread on
    /// their way in, so the loop often sees the clients' alone.
    pub(super) fn resume(&mut self, i: usize) {
        let Some(p) = self.nodes[i].paused.take() else {
            return;
        };
        let n = p.backlog.len();
        self.log(|| format!("n{i} resumes with {n} waiting"));
        for batch in self.resume_batches(p.backlog) {
            if self.nodes[i].node.is_none() {
                break;
            }
            self.step(i, batch);
        }
        if self.scenario_leader() == Some(i) {
            self.scenario_end();
        }
        if p.tick_due && self.nodes[i].node.is_some() {
            let inc = self.nodes[i].incarnation;
            self.tick(i, inc);
        }
    }

    /// Splits a resumed node's backlog into the turns its loop takes it in.
    fn resume_batches(&mut self, mut backlog: Vec<Msg>) -> Vec<Vec<Msg>> {
        let n = backlog.len();
        for k in (1..n).rev() {
            let j = self.rng.random_range(0..=k);
            backlog.swap(k, j);
        }
        let mut batches = Vec::new();
        if self.rng.random_bool(0.5) {
            let (clients, peers): (Vec<Msg>, Vec<Msg>) = backlog
                .into_iter()
                .partition(|m| !matches!(m, Msg::Peer(_)));
            batches.push(clients);
            backlog = peers;
        }
        let mut rest = backlog.into_iter().peekable();
        while rest.peek().is_some() {
            let take = self.rng.random_range(1..=n);
            batches.push(rest.by_ref().take(take).collect());
        }
        batches.retain(|b| !b.is_empty());
        batches
    }
}
