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

mod kv;
mod members;
mod scripts;
mod sessions;
mod snapshot;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use nacre_proto::{Command, ErrorCode};
use nacre_store::{Durability, Store};

pub use kv::{user_key, Reader};
pub use members::MemberRecord;
pub use scripts::{decode_script_head, script_head_key, script_version_key, SCRIPT_NS};
pub use snapshot::is_local_key;

use kv::apply_batch;
use sessions::{decode_outcome, encode_outcome, session_key};

fn bad_meta(what: &str) -> nacre_store::Error {
    nacre_store::Error::Corruption {
        position: 0,
        what: format!("undecodable {what} in the service keyspace"),
    }
}

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
    session_retention_entries: u64,
    /// A planted bug for the simulator (crates/nacre-sim): batches apply
    /// as if they had no guards. Only with the `sim` feature.
    #[cfg(feature = "sim")]
    planted_skip_guards: bool,
}

/// The exclusive end of the keys that start with `prefix` (none at the
/// end of the key space): the store's own rule, so ranges agree.
pub use nacre_store::prefix_end;

impl StateMachine {
    pub fn open(store: Store) -> nacre_store::Result<StateMachine> {
        Self::open_with(store, 100_000)
    }

    /// `session_retention_entries`: how long (in log entries) a session's
    /// write outcome is remembered for deduplicating a retry.
    pub fn open_with(
        store: Store,
        session_retention_entries: u64,
    ) -> nacre_store::Result<StateMachine> {
        let (applied, applied_term) = match store.begin_read().get(APPLIED_KEY)? {
            Some(v) if v.len() == 16 => (
                u64::from_le_bytes(v[0..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(v[8..16].try_into().expect("8 bytes")),
            ),
            Some(_) => {
                return Err(nacre_store::Error::Corruption {
                    position: 0,
                    what: "applied index record has the wrong size".into(),
                })
            }
            None => (0, 0),
        };
        Ok(StateMachine {
            store,
            applied,
            applied_term,
            // An epoch of zero entries would divide by zero; the config
            // refuses it, and one entry is the least that means anything.
            session_retention_entries: session_retention_entries.max(1),
            #[cfg(feature = "sim")]
            planted_skip_guards: false,
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

    /// Whether the planted bug of [`StateMachine::plant_skip_guards`] is
    /// on; never without the `sim` feature.
    fn skips_guards(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.planted_skip_guards;
        #[cfg(not(feature = "sim"))]
        false
    }

    /// The last applied index and its term.
    pub fn applied(&self) -> (u64, u64) {
        (self.applied, self.applied_term)
    }

    /// Applies committed entries in order, in one store transaction,
    /// committed lazily: the tlog already made them durable, and a
    /// checkpoint ([`StateMachine::checkpoint`]) makes the store durable up
    /// to the applied index so the tlog can be compacted.
    pub fn apply(&mut self, entries: &[Committed<'_>]) -> nacre_store::Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let Some(last) = entries.last() else {
            return Ok(outcomes);
        };
        let mut txn = self.store.begin_write()?;
        let mut index_prev = self.applied;
        for e in entries {
            // Raft hands entries over once, in order; anything else means
            // the driver is broken and applying would corrupt the state.
            assert!(e.index > index_prev, "entries applied out of order");
            index_prev = e.index;
            if e.data.is_empty() {
                outcomes.push(Outcome::Applied {
                    prev: None,
                    count: 0,
                });
                continue;
            }
            let decoded = Command::decode(Bytes::copy_from_slice(e.data)).map(|mut c| {
                if self.skips_guards() {
                    c.batch.guards.clear();
                }
                c
            });
            let outcome = match decoded {
                Ok(Command {
                    session: Some(session),
                    batch,
                }) => {
                    let epoch = e.index / self.session_retention_entries;
                    let key = session_key(epoch, session.client_id, session.seq);
                    let mut first = txn.get(&key)?;
                    if first.is_none() && epoch > 0 {
                        first = txn.get(&session_key(epoch - 1, session.client_id, session.seq))?;
                    }
                    match first.as_deref().and_then(decode_outcome) {
                        // A retry of a write that already applied: answer as
                        // the first time, change nothing.
                        Some((_, first)) => first,
                        None => {
                            let o = apply_batch(&mut txn, e.index, &batch)?;
                            // Only effects need guarding against a second
                            // apply; a failed batch changed nothing, and its
                            // retry (a script re-run after a conflict, say)
                            // must be evaluated afresh.
                            if matches!(o, Outcome::Applied { .. }) {
                                txn.put(&key, &encode_outcome(e.index, &o))?;
                            }
                            o
                        }
                    }
                }
                Ok(cmd) => apply_batch(&mut txn, e.index, &cmd.batch)?,
                // Every node decodes the same bytes the same way, so this
                // fails identically everywhere and stays deterministic.
                Err(err) => Outcome::Failed {
                    code: ErrorCode::BadInput,
                    key: Bytes::new(),
                    current: None,
                    message: format!("undecodable command: {err}"),
                },
            };
            outcomes.push(outcome);
            // A rule of the index alone, so every replica (and every replica
            // restored from a snapshot) forgets the same records.
            if e.index % self.session_retention_entries == 0 {
                self.prune_sessions(&mut txn, e.index)?;
            }
        }
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&last.index.to_le_bytes());
        applied[8..].copy_from_slice(&last.term.to_le_bytes());
        txn.put(APPLIED_KEY, &applied)?;
        txn.commit_with(Durability::Lazy)?;
        self.applied = last.index;
        self.applied_term = last.term;
        Ok(outcomes)
    }

    /// Makes everything applied so far durable in the store; returns the
    /// applied index it covers.
    pub fn checkpoint(&self) -> nacre_store::Result<u64> {
        self.store.sync()?;
        Ok(self.applied)
    }
}
