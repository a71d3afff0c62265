//! Leases: typed calls for each lease request, keys attached to a lease,
//! and [`LeaseKeeper`], which keeps many leases alive with one request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nacre_proto::{Batch, Bytes, CoordRequest, CoordResponse, LeaseInfo, Op, Request, Response};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{unexpected, Client, ClientError};

/// The shortest pause between two keep-alive rounds, however short a
/// lease: a 1 ms lease cannot be kept alive over a network anyway.
const KEEP_ALIVE_MIN: Duration = Duration::from_millis(20);

impl Client {
    /// Grants a lease of `ttl` (the leader picks its id). Keys attached to
    /// it ([`Client::set_with_lease`]) are deleted when it ends.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseInfo, ClientError> {
        self.lease_grant_id(0, ttl).await
    }

    /// Grants a lease with this id (0: the leader picks one).
    pub async fn lease_grant_id(&self, id: u64, ttl: Duration) -> Result<LeaseInfo, ClientError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let req = Request::Coord(CoordRequest::LeaseGrant { id, ttl_ms });
        match self.execute(req).await? {
            Response::Coord(CoordResponse::Lease(l)) => Ok(l),
            r => Err(unexpected("lease_grant", r)),
        }
    }

    /// Ends a lease now and deletes its keys (`LeaseNotFound` if it is
    /// not there).
    pub async fn lease_revoke(&self, id: u64) -> Result<(), ClientError> {
        match self
            .execute(Request::Coord(CoordRequest::LeaseRevoke { id }))
            .await?
        {
            Response::Unit | Response::Written { .. } => Ok(()),
            r => Err(unexpected("lease_revoke", r)),
        }
    }

    /// Renews these leases to their full time to live, in one request;
    /// one entry per id, in order, `ttl_ms` 0 for a lease that is gone.
    pub async fn lease_keep_alive(&self, ids: Vec<u64>) -> Result<Vec<LeaseInfo>, ClientError> {
        let n = ids.len();
        match self
            .execute(Request::Coord(CoordRequest::LeaseKeepAlive { ids }))
            .await?
        {
            Response::Coord(CoordResponse::Leases(ls)) if ls.len() == n => Ok(ls),
            r => Err(unexpected("lease_keep_alive", r)),
        }
    }

    /// A lease's time to live and what is left of it (and its keys if
    /// `keys`); `LeaseNotFound` if it is gone.
    pub async fn lease_ttl(&self, id: u64, keys: bool) -> Result<LeaseInfo, ClientError> {
        match self
            .execute(Request::Coord(CoordRequest::LeaseTtl { id, keys }))
            .await?
        {
            Response::Coord(CoordResponse::Lease(l)) => Ok(l),
            r => Err(unexpected("lease_ttl", r)),
        }
    }

    /// Every lease the leader knows.
    pub async fn lease_list(&self) -> Result<Vec<LeaseInfo>, ClientError> {
        match self
            .execute(Request::Coord(CoordRequest::LeaseList))
            .await?
        {
            Response::Coord(CoordResponse::Leases(ls)) => Ok(ls),
            r => Err(unexpected("lease_list", r)),
        }
    }

    /// Sets the key and attaches it to `lease` (`LeaseNotFound` if the
    /// lease is gone); returns the log index. A plain set detaches it.
    pub async fn set_with_lease(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: u64,
    ) -> Result<u64, ClientError> {
        let batch = Batch {
            guards: vec![],
            ops: vec![Op::SetLeased {
                key: key.into(),
                value: value.into(),
                lease,
            }],
        };
        Ok(self.batch(batch).await?.index)
    }

    /// A [`LeaseKeeper`] on this client (its task needs a tokio runtime).
    pub fn lease_keeper(&self) -> LeaseKeeper {
        LeaseKeeper::new(self)
    }
}

/// Why a [`LeaseKeeper`] stopped keeping a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLoss {
    /// The leader said the lease is gone (expired or revoked).
    Gone,
    /// No renewal went through for a whole time to live: the lease has
    /// expired unless the leader's clock is slower than this client's.
    NotRenewed,
}

/// A lease a [`LeaseKeeper`] lost, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostLease {
    pub id: u64,
    pub why: LeaseLoss,
}

struct Kept {
    ttl: Duration,
    /// When the last renewal that covers it was sent.
    renewed: Instant,
}

#[derive(Default)]
struct Keeping {
    leases: HashMap<u64, Kept>,
}

/// Keeps a set of leases alive from one background task: every round
/// renews all of them with one keep-alive request (split only past the
/// request's limit), at a third of the shortest time to live, so that
/// thousands of leases cost one small request per interval. A lease the
/// leader says is gone, or that no renewal reached for a whole time to
/// live, is dropped from the set and reported ([`LeaseKeeper::lost`]).
/// Dropping the keeper stops it; its leases then expire by themselves.
pub struct LeaseKeeper {
    keeping: Arc<Mutex<Keeping>>,
    changed: Arc<Notify>,
    lost: Mutex<Option<mpsc::UnboundedReceiver<LostLease>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("leases", &self.ids().len())
            .finish()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeaseKeeper {
    pub fn new(client: &Client) -> LeaseKeeper {
        let keeping = Arc::new(Mutex::new(Keeping::default()));
        let changed = Arc::new(Notify::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(keep_alive_loop(
            client.clone(),
            keeping.clone(),
            changed.clone(),
            tx,
        ));
        LeaseKeeper {
            keeping,
            changed,
            lost: Mutex::new(Some(rx)),
            task,
        }
    }

    /// Keeps lease `id`, of time to live `ttl`, alive from now on.
    pub fn add(&self, id: u64, ttl: Duration) {
        let kept = Kept {
            ttl,
            renewed: Instant::now(),
        };
        self.keeping
            .lock()
            .expect("keeper lock")
            .leases
            .insert(id, kept);
        self.changed.notify_one();
    }

    /// Stops keeping lease `id` alive (it expires by itself, unless
    /// revoked). Whether it was kept.
    pub fn remove(&self, id: u64) -> bool {
        self.keeping
            .lock()
            .expect("keeper lock")
            .leases
            .remove(&id)
            .is_some()
    }

    /// The leases kept now.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .keeping
            .lock()
            .expect("keeper lock")
            .leases
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The receiver of lost leases (taken once; `None` after).
    pub fn lost(&self) -> Option<mpsc::UnboundedReceiver<LostLease>> {
        self.lost.lock().expect("keeper lock").take()
    }
}

/// The pause before the next round: a third of the shortest time to live.
fn interval(keeping: &Keeping) -> Option<Duration> {
    keeping
        .leases
        .values()
        .map(|k| (k.ttl / 3).max(KEEP_ALIVE_MIN))
        .min()
}

async fn keep_alive_loop(
    client: Client,
    keeping: Arc<Mutex<Keeping>>,
    changed: Arc<Notify>,
    lost: mpsc::UnboundedSender<LostLease>,
) {
    let chunk = client.shared.opts.limits.multi_get_keys_max.max(1);
    // When the next round is due: a lease added since may bring it
    // closer, never push it back (adding leases all the time must not
    // starve the renewals).
    let mut due: Option<Instant> = None;
    loop {
        let pause = interval(&keeping.lock().expect("keeper lock"));
        let Some(p) = pause else {
            due = None;
            changed.notified().await;
            continue;
        };
        let at = due.map_or(Instant::now() + p, |d| d.min(Instant::now() + p));
        due = Some(at);
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = changed.notified() => continue,
        }
        due = None;
        let ids: Vec<u64> = keeping
            .lock()
            .expect("keeper lock")
            .leases
            .keys()
            .copied()
            .collect();
        // A round that cannot get through (no leader) gives up when the
        // next is due, so that expiry is noticed in time.
        let round = interval(&keeping.lock().expect("keeper lock")).unwrap_or(KEEP_ALIVE_MIN);
        for part in ids.chunks(chunk) {
            let sent = Instant::now();
            let answer = tokio::time::timeout(round, client.lease_keep_alive(part.to_vec()))
                .await
                .ok()
                .and_then(Result::ok);
            let mut k = keeping.lock().expect("keeper lock");
            if let Some(infos) = &answer {
                for info in infos {
                    let gone = info.ttl_ms == 0;
                    if gone && k.leases.remove(&info.id).is_some() {
                        let _ = lost.send(LostLease {
                            id: info.id,
                            why: LeaseLoss::Gone,
                        });
                    } else if let Some(kept) = k.leases.get_mut(&info.id) {
                        kept.renewed = sent;
                    }
                }
            }
            report_expired(&mut k, &lost);
        }
    }
}

/// Drops and reports the leases no renewal reached for their whole ttl.
fn report_expired(k: &mut Keeping, lost: &mpsc::UnboundedSender<LostLease>) {
    let now = Instant::now();
    let expired: Vec<u64> = k
        .leases
        .iter()
        .filter(|(_, kept)| now.duration_since(kept.renewed) >= kept.ttl)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        k.leases.remove(&id);
        let _ = lost.send(LostLease {
            id,
            why: LeaseLoss::NotRenewed,
        });
    }
}
