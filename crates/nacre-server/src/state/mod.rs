//! The state machine: applies committed guarded batches to the store.
//!
//! Deterministic and free of I/O of its own beyond the store: every node
//! that applies the same entries reaches the same bytes. Keys live in the
//! store under one-byte namespaces so that service data (the applied
//! index, later scripts and sessions) never mixes with user keys:
//!
//! | store key       | value                                          |
//! |-----------------|------------------------------------------------|
//! | `u` + user key  | revision (24 bytes: create, mod, version) + value |
//! | `m/applied`     | applied index u64 LE + its term u64 LE         |
//! | `m/member/` + id (u64 BE) | a member's name, client and peer addresses |
//! | `m/session/` + epoch + client id + seq (u64 BE each) | index u64 LE + the outcome, for deduplicating retries |
//!
//! Entries of one raft `Ready` are applied in one store transaction (one
//! commit instead of one per entry). A batch whose guard or check fails
//! part-way is undone inside that transaction from an undo log of the
//! stored values it replaced, so it leaves nothing behind.
//!
//! | module | one job |
//! |---|---|
//! | `kv.rs` | user keys: stored values with their revisions, guards, ops and their undo, [`Reader`] |
//! | `sessions.rs` | client sessions: outcomes of applied stamped writes, pruned by epoch |
//! | `members.rs` | the replicated member table |
//! | `scripts.rs` | the script namespace: heads, versions and the script ops |
//! | `snapshot.rs` | installing a leader's snapshot and the node-local record of it |

#[cfg(test)]
mod coord_tests;
#[cfg(test)]
mod corruption_tests;
mod error;
mod etcd;
mod etcd_range;
#[cfg(test)]
mod etcd_tests;
mod kv;
mod leases;
mod members;
mod scripts;
mod sessions;
mod snapshot;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use nacre_proto::{Command, ErrorCode};
use nacre_store::{Durability, Store, WriteTxn};

pub use etcd::{
    encode_compact, encode_request, read_revision, to_key_value, COMPACTED, FUTURE_REV,
    LEASE_NOT_FOUND,
};
pub use etcd_range::{compare_holds, etcd_bounds, read_interval, shape_range};
pub use kv::{user_key, PageLimits, Reader};
pub use members::{is_member_key, member_pair, MemberRecord};
pub use scripts::{decode_script_head, script_head_key, script_version_key, SCRIPT_NS};
pub use snapshot::{check_snapshot_pair, is_local_key};

pub use error::{describe_key, Corruption, PageError, StateError};

use kv::{apply_batch, Effects};
pub use leases::{
    get as read_lease, keys as read_lease_keys, lease_of_read, list as read_leases, LeaseRecord,
};
use nacre_proto::WatchEvent;

/// Namespace byte of user keys.
pub const USER_NS: u8 = b'u';
/// Namespace byte of service metadata.
pub const META_NS: u8 = b'm';
const APPLIED_KEY: &[u8] = b"m/applied";

/// What applying one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All guards held and every op applied. `prev` is the value the last
    /// set / delete / remove replaced; `count` sums delete_prefix counts.
    Applied { prev: Option<Bytes>, count: u64 },
    /// Nothing changed: `code` is `NotFound` (a delete of a missing key) or
    /// `AssertionFailed` (a guard or check), about `key`, whose value at
    /// that point is `current`.
    Failed {
        code: ErrorCode,
        key: Bytes,
        current: Option<Bytes>,
        message: String,
    },
    /// An etcd request applied (state/etcd.rs): the revision its client
    /// is told and its encoded `ResponseOp` (empty for a Compact).
    Etcd { revision: u64, response: Bytes },
}

impl Outcome {
    /// The error for an etcd outcome where a Nacre batch's was expected:
    /// only etcd requests carry `Op::Etcd`, so this is a bug, reported
    /// rather than answered as a success.
    pub fn not_a_batch() -> nacre_proto::ErrorReply {
        nacre_proto::ErrorReply::new(ErrorCode::Internal, "an etcd outcome for a Nacre batch")
    }
}

/// One committed log entry to apply; `data` empty is a no-op (a leader's
/// first entry of its term).
pub struct Committed<'a> {
    pub index: u64,
    pub term: u64,
    pub data: &'a [u8],
}

pub struct StateMachine {
    store: Store,
    applied: u64,
    applied_term: u64,
    /// etcd's store revision: the last applied index that changed a user
    /// key (replicated in `m/etcd/revision`, state/etcd.rs).
    kv_revision: u64,
    /// Entries applied since the last [`StateMachine::take_answered_at`]
    /// that were retries of a write already applied, with the index that
    /// write applied at.
    answered_at: Vec<(u64, u64)>,
    session_retention_entries: u64,
    /// Change events of the entries applied since the last
    /// [`StateMachine::take_events`], in order (watches are fed from them).
    events: Vec<WatchEvent>,
    /// Whether any lease may exist (so a set must look for a key's
    /// attachment): true from the first grant on, rechecked on open.
    leases: bool,
    /// A planted bug for the simulator (crates/nacre-sim): batches apply
    /// as if they had no guards. Only with the `sim` feature.
    #[cfg(feature = "sim")]
    planted_skip_guards: bool,
    /// A planted bug: a session-stamped retry applies again instead of
    /// being answered with the first outcome. Only with `sim`.
    #[cfg(feature = "sim")]
    planted_skip_sessions: bool,
    /// A planted bug: `LockHeld` guards always hold. Only with `sim`.
    #[cfg(feature = "sim")]
    planted_skip_fence: bool,
}

/// The exclusive end of the keys that start with `prefix` (none at the
/// end of the key space): the store's own rule, so ranges agree.
pub use nacre_store::prefix_end;

/// The applied-index record: index u64 LE, then its term u64 LE.
fn encode_applied(index: u64, term: u64) -> [u8; 16] {
    let mut applied = [0u8; 16];
    applied[..8].copy_from_slice(&index.to_le_bytes());
    applied[8..].copy_from_slice(&term.to_le_bytes());
    applied
}

/// A little-endian u64 at `at` in `raw`, if `raw` holds one there.
fn u64_le_at(raw: &[u8], at: usize) -> Option<u64> {
    let bytes = raw.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl StateMachine {
    pub fn open(store: Store) -> Result<StateMachine, StateError> {
        Self::open_with(store, 100_000)
    }

    /// `session_retention_entries`: how long (in log entries) a session's
    /// write outcome is remembered for deduplicating a retry.
    pub fn open_with(
        store: Store,
        session_retention_entries: u64,
    ) -> Result<StateMachine, StateError> {
        let (applied, applied_term) = match store.begin_read().get(APPLIED_KEY)? {
            Some(v) => decode_applied(&v)?,
            None => (0, 0),
        };
        let leases = leases::any(&store.begin_read())?;
        let kv_revision = etcd::read_revision(&store.begin_read())?.0;
        Ok(StateMachine {
            store,
            applied,
            applied_term,
            kv_revision,
            answered_at: Vec::new(),
            events: Vec::new(),
            leases,
            // An epoch of zero entries would divide by zero; the config
            // refuses it, and one entry is the least that means anything.
            session_retention_entries: session_retention_entries.max(1),
            #[cfg(feature = "sim")]
            planted_skip_guards: false,
            #[cfg(feature = "sim")]
            planted_skip_sessions: false,
            #[cfg(feature = "sim")]
            planted_skip_fence: false,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Plants a bug for the simulator: every batch's guards are skipped.
    #[cfg(feature = "sim")]
    pub fn plant_skip_guards(&mut self, on: bool) {
        self.planted_skip_guards = on;
    }

    /// Plants a bug for the simulator: retries of a session-stamped write
    /// apply again (no deduplication).
    #[cfg(feature = "sim")]
    pub fn plant_skip_sessions(&mut self, on: bool) {
        self.planted_skip_sessions = on;
    }

    /// Plants a bug for the simulator: fenced writes (`LockHeld` guards)
    /// apply whoever holds the lock.
    #[cfg(feature = "sim")]
    pub fn plant_skip_fence(&mut self, on: bool) {
        self.planted_skip_fence = on;
    }

    fn skips_fence(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.planted_skip_fence;
        #[cfg(not(feature = "sim"))]
        false
    }

    /// The change events of everything applied since the last call, in
    /// revision order: one per key a committed batch changed (a failed
    /// batch has none).
    pub fn take_events(&mut self) -> Vec<WatchEvent> {
        std::mem::take(&mut self.events)
    }

    /// The retries among the entries applied since the last call: (the
    /// retry's index, the index the write applied at), which is the one
    /// its client must be told.
    pub fn take_answered_at(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.answered_at)
    }

    /// Re-reads what the store says after a snapshot replaced it.
    pub(crate) fn reload_leases_hint(&mut self) -> Result<(), StateError> {
        self.leases = leases::any(&self.store.begin_read())?;
        self.kv_revision = etcd::read_revision(&self.store.begin_read())?.0;
        Ok(())
    }

    /// Every lease, in id order.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>, StateError> {
        leases::list(&self.store.begin_read())
    }

    /// One lease, if it exists.
    pub fn lease(&self, id: u64) -> Result<Option<LeaseRecord>, StateError> {
        leases::get(&self.store.begin_read(), id)
    }

    /// The keys attached to lease `id`, at most `max`.
    pub fn lease_keys(&self, id: u64, max: usize) -> Result<Vec<Bytes>, StateError> {
        leases::keys(&self.store.begin_read(), id, max)
    }

    /// Whether the planted bug of [`StateMachine::plant_skip_sessions`] is
    /// on; never without the `sim` feature.
    fn skips_sessions(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.planted_skip_sessions;
        #[cfg(not(feature = "sim"))]
        false
    }

    /// Whether the planted bug of [`StateMachine::plant_skip_guards`] is
    /// on; never without the `sim` feature.
    fn skips_guards(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.planted_skip_guards;
        #[cfg(not(feature = "sim"))]
        false
    }

    /// etcd's store revision: the last applied index that changed a key.
    pub fn kv_revision(&self) -> u64 {
        self.kv_revision
    }

    /// The last applied index and its term.
    pub fn applied(&self) -> (u64, u64) {
        (self.applied, self.applied_term)
    }

    /// Applies committed entries in order, in one store transaction,
    /// committed lazily: the tlog already made them durable, and a
    /// checkpoint ([`StateMachine::checkpoint`]) makes the store durable up
    /// to the applied index so the tlog can be compacted. A corrupt record
    /// an entry would read or build on fails the whole call, and nothing
    /// of it is committed.
    pub fn apply(&mut self, entries: &[Committed<'_>]) -> Result<Vec<Outcome>, StateError> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let Some(last) = entries.last() else {
            return Ok(outcomes);
        };
        let mut txn = self.store.begin_write()?;
        let mut index_prev = self.applied;
        let mut events = std::mem::take(&mut self.events);
        let mut leases = self.leases;
        let mut kv_revision = self.kv_revision;
        for e in entries {
            if e.index <= index_prev {
                return Err(StateError::OutOfOrder {
                    index: e.index,
                    applied: index_prev,
                });
            }
            index_prev = e.index;
            let events_before = events.len();
            let mut fx = Effects {
                index: e.index,
                revision: kv_revision,
                events_start: events_before,
                first_index: None,
                events: &mut events,
                leases,
                skip_fence: self.skips_fence(),
            };
            outcomes.push(self.apply_entry(&mut txn, e, &mut fx)?);
            leases = fx.leases;
            if let Some(first) = fx.first_index {
                self.answered_at.push((e.index, first));
            }
            if events.len() > events_before {
                kv_revision = e.index;
            }
            // A rule of the index alone, so every replica (and every replica
            // restored from a snapshot) forgets the same records.
            if e.index % self.session_retention_entries == 0 {
                self.prune_sessions(&mut txn, e.index)?;
            }
        }
        txn.put(APPLIED_KEY, &encode_applied(last.index, last.term))?;
        if kv_revision != self.kv_revision {
            txn.put(etcd::REVISION_KEY, &kv_revision.to_le_bytes())?;
        }
        txn.commit_with(Durability::Lazy)?;
        self.kv_revision = kv_revision;
        self.applied = last.index;
        self.applied_term = last.term;
        self.events = events;
        self.leases = leases;
        Ok(outcomes)
    }

    fn apply_entry(
        &self,
        txn: &mut WriteTxn<'_>,
        e: &Committed<'_>,
        fx: &mut Effects<'_>,
    ) -> Result<Outcome, StateError> {
        if e.data.is_empty() {
            return Ok(Outcome::Applied {
                prev: None,
                count: 0,
            });
        }
        // A format this build does not know is not a bad command: another
        // node wrote it and applies it. Stop rather than differ from it.
        let newest = Command::FORMAT_NEWEST;
        if let Some(&format) = e.data.first().filter(|f| **f > newest) {
            return Err(StateError::NewerCommandFormat {
                index: e.index,
                format,
                newest,
            });
        }
        let decoded = Command::decode(Bytes::copy_from_slice(e.data)).map(|mut c| {
            if self.skips_guards() {
                c.batch.guards.clear();
            }
            c
        });
        match decoded {
            Ok(Command {
                session: Some(session),
                batch,
            }) => self.apply_once(txn, fx, session, &batch),
            Ok(cmd) => apply_batch(txn, fx, &cmd.batch),
            // Every node decodes the same bytes the same way, so this
            // fails identically everywhere and stays deterministic.
            Err(err) => Ok(Outcome::Failed {
                code: ErrorCode::BadInput,
                key: Bytes::new(),
                current: None,
                message: format!("undecodable command: {err}"),
            }),
        }
    }

    /// Makes everything applied so far durable in the store; returns the
    /// applied index it covers.
    pub fn checkpoint(&self) -> Result<u64, StateError> {
        self.store.sync()?;
        Ok(self.applied)
    }
}

/// The applied index a snapshot of the store holds.
pub fn read_applied(txn: &nacre_store::ReadTxn) -> Result<u64, StateError> {
    match txn.get(APPLIED_KEY)? {
        Some(v) => Ok(decode_applied(&v)?.0),
        None => Ok(0),
    }
}

/// (index, term) from the applied-index record; a record of another size
/// means the store cannot say where the state machine stands.
/// The index and term of the applied-index record, if `key` is that
/// record (a restore takes the term of its backup from it).
pub fn applied_of_pair(key: &[u8], value: &[u8]) -> Option<(u64, u64)> {
    if key != APPLIED_KEY {
        return None;
    }
    decode_applied(value).ok()
}

fn decode_applied(raw: &[u8]) -> Result<(u64, u64), Corruption> {
    match (raw.len(), u64_le_at(raw, 0), u64_le_at(raw, 8)) {
        (16, Some(index), Some(term)) => Ok((index, term)),
        _ => Err(Corruption::new(
            APPLIED_KEY,
            "applied index record",
            format!("{} bytes, not 16", raw.len()),
        )),
    }
}
