//! The parts of the retry policy of [`crate::Client::execute`] that are not
//! about one reply: which requests may be re-sent when their outcome is
//! unknown, how long to pause between attempts, and which endpoints not to
//! believe in for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nacre_proto::Request;
use tokio::time::Instant;

/// The first pause between attempts; each pause of a call doubles it up
/// to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(10);

/// The longest pause. While a cluster elects, every attempt costs one
/// connection and one request to a follower, so the pause need not be long
/// to spare the nodes; and it is how late, at worst, a client notices that
/// the election is over, which adds to every fail-over.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// How long an endpoint the client failed to reach stays suspect: leader
/// hints naming it are not followed, and it is tried after the others.
/// The nodes that survive a leader go on naming it until their election
/// timers fire (500–1000 ms with the default `tick_ms` and
/// `election_ticks`); twice the longest default election timeout outlasts
/// that, and a node that came back and leads again is found anyway, by
/// trying the endpoints in turn, or once the suspicion expires.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// Whether a request whose outcome is unknown (its connection broke after
/// it was sent, its node went down or timed out waiting for the log) may
/// be sent again. Reads and status requests may. Writes may because they
/// carry this client's session (the cluster applies a stamped write at
/// most once). Membership changes carry no session, so they are re-sent
/// only when they were certainly not applied.
pub(crate) fn resend_safe(req: &Request) -> bool {
    match req {
        Request::Session { .. } => true,
        Request::AddLearner { .. }
        | Request::Promote { .. }
        | Request::RemoveNode { .. }
        | Request::TransferLeader { .. } => false,
        r => !r.may_write(),
    }
}

/// Endpoints this client recently failed to reach (a refused or timed-out
/// connection, a connection that broke, a node found hung), with when.
#[derive(Default)]
pub(crate) struct Suspects {
    failed: Mutex<HashMap<String, Instant>>,
}

impl Suspects {
    pub(crate) fn failed(&self, endpoint: &str) {
        let mut f = self.failed.lock().expect("suspects lock");
        let now = Instant::now();
        // Entries are few (endpoints and the hints nodes gave); drop the
        // expired ones so the map never outgrows the cluster.
        f.retain(|_, at| now.duration_since(*at) < SUSPECT_FOR);
        f.insert(endpoint.to_string(), now);
    }

    pub(crate) fn reached(&self, endpoint: &str) {
        self.failed.lock().expect("suspects lock").remove(endpoint);
    }

    pub(crate) fn is_suspect(&self, endpoint: &str) -> bool {
        self.failed
            .lock()
            .expect("suspects lock")
            .get(endpoint)
            .is_some_and(|at| at.elapsed() < SUSPECT_FOR)
    }
}

/// Pauses with full jitter, so that clients that lost the same leader at
/// the same moment do not ask the survivors in lockstep.
pub(crate) struct Backoff {
    state: AtomicU64,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Backoff {
        Backoff {
            state: AtomicU64::new(seed),
        }
    }

    /// The `n`th pause of a call (from 1): a random time between half the
    /// exponential step and the whole of it.
    pub(crate) fn pause(&self, n: u32) -> Duration {
        let step = BACKOFF_FIRST
            .saturating_mul(1 << n.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        let half = step / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.next() % spread)
    }

    /// splitmix64: a few well-mixed bits are all jitter needs, without a
    /// dependency for it.
    fn next(&self) -> u64 {
        let s = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_stay_within_their_step() {
        let b = Backoff::new(7);
        for n in 1..40 {
            let p = b.pause(n);
            let step = (BACKOFF_FIRST * 2u32.pow(n.min(16) - 1)).min(BACKOFF_MAX);
            assert!(
                p >= step / 2 && p <= step,
                "pause {n}: {p:?} outside {step:?}"
            );
        }
    }

    #[test]
    fn a_suspect_is_cleared_by_reaching_it() {
        let s = Suspects::default();
        assert!(!s.is_suspect("a:1"));
        s.failed("a:1");
        assert!(s.is_suspect("a:1"));
        assert!(!s.is_suspect("b:2"));
        s.reached("a:1");
        assert!(!s.is_suspect("a:1"));
    }

    #[test]
    fn only_requests_without_an_unknown_effect_are_resent() {
        let session = nacre_proto::Session {
            client_id: 1,
            seq: 1,
        };
        let set = Request::Set {
            key: "k".into(),
            value: "v".into(),
        };
        assert!(!resend_safe(&set));
        assert!(resend_safe(&Request::Session {
            session,
            request: Box::new(set),
        }));
        assert!(resend_safe(&Request::Ping));
        assert!(!resend_safe(&Request::RemoveNode { name: "n2".into() }));
    }
}
