//! Leases under the simulator's faults (`SimConfig::leases`): holders that
//! grant leases, attach keys to them, keep them alive for a while and then
//! stop (or revoke them), all through the nodes' request layer; and the
//! checks of when each lease ended, on the simulator's true clock
//! (docs/testing.md, "Leases").
//!
//! What the checks know comes from two places. The holders record when
//! they sent each grant or keep-alive that was acknowledged (the renewal
//! happened at the leader after that), and when every keep-alive request
//! they sent, answered or not, ended (after that it cannot renew anything).
//! The committed log, as the simulator takes it, says when each lease was
//! granted and when it ended, and whether by a holder's revoke (stamped
//! with a session) or by the leader's expiry (no session). The time an
//! entry is taken is when the first node learned it committed, no later
//! than any node applied it.
//!
//! * **Never early.** A lease the leader expired must have lived at least
//!   its TTL since the later of its grant's commit and the send of its
//!   last acknowledged renewal, less the clock drift bound: the leader
//!   measures the TTL on its own clock, which may run up to
//!   `clock_drift_permille_max` fast.
//! * **Not late once healthy.** The cluster is healthy from the first
//!   moment after the heal (network repaired, crashed nodes restarting)
//!   at which a node leads. From then (or from a lease's grant or its last
//!   renewal request ending, if later), a lease must end within its TTL
//!   plus the extension a new leader gives (one election timeout), both
//!   stretched by the drift bound, plus [`LEASE_FAILOVER_US`] for the
//!   leader to catch up and commit the revoke, and for one or two more
//!   elections a restarted or re-added node may cause, plus a tick.
//!
//! The holders draw from their own seeded generator, so that turning
//! leases on changes nothing of the other clients' choices (though their
//! proposals change what the cluster does).

use std::collections::BTreeMap;

use bytes::Bytes;
use nacre_proto::{
    Batch, Command, CoordRequest, CoordResponse, ErrorCode, Op, Request, Response, Session,
};
use nacre_server::sim_server::Answer;
use raft::eraftpb::Entry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Ev, Sim, ELECTION_TICKS, TICK_US};

/// Lease holders in a run with leases.
const HOLDERS: usize = 3;
/// TTLs a holder asks for (ms): from the floor the simulator's request
/// layer allows (two election timeouts, 200 ms) up.
const TTLS_MS: [u64; 4] = [250, 400, 600, 800];
/// How long a holder waits for an answer before it stops waiting (the
/// request runs on, and is still watched).
const ANSWER_WAIT_US: u64 = 1_000_000;
/// Time allowed, once a node leads after the heal, for it to catch up and
/// commit the revokes, and for a few more elections (a restarted node's
/// pre-vote, a member added back): ten election timeouts.
pub(super) const LEASE_FAILOVER_US: u64 = 10 * ELECTION_TICKS as u64 * TICK_US;
/// Session ids of the holders' revokes, clear of the clients' (1..).
const HOLDER_CLIENT_ID_BASE: u64 = 1 << 32;

/// What a holder's request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Grant,
    Attach(u64),
    KeepAlive(u64),
    Revoke(u64),
}

/// A request in a node's request layer.
struct InFlight {
    holder: usize,
    node: usize,
    asked: Asked,
    sent_us: u64,
    answer: Answer,
    /// The holder stopped waiting for it (it still runs, and is watched).
    left: bool,
}

#[derive(Default)]
struct Holder {
    target: usize,
    lease: Option<u64>,
    ttl_ms: u64,
    /// Keep-alives until then; after it, the lease is dropped or revoked.
    keep_until_us: u64,
    waiting: bool,
    seq: u64,
}

/// What is known of one lease.
#[derive(Debug, Default, Clone)]
struct LeaseObs {
    ttl_ms: u64,
    /// When its grant was taken from the log (committed).
    granted_us: Option<u64>,
    /// Sends of the grant and keep-alives that were acknowledged.
    last_ack_sent_us: u64,
    /// Keep-alive requests still running, and when the last one ended.
    renewals_open: u32,
    renewals_ended_us: u64,
    /// When its ending revoke was taken from the log, and whether the
    /// leader's expiry (no session) sent it.
    ended_us: Option<u64>,
    expired: bool,
}

pub(super) struct LeaseWork {
    rng: StdRng,
    holders: Vec<Holder>,
    inflight: Vec<InFlight>,
    leases: BTreeMap<u64, LeaseObs>,
    healed_us: Option<u64>,
    /// The first time after the heal that a node led.
    healthy_us: Option<u64>,
    attach_seq: u64,
}

impl LeaseWork {
    pub(super) fn new(seed: u64, nodes: usize) -> LeaseWork {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x1ea5_e5ee_d000_0001);
        let holders = (0..HOLDERS)
            .map(|_| Holder {
                target: rng.random_range(0..nodes),
                ..Holder::default()
            })
            .collect();
        LeaseWork {
            rng,
            holders,
            inflight: Vec::new(),
            leases: BTreeMap::new(),
            healed_us: None,
            healthy_us: None,
            attach_seq: 0,
        }
    }
}

impl Sim {
    /// Schedules the holders' first turns.
    pub(super) fn leases_start(&mut self) {
        let Some(w) = self.leases.as_mut() else {
            return;
        };
        let delays: Vec<u64> = (0..HOLDERS)
            .map(|_| w.rng.random_range(0..50_000))
            .collect();
        for (h, d) in delays.into_iter().enumerate() {
            self.at(d, Ev::Lease(h));
        }
    }

    /// Holder `h`'s turn: its next request, unless it waits for one.
    pub(super) fn lease_wake(&mut self, h: usize) {
        if !self.workload {
            return;
        }
        let now = self.now_us;
        let Some(w) = self.leases.as_mut() else {
            return;
        };
        let holder = &mut w.holders[h];
        if holder.waiting {
            return;
        }
        let req = match holder.lease {
            None => {
                holder.ttl_ms = TTLS_MS[w.rng.random_range(0..TTLS_MS.len())];
                let ttl_ms = holder.ttl_ms;
                (
                    Asked::Grant,
                    Request::Coord(CoordRequest::LeaseGrant { id: 0, ttl_ms }),
                )
            }
            Some(id) if now < holder.keep_until_us && w.rng.random_bool(0.3) => {
                w.attach_seq += 1;
                let key = Bytes::from(format!("lease/{h}-{}", w.attach_seq));
                let op = Op::SetLeased {
                    key,
                    value: Bytes::from_static(b"held"),
                    lease: id,
                };
                let batch = Batch {
                    guards: vec![],
                    ops: vec![op],
                };
                (Asked::Attach(id), Request::Batch(batch))
            }
            Some(id) if now < holder.keep_until_us => (
                Asked::KeepAlive(id),
                Request::Coord(CoordRequest::LeaseKeepAlive { ids: vec![id] }),
            ),
            Some(id) if w.rng.random_bool(0.2) => {
                holder.seq += 1;
                let session = Session {
                    client_id: HOLDER_CLIENT_ID_BASE + h as u64,
                    seq: holder.seq,
                };
                let revoke = Request::Coord(CoordRequest::LeaseRevoke { id });
                let req = Request::Session {
                    session,
                    request: Box::new(revoke),
                };
                (Asked::Revoke(id), req)
            }
            Some(_) => {
                // Dropped: no more keep-alives; it must expire on its own.
                holder.lease = None;
                let d = w.rng.random_range(0..200_000);
                self.at(d, Ev::Lease(h));
                return;
            }
        };
        self.lease_send(h, req.0, req.1);
    }

    fn lease_send(&mut self, h: usize, asked: Asked, req: Request) {
        let now = self.now_us;
        let w = self.leases.as_mut().expect("leases on");
        let node = if w.rng.random_bool(0.1) {
            w.rng.random_range(0..self.nodes.len())
        } else {
            w.holders[h].target
        };
        let Some(server) = self.nodes[node].server.as_ref() else {
            // Connection refused: try another node soon.
            w.holders[h].target = w.rng.random_range(0..self.nodes.len());
            let d = w.rng.random_range(1_000..20_000);
            self.at(d, Ev::Lease(h));
            return;
        };
        let answer = server.execute(req);
        if let Asked::KeepAlive(id) = asked {
            w.leases.entry(id).or_default().renewals_open += 1;
        }
        w.holders[h].waiting = true;
        w.inflight.push(InFlight {
            holder: h,
            node,
            asked,
            sent_us: now,
            answer,
            left: false,
        });
        self.stats.lease_requests += 1;
        self.log(|| format!("lease holder {h} -> n{node}: {asked:?}"));
    }

    /// Polls the holders' requests; takes the answers of those that ended.
    pub(super) fn poll_leases(&mut self) {
        let Some(w) = self.leases.as_mut() else {
            return;
        };
        if !self.workload && w.healed_us.is_none() {
            w.healed_us = Some(self.now_us);
        }
        if w.healed_us.is_some() && w.healthy_us.is_none() && self.leader().is_some() {
            let w = self.leases.as_mut().expect("leases on");
            w.healthy_us = Some(self.now_us);
        }
        let w = self.leases.as_mut().expect("leases on");
        let mut inflight = std::mem::take(&mut w.inflight);
        let mut done = Vec::new();
        inflight.retain_mut(|f| match self.poll_answer(f.node, &mut f.answer) {
            Some(resp) => {
                done.push((f.holder, f.node, f.asked, f.sent_us, f.left, resp));
                false
            }
            None => true,
        });
        let now = self.now_us;
        let w = self.leases.as_mut().expect("leases on");
        inflight.append(&mut w.inflight);
        let mut wakes = Vec::new();
        for f in &mut inflight {
            if !f.left && now >= f.sent_us + ANSWER_WAIT_US {
                f.left = true;
                w.holders[f.holder].waiting = false;
                wakes.push((f.holder, w.rng.random_range(0..50_000)));
            }
        }
        w.inflight = inflight;
        for (h, d) in wakes {
            self.at(d, Ev::Lease(h));
        }
        for (h, node, asked, sent_us, left, resp) in done {
            self.lease_answered(h, node, asked, sent_us, left, resp);
        }
    }

    /// Holder `h`'s request `asked`, sent at `sent_us` to `node`, ended
    /// with `resp` (`left`: the holder had stopped waiting for it).
    fn lease_answered(
        &mut self,
        h: usize,
        node: usize,
        asked: Asked,
        sent_us: u64,
        left: bool,
        resp: Response,
    ) {
        let now = self.now_us;
        self.log(|| format!("lease holder {h} <- n{node}: {asked:?} = {resp:?}"));
        let w = self.leases.as_mut().expect("leases on");
        if let Asked::KeepAlive(id) = asked {
            let obs = w.leases.entry(id).or_default();
            obs.renewals_open -= 1;
            obs.renewals_ended_us = obs.renewals_ended_us.max(now);
        }
        if left {
            return;
        }
        let holder = &mut w.holders[h];
        holder.waiting = false;
        match (asked, resp) {
            (Asked::Grant, Response::Coord(CoordResponse::Lease(l))) => {
                let ttl_us = l.ttl_ms * 1_000;
                holder.lease = Some(l.id);
                holder.keep_until_us = now + w.rng.random_range(0..4 * ttl_us);
                let obs = w.leases.entry(l.id).or_default();
                obs.last_ack_sent_us = obs.last_ack_sent_us.max(sent_us);
                self.stats.leases_granted += 1;
            }
            (Asked::KeepAlive(id), Response::Coord(CoordResponse::Leases(ls))) => {
                if ls.first().is_some_and(|l| l.ttl_ms > 0) {
                    let obs = w.leases.entry(id).or_default();
                    obs.last_ack_sent_us = obs.last_ack_sent_us.max(sent_us);
                    self.stats.lease_keep_alives_acked += 1;
                } else {
                    // It ended (expired, or its revoke is under way).
                    holder.lease = None;
                }
            }
            (Asked::Attach(_), Response::Written { .. }) => self.stats.lease_keys_attached += 1,
            (Asked::Revoke(_), _) => holder.lease = None,
            (_, Response::Error(e)) if e.code == ErrorCode::LeaseNotFound => holder.lease = None,
            (_, Response::Error(e)) if e.code == ErrorCode::NotMaster => {
                let hint = e.leader.as_deref().and_then(hinted_node);
                holder.target = hint.unwrap_or_else(|| w.rng.random_range(0..self.nodes.len()));
            }
            // Unknown outcome (a grant may still apply: its lease then
            // expires on its own, and the log shows it).
            _ => {}
        }
        let d = match holder.lease {
            Some(_) => holder.ttl_ms * 1_000 / 4,
            None => w.rng.random_range(0..100_000),
        };
        self.at(d, Ev::Lease(h));
    }

    /// The lease grants and revokes of newly committed entries, with the
    /// time they were taken (see the module doc).
    pub(super) fn lease_log(&mut self, entries: &[Entry]) {
        let now = self.now_us;
        let Some(w) = self.leases.as_mut() else {
            return;
        };
        for e in entries {
            if e.data.first() != Some(&Command::FORMAT_V3) {
                continue;
            }
            let Ok(cmd) = Command::decode(Bytes::copy_from_slice(&e.data)) else {
                continue;
            };
            for op in &cmd.batch.ops {
                match op {
                    Op::LeaseGrant { id, ttl_ms } => {
                        let id = if *id == 0 { e.index } else { *id };
                        let obs = w.leases.entry(id).or_default();
                        if obs.granted_us.is_none() {
                            obs.granted_us = Some(now);
                            obs.ttl_ms = *ttl_ms;
                        }
                    }
                    Op::LeaseRevoke(id) => {
                        let obs = w.leases.entry(*id).or_default();
                        // The first revoke after the grant ends it; later
                        // ones find it gone.
                        if obs.granted_us.is_some() && obs.ended_us.is_none() {
                            obs.ended_us = Some(now);
                            obs.expired = cmd.session.is_none();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The checks of the module doc, after healing.
    pub(super) fn lease_checks(&mut self) {
        let Some(w) = self.leases.as_ref() else {
            return;
        };
        let drift = self.cfg.clock_drift_permille_max;
        let end_us = self.now_us;
        let healed_us = w.healthy_us.unwrap_or(end_us);
        let mut bad = Vec::new();
        for (id, obs) in &w.leases {
            let Some(granted_us) = obs.granted_us else {
                continue;
            };
            let ttl_us = obs.ttl_ms * 1_000;
            if obs.expired {
                self.stats.leases_expired += 1;
            } else if obs.ended_us.is_some() {
                self.stats.leases_revoked += 1;
            }
            let renewed_us = granted_us.max(obs.last_ack_sent_us);
            let earliest_us = renewed_us + ttl_us * (1_000 - drift) / 1_000;
            if let (Some(ended), true) = (obs.ended_us, obs.expired) {
                if ended < earliest_us {
                    bad.push(format!(
                        "lease {id} (ttl {} ms) expired at {:.3} ms, {:.3} ms early: last renewed \
                         (acknowledged) after {:.3} ms",
                        obs.ttl_ms,
                        ended as f64 / 1e3,
                        (earliest_us - ended) as f64 / 1e3,
                        renewed_us as f64 / 1e3
                    ));
                }
            }
            if obs.renewals_open > 0 {
                // A renewal may still come: no bound on its end.
                continue;
            }
            let origin = healed_us.max(granted_us).max(obs.renewals_ended_us);
            let extension_us = ELECTION_TICKS as u64 * TICK_US;
            let latest_us = origin
                + (ttl_us + extension_us) * (1_000 + drift) / 1_000
                + LEASE_FAILOVER_US
                + TICK_US;
            let late = match obs.ended_us {
                Some(ended) => ended > latest_us && ended > healed_us,
                None => end_us > latest_us,
            };
            if late {
                bad.push(format!(
                    "lease {id} (ttl {} ms) {} although nothing renewed it after {:.3} ms and \
                     the cluster was healthy from {:.3} ms (bound {:.3} ms)",
                    obs.ttl_ms,
                    obs.ended_us.map_or_else(
                        || "never expired".to_string(),
                        |e| format!("expired only at {:.3} ms", e as f64 / 1e3)
                    ),
                    origin as f64 / 1e3,
                    healed_us as f64 / 1e3,
                    latest_us as f64 / 1e3
                ));
            }
        }
        for b in bad.into_iter().take(5) {
            self.fail(b);
        }
    }
}

/// The node a `NotMaster` hint names (`n<i>:client`).
fn hinted_node(addr: &str) -> Option<usize> {
    addr.strip_prefix('n')?
        .strip_suffix(":client")?
        .parse()
        .ok()
}
