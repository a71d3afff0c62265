//! The simulated network between the nodes: every raft message a node
//! sends is delayed, lost, duplicated or dropped by a cut link, and a
//! snapshot is shipped as a file, as the transport ships it. In the
//! follower-cuts scenario it also models the transport's connections
//! ([`Links`]): a link a cut stalled comes back after the heal only when
//! its sender has noticed and dialled again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::Rng;

use super::{is_local_key, Ev, Sim};
use nacre_server::transport::{Backoff, TransportConfig};

/// Tells apart the snapshot directories of simulations run at once.
static SIM_DIRS: AtomicU64 = AtomicU64::new(0);

/// The network's state: which links are cut, and the loss, duplication and
/// delays of this run.
pub(super) struct Network {
    /// Links that drop everything, as (from, to) node positions.
    pub(super) cut: BTreeSet<(usize, usize)>,
    pub(super) loss_permille: u32,
    pub(super) dup_permille: u32,
    pub(super) delay_min_us: u64,
    pub(super) delay_jitter_us: u64,
    /// Where snapshot files in flight are written (real files: nodes read
    /// them with std::fs, as production reads what the transport wrote).
    snap_dir: SnapDir,
    snap_files: u64,
    /// The transport's connections, when modelled; otherwise a healed link
    /// carries messages again at once.
    pub(super) links: Option<Links>,
}

/// The peer transport's connections, one per directed link. The network
/// drops packets, so a cut leaves a connection open and silent: a link
/// that lost a message to a cut is stalled, and after the heal it carries
/// messages again only once its sender has noticed (nothing acknowledged
/// for `peer_timeout_ms`) and a dial has got through, dials following the
/// transport's own [`Backoff`] and timing (`TransportConfig::with_timing`
/// at the simulator's tick). A link idle through the cut is unaffected,
/// as a TCP connection with nothing in flight is. With
/// `Bug::StalledLinks`, stalls are never noticed and only TCP's
/// retransmission brings a link back (`stalled_link_back_at_us`).
pub(super) struct Links {
    cfg: TransportConfig,
    stalled_bug: bool,
    state: BTreeMap<(usize, usize), Link>,
}

#[derive(Debug, Clone, Copy)]
enum Link {
    /// The connection first lost a message to a cut at this time.
    Stalled { since_us: u64 },
    /// Healed; the link carries messages again from this time.
    BackAt { us: u64 },
}

impl Links {
    pub(super) fn new(
        tick_ms: u64,
        heartbeat_ticks: usize,
        election_ticks: usize,
        stalled_bug: bool,
    ) -> Links {
        Links {
            cfg: TransportConfig::new("sim", 1, "", "").with_timing(
                tick_ms,
                heartbeat_ticks,
                election_ticks,
            ),
            stalled_bug,
            state: BTreeMap::new(),
        }
    }

    /// Whether a message sent now on `link` is lost to its connection
    /// (beyond a cut, which loses it anyway). A message meeting a cut
    /// stalls a working connection.
    fn lost(&mut self, link: (usize, usize), cut: bool, now_us: u64) -> bool {
        match self.state.get(&link).copied() {
            None if cut => {
                self.state.insert(link, Link::Stalled { since_us: now_us });
                true
            }
            None => false,
            Some(Link::Stalled { .. }) => true,
            Some(Link::BackAt { .. }) if cut => {
                // Cut again before it came back: the sender is still
                // dialling, and will be after this cut heals.
                self.state.insert(link, Link::Stalled { since_us: now_us });
                true
            }
            Some(Link::BackAt { us }) if now_us >= us => {
                self.state.remove(&link);
                false
            }
            Some(Link::BackAt { .. }) => true,
        }
    }

    /// The cuts changed at `now_us`: every stalled link no longer in `cut`
    /// gets the time it comes back. Returns how many did.
    fn healed(&mut self, cut: &BTreeSet<(usize, usize)>, now_us: u64, rng: &mut StdRng) -> u64 {
        let mut n = 0;
        for (link, state) in self.state.iter_mut() {
            let Link::Stalled { since_us } = *state else {
                continue;
            };
            if cut.contains(link) {
                continue;
            }
            let us = if self.stalled_bug {
                nacre_server::node::stalled_link_back_at_us(since_us, now_us)
            } else {
                redialled_at_us(&self.cfg, since_us, now_us, rng)
            };
            *state = Link::BackAt { us };
            n += 1;
        }
        n
    }
}

/// The transport's timeline for a connection stalled at `since_us` and
/// healed at `healed_us`: the sender gives it up `peer_timeout_ms` after
/// the frame that got no acknowledgement, waits one backoff step, and dials
/// once per step after that, each dial that meets the cut hanging while the
/// next ones start; the first dial after the heal connects.
fn redialled_at_us(cfg: &TransportConfig, since_us: u64, healed_us: u64, rng: &mut StdRng) -> u64 {
    let mut backoff = Backoff::new(cfg);
    let mut at = since_us + cfg.peer_timeout_ms * 1000;
    loop {
        at += backoff.after_failure(rng).as_micros() as u64;
        if at >= healed_us {
            return at;
        }
    }
}

/// A directory removed, with what is left in it, when the run ends.
struct SnapDir(PathBuf);

impl Drop for SnapDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Network {
    /// The network character of this run: some seeds are clean, some
    /// lossy. Without `faults` nothing is lost or duplicated.
    pub(super) fn new(seed: u64, faults: bool, rng: &mut StdRng) -> Network {
        let loss_permille = if faults { rng.random_range(0..50) } else { 0 };
        let dup_permille = if faults { rng.random_range(0..30) } else { 0 };
        let delay_min_us = rng.random_range(100..3_000);
        let delay_jitter_us = rng.random_range(100..15_000);
        Network {
            cut: BTreeSet::new(),
            loss_permille,
            dup_permille,
            delay_min_us,
            delay_jitter_us,
            snap_dir: SnapDir(std::env::temp_dir().join(format!(
                "nacre-sim-{}-{seed}-{}",
                std::process::id(),
                SIM_DIRS.fetch_add(1, Ordering::Relaxed)
            ))),
            snap_files: 0,
            links: None,
        }
    }

    /// Cuts node `i` off from every other of the `n` nodes, both ways.
    pub(super) fn isolate(&mut self, i: usize, n: usize) {
        for j in (0..n).filter(|&j| j != i) {
            self.cut.insert((i, j));
            self.cut.insert((j, i));
        }
    }

    /// The network as it is after the workload: no cut, no loss, no
    /// duplication (delays stay).
    pub(super) fn repair(&mut self) {
        self.cut.clear();
        self.loss_permille = 0;
        self.dup_permille = 0;
    }
}

impl Sim {
    /// Sends one message node `from` put in its outbox.
    pub(super) fn route(&mut self, from: usize, m: Message) {
        self.stats.messages += 1;
        let Some(to) = self.nodes.iter().position(|n| n.id == m.to) else {
            return;
        };
        if m.get_msg_type() == MessageType::MsgSnapshot {
            self.route_snapshot(from, to, m);
            return;
        }
        let cut = self.net.cut.contains(&(from, to));
        let now = self.now_us;
        let stalled = self
            .net
            .links
            .as_mut()
            .is_some_and(|l| l.lost((from, to), cut, now));
        if cut || stalled || self.rng.random_range(0..1000) < self.net.loss_permille {
            self.stats.messages_dropped += 1;
            return;
        }
        let copies = if self.rng.random_range(0..1000) < self.net.dup_permille {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let d = self.net.delay_min_us + self.rng.random_range(0..self.net.delay_jitter_us);
            self.at(d, Ev::Deliver(to, Box::new(m.clone())));
        }
    }

    /// Ships a snapshot from node `from` as the transport would: the store
    /// contents the snapshot names, streamed into a file for the receiver.
    /// Lost or cut, the sender hears that sending failed.
    fn route_snapshot(&mut self, from: usize, to: usize, m: Message) {
        self.stats.snapshots_sent += 1;
        let d = self.net.delay_min_us + self.rng.random_range(0..self.net.delay_jitter_us);
        let lost = self.net.cut.contains(&(from, to))
            || self.rng.random_range(0..1000) < self.net.loss_permille;
        let file = if lost {
            None
        } else {
            self.write_snapshot_file(from, &m)
        };
        self.log(|| {
            format!(
                "n{from} sends n{to} a snapshot at {}{}",
                m.get_snapshot().get_metadata().index,
                if file.is_some() { "" } else { " (lost)" }
            )
        });
        let ok = file.is_some();
        if let Some(path) = file {
            self.at(d, Ev::DeliverSnapshot(to, Box::new(m.clone()), path));
        }
        self.at(d, Ev::SnapshotStatus(from, m.to, ok));
    }

    fn write_snapshot_file(&mut self, from: usize, m: &Message) -> Option<PathBuf> {
        use std::io::Write;
        let node = self.nodes[from].node.as_ref()?;
        let name = String::from_utf8(m.get_snapshot().data.to_vec()).ok()?;
        let txn = match node.store().snapshot(&name) {
            Ok(t) => t,
            Err(e) => {
                // The leader dropped it for a newer one: as a failed send.
                self.log(|| format!("snapshot {name} gone: {e}"));
                return None;
            }
        };
        let net = &mut self.net;
        std::fs::create_dir_all(&net.snap_dir.0).expect("snapshot dir");
        net.snap_files += 1;
        let path = net.snap_dir.0.join(format!("{}.snap", net.snap_files));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("snapshot file"));
        for kv in txn.iter() {
            let (k, v) = kv.expect("a store snapshot reads back");
            if is_local_key(&k) {
                continue;
            }
            for field in [&k, &v] {
                out.write_all(&(field.len() as u32).to_le_bytes())
                    .expect("write");
                out.write_all(field).expect("write");
            }
        }
        out.flush().expect("write");
        Some(path)
    }

    /// Heals every cut link.
    pub(super) fn heal(&mut self) {
        if !self.net.cut.is_empty() {
            self.net.cut.clear();
            self.log(|| "network heals".into());
        }
        self.links_healed();
    }

    /// The cuts changed: stalled links that are no longer cut learn when
    /// they come back (when links are modelled).
    pub(super) fn links_healed(&mut self) {
        let now = self.now_us;
        if let Some(links) = self.net.links.as_mut() {
            let n = links.healed(&self.net.cut, now, &mut self.rng);
            self.stats.links_stalled += n;
        }
    }
}
